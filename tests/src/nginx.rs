//! Debian's nginx serving the agent's certificate files on a loopback port.
//!
//! nginx runs as a daemon (`daemon on`) with every path it writes (pid file,
//! logs, temp directories) inside the test's directory. It is started either
//! by the test ([`Nginx::start`]) or by the agent itself: the agent's
//! `reload_command` ([`Nginx::reload_command`]) reloads nginx when it runs and
//! starts it when it does not, as `systemctl reload-or-restart` would on a
//! device. So nginx comes up as soon as the agent has installed its first
//! (self-signed) certificate, and every later install is a real reload.

use crate::env::TestEnv;
use crate::process::{alive, run, signal, Output};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Debian's nginx binary.
pub const NGINX: &str = "/usr/sbin/nginx";

/// How long nginx may take to start, reload or stop: 10 s.
const NGINX_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes in a row must show a new certificate before the
/// harness believes a reload is complete: 5 (50 ms apart).
pub const STABLE_HANDSHAKES: u32 = 5;

/// An nginx configuration in `<device dir>/nginx/`; stopped on drop.
pub struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
    error_log: PathBuf,
    pid_file: PathBuf,
    port: u16,
}

impl Nginx {
    /// Writes a configuration serving `fullchain` with `key` on a free
    /// 127.0.0.1 port. Starts nothing.
    pub fn configure(env: &TestEnv, key: &Path, fullchain: &Path) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing: install nginx (scripts/test does: apt-get install nginx-light)"
        );
        // Beside the device's own directory (`<device>/tls/key` →
        // `<device>/nginx`), so several devices of one test each have one.
        let dir = match key.parent().and_then(Path::parent) {
            Some(device_dir) if device_dir.starts_with(env.dir()) => device_dir.join("nginx"),
            _ => env.path("nginx"),
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let port = env.free_port();
        let conf = dir.join("nginx.conf");
        let error_log = dir.join("error.log");
        let pid_file = dir.join("nginx.pid");
        let d = dir.display();
        // As root, workers would otherwise run as `nobody`; the test's files
        // are root's, so keep root (a test machine only).
        let user = if is_root() { "user root;\n" } else { "" };
        let text = format!(
            "# Written by the lancert test harness.\n\
             {user}daemon on;\n\
             master_process on;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port} ssl;\n\
             \x20       server_name _;\n\
             \x20       ssl_certificate {fullchain};\n\
             \x20       ssl_certificate_key {key};\n\
             \x20       location / {{ default_type text/plain; return 200 \"lancert test nginx\\n\"; }}\n\
             \x20   }}\n\
             }}\n",
            fullchain = fullchain.display(),
            key = key.display(),
        );
        std::fs::write(&conf, text).expect("writing nginx.conf");
        Nginx {
            dir,
            conf,
            error_log,
            pid_file,
            port,
        }
    }

    /// The port nginx listens on (TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration file.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// `127.0.0.1:PORT`: the agent's `verify_address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The agent's `reload_command`: `nginx -s reload` when nginx runs,
    /// else start it. Exits non-zero if nginx refuses the configuration or
    /// the files.
    pub fn reload_command(&self) -> Vec<String> {
        let (c, e, p) = (self.conf.display(), self.error_log.display(), self.pid_file.display());
        let script = format!(
            "if [ -s {p} ] && kill -0 \"$(cat {p})\" 2>/dev/null; then exec {NGINX} -e {e} -c {c} -s reload; \
             else exec {NGINX} -e {e} -c {c}; fi"
        );
        vec!["/bin/sh".into(), "-c".into(), script]
    }

    fn nginx(&self, extra: &[&str]) -> Output {
        let (c, e) = (self.conf.to_str().unwrap(), self.error_log.to_str().unwrap());
        let mut args = vec!["-e", e, "-c", c];
        args.extend_from_slice(extra);
        run(Path::new(NGINX), &args, NGINX_TIMEOUT)
    }

    /// Starts nginx (the certificate files must exist) and waits until it
    /// accepts connections.
    pub fn start(&self) {
        let out = self.nginx(&[]);
        assert_eq!(
            out.code,
            Some(0),
            "starting nginx failed\n{out}\n{}",
            self.error_log_text()
        );
        self.wait_running();
    }

    /// `nginx -s reload`, as the agent's reload command does.
    pub fn reload(&self) {
        let out = self.nginx(&["-s", "reload"]);
        assert_eq!(
            out.code,
            Some(0),
            "reloading nginx failed\n{out}\n{}",
            self.error_log_text()
        );
    }

    /// The master's pid, if nginx runs.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Whether nginx runs and accepts connections on its port.
    pub fn is_running(&self) -> bool {
        self.pid().is_some() && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Waits (at most 10 s) until nginx runs and accepts connections.
    pub fn wait_running(&self) {
        let deadline = Instant::now() + NGINX_TIMEOUT;
        while !self.is_running() {
            assert!(
                Instant::now() < deadline,
                "nginx is not running\n{}",
                self.error_log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leaf nginx serves for `sni` now (DER).
    pub fn served_leaf(&self, sni: &str) -> Vec<u8> {
        crate::tls::served_leaf(self.port, sni).unwrap_or_else(|e| panic!("{e}\n{}", self.error_log_text()))
    }

    /// Waits (at most 10 s) until nginx serves `leaf` for `sni` on
    /// [`STABLE_HANDSHAKES`] handshakes in a row: a reload replaces workers
    /// asynchronously, and for a moment an old worker may still accept.
    pub fn wait_serving(&self, sni: &str, leaf: &[u8]) {
        let deadline = Instant::now() + NGINX_TIMEOUT;
        let mut in_a_row = 0;
        loop {
            match crate::tls::served_leaf(self.port, sni) {
                Ok(served) if served == leaf => {
                    in_a_row += 1;
                    if in_a_row == STABLE_HANDSHAKES {
                        return;
                    }
                }
                other => {
                    in_a_row = 0;
                    if Instant::now() >= deadline {
                        panic!(
                            "nginx does not serve the expected leaf: {}\n{}",
                            match other {
                                Ok(l) => format!("serves {:?}", crate::tls::CertInfo::parse(&l)),
                                Err(e) => e,
                            },
                            self.error_log_text()
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many reloads (SIGHUP) nginx has logged so far.
    pub fn reload_count(&self) -> usize {
        std::fs::read_to_string(&self.error_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("(SIGHUP) received"))
            .count()
    }

    /// nginx's error log, for failure messages.
    pub fn error_log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.error_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        format!(
            "--- {} (last lines) ---\n{}",
            self.error_log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Stops nginx if it runs (fast shutdown, then SIGKILL), waiting until
    /// its port is closed.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        signal(pid as u32, libc::SIGTERM);
        let deadline = Instant::now() + NGINX_TIMEOUT;
        // nginx removes its pid file on exit; the process itself may linger
        // as a zombie of a parent that does not reap.
        while self.pid_file.exists() || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() >= deadline {
                let _ = crate::process::try_signal(pid, libc::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The directory of nginx's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid: no unsafe geteuid() needed.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
