//! The OpenWrt package (`openwrt/lancert-agent/`): its procd init script,
//! hotplug scripts, sysupgrade keep list and Makefile.
//!
//! The scripts run under busybox's ash, the shell of OpenWrt, in a scratch
//! root laid out as the package installs it (the install lines are read from
//! the Makefile), with `IPKG_INSTROOT` pointing at it. OpenWrt's helpers
//! (`rc.common`, `functions.sh`, `procd.sh`, `network.sh`, `jshn.sh`, `uci`,
//! `logger`) are the stand-ins of `tests/openwrt/`, which record every call
//! in the file named by `LANCERT_RECORD`; the tests assert on those calls
//! and on the files written. The agent is the real binary: the init script
//! has it check the configuration it generates, and the tests run it on that
//! configuration too.

use lancert_tests::{run, wait_for, Output, TestEnv, COMMAND_TIMEOUT};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The management server URL the tests configure.
const SERVER: &str = "https://mgmt.example.com";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn package_dir() -> PathBuf {
    workspace().join("openwrt/lancert-agent")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Debian's busybox, whose ash is close to OpenWrt's shell.
fn busybox() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("busybox"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "busybox is not installed: the OpenWrt tests run the package's scripts with busybox's ash, \
                 as OpenWrt does (apt-get install busybox)"
            )
        })
}

/// The shipped `/etc/config/lancert` with `server` set, as a vendor ships it.
fn vendor_config() -> String {
    set_option(&read(&package_dir().join("files/lancert.config")), "server", SERVER)
}

/// `text` (UCI syntax) with `option NAME` set to `value`: the line for it,
/// commented out or not, is replaced, or one is added at the end.
fn set_option(text: &str, name: &str, value: &str) -> String {
    let new = format!("\toption {name} '{value}'");
    let mut found = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let t = line.trim_start().trim_start_matches('#');
            if !found && (t.starts_with(&format!("option {name} ")) || t == format!("option {name}")) {
                found = true;
                new.clone()
            } else {
                line.to_string()
            }
        })
        .collect();
    if !found {
        lines.push(new);
    }
    lines.join("\n") + "\n"
}

