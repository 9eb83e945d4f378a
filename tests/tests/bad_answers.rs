//! Every wrong answer from the server is refused: the check fails saying
//! what was refused, the installed files stay byte-identical and nginx keeps
//! serving the old certificate.

use lancert_tests::scenario::evil_device;
use lancert_tests::tls::first_cert_of_file;
use lancert_tests::{AgentConfig, EvilServer, Mode, TestEnv};
use std::time::Duration;

fn refused(mode: Mode, keywords: &[&str], tweak: impl FnOnce(AgentConfig) -> AgentConfig) {
    let env = TestEnv::new(&format!("bad-{mode:?}"));
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = evil_device(&env, &evil, tweak);
    let leaf = first_cert_of_file(&dev.agent.config().path("cert_file"));
    let before = dev.agent.installed_snapshot();
    let reloads = dev.nginx.reload_count();
    assert!(
        reloads >= 1,
        "installing the first real certificate did not reload nginx"
    );
    std::thread::sleep(Duration::from_millis(1100));

    evil.set_mode(mode);
    let orders = evil.orders();
    let out = dev.agent.check_now();
    out.assert_code(1).assert_stderr_mentions(keywords);
    if !matches!(mode, Mode::Stall | Mode::InvalidJson) {
        assert_eq!(
            evil.orders(),
            orders + 1,
            "the agent did not order (Good certificates are always due)"
        );
    }

    assert_eq!(
        dev.nginx.reload_count(),
        reloads,
        "nginx was reloaded although nothing was installed"
    );
    before.assert_same(&dev.agent.installed_snapshot(), &format!("check refusing {mode:?}"));
    assert_eq!(
        dev.nginx.served_leaf(&dev.hostname),
        leaf,
        "nginx no longer serves the old leaf"
    );
    let status = dev.agent.status();
    assert!(
        status["lastError"].is_string(),
        "no lastError after refusing {mode:?}: {status}"
    );
}

#[test]
fn refuses_leaf_for_another_key() {
    refused(Mode::WrongKey, &["key"], |c| c);
}

#[test]
fn refuses_leaf_for_another_name() {
    refused(Mode::WrongName, &["name", "san", "someone-else"], |c| c);
}

#[test]
fn refuses_expired_leaf() {
    refused(Mode::Expired, &["expired", "validity", "not after", "notafter"], |c| c);
}

#[test]
fn refuses_not_yet_valid_leaf() {
    refused(
        Mode::NotYetValid,
        &[
            "not yet valid",
            "validity",
            "not before",
            "notbefore",
            "not valid before",
        ],
        |c| c,
    );
}

#[test]
fn refuses_untrusted_chain() {
    refused(Mode::UntrustedChain, &["trust", "chain", "issuer", "verif"], |c| c);
}

#[test]
fn refuses_garbage_pem() {
    refused(Mode::GarbagePem, &["pem", "base64", "pars", "decod"], |c| c);
}

#[test]
fn refuses_huge_body() {
    refused(
        Mode::HugeBody,
        &["large", "limit", "size", "bytes", "too long", "KiB"],
        |c| c,
    );
}

#[test]
fn refuses_invalid_json() {
    refused(Mode::InvalidJson, &["json", "pars", "expected"], |c| c);
}

#[test]
fn gives_up_on_a_stalled_server() {
    let start = std::time::Instant::now();
    refused(Mode::Stall, &["timed out", "timeout", "time out"], |c| {
        c.set("http_timeout_secs", 3)
    });
    // Set-up takes a few seconds; the stalled request must not add more
    // than the 3 s timeout (plus the agent's own retries, if any).
    assert!(start.elapsed() < Duration::from_secs(50), "took {:?}", start.elapsed());
}
