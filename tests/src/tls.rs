//! TLS clients that ask a port which certificate it serves, and certificate
//! inspection.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use x509_cert::der::{Decode, Encode};

/// Connect, read and write limit of the harness's TLS clients: 10 s.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The one crypto provider of the workspace (rustls is built with `ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate: used only to see which leaf a port presents.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_config() -> Arc<ClientConfig> {
    let provider = provider();
    Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth(),
    )
}

/// A client configuration trusting only the certificates in `ca_pem`.
pub fn verifying_config(ca_pem: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.expect("CA PEM parses"))
            .expect("CA certificate accepted as root");
    }
    assert!(!roots.is_empty(), "no certificate in the CA PEM");
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects to 127.0.0.1:`port` and completes a TLS handshake with `sni`.
pub fn connect(
    port: u16,
    sni: &str,
    config: Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let sock = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).map_err(|e| format!("connecting to {addr}: {e}"))?;
    sock.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("SNI {sni:?}: {e}"))?;
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake with {addr} (SNI {sni}): {e}"))?;
    }
    Ok(tls)
}

/// The leaf certificate (DER) that 127.0.0.1:`port` presents for `sni`,
/// whatever it is (the handshake accepts any certificate).
pub fn served_leaf(port: u16, sni: &str) -> Result<Vec<u8>, String> {
    let tls = connect(port, sni, insecure_config())?;
    let certs = tls.conn.peer_certificates().ok_or("server sent no certificate")?;
    Ok(certs.first().ok_or("server sent an empty chain")?.to_vec())
}

/// Whether the chain 127.0.0.1:`port` serves for `sni` verifies, for the
/// name `sni`, to the roots in `ca_pem`, as a real client checks it.
pub fn served_chain_verifies(port: u16, sni: &str, ca_pem: &[u8]) -> Result<(), String> {
    connect(port, sni, verifying_config(ca_pem)).map(|_| ())
}

/// An HTTP response as the harness's client reads it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, `Name: value`.
    pub headers: Vec<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one HTTP/1.1 request over TLS (`Connection: close`) and reads the
/// response until the server closes.
pub fn https_request(
    port: u16,
    sni: &str,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HttpResponse, String> {
    let mut tls = connect(port, sni, config)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {sni}:{port}\r\nConnection: close\r\n").into_bytes();
    if !body.is_empty() {
        req.extend_from_slice(
            format!(
                "Content-Type: application/jose+json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    tls.write_all(&req).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        // Servers that close without close_notify: keep what arrived.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("reading response: {e}")),
    }
    parse_response(&buf)
}

/// Parses an HTTP/1.1 response read until the server closed: status line,
/// headers, and everything after them as the body.
pub fn parse_response(buf: &[u8]) -> Result<HttpResponse, String> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("response has no header end")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok(HttpResponse {
        status,
        headers: lines.map(String::from).collect(),
        body: buf[split + 4..].to_vec(),
    })
}

/// The certificates (DER) in a PEM text, in order.
pub fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("PEM certificate parses").to_vec())
        .collect()
}

/// The first certificate (DER) of a PEM file.
pub fn first_cert_of_file(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    pem_certs(&pem)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{} holds no certificate", path.display()))
}

/// What the tests look at in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex of its DER content bytes.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The dNSName entries of the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// Subject, RFC 4514 text.
    pub subject: String,
    /// Issuer, RFC 4514 text.
    pub issuer: String,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> CertInfo {
        let cert = x509_cert::Certificate::from_der(der).expect("certificate DER parses");
        let tbs = cert.tbs_certificate();
        let serial = tbs
            .serial_number()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut dns_names = Vec::new();
        for ext in tbs.extensions().into_iter().flatten() {
            if ext.extn_id.to_string() == "2.5.29.17" {
                let san =
                    x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes()).expect("SAN parses");
                for name in san.0 {
                    if let x509_cert::ext::pkix::name::GeneralName::DnsName(d) = name {
                        dns_names.push(d.to_string());
                    }
                }
            }
        }
        CertInfo {
            serial,
            not_before: tbs.validity().not_before.to_unix_duration().as_secs() as i64,
            not_after: tbs.validity().not_after.to_unix_duration().as_secs() as i64,
            dns_names,
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            spki: tbs.subject_public_key_info().to_der().expect("SPKI encodes"),
        }
    }

    /// Parses the first certificate of a PEM file.
    pub fn of_file(path: &std::path::Path) -> CertInfo {
        CertInfo::parse(&first_cert_of_file(path))
    }
}
