//! Every wrong answer from the server is refused: the check fails saying
//! what was refused, the installed files stay byte-identical and nginx keeps
//! serving the old certificate. Wrong chains (another key or name: a chain
//! for another device; expired, untrusted, garbage, huge), error statuses
//! with and without `Retry-After` (the recorded retry honours it, clamped
//! to 1 s … 1 day), redirects (never followed, https→http included) and a
//! server TLS certificate for another host or expired.

use lancert_protocol::time::parse_rfc3339;
use lancert_tests::scenario::{evil_device, Device};
use lancert_tests::tls::first_cert_of_file;
use lancert_tests::{AgentConfig, EvilServer, Mode, Output, TestEnv};
use serde_json::Value;
use std::net::TcpListener;
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

// Server answers that are not wrong certificates: error statuses with and
// without `Retry-After`, redirects, and a server TLS certificate that must
// not be accepted. Each check fails (exit 1) with a message naming what, and
// changes nothing installed.

/// What a refused answer left behind, for the test's own assertions.
struct Refused {
    out: Output,
    status: Value,
    evil: EvilServer,
    _dev: Device,
    _env: TestEnv,
}

/// A device with a certificate from the evil server, which then answers
/// `mode`: the check must exit 1 naming each of `all_of` (case-insensitive)
/// in its error, send no new order past the refused answer, leave the
/// installed files byte-identical with no temporary file beside them, and
/// nginx serving the old leaf.
fn answered(name: &str, mode: Mode, all_of: &[&str]) -> Refused {
    let env = TestEnv::new(name);
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = evil_device(&env, &evil, |c| c.set("http_timeout_secs", 5));
    let leaf = first_cert_of_file(&dev.agent.config().path("cert_file"));
    let before = dev.agent.installed_snapshot();
    let reloads = dev.nginx.reload_count();

    evil.set_mode(mode);
    evil.reset_stats();
    let out = dev.agent.check_now();
    out.assert_code(1);
    let err = out.stderr.to_lowercase();
    for word in all_of {
        assert!(
            err.contains(&word.to_lowercase()),
            "expected the error to mention {word:?}\n{out}"
        );
    }
    before.assert_same(&dev.agent.installed_snapshot(), &format!("check refusing {mode:?}"));
    let temporaries = dev.agent.leftover_temporaries();
    assert!(temporaries.is_empty(), "temporary files left: {temporaries:?}");
    assert_eq!(dev.nginx.reload_count(), reloads, "nginx was reloaded");
    assert_eq!(
        dev.nginx.served_leaf(&dev.hostname),
        leaf,
        "nginx no longer serves the old leaf"
    );
    let status = dev.agent.status();
    let last_error = status["lastError"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        last_error.contains(&all_of[0].to_lowercase()),
        "lastError does not say {:?}: {status}",
        all_of[0]
    );
    Refused {
        out,
        status,
        evil,
        _dev: dev,
        _env: env,
    }
}

/// Seconds from the failure to the retry the agent recorded
/// (`retryAt - lastErrorAt` of `agent status`).
fn recorded_wait(status: &Value) -> i64 {
    let at = |k: &str| {
        let s = status[k].as_str().unwrap_or_else(|| panic!("no {k} in {status}"));
        parse_rfc3339(s).unwrap_or_else(|e| panic!("{k}: {e} in {status}"))
    };
    at("retryAt") - at("lastErrorAt")
}

/// The first backoff step (1 minute, stretched by up to 10 %): what the
/// agent waits after one failure when the server asked for less or nothing.
const FIRST_BACKOFF: std::ops::RangeInclusive<i64> = 60..=66;

/// The longest `Retry-After` the agent honours (`RETRY_AFTER_MAX`, README:
/// "clamped to 1 s … 1 day").
const RETRY_AFTER_MAX_SECS: i64 = 86_400;

