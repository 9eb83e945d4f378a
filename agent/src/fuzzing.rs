//! Entry points of the fuzz targets in `fuzz/` (built with the `fuzzing`
//! feature), and the tests that replay their seed corpora and every crash
//! they ever found (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! in an ordinary `cargo test`, without libFuzzer.
//!
//! Each function drives production code only: the parsers the agent runs on
//! its configuration file, on the server's answers and on the certificate
//! chains it downloads. None may panic, whatever the input; an `Err` is a
//! correct answer to garbage.

use crate::certificate::{inspect, pem_to_der_chain};
use crate::client::{
    parse_directory, parse_enrollment, parse_order, parse_problem, parse_replay_nonce, parse_retry_after, parse_window,
    Reply,
};
use crate::renewal_window::{decide, latest_renewal, pick_moment, Installed, Window};
use crate::schedule::Random;
use crate::trust::TrustAnchors;
use crate::validate::validate;
use lancert_protocol::CONTENT_TYPE_PROBLEM;
use std::path::Path;
use std::time::Duration;

/// A fixed wall clock for the targets: 2027-01-15T08:00:00Z.
pub const NOW: i64 = 1_800_000_000;

/// The hostname the `agent_chain` target validates for, besides the leaf's
/// own first name (the seed chains are issued for it).
pub const HOSTNAME: &str = "xi8qz.devices.example.com";

/// `agent_config`: the configuration file's bytes, as [`crate::config::Config::load`]
/// parses them, with and without `server` required.
pub fn config(data: &[u8]) {
    let file = Path::new("/etc/lancert/agent.json");
    let _ = crate::config::Config::parse_bytes(file, data, true);
    let _ = crate::config::Config::parse_bytes(Path::new("agent.json"), data, false);
}

/// A source of randomness that answers from the input, so that the
/// renewal-window arithmetic is explored at its edges too.
struct Fixed(u64);

impl Random for Fixed {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0 % n
        }
    }
}

