//! Reloading the web server and checking that it serves the new
//! certificate.
//!
//! "Renewed on disk but the web server kept serving the old one" is the
//! most common complaint about certificate tools, so a reload is only
//! counted as done when a TLS handshake with the web server presents the
//! new leaf.

use crate::certificate::inspect;
use crate::error::{Error, Result};
use crate::trust::crypto_provider;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much of the command's output goes into an error message: 4 KiB.
pub const OUTPUT_EXCERPT_BYTES: u64 = 4096;
/// Most output a reload command may produce before it is killed: 64 KiB.
/// The output goes to a file in the temp directory, which is RAM (tmpfs) on
/// most routers.
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024;
/// First pause between polls of the command; doubles up to
/// [`MAX_POLL_PAUSE`]. Most reload commands finish within a few ms.
const FIRST_POLL_PAUSE: Duration = Duration::from_millis(20);
/// Longest pause between polls of the command.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(200);
/// Longest single TLS attempt (connect, handshake) in [`verify_served`].
pub const MAX_ATTEMPT: Duration = Duration::from_secs(5);
/// Shortest single attempt, even when the overall timeout is nearly spent.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);
/// Pauses between handshakes in [`verify_served`]: 100 ms doubling to 1 s.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs `argv` (no shell) with stdin from /dev/null and stdout and stderr
/// captured, and waits at most `timeout` for it. A non-zero exit, a signal,
/// too much output or the timeout are errors naming the command, with the
/// start of its output.
///
/// The output goes to an unlinked temporary file, not a pipe: a pipe would
/// need a reader thread to keep a chatty command from blocking on a full
/// pipe, and a daemon started by the command that keeps the pipe open would
/// keep a pipe reader waiting forever. The command runs in a process group
/// of its own: on timeout or too much output the whole group is killed
/// (SIGKILL), so a child it started (`sh -c 'yes'`) cannot go on writing
/// into the output file until the disk is full. A web server the command
/// starts as a daemon is left alone: daemons leave the group (setsid), as
/// nginx and lighttpd do.
pub fn run_command(argv: &[String], timeout: Duration) -> Result<()> {
    let doing = format!("running `{}`", argv.join(" "));
    let fail = |detail: String| Error::Command {
        doing: doing.clone(),
        detail,
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(fail("no command given".into()));
    };
    let mut output = output_file().map_err(|e| fail(format!("cannot create a file for its output: {e}")))?;
    let stdout = output
        .try_clone()
        .map_err(|e| fail(format!("cannot duplicate the output file: {e}")))?;
    let stderr = output
        .try_clone()
        .map_err(|e| fail(format!("cannot duplicate the output file: {e}")))?;
    let mut command = Command::new(program);
    command.process_group(0);
    // The service manager's socket is the agent's, not the command's.
    for var in crate::notify::ENV_VARS {
        command.env_remove(var);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;

    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL_PAUSE;
    let status: ExitStatus = loop {
        let problem = match child.try_wait() {
            Ok(Some(status)) => break status,
            Err(e) => Some(format!("cannot wait for it: {e}")),
            Ok(None) if output.metadata().map(|m| m.len()).unwrap_or(0) > MAX_OUTPUT_BYTES => Some(format!(
                "it wrote more than {MAX_OUTPUT_BYTES} bytes of output; killed it"
            )),
            Ok(None) if Instant::now() >= deadline => Some(format!(
                "it did not finish within {} ms; killed it",
                timeout.as_millis()
            )),
            Ok(None) => None,
        };
        if let Some(problem) = problem {
            kill_group(&child);
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(with_output(problem, &mut output)));
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(MAX_POLL_PAUSE);
    };
    if status.success() {
        return Ok(());
    }
    Err(fail(with_output(format!("it failed ({status})"), &mut output)))
}

/// SIGKILL to the process group the command leads (see [`run_command`]).
fn kill_group(child: &std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group
        // only; it touches no memory of ours.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// An anonymous file for a command's output: created exclusively (never
/// through a planted symlink), 0600, and unlinked at once so it vanishes
/// with its last descriptor.
fn output_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for n in 0..16u32 {
        let path = dir.join(format!(".lancert-output-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// `problem`, followed by the start of the command's output if it wrote
/// anything.
fn with_output(problem: String, output: &mut File) -> String {
    let mut text = Vec::new();
    let read = output
        .seek(SeekFrom::Start(0))
        .and_then(|_| output.take(OUTPUT_EXCERPT_BYTES + 1).read_to_end(&mut text));
    if read.is_err() || text.is_empty() {
        return problem;
    }
    let cut = text.len() as u64 > OUTPUT_EXCERPT_BYTES;
    text.truncate(OUTPUT_EXCERPT_BYTES as usize);
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if text.is_empty() {
        return problem;
    }
    format!("{problem}: {text}{}", if cut { " [...]" } else { "" })
}

/// Checks that the web server at `addr` (`host:port`) serves the leaf
/// `expected_leaf_der` to a client asking for `hostname` (SNI), retrying
/// for up to `timeout`: `nginx -s reload` returns before the new workers
/// take over, and other servers reload just as asynchronously.
///
/// The chain is not verified (the web server may still serve the
/// self-signed first-boot certificate, and only the bytes of the leaf are
/// compared), but the handshake signature is: the server must hold the key
/// of the certificate it presents.
pub fn verify_served(addr: &str, hostname: &str, expected_leaf_der: &[u8], timeout: Duration) -> Result<()> {
    let doing = format!("checking the certificate served at {addr}");
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_RETRY_PAUSE;
    let last = loop {
        let attempt = deadline
            .saturating_duration_since(Instant::now())
            .clamp(MIN_ATTEMPT, MAX_ATTEMPT);
        let seen = served_leaf(addr, hostname, attempt);
        if matches!(&seen, Ok(leaf) if leaf.as_slice() == expected_leaf_der) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break seen;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    };
    let detail = match last {
        Ok(served) => format!(
            "web server at {addr} still serves certificate {}, not {}",
            serial_of(&served),
            serial_of(expected_leaf_der)
        ),
        Err(e) => format!("web server at {addr}: {e} (kept trying for {} ms)", timeout.as_millis()),
    };
    Err(Error::Command { doing, detail })
}

/// The serial number of a DER certificate, for messages.
fn serial_of(der: &[u8]) -> String {
    match inspect(der) {
        Ok(info) => info.serial_hex,
        Err(_) => "(unparsable)".into(),
    }
}

/// One TLS handshake: the leaf the server presents.
fn served_leaf(addr: &str, hostname: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let name =
        ServerName::try_from(hostname.to_string()).map_err(|e| format!("{hostname:?} is not a DNS name: {e}"))?;
    let mut sock = connect(addr, timeout)?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| format!("setting a read timeout: {e}"))?;
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| format!("setting a write timeout: {e}"))?;
    let provider = crypto_provider();
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
    let started = Instant::now();
    while conn.is_handshaking() {
        // Each read and write is bounded by the socket timeouts; this
        // bounds a server that trickles bytes.
        if started.elapsed() > timeout {
            return Err("TLS handshake took too long".into());
        }
        match conn.complete_io(&mut sock) {
            Ok((0, 0)) if conn.is_handshaking() => return Err("connection closed during the TLS handshake".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("TLS handshake: {e}")),
        }
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "the server presented no certificate".to_string())?;
    conn.send_close_notify();
    let _ = conn.write_tls(&mut sock);
    Ok(leaf)
}

/// Connects to the first address of `addr` that answers.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = addr.to_socket_addrs().map_err(|e| format!("resolving {addr}: {e}"))?;
    let mut last = format!("{addr} resolves to no address");
    for sa in addrs {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(sock) => return Ok(sock),
            Err(e) => last = format!("connecting to {sa}: {e}"),
        }
    }
    Err(last)
}

/// Accepts any certificate chain (only the leaf's bytes are compared
/// afterwards) but verifies the handshake signature with the presented
/// certificate's key, as a normal verifier would (RFC 8446 §4.4.3,
/// RFC 5246 §7.4.3).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::CertKey;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ServerConfig, ServerConnection};
    use std::net::TcpListener;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_succeeds() {
        run_command(&argv(&["sh", "-c", "echo fine; exit 0"]), Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn command_fails_with_its_stderr() {
        let err = run_command(
            &argv(&["sh", "-c", "echo 'nginx: [emerg] bad key' >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Command { .. }));
        let text = err.to_string();
        assert!(text.starts_with("running `sh -c"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("nginx: [emerg] bad key"), "{text}");
    }

    #[test]
    fn command_past_timeout_is_killed() {
        let started = Instant::now();
        let err = run_command(&argv(&["sleep", "30"]), Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.contains("did not finish within 300 ms; killed it"), "{err}");
    }

    #[test]
    fn command_output_is_bounded() {
        // The shell forks `yes`: killing the shell alone would leave `yes`
        // writing into the (unlinked) output file until the disk is full.
        let marker = format!("lancert-yes-{}", std::process::id());
        let err = run_command(
            &argv(&["sh", "-c", &format!("yes {marker}; true")]),
            Duration::from_secs(20),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bytes of output; killed it"), "{err}");
        assert!(err.len() < 5000, "{}", err.len());
        std::thread::sleep(Duration::from_millis(200));
        let left = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(left.trim().is_empty(), "the command's child outlived it: pids {left}");
    }

    #[test]
    fn missing_command() {
        let err = run_command(&argv(&["/nonexistent/reload"]), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot start it"), "{err}");
        assert!(run_command(&[], Duration::from_secs(1)).is_err());
    }

    /// A TLS server on loopback serving `cert` for every connection, in a
    /// thread that lives as long as the test process.
    fn serve(key: &CertKey, cert_der: Vec<u8>) -> String {
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().unwrap().to_vec()));
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der)], key_der)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(mut sock) = sock else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
                let Ok(mut conn) = ServerConnection::new(Arc::clone(&config)) else {
                    continue;
                };
                while conn.is_handshaking() {
                    if conn.complete_io(&mut sock).is_err() {
                        break;
                    }
                }
                let _ = conn.complete_io(&mut sock);
            }
        });
        addr
    }

    fn self_signed_der(key: &CertKey, host: &str) -> Vec<u8> {
        let m = crate::self_signed::generate(key, host, 1_800_000_000).unwrap();
        crate::certificate::pem_to_der_chain(m.cert_pem.as_bytes())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn served_certificate_matches() {
        let key = CertKey::generate().unwrap();
        let der = self_signed_der(&key, "a.example.com");
        let addr = serve(&key, der.clone());
        verify_served(&addr, "a.example.com", &der, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn served_certificate_mismatch_names_serials() {
        let key = CertKey::generate().unwrap();
        let old = self_signed_der(&key, "a.example.com");
        let new = self_signed_der(&key, "a.example.com");
        let addr = serve(&key, old.clone());
        let started = Instant::now();
        let err = verify_served(&addr, "a.example.com", &new, Duration::from_millis(700))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= Duration::from_millis(700));
        let (old_serial, new_serial) = (serial_of(&old), serial_of(&new));
        assert!(
            err.ends_with(&format!(
                "web server at {addr} still serves certificate {old_serial}, not {new_serial}"
            )),
            "{err}"
        );
    }

    #[test]
    fn nothing_listening() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = verify_served(&addr, "a.example.com", b"x", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("connecting to"), "{err}");
    }
}
