//! A check with nothing to do sends nothing and writes nothing.

use lancert_tests::scenario::evil_device;
use lancert_tests::tls::first_cert_of_file;
use lancert_tests::{EvilServer, Mode, Stats, TestEnv};
use std::time::Duration;

#[test]
fn check_with_nothing_due_sends_no_request_and_writes_no_file() {
    let env = TestEnv::new("noop");
    let evil = EvilServer::start(env.dir(), Mode::GoodFresh);
    let dev = evil_device(&env, &evil, |c| c);
    let leaf = first_cert_of_file(&dev.agent.config().path("cert_file"));

    let before = dev.agent.file_snapshot();
    evil.reset_stats();
    // A later mtime would show even on filesystems with 1 s timestamps.
    std::thread::sleep(Duration::from_millis(1100));

    dev.agent.check_now().assert_code(2);

    assert_eq!(evil.stats(), Stats::default(), "a no-op check talked to the server");
    before.assert_same(&dev.agent.file_snapshot(), "no-op check");
    assert_eq!(dev.nginx.served_leaf(&dev.hostname), leaf);
}
