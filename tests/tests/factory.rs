//! Factory provisioning as a factory runs it (README, "Factory
//! provisioning"): the station mints tokens in bulk, each device on the line
//! runs `agent provision --token-file FILE` with the server from its
//! configuration and prints its hostname for the label; its identity key is
//! made on the device and never reaches the server. Then what happens after
//! the factory: a device wiped by a factory reset, and a device replaced
//! under warranty.

use lancert_tests::scenario::{provisioned_hostname, server_device};
use lancert_tests::{Agent, AgentConfig, Output, Server, TestEnv, ZONE};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `agent provision --token-file FILE`, the server taken from the config.
fn provision_from_file(env: &TestEnv, agent: &Agent, name: &str, token: &str) -> Output {
    let file = env.path(&format!("{name}.token"));
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    agent.run(&["provision", "--token-file", file.to_str().unwrap()])
}

/// The DER of a PEM private key file.
fn key_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&body)
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(b) = std::fs::read(&path) {
            out.push((path.display().to_string(), b));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_factory_line_enrolls_devices_with_bulk_tokens_and_keys_stay_on_them() {
    let env = TestEnv::new("factory-line");
    let server = Server::start(&env);
    // The station mints a batch of tokens.
    let tokens = server.tokens(None, 3);

    let mut hostnames = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let name = format!("unit{i}");
        let agent = Agent::new(
            &env,
            &name,
            AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir(&name)),
        );
        let out = provision_from_file(&env, &agent, &name, token);
        out.assert_code(0);
        // Only the hostname on stdout: the station prints it on the label.
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout must be the hostname alone\n{out}");
        let hostname = provisioned_hostname(&out);
        assert_eq!(lines[0], hostname);
        assert!(hostname.ends_with(&format!(".{ZONE}")), "{hostname}");

        // The identity key was made here, 0600, and the server holds no
        // copy of it in any of its files.
        let key = agent.state_dir().join("identity.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", key.display());
        let der = key_der(&key);
        assert!(der.len() > 64, "unexpected key file {}", key.display());
        let pem_body: String = std::fs::read_to_string(&key)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for (file, bytes) in all_bytes(server.data_dir()) {
            assert!(!contains(&bytes, &der), "{file} holds the device's private key");
            assert!(
                !contains(&bytes, pem_body.as_bytes()),
                "{file} holds the device's private key (PEM)"
            );
        }
        hostnames.push(hostname);
    }
    hostnames.sort();
    hostnames.dedup();
    assert_eq!(hostnames.len(), 3, "hostnames are not distinct: {hostnames:?}");
    assert_eq!(server.devices().len(), 3);

    // A token the line already used cannot enroll another unit.
    let spare = Agent::new(
        &env,
        "spare",
        AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("spare")),
    );
    provision_from_file(&env, &spare, "spare", &tokens[0])
        .assert_code(1)
        .assert_stderr_mentions(&["token"]);
    assert!(
        !spare.state_dir().join("device.json").exists(),
        "a refused enrollment wrote device.json"
    );
    assert_eq!(server.devices().len(), 3, "a used token enrolled a device");
}

#[test]
fn provisioning_without_a_server_anywhere_says_what_is_missing() {
    let env = TestEnv::new("factory-no-server");
    let server = Server::start(&env);
    let agent = Agent::new(
        &env,
        "unit",
        AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("unit")).remove("server"),
    );
    let out = provision_from_file(&env, &agent, "unit", &server.token());
    out.assert_code(1).assert_stderr_mentions(&["--server", "`server`"]);
    assert!(server.devices().is_empty());
}

#[test]
fn a_device_wiped_by_a_factory_reset_needs_a_new_token_and_its_old_identity_revoked() {
    let env = TestEnv::new("factory-reset");
    let server = Server::start(&env);
    let token = server.token();
    let agent = Agent::new(
        &env,
        "unit",
        AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("unit")),
    );
    let out = provision_from_file(&env, &agent, "unit", &token);
    out.assert_code(0);
    let hostname = provisioned_hostname(&out);
    let old_id = server.devices()[0]["device"].as_str().unwrap().to_string();

    // Factory reset: the state (identity included) is gone.
    std::fs::remove_dir_all(agent.state_dir()).unwrap();
    // The label's token was used up at the factory.
    provision_from_file(&env, &agent, "unit", &token)
        .assert_code(1)
        .assert_stderr_mentions(&["token"]);
    // Support mints a token for the same name: refused while the old
    // identity still holds it...
    let same_name = server.tokens(Some(&hostname), 1).remove(0);
    provision_from_file(&env, &agent, "unit", &same_name)
        .assert_code(1)
        .assert_stderr_mentions(&["belongs to another device"]);
    // ...and accepted once the old identity is revoked: the device is back
    // under its old name, with a new identity.
    server.cli("revoke", &["--device", &old_id]).assert_code(0);
    let again = server.tokens(Some(&hostname), 1).remove(0);
    let out = provision_from_file(&env, &agent, "unit", &again);
    out.assert_code(0);
    assert_eq!(provisioned_hostname(&out), hostname);
    let devices = server.devices();
    let current: Vec<_> = devices
        .iter()
        .filter(|d| d["hostname"] == hostname.as_str() && d["revoked"] == false)
        .collect();
    assert_eq!(current.len(), 1, "{devices:?}");
    assert_ne!(current[0]["device"], old_id.as_str());
}

#[test]
fn a_device_replaced_under_warranty_is_refused_and_its_replacement_takes_the_name() {
    let env = TestEnv::new("factory-warranty");
    let server = Server::start(&env);
    // The original unit, in service with a certificate.
    let mut old = server_device(&env, &server, |c| c);
    old.agent.check_now().assert_code(0);
    let old_id = server
        .devices()
        .iter()
        .find(|d| d["hostname"] == old.hostname.as_str())
        .and_then(|d| d["device"].as_str().map(String::from))
        .unwrap();
    let installed = old.agent.installed_snapshot();

    // The operator revokes it; the replacement is enrolled under its name.
    server.cli("revoke", &["--device", &old_id]).assert_code(0);
    let token = server.tokens(Some(&old.hostname), 1).remove(0);
    let new = Agent::new(
        &env,
        "replacement",
        AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("replacement")),
    );
    let out = provision_from_file(&env, &new, "replacement", &token);
    out.assert_code(0);
    assert_eq!(provisioned_hostname(&out), old.hostname);
    new.check_now().assert_code(0);

    // The returned unit's identity is refused from now on, and says so;
    // what it had installed is left as it was. (A check with nothing to
    // say sends nothing, so it learns this when it next has something to
    // publish: here, a new address family.)
    old.agent.reconfigure(|c| c.set("ipv6", true));
    let refused = old.agent.check_now();
    refused.assert_code(1).assert_stderr_mentions(&["revoked"]);
    installed.assert_same(&old.agent.installed_snapshot(), "a refused check of a revoked device");
}
