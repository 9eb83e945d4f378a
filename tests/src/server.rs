//! The reference server, `lancert-server`, run as a child process.

use crate::env::TestEnv;
use crate::process::{run, wait_with_timeout, Output, COMMAND_TIMEOUT};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long `lancert-server serve` may take to print `listening on`: 30 s.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server gets to stop after SIGTERM before it is killed: 10 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's `dns` setting for its embedded authoritative DNS server on
/// `127.0.0.1:port`, for the zone the test servers use.
pub fn authoritative_dns(port: u16) -> Value {
    json!({"type": "authoritative", "listen": format!("127.0.0.1:{port}"), "nameservers": ["ns1.example.net"]})
}

/// The settings of a test server that tests change.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `issuer.validity_secs`: lifetime of issued certificates (90 days).
    pub validity_secs: u64,
    /// `issuer.delay_secs`: how long issuance takes (0).
    pub delay_secs: u64,
    /// `retry_after_secs` (1).
    pub retry_after_secs: u64,
    /// `renewal_window`: whether orders carry a renewal window (false).
    pub renewal_window: bool,
    /// Top-level members set over the ones above (`issuer`, `dns`,
    /// `budget`, ...).
    pub extra: serde_json::Map<String, Value>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            validity_secs: 7_776_000,
            delay_secs: 0,
            retry_after_secs: 1,
            renewal_window: false,
            extra: serde_json::Map::new(),
        }
    }
}

/// A running `lancert-server serve` in local-CA mode, with its data in
/// `<test dir>/server/`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    bin: PathBuf,
    config_path: PathBuf,
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// A command prefix the server runs under, e.g. `ip netns exec NAME`
    /// ([`Server::start_under`]); empty for none.
    runner: Vec<String>,
}

/// The zone test servers assign hostnames in.
pub const ZONE: &str = "devices.example.com";

impl Server {
    /// Starts a server with the default settings.
    pub fn start(env: &TestEnv) -> Server {
        Server::start_with(env, ServerConfig::default())
    }

    /// Writes the configuration and starts the server, waiting (at most
    /// [`SERVER_START_TIMEOUT`]) for its `listening on` line.
    pub fn start_with(env: &TestEnv, cfg: ServerConfig) -> Server {
        Server::start_under(env, cfg, Vec::new())
    }

    /// [`Server::start_with`], the server running under the command prefix
    /// `runner` (e.g. [`Netns::exec_prefix`](crate::Netns::exec_prefix): the
    /// server listens inside that network namespace). `lancert-server`'s
    /// other commands ([`Server::cli`]) work on the data directory only and
    /// run without it.
    pub fn start_under(env: &TestEnv, cfg: ServerConfig, runner: Vec<String>) -> Server {
        let port = env.free_port();
        let data_dir = env.subdir("server");
        let config_path = env.path("server.json");
        let mut config = json!({
            "listen": format!("127.0.0.1:{port}"),
            "public_url": format!("https://localhost:{port}"),
            "data_dir": data_dir,
            "zone": ZONE,
            "tls_names": ["localhost", "127.0.0.1"],
            "issuer": {"type": "local_ca", "validity_secs": cfg.validity_secs, "delay_secs": cfg.delay_secs},
            "retry_after_secs": cfg.retry_after_secs,
            "renewal_window": cfg.renewal_window,
        });
        for (key, value) in cfg.extra {
            config[key] = value;
        }
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).expect("writing server.json");
        let mut s = Server {
            bin: env.server_bin(),
            config_path,
            data_dir,
            port,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            runner,
        };
        s.spawn_with_env(env.path("server.log"), &[]);
        s
    }

    fn spawn_with_env(&mut self, log_path: PathBuf, vars: &[(&str, &str)]) {
        let mut command = match self.runner.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).ok();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        if rx.recv_timeout(SERVER_START_TIMEOUT).is_err() {
            let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "lancert-server did not print `listening on` within {SERVER_START_TIMEOUT:?} (exit status {status:?})\n{}",
                self.log()
            );
        }
    }

    /// The base URL agents use: `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server (for `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The root CA the server created: trusted for its TLS and its chains.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// Everything the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `lancert-server SUBCOMMAND --config FILE ARGS…`.
    pub fn cli(&self, subcommand: &str, args: &[&str]) -> Output {
        let config = self.config_path.to_str().expect("UTF-8 path");
        let mut all = vec![subcommand, "--config", config];
        all.extend_from_slice(args);
        run(&self.bin, &all, COMMAND_TIMEOUT)
    }

    /// Mints one enrollment token.
    pub fn token(&self) -> String {
        self.tokens(None, 1).remove(0)
    }

    /// Mints `count` tokens, bound to `hostname` if given.
    pub fn tokens(&self, hostname: Option<&str>, count: usize) -> Vec<String> {
        let count = count.to_string();
        let mut args = vec!["--count", count.as_str()];
        if let Some(h) = hostname {
            args.extend_from_slice(&["--hostname", h]);
        }
        let out = self.cli("token", &args);
        out.assert_code(0);
        let tokens: Vec<String> = out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        assert_eq!(tokens.len(), count.parse::<usize>().unwrap(), "token count\n{out}");
        tokens
    }

    /// `lancert-server records [--hostname NAME]`: the published records.
    pub fn records(&self, hostname: Option<&str>) -> Vec<Value> {
        let out = match hostname {
            Some(h) => self.cli("records", &["--hostname", h]),
            None => self.cli("records", &[]),
        };
        out.assert_code(0);
        match out.json() {
            Value::Array(a) => a,
            other => panic!("records is not a JSON array: {other}"),
        }
    }

    /// The values of the `rtype` records of `hostname`, sorted.
    pub fn record_values(&self, hostname: &str, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .records(Some(hostname))
            .iter()
            .filter(|r| r["name"].as_str().map(|n| n.trim_end_matches('.')) == Some(hostname) && r["type"] == rtype)
            .filter_map(|r| r["value"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    }

    /// `lancert-server devices`: every device with its last status.
    pub fn devices(&self) -> Vec<Value> {
        let out = self.cli("devices", &[]);
        out.assert_code(0);
        match out.json() {
            Value::Array(a) => a,
            other => panic!("devices is not a JSON array: {other}"),
        }
    }

    /// Starts the stopped server again on the same port and data (its log
    /// goes to `server.restarted.log` beside the first).
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// [`Server::restart`] with extra environment variables (e.g. a
    /// libfaketime clock).
    pub fn restart_with_env(&mut self, vars: &[(&str, &str)]) {
        self.stop();
        let log = self.config_path.with_file_name("server.restarted.log");
        self.spawn_with_env(log, vars);
    }

    /// Stops the server now (SIGTERM, then SIGKILL after 10 s), as drop does.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::signal(child.id(), libc::SIGTERM);
            if wait_with_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
