//! `agent run`: issues at start, SIGUSR1 checks now, SIGHUP reloads the
//! configuration, SIGTERM stops it.

use lancert_tests::scenario::server_device;
use lancert_tests::tls::{self, CertInfo};
use lancert_tests::{wait_for, Server, TestEnv};
use std::time::Duration;

#[test]
fn daemon_issues_reacts_to_signals_and_stops() {
    let env = TestEnv::new("daemon");
    let server = Server::start(&env);
    // Intervals far longer than the test: every check after the first is
    // one the test asked for with a signal.
    let mut dev = server_device(&env, &server, |c| {
        c.set("address_interval_secs", 3600)
            .set("certificate_interval_secs", 3600)
            .set("status_refresh_secs", 3600)
    });
    let cert_path = dev.agent.config().path("cert_file");
    let mut daemon = dev.agent.spawn_daemon();

    // Issues at start.
    let first = wait_for("the daemon's first certificate", Duration::from_secs(30), || {
        let der = tls::pem_certs(&std::fs::read(&cert_path).ok()?).into_iter().next()?;
        let info = CertInfo::parse(&der);
        (info.issuer != info.subject).then_some(der)
    });
    dev.nginx.wait_serving(&dev.hostname, &first);
    let ca = std::fs::read(server.ca_path()).unwrap();
    tls::served_chain_verifies(dev.nginx.port(), &dev.hostname, &ca).unwrap();
    wait_for("the A record", Duration::from_secs(30), || {
        (server.record_values(&dev.hostname, "A") == ["127.0.0.1"]).then_some(())
    });

    // SIGHUP reloads the configuration, SIGUSR1 checks now: the new
    // address family is published.
    dev.agent.reconfigure(|c| c.set("ipv6", true));
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal(libc::SIGUSR1);
    wait_for(
        "the AAAA record after SIGHUP + SIGUSR1",
        Duration::from_secs(30),
        || (server.record_values(&dev.hostname, "AAAA") == ["::1"]).then_some(()),
    );

    // A lost certificate is noticed on SIGUSR1 and replaced.
    std::fs::remove_file(&cert_path).unwrap();
    daemon.signal(libc::SIGUSR1);
    let first_serial = CertInfo::parse(&first).serial;
    let second = wait_for("a new certificate after SIGUSR1", Duration::from_secs(30), || {
        let der = tls::pem_certs(&std::fs::read(&cert_path).ok()?).into_iter().next()?;
        let info = CertInfo::parse(&der);
        (info.issuer != info.subject && info.serial != first_serial).then_some(der)
    });
    dev.nginx.wait_serving(&dev.hostname, &second);
    assert!(daemon.exited().is_none(), "the daemon exited\n{}", daemon.log());

    let start = std::time::Instant::now();
    let code = daemon.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit after SIGTERM\n{}", daemon.log());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        start.elapsed()
    );
    assert!(!server.devices()[0]["status"].is_null(), "no status report");
}