fn server_error(name: &str, status: u16, retry_after: Option<&'static str>, also: &[&str]) -> i64 {
    let mode = Mode::ServerError { status, retry_after };
    let code = status.to_string();
    let mut words = vec![code.as_str(), "/v1/orders"];
    words.extend_from_slice(also);
    let r = answered(name, mode, &words);
    r.out.assert_stderr_mentions(&[&r.evil.url()]);
    assert_eq!(r.status["failures"], 1, "{}", r.status);
    recorded_wait(&r.status)
}

#[test]
fn server_500_without_retry_after_backs_off() {
    let wait = server_error("status-500", 500, None, &["serverInternal"]);
    assert!(FIRST_BACKOFF.contains(&wait), "waits {wait} s");
}

#[test]
fn server_502_with_retry_after_is_honoured() {
    let wait = server_error("status-502-ra", 502, Some("3600"), &["issuanceFailed"]);
    assert_eq!(wait, 3600);
}

#[test]
fn server_503_without_retry_after_backs_off() {
    let wait = server_error("status-503", 503, None, &[]);
    assert!(FIRST_BACKOFF.contains(&wait), "waits {wait} s");
}

#[test]
fn server_503_with_retry_after_is_honoured() {
    let wait = server_error("status-503-ra", 503, Some("120"), &[]);
    assert_eq!(wait, 120);
}

#[test]
fn absurd_retry_after_seconds_are_clamped_to_a_day() {
    let wait = server_error("status-503-absurd", 503, Some("999999999"), &[]);
    assert_eq!(wait, RETRY_AFTER_MAX_SECS);
}

#[test]
fn retry_after_date_far_in_the_future_is_clamped_to_a_day() {
    let wait = server_error("status-503-date", 503, Some("Fri, 31 Dec 9999 23:59:59 GMT"), &[]);
    assert_eq!(wait, RETRY_AFTER_MAX_SECS);
}

#[test]
fn redirect_loop_is_not_followed() {
    let r = answered(
        "redirect-loop",
        Mode::RedirectLoop,
        &["302", "redirect", "/v1/directory"],
    );
    r.out
        .assert_stderr_mentions(&[&format!("redirect to {}/v1/directory not followed", r.evil.url())]);
    let seen = r.evil.stats().requests_seen;
    let directory_gets = seen.iter().filter(|s| *s == "GET /v1/directory").count();
    // One for the check; the status report after the failure asks once
    // more (a new attempt, not a redirect followed).
    assert!(directory_gets <= 2, "the agent followed the redirect: {seen:?}");
    assert!(
        !seen.iter().any(|s| s.starts_with("POST")),
        "the agent went on without a directory: {seen:?}"
    );
}

#[test]
fn redirect_to_plain_http_is_refused() {
    let plain = TcpListener::bind("127.0.0.1:0").expect("binding a plain-HTTP listener");
    plain.set_nonblocking(true).expect("nonblocking");
    let port = plain.local_addr().expect("address").port();
    let r = answered(
        "redirect-http",
        Mode::RedirectToHttp { port },
        &["302", "redirect", "/v1/directory"],
    );
    r.out.assert_stderr_mentions(&[&format!(
        "redirect to http://127.0.0.1:{port}/v1/directory not followed"
    )]);
    match plain.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the agent followed an https→http redirect (connection from {peer})"),
        Err(e) => panic!("accept on the plain listener: {e}"),
    }
}

#[test]
fn server_tls_certificate_for_another_host_is_refused() {
    let r = answered(
        "tls-wrong-name",
        Mode::TlsWrongName,
        &["certificate", "not valid for name", "127.0.0.1", "/v1/directory"],
    );
    assert!(
        r.evil.stats().requests == 0,
        "a request went over the refused connection"
    );
}

#[test]
fn expired_server_tls_certificate_is_refused() {
    let r = answered(
        "tls-expired",
        Mode::TlsExpired,
        &["certificate", "expired", "/v1/directory"],
    );
    assert!(
        r.evil.stats().requests == 0,
        "a request went over the refused connection"
    );
}