/// `text` without the lines of `option`/`list NAME`.
fn remove_option(text: &str, name: &str) -> String {
    text.lines()
        .filter(|line| {
            let t = line.trim_start();
            !(t.starts_with(&format!("option {name} ")) || t.starts_with(&format!("list {name} ")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The values of `option NAME 'VALUE'` lines (not commented out).
fn options_of(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("option ")?;
            let (name, value) = rest.split_once(' ')?;
            Some((name.to_string(), value.trim().trim_matches('\'').to_string()))
        })
        .collect()
}

/// One `$(INSTALL_…) SOURCE $(1)/DEST` line of the Makefile's install
/// section.
#[derive(Debug)]
struct Install {
    macro_name: String,
    source: String,
    dest: String,
}

fn makefile() -> String {
    read(&package_dir().join("Makefile"))
}

fn install_lines() -> Vec<Install> {
    let text = makefile();
    let section = text
        .split("define Package/lancert-agent/install\n")
        .nth(1)
        .and_then(|rest| rest.split("\nendef").next())
        .expect("Makefile has define Package/lancert-agent/install … endef");
    section
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [m, source, dest] if *m != "$(INSTALL_DIR)" => Some(Install {
                    macro_name: m.to_string(),
                    source: source.to_string(),
                    dest: dest
                        .strip_prefix("$(1)/")
                        .unwrap_or_else(|| panic!("install destination not under $(1): {line}"))
                        .to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copying {}: {e}", entry.path().display()));
        }
    }
}

/// A router: the package installed in a scratch root next to the stand-ins
/// for OpenWrt's helpers, and busybox's applets as the only commands.
struct Router {
    /// Owns the scratch directory (kept when a test fails).
    _env: TestEnv,
    root: PathBuf,
    record: PathBuf,
    busybox: PathBuf,
    path: String,
}

impl Router {
    /// Installs everything, with `uci` as `/etc/config/lancert`.
    fn new(name: &str, uci: &str) -> Router {
        let env = TestEnv::new(name);
        let busybox = busybox();
        let root = env.subdir("root");
        copy_tree(&workspace().join("tests/openwrt"), &root);
        for install in install_lines() {
            let dest = root.join(&install.dest);
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("creating install directory");
            if let Some(file) = install.source.strip_prefix("./files/") {
                let mut text = read(&package_dir().join("files").join(file));
                if install.dest == "etc/init.d/lancert" {
                    // The kernel runs an init script as `/bin/sh /etc/rc.common
                    // SCRIPT ACTION`; here with the scratch root's.
                    let (first, rest) = text.split_once('\n').expect("init script has lines");
                    assert_eq!(first, "#!/bin/sh /etc/rc.common", "the init script's first line");
                    text = format!("#!{0}/bin/sh {0}/etc/rc.common\n{rest}", root.display());
                }
                std::fs::write(&dest, text).expect("installing a file");
                let mode = match install.macro_name.as_str() {
                    "$(INSTALL_BIN)" => 0o755,
                    "$(INSTALL_CONF)" => 0o600,
                    "$(INSTALL_DATA)" => 0o644,
                    other => panic!("unexpected install macro {other}"),
                };
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).expect("chmod");
            } else {
                assert_eq!(
                    install.source, "$(PKG_INSTALL_DIR)/bin/agent",
                    "the binary cargo installs"
                );
                install_agent(&env, &dest);
            }
        }
        std::fs::write(root.join("etc/config/lancert"), uci).expect("writing /etc/config/lancert");
        let bin = env.subdir("root/bin");
        std::os::unix::fs::symlink(&busybox, bin.join("sh")).expect("linking /bin/sh");
        let applets = env.subdir("busybox");
        let list = run(&busybox, &["--list"], COMMAND_TIMEOUT);
        list.assert_code(0);
        for applet in list.stdout.lines().filter(|a| !a.is_empty()) {
            std::os::unix::fs::symlink(&busybox, applets.join(applet)).expect("linking a busybox applet");
        }
        let path = format!(
            "{}:{}:{}",
            root.join("sbin").display(),
            root.join("usr/bin").display(),
            applets.display()
        );
        let record = env.path("calls");
        Router {
            _env: env,
            root,
            record,
            busybox,
            path,
        }
    }

    /// Runs `env -i VARS… PROGRAM ARGS…` with the router's PATH,
    /// IPKG_INSTROOT and record file, and the LAN interface's device br-lan
    /// unless `vars` says otherwise.
    fn run_with(&self, vars: &[(&str, &str)], program: &Path, args: &[&str]) -> Output {
        let mut all: Vec<String> = vec![
            "-i".into(),
            format!("PATH={}", self.path),
            format!("IPKG_INSTROOT={}", self.root.display()),
            format!("LANCERT_RECORD={}", self.record.display()),
        ];
        if !vars.iter().any(|(k, _)| k.starts_with("LANCERT_STANDIN_L3_DEVICE_")) {
            all.push("LANCERT_STANDIN_L3_DEVICE_lan=br-lan".into());
        }
        all.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        all.push(program.display().to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run(Path::new("/usr/bin/env"), &args, COMMAND_TIMEOUT)
    }

    /// `/etc/init.d/lancert ACTION`, executed as OpenWrt does (through its
    /// `#!… /etc/rc.common` line).
    fn init(&self, action: &str, vars: &[(&str, &str)]) -> Output {
        self.run_with(vars, &self.root.join("etc/init.d/lancert"), &[action])
    }

    /// A hotplug event, delivered as hotplug-call does: the script sourced
    /// in a subshell, with the event in the environment.
    fn hotplug(&self, script: &str, vars: &[(&str, &str)]) -> Output {
        let script = self.root.join(script);
        let script = script.to_str().expect("UTF-8 path");
        self.run_with(
            vars,
            &self.busybox,
            &[
                "sh",
                "-c",
                r#"for script in "$@"; do ( . "$script" ); done"#,
                "hotplug-call",
                script,
            ],
        )
    }

    /// The calls recorded so far, one per line.
    fn calls(&self) -> Vec<String> {
        match std::fs::read_to_string(&self.record) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The recorded calls of functions whose name starts with `prefix`.
    fn calls_of(&self, prefix: &str) -> Vec<String> {
        self.calls().into_iter().filter(|c| c.starts_with(prefix)).collect()
    }

    fn forget_calls(&self) {
        let _ = std::fs::remove_file(&self.record);
    }

    fn set_uci(&self, text: &str) {
        std::fs::write(self.root.join("etc/config/lancert"), text).expect("writing /etc/config/lancert");
    }

    fn json_path(&self) -> PathBuf {
        self.root.join("var/etc/lancert/agent.json")
    }

    /// The agent's generated configuration, parsed.
    fn json(&self) -> Value {
        let text = read(&self.json_path());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("agent.json is not JSON ({e}):\n{text}"))
    }

    /// What the init script logged at priority `level` (`err`, `notice`…).
    fn logged(&self, level: &str) -> Vec<String> {
        let prefix = format!("logger -t lancert -p daemon.{level} ");
        self.calls()
            .iter()
            .filter_map(|c| c.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

/// The agent installed as `/usr/bin/lancert-agent`: the binary under test,
/// or a wrapper running it under `LANCERT_AGENT_RUNNER` (qemu-user).
fn install_agent(env: &TestEnv, dest: &Path) {
    let bin = env.agent_bin();
    match std::env::var_os("LANCERT_AGENT_RUNNER") {
        Some(runner) => {
            let script = format!(
                "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
                PathBuf::from(runner).display(),
                bin.display()
            );
            std::fs::write(dest, script).expect("writing the agent wrapper");
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        None => std::os::unix::fs::symlink(&bin, dest).expect("linking the agent"),
    }
}

/// The real agent's `status` on a configuration file: it loads the file as
/// the daemon does and reads only files (no network, no writes).
fn agent_status(router: &Router, config: &Path) -> Output {
    let agent = router.root.join("usr/bin/lancert-agent");
    let config = config.to_str().expect("UTF-8 path");
    run(&agent, &["--config", config, "status"], COMMAND_TIMEOUT)
}

/// The configuration the shipped defaults give, for a LAN device `br-lan`.
fn expected_json() -> Value {
    json!({
        "server": SERVER,
        "state_dir": "/etc/lancert",
        "runtime_dir": "/var/run/lancert",
        "interface": "br-lan",
        "ipv4": true,
        "ipv6": true,
        "key_file": "/etc/uhttpd.key",
        "cert_file": "/etc/lancert/cert.pem",
        "chain_file": "/etc/lancert/chain.pem",
        "fullchain_file": "/etc/uhttpd.crt",
        "reload_command": ["/etc/init.d/uhttpd", "restart"],
        "reload_timeout_secs": 30,
        "verify_address": "127.0.0.1:443",
        "log_level": "info",
    })
}

#[test]
fn start_runs_the_agent_on_the_generated_configuration() {
    let router = Router::new("openwrt-start", &vendor_config());
    let out = router.init("start", &[]);
    out.assert_code(0);
    assert!(
        router.logged("err").is_empty(),
        "errors logged: {:?}\n{out}",
        router.logged("err")
    );

    let json_path = router.json_path();
    let initscript = router.root.join("etc/init.d/lancert");
    assert_eq!(
        router.calls_of("procd_"),
        [
            format!("procd_open_service lancert {}", initscript.display()),
            "procd_open_instance".into(),
            format!(
                "procd_set_param command /usr/bin/lancert-agent --config {} run",
                json_path.display()
            ),
            "procd_set_param respawn 3600 60 5".into(),
            "procd_set_param stdout 1".into(),
            "procd_set_param stderr 1".into(),
            "procd_set_param file /etc/config/lancert".into(),
            "procd_set_param term_timeout 95".into(),
            "procd_close_instance".into(),
            "procd_close_service set".into(),
            "procd_add_reload_trigger lancert".into(),
            "procd_add_interface_trigger interface.* lan /etc/init.d/lancert reload".into(),
            "procd_add_validation lancert_validate_section".into(),
        ],
        "procd calls\n{out}"
    );
    assert_eq!(
        router.calls_of("network_get_device"),
        ["network_get_device lancert_device lan"]
    );

    assert_eq!(router.json(), expected_json());
    assert_eq!(mode_of(&json_path), 0o600, "agent.json's mode");
    assert_eq!(
        mode_of(json_path.parent().expect("dir")),
        0o700,
        "/var/etc/lancert's mode"
    );
    assert!(
        !json_path.with_extension("json.new").exists(),
        "the temporary file is left behind"
    );

    // The real agent loads it as the daemon would, without complaint.
    let status = agent_status(&router, &json_path);
    status.assert_code(0);
    assert_eq!(status.json()["server"], SERVER, "{status}");
    assert!(!status.stderr.contains("config"), "the agent complained:\n{status}");
}

#[test]
fn unset_options_take_the_shipped_values() {
    let router = Router::new(
        "openwrt-defaults",
        &format!("config agent 'main'\n\toption server '{SERVER}'\n"),
    );
    router.init("start", &[]).assert_code(0);
    let mut expected = expected_json();
    // No reload command and no served-certificate check unless configured.
    let map = expected.as_object_mut().expect("object");
    map.remove("reload_command");
    map.remove("verify_address");
    assert_eq!(router.json(), expected);
}

#[test]
fn strings_are_escaped_and_an_option_reload_command_is_split_into_words() {
    let uci = remove_option(&vendor_config(), "reload_command")
        + "\tlist reload_command '/bin/echo'\n\tlist reload_command 'a \"quoted\" \\back\\slash\ttab'\n";
    let router = Router::new("openwrt-escaping", &uci);
    router.init("start", &[]).assert_code(0);
    assert_eq!(
        router.json()["reload_command"],
        json!(["/bin/echo", "a \"quoted\" \\back\\slash\ttab"])
    );
    agent_status(&router, &router.json_path()).assert_code(0);

    let uci =
        remove_option(&vendor_config(), "reload_command") + "\toption reload_command '/etc/init.d/uhttpd  restart'\n";
    router.set_uci(&uci);
    router.init("start", &[]).assert_code(0);
    assert_eq!(
        router.json()["reload_command"],
        json!(["/etc/init.d/uhttpd", "restart"])
    );
}

#[test]
fn the_lan_device_falls_back_to_the_physical_one() {
    let router = Router::new("openwrt-physdev", &vendor_config());
    router
        .init(
            "start",
            &[
                ("LANCERT_STANDIN_L3_DEVICE_lan", ""),
                ("LANCERT_STANDIN_DEVICE_lan", "eth0"),
            ],
        )
        .assert_code(0);
    assert_eq!(router.json()["interface"], "eth0");
}

#[test]
fn start_waits_for_an_interface_without_a_device() {
    let router = Router::new("openwrt-no-device", &vendor_config());
    router
        .init("start", &[("LANCERT_STANDIN_L3_DEVICE_lan", "")])
        .assert_code(0);
    assert!(
        router.calls_of("procd_open_instance").is_empty(),
        "{:?}",
        router.calls()
    );
    assert!(!router.json_path().exists());
    let notices = router.logged("notice");
    assert!(
        notices.iter().any(|l| l.contains("'lan' has no network device")),
        "{notices:?}"
    );
    // The interface trigger starts it when lan comes up.
    assert!(router
        .calls()
        .contains(&"procd_add_interface_trigger interface.* lan /etc/init.d/lancert reload".to_string()));
}

/// Starts with `uci`, expecting a refusal whose error log names `option`
/// (and mentions `detail`); nothing is started and nothing written.
fn refused(name: &str, uci: &str, option: &str, detail: &str) {
    let router = Router::new(name, uci);
    let out = router.init("start", &[]);
    let errors = router.logged("err");
    assert!(
        errors.iter().any(|l| l.contains(option) && l.contains(detail)),
        "no error naming {option} ({detail}): {errors:?}\n{out}"
    );
    assert!(
        router.calls_of("procd_open_instance").is_empty(),
        "an instance was started:\n{:?}",
        router.calls()
    );
    assert!(!router.json_path().exists(), "agent.json was written");
    assert!(
        !router.json_path().with_extension("json.new").exists(),
        "agent.json.new was left"
    );
    // The triggers are still registered: fixing the configuration (a UCI
    // commit) reloads, which starts it.
    assert!(router.calls().contains(&"procd_add_reload_trigger lancert".to_string()));
}

#[test]
fn start_refuses_a_bad_boolean_naming_it() {
    refused(
        "openwrt-bad-bool",
        &set_option(&vendor_config(), "ipv4", "maybe"),
        "lancert.main.ipv4",
        "'maybe' is not a valid bool",
    );
}

#[test]
fn start_refuses_a_missing_ca_file_naming_it() {
    refused(
        "openwrt-no-ca-file",
        &set_option(&vendor_config(), "server_ca", "/nonexistent/lancert-ca.pem"),
        "lancert.main.server_ca",
        "is not a valid file",
    );
}

#[test]
fn start_refuses_a_missing_server_naming_it() {
    let shipped = read(&package_dir().join("files/lancert.config"));
    refused("openwrt-no-server", &shipped, "lancert.main.server", "not set");
}

#[test]
fn start_refuses_a_plain_http_server_naming_it() {
    refused(
        "openwrt-http-server",
        &set_option(&vendor_config(), "server", "http://mgmt.example.com"),
        "lancert.main.server",
        "not an https:// URL",
    );
}

#[test]
fn start_refuses_an_unknown_log_level_naming_it() {
    refused(
        "openwrt-bad-log-level",
        &set_option(&vendor_config(), "log_level", "loud"),
        "lancert.main.log_level",
        "'loud'",
    );
}

#[test]
fn start_refuses_what_the_agent_refuses_naming_the_field() {
    // A whole number, so UCI's uinteger accepts it; the agent's range is
    // 1 to 600 s, and the agent names the field.
    refused(
        "openwrt-agent-refuses",
        &set_option(&vendor_config(), "http_timeout_secs", "9999"),
        "http_timeout_secs",
        "the agent refuses",
    );
}

#[test]
fn enabled_0_starts_nothing() {
    let router = Router::new("openwrt-disabled", &set_option(&vendor_config(), "enabled", "0"));
    router.init("start", &[]).assert_code(0);
    assert!(
        router.calls_of("procd_open_instance").is_empty(),
        "{:?}",
        router.calls()
    );
    assert!(router.calls_of("procd_send_signal").is_empty());
    assert!(!router.json_path().exists());
    assert!(router.logged("info").iter().any(|l| l.contains("disabled")));
    // A later `uci set lancert.main.enabled=1; uci commit` reloads it.
    assert!(router.calls().contains(&"procd_add_reload_trigger lancert".to_string()));
}

#[test]
fn reload_rewrites_the_configuration_and_sends_hup_by_name() {
    let router = Router::new("openwrt-reload", &vendor_config());
    router.init("start", &[]).assert_code(0);
    router.set_uci(&set_option(&vendor_config(), "log_level", "debug"));
    router.forget_calls();

    router
        .init("reload", &[("LANCERT_STANDIN_RUNNING", "1")])
        .assert_code(0);
    assert_eq!(router.json()["log_level"], "debug");
    assert_eq!(mode_of(&router.json_path()), 0o600);
    assert_eq!(
        router.calls_of("procd_"),
        ["procd_running lancert", "procd_send_signal lancert * HUP"],
        "a running agent is signalled, not restarted"
    );
}

#[test]
fn reload_starts_an_agent_that_is_not_running() {
    let router = Router::new("openwrt-reload-start", &vendor_config());
    router.init("reload", &[]).assert_code(0);
    assert!(router.calls_of("procd_send_signal").is_empty(), "{:?}", router.calls());
    assert_eq!(router.calls_of("procd_open_instance").len(), 1, "{:?}", router.calls());
    assert_eq!(router.json(), expected_json());
}

#[test]
fn reload_with_a_bad_option_keeps_the_running_agent_as_it_is() {
    let router = Router::new("openwrt-reload-bad", &vendor_config());
    router.init("start", &[]).assert_code(0);
    let before = read(&router.json_path());
    router.set_uci(&set_option(&vendor_config(), "ipv6", "perhaps"));
    router.forget_calls();

    router
        .init("reload", &[("LANCERT_STANDIN_RUNNING", "1")])
        .assert_code(0);
    assert_eq!(read(&router.json_path()), before, "agent.json changed");
    assert_eq!(
        router.calls_of("procd_"),
        ["procd_running lancert"],
        "signalled or restarted"
    );
    assert!(router.logged("err").iter().any(|l| l.contains("lancert.main.ipv6")));
    assert!(router.logged("notice").iter().any(|l| l.contains("keeping")));
}

#[test]
fn reload_of_a_disabled_service_drops_the_running_instance() {
    let router = Router::new("openwrt-reload-disabled", &vendor_config());
    router.set_uci(&set_option(&vendor_config(), "enabled", "0"));
    router
        .init("reload", &[("LANCERT_STANDIN_RUNNING", "1")])
        .assert_code(0);
    let procd = router.calls_of("procd_");
    // The service is set again with no instance, so procd stops the agent;
    // its triggers stay.
    assert!(
        procd.iter().any(|c| c.starts_with("procd_close_service set")),
        "{procd:?}"
    );
    assert!(!procd.iter().any(|c| c == "procd_open_instance"), "{procd:?}");
    assert!(!procd.iter().any(|c| c.starts_with("procd_send_signal")), "{procd:?}");
}

#[test]
fn check_sends_usr1_by_name() {
    let router = Router::new("openwrt-check", &vendor_config());
    router.init("check", &[]).assert_code(0);
    assert_eq!(router.calls_of("procd_"), ["procd_send_signal lancert * USR1"]);
}

const CHECK_REQUEST: &str = "procd_send_signal lancert * USR1";

/// Delivers a hotplug event; with `expected`, waits for the check request
/// (up to 10 s), else makes sure none comes (after 500 ms).
fn event(router: &Router, script: &str, vars: &[(&str, &str)], expected: bool) -> Output {
    router.forget_calls();
    let out = router.hotplug(script, vars);
    out.assert_code(0);
    if expected {
        wait_for(
            &format!("a check request after {vars:?}"),
            Duration::from_secs(10),
            || router.calls().contains(&CHECK_REQUEST.to_string()).then_some(()),
        );
    } else {
        std::thread::sleep(Duration::from_millis(500));
        let calls = router.calls();
        assert!(
            calls.iter().all(|c| c.starts_with("uci ")),
            "after {vars:?} the script did more than read its interface: {calls:?}"
        );
    }
    out
}

const IFACE: &str = "etc/hotplug.d/iface/95-lancert";
const NTP: &str = "etc/hotplug.d/ntp/95-lancert";

#[test]
fn iface_hotplug_asks_for_a_check_when_the_lan_comes_up_or_its_addresses_change() {
    let router = Router::new("openwrt-hotplug-iface", &vendor_config());
    event(&router, IFACE, &[("ACTION", "ifup"), ("INTERFACE", "lan")], true);
    event(
        &router,
        IFACE,
        &[
            ("ACTION", "ifupdate"),
            ("INTERFACE", "lan"),
            ("IFUPDATE_ADDRESSES", "1"),
        ],
        true,
    );
    event(
        &router,
        IFACE,
        &[("ACTION", "ifupdate"), ("INTERFACE", "lan"), ("IFUPDATE_ROUTES", "1")],
        false,
    );
    event(&router, IFACE, &[("ACTION", "ifupdate"), ("INTERFACE", "lan")], false);
    event(&router, IFACE, &[("ACTION", "ifup"), ("INTERFACE", "wan")], false);
    event(&router, IFACE, &[("ACTION", "ifdown"), ("INTERFACE", "lan")], false);
    assert!(
        router.calls().is_empty(),
        "ifdown read the configuration: {:?}",
        router.calls()
    );

    // The configured interface, not lan.
    router.set_uci(&set_option(&vendor_config(), "interface", "iot"));
    event(&router, IFACE, &[("ACTION", "ifup"), ("INTERFACE", "iot")], true);
    event(&router, IFACE, &[("ACTION", "ifup"), ("INTERFACE", "lan")], false);
}

/// The request may hang (procd busy): the script must still return at once,
/// holding none of netifd's file descriptors, and the request still happen.
fn returns_at_once(router: &Router, script: &str, vars: &[(&str, &str)]) {
    router.forget_calls();
    let mut vars = vars.to_vec();
    vars.push(("LANCERT_STANDIN_SIGNAL_DELAY", "5"));
    let started = Instant::now();
    // `elapsed` runs until stdout and stderr are closed: a background job
    // still holding them would show here.
    let out = router.hotplug(script, &vars);
    out.assert_code(0);
    assert!(
        out.elapsed < Duration::from_secs(1),
        "the hotplug script took {:?} with a hanging request\n{out}",
        out.elapsed
    );
    assert!(
        !router.calls().contains(&CHECK_REQUEST.to_string()),
        "the request did not wait"
    );
    wait_for("the delayed check request", Duration::from_secs(15), || {
        router.calls().contains(&CHECK_REQUEST.to_string()).then_some(())
    });
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the request came too early"
    );
}

#[test]
fn iface_hotplug_returns_at_once_when_the_request_hangs() {
    let router = Router::new("openwrt-hotplug-iface-hang", &vendor_config());
    returns_at_once(&router, IFACE, &[("ACTION", "ifup"), ("INTERFACE", "lan")]);
}

#[test]
fn ntp_hotplug_asks_for_a_check_on_stratum_only() {
    let router = Router::new("openwrt-hotplug-ntp", &vendor_config());
    event(&router, NTP, &[("ACTION", "stratum")], true);
    for action in ["step", "periodic", "unsync"] {
        event(&router, NTP, &[("ACTION", action)], false);
        assert!(router.calls().is_empty(), "{action}: {:?}", router.calls());
    }
    returns_at_once(&router, NTP, &[("ACTION", "stratum")]);
}

#[test]
fn sysupgrade_keeps_the_state_and_the_installed_files() {
    let keep = read(&package_dir().join("files/lancert.keep"));
    let kept: Vec<&str> = keep
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let covered = |path: &str| {
        kept.iter()
            .any(|k| *k == path || (k.ends_with('/') && path.starts_with(k)))
    };
    let config = read(&package_dir().join("files/lancert.config"));
    let options = options_of(&config);
    let value = |name: &str| {
        options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("lancert.config has no option {name}"))
    };
    let state_dir = value("state_dir");
    assert!(
        covered(&format!("{state_dir}/")),
        "state_dir {state_dir} is not kept: {kept:?}"
    );
    for name in ["key_file", "cert_file", "chain_file", "fullchain_file"] {
        let path = value(name);
        assert!(covered(&path), "{name} {path} is not kept: {kept:?}");
    }
    // tmpfs, rewritten often: never kept.
    let runtime = value("runtime_dir");
    assert!(!covered(&format!("{runtime}/")), "runtime_dir {runtime} is kept");
    assert!(
        install_lines()
            .iter()
            .any(|i| i.source == "./files/lancert.keep" && i.dest == "lib/upgrade/keep.d/lancert-agent"),
        "the keep list is not installed as /lib/upgrade/keep.d/lancert-agent"
    );
}

/// `NAME:=VALUE` of the Makefile.
fn make_var(text: &str, name: &str) -> String {
    let prefix = format!("{name}:=");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("the Makefile does not set {name}:="))
}

/// The agent's version: agent/Cargo.toml's, or the workspace's it inherits.
fn agent_version() -> String {
    let quoted = |line: &str| line.split('"').nth(1).map(str::to_string);
    let agent = read(&workspace().join("agent/Cargo.toml"));
    if let Some(v) = agent
        .lines()
        .find(|l| l.starts_with("version") && l.contains('"'))
        .and_then(quoted)
    {
        return v;
    }
    assert!(
        agent.contains("version.workspace = true"),
        "agent/Cargo.toml has no version"
    );
    let root = read(&workspace().join("Cargo.toml"));
    let section = root
        .split("[workspace.package]")
        .nth(1)
        .expect("Cargo.toml has [workspace.package]");
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find(|l| l.starts_with("version"))
        .and_then(quoted)
        .expect("[workspace.package] has a version")
}

#[test]
fn makefile_builds_the_agent_member_as_a_rust_package() {
    let text = makefile();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("the Makefile has no line with {needle}"))
    };
    assert_eq!(
        lines.iter().find(|l| l.starts_with("include ")),
        Some(&"include $(TOPDIR)/rules.mk"),
        "rules.mk comes first"
    );
    let package_mk = position("include $(INCLUDE_DIR)/package.mk");
    let rust_mk = position("lang/rust/rust-package.mk");
    assert!(lines[rust_mk].starts_with("include "), "{}", lines[rust_mk]);
    assert!(package_mk < rust_mk, "package.mk must come before rust-package.mk");

    let version = make_var(&text, "PKG_VERSION");
    assert_eq!(version, agent_version(), "PKG_VERSION is not the agent's version");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "PKG_VERSION {version} is not major.minor.patch (apk needs it)"
    );
    let release = make_var(&text, "PKG_RELEASE");
    assert!(
        !release.is_empty() && release.bytes().all(|b| b.is_ascii_digit()),
        "PKG_RELEASE {release} is not a plain integer"
    );
    assert_eq!(make_var(&text, "PKG_NAME"), "lancert-agent");
    assert_eq!(make_var(&text, "PKG_BUILD_DEPENDS"), "rust/host");
    assert_eq!(make_var(&text, "PKG_BUILD_PARALLEL"), "1");
    assert_eq!(make_var(&text, "PKG_SOURCE_PROTO"), "git");
    for name in [
        "PKG_SOURCE_URL",
        "PKG_SOURCE_VERSION",
        "PKG_MIRROR_HASH",
        "PKG_LICENSE",
        "PKG_MAINTAINER",
    ] {
        make_var(&text, name);
    }
    assert!(
        lines.iter().any(|l| l.starts_with("DEPENDS:=$(RUST_ARCH_DEPENDS)")),
        "DEPENDS:=$(RUST_ARCH_DEPENDS) is missing"
    );
    // OpenWrt's forced panic=unwind is replaced after rust-package.mk.
    let panic = position("CARGO_PROFILE_RELEASE_PANIC=abort");
    assert!(panic > rust_mk, "panic=abort must be set after rust-package.mk");
    assert!(lines[panic].starts_with("CARGO_PKG_VARS:=$(filter-out CARGO_PROFILE_RELEASE_PANIC=%,"));
    // --locked stays on (rust-package.mk's default): the workspace's Cargo.lock.
    assert!(
        !lines
            .iter()
            .any(|l| !l.starts_with('#') && l.contains("RUST_PKG_LOCKED")),
        "the Makefile changes RUST_PKG_LOCKED"
    );
    // The workspace root is a virtual manifest: the member is built, after
    // rust-package.mk set its default Build/Compile.
    let compile = position("Build/Compile=$(call Build/Compile/Cargo,agent)");
    assert!(
        compile > rust_mk,
        "Build/Compile must be set after including rust-package.mk"
    );
    assert!(workspace().join("agent/Cargo.toml").is_file());
    assert!(read(&workspace().join("agent/Cargo.toml")).contains("name = \"agent\""));
    let conffiles = text
        .split("define Package/lancert-agent/conffiles\n")
        .nth(1)
        .and_then(|r| r.split("endef").next())
        .expect("conffiles section");
    assert_eq!(conffiles.trim(), "/etc/config/lancert");
    let rust_bin = position("$(eval $(call RustBinPackage,lancert-agent))");
    let build = position("$(eval $(call BuildPackage,lancert-agent))");
    let install = position("define Package/lancert-agent/install");
    assert!(
        install < rust_bin,
        "the install section must precede RustBinPackage, which else defines its own"
    );
    assert!(rust_bin < build, "RustBinPackage comes before BuildPackage");

    // Every file of files/ is installed, and the binary as lancert-agent.
    let installs = install_lines();
    let mut shipped: Vec<String> = std::fs::read_dir(package_dir().join("files"))
        .expect("files/")
        .map(|e| format!("./files/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    shipped.sort();
    let mut installed: Vec<String> = installs
        .iter()
        .filter(|i| i.source.starts_with("./files/"))
        .map(|i| i.source.clone())
        .collect();
    installed.sort();
    assert_eq!(installed, shipped, "files/ and the install section differ");
    assert!(installs
        .iter()
        .any(|i| i.source == "$(PKG_INSTALL_DIR)/bin/agent" && i.dest == "usr/bin/lancert-agent"));
}
