//! Set-ups several tests share: a provisioned device with nginx in front.

use crate::agent::{Agent, AgentConfig};
use crate::env::TestEnv;
use crate::evil::EvilServer;
use crate::nginx::Nginx;
use crate::process::Output;
use crate::server::{Server, ZONE};

/// A provisioned agent with its nginx.
pub struct Device {
    /// The agent (its configuration points at the server and at nginx).
    pub agent: Agent,
    /// nginx serving the agent's files; started by the agent's first
    /// reload.
    pub nginx: Nginx,
    /// The hostname the server assigned.
    pub hostname: String,
}

/// The hostname `agent provision` printed: the word of its stdout in the
/// test zone.
#[track_caller]
pub fn provisioned_hostname(out: &Output) -> String {
    out.stdout
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '(' | ')'))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| w.ends_with(&format!(".{ZONE}")))
        .unwrap_or_else(|| panic!("provision printed no hostname in {ZONE}\n{out}"))
        .to_string()
}

/// An agent configuration for `url`/`ca` whose files live in
/// `<test dir>/<name>/`, with an nginx in front: `reload_command` and
/// `verify_address` point at it.
pub fn config_with_nginx(env: &TestEnv, name: &str, url: &str, ca: &std::path::Path) -> (AgentConfig, Nginx) {
    let cfg = AgentConfig::new(url, ca, &env.subdir(name));
    let nginx = Nginx::configure(env, &cfg.path("key_file"), &cfg.path("fullchain_file"));
    let cfg = cfg
        .set("reload_command", nginx.reload_command())
        .set("verify_address", nginx.address());
    (cfg, nginx)
}

/// Provisions an agent against `server` (fresh token), with nginx in
/// front; no check yet. `tweak` adjusts the configuration.
pub fn server_device(env: &TestEnv, server: &Server, tweak: impl FnOnce(AgentConfig) -> AgentConfig) -> Device {
    server_device_named(env, server, "device", tweak)
}

/// [`server_device`] for one of several devices of a test: its files live
/// in `<test dir>/<name>/`.
pub fn server_device_named(
    env: &TestEnv,
    server: &Server,
    name: &str,
    tweak: impl FnOnce(AgentConfig) -> AgentConfig,
) -> Device {
    let (cfg, nginx) = config_with_nginx(env, name, &server.url(), &server.ca_path());
    let agent = Agent::new(env, &format!("{name}-agent"), tweak(cfg));
    let out = agent.provision(&server.token());
    out.assert_code(0);
    let hostname = provisioned_hostname(&out);
    Device { agent, nginx, hostname }
}

/// Provisions an agent against the evil server (any token works) and runs
/// one check, which must install a certificate: afterwards nginx runs and
/// serves the installed leaf.
pub fn evil_device(env: &TestEnv, evil: &EvilServer, tweak: impl FnOnce(AgentConfig) -> AgentConfig) -> Device {
    let (cfg, nginx) = config_with_nginx(env, "device", &evil.url(), evil.ca_path());
    let agent = Agent::new(env, "agent", tweak(cfg));
    let out = agent.provision("evil-token");
    out.assert_code(0);
    let hostname = provisioned_hostname(&out);
    assert_eq!(hostname, crate::EVIL_HOSTNAME);
    agent.check_now().assert_code(0);
    nginx.wait_running();
    let leaf = crate::tls::first_cert_of_file(&agent.config().path("cert_file"));
    nginx.wait_serving(&hostname, &leaf);
    Device { agent, nginx, hostname }
}
