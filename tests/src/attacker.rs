//! A hostile client of the real server, for `tests/attacks.rs`.
//!
//! [`Attacker`] builds signed requests the way the agent builds them
//! (protocol §3, `agent/src/client.rs`): the URLs from the directory, a nonce
//! fetched from the server, the exact `url`, `jwk` on enroll and `kid`
//! afterwards, the payload JSON signed by `lancert_protocol::jws::sign`. A
//! test then changes one thing (the signature, the nonce, the key, the CSR)
//! so that the refusal it sees can only be about that one thing.
//!
//! Below HTTP it holds connections that misbehave ([`Conn`], [`Flood`]): a
//! TLS handshake never finished, headers a byte at a time, bodies too large
//! or too slow ([`Attacker::stream_body`]). [`DbSnapshot`] reads the server's
//! whole database, so a test can show that a refused request changed
//! nothing, and [`proc_status_kib`] reads the server's memory.

use crate::server::Server;
use crate::tls::{connect, parse_response, verifying_config, HttpResponse, CLIENT_TIMEOUT};
use lancert_protocol::{base64url, jws};
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The SNI and `Host` the harness uses: the test server's `public_url` is
/// `https://localhost:PORT`.
const HOST: &str = "localhost";

/// How long [`Attacker::obtain_certificate`] polls an order: 20 s.
const ORDER_TIMEOUT: Duration = Duration::from_secs(20);

/// The URLs of the server's directory (protocol §4).
#[derive(Debug, Clone)]
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

/// How a request names its signer (protocol §3).
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// The public key itself, in `jwk` (enrollment only).
    Jwk,
    /// An enrolled device id, in `kid`.
    Kid(&'a str),
}

/// An enrolled device as the attacker holds it: its identity key (as a
/// p256 key for JWS and as an rcgen key for CSRs), id and hostname.
pub struct Identity {
    /// The identity key, for signing requests.
    pub key: SigningKey,
    /// The same key, for signing CSRs with it.
    pub key_pair: KeyPair,
    /// The device id (`kid`).
    pub kid: String,
    /// The hostname the server assigned.
    pub hostname: String,
}

/// A client of one running server.
pub struct Attacker {
    port: u16,
    base: String,
    tls: Arc<ClientConfig>,
    /// The server's directory.
    pub dir: Directory,
}

