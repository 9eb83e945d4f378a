//! The management-server client: protocol version 1 (`docs/protocol.md`)
//! over HTTPS with ureq and rustls.
//!
//! Every exchange is bounded: one timeout covers connect, TLS, request and
//! response ([`Config::http_timeout`](crate::config::Config)); answers over
//! [`MAX_BODY_BYTES`] are refused; redirects are not followed; TLS is always
//! verified. Every answer is checked for shape before the caller sees it.
//! The client is lazy: it fetches the directory and a nonce only when a
//! request must be sent, so a check that has nothing to say opens no
//! connection at all.

use crate::addresses::AddressSet;
use crate::error::{Error, Result};
use crate::keygen::CertKey;
use crate::renewal_window::Window;
use crate::schedule::clamp_retry_after;
use lancert_protocol::problem::ProblemType;
use lancert_protocol::time::parse_rfc3339;
use lancert_protocol::{base64url, jws, CONTENT_TYPE_JOSE, CONTENT_TYPE_PEM_CHAIN, CONTENT_TYPE_PROBLEM};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// Largest response body accepted: 256 KiB (a chain is a few KiB).
pub const MAX_BODY_BYTES: u64 = 256 * 1024;
/// Largest response header block accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest PEM bundle of server roots read.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The URLs of the directory (protocol §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// `newNonce`.
    pub new_nonce: String,
    /// `enroll`.
    pub enroll: String,
    /// `addresses`.
    pub addresses: String,
    /// `newOrder`.
    pub new_order: String,
    /// `status`.
    pub status: String,
}

