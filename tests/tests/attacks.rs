//! Attacks on the server ("Survives faults and attacks"): every test drives
//! the real `lancert-server` over HTTPS on loopback with requests built as
//! the agent builds them (`lancert_tests::attacker`) but changed in exactly
//! one way, and checks three things:
//!
//! 1. the precise refusal: the HTTP status and problem type of
//!    `docs/protocol.md` (§3 for signatures and nonces, §6 tokens, §8.1
//!    CSRs, §2 sizes, §9 the table);
//! 2. that nothing changed: the server's whole database is the same row
//!    for row ([`DbSnapshot`]), so no order, device, token or record moved;
//! 3. that the server is still up and serving: the attacked device's own
//!    legitimate order succeeds, and a real agent provisions and gets its
//!    certificate with one `agent --check-now`.
//!
//! The slow-client tests run the server with short connection timeouts
//! (2 s for the TLS handshake and the headers, 3 s for a request) so the
//! file stays fast; the defaults are 10 s, 10 s and 30 s.

use lancert_tests::attacker::{
    assert_problem, csr, flip_signature_byte, new_key, proc_status_kib, protected_header, resign_csr, rsa_2048_key,
    sign, Attacker, Conn, DbSnapshot, Flood, Identity, Who,
};
use lancert_tests::tls::CertInfo;
use lancert_tests::{Agent, AgentConfig, Server, ServerConfig, TestEnv, ZONE};
use rcgen::KeyPair;
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The test server's TLS handshake and header timeouts.
const SHORT_TIMEOUT: Duration = Duration::from_secs(2);
/// The test server's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How much later than its timeout the server may close a connection: the
/// probes look every 100 ms, and CI machines are slow.
const CLOSE_MARGIN: Duration = Duration::from_millis(1500);
/// Longest a legitimate request may take while the server is under attack.
const LEGIT_LATENCY: Duration = Duration::from_secs(2);

/// One attacked server. Fields drop in order: the server stops before its
/// directory goes.
struct World {
    a: Attacker,
    server: Server,
    env: TestEnv,
}

impl World {
    fn new(name: &str) -> World {
        World::with(name, &[])
    }

    /// A server with short connection timeouts and the extra settings.
    fn with(name: &str, extra: &[(&str, Value)]) -> World {
        let env = TestEnv::new(name);
        let mut cfg = ServerConfig::default();
        cfg.extra
            .insert("tls_handshake_timeout_secs".into(), SHORT_TIMEOUT.as_secs().into());
        cfg.extra
            .insert("header_read_timeout_secs".into(), SHORT_TIMEOUT.as_secs().into());
        cfg.extra
            .insert("request_timeout_secs".into(), REQUEST_TIMEOUT.as_secs().into());
        // Tests order more than 5 times an hour for one device.
        cfg.extra.insert("orders_per_hour".into(), 100.into());
        for (k, v) in extra {
            cfg.extra.insert((*k).into(), v.clone());
        }
        let server = Server::start_with(&env, cfg);
        let a = Attacker::new(&server);
        World { a, server, env }
    }

    fn snapshot(&self) -> DbSnapshot {
        DbSnapshot::take(&self.server)
    }

