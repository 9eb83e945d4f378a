//! Configuration mistakes stop the agent with a message naming the field and
//! the file.

use lancert_tests::{Agent, AgentConfig, TestEnv};
use std::path::Path;

fn refused(name: &str, tweak: impl FnOnce(AgentConfig) -> AgentConfig, field: &str) {
    let env = TestEnv::new(name);
    let cfg = tweak(AgentConfig::new(
        "https://127.0.0.1:9",
        Path::new("/nonexistent/ca.pem"),
        env.dir(),
    ));
    let agent = Agent::new(&env, "agent", cfg);
    let file = agent.config_path().display().to_string();
    for args in [&["--check-now"][..], &["status"], &["run"]] {
        let out = agent.run(args);
        out.assert_code(1)
            .assert_stderr_mentions(&[field])
            .assert_stderr_mentions(&[&file]);
    }
}

#[test]
fn unknown_field_is_refused() {
    refused("config-unknown", |c| c.set("colour", "blue"), "colour");
}

#[test]
fn bad_value_is_refused() {
    refused(
        "config-bad-value",
        |c| c.set("address_interval_secs", "often"),
        "address_interval_secs",
    );
}

#[test]
fn bad_boolean_is_refused() {
    refused("config-bad-bool", |c| c.set("ipv6", "yes"), "ipv6");
}

#[test]
fn missing_server_is_refused() {
    refused("config-missing-server", |c| c.remove("server"), "server");
}
