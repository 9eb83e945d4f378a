//! What one check costs on the wire, measured at the evil server: a renewal
//! and an address update stay within a small, fixed number of requests and
//! bytes (devices may sit on slow or metered links).

use lancert_tests::scenario::evil_device;
use lancert_tests::{EvilServer, Mode, TestEnv};

/// Most requests a renewal check may make: directory, nonce, order, (poll),
/// download, status, plus one badNonce retry.
const MAX_RENEWAL_REQUESTS: u64 = 8;

/// Most bytes (both directions, TLS included) a renewal check may move.
const MAX_RENEWAL_BYTES: u64 = 64 * 1024;

#[test]
fn a_renewal_check_stays_within_its_request_and_byte_budget() {
    let env = TestEnv::new("budget");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = evil_device(&env, &evil, |c| c);

    // Good certificates are always due: this check renews.
    evil.reset_stats();
    let orders = evil.orders();
    dev.agent.check_now().assert_code(0);
    let s = evil.stats();
    assert_eq!(evil.orders(), orders + 1);
    eprintln!(
        "renewal check: {} connections, {} requests ({:?}), {} bytes in, {} bytes out",
        s.connections, s.requests, s.requests_seen, s.bytes_in, s.bytes_out
    );
    assert!(s.requests <= MAX_RENEWAL_REQUESTS, "{s:?}");
    assert!(s.bytes_in + s.bytes_out <= MAX_RENEWAL_BYTES, "{s:?}");
    assert!(s.connections <= 2, "connections are not reused: {s:?}");
}
