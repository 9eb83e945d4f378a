//! The systemd integration: the units in `systemd/` pass `systemd-analyze
//! verify` and rate at most 2.0 in `systemd-analyze security --offline=yes`,
//! their example configuration is one the agent accepts, and the daemon
//! speaks the notification protocol (`Type=notify`, `WatchdogSec=`) on a
//! real `$NOTIFY_SOCKET`.
//!
//! No systemd runs here (no PID 1 to drive): the units are checked by
//! systemd's own analyzer, and the protocol by a socket that plays the
//! service manager's part.

use lancert_tests::run;
use lancert_tests::scenario::server_device;
use lancert_tests::{wait_for, Server, TestEnv};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";
/// The highest exposure `systemd-analyze security` may give a lancert unit
/// that runs the agent (the bar).
const MAX_EXPOSURE: f64 = 2.0;

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn units_dir() -> PathBuf {
    repo_dir().join("systemd")
}

fn analyzer() -> &'static Path {
    let p = Path::new(SYSTEMD_ANALYZE);
    assert!(
        p.is_file(),
        "{SYSTEMD_ANALYZE} is missing: install systemd (scripts/test does: apt-get install systemd)"
    );
    p
}

/// A copy of `unit` in `dir` whose `/usr/bin/lancert-agent` is the agent
/// under test (`verify` insists that every ExecStart= program exists).
fn unit_copy(env: &TestEnv, unit: &str) -> PathBuf {
    let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
    let agent = env.agent_bin();
    let text = text.replace("/usr/bin/lancert-agent", agent.to_str().unwrap());
    let dir = env.subdir("units");
    let path = dir.join(unit);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_unit_verifies() {
    let env = TestEnv::new("systemd-verify");
    for unit in [
        "lancert-agent.service",
        "lancert-provision.service",
        "lancert-web-reload@.service",
        "lancert-web-reload@.path",
    ] {
        let copy = unit_copy(&env, unit);
        // A template verifies as one of its instances.
        let copy = if unit.contains("@.") {
            let instance = copy.with_file_name(unit.replace("@.", "@nginx."));
            std::fs::rename(&copy, &instance).unwrap();
            instance
        } else {
            copy
        };
        let out = run(analyzer(), &["verify", copy.to_str().unwrap()], Duration::from_secs(60));
        // Errors about the unit itself; verify also loads the units it
        // names (nginx.service), which need not exist on a test machine.
        let own: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.contains("nginx.service: Unit") && !l.contains("Unit nginx.service not found"))
            .collect();
        assert!(own.is_empty(), "{unit} does not verify\n{out}");
    }
}

