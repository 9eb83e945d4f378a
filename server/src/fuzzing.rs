//! Entry points of the server's fuzz targets in `fuzz/` (built with the
//! `fuzzing` feature), and the tests that replay their seed corpora and
//! every crash they ever found (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) in an ordinary `cargo test`.
//!
//! The code under test is the production code: [`Verifier::verify`] (JWS
//! shape, nonce, url, key, signature), the payload checks the endpoints run
//! after it, and [`csr_check`]. None may panic, whatever a device sends.

use std::sync::OnceLock;
use std::time::Duration;

use lancert_protocol::{base64url, jws};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::Value;

use crate::api::{ADDRESSES_PATH, ENROLL_PATH, ORDERS_PATH, STATUS_PATH};
use crate::csr_check;
use crate::nonce::NonceStore;
use crate::request_auth::{KeyRule, Signer, Verifier};
use crate::store::{EnrollOutcome, NewDevice, Store};

/// The server's base URL in the targets.
pub const PUBLIC_URL: &str = "https://mgmt.test:8443";
/// The enrolled device's hostname (the seed CSRs name it).
pub const HOSTNAME: &str = "xi8qz.devices.example.com";
/// The enrolled device's id; its identity key is [`key`]`(1)`.
pub const DEVICE: &str = "dev1";
/// A revoked device's id; its key is [`key`]`(2)`.
pub const REVOKED_DEVICE: &str = "dev2";
/// In a signed input's protected header, these string values are replaced
/// by a fresh nonce, the request's URL and the signing key's JWK, which
/// the fuzzer cannot produce itself.
pub const NONCE_PLACEHOLDER: &str = "NONCE";
/// See [`NONCE_PLACEHOLDER`].
pub const URL_PLACEHOLDER: &str = "URL";
/// See [`NONCE_PLACEHOLDER`].
pub const JWK_PLACEHOLDER: &str = "JWK";
/// Separates the protected header from the payload in a signed input (a
/// byte that UTF-8 JSON never holds).
pub const SEPARATOR: u8 = 0xff;

/// The fixed P-256 key number `seed` (1: the device, 2: the revoked device,
/// 3 and up: unknown keys).
pub fn key(seed: u8) -> SigningKey {
    // A constant non-zero scalar below the group order is always a key.
    SigningKey::from_slice(&[seed.max(1); 32]).unwrap_or_else(|_| unreachable!("constant key"))
}

/// Enrolls device `id` with [`key`] `seed` under `hostname` in `store`
/// (a fixture: panics on failure). Shared with the request-verification
/// unit tests.
pub(crate) fn enroll(store: &Store, seed: u8, id: &str, hostname: &str) {
    let (texts, rows) = crate::tokens::mint(1, Some(hostname), 0, 86_400);
    store.insert_tokens(&rows).unwrap_or_else(|e| panic!("fixture: {e}"));
    let vk = *key(seed).verifying_key();
    let new = NewDevice {
        id: id.into(),
        key_sec1: vk.to_sec1_point(false).as_bytes().to_vec(),
        thumbprint: jws::thumbprint(&vk),
        agent_version: None,
    };
    match store.enroll(&crate::tokens::hash(&texts[0]), &new, 1, &mut || hostname.into()) {
        Ok(EnrollOutcome::Enrolled(_)) => {}
        other => panic!("fixture: enrolling {id}: {other:?}"),
    }
}

/// What verification needs besides nonces: a database with one enrolled
/// and one revoked device; and the keys the signed form signs with,
/// [`key`]`(1..=4)` (made once: deriving a public key costs a scalar
/// multiplication, slow under the fuzzer's instrumentation).
///
/// The nonce store is made anew for each input, so that one input's
/// nonces never outlive it: memory that grows from input to input makes
/// libFuzzer look for a leak after every run.
struct Fixture {
    store: Store,
    keys: [SigningKey; 4],
}

fn nonce_store() -> NonceStore {
    NonceStore::new(Duration::from_secs(3600))
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let store = Store::open_in_memory().unwrap_or_else(|e| panic!("fuzz fixture: {e}"));
        enroll(&store, 1, DEVICE, HOSTNAME);
        enroll(&store, 2, REVOKED_DEVICE, "old.devices.example.com");
        store
            .revoke_device(REVOKED_DEVICE)
            .unwrap_or_else(|e| panic!("fuzz fixture: {e}"));
        Fixture {
            store,
            keys: [key(1), key(2), key(3), key(4)],
        }
    })
}

/// The endpoints and the key rule each applies (an order poll and a
/// certificate download are POST-as-GET with kid).
const ENDPOINTS: [(&str, KeyRule); 6] = [
    (ENROLL_PATH, KeyRule::Jwk),
    (ADDRESSES_PATH, KeyRule::Kid),
    (ORDERS_PATH, KeyRule::Kid),
    (STATUS_PATH, KeyRule::Kid),
    ("/v1/orders/abc", KeyRule::Kid),
    ("/v1/certificates/abc", KeyRule::Kid),
];