impl Attacker {
    /// A client of `server`, trusting its CA; reads the directory.
    pub fn new(server: &Server) -> Attacker {
        let ca = std::fs::read(server.ca_path()).unwrap_or_else(|e| panic!("reading the server's CA: {e}"));
        let mut a = Attacker {
            port: server.port(),
            base: server.url(),
            tls: verifying_config(&ca),
            dir: Directory {
                new_nonce: String::new(),
                enroll: String::new(),
                addresses: String::new(),
                new_order: String::new(),
                status: String::new(),
            },
        };
        let d = a.request("GET", &format!("{}/v1/directory", a.base), &[], b"");
        assert_eq!(d.status, 200, "directory: {}", String::from_utf8_lossy(&d.body));
        let v = d.json();
        let url = |name: &str| -> String {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("directory has no {name}: {v}"))
                .to_string()
        };
        a.dir = Directory {
            new_nonce: url("newNonce"),
            enroll: url("enroll"),
            addresses: url("addresses"),
            new_order: url("newOrder"),
            status: url("status"),
        };
        a
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS configuration trusting the server.
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        self.tls.clone()
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn path_of<'u>(&self, url: &'u str) -> &'u str {
        url.strip_prefix(&self.base)
            .unwrap_or_else(|| panic!("{url} is not below {}", self.base))
    }

    /// Sends one request on a new connection (`Connection: close`) with
    /// extra `headers` and reads the whole response.
    pub fn request(&self, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {HOST}:{}\r\nConnection: close\r\n",
            self.path_of(url),
            self.port
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut tls = self.connect();
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        // A server may answer (413) and close before the body is all sent:
        // the answer is still read.
        let sent = tls.write_all(&bytes);
        let received = read_until_closed(&mut tls);
        parse_response(&received).unwrap_or_else(|e| panic!("{method} {url}: {e} (sending: {sent:?})"))
    }

    /// POSTs a JWS `body` to `url` as the agent does.
    pub fn post(&self, url: &str, body: &[u8]) -> HttpResponse {
        self.request(
            "POST",
            url,
            &[("Content-Type", lancert_protocol::CONTENT_TYPE_JOSE)],
            body,
        )
    }

    /// A fresh nonce (`HEAD newNonce`, protocol §5).
    pub fn nonce(&self) -> String {
        let r = self.request("HEAD", &self.dir.new_nonce, &[], b"");
        assert_eq!(r.status, 200, "HEAD newNonce");
        r.header(lancert_protocol::HEADER_REPLAY_NONCE)
            .unwrap_or_else(|| panic!("HEAD newNonce has no Replay-Nonce: {:?}", r.headers))
            .to_string()
    }

    /// A request body for `url` signed by `key` with a fresh nonce.
    pub fn sign(&self, key: &SigningKey, who: Who<'_>, url: &str, payload: Option<&Value>) -> Vec<u8> {
        sign(key, &self.nonce(), url, who, payload)
    }

    /// The enroll body for `token`, signed by `key` (protocol §6).
    pub fn enroll_body(&self, key: &SigningKey, token: &str) -> Vec<u8> {
        let payload = json!({"token": token, "agentVersion": "attacker"});
        self.sign(key, Who::Jwk, &self.dir.enroll, Some(&payload))
    }

    /// Enrolls a fresh identity key with `token`; panics unless the server
    /// answers 201.
    pub fn enroll(&self, token: &str) -> Identity {
        let (key_pair, key) = new_key();
        let r = self.post(&self.dir.enroll, &self.enroll_body(&key, token));
        assert_eq!(r.status, 201, "enrolling: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        Identity {
            key,
            key_pair,
            kid: v["device"].as_str().expect("device id").to_string(),
            hostname: v["hostname"].as_str().expect("hostname").to_string(),
        }
    }

    /// The new-order body of `id` for `csr` (protocol §8.1).
    pub fn order_body(&self, id: &Identity, csr: &[u8]) -> Vec<u8> {
        let payload = json!({"csr": base64url::encode(csr)});
        self.sign(&id.key, Who::Kid(&id.kid), &self.dir.new_order, Some(&payload))
    }

    /// Sends a new order of `id` for `csr`.
    pub fn order(&self, id: &Identity, csr: &[u8]) -> HttpResponse {
        self.post(&self.dir.new_order, &self.order_body(id, csr))
    }

    /// A POST-as-GET of `url` by `id`.
    pub fn post_as_get(&self, id: &Identity, url: &str) -> HttpResponse {
        self.post(url, &self.sign(&id.key, Who::Kid(&id.kid), url, None))
    }

    /// The status-report body of `id` (protocol §10).
    pub fn status_body(&self, id: &Identity, report: &Value) -> Vec<u8> {
        self.sign(&id.key, Who::Kid(&id.kid), &self.dir.status, Some(report))
    }

    /// The whole legitimate flow of `id`: a fresh P-256 key, a CSR naming
    /// its hostname, the order, polling, the download. Returns the PEM
    /// chain after checking that its leaf names the hostname.
    pub fn obtain_certificate(&self, id: &Identity) -> Vec<u8> {
        let cert_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let r = self.order(id, &csr(&cert_key, &[&id.hostname], Some(&id.hostname)));
        assert!(
            r.status == 201 || r.status == 202,
            "legitimate order: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let order_url = r.header("Location").expect("order Location").to_string();
        let deadline = Instant::now() + ORDER_TIMEOUT;
        let mut order = r.json();
        while order["status"] == "processing" {
            assert!(
                Instant::now() < deadline,
                "order still processing after {ORDER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
            let r = self.post_as_get(id, &order_url);
            assert!(r.status == 200 || r.status == 202, "polling: {}", r.status);
            order = r.json();
        }
        assert_eq!(order["status"], "valid", "legitimate order: {order}");
        let cert_url = order["certificate"].as_str().expect("certificate URL").to_string();
        let r = self.post_as_get(id, &cert_url);
        assert_eq!(r.status, 200, "download: {}", String::from_utf8_lossy(&r.body));
        let certs = crate::tls::pem_certs(&r.body);
        let leaf = crate::tls::CertInfo::parse(certs.first().expect("a leaf"));
        assert_eq!(leaf.dns_names, std::slice::from_ref(&id.hostname), "leaf names");
        r.body
    }

    /// A TLS connection to the server, handshake done.
    pub fn connect(&self) -> StreamOwned<ClientConnection, TcpStream> {
        connect(self.port, HOST, self.tls.clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends `head` (the request line and header lines, each ending in
    /// CRLF, without the empty line that ends them) and then `body_len` bytes in pieces of `piece` bytes every
    /// `interval`, as `Transfer-Encoding: chunked` when `chunked`, reading
    /// the server's answer between pieces. Stops sending when the server
    /// answers or stops taking bytes, and returns what it answered.
    pub fn stream_body(
        &self,
        head: &str,
        body_len: usize,
        piece: usize,
        interval: Duration,
        chunked: bool,
    ) -> Streamed {
        let started = Instant::now();
        let mut tls = self.connect();
        let mut out = Streamed {
            response: None,
            sent: 0,
            write_error: None,
            elapsed: Duration::ZERO,
        };
        let mut head = head.to_string();
        if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).expect("sending the request head");
        tls.sock.set_nonblocking(true).expect("non-blocking socket");
        let data = vec![b'A'; piece];
        let mut received = Vec::new();
        let mut eof = false;
        while out.sent < body_len && out.write_error.is_none() && received.is_empty() && !eof {
            let n = piece.min(body_len - out.sent);
            let mut framed = Vec::with_capacity(n + 16);
            if chunked {
                framed.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                framed.extend_from_slice(&data[..n]);
                framed.extend_from_slice(b"\r\n");
                if out.sent + n == body_len {
                    framed.extend_from_slice(b"0\r\n\r\n");
                }
            } else {
                framed.extend_from_slice(&data[..n]);
            }
            match push(&mut tls, &framed) {
                Ok(()) => out.sent += n,
                Err(e) => out.write_error = Some(e),
            }
            eof = pull(&mut tls, &mut received);
            std::thread::sleep(interval);
        }
        if !eof {
            received.extend(read_until_closed(&mut tls));
        }
        out.response = parse_response(&received).ok();
        out.elapsed = started.elapsed();
        out
    }
}

/// Writes `bytes` through TLS to a non-blocking socket, waiting while the
/// socket is full (up to [`CLIENT_TIMEOUT`]).
fn push(tls: &mut StreamOwned<ClientConnection, TcpStream>, bytes: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut rest = bytes;
    while !rest.is_empty() || tls.conn.wants_write() {
        if !rest.is_empty() {
            let n = tls.conn.writer().write(rest).map_err(|e| e.to_string())?;
            rest = &rest[n..];
        }
        match tls.conn.write_tls(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("the server took no bytes for 10 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Everything the server sends until it closes the connection (at most
/// [`CLIENT_TIMEOUT`]). Unlike `read_to_end` on the stream, this does not
/// first try to flush what the server no longer takes.
fn read_until_closed(tls: &mut StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    let mut received = Vec::new();
    tls.sock.set_nonblocking(true).expect("non-blocking socket");
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while !pull(tls, &mut received) {
        assert!(
            Instant::now() < deadline,
            "the server did not close within {CLIENT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    received
}

/// Reads what the server sent so far into `into`; true once it closed.
fn pull(tls: &mut StreamOwned<ClientConnection, TcpStream>, into: &mut Vec<u8>) -> bool {
    loop {
        match tls.conn.read_tls(&mut tls.sock) {
            Ok(0) => {
                let _ = tls.conn.process_new_packets();
                let _ = tls.conn.reader().read_to_end(into);
                return true;
            }
            Ok(_) => {
                if tls.conn.process_new_packets().is_err() {
                    return true;
                }
                match tls.conn.reader().read_to_end(into) {
                    Ok(_) => return true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return true,
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// What [`Attacker::stream_body`] saw.
#[derive(Debug)]
pub struct Streamed {
    /// The server's answer, if one came.
    pub response: Option<HttpResponse>,
    /// Body bytes handed to the connection before the server answered or
    /// stopped taking them.
    pub sent: usize,
    /// Why sending stopped early, if it did.
    pub write_error: Option<String>,
    /// From connecting to the end of the answer.
    pub elapsed: Duration,
}

/// A fresh P-256 key, as rcgen and as p256 see it.
pub fn new_key() -> (KeyPair, SigningKey) {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key");
    let key = SigningKey::from_pkcs8_der(&pair.serialize_der()).expect("rcgen's PKCS#8 is a P-256 key");
    (pair, key)
}

/// A JWS body exactly as the agent builds it (`agent/src/client.rs`,
/// `Client::post`): `nonce`, `url`, then `jwk` or `kid` in the protected
/// header, the payload JSON as text (none for POST-as-GET).
pub fn sign(key: &SigningKey, nonce: &str, url: &str, who: Who<'_>, payload: Option<&Value>) -> Vec<u8> {
    let mut protected = Map::new();
    protected.insert("nonce".into(), nonce.into());
    protected.insert("url".into(), url.into());
    match who {
        Who::Jwk => protected.insert("jwk".into(), jws::jwk(key.verifying_key())),
        Who::Kid(kid) => protected.insert("kid".into(), kid.into()),
    };
    let payload = payload.map(|p| p.to_string().into_bytes());
    jws::sign(key, protected, payload.as_deref())
}

/// `body` (a flattened JWS) with its signature's byte `index` flipped.
pub fn flip_signature_byte(body: &[u8], index: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).expect("JWS JSON");
    let mut sig = base64url::decode(v["signature"].as_str().expect("signature")).expect("base64url");
    sig[index] ^= 0x01;
    v["signature"] = base64url::encode(&sig).into();
    v.to_string().into_bytes()
}

/// The decoded protected header of a JWS body.
pub fn protected_header(body: &[u8]) -> Map<String, Value> {
    let v: Value = serde_json::from_slice(body).expect("JWS JSON");
    let raw = base64url::decode(v["protected"].as_str().expect("protected")).expect("base64url");
    match serde_json::from_slice(&raw) {
        Ok(Value::Object(m)) => m,
        other => panic!("protected header is not an object: {other:?}"),
    }
}

/// A DER CSR signed by `key` naming `sans` (strings that parse as IP
/// addresses become IP SANs) with subject CN `cn`, if given.
pub fn csr(key: &KeyPair, sans: &[&str], cn: Option<&str>) -> Vec<u8> {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("CSR names");
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.serialize_request(key).expect("signing the CSR").der().to_vec()
}

/// `der` with its `certificationRequestInfo` changed by `change` and signed
/// again (ecdsa-with-SHA256) by `signer`, which need not be the CSR's key.
pub fn resign_csr(
    der: &[u8],
    signer: &SigningKey,
    change: impl FnOnce(&mut x509_cert::request::CertReqInfo),
) -> Vec<u8> {
    use p256::ecdsa::signature::Signer;
    use x509_cert::der::asn1::BitString;
    use x509_cert::der::{Decode, Encode};
    let mut req = x509_cert::request::CertReq::from_der(der).expect("CSR parses");
    change(&mut req.info);
    let info = req.info.to_der().expect("CSR info encodes");
    let sig: p256::ecdsa::Signature = signer.sign(&info);
    req.signature = BitString::from_bytes(sig.to_der().as_bytes()).expect("signature bits");
    req.to_der().expect("CSR encodes")
}

/// A throwaway RSA-2048 key (ring, rcgen's backend here, cannot generate
/// RSA keys; made with `openssl genpkey -algorithm RSA -pkeyopt
/// rsa_keygen_bits:2048`). Only ever used to sign test CSRs.
const RSA_2048_PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDHLLpMzMopPAli
HdlSY4xIWNfEqru2cClZw5T3fpTQ8KGn3gO9lVdmOjsTCU1kHVLynW6SVd81YpEi
l1eH02hPVmwpmwrMVkh2TyLwSCILJO08jijJ6xYyDtxdJ8nkIjnADqDMmyivhIar
QpNKcgdk1PpCdELsoR1jFCiC73dN2QXWKaiSUZbsRwhg4AAmcbw2qdfsRTrXN1YS
dkDnjFyGix0iuiF54/oQXdWbzk37JQzaQKUK5Ed5CjpLPYbzDH6KOl5N++9cwWvk
MHWd1/DDXxgV3NxOEcfNOlAnVr4/q5yY2477/NnhtGrjHVPUoxcm8aVhcv8OOkoQ
bA69Bf2XAgMBAAECggEAB8hT/T5jkUVVNWLCMemW33P2ZBiq5y2JyBhZHCJO/wYw
B2/xv1R0L3NU5Jfi0MMjI6p4IvGGLpp5lS3K2P8Kp+CtipCkjAPhFIk7NuegXFeL
ZUNqMeIt61gZvO3RAhJi3EsWCGZezvfDoMR/jCXHNJyjPwMSGheh1fic4zKVMpwX
lmIHZP138HKk3qIyHsBNhpnMmRyv9g6/GYwHDHAsorOM25jM8d9J9ngaHQoDofSL
JXd+EqTcyPu1m0NUcTPIh9B9zMnUY9vkRmiVvWPx4NMn2D/5i1PVC1ZPtkKKHpIl
ZFeycxF00qPLniqeq06yqFt5P/MaEcDmeoDO9DrdaQKBgQD97+tLlqeE0K9Hj/E8
RDU67cyL0yRWt5JWBiCgsZ0qiQHzz5i8wshpiAJhI1pNRhx+9OvI73hVCRmW/4gF
JclfAlSNJ8nLcLbdIwBaebQhfnbJHnWbZ73i1aqSaP4z0mqDN+HXDbMErfEzrPMX
9oSCZECh7Wu24GF7NuvqXJjgOQKBgQDIyu0TIBEeGvaVzwiq5Y6sbIOMOu6y/iX5
MxL6xaOuuL7WyuC7A6zSfJGUgPO5ltULr0xojriovVaVVNOtYMmHsj1bdRSCmHXM
CqEe68npDkOBobnrj1o73cUBcbc1ns4uVKYfQEtJP/RCtGjcEZEkbNj4FfjexM25
UrEaT8csTwKBgQCIyQGv19kou9iO7cR+OCeMNKfn8bYzV/Llj6tnpAUK8n4wvPSD
SVD3N6JAfPCZi1iyMnAH7qac96fnJII6c55DJVgyKOqUQYTfHYmFMuWK3TpTH6su
KPWqCHo3H4M+mutw/1sRonl53dB9i33uvIWoTyRZlTBedANOgckWlwZqUQKBgAMV
ClqWzWx24X4fNXTaHTyMVeCbLvrUZ+TRYeMzkXWnJFbLunNkdQyuGNX8vMEGjbKm
ODgKqM7+SQv1x2IL8EwC8moq++udR4GgUCTXXbwUGfktcFsrUilFGDcTdcp+649O
gVZNeFphfvBfMJTgOCgk+5ejTrSstLO5jzpmKxqFAoGAYzN130lhX8Xvjs2N5/8v
uVxOflS+q7f48n3qTpFm2XP2uO11k55oGQkLa7Q6O9q7m5RZYa17Ju5EpqeYhd64
0NEE8OFPEdg2pi1D+jZ90zde4kc7Gx4SZQ101uGtY62gRvPMLWo2Zkb58VsiWwR+
KIdJ8bk/i1hrskBn18HI/Rk=
-----END PRIVATE KEY-----
";

/// `RSA_2048_PKCS8_PEM` as an rcgen key (RSA PKCS#1 v1.5 with SHA-256).
pub fn rsa_2048_key() -> KeyPair {
    KeyPair::from_pem(RSA_2048_PKCS8_PEM).expect("the RSA test key loads")
}

/// Panics unless `r` is the problem `kind` (`badNonce`, ...) with HTTP
/// `status`, as protocol §9 specifies it; returns its `detail`.
#[track_caller]
pub fn assert_problem(r: &HttpResponse, status: u16, kind: &str) -> String {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "expected {status} {kind}, got {} {body}", r.status);
    let ct = r.header("Content-Type").unwrap_or_default();
    assert!(
        ct.starts_with(lancert_protocol::CONTENT_TYPE_PROBLEM),
        "Content-Type {ct:?} of {body}"
    );
    let v = r.json();
    assert_eq!(
        v["type"],
        format!("urn:lancert:problem:{kind}"),
        "problem type of {body}"
    );
    v["detail"].as_str().unwrap_or_default().to_string()
}

/// Every row of every table of the server's database, as text: what the
/// server keeps. Two equal snapshots mean a request changed nothing that
/// lasts (the nonce store, in memory, is the only other state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshot(BTreeMap<String, Vec<String>>);

impl DbSnapshot {
    /// Reads the database of `server` (read-only, beside the running server,
    /// as the admin commands do).
    pub fn take(server: &Server) -> DbSnapshot {
        use rusqlite::{Connection, OpenFlags};
        let path = server.data_dir().join("lancert.sqlite3");
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
        let mut tables = BTreeMap::new();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("listing tables");
        for name in names {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).expect("select");
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    (0..columns)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|cells| cells.join(" | "))
                })
                .and_then(|rows| rows.collect())
                .unwrap_or_else(|e| panic!("reading table {name}: {e}"));
            rows.sort();
            tables.insert(name, rows);
        }
        DbSnapshot(tables)
    }

    /// The rows of `table`.
    pub fn rows(&self, table: &str) -> &[String] {
        self.0.get(table).map(Vec::as_slice).unwrap_or_default()
    }

    /// Panics, naming the rows that differ, unless `server`'s database still
    /// equals this snapshot.
    #[track_caller]
    pub fn assert_unchanged(&self, server: &Server, after: &str) {
        let now = DbSnapshot::take(server);
        if now == *self {
            return;
        }
        let mut diff = String::new();
        for (table, rows) in &now.0 {
            let before = self.rows(table);
            for r in rows.iter().filter(|r| !before.contains(r)) {
                diff.push_str(&format!("+ {table}: {r}\n"));
            }
            for r in before.iter().filter(|r| !rows.contains(r)) {
                diff.push_str(&format!("- {table}: {r}\n"));
            }
        }
        panic!("the server's database changed after {after}:\n{diff}");
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}"))
}

/// The number of open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("listing /proc/{pid}/fd: {e}"))
}

/// A connection the attacker holds open without finishing what it started.
pub enum Conn {
    /// TCP only: the TLS handshake is not (or only partly) sent.
    Tcp(TcpStream),
    /// TLS done; HTTP not (or only partly) sent.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// A TCP connection to 127.0.0.1:`port` that sends nothing.
    pub fn silent_tcp(port: u16) -> Conn {
        Conn::Tcp(tcp(port))
    }

    /// A TCP connection that sends the first half of a real ClientHello
    /// and stops.
    pub fn half_client_hello(attacker: &Attacker) -> Conn {
        let mut conn = ClientConnection::new(attacker.tls.clone(), ServerName::try_from(HOST).expect("SNI"))
            .expect("client connection");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("ClientHello");
        let mut sock = tcp(attacker.port);
        sock.write_all(&hello[..hello.len() / 2])
            .expect("sending half a ClientHello");
        Conn::Tcp(sock)
    }

    /// A TLS connection with the handshake done that sends nothing.
    pub fn silent_tls(attacker: &Attacker) -> Conn {
        Conn::Tls(Box::new(attacker.connect()))
    }

    /// Sends `bytes`; false if the connection is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        match self {
            Conn::Tcp(s) => s.write_all(bytes).is_ok(),
            Conn::Tls(t) => {
                t.conn.writer().write_all(bytes).is_ok()
                    && loop {
                        match t.conn.write_tls(&mut t.sock) {
                            Ok(_) if t.conn.wants_write() => {}
                            Ok(_) => break true,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                            Err(_) => break false,
                        }
                    }
            }
        }
    }

    /// Whether the server closed the connection (checked without blocking;
    /// anything the server sent is read and dropped).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        match self {
            Conn::Tcp(s) => {
                s.set_nonblocking(true).expect("non-blocking");
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return true,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                        Err(_) => return true,
                    }
                }
            }
            Conn::Tls(t) => {
                t.sock.set_nonblocking(true).expect("non-blocking");
                let mut sink = Vec::new();
                pull(t, &mut sink)
            }
        }
    }
}

fn tcp(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// Many misbehaving connections held at once: each may trickle bytes (one
/// per [`Flood::step`]), and each one's lifetime is recorded when the
/// server closes it.
pub struct Flood {
    held: Vec<Held>,
}

struct Held {
    conn: Conn,
    trickle: Vec<u8>,
    sent: usize,
    opened: Instant,
    closed_after: Option<Duration>,
}

impl Default for Flood {
    fn default() -> Self {
        Flood::new()
    }
}

impl Flood {
    /// No connections yet.
    pub fn new() -> Flood {
        Flood { held: Vec::new() }
    }

    /// Holds `conn`, sending the bytes of `trickle` one per step.
    pub fn add(&mut self, conn: Conn, trickle: &[u8]) {
        self.held.push(Held {
            conn,
            trickle: trickle.to_vec(),
            sent: 0,
            opened: Instant::now(),
            closed_after: None,
        });
    }

    /// Sends the next trickled byte on every open connection and notes the
    /// ones the server closed.
    pub fn step(&mut self) {
        for h in self.held.iter_mut().filter(|h| h.closed_after.is_none()) {
            let mut gone = false;
            if h.sent < h.trickle.len() {
                gone = !h.conn.send(&h.trickle[h.sent..h.sent + 1]);
                h.sent += 1;
            }
            if gone || h.conn.is_closed() {
                h.closed_after = Some(h.opened.elapsed());
            }
        }
    }

    /// How many connections the server has not closed yet.
    pub fn open(&self) -> usize {
        self.held.iter().filter(|h| h.closed_after.is_none()).count()
    }

    /// How long each connection lived (`None`: still open).
    pub fn lifetimes(&self) -> Vec<Option<Duration>> {
        self.held.iter().map(|h| h.closed_after).collect()
    }

    /// Bytes trickled on each connection before it was closed.
    pub fn trickled(&self) -> Vec<usize> {
        self.held.iter().map(|h| h.sent).collect()
    }
}