    /// The end of every attack: the server still serves. `device` (the one
    /// attacked, or the one attacking) still gets its certificate by the
    /// legitimate flow, and a real agent provisions and gets its own with
    /// one `--check-now`.
    fn assert_still_serving(&self, device: Option<&Identity>) {
        if let Some(id) = device {
            self.a.obtain_certificate(id);
        }
        let dir = self.env.subdir("legit");
        let agent = Agent::new(
            &self.env,
            "legit-agent",
            AgentConfig::new(&self.server.url(), &self.server.ca_path(), &dir),
        );
        let out = agent.provision(&self.server.token());
        out.assert_code(0);
        agent.check_now().assert_code(0);
        let leaf = CertInfo::of_file(&agent.config().path("cert_file"));
        assert_eq!(leaf.dns_names.len(), 1, "{leaf:?}");
        assert!(leaf.dns_names[0].ends_with(&format!(".{ZONE}")), "{leaf:?}");
    }
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

/// A CSR exactly as the agent makes it for `id` (CN and one dNSName, its
/// hostname), with a fresh key.
fn good_csr(id: &Identity) -> Vec<u8> {
    csr(&p256(), &[&id.hostname], Some(&id.hostname))
}

/// Waits until every order in the database has left `processing`, so that
/// a snapshot taken afterwards does not move on its own.
fn settle(w: &World) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.snapshot().rows("orders").iter().any(|r| r.contains("\"processing\"")) {
        assert!(Instant::now() < deadline, "orders still processing after 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Signed requests (protocol §3, §5)
// ---------------------------------------------------------------------------

#[test]
fn a_replayed_request_is_refused_and_takes_effect_once() {
    let w = World::new("replay");
    let dev = w.a.enroll(&w.server.token());
    let body = w.a.order_body(&dev, &good_csr(&dev));

    let first = w.a.post(&w.a.dir.new_order, &body);
    assert!(first.status == 201 || first.status == 202, "first: {}", first.status);
    // Replayed at once: its nonce is spent.
    assert_problem(&w.a.post(&w.a.dir.new_order, &body), 400, "badNonce");
    settle(&w);
    let after_first = w.snapshot();
    assert_eq!(after_first.rows("orders").len(), 1, "one order");
    // Replayed later, and the enrollment request too: still refused,
    // nothing changes.
    let token = w.server.token();
    let (_, key) = new_key();
    let enroll = w.a.enroll_body(&key, &token);
    assert_eq!(w.a.post(&w.a.dir.enroll, &enroll).status, 201);
    let after_enroll = w.snapshot();
    assert_problem(&w.a.post(&w.a.dir.new_order, &body), 400, "badNonce");
    assert_problem(&w.a.post(&w.a.dir.enroll, &enroll), 400, "badNonce");
    after_enroll.assert_unchanged(&w.server, "replays");
    assert_eq!(after_enroll.rows("orders").len(), 1, "still one order");
    w.assert_still_serving(Some(&dev));
}

#[test]
fn a_flipped_signature_byte_is_unauthorized() {
    let w = World::new("flipped-signature");
    let dev = w.a.enroll(&w.server.token());
    let csr = good_csr(&dev);
    let before = w.snapshot();
    // One bit in R, one in S.
    for index in [0, 63] {
        let body = flip_signature_byte(&w.a.order_body(&dev, &csr), index);
        let detail = assert_problem(&w.a.post(&w.a.dir.new_order, &body), 403, "unauthorized");
        assert!(detail.contains("signature"), "{detail}");
    }
    before.assert_unchanged(&w.server, "orders with flipped signatures");
    // The same order, signed properly, is accepted.
    let r = w.a.order(&dev, &csr);
    assert!(r.status == 201 || r.status == 202, "{}", r.status);
    w.assert_still_serving(Some(&dev));
}

#[test]
fn a_request_signed_by_another_key_under_a_devices_kid_is_unauthorized() {
    let w = World::new("other-key");
    let victim = w.a.enroll(&w.server.token());
    let other = w.a.enroll(&w.server.token());
    let payload = json!({"csr": lancert_protocol::base64url::encode(&good_csr(&victim))});
    let before = w.snapshot();
    // A fresh key, and another enrolled device's key, both claiming the
    // victim's kid.
    let (_, stranger) = new_key();
    for key in [&stranger, &other.key] {
        let body = w.a.sign(key, Who::Kid(&victim.kid), &w.a.dir.new_order, Some(&payload));
        let detail = assert_problem(&w.a.post(&w.a.dir.new_order, &body), 403, "unauthorized");
        assert!(detail.contains("signature"), "{detail}");
    }
    before.assert_unchanged(&w.server, "orders signed by the wrong key");
    w.assert_still_serving(Some(&victim));
}

#[test]
fn an_unknown_device_is_unauthorized() {
    let w = World::new("unknown-kid");
    let (_, key) = new_key();
    let csr = csr(&p256(), &[&format!("abcde.{ZONE}")], None);
    let payload = json!({"csr": lancert_protocol::base64url::encode(&csr)});
    let before = w.snapshot();
    for kid in [
        "AAAAAAAAAAAAAAAAAAAAAA", // well formed, never enrolled
        "x' OR '1'='1",           // SQL in the kid
        &"a".repeat(65),          // too long to be a device id
        "",                       // empty
    ] {
        for url in [&w.a.dir.new_order, &w.a.dir.status, &w.a.dir.addresses] {
            let body = w.a.sign(&key, Who::Kid(kid), url, Some(&payload));
            let detail = assert_problem(&w.a.post(url, &body), 403, "unauthorized");
            assert!(detail.contains("unknown device"), "{kid:?} at {url}: {detail}");
        }
    }
    before.assert_unchanged(&w.server, "requests of unknown devices");
    w.assert_still_serving(None);
}

#[test]
fn a_revoked_device_is_unauthorized_everywhere() {
    let w = World::new("revoked");
    let dev = w.a.enroll(&w.server.token());
    let published = w.a.sign(
        &dev.key,
        Who::Kid(&dev.kid),
        &w.a.dir.addresses,
        Some(&json!({"ipv4": ["10.1.1.4"], "ipv6": []})),
    );
    assert_eq!(w.a.post(&w.a.dir.addresses, &published).status, 200);
    assert_eq!(w.server.record_values(&dev.hostname, "A"), ["10.1.1.4"]);
    let order = w.a.order(&dev, &good_csr(&dev));
    let order_url = order.header("Location").expect("Location").to_string();
    settle(&w);
    w.server.cli("revoke", &["--device", &dev.kid]).assert_code(0);
    // Revoking withdrew its records.
    assert!(w.server.record_values(&dev.hostname, "A").is_empty());
    let token = w.server.token();
    let before = w.snapshot();

    let detail = assert_problem(&w.a.order(&dev, &good_csr(&dev)), 403, "unauthorized");
    assert!(detail.contains("revoked"), "{detail}");
    let report =
        w.a.status_body(&dev, &json!({"agentVersion": "x", "certificate": null}));
    assert_problem(&w.a.post(&w.a.dir.status, &report), 403, "unauthorized");
    let addresses = w.a.sign(
        &dev.key,
        Who::Kid(&dev.kid),
        &w.a.dir.addresses,
        Some(&json!({"ipv4": ["10.9.9.9"], "ipv6": []})),
    );
    assert_problem(&w.a.post(&w.a.dir.addresses, &addresses), 403, "unauthorized");
    // Its old order and certificate are out of reach too.
    assert_problem(&w.a.post_as_get(&dev, &order_url), 403, "unauthorized");
    // Enrolling again with the same identity key and a fresh token is
    // refused, and the token is not spent.
    let again = w.a.enroll_body(&dev.key, &token);
    let detail = assert_problem(&w.a.post(&w.a.dir.enroll, &again), 403, "unauthorized");
    assert!(detail.contains("revoked"), "{detail}");
    before.assert_unchanged(&w.server, "requests of a revoked device");
    // The token still works for a new device.
    w.a.enroll(&token);
    w.assert_still_serving(None);
}

#[test]
fn a_nonce_is_good_for_one_request_only() {
    let w = World::new("reused-nonce");
    let dev = w.a.enroll(&w.server.token());
    let csr = good_csr(&dev);
    let order_payload = json!({"csr": lancert_protocol::base64url::encode(&csr)});

    // One nonce, two different requests: the second is refused.
    let nonce = w.a.nonce();
    let report = sign(
        &dev.key,
        &nonce,
        &w.a.dir.status,
        Who::Kid(&dev.kid),
        Some(&json!({"agentVersion": "x", "certificate": null})),
    );
    assert_eq!(w.a.post(&w.a.dir.status, &report).status, 200);
    let before = w.snapshot();
    let order = sign(
        &dev.key,
        &nonce,
        &w.a.dir.new_order,
        Who::Kid(&dev.kid),
        Some(&order_payload),
    );
    let refused = w.a.post(&w.a.dir.new_order, &order);
    assert_problem(&refused, 400, "badNonce");
    before.assert_unchanged(&w.server, "an order with a used nonce");

    // A nonce the server never issued, and one spent by a refused request
    // (protocol §3: a failure consumes the nonce).
    let made_up = sign(
        &dev.key,
        "bm90LWlzc3VlZC1ieS10aGUtc2VydmVy",
        &w.a.dir.new_order,
        Who::Kid(&dev.kid),
        Some(&order_payload),
    );
    assert_problem(&w.a.post(&w.a.dir.new_order, &made_up), 400, "badNonce");
    let spent = w.a.nonce();
    let bad = flip_signature_byte(
        &sign(
            &dev.key,
            &spent,
            &w.a.dir.new_order,
            Who::Kid(&dev.kid),
            Some(&order_payload),
        ),
        5,
    );
    assert_problem(&w.a.post(&w.a.dir.new_order, &bad), 403, "unauthorized");
    let good_after_bad = sign(
        &dev.key,
        &spent,
        &w.a.dir.new_order,
        Who::Kid(&dev.kid),
        Some(&order_payload),
    );
    assert_problem(&w.a.post(&w.a.dir.new_order, &good_after_bad), 400, "badNonce");
    before.assert_unchanged(&w.server, "orders with bad nonces");

    // The badNonce answer carries a fresh nonce, which works once (the
    // agent's retry).
    let fresh = refused
        .header("Replay-Nonce")
        .expect("badNonce carries Replay-Nonce")
        .to_string();
    let retry = sign(
        &dev.key,
        &fresh,
        &w.a.dir.new_order,
        Who::Kid(&dev.kid),
        Some(&order_payload),
    );
    let r = w.a.post(&w.a.dir.new_order, &retry);
    assert!(r.status == 201 || r.status == 202, "{}", r.status);
    w.assert_still_serving(Some(&dev));
}

#[test]
fn a_request_for_another_url_is_unauthorized() {
    let w = World::new("wrong-url");
    let dev = w.a.enroll(&w.server.token());
    let payload = json!({"csr": lancert_protocol::base64url::encode(&good_csr(&dev))});
    let before = w.snapshot();
    // Signed for the status URL, sent to the order URL.
    let body = w.a.sign(&dev.key, Who::Kid(&dev.kid), &w.a.dir.status, Some(&payload));
    assert_eq!(protected_header(&body)["url"], w.a.dir.status);
    let detail = assert_problem(&w.a.post(&w.a.dir.new_order, &body), 403, "unauthorized");
    assert!(detail.contains("url"), "{detail}");
    before.assert_unchanged(&w.server, "a request for another URL");
    w.assert_still_serving(Some(&dev));
}

#[test]
fn a_device_cannot_read_another_devices_order() {
    let w = World::new("foreign-order");
    let owner = w.a.enroll(&w.server.token());
    let thief = w.a.enroll(&w.server.token());
    let r = w.a.order(&owner, &good_csr(&owner));
    let order_url = r.header("Location").expect("Location").to_string();
    settle(&w);
    let order = w.a.post_as_get(&owner, &order_url).json();
    let cert_url = order["certificate"].as_str().expect("certificate URL").to_string();
    let before = w.snapshot();
    for url in [&order_url, &cert_url] {
        assert_problem(&w.a.post_as_get(&thief, url), 404, "notFound");
    }
    before.assert_unchanged(&w.server, "reads of another device's order");
    w.assert_still_serving(Some(&thief));
}

// ---------------------------------------------------------------------------
// Enrollment tokens (protocol §6)
// ---------------------------------------------------------------------------

#[test]
fn an_enrollment_token_enrolls_one_device_only() {
    let w = World::new("reused-token");
    let token = w.server.token();
    let first = w.a.enroll(&token);
    let before = w.snapshot();
    let (_, second) = new_key();
    let detail = assert_problem(
        &w.a.post(&w.a.dir.enroll, &w.a.enroll_body(&second, &token)),
        403,
        "badToken",
    );
    assert!(!detail.is_empty());
    before.assert_unchanged(&w.server, "a second enrollment with a used token");
    assert_eq!(w.server.devices().len(), 1);
    w.assert_still_serving(Some(&first));
}

#[test]
fn racing_enrollments_with_one_token_have_exactly_one_winner() {
    const RACERS: usize = 12;
    let w = World::new("token-race");
    let token = w.server.token();
    let before = w.snapshot();
    // Every body is ready (own key, own nonce) before the start.
    let bodies: Vec<Vec<u8>> = (0..RACERS).map(|_| w.a.enroll_body(&new_key().1, &token)).collect();
    let start = Arc::new(Barrier::new(RACERS));
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let start = start.clone();
                let a = &w.a;
                s.spawn(move || {
                    start.wait();
                    let r = a.post(&a.dir.enroll, body);
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("racer")).collect()
    });
    let winners: Vec<&Value> = results.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    assert_eq!(winners.len(), 1, "exactly one enrollment wins: {results:?}");
    for (status, v) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 403, "{v}");
        assert_eq!(v["type"], "urn:lancert:problem:badToken", "{v}");
    }
    let after = w.snapshot();
    let new_devices: Vec<&String> = after
        .rows("devices")
        .iter()
        .filter(|r| !before.rows("devices").contains(r))
        .collect();
    assert_eq!(new_devices.len(), 1, "{new_devices:?}");
    let winner = winners[0]["device"].as_str().expect("device id");
    assert!(new_devices[0].contains(winner), "{new_devices:?} is not {winner}");
    w.assert_still_serving(None);
}