/// `server_request`: a device's request body. The first byte chooses the
/// endpoint (low 3 bits), the form (bit 3) and the signing key (bits 4-5).
///
/// Raw form: the rest is the body as sent. Its nonce cannot be valid, so
/// this explores JWS parsing and everything checked before the nonce; the
/// JWS is also parsed and its `jwk` read directly with the protocol crate.
///
/// Signed form: the rest is `protected header JSON [0xff payload]`; the
/// placeholders are filled in ([`NONCE_PLACEHOLDER`]), and the target signs
/// header and payload with the chosen key, so the fuzzer reaches the key
/// and signature checks and the endpoint's payload checks after them.
pub fn request(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (path, rule) = ENDPOINTS[usize::from(control & 7) % ENDPOINTS.len()];
    let f = fixture();
    let nonces = nonce_store();
    let body = if control & 8 == 0 {
        raw_jws(rest);
        rest.to_vec()
    } else {
        signed_body(&nonces, rest, &f.keys[usize::from((control >> 4) & 3)], path)
    };
    let verifier = Verifier {
        nonces: &nonces,
        store: &f.store,
        public_url: PUBLIC_URL,
    };
    let Ok(verified) = verifier.verify(&body, path, rule) else {
        return;
    };
    // What the endpoint handlers check next (`api/`).
    if let Signer::NewKey(k) = &verified.signer {
        let _ = jws::thumbprint(k);
    }
    let _ = verified.expect_post_as_get();
    let (Ok(payload), Ok(device)) = (verified.json(), verified.device()) else {
        return;
    };
    match path {
        ADDRESSES_PATH => {
            let _ = crate::addresses::parse(&payload);
        }
        ORDERS_PATH => {
            let der = payload
                .get("csr")
                .and_then(Value::as_str)
                .and_then(|text| base64url::decode(text).ok());
            if let Some(der) = der {
                let _ = csr_check::check(&der, &device.hostname, &device.key_sec1);
            }
        }
        STATUS_PATH => {
            let serial = payload
                .get("certificate")
                .and_then(|c| c.get("serial"))
                .and_then(Value::as_str);
            let _ = serial.map(crate::chain_info::normalize_serial);
        }
        _ => {}
    }
}

/// The protocol crate's JWS code on its own: parse, read the header and
/// the JWK. (The signature check itself is reached in the signed form; a
/// raw input's signature never verifies, and checking it would only spend
/// the time of an ECDSA verification.)
fn raw_jws(body: &[u8]) {
    let Ok(parsed) = jws::Jws::parse(body) else {
        return;
    };
    let _ = parsed.header_str("nonce");
    let _ = parsed.header_str("url");
    if let Some(jwk) = parsed.protected.get("jwk") {
        let _ = jws::verifying_key_from_jwk(jwk);
    }
}

/// A JWS body signed by `signer` from `header [0xff payload]`, with the
/// placeholders of the header filled in.
fn signed_body(nonces: &NonceStore, input: &[u8], signer: &SigningKey, path: &str) -> Vec<u8> {
    let (header, payload) = match input.iter().position(|&b| b == SEPARATOR) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let header = match serde_json::from_slice::<Value>(header) {
        Ok(Value::Object(mut map)) => {
            for value in map.values_mut() {
                match value.as_str() {
                    Some(NONCE_PLACEHOLDER) => *value = nonces.issue().into(),
                    Some(URL_PLACEHOLDER) => *value = format!("{PUBLIC_URL}{path}").into(),
                    Some(JWK_PLACEHOLDER) => *value = jws::jwk(signer.verifying_key()),
                    _ => {}
                }
            }
            Value::Object(map).to_string().into_bytes()
        }
        _ => header.to_vec(),
    };
    let protected = base64url::encode(&header);
    let payload = base64url::encode(payload);
    let signature: Signature = signer.sign(format!("{protected}.{payload}").as_bytes());
    serde_json::json!({
        "protected": protected,
        "payload": payload,
        "signature": base64url::encode(&signature.to_bytes()),
    })
    .to_string()
    .into_bytes()
}

