//! The `agent` binary: its configuration file, runs with a time limit, the
//! daemon, and snapshots of the files it writes.

use crate::env::TestEnv;
use crate::process::{run, signal, wait_with_timeout, Output, COMMAND_TIMEOUT};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

/// An agent configuration, written as the flat JSON object the agent reads.
/// Starts from test defaults; [`AgentConfig::set`] changes or adds any
/// member (also unknown or badly typed ones, for the configuration tests).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    values: Map<String, Value>,
}

impl AgentConfig {
    /// Test defaults for an agent talking to `server` and trusting `ca`
    /// (both for the server's TLS and for issued chains), with every file
    /// under `dir`: `state/`, `tls/device.key`, `tls/device.crt`,
    /// `tls/chain.pem`, `tls/fullchain.pem`, lock in `run/`. Interface `lo`, IPv4 only, no
    /// start-up splay, debug logging, 10 s HTTP timeout, no reload command.
    pub fn new(server: &str, ca: &Path, dir: &Path) -> AgentConfig {
        let tls = dir.join("tls");
        let v = json!({
            "server": server,
            "server_ca": ca,
            "trust_anchors": ca,
            "state_dir": dir.join("state"),
            "runtime_dir": dir.join("run"),
            "interface": "lo",
            "ipv4": true,
            "ipv6": false,
            "key_file": tls.join("device.key"),
            "cert_file": tls.join("device.crt"),
            "chain_file": tls.join("chain.pem"),
            "fullchain_file": tls.join("fullchain.pem"),
            "startup_splay_secs": 0,
            "http_timeout_secs": 10,
            "log_level": "debug",
        });
        let Value::Object(values) = v else { unreachable!() };
        AgentConfig { values }
    }

    /// Sets a member (any JSON value).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> AgentConfig {
        self.values.insert(key.to_string(), value.into());
        self
    }

    /// Removes a member.
    pub fn remove(mut self, key: &str) -> AgentConfig {
        self.values.remove(key);
        self
    }

    /// A member's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// A path-valued member.
    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(
            self.values
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("agent config has no path {key:?}")),
        )
    }

    /// The configuration as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&Value::Object(self.values.clone())).expect("config serializes")
    }
}

/// One agent installation: a configuration file and the agent binary.
pub struct Agent {
    bin: PathBuf,
    /// An emulator the binary runs under (`LANCERT_AGENT_RUNNER`).
    runner: Option<PathBuf>,
    /// A command prefix every run goes under, e.g. `ip netns exec NAME`
    /// ([`Agent::set_prefix`]); empty for none.
    prefix: Vec<String>,
    config_path: PathBuf,
    config: AgentConfig,
    log: PathBuf,
}

impl Agent {
    /// Writes `config` to `<test dir>/<name>.json` and returns the agent.
    pub fn new(env: &TestEnv, name: &str, config: AgentConfig) -> Agent {
        let config_path = env.path(&format!("{name}.json"));
        let mut a = Agent {
            bin: env.agent_bin(),
            runner: crate::env::agent_runner(),
            prefix: Vec::new(),
            config_path,
            config,
            log: env.path(&format!("{name}.log")),
        };
        a.write_config();
        a
    }

    fn write_config(&mut self) {
        std::fs::write(&self.config_path, self.config.to_json())
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
    }

    /// Replaces the configuration (rewrites the file).
    pub fn reconfigure(&mut self, f: impl FnOnce(AgentConfig) -> AgentConfig) {
        self.config = f(self.config.clone());
        self.write_config();
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Runs every later command of this agent (checks, `status`, the
    /// daemon) under the command prefix `prefix`, e.g.
    /// [`Netns::exec_prefix`](crate::Netns::exec_prefix): the agent, and what
    /// it starts (its reload command, so nginx), then live in that network
    /// namespace.
    pub fn set_prefix(&mut self, prefix: Vec<String>) {
        self.prefix = prefix;
    }

    /// The words before `--config`: the prefix, then `middle` (e.g.
    /// `/usr/bin/env K=V`), the emulator and the agent binary.
    fn argv(&self, middle: &[String]) -> Vec<String> {
        let mut all = self.prefix.clone();
        all.extend_from_slice(middle);
        if let Some(runner) = &self.runner {
            all.push(runner.to_str().expect("UTF-8 path").to_string());
        }
        all.push(self.bin.to_str().expect("UTF-8 path").to_string());
        all.extend([
            "--config".to_string(),
            self.config_path.to_str().expect("UTF-8 path").to_string(),
        ]);
        all
    }

    fn run_argv(&self, mut all: Vec<String>, args: &[&str]) -> Output {
        all.extend(args.iter().map(|a| a.to_string()));
        let words: Vec<&str> = all[1..].iter().map(String::as_str).collect();
        let out = run(Path::new(&all[0]), &words, COMMAND_TIMEOUT);
        self.append_log(&out);
        out
    }

    /// Runs `agent --config FILE ARGS…` (at most [`COMMAND_TIMEOUT`]). The
    /// run is appended to `<test dir>/<name>.log` for post-mortems.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_argv(self.argv(&[]), args)
    }

    /// [`Agent::run`] with extra environment variables (through
    /// `/usr/bin/env`, so the command line shows them).
    pub fn run_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut env = vec!["/usr/bin/env".to_string()];
        env.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        self.run_argv(self.argv(&env), args)
    }

