//! ES256 JWS in flattened JSON serialization (RFC 7515 §7.2.2), profiled as
//! in ACME (RFC 8555 §6.2): one signature, `alg` = `ES256`, the protected
//! header carries `nonce`, `url`, and exactly one of `jwk` or `kid`.

use crate::base64url;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{json, Map, Value};

/// The only algorithm of protocol version 1.
pub const ALG: &str = "ES256";

/// Why a JWS was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsError(pub String);

impl std::fmt::Display for JwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwsError {}

fn err<T>(msg: impl Into<String>) -> Result<T, JwsError> {
    Err(JwsError(msg.into()))
}

/// The public JWK (RFC 7518 §6.2) of a P-256 key: `{"crv","kty","x","y"}`.
pub fn jwk(key: &VerifyingKey) -> Value {
    // An uncompressed point is always 65 bytes.
    let mut point = [0u8; 65];
    point.copy_from_slice(key.to_sec1_point(false).as_bytes());
    jwk_of_point(&point)
}

/// [`jwk`] of an uncompressed SEC1 point, 0x04 || X (32 bytes) || Y (32
/// bytes), as signers hold it.
pub fn jwk_of_point(point: &[u8; 65]) -> Value {
    json!({
        "crv": "P-256",
        "kty": "EC",
        "x": base64url::encode(&point[1..33]),
        "y": base64url::encode(&point[33..65]),
    })
}

/// The JWK thumbprint (RFC 7638): base64url SHA-256 of the JWK's members in
/// lexical order without whitespace.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let jwk = jwk(key);
    // serde_json's map keeps keys sorted (no preserve_order feature), and
    // `to_string` emits no whitespace: exactly RFC 7638's canonical form.
    let canonical = jwk.to_string();
    base64url::encode(&sha2_256(canonical.as_bytes()))
}

fn sha2_256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Parses a public JWK, accepting only `kty` = `EC`, `crv` = `P-256` and a
/// point on the curve.
pub fn verifying_key_from_jwk(jwk: &Value) -> Result<VerifyingKey, JwsError> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("kty") != Some("EC") || field("crv") != Some("P-256") {
        return err("jwk: only kty EC with crv P-256 is supported");
    }
    if jwk.get("d").is_some() {
        return err("jwk: contains a private key");
    }
    let coord = |name: &str| -> Result<Vec<u8>, JwsError> {
        let raw = base64url::decode(field(name).unwrap_or_default())
            .map_err(|_| JwsError(format!("jwk: {name} is not base64url")))?;
        if raw.len() != 32 {
            return err(format!("jwk: {name} is not 32 bytes"));
        }
        Ok(raw)
    };
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(4);
    sec1.extend(coord("x")?);
    sec1.extend(coord("y")?);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| JwsError("jwk: point is not on P-256".into()))
}

/// Signs `payload` (or the empty payload of a POST-as-GET, RFC 8555 §6.3, when
/// `None`) under `protected`, which must already hold `nonce`, `url` and
/// `jwk` or `kid`; `alg` is added. Returns the request body.
pub fn sign(key: &SigningKey, protected: Map<String, Value>, payload: Option<&[u8]>) -> Vec<u8> {
    let signed = sign_with(
        |input| {
            let signature: Signature = key.sign(input);
            Ok::<_, std::convert::Infallible>(signature.to_bytes().into())
        },
        protected,
        payload,
    );
    match signed {
        Ok(body) => body,
        Err(never) => match never {},
    }
}

/// [`sign`] with the signature made by `signer`, which gets the JWS signing
/// input and returns the ES256 signature, R || S (RFC 7518 §3.4).
pub fn sign_with<E>(
    signer: impl FnOnce(&[u8]) -> Result<[u8; 64], E>,
    protected: Map<String, Value>,
    payload: Option<&[u8]>,
) -> Result<Vec<u8>, E> {
    let mut protected = protected;
    protected.insert("alg".into(), Value::from(ALG));
    let protected_b64 = base64url::encode(Value::Object(protected).to_string().as_bytes());
    let payload_b64 = payload.map(base64url::encode).unwrap_or_default();
    let signing_input = format!("{protected_b64}.{payload_b64}");
    let signature = signer(signing_input.as_bytes())?;
    Ok(json!({
        "protected": protected_b64,
        "payload": payload_b64,
        "signature": base64url::encode(&signature),
    })
    .to_string()
    .into_bytes())
}

/// A parsed, not yet verified, JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The decoded protected header.
    pub protected: Map<String, Value>,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Signature,
}