/// `server_csr`: a DER CSR as an order carries it, parsed and checked
/// (`check` parses it first) against the enrolled device's hostname and
/// identity key.
pub fn csr(data: &[u8]) {
    static IDENTITY: OnceLock<Vec<u8>> = OnceLock::new();
    let identity = IDENTITY.get_or_init(|| key(1).verifying_key().to_sec1_point(false).as_bytes().to_vec());
    let _ = csr_check::check(data, HOSTNAME, identity);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    fn replay(target: &str, f: impl Fn(&[u8])) {
        lancert_protocol::corpus::replay(&fuzz_dir(), target, f);
    }

    #[test]
    fn server_request_inputs_do_not_panic() {
        replay("server_request", request);
    }

    #[test]
    fn server_csr_inputs_do_not_panic() {
        replay("server_csr", csr);
    }

    /// Writes the generated seeds of `server_csr` and `server_request`
    /// (they are checked in; run by hand to renew them):
    /// `cargo test -p lancert-server fuzzing::tests::write_seeds -- --ignored`.
    #[test]
    #[ignore = "writes into fuzz/; run by hand"]
    fn write_seeds() {
        use crate::csr_check::tests::csr;
        use rcgen::KeyPair;
        let p256 = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let good_csr = csr(&p256(), &[HOSTNAME], Some(HOSTNAME));
        use p256::pkcs8::EncodePrivateKey;
        let identity_pkcs8 = key(1).to_pkcs8_der().unwrap();
        let identity = KeyPair::try_from(identity_pkcs8.as_bytes()).unwrap();
        let csrs: [(&str, Vec<u8>); 6] = [
            ("p256-cn-san.der", good_csr.clone()),
            (
                "p384.der",
                csr(
                    &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
                    &[HOSTNAME],
                    None,
                ),
            ),
            ("ip-san.der", csr(&p256(), &[HOSTNAME, "10.1.1.4", "fd00::4"], None)),
            ("wildcard.der", csr(&p256(), &["*.devices.example.com"], None)),
            ("identity-key.der", csr(&identity, &[HOSTNAME], None)),
            (
                "ed25519.der",
                csr(&KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(), &[HOSTNAME], None),
            ),
        ];
        let dir = fuzz_dir().join("corpus/server_csr");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, der) in &csrs {
            std::fs::write(dir.join(name), der).unwrap();
        }

        let dir = fuzz_dir().join("corpus/server_request");
        std::fs::create_dir_all(&dir).unwrap();
        let signed = |control: u8, header: &str, payload: Option<&str>| {
            let mut out = vec![control | 8];
            out.extend_from_slice(header.as_bytes());
            if let Some(p) = payload {
                out.push(SEPARATOR);
                out.extend_from_slice(p.as_bytes());
            }
            out
        };
        let kid = r#"{"alg":"ES256","nonce":"NONCE","url":"URL","kid":"dev1"}"#;
        let csr_payload = format!(r#"{{"csr":"{}"}}"#, base64url::encode(&good_csr));
        let raw = |control: u8, who: (&str, Value), payload: &[u8]| {
            let mut h = serde_json::Map::new();
            h.insert("nonce".into(), "b3JkZXI".into());
            h.insert(
                "url".into(),
                format!("{PUBLIC_URL}{}", ENDPOINTS[usize::from(control)].0).into(),
            );
            h.insert(who.0.into(), who.1);
            let mut out = vec![control];
            out.extend(jws::sign(&key(1), h, Some(payload)));
            out
        };
        let seeds: [(&str, Vec<u8>); 8] = [
            (
                "signed-status",
                signed(3, kid, Some(r#"{"certificate":{"serial":"3F:0A"}}"#)),
            ),
            ("signed-orders", signed(2, kid, Some(&csr_payload))),
            (
                "signed-enroll",
                signed(
                    0x20,
                    r#"{"alg":"ES256","nonce":"NONCE","url":"URL","jwk":"JWK"}"#,
                    Some(r#"{"token":"t","agentVersion":"0.1.0"}"#),
                ),
            ),
            (
                "signed-addresses",
                signed(1, kid, Some(r#"{"ipv4":["10.1.1.4"],"ipv6":["fd00::4"]}"#)),
            ),
            ("signed-poll", signed(4, kid, None)),
            (
                "signed-revoked",
                signed(
                    0x13,
                    r#"{"alg":"ES256","nonce":"NONCE","url":"URL","kid":"dev2"}"#,
                    None,
                ),
            ),
            ("raw-status", raw(3, ("kid", "dev1".into()), b"{}")),
            (
                "raw-enroll",
                raw(0, ("jwk", jws::jwk(key(1).verifying_key())), b"{\"token\":\"t\"}"),
            ),
        ];
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    /// The signed seeds really reach the end of verification, so the fuzzer
    /// starts from requests the server accepts.
    #[test]
    fn signed_seeds_verify() {
        let f = fixture();
        for name in ["signed-status", "signed-orders", "signed-enroll"] {
            let data = std::fs::read(fuzz_dir().join("corpus/server_request").join(name)).unwrap();
            let (path, rule) = ENDPOINTS[usize::from(data[0] & 7)];
            let nonces = nonce_store();
            let body = signed_body(&nonces, &data[1..], &f.keys[usize::from((data[0] >> 4) & 3)], path);
            let verifier = Verifier {
                nonces: &nonces,
                store: &f.store,
                public_url: PUBLIC_URL,
            };
            let verified = verifier
                .verify(&body, path, rule)
                .unwrap_or_else(|p| panic!("{name}: {p:?}"));
            if path == ORDERS_PATH {
                let payload = verified.json().unwrap();
                let der = base64url::decode(payload["csr"].as_str().unwrap()).unwrap();
                let device = verified.device().unwrap();
                csr_check::check(&der, &device.hostname, &device.key_sec1).unwrap();
            }
        }
    }
}