// ---------------------------------------------------------------------------
// CSRs (protocol §8.1)
// ---------------------------------------------------------------------------

/// Enrolls a device, sends its order with the CSR `make` builds, and
/// expects `badCSR` whose detail mentions `why`, with nothing changed.
fn refused_csr(name: &str, why: &str, make: impl FnOnce(&Identity) -> Vec<u8>) {
    let w = World::new(name);
    let dev = w.a.enroll(&w.server.token());
    let der = make(&dev);
    let before = w.snapshot();
    let detail = assert_problem(&w.a.order(&dev, &der), 400, "badCSR");
    assert!(detail.contains(why), "expected {why:?} in {detail:?}");
    before.assert_unchanged(&w.server, "a refused CSR");
    w.assert_still_serving(Some(&dev));
}

#[test]
fn a_device_cannot_order_another_devices_hostname() {
    let w = World::new("foreign-name");
    let attacker = w.a.enroll(&w.server.token());
    // The victim is a real agent, provisioned and not yet certified.
    let victim = Agent::new(
        &w.env,
        "victim",
        AgentConfig::new(&w.server.url(), &w.server.ca_path(), &w.env.subdir("victim")),
    );
    let out = victim.provision(&w.server.token());
    out.assert_code(0);
    let victim_name = lancert_tests::scenario::provisioned_hostname(&out);
    let before = w.snapshot();
    for cn in [None, Some(victim_name.as_str()), Some(attacker.hostname.as_str())] {
        let der = csr(&p256(), &[&victim_name], cn);
        let detail = assert_problem(&w.a.order(&attacker, &der), 400, "badCSR");
        assert!(detail.contains(&victim_name), "{detail}");
    }
    before.assert_unchanged(&w.server, "orders for another device's name");
    // The victim gets its certificate, for its name.
    victim.check_now().assert_code(0);
    let leaf = CertInfo::of_file(&victim.config().path("cert_file"));
    assert_eq!(leaf.dns_names, [victim_name]);
    w.assert_still_serving(Some(&attacker));
}

