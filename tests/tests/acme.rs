//! The server's `acme` issuer against a real ACME CA, Debian's pebble, which
//! validates dns-01 challenges by asking the DNS server the test names:
//! the server's own authoritative zone, or a BIND9 it updates with RFC 2136.
//! A real agent provisions, publishes its address, gets a certificate,
//! installs it and reloads nginx; the served chain must verify to pebble's
//! root.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lancert_tests::scenario::{server_device, Device};
use lancert_tests::tls::{self, first_cert_of_file, CertInfo};
use lancert_tests::{
    authoritative_dns, dig, unix_now, wait_for, Bind, Pebble, PebbleOptions, Server, ServerConfig, TestEnv, ZONE,
};
use serde_json::{json, Value};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A server whose `acme` issuer orders from `pebble`, with the `dns`
/// backend and `budget` given.
fn acme_server(env: &TestEnv, pebble: &Pebble, dns: Value, budget: Value) -> Server {
    let mut extra = serde_json::Map::new();
    let mut issuer = pebble.issuer_config();
    issuer["contact"] = json!(["mailto:ops@example.com"]);
    extra.insert("issuer".into(), issuer);
    extra.insert("dns".into(), dns);
    extra.insert("budget".into(), budget);
    Server::start_with(
        env,
        ServerConfig {
            extra,
            ..ServerConfig::default()
        },
    )
}

/// The server as the zone's authoritative DNS server on `port`.
fn authoritative(port: u16) -> Value {
    let mut dns = authoritative_dns(port);
    dns["propagation_timeout_secs"] = json!(10);
    dns
}

/// A provisioned device that trusts pebble's issuing root for its chains.
fn acme_device(env: &TestEnv, server: &Server, pebble_root: &std::path::Path) -> Device {
    server_device(env, server, |c| {
        c.set("trust_anchors", pebble_root.to_str().expect("UTF-8 path"))
    })
}

/// Checks the device's installed certificate came from pebble for its
/// hostname and that nginx serves a chain verifying to pebble's root;
/// returns the leaf.
fn assert_served_by_pebble(dev: &Device, pebble_root: &std::path::Path) -> CertInfo {
    let leaf = first_cert_of_file(&dev.agent.config().path("cert_file"));
    let info = CertInfo::parse(&leaf);
    assert_eq!(info.dns_names, vec![dev.hostname.clone()], "leaf names");
    assert!(info.issuer.contains("Pebble"), "issuer {:?}", info.issuer);
    dev.nginx.wait_running();
    dev.nginx.wait_serving(&dev.hostname, &leaf);
    let root = std::fs::read(pebble_root).unwrap();
    tls::served_chain_verifies(dev.nginx.port(), &dev.hostname, &root)
        .unwrap_or_else(|e| panic!("nginx's chain does not verify to pebble's root: {e}"));
    info
}

