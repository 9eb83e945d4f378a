//! An in-process protocol server whose answers a test chooses, including
//! wrong ones, to check that the agent refuses them.
//!
//! It speaks just enough of `docs/protocol.md` for the agent: directory,
//! nonce, enroll (any token), addresses, new order (the CSR's key is taken
//! from the JWS payload; the JWS itself is not verified), order polling,
//! certificate download and status. HTTP/1.1 is parsed by hand (request line,
//! headers, `Content-Length` or chunked body, keep-alive), one thread per
//! connection, TLS by rustls with a certificate from its own [`TestCa`].

use crate::pki::{RawPublicKey, TestCa};
use lancert_protocol::problem::{self, ProblemType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hostname the evil server assigns at enrollment.
pub const EVIL_HOSTNAME: &str = "evil-device.devices.example.com";

/// Largest request body the evil server reads: 1 MiB (the protocol asks
/// servers to accept 64 KiB).
const MAX_BODY: usize = 1 << 20;

/// Size of the [`Mode::HugeBody`] certificate download: 2 MiB, well over the
/// agent's 256 KiB response limit.
pub const HUGE_BODY_BYTES: usize = 2 << 20;

/// How long a [`Mode::Stall`] request is held at most: 120 s (the agent's
/// timeout must fire long before).
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Idle time after which a connection thread gives up on its client: 60 s.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const DAY: i64 = 86_400;

/// How the evil server answers the next certificate order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A valid leaf for the CSR's key and the hostname, issued by the
    /// server's CA, already inside its last third (notBefore now − 80 days,
    /// notAfter now + 10 days): every check renews it.
    Good,
    /// Like [`Mode::Good`] but fresh (now − 1 day … now + 89 days): not due.
    GoodFresh,
    /// A leaf for a key other than the CSR's.
    WrongKey,
    /// A leaf for another hostname.
    WrongName,
    /// A leaf that expired yesterday.
    Expired,
    /// A leaf valid from tomorrow.
    NotYetValid,
    /// A leaf issued by a CA the agent does not trust.
    UntrustedChain,
    /// A certificate download that is not PEM.
    GarbagePem,
    /// A certificate download of [`HUGE_BODY_BYTES`].
    HugeBody,
    /// A new-order response that is not JSON.
    InvalidJson,
    /// A new-order request that is never answered.
    Stall,
    /// Nothing listens: connections are refused.
    Down,
    /// New orders are answered with HTTP `status` (a problem document for
    /// 500 `serverInternal` and 502 `issuanceFailed`, a bare HTML page
    /// otherwise), with `Retry-After: retry_after` when given.
    ServerError {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header's value, if any.
        retry_after: Option<&'static str>,
    },
    /// The directory answers `302 Found` with a `Location` pointing at
    /// itself: a redirect loop.
    RedirectLoop,
    /// The directory answers `302 Found` with a `Location` of plain HTTP,
    /// `http://127.0.0.1:{port}/v1/directory`.
    RedirectToHttp {
        /// The port of the plain-HTTP URL.
        port: u16,
    },
    /// The server's own TLS certificate (not an issued chain) names only
    /// [`OTHER_TLS_HOST`]: the agent must refuse the connection.
    TlsWrongName,
    /// The server's own TLS certificate expired yesterday.
    TlsExpired,
    /// The certificate download announces the whole chain in
    /// `Content-Length`, sends half of it and closes the connection cleanly
    /// (TLS `close_notify`): only the length shows that the body is cut.
    TruncatedDownload,
    /// The certificate download sends its headers, then nothing, holding
    /// the connection open.
    StallAfterHeaders,
}

/// The only name in the server's TLS certificate in [`Mode::TlsWrongName`].
pub const OTHER_TLS_HOST: &str = "other-server.example.net";

/// What the evil server saw since the last [`EvilServer::reset_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// HTTP requests parsed.
    pub requests: u64,
    /// Bytes received on the wire (TLS records included).
    pub bytes_in: u64,
    /// Bytes sent on the wire (TLS records included).
    pub bytes_out: u64,
    /// `METHOD path` of each request, in order.
    pub requests_seen: Vec<String>,
}

struct Order {
    status_body: Value,
    download: Vec<u8>,
}