#[test]
fn a_csr_with_an_extra_name_is_bad_csr() {
    refused_csr("csr-extra-san", "2 DNS names", |d| {
        csr(
            &p256(),
            &[&d.hostname, &format!("www.{}", d.hostname)],
            Some(&d.hostname),
        )
    });
}

#[test]
fn a_csr_with_an_ip_address_is_bad_csr() {
    refused_csr("csr-ip-san", "IP address 10.1.1.4", |d| {
        csr(&p256(), &[&d.hostname, "10.1.1.4"], Some(&d.hostname))
    });
}

#[test]
fn a_csr_with_a_wildcard_is_bad_csr() {
    refused_csr("csr-wildcard", "wildcard", |_| {
        csr(&p256(), &[&format!("*.{ZONE}")], None)
    });
}

#[test]
fn a_csr_whose_cn_differs_from_its_name_is_bad_csr() {
    refused_csr("csr-cn", "CN", |d| {
        csr(&p256(), &[&d.hostname], Some(&format!("other.{ZONE}")))
    });
}

#[test]
fn a_csr_with_an_rsa_key_is_bad_csr() {
    refused_csr("csr-rsa", "not an ECDSA key", |d| {
        csr(&rsa_2048_key(), &[&d.hostname], Some(&d.hostname))
    });
}