#[test]
fn pebble_issues_through_the_embedded_authoritative_dns() {
    let env = TestEnv::new("acme-embedded-dns");
    let dns_port = env.free_port();
    let pebble = Pebble::start(&env, loopback(dns_port));
    let server = acme_server(&env, &pebble, authoritative(dns_port), Value::Null);
    let dev = acme_device(&env, &server, pebble.root_file());

    let requests_before = pebble.acme_requests();
    let started = Instant::now();
    dev.agent.check_now().assert_code(0);
    let took = started.elapsed();
    let requests = pebble.acme_requests() - requests_before;

    // The address update reached the zone, which the server serves itself.
    let dns = loopback(dns_port);
    assert_eq!(dig(dns, &dev.hostname, "A"), ["127.0.0.1"]);
    assert!(
        dig(dns, ZONE, "SOA")
            .first()
            .is_some_and(|soa| soa.starts_with("ns1.example.net.")),
        "no SOA at the zone apex"
    );
    assert_eq!(dig(dns, ZONE, "NS"), ["ns1.example.net."]);

    // Pebble issued it, nginx serves it, a verifying client accepts it.
    let info = assert_served_by_pebble(&dev, pebble.root_file());
    let now = unix_now();
    assert!(info.not_before <= now + 5 && now < info.not_after, "validity {info:?}");

    // The challenge record is gone from the zone.
    let challenge = format!("_acme-challenge.{}", dev.hostname);
    assert!(dig(dns, &challenge, "TXT").is_empty(), "challenge TXT left behind");
    assert!(
        server.records(None).iter().all(|r| r["type"] != "TXT"),
        "{:?}",
        server.records(None)
    );

    // The CA's renewal window (ARI) reached the device, inside the validity.
    let state: Value =
        serde_json::from_slice(&std::fs::read(dev.agent.state_dir().join("state.json")).unwrap()).unwrap();
    let renewal = &state["renewal"];
    let at = |k: &str| {
        lancert_protocol::time::parse_rfc3339(renewal[k].as_str().unwrap_or_else(|| panic!("state {state}"))).unwrap()
    };
    assert!(
        info.not_before <= at("start")
            && at("start") <= at("moment")
            && at("moment") <= at("end")
            && at("end") <= info.not_after,
        "renewal {renewal} outside {info:?}"
    );
    eprintln!(
        "figures: check with first issuance took {:.2} s; pebble answered {requests} ACME requests for it",
        took.as_secs_f64()
    );
}

#[test]
fn renewal_replaces_the_previous_certificate() {
    let env = TestEnv::new("acme-renewal");
    let dns_port = env.free_port();
    let pebble = Pebble::start_with(
        &env,
        loopback(dns_port),
        PebbleOptions {
            validity_secs: Some(30),
            ..PebbleOptions::default()
        },
    );
    let server = acme_server(&env, &pebble, authoritative(dns_port), Value::Null);
    let dev = acme_device(&env, &server, pebble.root_file());
    dev.agent.check_now().assert_code(0);
    let first = assert_served_by_pebble(&dev, pebble.root_file());

    // Once due (ARI window or the last third of 30 s), the agent renews and
    // the server marks the order as replacing the first certificate.
    wait_for("a renewal", Duration::from_secs(40), || {
        std::thread::sleep(Duration::from_secs(2));
        let out = dev.agent.check_now();
        (out.code == Some(0)).then_some(())
    });
    let second = assert_served_by_pebble(&dev, pebble.root_file());
    assert_ne!(first.serial, second.serial);
    let log = server.log();
    assert!(log.contains("replaces"), "no replacing order in the server log\n{log}");
    assert!(!log.contains("refused `replaces`"), "the CA refused replaces\n{log}");
}