/// `agent_server_answers`: the input as the body of every JSON answer the
/// client reads (directory, enrollment, order, renewal window, problem
/// document) and, when it is text, as the `Retry-After` and `Replay-Nonce`
/// headers. A window that parses is also taken through the renewal
/// decision, as the renewal step does.
pub fn server_answers(data: &[u8]) {
    let reply = Reply {
        status: 200,
        location: None,
        retry_after: Some(Duration::from_secs(1)),
        content_type: "application/json".into(),
        body: data.to_vec(),
    };
    let order = parse_order("fuzzing", "https://s/o/1", &reply, "https://s/o/1".into());
    let _ = parse_problem(CONTENT_TYPE_PROBLEM, data);
    let mut windows = Vec::new();
    if let Ok(order) = order {
        windows.extend(order.renewal);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = parse_directory(&v);
        let _ = parse_enrollment(&v);
        let _ = crate::addresses::AddressSet::from_json(&v);
        if let Ok(Some(w)) = parse_window(Some(&v)) {
            windows.push(w);
        }
        if let Ok(Some(w)) = parse_window(v.get("renewal")) {
            windows.push(w);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_retry_after(text, NOW);
        let _ = parse_retry_after(text, 0);
        let _ = parse_replay_nonce(text.to_string());
    }
    let seed = data.iter().fold(0u64, |acc, b| acc.rotate_left(8) ^ u64::from(*b));
    for window in windows {
        renewal_decision(window, seed);
    }
}

/// What the renewal step does with a server's window: pick a moment in it
/// and decide against a typical installed certificate.
fn renewal_decision(window: Window, seed: u64) {
    let moment = pick_moment(window, &mut Fixed(seed));
    let cert = crate::certificate::CertInfo {
        not_before: NOW - 30 * 86_400,
        not_after: NOW + 60 * 86_400 - 1,
        dns_names: vec![HOSTNAME.into()],
        spki_der: Vec::new(),
        serial_hex: "01".into(),
        subject: String::new(),
        issuer: String::new(),
        self_signed: false,
    };
    let installed = Installed::Present {
        key_matches: true,
        fullchain_matches: true,
        cert: cert.clone(),
    };
    let _ = decide(&installed, HOSTNAME, Some(moment.min(latest_renewal(&cert))), NOW);
}

/// `agent_chain`: the input as a downloaded PEM chain. Every certificate in
/// it is inspected as the installed one would be, and the chain is
/// validated against `anchors` twice: for [`HOSTNAME`] at [`NOW`] with the
/// leaf's own key (so the trust path is reached whenever the leaf is
/// usable), and for the leaf's first name at the middle of its validity.
pub fn chain(data: &[u8], anchors: &TrustAnchors) {
    let Ok(ders) = pem_to_der_chain(data) else {
        let _ = validate(data, &[], HOSTNAME, NOW, anchors);
        return;
    };
    let mut leaf = None;
    for der in &ders {
        if let Ok(info) = inspect(der) {
            let _ = info.covers_name(HOSTNAME);
            let installed = Installed::Present {
                cert: info.clone(),
                key_matches: true,
                fullchain_matches: true,
            };
            let _ = decide(&installed, HOSTNAME, None, NOW);
            leaf.get_or_insert(info);
        }
    }
    let Some(leaf) = leaf else {
        let _ = validate(data, &[], HOSTNAME, NOW, anchors);
        return;
    };
    let _ = validate(data, &leaf.spki_der, HOSTNAME, NOW, anchors);
    let middle = leaf.not_before.saturating_add(leaf.lifetime_secs() / 2);
    let name = leaf.dns_names.first().map(String::as_str).unwrap_or(HOSTNAME);
    let _ = validate(data, &leaf.spki_der, name, middle, anchors);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `fuzz/` at the top of the repository.
    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    fn replay(target: &str, f: impl Fn(&[u8])) {
        lancert_protocol::corpus::replay(&fuzz_dir(), target, f);
    }

    fn anchors() -> TrustAnchors {
        let pem = std::fs::read(fuzz_dir().join("fixtures/root.pem")).unwrap();
        TrustAnchors::from_pem(&pem).unwrap()
    }

    #[test]
    fn agent_config_inputs_do_not_panic() {
        replay("agent_config", config);
    }

    #[test]
    fn agent_server_answers_inputs_do_not_panic() {
        replay("agent_server_answers", server_answers);
    }

    #[test]
    fn agent_chain_inputs_do_not_panic() {
        let anchors = anchors();
        replay("agent_chain", |data| chain(data, &anchors));
    }

    /// Writes the generated seeds: the trust anchor of the `agent_chain`
    /// target (`fuzz/fixtures/root.pem`) and chains issued under it. Run by
    /// hand when the seeds need renewing (they are checked in):
    /// `cargo test -p agent fuzzing::tests::write_chain_seeds -- --ignored`.
    #[test]
    #[ignore = "writes into fuzz/; run by hand"]
    fn write_chain_seeds() {
        use crate::keygen::CertKey;
        use crate::validate::tests::TestCa;
        const DAY: i64 = 86_400;
        let ca = TestCa::new("Fuzz");
        let other = TestCa::new("Other");
        let key = CertKey::generate().unwrap();
        std::fs::create_dir_all(fuzz_dir().join("fixtures")).unwrap();
        std::fs::write(fuzz_dir().join("fixtures/root.pem"), &ca.root_pem).unwrap();
        let dir = fuzz_dir().join("corpus/agent_chain");
        std::fs::create_dir_all(&dir).unwrap();
        let leaf = ca.leaf(&key, &[HOSTNAME], NOW - DAY, NOW + 89 * DAY);
        let seeds = [
            ("leaf-intermediate.pem", format!("{leaf}{}", ca.intermediate_pem)),
            (
                "leaf-intermediate-root.pem",
                format!("leaf:\n{leaf}\nintermediate:\n{}{}", ca.intermediate_pem, ca.root_pem),
            ),
            ("leaf-only.pem", leaf.clone()),
            (
                "two-names-expired.pem",
                format!(
                    "{}{}",
                    ca.leaf(&key, &[HOSTNAME, "*.devices.example.com"], NOW - 90 * DAY, NOW - 1),
                    ca.intermediate_pem
                ),
            ),
            ("other-ca.pem", other.chain(&key, HOSTNAME)),
            (
                "self-signed.pem",
                crate::self_signed::generate(&key, HOSTNAME, NOW).unwrap().cert_pem,
            ),
        ];
        for (name, pem) in seeds {
            std::fs::write(dir.join(name), pem).unwrap();
        }
    }

    /// The seeds are real inputs, not only garbage: the fixtures still
    /// parse, and the seed chain still validates (else the fuzzer would
    /// start far from the interesting code).
    #[test]
    fn seeds_are_valid_inputs() {
        let config_seed = std::fs::read(fuzz_dir().join("corpus/agent_config/full.json")).unwrap();
        crate::config::Config::parse_bytes(Path::new("/a.json"), &config_seed, true).unwrap();
        let pem = std::fs::read(fuzz_dir().join("corpus/agent_chain/leaf-intermediate.pem")).unwrap();
        let ders = pem_to_der_chain(&pem).unwrap();
        let leaf = inspect(&ders[0]).unwrap();
        validate(&pem, &leaf.spki_der, HOSTNAME, NOW, &anchors()).unwrap();
    }
}