#[test]
fn a_csr_with_an_ed25519_key_is_bad_csr() {
    refused_csr("csr-ed25519", "not an ECDSA key", |d| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        csr(&key, &[&d.hostname], Some(&d.hostname))
    });
}

#[test]
fn a_csr_with_an_unsupported_curve_is_bad_csr() {
    // A P-256 CSR whose key claims to be on secp256k1, signed again so
    // that only the curve is wrong.
    refused_csr("csr-secp256k1", "curve", |d| {
        let (pair, key) = new_key();
        let der = csr(&pair, &[&d.hostname], Some(&d.hostname));
        resign_csr(&der, &key, |info| {
            let secp256k1 = x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.10");
            info.public_key.algorithm.parameters =
                Some(x509_cert::der::Any::encode_from(&secp256k1).expect("OID encodes"));
        })
    });
}

#[test]
fn a_csr_with_the_identity_key_is_bad_csr() {
    refused_csr("csr-identity-key", "identity key", |d| {
        csr(&d.key_pair, &[&d.hostname], Some(&d.hostname))
    });
}

#[test]
fn a_csr_whose_signature_does_not_verify_is_bad_csr() {
    // Everything right, but signed by another key than the one it carries.
    refused_csr("csr-bad-signature", "signature does not verify", |d| {
        resign_csr(&good_csr(d), &new_key().1, |_| {})
    });
}