struct Shared {
    base: String,
    ca: TestCa,
    other_ca: TestCa,
    tls: Arc<ServerConfig>,
    tls_wrong_name: Arc<ServerConfig>,
    tls_expired: Arc<ServerConfig>,
    mode: Mutex<Mode>,
    stats: Mutex<Stats>,
    orders: Mutex<Vec<Order>>,
    last_status: Mutex<Option<Value>>,
    last_addresses: Mutex<Option<Value>>,
    nonces: AtomicU64,
    stop: AtomicBool,
}

/// The evil server; stops (and frees its port) on drop.
pub struct EvilServer {
    port: u16,
    ca_path: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl EvilServer {
    /// Starts the server on a free loopback port and writes its root CA to
    /// `dir/evil-ca.pem` (the agent's `server_ca` and `trust_anchors`).
    pub fn start(dir: &Path, mode: Mode) -> EvilServer {
        let ca = TestCa::new("Evil Test");
        let other_ca = TestCa::new("Untrusted Test");
        let now = crate::unix_now();
        let tls = tls_config(&ca, &["127.0.0.1", "localhost"], now - DAY, now + 30 * DAY);
        let tls_wrong_name = tls_config(&ca, &[OTHER_TLS_HOST], now - DAY, now + 30 * DAY);
        let tls_expired = tls_config(&ca, &["127.0.0.1", "localhost"], now - 30 * DAY, now - DAY);
        let ca_path = dir.join("evil-ca.pem");
        std::fs::write(&ca_path, ca.root_pem()).expect("writing evil-ca.pem");

        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the evil server");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            base: format!("https://127.0.0.1:{port}"),
            ca,
            other_ca,
            tls,
            tls_wrong_name,
            tls_expired,
            mode: Mutex::new(mode),
            stats: Mutex::new(Stats::default()),
            orders: Mutex::new(Vec::new()),
            last_status: Mutex::new(None),
            last_addresses: Mutex::new(None),
            nonces: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        });
        let listener = if mode == Mode::Down { None } else { Some(listener) };
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(s, port, listener));
        EvilServer {
            port,
            ca_path,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The base URL, `https://127.0.0.1:PORT` (the agent's `server`).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The root CA file the agent must trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The root CA (PEM).
    pub fn ca_pem(&self) -> &str {
        self.shared.ca.root_pem()
    }

    /// Changes how the next requests are answered. Switching to or from
    /// [`Mode::Down`] closes or reopens the listening socket within 20 ms.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        // Let the acceptor apply Down/up before the caller runs the agent.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *lock(&self.shared.mode)
    }

    /// What was seen since the start or the last reset.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = Stats::default();
    }

    /// The payload of the last status report received.
    pub fn last_status(&self) -> Option<Value> {
        lock(&self.shared.last_status).clone()
    }

    /// The payload of the last address update received.
    pub fn last_addresses(&self) -> Option<Value> {
        lock(&self.shared.last_addresses).clone()
    }

    /// How many orders were created.
    pub fn orders(&self) -> usize {
        lock(&self.shared.orders).len()
    }
}

