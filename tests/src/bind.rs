//! A real BIND9 as the primary server of a test zone on a loopback port, the
//! other end of the server's RFC 2136 backend.
//!
//! `named` runs in the foreground (`-g`) as a child of the test, with every
//! file it reads or writes (configuration, zone, journal, pid and lock files,
//! session key) inside `<test dir>/bind/` and its log (stderr) in
//! `bind/named.log`, so several tests can each run their own BIND at once.
//! The zone takes updates signed with a fresh random TSIG key; the tests read
//! what it serves back with `dig`, as a resolver would see it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::TestEnv;
use crate::process::{run, try_signal, wait_with_timeout, Output};

/// Debian's BIND9 server (package `bind9`).
const NAMED: &str = "/usr/sbin/named";
/// BIND's configuration checker.
const NAMED_CHECKCONF: &str = "/usr/bin/named-checkconf";
/// The query tool (package `bind9-dnsutils`).
const DIG: &str = "/usr/bin/dig";

/// How long BIND may take to start answering, and `named-checkconf` or one
/// `dig` to run: 10 s.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long BIND may take to exit after SIGTERM before it is killed: 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the TSIG key allowed to update the zone.
const KEY_NAME: &str = "lancert-test";
/// Its algorithm.
const KEY_ALGORITHM: &str = "hmac-sha256";
/// A second key BIND knows, with the same algorithm and secret, that the
/// zone's `update-policy` grants nothing.
const UNGRANTED_KEY_NAME: &str = "lancert-ungranted";

/// A running `named`, primary for one zone; stopped on drop.
pub struct Bind {
    dir: PathBuf,
    log: PathBuf,
    child: Child,
    port: u16,
    zone: String,
    secret: Vec<u8>,
    secret_base64: String,
}

