//! End-to-end tests of `lancert-server`: the real binary on loopback, real
//! TLS trusting the `ca.pem` it creates, and a small signing client built
//! from `lancert-protocol` and ureq.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lancert_protocol::{base64url, jws};
use p256::ecdsa::SigningKey;
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_lancert-server");
const ZONE: &str = "devices.example.com";

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("lancert-server-it-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path, issuer: Value, extra: Value) -> Server {
        let port = free_port();
        let config = dir.join("server.json");
        let mut cfg = json!({
            "listen": format!("127.0.0.1:{port}"),
            "data_dir": dir.join("data"),
            "zone": ZONE,
            "issuer": issuer,
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        std::fs::write(&config, cfg.to_string()).unwrap();
        let mut s = Server {
            dir: dir.to_path_buf(),
            config,
            port,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                if line.starts_with("listening on https://") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(Duration::from_secs(30)).expect("server did not start");
    }

    /// Stops with SIGTERM and checks the exit is clean.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "server exit status {status}");
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("server did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(BIN)
            .arg(args[0])
            .arg("--config")
            .arg(&self.config)
            .args(&args[1..])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{args:?}: {stderr}");
        assert!(out.status.code().is_some(), "{stderr}");
        (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap())
    }

    fn token(&self, hostname: Option<&str>) -> String {
        let mut args = vec!["token"];
        if let Some(h) = hostname {
            args.extend(["--hostname", h]);
        }
        let (code, out) = self.cli(&args);
        assert_eq!(code, 0);
        out.trim().to_string()
    }

    fn json_cli(&self, args: &[&str]) -> Value {
        let (code, out) = self.cli(args);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    fn problem(&self) -> String {
        assert_eq!(self.header("content-type").as_deref(), Some("application/problem+json"));
        self.json()["type"].as_str().unwrap().to_string()
    }
}

struct Client {
    http: ureq::Agent,
    key: SigningKey,
    kid: Option<String>,
    directory: Value,
    nonce: Option<String>,
}

fn http_agent(ca_pem: &[u8]) -> ureq::Agent {
    let cert = ureq::tls::Certificate::from_pem(ca_pem).unwrap();
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

fn reply(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

impl Client {
    fn new(server: &Server, seed: u8) -> Client {
        let ca = std::fs::read(server.dir.join("data/ca.pem")).unwrap();
        let http = http_agent(&ca);
        let directory = reply(http.get(format!("{}/v1/directory", server.base())).call().unwrap()).json();
        Client {
            http,
            key: SigningKey::from_slice(&[seed; 32]).unwrap(),
            kid: None,
            directory,
            nonce: None,
        }
    }

    fn url(&self, name: &str) -> String {
        self.directory[name].as_str().unwrap().to_string()
    }

    fn fresh_nonce(&mut self) -> String {
        if let Some(n) = self.nonce.take() {
            return n;
        }
        let r = reply(self.http.head(self.url("newNonce")).call().unwrap());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        r.header("replay-nonce").unwrap()
    }

    fn signed_body(&mut self, url: &str, payload: Option<&Value>) -> Vec<u8> {
        let mut h = Map::new();
        h.insert("nonce".into(), self.fresh_nonce().into());
        h.insert("url".into(), url.into());
        match &self.kid {
            Some(kid) => h.insert("kid".into(), kid.clone().into()),
            None => h.insert("jwk".into(), jws::jwk(self.key.verifying_key())),
        };
        let payload = payload.map(|p| p.to_string().into_bytes());
        jws::sign(&self.key, h, payload.as_deref())
    }

    fn send_raw(&mut self, url: &str, content_type: &str, body: &[u8]) -> Reply {
        let r = reply(
            self.http
                .post(url)
                .header("content-type", content_type)
                .send(body)
                .unwrap(),
        );
        let nonce = r.header("replay-nonce");
        assert!(nonce.is_some(), "every POST response carries a nonce");
        self.nonce = nonce;
        r
    }

    fn post(&mut self, url: &str, payload: Option<&Value>) -> Reply {
        let body = self.signed_body(url, payload);
        self.send_raw(url, "application/jose+json", &body)
    }

    fn enroll(&mut self, token: &str) -> Reply {
        let url = self.url("enroll");
        let r = self.post(&url, Some(&json!({"token": token, "agentVersion": "test"})));
        if r.status == 201 || r.status == 200 {
            self.kid = Some(r.json()["device"].as_str().unwrap().to_string());
        }
        r
    }

    fn order(&mut self, csr: &[u8]) -> Reply {
        let url = self.url("newOrder");
        self.post(&url, Some(&json!({"csr": base64url::encode(csr)})))
    }

    /// Polls an order until it is no longer processing.
    fn poll(&mut self, order_url: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.post(order_url, None);
            if r.status != 202 {
                return r;
            }
            let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!(Instant::now() < deadline, "order still processing");
            std::thread::sleep(Duration::from_secs(wait.min(2)));
        }
    }
}

fn csr(hostname: &str) -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

fn local_ca() -> Value {
    json!({"type": "local_ca", "validity_secs": 3600, "delay_secs": 0})
}

#[test]
fn enroll_publish_order_download_report_revoke() {
    let dir = temp_dir("flow");
    let mut server = Server::start(&dir, local_ca(), json!({}));
    let mut dev = Client::new(&server, 1);
    assert_eq!(dev.directory["meta"]["protocol"], 1);
    assert_eq!(dev.url("newOrder"), format!("{}/v1/orders", server.base()));

    // Enrollment: 201, then 200 for the same key; the token is single use.
    let token = server.token(None);
    let r = dev.enroll(&token);
    assert_eq!(r.status, 201, "{}", r.body);
    let hostname = r.json()["hostname"].as_str().unwrap().to_string();
    let label = hostname.strip_suffix(&format!(".{ZONE}")).unwrap();
    assert_eq!(label.len(), 5);
    dev.kid = None;
    let r = dev.enroll(&token);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["hostname"], hostname.as_str());
    let mut other = Client::new(&server, 2);
    assert_eq!(other.enroll(&token).problem(), "urn:lancert:problem:badToken");
    assert_eq!(other.enroll(&server.token(None)).status, 201);

    // Addresses.
    let url = dev.url("addresses");
    let r = dev.post(&url, Some(&json!({"ipv4": ["127.0.0.1", "10.1.1.4"], "ipv6": ["::1"]})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"hostname": hostname, "ipv4": ["127.0.0.1", "10.1.1.4"], "ipv6": ["::1"]})
    );
    let r = dev.post(&url, Some(&json!({"ipv4": ["224.0.0.1"], "ipv6": []})));
    assert_eq!(r.problem(), "urn:lancert:problem:rejectedAddress");
    let records = server.json_cli(&["records", "--hostname", &hostname]);
    assert_eq!(records.as_array().unwrap().len(), 3);
    assert_eq!(records[0], json!({"name": hostname, "type": "A", "value": "127.0.0.1"}));

    // Order, poll, download.
    let (cert_key, der) = csr(&hostname);
    let r = dev.order(&der);
    assert!(r.status == 202 || r.status == 201, "{}", r.body);
    let order_url = r.header("location").unwrap();
    assert!(order_url.starts_with(&format!("{}/v1/orders/", server.base())));
    if r.status == 202 {
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.json()["status"], "processing");
    }
    let r = dev.poll(&order_url);
    assert_eq!(r.status, 200);
    let order = r.json();
    assert_eq!(order["status"], "valid", "{order}");
    assert_eq!(order["hostname"], hostname.as_str());
    assert!(order.get("renewal").is_none());
    let cert_url = order["certificate"].as_str().unwrap().to_string();
    let r = dev.post(&cert_url, None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/pem-certificate-chain")
    );
    let chain = x509_cert::Certificate::load_pem_chain(r.body.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
    let spki = chain[0].tbs_certificate().subject_public_key_info();
    assert_eq!(spki.subject_public_key.raw_bytes(), cert_key.public_key_raw());

    // Other devices see nothing of it; bad CSRs are refused.
    assert_eq!(other.post(&order_url, None).problem(), "urn:lancert:problem:notFound");
    assert_eq!(other.post(&cert_url, None).problem(), "urn:lancert:problem:notFound");
    let (_, foreign) = csr(&hostname);
    assert_eq!(other.order(&foreign).problem(), "urn:lancert:problem:badCSR");

    // Status report, seen by the operator.
    let url = dev.url("status");
    let report = json!({"agentVersion": "test", "certificate": null, "addresses": {"ipv4": [], "ipv6": []},
                        "lastError": "boom", "lastErrorAt": "2026-11-23T20:01:00Z"});
    let r = dev.post(&url, Some(&report));
    assert_eq!((r.status, r.json()), (200, json!({})));
    let devices = server.json_cli(&["devices"]);
    let me = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["hostname"] == hostname.as_str())
        .unwrap();
    assert_eq!(me["status"]["lastError"], "boom");
    assert!(me["status"]["receivedAt"].is_string());
    assert_eq!(me["ipv4"], json!(["127.0.0.1", "10.1.1.4"]));
    assert_eq!(me["revoked"], false);

    // Replayed nonce, wrong content type, oversized body.
    let body = dev.signed_body(&url, Some(&report));
    assert_eq!(dev.send_raw(&url, "application/jose+json", &body).status, 200);
    let r = dev.send_raw(&url, "application/jose+json", &body);
    assert_eq!(r.problem(), "urn:lancert:problem:badNonce");
    let body = dev.signed_body(&url, Some(&report));
    assert_eq!(
        dev.send_raw(&url, "application/json", &body).problem(),
        "urn:lancert:problem:malformed"
    );
    // The server answers 413 without reading the rest, so the client may
    // see the connection closed while still sending.
    let big = vec![b' '; 70 * 1024];
    match dev
        .http
        .post(&url)
        .header("content-type", "application/jose+json")
        .send(&big[..])
    {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(ureq::Error::Io(e)) => eprintln!("oversized body: connection closed ({e})"),
        Err(e) => panic!("oversized body: {e}"),
    }

    // Revocation.
    let kid = dev.kid.clone().unwrap();
    let (code, _) = server.cli(&["revoke", "--device", &kid]);
    assert_eq!(code, 0);
    assert_eq!(
        dev.post(&url, Some(&report)).problem(),
        "urn:lancert:problem:unauthorized"
    );
    assert_eq!(server.json_cli(&["records", "--hostname", &hostname]), json!([]));

    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn orders_resume_after_restart_and_carry_renewal_windows() {
    let dir = temp_dir("restart");
    let issuer = json!({"type": "local_ca", "validity_secs": 3000, "delay_secs": 2});
    let extra = json!({"renewal_window": true, "retry_after_secs": 1});
    let mut server = Server::start(&dir, issuer.clone(), extra.clone());
    let ca_before = std::fs::read(dir.join("data/ca.pem")).unwrap();
    let mut dev = Client::new(&server, 3);
    let host = format!("box1.{ZONE}");
    assert_eq!(dev.enroll(&server.token(Some(&host))).json()["hostname"], host.as_str());
    let (_, der) = csr(&host);
    let r = dev.order(&der);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let order_url = r.header("location").unwrap();

    server.stop();
    server.spawn();
    assert_eq!(std::fs::read(dir.join("data/ca.pem")).unwrap(), ca_before, "CA reused");

    let mut dev = Client::new(&server, 3);
    assert_eq!(dev.enroll("ignored: key already enrolled").status, 200);
    let order = dev.poll(&order_url).json();
    assert_eq!(order["status"], "valid", "{order}");
    let start = lancert_protocol::time::parse_rfc3339(order["renewal"]["start"].as_str().unwrap()).unwrap();
    let end = lancert_protocol::time::parse_rfc3339(order["renewal"]["end"].as_str().unwrap()).unwrap();
    assert!(end > start);

    // The status report for that certificate gets the same window back.
    let cert_url = order["certificate"].as_str().unwrap().to_string();
    let pem = dev.post(&cert_url, None).body;
    let chain = x509_cert::Certificate::load_pem_chain(pem.as_bytes()).unwrap();
    let serial: String = chain[0]
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let url = dev.url("status");
    let r = dev.post(
        &url,
        Some(
            &json!({"agentVersion": "t", "certificate": {"serial": serial, "notAfter": "2030-01-01T00:00:00Z"},
                     "addresses": {"ipv4": [], "ipv6": []}, "lastError": null, "lastErrorAt": null}),
        ),
    );
    assert_eq!(r.json()["renewal"], order["renewal"]);

    // The per-device order limit (5 per hour).
    let mut limited = None;
    for _ in 0..6 {
        let r = dev.order(&der);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("rate limit reached");
    assert_eq!(r.problem(), "urn:lancert:problem:rateLimited");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);

    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn orders_queue_behind_the_budget_and_names_are_throttled() {
    let dir = temp_dir("budget");
    let budget = json!({"orders": {"limit": 1, "window_secs": 3600}, "per_name": {"limit": 1, "window_secs": 3600}});
    let mut server = Server::start(&dir, local_ca(), json!({"budget": budget}));
    let mut first = Client::new(&server, 4);
    let host = format!("first.{ZONE}");
    assert_eq!(first.enroll(&server.token(Some(&host))).status, 201);
    let (_, der) = csr(&host);
    let r = first.order(&der);
    assert!(r.status == 202 || r.status == 201, "{}", r.body);
    let order = first.poll(&r.header("location").unwrap()).json();
    assert_eq!(order["status"], "valid", "{order}");

    // The name's certificate limit: refused at creation, until the
    // certificate leaves the window.
    let r = first.order(&der);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.problem(), "urn:lancert:problem:rateLimited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&wait), "{wait}");

    // The zone's order budget is used up: another device's order is
    // accepted and queued, with a Retry-After for its place in the queue.
    let mut second = Client::new(&server, 5);
    let host = format!("second.{ZONE}");
    assert_eq!(second.enroll(&server.token(Some(&host))).status, 201);
    let (_, der) = csr(&host);
    let r = second.order(&der);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["status"], "processing");
    let queued_url = r.header("location").unwrap();
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&wait), "{wait}");
    let r = second.post(&queued_url, None);
    assert_eq!(r.status, 202);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 3500);

    // The device lost its state and orders again: the queued order gives
    // up its place to the new one.
    let r = second.order(&der);
    assert_eq!(r.status, 202, "{}", r.body);
    let r = second.post(&queued_url, None);
    assert_eq!(r.status, 200);
    let old = r.json();
    assert_eq!(old["status"], "invalid");
    assert_eq!(old["error"]["type"], "urn:lancert:problem:issuanceFailed");
    assert!(old["error"]["detail"].as_str().unwrap().contains("superseded"), "{old}");

    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_errors_name_the_field_and_exit_1() {
    let dir = temp_dir("config");
    let config = dir.join("bad.json");
    std::fs::write(&config, r#"{"zone":"devices.example.com","data_dir":"d","lisen":"x"}"#).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`lisen`") && stderr.contains("bad.json"), "{stderr}");
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("lancert-server "));
    let _ = std::fs::remove_dir_all(&dir);
}