#[test]
fn a_csr_with_a_p384_key_is_accepted_as_the_protocol_allows() {
    // Protocol §8.1: "the reference server also accepts P-384". Not an
    // attack, but the boundary of the key policy: it must be issued.
    let w = World::new("csr-p384");
    let dev = w.a.enroll(&w.server.token());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let r = w.a.order(&dev, &csr(&key, &[&dev.hostname], Some(&dev.hostname)));
    assert!(
        r.status == 201 || r.status == 202,
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    settle(&w);
    let order = w.a.post_as_get(&dev, r.header("Location").expect("Location")).json();
    assert_eq!(order["status"], "valid", "{order}");
    w.assert_still_serving(Some(&dev));
}

// ---------------------------------------------------------------------------
// Sizes (protocol §2)
// ---------------------------------------------------------------------------

/// `body` with spaces appended (JSON allows trailing whitespace, and the
/// signature covers only `protected` and `payload`) to exactly `len` bytes.
fn padded(body: &[u8], len: usize) -> Vec<u8> {
    assert!(body.len() <= len, "body of {} bytes is already over {len}", body.len());
    let mut b = body.to_vec();
    b.resize(len, b' ');
    b
}

#[test]
fn a_body_one_byte_over_the_limit_is_413_and_at_the_limit_is_served() {
    let limit = lancert_protocol::MAX_REQUEST_BYTES;
    assert_eq!(limit, 64 * 1024, "protocol §2");
    let w = World::new("body-limit");
    let dev = w.a.enroll(&w.server.token());
    // A status report with a long error, as large as fits.
    let report = json!({"agentVersion": "x", "certificate": null, "lastError": "e".repeat(40_000)});
    let body = w.a.status_body(&dev, &report);
    let before = w.snapshot();

    let over = w.a.post(&w.a.dir.status, &padded(&body, limit + 1));
    let detail = assert_problem(&over, 413, "malformed");
    assert!(detail.contains("larger than"), "{detail}");
    before.assert_unchanged(&w.server, "a body one byte over the limit");

    // The very same signed request, one byte shorter: its nonce was not
    // even looked at, and it is served.
    let at = w.a.post(&w.a.dir.status, &padded(&body, limit));
    assert_eq!(at.status, 200, "{}", String::from_utf8_lossy(&at.body));
    let devices = w.server.devices();
    assert_eq!(devices[0]["status"]["lastError"].as_str().map(str::len), Some(40_000));
    w.assert_still_serving(Some(&dev));
}

#[test]
fn a_huge_body_is_refused_without_being_buffered() {
    let w = World::new("huge-body");
    let pid = w.server.pid().expect("server pid");
    let dev = w.a.enroll(&w.server.token());
    let before = w.snapshot();
    let head = |extra: &str| {
        format!(
            "POST /v1/status HTTP/1.1\r\nHost: localhost:{}\r\nContent-Type: application/jose+json\r\n{extra}",
            w.a.port()
        )
    };
    let rss_before = proc_status_kib(pid, "VmRSS");
    let hwm_before = proc_status_kib(pid, "VmHWM");

    // A declared 1 GiB body is refused on its Content-Length, before the
    // body: the answer comes while the first KiB trickle in.
    let declared = w.a.stream_body(
        &head("Content-Length: 1073741824\r\n"),
        1 << 30,
        1024,
        Duration::from_millis(50),
        false,
    );
    let r = declared
        .response
        .as_ref()
        .expect("an answer to the declared 1 GiB body");
    assert_problem(r, 413, "malformed");
    assert!(
        declared.sent < 32 * 1024,
        "sent {} bytes before the answer",
        declared.sent
    );

    // 64 MiB chunked, slowly: refused once 64 KiB arrived.
    let slow =
        w.a.stream_body(&head(""), 64 << 20, 8 * 1024, Duration::from_millis(10), true);
    let r = slow.response.as_ref().expect("an answer to the slow chunked body");
    assert_problem(r, 413, "malformed");
    assert!(slow.sent < 512 * 1024, "sent {} bytes before the answer", slow.sent);

    // 16 connections pushing 16 MiB each as fast as they can (256 MiB in
    // all): each is cut off, however much the kernel's buffers took.
    let blasts: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| w.a.stream_body(&head(""), 16 << 20, 64 * 1024, Duration::ZERO, true)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("blaster")).collect()
    });
    for b in &blasts {
        assert!(b.sent < 16 << 20, "a 16 MiB body was taken whole: {b:?}");
        if let Some(r) = &b.response {
            assert_problem(r, 413, "malformed");
        }
    }
    let answered = blasts.iter().filter(|b| b.response.is_some()).count();
    let rss_after = proc_status_kib(pid, "VmRSS");
    let hwm_after = proc_status_kib(pid, "VmHWM");
    eprintln!(
        "huge bodies: declared 1 GiB answered after {} bytes; slow 64 MiB answered after {} bytes in {:?}; \
         16 blasts of 16 MiB: at most {} bytes taken, {answered} answered 413 (the others reset); \
         server VmRSS {rss_before} -> {rss_after} KiB, VmHWM {hwm_before} -> {hwm_after} KiB",
        declared.sent,
        slow.sent,
        slow.elapsed,
        blasts.iter().map(|b| b.sent).max().unwrap_or(0)
    );
    // Buffering even one body whole would add 16 MiB.
    assert!(
        hwm_after < hwm_before + 12 * 1024,
        "the server's peak memory grew from {hwm_before} to {hwm_after} KiB"
    );
    before.assert_unchanged(&w.server, "huge bodies");
    w.assert_still_serving(Some(&dev));
}

