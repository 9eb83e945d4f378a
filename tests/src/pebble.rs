//! Debian's `pebble`, the ACME (RFC 8555) test CA of Let's Encrypt, on
//! loopback ports, resolving challenge names through a DNS server the test
//! chooses (`-dnsserver`): the real CA behind the server's `acme` issuer.
//!
//! Pebble serves HTTPS with a certificate from a [`TestCa`] made for it
//! (`ca_file()` is what the lancert server trusts for it), and issues from a
//! root it generates at start, fetched from its management interface
//! (`root_file()`: what the agent trusts for issued chains).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::{tls, unix_now, TestCa, TestEnv};

/// The pebble binary (Debian package `pebble`, >= 2.5 for ARI).
pub const PEBBLE: &str = "/usr/bin/pebble";
/// How long pebble gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How a test wants pebble to behave.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// `PEBBLE_WFE_NONCEREJECT`: the percentage of valid nonces pebble
    /// rejects as bad (100: every request fails with badNonce).
    pub nonce_reject_percent: u8,
    /// Lifetime of issued certificates in seconds (pebble's default: about
    /// 5 years).
    pub validity_secs: Option<u64>,
    /// The ACME port, when a test must name it before pebble runs (a CA
    /// that comes up late); a free one otherwise.
    pub port: Option<u16>,
}

/// A running pebble, stopped on drop.
pub struct Pebble {
    child: Option<Child>,
    port: u16,
    ca_file: PathBuf,
    root_file: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Pebble {
    /// Where [`Pebble::ca_file`] will be for a pebble started in `env`.
    pub fn ca_file_in(env: &TestEnv) -> PathBuf {
        env.path("pebble/listener-ca.pem")
    }

    /// Starts pebble with default options, resolving through `dns`.
    pub fn start(env: &TestEnv, dns: SocketAddr) -> Pebble {
        Pebble::start_with(env, dns, PebbleOptions::default())
    }

    /// Starts pebble, waits until it listens, and fetches its issuing root.
    pub fn start_with(env: &TestEnv, dns: SocketAddr, options: PebbleOptions) -> Pebble {
        let dir = env.subdir("pebble");
        // The listener's certificate survives a restart in the same test, as a
        // real CA's does: clients keep trusting it.
        let (cert_path, key_path, ca_file) = (dir.join("cert.pem"), dir.join("key.pem"), Pebble::ca_file_in(env));
        if !ca_file.is_file() {
            let ca = TestCa::new("Pebble listener");
            let now = unix_now();
            let (chain, key) = ca.issue_with_new_key(&["localhost", "127.0.0.1"], now - 3600, now + 86_400);
            std::fs::write(&cert_path, chain).expect("writing pebble cert");
            std::fs::write(&key_path, key).expect("writing pebble key");
            std::fs::write(&ca_file, ca.root_pem()).expect("writing pebble listener CA");
        }
        let listener_root = std::fs::read(&ca_file).expect("reading pebble listener CA");
        let port = options.port.unwrap_or_else(|| env.free_port());
        let management = env.free_port();
        let mut settings = json!({
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert_path,
            "privateKey": key_path,
            // Ports for http-01 and tls-alpn-01, which are never used here;
            // free ones so parallel tests do not collide.
            "httpPort": env.free_port(),
            "tlsPort": env.free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "retryAfter": {"authz": 1, "order": 1},
        });
        if let Some(secs) = options.validity_secs {
            settings["certificateValidityPeriod"] = secs.into();
        }
        let config = dir.join("pebble-config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&json!({ "pebble": settings })).unwrap(),
        )
        .expect("writing pebble config");

        let mut child = Command::new(PEBBLE)
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject_percent.to_string())
            // Every order validates anew, as the first order of a name does.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {PEBBLE} (apt-get install pebble; scripts/test does): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log_path = env.path("pebble.log");
        let file = Arc::new(Mutex::new(std::fs::File::create(&log_path).ok()));
        for stream in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let (log, tx, file) = (log.clone(), tx.clone(), file.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("ACME directory available") {
                        let _ = tx.send(());
                    }
                    if let Some(f) = file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let pebble = Pebble {
            child: Some(child),
            port,
            ca_file,
            root_file: dir.join("issuing-root.pem"),
            log,
        };
        if rx.recv_timeout(START_TIMEOUT).is_err() {
            panic!("pebble did not start within {START_TIMEOUT:?}\n{}", pebble.log());
        }
        let root = pebble.management_get(management, "/roots/0");
        std::fs::write(&pebble.root_file, root).expect("writing pebble root");
        // The listener is up once the directory answers.
        crate::wait_for("pebble's directory", START_TIMEOUT, || {
            let config = tls::verifying_config(&listener_root);
            tls::https_request(port, "localhost", config, "GET", "/dir", b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        pebble
    }

    fn management_get(&self, port: u16, path: &str) -> Vec<u8> {
        let ca = std::fs::read(&self.ca_file).expect("reading pebble listener CA");
        let response = crate::wait_for(&format!("pebble management {path}"), START_TIMEOUT, || {
            tls::https_request(port, "localhost", tls::verifying_config(&ca), "GET", path, b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        if response
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(&response.body)
        } else {
            response.body
        }
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// The root pebble's HTTPS certificate chains to (for `issuer.ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The server's `issuer` setting for an `acme` issuer ordering from
    /// this pebble, with its terms agreed.
    pub fn issuer_config(&self) -> serde_json::Value {
        json!({"type": "acme", "directory_url": self.directory_url(), "agree_terms": true,
               "ca_file": self.ca_file()})
    }

    /// The root pebble issues from (the agent's `trust_anchors`).
    pub fn root_file(&self) -> &Path {
        &self.root_file
    }

    /// What pebble printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many ACME requests pebble answered so far (it logs each one as
    /// `POST /order-plz -> calling handler()`), not counting the harness's
    /// own directory check at start.
    pub fn acme_requests(&self) -> usize {
        let log = self.log();
        let answered = log
            .lines()
            .filter(|l| l.contains("-> calling handler()") && !l.contains("/roots/"))
            .count();
        answered.saturating_sub(1)
    }

    /// Stops pebble (the CA goes down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = rest.get(start + size + 2..).unwrap_or(&[]);
    }
    out
}