fn exposure(env: &TestEnv, unit: &str) -> f64 {
    let copy = unit_copy(env, unit);
    let out = run(
        analyzer(),
        &["security", "--offline=yes", "--no-pager", copy.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure level for {unit}\n{out}"));
    let figure = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    eprintln!("{unit}: exposure {figure}");
    figure
}

#[test]
fn the_agent_units_rate_at_most_2_0() {
    let env = TestEnv::new("systemd-security");
    for unit in ["lancert-agent.service", "lancert-provision.service"] {
        let figure = exposure(&env, unit);
        assert!(
            figure <= MAX_EXPOSURE,
            "{unit}: exposure {figure} is above {MAX_EXPOSURE}"
        );
    }
}

#[test]
fn the_units_and_the_example_configuration_agree() {
    let units = units_dir();
    let agent = std::fs::read_to_string(units.join("lancert-agent.service")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(units.join("agent.json")).unwrap()).unwrap();
    for line in [
        "Type=notify",
        "User=lancert",
        "StateDirectory=lancert",
        "RuntimeDirectory=lancert",
    ] {
        assert!(agent.lines().any(|l| l == line), "lancert-agent.service lacks {line}");
    }
    assert!(agent.lines().any(|l| l.starts_with("WatchdogSec=")));
    // What the unit lets the agent write is where the configuration puts
    // its files.
    let writable: Vec<&str> = agent
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(config["state_dir"], "/var/lib/lancert");
    assert_eq!(config["runtime_dir"], "/run/lancert");
    for key in ["key_file", "cert_file", "chain_file", "fullchain_file"] {
        let path = config[key].as_str().unwrap();
        assert!(
            writable.iter().any(|w| Path::new(path).parent() == Some(Path::new(w))),
            "{key} {path} is not in a ReadWritePaths= directory ({writable:?})"
        );
    }
    // The path unit watches the file the agent renames into place last.
    let path_unit = std::fs::read_to_string(units.join("lancert-web-reload@.path")).unwrap();
    let watched = format!("PathChanged={}", config["fullchain_file"].as_str().unwrap());
    assert!(
        path_unit.lines().any(|l| l == watched),
        "the path unit does not watch {watched}"
    );
}

#[test]
fn the_example_configuration_is_accepted() {
    let env = TestEnv::new("systemd-config");
    let text = std::fs::read_to_string(units_dir().join("agent.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Same file, with the directories moved into the test's own.
    for (key, name) in [("state_dir", "state"), ("runtime_dir", "run")] {
        config[key] = env.path(name).to_str().unwrap().into();
    }
    let path = env.path("agent.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = run(
        &env.agent_bin(),
        &["--config", path.to_str().unwrap(), "status"],
        Duration::from_secs(10),
    );
    out.assert_code(0);
}

/// Reads notifications until `pred` accepts one, returning every message
/// read so far.
fn until(sock: &UnixDatagram, what: &str, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} within {timeout:?}; got {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = pred(&msg);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

#[test]
fn the_daemon_speaks_the_notify_protocol_and_feeds_the_watchdog() {
    let env = TestEnv::new("systemd-notify");
    let server = Server::start(&env);
    let socket_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let child_env = env.path("reload-env");
    let mut dev = server_device(&env, &server, |c| {
        c.set("address_interval_secs", 3600)
            .set("certificate_interval_secs", 3600)
            .set("status_refresh_secs", 3600)
    });
    // The reload command records its environment, then reloads nginx.
    let reload = dev.nginx.reload_command();
    let script = format!("env > {}; {}", child_env.display(), reload[2]);
    dev.agent
        .reconfigure(|c| c.set("reload_command", serde_json::json!(["/bin/sh", "-c", script])));
    let mut daemon = dev.agent.spawn_daemon_with_env(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        // 1 s: fed every 0.5 s.
        ("WATCHDOG_USEC", "1000000"),
    ]);

    let first = until(&sock, "READY=1", Duration::from_secs(10), |m| m.starts_with("READY=1"));
    assert_eq!(first.len(), 1, "READY=1 must come first: {first:?}");
    // The first check (issuance) ends with a status line; the watchdog is
    // fed meanwhile, also during the wait between order polls.
    let during = until(&sock, "a status after the first check", Duration::from_secs(30), |m| {
        m.starts_with("STATUS=last check")
    });
    let status = during.last().unwrap();
    assert!(status.contains(": ok"), "{status}\n{}", daemon.log());
    let env_text = wait_for("the reload command's environment", Duration::from_secs(10), || {
        std::fs::read_to_string(&child_env).ok().filter(|t| !t.is_empty())
    });
    assert!(
        !env_text.contains("NOTIFY_SOCKET") && !env_text.contains("WATCHDOG_"),
        "the reload command inherited the service manager's variables:\n{env_text}"
    );

    // Idle: fed about twice a second.
    let start = Instant::now();
    let mut fed = 0;
    until(&sock, "watchdog feeds", Duration::from_secs(10), |m| {
        fed += usize::from(m == "WATCHDOG=1");
        start.elapsed() >= Duration::from_secs(3)
    });
    assert!(
        (4..=12).contains(&fed),
        "{fed} WATCHDOG=1 in 3 s with WATCHDOG_USEC=1000000"
    );

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1 again.
    daemon.signal(libc::SIGHUP);
    let reload = until(&sock, "READY=1 after RELOADING=1", Duration::from_secs(10), |m| {
        m.starts_with("READY=1")
    });
    let reloading = reload
        .iter()
        .find(|m| m.starts_with("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {reload:?}"));
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading}");

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal(libc::SIGTERM);
    until(&sock, "STOPPING=1", Duration::from_secs(10), |m| {
        m.starts_with("STOPPING=1")
    });
    assert_eq!(daemon.terminate(Duration::from_secs(10)), Some(0), "{}", daemon.log());

    // The journal gets syslog priorities: `<6>` for information.
    let log = daemon.log();
    assert!(log.lines().any(|l| l.starts_with("<6>agent ")), "{log}");
    assert!(
        log.lines().all(|l| l.starts_with('<')),
        "a line without a priority:\n{log}"
    );
}
