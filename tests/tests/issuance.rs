//! Against the real lancert-server: first issuance served by nginx, address
//! publication, renewal inside the last third of the lifetime.

use lancert_tests::scenario::server_device;
use lancert_tests::tls::{self, first_cert_of_file, pem_certs, CertInfo};
use lancert_tests::{unix_now, Agent, Server, ServerConfig, TestEnv};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A serial as hex digits only, lowercase, without leading zeros, so
/// `3f:0a`, `3F0A` and `003f0a` compare equal.
fn norm_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_lowercase();
    hex.trim_start_matches('0').to_string()
}

#[test]
fn first_issuance_is_installed_served_by_nginx_and_verifies() {
    let env = TestEnv::new("first-issuance");
    let server = Server::start(&env);
    let dev = server_device(&env, &server, |c| c);
    let agent = &dev.agent;

    agent.check_now().assert_code(0);

    for f in agent.installed_files() {
        assert!(f.is_file(), "{} was not installed", f.display());
    }
    let key_mode = std::fs::metadata(agent.config().path("key_file"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "key file mode is {key_mode:o}");

    let cert_path = agent.config().path("cert_file");
    let leaf = first_cert_of_file(&cert_path);
    let info = CertInfo::parse(&leaf);
    assert_eq!(info.dns_names, vec![dev.hostname.clone()], "leaf names");
    assert_ne!(info.issuer, info.subject, "the installed leaf is still self-signed");
    let now = unix_now();
    assert!(info.not_before <= now + 5 && now < info.not_after, "validity {info:?}");

    // fullchain = cert + chain.
    let read = |k: &str| std::fs::read(agent.config().path(k)).unwrap();
    let mut expected = pem_certs(&read("cert_file"));
    expected.extend(pem_certs(&read("chain_file")));
    assert_eq!(
        pem_certs(&read("fullchain_file")),
        expected,
        "fullchain is not cert + chain"
    );

    // nginx, (re)loaded by the agent, serves it, and a real client accepts
    // the chain for the hostname with only the server's CA as root.
    dev.nginx.wait_running();
    dev.nginx.wait_serving(&dev.hostname, &leaf);
    let ca = std::fs::read(server.ca_path()).unwrap();
    tls::served_chain_verifies(dev.nginx.port(), &dev.hostname, &ca).unwrap();

    // The agent reports what it installed, and so does the server.
    let status = agent.status();
    assert_eq!(status["hostname"], dev.hostname.as_str());
    let serial = status["certificate"]["serial"]
        .as_str()
        .expect("status.certificate.serial");
    assert_eq!(norm_serial(serial), norm_serial(&info.serial), "status {status}");
    assert!(status["lastError"].is_null(), "status {status}");
    let devices = server.devices();
    let device = &devices[0];
    assert_eq!(device["hostname"], dev.hostname.as_str());
    assert_eq!(device["ipv4"], serde_json::json!(["127.0.0.1"]), "{device}");
    let report = &device["status"];
    assert!(
        report["receivedAt"].is_string(),
        "the agent sent no status report: {device}"
    );
    let reported = report["certificate"]["serial"].as_str().unwrap_or_default();
    assert_eq!(norm_serial(reported), norm_serial(&info.serial), "{device}");
    assert!(report["lastError"].is_null(), "{device}");
    assert!(
        !devices[0]["status"].is_null(),
        "the agent sent no status report: {devices:?}"
    );
}

#[test]
fn address_changes_are_published_and_unchanged_addresses_are_not() {
    let env = TestEnv::new("addresses");
    let server = Server::start(&env);
    let dev = server_device(&env, &server, |c| c.remove("reload_command").remove("verify_address"));
    let agent = &dev.agent;
    let host = dev.hostname.as_str();

    agent.check_now().assert_code(0);
    assert_eq!(
        server.record_values(host, "A"),
        vec!["127.0.0.1"],
        "{:?}",
        server.records(None)
    );
    assert_eq!(server.record_values(host, "AAAA"), Vec::<String>::new());

    let mut agent = dev.agent;
    agent.reconfigure(|c| c.set("ipv6", true));
    agent.check_now().assert_code(0);
    assert_eq!(server.record_values(host, "A"), vec!["127.0.0.1"]);
    assert_eq!(
        server.record_values(host, "AAAA"),
        vec!["::1"],
        "{:?}",
        server.records(None)
    );
    let status = agent.status();
    assert_eq!(status["addresses"]["ipv6"], serde_json::json!(["::1"]), "{status}");

    // Nothing changed since: nothing to do.
    agent.check_now().assert_code(2);

    // Back to IPv4 only: the AAAA record goes away.
    agent.reconfigure(|c| c.set("ipv6", false));
    agent.check_now().assert_code(0);
    assert_eq!(server.record_values(host, "AAAA"), Vec::<String>::new());
    assert_eq!(server.record_values(host, "A"), vec!["127.0.0.1"]);
}

#[test]
fn renewal_happens_in_the_last_third_of_the_lifetime() {
    let env = TestEnv::new("renewal");
    // The reference server backdates notBefore (by 60 s) and counts
    // validity_secs from issuance: 45 s gives a 105 s lifetime whose last
    // third starts 10 s after issuance (30 s without backdating).
    let server = Server::start_with(
        &env,
        ServerConfig {
            validity_secs: 45,
            ..ServerConfig::default()
        },
    );
    let dev = server_device(&env, &server, |c| c);
    let agent = &dev.agent;
    let cert_path = agent.config().path("cert_file");

    agent.check_now().assert_code(0);
    let first = first_cert_of_file(&cert_path);
    let info = CertInfo::parse(&first);
    dev.nginx.wait_serving(&dev.hostname, &first);
    let lifetime = info.not_after - info.not_before;
    assert!((45..=180).contains(&lifetime), "validity_secs 45 gave {info:?}");
    let due = info.not_before + lifetime * 2 / 3;

    // Before the last third: nothing to do.
    assert!(
        unix_now() + 2 < due,
        "no time left before the window: {info:?}, now {}",
        unix_now()
    );
    agent.check_now().assert_code(2);
    assert_eq!(first_cert_of_file(&cert_path), first, "renewed before the window");

    let wait = due + 1 - unix_now();
    if wait > 0 {
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
    agent.check_now().assert_code(0);
    let second = first_cert_of_file(&cert_path);
    let renewed = CertInfo::parse(&second);
    assert_ne!(renewed.serial, info.serial, "not renewed");
    assert!(renewed.not_after > info.not_after, "{renewed:?}");
    dev.nginx.wait_serving(&dev.hostname, &second);
    let ca = std::fs::read(server.ca_path()).unwrap();
    tls::served_chain_verifies(dev.nginx.port(), &dev.hostname, &ca).unwrap();

    // The previous certificate is kept as the backup.
    let bak = Agent::backup_of(&cert_path);
    assert_eq!(
        first_cert_of_file(&bak),
        first,
        "{} is not the previous certificate",
        bak.display()
    );
    // The previous key is kept as private as the key itself.
    let key_bak = Agent::backup_of(&agent.config().path("key_file"));
    let mode = std::fs::metadata(&key_bak).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", key_bak.display());
}
