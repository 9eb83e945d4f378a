//! `agent provision`: enrollment with a one-time token, idempotent re-runs,
//! and refusal of a used token.

use lancert_tests::scenario::provisioned_hostname;
use lancert_tests::{Agent, AgentConfig, Server, TestEnv};
use std::time::Duration;

#[test]
fn provisioning_is_idempotent_and_tokens_are_single_use() {
    let env = TestEnv::new("provisioning");
    let server = Server::start(&env);
    let token = server.token();
    let a = Agent::new(
        &env,
        "agent-a",
        AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("a")),
    );

    let out = a.provision(&token);
    out.assert_code(0);
    let hostname = provisioned_hostname(&out);
    let devices = server.devices();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["hostname"], hostname.as_str());
    assert_eq!(devices[0]["revoked"], false);
    let identity = a.file_snapshot();
    assert!(
        !identity.paths().is_empty(),
        "provisioning stored nothing in {}",
        a.state_dir().display()
    );

    // A later mtime would show even on filesystems with 1 s timestamps.
    std::thread::sleep(Duration::from_millis(1100));
    let again = a.provision(&token);
    again.assert_code(0).assert_mentions(&["already"]);
    assert!(
        again.stdout.contains(&hostname),
        "re-run does not print the hostname\n{again}"
    );
    identity.assert_same(&a.file_snapshot(), "re-provisioning an enrolled device");
    assert_eq!(server.devices().len(), 1, "re-provisioning enrolled a second device");

    // The token was consumed: a new device cannot use it.
    let b = Agent::new(
        &env,
        "agent-b",
        AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("b")),
    );
    b.provision(&token).assert_code(1).assert_stderr_mentions(&["token"]);
    assert_eq!(server.devices().len(), 1, "a used token enrolled a device");

    // With a fresh token it enrolls, under another hostname.
    let out = b.provision(&server.token());
    out.assert_code(0);
    assert_ne!(provisioned_hostname(&out), hostname);
    assert_eq!(server.devices().len(), 2);
}