impl Drop for EvilServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A TLS configuration with a fresh key and a certificate from `ca` for
/// `names`, valid from `not_before` to `not_after`.
fn tls_config(ca: &TestCa, names: &[&str], not_before: i64, not_after: i64) -> Arc<ServerConfig> {
    let (chain, key) = ca.issue_with_new_key(names, not_before, not_after);
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("server chain PEM");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("server key PEM");
    let config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    Arc::new(config)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(shared: Arc<Shared>, port: u16, mut listener: Option<TcpListener>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let down = *lock(&shared.mode) == Mode::Down;
        if down {
            // Closing the socket makes connections fail with "refused".
            listener = None;
        } else if listener.is_none() {
            listener = TcpListener::bind(("127.0.0.1", port)).ok();
        }
        let Some(l) = listener.as_ref() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        l.set_nonblocking(true).expect("nonblocking listener");
        match l.accept() {
            Ok((sock, _)) => {
                lock(&shared.stats).connections += 1;
                let s = shared.clone();
                std::thread::spawn(move || serve_connection(s, sock));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A TCP stream that counts the bytes crossing it.
struct Counting {
    sock: TcpStream,
    shared: Arc<Shared>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sock.read(buf)?;
        lock(&self.shared.stats).bytes_in += n as u64;
        Ok(n)
    }
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sock.write(buf)?;
        lock(&self.shared.stats).bytes_out += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

enum Answer {
    Send(Response),
    /// Hold the request without answering, then drop the connection.
    Stall,
    /// Send the headers and half of the body, then close (`close_notify`).
    Truncate(Response),
    /// Send the headers, then hold the connection without a body.
    HeadersThenStall(Response),
}

fn serve_connection(shared: Arc<Shared>, sock: TcpStream) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = sock.set_write_timeout(Some(IDLE_TIMEOUT));
    let tls = match *lock(&shared.mode) {
        Mode::TlsWrongName => shared.tls_wrong_name.clone(),
        Mode::TlsExpired => shared.tls_expired.clone(),
        _ => shared.tls.clone(),
    };
    let Ok(conn) = ServerConnection::new(tls) else {
        return;
    };
    let counting = Counting {
        sock,
        shared: shared.clone(),
    };
    let mut stream = BufReader::new(StreamOwned::new(conn, counting));
    loop {
        let req = match read_request(&mut stream) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        if shared.stop.load(Ordering::SeqCst) || *lock(&shared.mode) == Mode::Down {
            return;
        }
        {
            let mut st = lock(&shared.stats);
            st.requests += 1;
            st.requests_seen.push(format!("{} {}", req.method, req.path));
        }
        let stall = |shared: &Shared| {
            let start = Instant::now();
            while !shared.stop.load(Ordering::SeqCst) && start.elapsed() < STALL_LIMIT {
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        match answer(&shared, &req) {
            Answer::Stall => {
                stall(&shared);
                return;
            }
            Answer::Truncate(resp) => {
                let half = resp.body.len() / 2;
                let w = stream.get_mut();
                if write_head(w, &req, &resp).is_ok() && w.write_all(&resp.body[..half]).is_ok() {
                    let _ = w.flush();
                }
                w.conn.send_close_notify();
                let _ = w.flush();
                return;
            }
            Answer::HeadersThenStall(resp) => {
                let w = stream.get_mut();
                if write_head(w, &req, &resp).is_ok() {
                    let _ = w.flush();
                    stall(&shared);
                }
                return;
            }
            Answer::Send(resp) => {
                if write_response(stream.get_mut(), &req, &resp).is_err() || req.close {
                    stream.get_mut().conn.send_close_notify();
                    let _ = stream.get_mut().flush();
                    return;
                }
            }
        }
    }
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(16 * 1024).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&line).trim_end().to_string()))
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (method, path) = match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => (m.to_string(), p.to_string()),
        _ => return Err(bad("bad request line")),
    };
    let mut length = 0usize;
    let mut chunked = false;
    let mut close = false;
    loop {
        let h = read_line(r)?.ok_or_else(|| bad("eof in headers"))?;
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(bad("bad header"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| bad("bad content-length"))?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(r)?.ok_or_else(|| bad("eof in chunk"))?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            if size == 0 {
                // Trailers, then the empty line.
                while read_line(r)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(r)?;
        }
    } else {
        if length > MAX_BODY {
            return Err(bad("body too large"));
        }
        body.resize(length, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(Request {
        method,
        path,
        body,
        close,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        302 => "Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(w: &mut impl Write, req: &Request, resp: &Response) -> std::io::Result<()> {
    write_head(w, req, resp)?;
    if req.method != "HEAD" {
        w.write_all(&resp.body)?;
    }
    w.flush()
}

/// The status line and headers (`Content-Length` of the whole body).
fn write_head(w: &mut impl Write, req: &Request, resp: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if req.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.flush()
}

fn json_response(status: u16, body: Value) -> Response {
    Response {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    }
}

fn problem_response(kind: ProblemType, detail: &str) -> Response {
    Response {
        status: kind.http_status(),
        content_type: lancert_protocol::CONTENT_TYPE_PROBLEM,
        headers: Vec::new(),
        body: problem::document(kind, detail).to_string().into_bytes(),
    }
}

fn answer(shared: &Shared, req: &Request) -> Answer {
    let mut resp = match route(shared, req) {
        Ok(Answer::Send(r)) => r,
        Ok(other) => return other,
        Err(r) => r,
    };
    if req.method == "POST" || req.method == "HEAD" {
        let n = shared.nonces.fetch_add(1, Ordering::Relaxed);
        let nonce = lancert_protocol::base64url::encode(&[&n.to_be_bytes()[..], &[0x5a; 8]].concat());
        resp.headers.push((lancert_protocol::HEADER_REPLAY_NONCE, nonce));
        resp.headers.push(("Cache-Control", "no-store".to_string()));
    }
    Answer::Send(resp)
}

/// The JWS payload as JSON (`Value::Null` for POST-as-GET). The signature is
/// not checked: the evil server tests the agent, not itself.
fn payload(req: &Request) -> Result<Value, Response> {
    let jws = lancert_protocol::jws::Jws::parse(&req.body)
        .map_err(|e| problem_response(ProblemType::Malformed, &format!("JWS: {e}")))?;
    if jws.payload.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&jws.payload).map_err(|e| problem_response(ProblemType::Malformed, &format!("payload: {e}")))
}

fn route(shared: &Shared, req: &Request) -> Result<Answer, Response> {
    let base = &shared.base;
    let path = req.path.as_str();
    let send = |r| Ok(Answer::Send(r));
    match (req.method.as_str(), path) {
        ("GET", "/v1/directory") if matches!(mode(shared), Mode::RedirectLoop | Mode::RedirectToHttp { .. }) => {
            let to = match mode(shared) {
                Mode::RedirectToHttp { port } => format!("http://127.0.0.1:{port}/v1/directory"),
                _ => format!("{base}/v1/directory"),
            };
            send(Response {
                status: 302,
                content_type: "text/html",
                headers: vec![("Location", to)],
                body: b"<html>Found</html>".to_vec(),
            })
        }
        ("GET", "/v1/directory") => send(json_response(
            200,
            json!({
                "newNonce": format!("{base}/v1/nonce"),
                "enroll": format!("{base}/v1/enroll"),
                "addresses": format!("{base}/v1/addresses"),
                "newOrder": format!("{base}/v1/orders"),
                "status": format!("{base}/v1/status"),
                "meta": {"protocol": 1},
            }),
        )),
        ("HEAD" | "GET", "/v1/nonce") => send(json_response(200, Value::Null).with_empty_body()),
        ("POST", "/v1/enroll") => {
            payload(req)?;
            send(json_response(
                201,
                json!({"device": "evil-1", "hostname": EVIL_HOSTNAME}),
            ))
        }
        ("POST", "/v1/addresses") => {
            let p = payload(req)?;
            *lock(&shared.last_addresses) = Some(p.clone());
            send(json_response(
                200,
                json!({"hostname": EVIL_HOSTNAME, "ipv4": p["ipv4"].clone(), "ipv6": p["ipv6"].clone()}),
            ))
        }
        ("POST", "/v1/status") => {
            let p = payload(req)?;
            *lock(&shared.last_status) = Some(p);
            send(json_response(200, json!({})))
        }
        ("POST", "/v1/orders") => new_order(shared, req),
        ("POST", _) if path.starts_with("/v1/orders/") => {
            let order = order_index(shared, path, "/v1/orders/")?;
            send(json_response(200, lock(&shared.orders)[order].status_body.clone()))
        }
        ("POST", _) if path.starts_with("/v1/certificates/") => {
            let order = order_index(shared, path, "/v1/certificates/")?;
            let resp = Response {
                status: 200,
                content_type: lancert_protocol::CONTENT_TYPE_PEM_CHAIN,
                headers: Vec::new(),
                body: lock(&shared.orders)[order].download.clone(),
            };
            Ok(match mode(shared) {
                Mode::TruncatedDownload => Answer::Truncate(resp),
                Mode::StallAfterHeaders => Answer::HeadersThenStall(resp),
                _ => Answer::Send(resp),
            })
        }
        _ => Err(problem_response(
            ProblemType::NotFound,
            &format!("no route for {} {path}", req.method),
        )),
    }
}

fn mode(shared: &Shared) -> Mode {
    *lock(&shared.mode)
}

/// The [`Mode::ServerError`] answer.
fn server_error(status: u16, retry_after: Option<&'static str>) -> Response {
    let mut resp = match status {
        500 => problem_response(ProblemType::ServerInternal, "the evil server failed on purpose"),
        502 => problem_response(ProblemType::IssuanceFailed, "the evil server's CA is away"),
        _ => Response {
            status,
            content_type: "text/html",
            headers: Vec::new(),
            body: format!("<html><h1>{status} {}</h1></html>", reason(status)).into_bytes(),
        },
    };
    resp.status = status;
    if let Some(v) = retry_after {
        resp.headers.push(("Retry-After", v.to_string()));
    }
    resp
}

impl Response {
    fn with_empty_body(mut self) -> Response {
        self.body.clear();
        self
    }
}

fn order_index(shared: &Shared, path: &str, prefix: &str) -> Result<usize, Response> {
    let n: usize = path[prefix.len()..]
        .parse()
        .map_err(|_| problem_response(ProblemType::NotFound, "no such order"))?;
    if n < lock(&shared.orders).len() {
        Ok(n)
    } else {
        Err(problem_response(ProblemType::NotFound, "no such order"))
    }
}

fn new_order(shared: &Shared, req: &Request) -> Result<Answer, Response> {
    let p = payload(req)?;
    let csr_b64 = p["csr"]
        .as_str()
        .ok_or_else(|| problem_response(ProblemType::Malformed, "payload has no csr"))?;
    let csr = lancert_protocol::base64url::decode(csr_b64)
        .map_err(|_| problem_response(ProblemType::BadCsr, "csr is not base64url"))?;
    let key = RawPublicKey::from_csr(&csr).map_err(|e| problem_response(ProblemType::BadCsr, &e))?;
    let mode = *lock(&shared.mode);
    if mode == Mode::Stall {
        return Ok(Answer::Stall);
    }
    if let Mode::ServerError { status, retry_after } = mode {
        return Err(server_error(status, retry_after));
    }
    let now = crate::unix_now();
    let host = EVIL_HOSTNAME;
    let ca = &shared.ca;
    let download = match mode {
        Mode::Good
        | Mode::InvalidJson
        | Mode::Stall
        | Mode::Down
        | Mode::ServerError { .. }
        | Mode::RedirectLoop
        | Mode::RedirectToHttp { .. }
        | Mode::TlsWrongName
        | Mode::TlsExpired
        | Mode::TruncatedDownload
        | Mode::StallAfterHeaders => ca.issue(&key, &[host], now - 80 * DAY, now + 10 * DAY),
        Mode::GoodFresh => ca.issue(&key, &[host], now - DAY, now + 89 * DAY),
        Mode::WrongKey => ca.issue_with_new_key(&[host], now - DAY, now + 89 * DAY).0,
        Mode::WrongName => ca.issue(&key, &["someone-else.devices.example.com"], now - DAY, now + 89 * DAY),
        Mode::Expired => ca.issue(&key, &[host], now - 90 * DAY, now - DAY),
        Mode::NotYetValid => ca.issue(&key, &[host], now + DAY, now + 91 * DAY),
        Mode::UntrustedChain => shared.other_ca.issue(&key, &[host], now - DAY, now + 89 * DAY),
        Mode::GarbagePem => {
            "-----BEGIN CERTIFICATE-----\nThis is not base64, nor a certificate!\n-----END CERTIFICATE-----\n".into()
        }
        Mode::HugeBody => {
            let mut s = String::with_capacity(HUGE_BODY_BYTES + 64);
            s.push_str("-----BEGIN CERTIFICATE-----\n");
            while s.len() < HUGE_BODY_BYTES {
                s.push_str("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n");
            }
            s.push_str("-----END CERTIFICATE-----\n");
            s
        }
    };
    let mut orders = lock(&shared.orders);
    let n = orders.len();
    let base = &shared.base;
    let body = json!({
        "status": "valid",
        "hostname": host,
        "expires": lancert_protocol::time::format_rfc3339(now + DAY),
        "certificate": format!("{base}/v1/certificates/{n}"),
    });
    orders.push(Order {
        status_body: body.clone(),
        download: download.into_bytes(),
    });
    let location = ("Location", format!("{base}/v1/orders/{n}"));
    if mode == Mode::InvalidJson {
        return Ok(Answer::Send(Response {
            status: 201,
            content_type: "application/json",
            headers: vec![location],
            body: b"{\"status\": \"valid\", \"certificate\": <<<this is not JSON".to_vec(),
        }));
    }
    let mut r = json_response(201, body);
    r.headers.push(location);
    Ok(Answer::Send(r))
}
