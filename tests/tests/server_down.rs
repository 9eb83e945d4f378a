//! The server is unreachable: the check fails, says why, records the error
//! and a backoff, and leaves the installed certificate alone.

use lancert_protocol::time::parse_rfc3339;
use lancert_tests::scenario::evil_device;
use lancert_tests::tls::first_cert_of_file;
use lancert_tests::{unix_now, EvilServer, Mode, TestEnv};

#[test]
fn server_down_fails_names_the_url_and_backs_off() {
    let env = TestEnv::new("server-down");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = evil_device(&env, &evil, |c| c);
    let agent = &dev.agent;
    let leaf = first_cert_of_file(&agent.config().path("cert_file"));
    let before = agent.installed_snapshot();

    evil.set_mode(Mode::Down);
    let out = agent.check_now();
    out.assert_code(1);
    out.assert_stderr_mentions(&[&format!("127.0.0.1:{}", evil.port())]);
    out.assert_stderr_mentions(&["refused", "connect"]);
    before.assert_same(&agent.installed_snapshot(), "check with the server down");
    assert_eq!(dev.nginx.served_leaf(&dev.hostname), leaf);

    let status = agent.status();
    let last_error = status["lastError"]
        .as_str()
        .unwrap_or_else(|| panic!("no lastError in {status}"));
    assert!(!last_error.is_empty());
    let next = status["nextCertificateCheck"]
        .as_str()
        .unwrap_or_else(|| panic!("no nextCertificateCheck in {status}"));
    let next = parse_rfc3339(next).unwrap_or_else(|e| panic!("{e} in {status}"));
    assert!(next > unix_now(), "no backoff recorded: {status}");

    // Back up: an explicit check succeeds at once and clears the error.
    evil.set_mode(Mode::Good);
    agent.check_now().assert_code(0);
    let status = agent.status();
    assert!(status["lastError"].is_null(), "error not cleared: {status}");
    let report = evil.last_status().expect("a status report");
    assert!(report["lastError"].is_null(), "report after recovery: {report}");
}