impl Jws {
    /// Parses a flattened JWS body. Checks the shape and `alg` only; the
    /// caller checks `nonce`, `url`, `jwk`/`kid` and then calls
    /// [`Jws::verify`].
    pub fn parse(body: &[u8]) -> Result<Jws, JwsError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| JwsError(format!("body is not JSON: {e}")))?;
        let obj = match v.as_object() {
            Some(o) => o,
            None => return err("body is not a JSON object"),
        };
        for key in obj.keys() {
            if !matches!(key.as_str(), "protected" | "payload" | "signature") {
                return err(format!(
                    "unexpected member {key:?} (only flattened JWS with a protected header is accepted)"
                ));
            }
        }
        let text = |name: &str| -> Result<&str, JwsError> {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| JwsError(format!("missing string member {name:?}")))
        };
        let (p64, pl64, s64) = (text("protected")?, text("payload")?, text("signature")?);
        let decode =
            |name: &str, s: &str| base64url::decode(s).map_err(|_| JwsError(format!("{name} is not base64url")));
        let header_bytes = decode("protected", p64)?;
        let protected = match serde_json::from_slice::<Value>(&header_bytes) {
            Ok(Value::Object(m)) => m,
            _ => return err("protected header is not a JSON object"),
        };
        if protected.get("alg").and_then(Value::as_str) != Some(ALG) {
            return err("protected header: alg must be ES256");
        }
        let payload = decode("payload", pl64)?;
        let sig_bytes = decode("signature", s64)?;
        let signature = Signature::from_slice(&sig_bytes)
            .map_err(|_| JwsError("signature is not a 64-byte ES256 signature".into()))?;
        Ok(Jws {
            protected,
            payload,
            signing_input: format!("{p64}.{pl64}").into_bytes(),
            signature,
        })
    }

    /// A string member of the protected header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.protected.get(name).and_then(Value::as_str)
    }

    /// Verifies the signature with `key`.
    ///
    /// ring does the arithmetic: it is linked anyway (rustls), and verifies
    /// in about a sixth of p256's time, which was the largest share of the
    /// server's CPU per request (`bench/throughput`).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), JwsError> {
        let point = key.to_sec1_point(false);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point.as_bytes())
            .verify(&self.signing_input, &self.signature.to_bytes())
            .map_err(|_| JwsError("signature does not verify".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn header(extra: (&str, Value)) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("nonce".into(), "n1".into());
        m.insert("url".into(), "https://s/v1/orders".into());
        m.insert(extra.0.into(), extra.1);
        m
    }

    #[test]
    fn sign_parse_verify_round_trip() {
        let k = key(7);
        let body = sign(&k, header(("kid", "dev1".into())), Some(br#"{"a":1}"#));
        let jws = Jws::parse(&body).unwrap();
        assert_eq!(jws.payload, br#"{"a":1}"#);
        assert_eq!(jws.header_str("kid"), Some("dev1"));
        assert_eq!(jws.header_str("alg"), Some("ES256"));
        jws.verify(k.verifying_key()).unwrap();
        assert!(jws.verify(key(8).verifying_key()).is_err());
    }

    #[test]
    fn post_as_get_has_empty_payload() {
        let k = key(3);
        let body = sign(&k, header(("kid", "d".into())), None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["payload"], "");
        let jws = Jws::parse(&body).unwrap();
        assert!(jws.payload.is_empty());
        jws.verify(k.verifying_key()).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let k = key(9);
        let body = sign(&k, header(("kid", "d".into())), Some(b"{}"));
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["payload"] = base64url::encode(b"{\"x\":1}").into();
        let jws = Jws::parse(v.to_string().as_bytes()).unwrap();
        assert!(jws.verify(k.verifying_key()).is_err());
    }

    #[test]
    fn jwk_round_trips_and_thumbprint_is_stable() {
        let k = key(5);
        let j = jwk(k.verifying_key());
        assert_eq!(&verifying_key_from_jwk(&j).unwrap(), k.verifying_key());
        assert_eq!(thumbprint(k.verifying_key()), thumbprint(k.verifying_key()));
        assert_ne!(thumbprint(k.verifying_key()), thumbprint(key(6).verifying_key()));
        assert_eq!(thumbprint(k.verifying_key()).len(), 43);
    }

    #[test]
    fn rfc7638_thumbprint_shape() {
        // RFC 7638's member order: crv, kty, x, y.
        let s = jwk(key(1).verifying_key()).to_string();
        assert!(s.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#), "{s}");
    }

    #[test]
    fn rejects_other_algorithms_and_shapes() {
        let hdr = base64url::encode(br#"{"alg":"none"}"#);
        let body = json!({"protected": hdr, "payload": "", "signature": ""}).to_string();
        assert!(Jws::parse(body.as_bytes()).is_err());
        assert!(Jws::parse(b"[]").is_err());
        assert!(Jws::parse(b"not json").is_err());
        let k = key(2);
        let mut v: Value = serde_json::from_slice(&sign(&k, header(("kid", "d".into())), None)).unwrap();
        v["header"] = json!({});
        assert!(Jws::parse(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn rejects_bad_jwks() {
        assert!(verifying_key_from_jwk(&json!({"kty":"RSA"})).is_err());
        let mut j = jwk(key(4).verifying_key());
        j["x"] = base64url::encode(&[1u8; 32]).into();
        assert!(verifying_key_from_jwk(&j).is_err());
    }
}