#[test]
fn oversized_headers_are_refused() {
    let w = World::new("huge-headers");
    let dev = w.a.enroll(&w.server.token());
    let before = w.snapshot();
    let big = "a".repeat(32 * 1024);
    let r =
        w.a.request("GET", &w.a.url("/v1/directory"), &[("X-Padding", big.as_str())], b"");
    assert_eq!(r.status, 431, "{:?}", r.headers);
    before.assert_unchanged(&w.server, "oversized headers");
    w.assert_still_serving(Some(&dev));
}

// ---------------------------------------------------------------------------
// Slow clients holding connections
// ---------------------------------------------------------------------------

/// Steps `flood` every 100 ms until the server closed every connection (at
/// most `timeout` + [`CLOSE_MARGIN`] + a little), sending a legitimate
/// request every half second meanwhile; each must be answered within
/// [`LEGIT_LATENCY`]. Returns the lifetimes.
fn hold_and_serve(w: &World, flood: &mut Flood, timeout: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let deadline = started + timeout + CLOSE_MARGIN + Duration::from_secs(1);
    let mut last_legit = Instant::now() - Duration::from_secs(1);
    let mut legit = 0;
    while flood.open() > 0 && Instant::now() < deadline {
        flood.step();
        if last_legit.elapsed() >= Duration::from_millis(500) {
            last_legit = Instant::now();
            let t = Instant::now();
            let r = w.a.request("GET", &w.a.url("/v1/directory"), &[], b"");
            assert_eq!(r.status, 200);
            assert!(
                t.elapsed() < LEGIT_LATENCY,
                "a legitimate request took {:?}",
                t.elapsed()
            );
            legit += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(legit >= 2, "only {legit} legitimate requests were tried");
    let lifetimes = flood.lifetimes();
    let open = lifetimes.iter().filter(|l| l.is_none()).count();
    assert_eq!(open, 0, "{open} connections still open after {:?}", started.elapsed());
    let lifetimes: Vec<Duration> = lifetimes.into_iter().flatten().collect();
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    assert!(
        longest <= timeout + CLOSE_MARGIN,
        "a connection lived {longest:?}, the timeout is {timeout:?}"
    );
    lifetimes
}

fn describe(what: &str, lifetimes: &[Duration]) {
    let min = lifetimes.iter().min().copied().unwrap_or_default();
    let max = lifetimes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{what}: {} connections closed after {min:?} to {max:?}",
        lifetimes.len()
    );
}

#[test]
fn connections_that_never_finish_the_tls_handshake_are_closed() {
    let w = World::new("tls-handshake-flood");
    let before = w.snapshot();
    let mut flood = Flood::new();
    for _ in 0..40 {
        flood.add(Conn::silent_tcp(w.a.port()), b"");
        flood.add(Conn::half_client_hello(&w.a), b"");
    }
    let lifetimes = hold_and_serve(&w, &mut flood, SHORT_TIMEOUT);
    describe("unfinished TLS handshakes", &lifetimes);
    assert!(
        lifetimes
            .iter()
            .all(|l| *l >= SHORT_TIMEOUT - Duration::from_millis(200)),
        "closed before the handshake timeout: {lifetimes:?}"
    );
    before.assert_unchanged(&w.server, "unfinished TLS handshakes");
    w.assert_still_serving(None);
}

#[test]
fn headers_sent_a_byte_at_a_time_are_cut_off() {
    let w = World::new("slowloris");
    let before = w.snapshot();
    let mut flood = Flood::new();
    let head = format!(
        "POST /v1/status HTTP/1.1\r\nHost: localhost:{}\r\nContent-Type: application/jose+json\r\nX-Slow: {}",
        w.a.port(),
        "s".repeat(200)
    );
    for _ in 0..40 {
        flood.add(Conn::silent_tls(&w.a), head.as_bytes());
    }
    let lifetimes = hold_and_serve(&w, &mut flood, SHORT_TIMEOUT);
    describe("slowloris (a header byte every 100 ms)", &lifetimes);
    let trickled = flood.trickled();
    assert!(
        trickled.iter().all(|n| *n < head.len()),
        "a slow head was completed: {trickled:?}"
    );
    before.assert_unchanged(&w.server, "slowloris");
    w.assert_still_serving(None);
}

#[test]
fn idle_connections_are_closed() {
    // TLS done and then nothing, or one request and then nothing on the
    // kept-alive connection. (Before the server served only HTTP/1.1, the
    // first kind was held forever: hyper waited for the bytes that tell
    // HTTP/1.1 from HTTP/2 without a time limit.)
    let w = World::new("idle");
    let mut flood = Flood::new();
    for _ in 0..20 {
        flood.add(Conn::silent_tls(&w.a), b"");
        let mut kept = Conn::silent_tls(&w.a);
        assert!(kept.send(format!("GET /v1/directory HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", w.a.port()).as_bytes()));
        flood.add(kept, b"");
    }
    let lifetimes = hold_and_serve(&w, &mut flood, SHORT_TIMEOUT);
    describe("idle connections", &lifetimes);
    w.assert_still_serving(None);
}

#[test]
fn a_body_sent_too_slowly_is_cut_off_with_408() {
    let w = World::new("slow-body");
    let dev = w.a.enroll(&w.server.token());
    let before = w.snapshot();
    let head = format!(
        "POST /v1/status HTTP/1.1\r\nHost: localhost:{}\r\nContent-Type: application/jose+json\r\nContent-Length: 1000\r\n",
        w.a.port()
    );
    let slow = w.a.stream_body(&head, 1000, 1, Duration::from_millis(100), false);
    let r = slow.response.as_ref().expect("an answer to the slow body");
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        slow.elapsed >= REQUEST_TIMEOUT && slow.elapsed <= REQUEST_TIMEOUT + CLOSE_MARGIN,
        "answered after {:?}",
        slow.elapsed
    );
    eprintln!("slow body: 408 after {:?} and {} bytes", slow.elapsed, slow.sent);
    before.assert_unchanged(&w.server, "a slow body");
    w.assert_still_serving(Some(&dev));
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    const MAX: usize = 10;
    let w = World::with("connection-limit", &[("max_connections", (MAX as u64).into())]);
    // Take every slot. A slot frees a moment after its client closed, so
    // one of these may land while the directory request still holds one:
    // top up until all are held.
    let mut held: Vec<Conn> = Vec::new();
    let deadline = Instant::now() + SHORT_TIMEOUT;
    loop {
        held.retain_mut(|c| !c.is_closed());
        if held.len() == MAX {
            break;
        }
        assert!(Instant::now() < deadline, "could not hold {MAX} connections");
        while held.len() < MAX {
            held.push(Conn::silent_tcp(w.a.port()));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut flood = Flood::new();
    for c in held {
        flood.add(c, b"");
    }
    // Every slot is taken: a new connection is closed at once, not left
    // hanging until the client gives up.
    let t = Instant::now();
    let refused = lancert_tests::tls::connect(w.a.port(), "localhost", w.a.tls_config());
    assert!(refused.is_err(), "a connection over the limit was served");
    assert!(t.elapsed() < Duration::from_secs(1), "refusing took {:?}", t.elapsed());
    // The operator is told (the warning follows the close).
    lancert_tests::wait_for("the refusal in the server's log", Duration::from_secs(2), || {
        w.server.log().contains("max_connections").then_some(())
    });
    // The held ones time out, and then the server serves again.
    let deadline = Instant::now() + SHORT_TIMEOUT + CLOSE_MARGIN;
    while flood.open() > 0 && Instant::now() < deadline {
        flood.step();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(flood.open(), 0, "held connections outlived the handshake timeout");
    w.assert_still_serving(None);
}
