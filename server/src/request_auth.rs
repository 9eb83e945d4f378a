//! Verification of signed requests (protocol §3), in the order the spec
//! gives: content type and body size, JWS shape and `alg`, nonce, `url`,
//! key (`jwk` on enroll, an enrolled, non-revoked `kid` otherwise),
//! signature. The first failure ends the request with its problem; only the
//! nonce is consumed by then.

use std::pin::Pin;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use lancert_protocol::jws::{self, Jws};
use lancert_protocol::problem::ProblemType;
use lancert_protocol::{CONTENT_TYPE_JOSE, MAX_REQUEST_BYTES};
use p256::ecdsa::VerifyingKey;
use serde_json::Value;

use crate::nonce::NonceStore;
use crate::problem::Problem;
use crate::store::{Device, Store};

/// Which key a request must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// A new key in the `jwk` header (enrollment only).
    Jwk,
    /// An enrolled device's key, named by `kid`.
    Kid,
}

/// Who signed a verified request.
#[derive(Debug, Clone)]
pub enum Signer {
    /// The key in the `jwk` header.
    NewKey(VerifyingKey),
    /// An enrolled, non-revoked device.
    Device(Device),
}

/// A request whose JWS verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    /// The signer.
    pub signer: Signer,
}

impl Verified {
    /// The signing device (for [`KeyRule::Kid`] requests).
    pub fn device(&self) -> Result<&Device, Problem> {
        match &self.signer {
            Signer::Device(d) => Ok(d),
            Signer::NewKey(_) => Err(Problem::malformed("this request must be signed with kid")),
        }
    }

    /// The payload as a JSON object.
    pub fn json(&self) -> Result<Value, Problem> {
        match serde_json::from_slice::<Value>(&self.payload) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(Problem::malformed("payload must be a JSON object")),
            Err(e) => Err(Problem::malformed(format!("payload is not JSON: {e}"))),
        }
    }

    /// Checks that this is a POST-as-GET (empty payload, RFC 8555 §6.3).
    pub fn expect_post_as_get(&self) -> Result<(), Problem> {
        if self.payload.is_empty() {
            Ok(())
        } else {
            Err(Problem::malformed("expected POST-as-GET (empty payload)"))
        }
    }
}

/// What verifying a request needs.
pub struct Verifier<'a> {
    /// Issued nonces.
    pub nonces: &'a NonceStore,
    /// Devices.
    pub store: &'a Store,
    /// The server's base URL (no trailing slash).
    pub public_url: &'a str,
}

fn too_large() -> Problem {
    Problem::malformed(format!("request body is larger than {MAX_REQUEST_BYTES} bytes")).with_status(413)
}

/// Checks `Content-Type: application/jose+json` (parameters ignored).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = value.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case(CONTENT_TYPE_JOSE) {
        Ok(())
    } else {
        Err(Problem::malformed(format!("Content-Type must be {CONTENT_TYPE_JOSE}")))
    }
}

/// Reads the body, refusing more than [`MAX_REQUEST_BYTES`] with 413
/// without reading the rest.
pub async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Vec<u8>, Problem> {
    use axum::body::HttpBody;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| Problem::malformed("could not read the request body"))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_REQUEST_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

