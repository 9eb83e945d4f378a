//! Simulated devices: enrolled with the agent's client and identity keys
//! (`agent::keygen::CertKey`, P-256), kept in a file of lines
//! `id<TAB>hostname<TAB>base64url(PKCS#8 DER key)` (0600: bench keys, but
//! keys all the same).

use crate::{Args, Res};
use agent::client::Client;
use agent::keygen::CertKey;
use lancert_protocol::base64url;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One simulated device.
pub struct Device {
    /// Its device id (the JWS `kid`).
    pub id: String,
    /// The hostname the server assigned.
    pub hostname: String,
    /// Its identity key.
    pub key: CertKey,
}

/// The HTTP timeout of every client, as the agent's default
/// `http_timeout_secs`.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// `loadgen enroll`: one device per token, enrolled by `--threads` threads.
pub fn enroll(args: &Args) -> Res<()> {
    let url = args.req("url")?;
    let ca = Path::new(args.req("ca")?);
    let tokens_path = args.req("tokens")?;
    let out = Path::new(args.req("out")?);
    let threads: usize = args.num("threads", 4)?;
    let tokens: Vec<String> = std::fs::read_to_string(tokens_path)
        .map_err(|e| format!("reading tokens from {tokens_path}: {e}"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        return Err(format!("{tokens_path}: no token in it"));
    }
    let started = Instant::now();
    let next = Mutex::new(0usize);
    let lines = Mutex::new(Vec::with_capacity(tokens.len()));
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, 64) {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(token) = tokens.get(i) else { break };
                match enroll_one(url, ca, token) {
                    Ok(line) => lines.lock().unwrap_or_else(|p| p.into_inner()).push((i, line)),
                    Err(e) => failures.lock().unwrap_or_else(|p| p.into_inner()).push(e),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} of {} enrollments failed; first: {first}",
            failures.len(),
            tokens.len()
        ));
    }
    let mut lines = lines.into_inner().unwrap_or_else(|p| p.into_inner());
    lines.sort_by_key(|(i, _)| *i);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("creating {}: {e}", out.display()))?;
    for (_, line) in &lines {
        writeln!(file, "{line}").map_err(|e| format!("writing {}: {e}", out.display()))?;
    }
    eprintln!(
        "enrolled {} devices in {:.1} s ({threads} threads)",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn enroll_one(url: &str, ca: &Path, token: &str) -> Res<String> {
    let key = CertKey::generate().map_err(|e| e.to_string())?;
    let mut client = Client::new(url, Some(ca), HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    let (id, hostname) = client.enroll(&key, token).map_err(|e| e.to_string())?;
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    Ok(format!("{id}\t{hostname}\t{}", base64url::encode(&der)))
}

/// Reads the devices `enroll` wrote.
pub fn load(path: &Path) -> Res<Vec<Device>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading devices from {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let at = || format!("{}:{}", path.display(), n + 1);
            let mut parts = line.split('\t');
            let (Some(id), Some(hostname), Some(key), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("{}: expected id, hostname and key separated by tabs", at()));
            };
            let der = base64url::decode(key).map_err(|_| format!("{}: the key is not base64url", at()))?;
            let key = CertKey::from_pkcs8_der(&der).map_err(|e| format!("{}: {e}", at()))?;
            Ok(Device {
                id: id.to_string(),
                hostname: hostname.to_string(),
                key,
            })
        })
        .collect()
}