    fn append_log(&self, out: &Output) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = writeln!(f, "{out}\n");
        }
    }

    /// `agent provision --server URL --token TOKEN`.
    pub fn provision(&self, token: &str) -> Output {
        let server = self
            .config
            .get("server")
            .and_then(Value::as_str)
            .expect("server")
            .to_string();
        self.run(&["provision", "--server", &server, "--token", token])
    }

    /// `agent --check-now`.
    pub fn check_now(&self) -> Output {
        self.run(&["--check-now"])
    }

    /// `agent status`, parsed.
    pub fn status(&self) -> Value {
        let out = self.run(&["status"]);
        out.assert_code(0);
        out.json()
    }

    /// The installed key, certificate, chain and full chain files.
    pub fn installed_files(&self) -> [PathBuf; 4] {
        ["key_file", "cert_file", "chain_file", "fullchain_file"].map(|k| self.config.path(k))
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.config.path("state_dir")
    }

    /// Bytes, mtime and mode of the installed files, their `.bak` backups
    /// and every file under the state directory.
    pub fn file_snapshot(&self) -> FileSnapshot {
        let mut snap = self.installed_snapshot();
        snapshot_tree(&self.state_dir(), &mut snap.files);
        snap
    }

    /// Bytes, mtime and mode of the installed files and their `.bak`
    /// backups only (the state directory may legitimately change, for
    /// example to record an error).
    pub fn installed_snapshot(&self) -> FileSnapshot {
        let mut files = BTreeMap::new();
        for f in self.installed_files() {
            snapshot_path(&f, &mut files);
            let mut bak = f.clone().into_os_string();
            bak.push(".bak");
            snapshot_path(Path::new(&bak), &mut files);
        }
        FileSnapshot { files }
    }

    /// Temporary files left next to the installed files or in the state
    /// directory (the agent stages every write as `.NAME.tmp-PID`): after
    /// any run, finished or failed, there must be none.
    pub fn leftover_temporaries(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .installed_files()
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        dirs.push(self.state_dir());
        dirs.sort();
        dirs.dedup();
        let mut found = Vec::new();
        for dir in dirs {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().contains(".tmp") {
                    found.push(e.path());
                }
            }
        }
        found
    }

    /// The `.bak` backup of an installed file.
    pub fn backup_of(path: &Path) -> PathBuf {
        let mut bak = path.to_path_buf().into_os_string();
        bak.push(".bak");
        PathBuf::from(bak)
    }

    /// Starts `agent --config FILE run` as a daemon, its stderr going to
    /// `<test dir>/<name>-daemon.log`.
    pub fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_with_env(&[])
    }

    /// [`Agent::spawn_daemon`] with extra environment variables (e.g. the
    /// service manager's `NOTIFY_SOCKET`).
    pub fn spawn_daemon_with_env(&self, vars: &[(&str, &str)]) -> Daemon {
        let mut log = self.log.clone().into_os_string();
        log.push(".daemon");
        let log = PathBuf::from(log);
        let file = std::fs::File::create(&log).expect("creating daemon log");
        let argv = self.argv(&[]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("run")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} run: {e}", self.bin.display()));
        Daemon {
            child: Some(child),
            log,
        }
    }
}

/// A running `agent run`; killed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends a signal (`libc::SIGUSR1`, `SIGHUP`, `SIGTERM`).
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited (without reaping it twice).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Sends SIGTERM and waits at most `timeout` for the exit; returns the
    /// exit code (`None` when killed by a signal), or panics with the log if
    /// the daemon did not stop in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id(), libc::SIGTERM);
        match wait_with_timeout(&mut child, timeout) {
            Some(code) => code,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent run did not stop within {timeout:?} of SIGTERM\n{}", self.log());
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Contents and metadata of files at one moment; compare two with `==`
/// (or [`FileSnapshot::assert_same`] for a readable difference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnapshot {
    files: BTreeMap<PathBuf, FileState>,
}

/// One file's bytes, mtime and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The contents.
    pub bytes: Vec<u8>,
    /// Last modification.
    pub mtime: SystemTime,
    /// `st_mode & 0o7777`.
    pub mode: u32,
}

impl FileSnapshot {
    /// The snapshotted paths.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.keys().map(PathBuf::as_path).collect()
    }

    /// One file's state.
    pub fn get(&self, path: &Path) -> Option<&FileState> {
        self.files.get(path)
    }

    /// Panics, naming every file that appeared, disappeared or changed
    /// (bytes, mtime or mode), unless `self` and `later` are identical.
    #[track_caller]
    pub fn assert_same(&self, later: &FileSnapshot, context: &str) {
        let mut diffs = Vec::new();
        for (p, a) in &self.files {
            match later.files.get(p) {
                None => diffs.push(format!("removed: {}", p.display())),
                Some(b) if a.bytes != b.bytes => diffs.push(format!("content changed: {}", p.display())),
                Some(b) if a.mtime != b.mtime => diffs.push(format!("mtime changed: {}", p.display())),
                Some(b) if a.mode != b.mode => diffs.push(format!("mode changed: {}", p.display())),
                Some(_) => {}
            }
        }
        for p in later.files.keys() {
            if !self.files.contains_key(p) {
                diffs.push(format!("created: {}", p.display()));
            }
        }
        assert!(diffs.is_empty(), "{context}: files changed:\n  {}", diffs.join("\n  "));
    }
}

fn snapshot_path(p: &Path, files: &mut BTreeMap<PathBuf, FileState>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(p) else { return };
    if !meta.is_file() {
        return;
    }
    if let Ok(bytes) = std::fs::read(p) {
        files.insert(
            p.to_path_buf(),
            FileState {
                bytes,
                mtime: meta.modified().expect("mtime"),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
    }
}

fn snapshot_tree(dir: &Path, files: &mut BTreeMap<PathBuf, FileState>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            snapshot_tree(&p, files);
        } else {
            snapshot_path(&p, files);
        }
    }
}