#[test]
fn a_rollout_beyond_the_budget_is_queued_and_issued_in_order() {
    let env = TestEnv::new("acme-budget");
    let dns_port = env.free_port();
    let pebble = Pebble::start(&env, loopback(dns_port));
    let window = 6;
    let server = acme_server(
        &env,
        &pebble,
        authoritative(dns_port),
        json!({"certificates": {"limit": 2, "window_secs": window}, "orders": {"limit": 2, "window_secs": window}}),
    );
    let devices: Vec<Device> = (0..5)
        .map(|i| {
            let env = &env;
            lancert_tests::scenario::server_device_named(env, &server, &format!("device{i}"), |c| {
                c.set("trust_anchors", pebble.root_file().to_str().expect("UTF-8 path"))
            })
        })
        .collect();

    // Every device asks at (almost) the same moment, in index order.
    let started = Instant::now();
    let issued_at: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .map(|dev| {
                let handle = scope.spawn(move || {
                    dev.agent.check_now().assert_code(0);
                    started.elapsed().as_secs_f64()
                });
                std::thread::sleep(Duration::from_millis(300));
                handle
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // None is dropped: every device serves a pebble certificate.
    let not_before: Vec<i64> = devices
        .iter()
        .map(|dev| assert_served_by_pebble(dev, pebble.root_file()).not_before)
        .collect();
    // None exceeds the budget: no 3 certificates within one window (pebble
    // stamps whole seconds).
    for i in 2..not_before.len() {
        let mut sorted = not_before.clone();
        sorted.sort();
        assert!(
            sorted[i] - sorted[i - 2] >= window - 1,
            "3 certificates within {window} s: notBefore {not_before:?}"
        );
    }
    // Budget order: first come, first served.
    for pair in not_before.windows(2) {
        assert!(pair[0] <= pair[1], "not issued in order of asking: {not_before:?}");
    }
    let log = server.log();
    assert!(log.contains("queued"), "no order was queued\n{log}");
    eprintln!("figures: 5 devices, budget 2 per {window} s: installed after {issued_at:?} s");
}

/// A device that got a short-lived (30 s) certificate from pebble through
/// the server's DNS, and the parts around it.
struct Issued {
    env: TestEnv,
    pebble: Pebble,
    pebble_port: u16,
    dns_port: u16,
    server: Server,
    dev: Device,
}

/// `dns` gives the server's `dns` section and the DNS server pebble asks,
/// for a free port the server's own DNS may take.
fn issued(name: &str, dns: impl FnOnce(&TestEnv, u16) -> (Value, SocketAddr)) -> Issued {
    let env = TestEnv::new(name);
    let dns_port = env.free_port();
    let pebble_port = env.free_port();
    let (dns, resolver) = dns(&env, dns_port);
    let pebble = Pebble::start_with(&env, resolver, short_lived(pebble_port));
    let server = acme_server(&env, &pebble, dns, Value::Null);
    let dev = acme_device(&env, &server, pebble.root_file());
    dev.agent.check_now().assert_code(0);
    assert_served_by_pebble(&dev, pebble.root_file());
    Issued {
        env,
        pebble,
        pebble_port,
        dns_port,
        server,
        dev,
    }
}

/// The server's own authoritative DNS on `port`, which pebble asks.
fn embedded(_: &TestEnv, port: u16) -> (Value, SocketAddr) {
    (authoritative(port), loopback(port))
}

fn short_lived(port: u16) -> PebbleOptions {
    PebbleOptions {
        validity_secs: Some(30),
        port: Some(port),
        ..PebbleOptions::default()
    }
}

impl Issued {
    /// Replaces pebble with one started with `options` on the same port
    /// (it knows neither the old account nor the old certificates).
    fn restart_pebble(&mut self, dns: SocketAddr, options: PebbleOptions) {
        self.pebble.stop();
        self.pebble = Pebble::start_with(&self.env, dns, options);
    }

    /// Waits until the agent considers its certificate due, runs a check
    /// that must fail with exit code 1, and checks that nothing the device
    /// serves changed. Returns the check's output.
    fn failed_renewal(&self) -> lancert_tests::Output {
        let agent = &self.dev.agent;
        wait_for("the certificate to become due", Duration::from_secs(35), || {
            // "now: <reason>", or the moment it becomes due.
            let due = agent.status()["renewalDue"].as_str().map(str::to_string)?;
            let now =
                due.starts_with("now") || lancert_protocol::time::parse_rfc3339(&due).is_ok_and(|at| at <= unix_now());
            now.then_some(())
        });
        let leaf = first_cert_of_file(&agent.config().path("cert_file"));
        let before = agent.installed_snapshot();
        let out = agent.check_now();
        assert_eq!(out.code, Some(1), "{out}");
        assert_eq!(
            agent.installed_snapshot(),
            before,
            "installed files changed after a failed renewal"
        );
        self.dev.nginx.wait_serving(&self.dev.hostname, &leaf);
        let status = agent.status();
        assert!(
            status["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("issuanceFailed")),
            "status {status}"
        );
        out
    }
}

#[test]
fn a_ca_that_goes_down_is_retried_and_the_device_keeps_its_certificate() {
    let mut t = issued("acme-ca-down", embedded);
    t.pebble.stop();
    let out = t.failed_renewal();
    assert!(
        out.stderr.contains(&format!("localhost:{}", t.pebble_port)),
        "the error does not name the CA\n{out}"
    );
    // The CA is back (a fresh one that knows no account: the server
    // registers again) and the next check renews.
    t.restart_pebble(loopback(t.dns_port), short_lived(t.pebble_port));
    t.dev.agent.check_now().assert_code(0);
    assert_served_by_pebble(&t.dev, t.pebble.root_file());
    assert!(t.server.log().contains("registering a new one"), "{}", t.server.log());
}

#[test]
fn an_invalid_challenge_reaches_the_device_which_keeps_its_certificate() {
    let mut t = issued("acme-invalid-challenge", embedded);
    // Pebble now resolves through a port where no DNS server answers: the
    // dns-01 validation fails.
    let dead_dns = loopback(t.env.free_port());
    t.restart_pebble(dead_dns, short_lived(t.pebble_port));
    let out = t.failed_renewal();
    out.assert_stderr_mentions(&["could not validate the challenge record"]);
    // The challenge record was removed although validation failed.
    let challenge = format!("_acme-challenge.{}", t.dev.hostname);
    assert!(dig(loopback(t.dns_port), &challenge, "TXT").is_empty());
}

#[test]
fn a_ca_answering_errors_reaches_the_device_which_keeps_its_certificate() {
    let mut t = issued("acme-ca-errors", embedded);
    let options = PebbleOptions {
        nonce_reject_percent: 100,
        ..short_lived(t.pebble_port)
    };
    t.restart_pebble(loopback(t.dns_port), options);
    let out = t.failed_renewal();
    out.assert_stderr_mentions(&["badNonce"]);
    // The server stays up and answers.
    assert_eq!(t.server.devices().len(), 1);
}

/// The RFC 2136 backend's `dns` section for `bind`.
fn rfc2136(bind: &Bind) -> Value {
    json!({"type": "rfc2136", "server": bind.addr().to_string(), "key_name": bind.key_name(),
           "key_algorithm": bind.key_algorithm(), "key_secret": bind.key_secret_base64(),
           "propagation_timeout_secs": 10})
}

#[test]
fn pebble_issues_through_bind_updated_with_rfc2136_and_tsig() {
    let env = TestEnv::new("acme-rfc2136");
    let bind = Bind::start(&env, ZONE);
    let pebble = Pebble::start(&env, bind.addr());
    let server = acme_server(&env, &pebble, rfc2136(&bind), Value::Null);
    let dev = acme_device(&env, &server, pebble.root_file());
    dev.agent.check_now().assert_code(0);

    // BIND serves the device's address, set by a signed dynamic update.
    assert_eq!(bind.query(&dev.hostname, "A"), ["127.0.0.1"]);
    assert_served_by_pebble(&dev, pebble.root_file());
    // The challenge record came and went through BIND.
    assert!(bind
        .query(&format!("_acme-challenge.{}", dev.hostname), "TXT")
        .is_empty());
    let log = bind.log();
    assert!(log.contains("_acme-challenge"), "BIND saw no challenge update\n{log}");
}

#[test]
fn a_failing_dns_update_reaches_the_device_which_keeps_its_certificate() {
    let mut bind = None;
    let mut t = issued("acme-dns-down", |env, _| {
        let b = Bind::start(env, ZONE);
        let dns = (rfc2136(&b), b.addr());
        bind = Some(b);
        dns
    });
    let Some(mut bind) = bind else { unreachable!() };
    // Pebble asked BIND at first; the primary now goes away. A CA reuses a
    // name's valid authorization for the same account (pebble does for ARI
    // renewals), and then no record is needed: a fresh pebble knows neither
    // account nor authorization, so the renewal needs a challenge record.
    bind.stop();
    t.restart_pebble(bind.addr(), short_lived(t.pebble_port));
    let out = t.failed_renewal();
    out.assert_stderr_mentions(&["publishing the challenge record"]);
    assert!(
        out.stderr.contains(&bind.addr().to_string()),
        "the error does not name the DNS server\n{out}"
    );
}