impl Bind {
    /// Writes a configuration in `<test dir>/bind/` making BIND the primary
    /// of `zone` (SOA, NS `ns1.<zone>`, and `ns1`'s A record 127.0.0.1) on
    /// 127.0.0.1 at a free port, updatable with a new random `hmac-sha256`
    /// key named `lancert-test` (and not with [`Bind::ungranted_key_name`]);
    /// checks it with `named-checkconf`, starts `named` and waits (at most
    /// 10 s) until it answers for the zone. Panics, with BIND's output, if
    /// any of that fails.
    pub fn start(env: &TestEnv, zone: &str) -> Bind {
        for tool in [NAMED, NAMED_CHECKCONF, DIG] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: install BIND (scripts/test does: apt-get install bind9 bind9-dnsutils)"
            );
        }
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let dir = env.subdir("bind");
        let port = env.free_port();
        let secret = random_bytes::<32>().to_vec();
        let secret_base64 = base64(&secret);
        let d = dir.display();
        let conf = dir.join("named.conf");
        let zone_file = dir.join(format!("{zone}.zone"));
        // Every path BIND writes is in the test's directory: two BINDs of
        // parallel tests must not share the default lock or session-key file.
        let text = format!(
            "# Written by the lancert test harness.\n\
             options {{\n\
             \x20   directory \"{d}\";\n\
             \x20   pid-file \"{d}/named.pid\";\n\
             \x20   lock-file \"{d}/named.lock\";\n\
             \x20   session-keyfile \"{d}/session.key\";\n\
             \x20   key-directory \"{d}\";\n\
             \x20   managed-keys-directory \"{d}\";\n\
             \x20   listen-on port {port} {{ 127.0.0.1; }};\n\
             \x20   listen-on-v6 {{ none; }};\n\
             \x20   recursion no;\n\
             \x20   dnssec-validation no;\n\
             \x20   notify no;\n\
             }};\n\
             controls {{ }};\n\
             key \"{KEY_NAME}\" {{\n\
             \x20   algorithm {KEY_ALGORITHM};\n\
             \x20   secret \"{secret_base64}\";\n\
             }};\n\
             key \"{UNGRANTED_KEY_NAME}\" {{\n\
             \x20   algorithm {KEY_ALGORITHM};\n\
             \x20   secret \"{secret_base64}\";\n\
             }};\n\
             zone \"{zone}\" {{\n\
             \x20   type primary;\n\
             \x20   file \"{zone_file}\";\n\
             \x20   update-policy {{ grant {KEY_NAME} zonesub ANY; }};\n\
             }};\n",
            zone_file = zone_file.display(),
        );
        std::fs::write(&conf, text).expect("writing named.conf");
        let records = format!(
            "; Written by the lancert test harness.\n\
             $TTL 60\n\
             @    IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n\
             @    IN NS  ns1.{zone}.\n\
             ns1  IN A   127.0.0.1\n"
        );
        std::fs::write(&zone_file, records).expect("writing the zone file");

        let conf_str = conf.to_str().expect("UTF-8 test path");
        let out = run(Path::new(NAMED_CHECKCONF), &["-z", conf_str], BIND_TIMEOUT);
        assert_eq!(out.code, Some(0), "named-checkconf rejects the configuration\n{out}");

        let log = dir.join("named.log");
        let log_file = File::create(&log).expect("creating named.log");
        let stdout = log_file.try_clone().expect("cloning the log file handle");
        // -g: foreground, log to stderr; -n 1: one worker thread is plenty.
        // No -u: named keeps the user that started it (root on CI), who
        // owns the test's directory and so can write the zone's journal.
        let child = Command::new(NAMED)
            .args(["-g", "-n", "1", "-c", conf_str])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {NAMED}: {e}"));
        let mut bind = Bind {
            dir,
            log,
            child,
            port,
            zone,
            secret,
            secret_base64,
        };
        bind.wait_answering();
        bind
    }

    /// Waits until BIND answers a SOA query for the zone, or panics with its
    /// log when it exits or [`BIND_TIMEOUT`] passes.
    fn wait_answering(&mut self) {
        let deadline = Instant::now() + BIND_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("named exited ({status}) while starting\n{}", self.log_tail());
            }
            let out = self.dig(&self.zone, "SOA", 1);
            if out.code == Some(0) && !out.stdout.trim().is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "named does not answer for {} on port {} after {BIND_TIMEOUT:?}\n{}",
                    self.zone,
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, where BIND answers queries and takes updates (UDP
    /// and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The zone BIND is primary for, lowercase, no trailing dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The name of the TSIG key that may update the zone: `lancert-test`.
    pub fn key_name(&self) -> &str {
        KEY_NAME
    }

    /// A second key BIND knows, `lancert-ungranted`, with the same algorithm
    /// and secret, that may not update the zone: updates signed with it are
    /// REFUSED.
    pub fn ungranted_key_name(&self) -> &str {
        UNGRANTED_KEY_NAME
    }

    /// The key's algorithm: `hmac-sha256`.
    pub fn key_algorithm(&self) -> &str {
        KEY_ALGORITHM
    }

    /// The key's secret, 32 random bytes.
    pub fn key_secret(&self) -> &[u8] {
        &self.secret
    }

    /// The key's secret in base64, as in BIND's `key` statement.
    pub fn key_secret_base64(&self) -> &str {
        &self.secret_base64
    }

    /// BIND's directory (configuration, zone file and journal).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything BIND logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!(
            "--- {} (last lines) ---\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// What BIND serves for `name` and `rtype` (`"A"`, `"AAAA"`, `"TXT"`,
    /// …), as `dig +short +norecurse` prints it, one value per record;
    /// TXT values without their quotes (several strings of one record
    /// joined). Empty when there is no such record. Panics if `dig` fails.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = self.dig(name, rtype, 2);
        assert_eq!(out.code, Some(0), "dig failed\n{out}\n{}", self.log_tail());
        out.stdout.lines().map(unquote).collect()
    }

    /// `dig +short +norecurse @127.0.0.1 -p PORT name rtype`, trying
    /// `tries` times with a one-second wait each.
    fn dig(&self, name: &str, rtype: &str, tries: u32) -> Output {
        let (port, tries) = (self.port.to_string(), format!("+tries={tries}"));
        let args = [
            "+short",
            "+norecurse",
            "+time=1",
            &tries,
            "@127.0.0.1",
            "-p",
            &port,
            name,
            rtype,
        ];
        run(Path::new(DIG), &args, BIND_TIMEOUT)
    }

    /// Stops BIND if it runs: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = try_signal(self.child.id() as i32, libc::SIGTERM);
        if wait_with_timeout(&mut self.child, STOP_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.stop();
    }
}

/// A `dig +short` line as a value: TXT's `"a" "b"` becomes `ab`, anything
/// else is kept.
fn unquote(line: &str) -> String {
    let line = line.trim();
    if !(line.starts_with('"') && line.ends_with('"') && line.len() >= 2) {
        return line.to_string();
    }
    line[1..line.len() - 1].split("\" \"").collect()
}

/// `N` bytes from the kernel's random source.
fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut buf = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// Standard base64 with padding (RFC 4648 §4), as BIND writes secrets.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn unquote_joins_txt_strings() {
        assert_eq!(unquote("\"tok\""), "tok");
        assert_eq!(unquote("\"ab\" \"cd\""), "abcd");
        assert_eq!(unquote("10.0.0.1"), "10.0.0.1");
    }
}