/// How a request identifies its key (protocol §3).
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Enrollment: the public key itself.
    Jwk,
    /// Every other request: the device id.
    Kid(&'a str),
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Location`, if any.
    pub location: Option<String>,
    /// `Retry-After`, clamped.
    pub retry_after: Option<Duration>,
    /// `Content-Type`, if any.
    pub content_type: String,
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: Vec<u8>,
}

/// State of an order (protocol §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Being issued.
    Processing,
    /// Issued: `certificate` holds the download URL.
    Valid,
    /// Failed: `error` says why.
    Invalid,
}

/// An order as the server described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The order URL.
    pub url: String,
    /// Its status.
    pub status: OrderStatus,
    /// The certificate URL, when valid.
    pub certificate: Option<String>,
    /// The suggested renewal window, when the server gave one.
    pub renewal: Option<Window>,
    /// The failure, when invalid: (problem type, detail).
    pub error: Option<(Option<ProblemType>, String)>,
    /// How long to wait before polling again.
    pub retry_after: Option<Duration>,
}

/// Counters of what the client cost, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// HTTP requests sent.
    pub requests: u32,
    /// Request body bytes sent.
    pub body_bytes_sent: u64,
    /// Response body bytes received.
    pub body_bytes_received: u64,
}

/// A session with the management server.
pub struct Client {
    http: ureq::Agent,
    base: String,
    directory: Option<Directory>,
    nonce: Option<String>,
    stats: Stats,
}

impl Client {
    /// A client for the server at `base` (no connection is made yet).
    /// `server_ca`: PEM roots for the server's certificate, or `None` for
    /// the built-in Mozilla roots.
    pub fn new(base: &str, server_ca: Option<&Path>, timeout: Duration) -> Result<Client> {
        use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
        let roots = match server_ca {
            None => RootCerts::WebPki,
            Some(path) => RootCerts::Specific(std::sync::Arc::new(read_roots(path)?)),
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let config = ureq::Agent::config_builder()
            .https_only(true)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .max_response_header_size(MAX_HEADER_BYTES)
            .user_agent(concat!("lancert-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(Client {
            http: config.new_agent(),
            base: base.trim_end_matches('/').to_string(),
            directory: None,
            nonce: None,
            stats: Stats::default(),
        })
    }

    /// What this session cost so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The directory, fetched once per session.
    pub fn directory(&mut self) -> Result<Directory> {
        if let Some(d) = &self.directory {
            return Ok(d.clone());
        }
        let url = format!("{}{}", self.base, lancert_protocol::DIRECTORY_PATH);
        let doing = "reading the server's directory";
        let reply = self.exchange(doing, &url, None)?;
        let dir = parse_directory(&reply_json(doing, &url, &reply)?).map_err(|r| Error::rejected(doing, r))?;
        self.directory = Some(dir.clone());
        Ok(dir)
    }

    fn take_nonce(&mut self, doing: &str) -> Result<String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let url = self.directory()?.new_nonce;
        self.exchange(doing, &url, None)?;
        self.nonce
            .take()
            .ok_or_else(|| Error::rejected(doing, format!("{url} sent no Replay-Nonce")))
    }

    /// One HTTP exchange: `HEAD`/`GET` when `body` is `None` (HEAD for the
    /// nonce URL), otherwise a JOSE `POST`. Errors (status ≥ 400) become
    /// [`Error::Server`] with the problem parsed.
    fn exchange(&mut self, doing: &str, url: &str, body: Option<&[u8]>) -> Result<Reply> {
        let net = |e: ureq::Error| Error::Network {
            doing: doing.into(),
            url: url.into(),
            detail: describe(&e),
        };
        self.stats.requests += 1;
        let result = match body {
            Some(b) => {
                self.stats.body_bytes_sent += b.len() as u64;
                self.http.post(url).header("Content-Type", CONTENT_TYPE_JOSE).send(b)
            }
            None if self.directory.as_ref().is_some_and(|d| d.new_nonce == url) => self.http.head(url).call(),
            None => self.http.get(url).call(),
        };
        let mut resp = result.map_err(net)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(n) = header(lancert_protocol::HEADER_REPLAY_NONCE).and_then(parse_replay_nonce) {
            self.nonce = Some(n);
        }
        let status = resp.status().as_u16();
        let location = header("Location");
        let retry_after = header("Retry-After").and_then(|v| parse_retry_after(&v, crate::clock::wall_now()));
        let content_type = header("Content-Type").unwrap_or_default();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(net)?;
        self.stats.body_bytes_received += body.len() as u64;
        log::debug!("{doing}: {url}: {status}, {} bytes", body.len());
        if status >= 400 {
            let (problem, detail) = parse_problem(&content_type, &body);
            return Err(Error::Server {
                doing: doing.into(),
                url: url.into(),
                status,
                problem,
                detail,
                retry_after,
            });
        }
        if !(200..300).contains(&status) {
            return Err(Error::Server {
                doing: doing.into(),
                url: url.into(),
                status,
                problem: None,
                // A redirect's target says who answered (a captive portal, a
                // moved server); bounded, and header values are visible ASCII.
                detail: match &location {
                    Some(to) if (300..400).contains(&status) => format!(
                        "redirect to {} not followed (redirects are never followed)",
                        to.chars().take(200).collect::<String>()
                    ),
                    _ => "unexpected status (redirects are not followed)".into(),
                },
                retry_after,
            });
        }
        Ok(Reply {
            status,
            location,
            retry_after,
            content_type,
            body,
        })
    }

    /// A signed POST (protocol §3), retried once on `badNonce`.
    pub fn post(
        &mut self,
        doing: &str,
        url: &str,
        key: &CertKey,
        auth: Auth<'_>,
        payload: Option<&Value>,
    ) -> Result<Reply> {
        let payload_bytes = payload.map(|p| p.to_string().into_bytes());
        let mut retried = false;
        loop {
            let mut protected = Map::new();
            protected.insert("nonce".into(), self.take_nonce(doing)?.into());
            protected.insert("url".into(), url.into());
            match auth {
                Auth::Jwk => protected.insert("jwk".into(), jws::jwk_of_point(&key.public_point())),
                Auth::Kid(kid) => protected.insert("kid".into(), kid.into()),
            };
            let body = jws::sign_with(|input| key.sign_fixed(input), protected, payload_bytes.as_deref())?;
            match self.exchange(doing, url, Some(&body)) {
                Err(e) if e.problem() == Some(ProblemType::BadNonce) && !retried => {
                    log::debug!("{doing}: nonce refused, retrying once with a fresh one");
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// Enrolls `key` with a one-time `token` (protocol §6): the device id
    /// and the hostname the server assigned.
    pub fn enroll(&mut self, key: &CertKey, token: &str) -> Result<(String, String)> {
        let doing = "enrolling";
        let url = self.directory()?.enroll;
        let payload = json!({"token": token, "agentVersion": env!("CARGO_PKG_VERSION")});
        let reply = self.post(doing, &url, key, Auth::Jwk, Some(&payload))?;
        parse_enrollment(&reply_json(doing, &url, &reply)?).map_err(|r| Error::rejected(doing, r))
    }

    /// Publishes `set` as the device's A/AAAA records (protocol §7); returns
    /// the records as the server now publishes them.
    pub fn update_addresses(&mut self, key: &CertKey, kid: &str, set: &AddressSet) -> Result<AddressSet> {
        let doing = "updating addresses";
        let url = self.directory()?.addresses;
        let reply = self.post(doing, &url, key, Auth::Kid(kid), Some(&set.to_json()))?;
        let v = reply_json(doing, &url, &reply)?;
        AddressSet::from_json(&v).ok_or_else(|| Error::rejected(doing, "answer lacks valid ipv4/ipv6 lists"))
    }

    /// Sends a new order for `csr_der` (protocol §8.1).
    pub fn new_order(&mut self, key: &CertKey, kid: &str, csr_der: &[u8]) -> Result<Order> {
        let doing = "ordering a certificate";
        let url = self.directory()?.new_order;
        let payload = json!({"csr": base64url::encode(csr_der)});
        let reply = self.post(doing, &url, key, Auth::Kid(kid), Some(&payload))?;
        let order_url = match reply.location.as_deref() {
            Some(l) if l.starts_with("https://") => l.to_string(),
            other => {
                return Err(Error::rejected(
                    doing,
                    format!("Location {other:?} is not an https URL"),
                ))
            }
        };
        parse_order(doing, &url, &reply, order_url)
    }

    /// Polls an order (protocol §8.2).
    pub fn poll_order(&mut self, key: &CertKey, kid: &str, order_url: &str) -> Result<Order> {
        let doing = "polling the certificate order";
        let reply = self.post(doing, order_url, key, Auth::Kid(kid), None)?;
        parse_order(doing, order_url, &reply, order_url.to_string())
    }

    /// Downloads the chain of a valid order (protocol §8.4). The caller
    /// validates it before anything is written.
    pub fn download_chain(&mut self, key: &CertKey, kid: &str, url: &str) -> Result<Vec<u8>> {
        let doing = "downloading the certificate";
        let reply = self.post(doing, url, key, Auth::Kid(kid), None)?;
        if !reply.content_type.starts_with(CONTENT_TYPE_PEM_CHAIN) {
            return Err(Error::rejected(
                doing,
                format!("Content-Type {:?} is not {CONTENT_TYPE_PEM_CHAIN}", reply.content_type),
            ));
        }
        Ok(reply.body)
    }

    /// Sends a status report (protocol §10); returns the renewal window the
    /// server suggests for the reported certificate, if any.
    pub fn report_status(&mut self, key: &CertKey, kid: &str, report: &Value) -> Result<Option<Window>> {
        let doing = "sending the status report";
        let url = self.directory()?.status;
        let reply = self.post(doing, &url, key, Auth::Kid(kid), Some(report))?;
        if reply.body.is_empty() {
            return Ok(None);
        }
        let v = reply_json(doing, &url, &reply)?;
        parse_window(v.get("renewal")).map_err(|r| Error::rejected(doing, r))
    }
}

fn read_roots(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let doing = "reading the server's CA bundle";
    let bytes = crate::atomic::read_bounded(path, MAX_CA_FILE_BYTES, doing)?
        .ok_or_else(|| Error::io(doing, path, std::io::ErrorKind::NotFound.into()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&bytes)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::Other(format!(
            "{doing} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// A readable reason for a transport failure.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out (the server did not answer in time)".into(),
        ureq::Error::BodyExceedsLimit(n) => format!("answer larger than {n} bytes, refused"),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the server running?)".into()
        }
        // ureq says "Peer disconnected" for a body shorter than its
        // Content-Length, rustls "peer closed connection without sending TLS
        // close_notify: <docs URL>" for a stream cut mid-record: both are an
        // answer cut off, which is what the operator needs to read.
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the connection closed before the answer was complete".into()
        }
        other => other.to_string(),
    }
}

fn reply_json(doing: &str, url: &str, reply: &Reply) -> Result<Value> {
    match serde_json::from_slice::<Value>(&reply.body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Error::rejected(doing, format!("{url}: answer is not a JSON object"))),
        Err(e) => Err(Error::rejected(doing, format!("{url}: answer is not valid JSON: {e}"))),
    }
}

/// The problem document (RFC 9457) of an error answer: its type, if known,
/// and its detail, bounded; anything else than `application/problem+json`
/// gives no problem and no detail.
pub fn parse_problem(content_type: &str, body: &[u8]) -> (Option<ProblemType>, String) {
    if !content_type.starts_with(CONTENT_TYPE_PROBLEM) {
        return (None, String::new());
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, "unreadable problem document".into());
    };
    let kind = v.get("type").and_then(Value::as_str);
    let detail: String = v
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    let problem = kind.and_then(ProblemType::from_uri);
    let detail = match (problem, kind) {
        (None, Some(k)) => format!("{} ({})", detail, k.chars().take(100).collect::<String>()),
        _ => detail,
    };
    (problem, detail)
}

/// The directory (protocol §4): protocol version 1 and an https URL for
/// every endpoint.
pub fn parse_directory(v: &Value) -> std::result::Result<Directory, String> {
    if v.pointer("/meta/protocol").and_then(Value::as_u64) != Some(lancert_protocol::PROTOCOL_VERSION) {
        return Err("the server does not speak protocol version 1 (meta.protocol)".into());
    }
    let url = |name: &str| match v.get(name).and_then(Value::as_str) {
        Some(u) if u.starts_with("https://") && u.len() <= 2048 => Ok(u.to_string()),
        _ => Err(format!("directory lacks an https URL for {name:?}")),
    };
    Ok(Directory {
        new_nonce: url("newNonce")?,
        enroll: url("enroll")?,
        addresses: url("addresses")?,
        new_order: url("newOrder")?,
        status: url("status")?,
    })
}

/// A suggested renewal window (protocol §8.3): absent or null is none; a
/// present one must have RFC 3339 `start` and `end`, `end` later.
pub fn parse_window(v: Option<&Value>) -> std::result::Result<Option<Window>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let time = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .and_then(|s| parse_rfc3339(s).ok())
            .ok_or_else(|| format!("renewal.{name} is not an RFC 3339 time"))
    };
    let (start, end) = (time("start")?, time("end")?);
    if end <= start {
        return Err("renewal window ends before it starts".into());
    }
    Ok(Some(Window { start, end }))
}

/// The enrollment answer (protocol §6): the device id and the hostname the
/// server assigned, lower-cased.
pub fn parse_enrollment(v: &Value) -> std::result::Result<(String, String), String> {
    let device = v.get("device").and_then(Value::as_str).unwrap_or_default();
    let hostname = v.get("hostname").and_then(Value::as_str).unwrap_or_default();
    if !is_device_id(device) {
        return Err(format!("device id {device:?} is not 1-64 characters of [A-Za-z0-9_-]"));
    }
    if !is_hostname(hostname) {
        return Err(format!("{hostname:?} is not a valid hostname"));
    }
    Ok((device.to_string(), hostname.to_ascii_lowercase()))
}

/// An order object (protocol §8.3) from `reply`, the answer of `url`;
/// `order_url` is the order's own URL.
pub fn parse_order(doing: &str, url: &str, reply: &Reply, order_url: String) -> Result<Order> {
    let v = reply_json(doing, url, reply)?;
    let reject = |r: String| Error::rejected(doing, r);
    let status = match v.get("status").and_then(Value::as_str) {
        Some("processing") | Some("pending") => OrderStatus::Processing,
        Some("valid") => OrderStatus::Valid,
        Some("invalid") => OrderStatus::Invalid,
        other => {
            return Err(reject(format!(
                "order status {other:?} is not processing, valid or invalid"
            )))
        }
    };
    let certificate = match (status, v.get("certificate").and_then(Value::as_str)) {
        (OrderStatus::Valid, Some(c)) if c.starts_with("https://") => Some(c.to_string()),
        (OrderStatus::Valid, _) => return Err(reject("valid order lacks an https certificate URL".into())),
        _ => None,
    };
    let error = (status == OrderStatus::Invalid).then(|| {
        let e = v.get("error");
        let kind = e
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .and_then(ProblemType::from_uri);
        let detail = e
            .and_then(|e| e.get("detail"))
            .and_then(Value::as_str)
            .unwrap_or("no detail");
        (kind, detail.chars().take(500).collect())
    });
    Ok(Order {
        url: order_url,
        status,
        certificate,
        renewal: parse_window(v.get("renewal")).map_err(reject)?,
        error,
        retry_after: reply.retry_after,
    })
}

/// A `Replay-Nonce` header worth keeping: base64url (RFC 8555 §6.5.1), at
/// most 256 characters; anything else is ignored (the next request fetches
/// a fresh nonce).
pub fn parse_replay_nonce(value: String) -> Option<String> {
    (value.len() <= 256 && base64url::decode(&value).is_ok()).then_some(value)
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date,
/// clamped to 1 s … 1 day.
pub fn parse_retry_after(value: &str, now: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(clamp_retry_after(Duration::from_secs(secs)));
    }
    let at = parse_http_date(value)?;
    Some(clamp_retry_after(Duration::from_secs(
        u64::try_from(at - now).unwrap_or(0),
    )))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP date form
/// senders may generate (RFC 9110 §5.6.7).
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[2])? + 1;
    let rfc3339 = format!("{}-{:02}-{:0>2}T{}Z", parts[3], month, parts[1], parts[4]);
    parse_rfc3339(&rfc3339).ok()
}

/// Device ids: 1 to 64 characters of `[A-Za-z0-9_-]` (protocol §6).
pub fn is_device_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A DNS hostname in preferred name syntax (RFC 1123 §2.1), at least two
/// labels, no wildcard.
pub fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms_and_clamping() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("0", 0), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("99999999999", 0), Some(Duration::from_secs(86_400)));
        let now = parse_rfc3339("1994-11-06T08:49:00Z").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(37))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 100),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        assert_eq!(parse_retry_after("-5", 0), None);
    }

    #[test]
    fn directory_must_be_complete_and_v1() {
        let good = json!({"newNonce":"https://s/n","enroll":"https://s/e","addresses":"https://s/a",
            "newOrder":"https://s/o","status":"https://s/s","meta":{"protocol":1}});
        assert_eq!(parse_directory(&good).unwrap().new_order, "https://s/o");
        let mut v2 = good.clone();
        v2["meta"]["protocol"] = 2.into();
        assert!(parse_directory(&v2).is_err());
        let mut http = good.clone();
        http["enroll"] = "http://s/e".into();
        assert!(parse_directory(&http).unwrap_err().contains("enroll"));
        let mut missing = good;
        missing.as_object_mut().unwrap().remove("status");
        assert!(parse_directory(&missing).is_err());
    }

    fn reply(body: &str) -> Reply {
        Reply {
            status: 200,
            location: None,
            retry_after: Some(Duration::from_secs(3)),
            content_type: "application/json".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn orders_are_checked() {
        let ok = parse_order("d", "u", &reply(r#"{"status":"processing"}"#), "https://s/o/1".into()).unwrap();
        assert_eq!(ok.status, OrderStatus::Processing);
        assert_eq!(ok.retry_after, Some(Duration::from_secs(3)));
        let valid = parse_order(
            "d",
            "u",
            &reply(r#"{"status":"valid","certificate":"https://s/c/1","renewal":{"start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z"}}"#),
            "https://s/o/1".into(),
        )
        .unwrap();
        assert_eq!(valid.certificate.as_deref(), Some("https://s/c/1"));
        assert_eq!(valid.renewal.unwrap().end - valid.renewal.unwrap().start, 86_400);
        let invalid = parse_order(
            "d",
            "u",
            &reply(r#"{"status":"invalid","error":{"type":"urn:lancert:problem:badCSR","detail":"no"}}"#),
            "x".into(),
        )
        .unwrap();
        assert_eq!(invalid.error, Some((Some(ProblemType::BadCsr), "no".into())));
        for bad in [
            r#"{"status":"valid"}"#,
            r#"{"status":"done"}"#,
            r#"[1]"#,
            "garbage",
            r#"{"status":"valid","certificate":"https://s/c","renewal":{"start":"2026-01-02T00:00:00Z","end":"2026-01-01T00:00:00Z"}}"#,
        ] {
            assert!(parse_order("d", "u", &reply(bad), "x".into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn problems_are_parsed() {
        let body = br#"{"type":"urn:lancert:problem:rateLimited","detail":"slow down","status":429}"#;
        assert_eq!(
            parse_problem("application/problem+json", body),
            (Some(ProblemType::RateLimited), "slow down".into())
        );
        let (p, d) = parse_problem("application/problem+json", br#"{"type":"urn:x:new","detail":"?"}"#);
        assert_eq!(p, None);
        assert!(d.contains("urn:x:new"));
        assert_eq!(parse_problem("text/html", b"<html>"), (None, String::new()));
    }

    #[test]
    fn names_and_ids() {
        assert!(is_hostname("xi8qz.example.com"));
        assert!(!is_hostname("*.example.com"));
        assert!(!is_hostname("localhost"));
        assert!(!is_hostname("-a.example.com"));
        assert!(is_device_id("dev_1-A"));
        assert!(!is_device_id("../x"));
        assert!(!is_device_id(""));
    }
}
