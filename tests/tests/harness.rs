//! Self-tests of the harness: the evil server and nginx work without the
//! binaries under test, so a failure elsewhere is the agent's or server's.

use lancert_protocol::jws;
use lancert_tests::tls::{self, CertInfo, HttpResponse};
use lancert_tests::{self_signed, EvilServer, Mode, Nginx, TestCa, TestEnv, EVIL_HOSTNAME, HUGE_BODY_BYTES};
use serde_json::{json, Map, Value};
use std::path::Path;

/// A minimal protocol client: what the agent does, without its checks.
struct Client {
    evil_port: u16,
    ca: Vec<u8>,
    key: p256::ecdsa::SigningKey,
    base: String,
}

impl Client {
    fn new(evil: &EvilServer) -> Client {
        Client {
            evil_port: evil.port(),
            ca: evil.ca_pem().as_bytes().to_vec(),
            key: p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap(),
            base: evil.url(),
        }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<HttpResponse, String> {
        tls::https_request(
            self.evil_port,
            "127.0.0.1",
            tls::verifying_config(&self.ca),
            method,
            path,
            body,
        )
    }

    fn nonce(&self) -> String {
        let r = self.request("HEAD", "/v1/nonce", b"").unwrap();
        assert_eq!(r.status, 200);
        r.header("Replay-Nonce").expect("nonce header").to_string()
    }

    fn post(&self, url: &str, payload: Option<&Value>) -> HttpResponse {
        let path = url.strip_prefix(&self.base).expect("URL on the evil server");
        let mut h = Map::new();
        h.insert("nonce".into(), self.nonce().into());
        h.insert("url".into(), url.into());
        h.insert("kid".into(), "evil-1".into());
        let p = payload.map(|p| p.to_string().into_bytes());
        let body = jws::sign(&self.key, h, p.as_deref());
        self.request("POST", path, &body).unwrap()
    }

    /// Orders a certificate for a new key; returns (CSR key SPKI, response
    /// of the new order, download response if the order was JSON).
    fn order(&self) -> (Vec<u8>, HttpResponse, Option<HttpResponse>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec![EVIL_HOSTNAME.to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        let csr_b64 = lancert_protocol::base64url::encode(csr.der());
        let order = self.post(&format!("{}/v1/orders", self.base), Some(&json!({"csr": csr_b64})));
        let download = serde_json::from_slice::<Value>(&order.body)
            .ok()
            .map(|o| self.post(o["certificate"].as_str().unwrap(), None));
        (rcgen::PublicKeyData::subject_public_key_info(&key), order, download)
    }
}

#[test]
fn evil_server_answers_the_directory_over_verified_tls() {
    let env = TestEnv::new("harness-directory");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let client = Client::new(&evil);
    let r = client.request("GET", "/v1/directory", b"").unwrap();
    assert_eq!(r.status, 200);
    let dir = r.json();
    assert_eq!(dir["meta"]["protocol"], 1);
    assert_eq!(dir["newOrder"], format!("{}/v1/orders", evil.url()));
    let s = evil.stats();
    assert_eq!((s.connections, s.requests), (1, 1));
    assert!(s.bytes_in > 0 && s.bytes_out > 0);
    // The CA file the agent is given is the one the TLS chain verifies to.
    assert_eq!(std::fs::read_to_string(evil.ca_path()).unwrap(), evil.ca_pem());
}

#[test]
fn evil_server_modes_issue_what_they_promise() {
    let env = TestEnv::new("harness-modes");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let client = Client::new(&evil);
    let now = lancert_tests::unix_now();

    let (spki, order, download) = client.order();
    assert_eq!(order.status, 201);
    assert!(order.header("Location").is_some());
    let chain = download.unwrap();
    assert_eq!(chain.status, 200);
    let certs = tls::pem_certs(&chain.body);
    assert_eq!(certs.len(), 2, "leaf and intermediate");
    let leaf = CertInfo::parse(&certs[0]);
    assert_eq!(leaf.spki, spki, "Good: leaf for the CSR key");
    assert_eq!(leaf.dns_names, vec![EVIL_HOSTNAME]);
    assert!(leaf.not_after - now < 11 * 86_400, "Good: due for renewal");

    evil.set_mode(Mode::GoodFresh);
    let leaf = CertInfo::parse(&tls::pem_certs(&client.order().2.unwrap().body)[0]);
    assert!(leaf.not_after - now > 80 * 86_400, "GoodFresh: not due");

    evil.set_mode(Mode::WrongKey);
    let (spki, _, d) = client.order();
    assert_ne!(CertInfo::parse(&tls::pem_certs(&d.unwrap().body)[0]).spki, spki);

    evil.set_mode(Mode::WrongName);
    let leaf = CertInfo::parse(&tls::pem_certs(&client.order().2.unwrap().body)[0]);
    assert_ne!(leaf.dns_names, vec![EVIL_HOSTNAME]);

    evil.set_mode(Mode::Expired);
    assert!(CertInfo::parse(&tls::pem_certs(&client.order().2.unwrap().body)[0]).not_after < now);

    evil.set_mode(Mode::NotYetValid);
    assert!(CertInfo::parse(&tls::pem_certs(&client.order().2.unwrap().body)[0]).not_before > now);

    evil.set_mode(Mode::UntrustedChain);
    let leaf = CertInfo::parse(&tls::pem_certs(&client.order().2.unwrap().body)[0]);
    assert!(leaf.issuer.contains("Untrusted"), "{}", leaf.issuer);

    evil.set_mode(Mode::GarbagePem);
    let body = client.order().2.unwrap().body;
    assert!(body.starts_with(b"-----BEGIN CERTIFICATE-----\nThis is not"));

    evil.set_mode(Mode::HugeBody);
    assert!(client.order().2.unwrap().body.len() >= HUGE_BODY_BYTES);

    evil.set_mode(Mode::InvalidJson);
    let (_, order, download) = client.order();
    assert_eq!(order.status, 201);
    assert!(download.is_none(), "InvalidJson: the order is not JSON");

    evil.set_mode(Mode::Down);
    let err = client.request("GET", "/v1/directory", b"").unwrap_err();
    assert!(err.contains("refused"), "{err}");

    evil.set_mode(Mode::Good);
    assert_eq!(
        client.request("GET", "/v1/directory", b"").unwrap().status,
        200,
        "back up"
    );
    assert_eq!(evil.orders(), 10);
}

#[test]
fn evil_server_stall_holds_the_order_request() {
    let env = TestEnv::new("harness-stall");
    let evil = EvilServer::start(env.dir(), Mode::Stall);
    let ca = evil.ca_pem().as_bytes().to_vec();
    let port = evil.port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = tls::https_request(
            port,
            "127.0.0.1",
            tls::verifying_config(&ca),
            "POST",
            "/v1/orders",
            b"{}",
        );
        let _ = tx.send(r.map(|r| r.status));
    });
    // The body is not a JWS, so the order is refused before stalling...
    let r = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(r, Ok(400));
    // ...while a real order is held.
    let client = Client::new(&evil);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client.order().1.status);
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(3)).is_err(),
        "Stall answered"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn nginx_serves_reloads_and_stops() {
    let env = TestEnv::new("harness-nginx");
    let (key, fullchain) = (env.path("tls/device.key"), env.path("tls/fullchain.pem"));
    let (cert_pem, key_pem) = self_signed(&["device.example.test"]);
    write(&key, &key_pem);
    write(&fullchain, &cert_pem);
    let nginx = Nginx::configure(&env, &key, &fullchain);
    nginx.start();
    let first = tls::pem_certs(cert_pem.as_bytes()).remove(0);
    assert_eq!(nginx.served_leaf("device.example.test"), first);
    // A self-signed certificate does not verify against an unrelated CA.
    let ca = TestCa::new("Nginx Test");
    assert!(tls::served_chain_verifies(nginx.port(), "device.example.test", ca.root_pem().as_bytes()).is_err());

    // Replace the files and reload: the new chain is served and verifies.
    let now = lancert_tests::unix_now();
    let (chain, key_pem) = ca.issue_with_new_key(&["device.example.test"], now - 60, now + 3600);
    write(&key, &key_pem);
    write(&fullchain, &chain);
    nginx.reload();
    let second = tls::pem_certs(chain.as_bytes()).remove(0);
    nginx.wait_serving("device.example.test", &second);
    tls::served_chain_verifies(nginx.port(), "device.example.test", ca.root_pem().as_bytes()).unwrap();
    let r = tls::https_request(
        nginx.port(),
        "device.example.test",
        tls::verifying_config(ca.root_pem().as_bytes()),
        "GET",
        "/",
        b"",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"lancert test nginx\n"[..]));

    nginx.stop();
    assert!(!nginx.is_running());
}

#[test]
fn nginx_reload_command_starts_then_reloads() {
    let env = TestEnv::new("harness-nginx-reload-command");
    let (key, fullchain) = (env.path("tls/device.key"), env.path("tls/fullchain.pem"));
    let nginx = Nginx::configure(&env, &key, &fullchain);
    let run_reload = || {
        let cmd = nginx.reload_command();
        let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
        lancert_tests::run(Path::new(&cmd[0]), &args, std::time::Duration::from_secs(10))
    };
    // No files yet: the command fails, as the agent must notice.
    assert_ne!(run_reload().code, Some(0));
    let (cert_pem, key_pem) = self_signed(&["a.example.test"]);
    write(&key, &key_pem);
    write(&fullchain, &cert_pem);
    run_reload().assert_code(0);
    nginx.wait_running();
    assert_eq!(
        nginx.served_leaf("a.example.test"),
        tls::pem_certs(cert_pem.as_bytes())[0]
    );
    let (cert_pem, key_pem) = self_signed(&["a.example.test"]);
    write(&key, &key_pem);
    write(&fullchain, &cert_pem);
    run_reload().assert_code(0);
    nginx.wait_serving("a.example.test", &tls::pem_certs(cert_pem.as_bytes())[0]);
}