impl Verifier<'_> {
    /// Verifies the JWS `body` sent to `path` (e.g. `/v1/orders`).
    pub fn verify(&self, body: &[u8], path: &str, rule: KeyRule) -> Result<Verified, Problem> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(too_large());
        }
        let jws = Jws::parse(body).map_err(|e| Problem::malformed(format!("JWS: {e}")))?;

        let nonce = jws
            .header_str("nonce")
            .ok_or_else(|| Problem::new(ProblemType::BadNonce, "protected header has no nonce"))?;
        if !self.nonces.consume(nonce) {
            return Err(Problem::new(
                ProblemType::BadNonce,
                "nonce unknown, used or expired; retry with the nonce of this response",
            ));
        }

        let expected = format!("{}{path}", self.public_url);
        match jws.header_str("url") {
            Some(url) if url == expected => {}
            Some(url) => {
                return Err(Problem::unauthorized(format!(
                    "protected header url {url:?} is not the URL of this request ({expected})"
                )))
            }
            None => return Err(Problem::malformed("protected header has no url")),
        }

        let signer = match (rule, jws.protected.get("jwk"), jws.protected.get("kid")) {
            (_, Some(_), Some(_)) => return Err(Problem::malformed("protected header has both jwk and kid")),
            (_, None, None) => return Err(Problem::malformed("protected header has neither jwk nor kid")),
            (KeyRule::Jwk, None, Some(_)) => {
                return Err(Problem::malformed("enrollment must be signed with jwk, not kid"))
            }
            (KeyRule::Kid, Some(_), None) => {
                return Err(Problem::malformed(
                    "jwk is only allowed in the enroll request; sign with kid",
                ))
            }
            (KeyRule::Jwk, Some(jwk), None) => {
                Signer::NewKey(jws::verifying_key_from_jwk(jwk).map_err(|e| Problem::malformed(e.0))?)
            }
            (KeyRule::Kid, None, Some(kid)) => {
                let kid = kid.as_str().ok_or_else(|| Problem::malformed("kid must be a string"))?;
                Signer::Device(self.device(kid)?)
            }
        };
        let key = match &signer {
            Signer::NewKey(k) => *k,
            Signer::Device(d) => VerifyingKey::from_sec1_bytes(&d.key_sec1)
                .map_err(|_| Problem::internal(&format!("device {}: stored key is not a P-256 point", d.id)))?,
        };
        jws.verify(&key)
            .map_err(|_| Problem::unauthorized("JWS signature does not verify"))?;
        Ok(Verified {
            payload: jws.payload,
            signer,
        })
    }

    fn device(&self, kid: &str) -> Result<Device, Problem> {
        let valid_id = !kid.is_empty()
            && kid.len() <= 64
            && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(Problem::unauthorized("unknown device"));
        }
        match self.store.device(kid)? {
            Some(d) if d.revoked => Err(Problem::unauthorized("device is revoked")),
            Some(d) => Ok(d),
            None => Err(Problem::unauthorized("unknown device")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use serde_json::{json, Map};
    use std::time::Duration;

    pub(crate) const URL: &str = "https://mgmt.test:8443";

    pub(crate) use crate::fuzzing::key;

    pub(crate) fn body(
        key: &SigningKey,
        nonce: &str,
        url: &str,
        who: (&str, Value),
        payload: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut h = Map::new();
        h.insert("nonce".into(), nonce.into());
        h.insert("url".into(), url.into());
        h.insert(who.0.into(), who.1);
        jws::sign(key, h, payload)
    }

    /// A store with one enrolled device (key seed 1) and one revoked (seed 2).
    pub(crate) fn store_with_devices() -> Store {
        let store = Store::open_in_memory().unwrap();
        crate::fuzzing::enroll(&store, 1, "dev1", "h1.z.test");
        crate::fuzzing::enroll(&store, 2, "dev2", "h2.z.test");
        store.revoke_device("dev2").unwrap();
        store
    }

    struct Fixture {
        nonces: NonceStore,
        store: Store,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                nonces: NonceStore::new(Duration::from_secs(60)),
                store: store_with_devices(),
            }
        }

        fn verify(&self, body: &[u8], path: &str, rule: KeyRule) -> Result<Verified, Problem> {
            Verifier {
                nonces: &self.nonces,
                store: &self.store,
                public_url: URL,
            }
            .verify(body, path, rule)
        }

        fn kid_request(&self, seed: u8, kid: &str, path: &str) -> Vec<u8> {
            body(
                &key(seed),
                &self.nonces.issue(),
                &format!("{URL}{path}"),
                ("kid", kid.into()),
                Some(b"{}"),
            )
        }
    }

    #[test]
    fn good_requests_verify() {
        let f = Fixture::new();
        let v = f
            .verify(&f.kid_request(1, "dev1", "/v1/status"), "/v1/status", KeyRule::Kid)
            .unwrap();
        assert_eq!(v.device().unwrap().id, "dev1");
        assert_eq!(v.json().unwrap(), json!({}));

        let k = key(9);
        let jwk = jws::jwk(k.verifying_key());
        let b = body(
            &k,
            &f.nonces.issue(),
            &format!("{URL}/v1/enroll"),
            ("jwk", jwk),
            Some(b"{}"),
        );
        let v = f.verify(&b, "/v1/enroll", KeyRule::Jwk).unwrap();
        assert!(matches!(v.signer, Signer::NewKey(vk) if vk == *k.verifying_key()));
    }

    #[test]
    fn bad_signature_is_unauthorized() {
        let f = Fixture::new();
        // Signed by key 3 but claims dev1 (key 1).
        let e = f
            .verify(&f.kid_request(3, "dev1", "/v1/status"), "/v1/status", KeyRule::Kid)
            .unwrap_err();
        assert_eq!(e.kind, ProblemType::Unauthorized);
        assert!(e.detail.contains("signature"));
    }

    #[test]
    fn wrong_url_is_refused() {
        let f = Fixture::new();
        let e = f
            .verify(&f.kid_request(1, "dev1", "/v1/orders"), "/v1/status", KeyRule::Kid)
            .unwrap_err();
        assert_eq!(e.kind, ProblemType::Unauthorized);
        assert!(e.detail.contains("url"));
        let b = body(
            &key(1),
            &f.nonces.issue(),
            "http://mgmt.test:8443/v1/status",
            ("kid", "dev1".into()),
            None,
        );
        assert!(f.verify(&b, "/v1/status", KeyRule::Kid).is_err());
    }

    #[test]
    fn reused_and_unknown_nonces_are_bad_nonce() {
        let f = Fixture::new();
        let b = f.kid_request(1, "dev1", "/v1/status");
        f.verify(&b, "/v1/status", KeyRule::Kid).unwrap();
        let e = f.verify(&b, "/v1/status", KeyRule::Kid).unwrap_err();
        assert_eq!(e.kind, ProblemType::BadNonce);
        let b = body(
            &key(1),
            "made-up",
            &format!("{URL}/v1/status"),
            ("kid", "dev1".into()),
            None,
        );
        assert_eq!(
            f.verify(&b, "/v1/status", KeyRule::Kid).unwrap_err().kind,
            ProblemType::BadNonce
        );
    }

    #[test]
    fn failed_request_consumes_the_nonce() {
        let f = Fixture::new();
        let nonce = f.nonces.issue();
        let b = body(
            &key(3),
            &nonce,
            &format!("{URL}/v1/status"),
            ("kid", "dev1".into()),
            None,
        );
        assert!(f.verify(&b, "/v1/status", KeyRule::Kid).is_err());
        assert!(!f.nonces.consume(&nonce));
    }

    #[test]
    fn unknown_and_revoked_kids_are_unauthorized() {
        let f = Fixture::new();
        for (seed, kid) in [(1, "nobody"), (2, "dev2"), (1, "bad kid!")] {
            let e = f
                .verify(&f.kid_request(seed, kid, "/v1/status"), "/v1/status", KeyRule::Kid)
                .unwrap_err();
            assert_eq!(e.kind, ProblemType::Unauthorized, "{kid}");
        }
    }

    #[test]
    fn jwk_outside_enroll_and_kid_in_enroll_are_malformed() {
        let f = Fixture::new();
        let k = key(1);
        let jwk = jws::jwk(k.verifying_key());
        let b = body(
            &k,
            &f.nonces.issue(),
            &format!("{URL}/v1/status"),
            ("jwk", jwk.clone()),
            None,
        );
        assert_eq!(
            f.verify(&b, "/v1/status", KeyRule::Kid).unwrap_err().kind,
            ProblemType::Malformed
        );
        let b = f.kid_request(1, "dev1", "/v1/enroll");
        assert_eq!(
            f.verify(&b, "/v1/enroll", KeyRule::Jwk).unwrap_err().kind,
            ProblemType::Malformed
        );
        let mut h = Map::new();
        h.insert("nonce".into(), f.nonces.issue().into());
        h.insert("url".into(), format!("{URL}/v1/status").into());
        h.insert("kid".into(), "dev1".into());
        h.insert("jwk".into(), jwk);
        let b = jws::sign(&k, h, None);
        assert_eq!(
            f.verify(&b, "/v1/status", KeyRule::Kid).unwrap_err().kind,
            ProblemType::Malformed
        );
    }

    #[test]
    fn shape_errors_are_malformed_and_keep_the_nonce() {
        let f = Fixture::new();
        let e = f
            .verify(b"{\"protected\":\"\"}", "/v1/status", KeyRule::Kid)
            .unwrap_err();
        assert_eq!(e.kind, ProblemType::Malformed);
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            f.verify(&big, "/v1/status", KeyRule::Kid).unwrap_err().http_status(),
            413
        );
    }

    #[test]
    fn content_type_must_be_jose() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(check_content_type(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            "application/jose+json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&h).is_ok());
    }
}
