//! Certificate key generation: ECDSA P-256 keys made on the device, so the
//! private key never leaves it.
//!
//! P-256 because every web server and browser accepts it, it signs fast on
//! small CPUs, and the management server requires it (protocol §8.1). The
//! same type holds the device's identity key.

use crate::error::{Error, Result};
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::der::pem::{self, LineEnding};
use p256::pkcs8::DecodePrivateKey;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// The PEM label of a PKCS#8 private key (RFC 7468 §10).
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480 §2):
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused
/// bits) }, followed by the 65-byte uncompressed point (SEC 1 §2.3.3).
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An ECDSA P-256 private key.
///
/// ring signs and makes keys: it is linked anyway as rustls's provider, and
/// its base-point arithmetic is fast without the 60 KB table p256 needed to
/// match it. p256 parses what ring does not take (keys without the public
/// key, below) and validates public points.
pub struct CertKey {
    /// The key as PKCS#8 DER, as read or generated: written back unchanged.
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for CertKey {
    // Never print key material, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertKey(P-256, private)")
    }
}

impl CertKey {
    /// A fresh key from the operating system's randomness (getrandom(2),
    /// through ring), as PKCS#8 with the public key included (RFC 5915).
    ///
    /// ring draws the scalar directly (FIPS 186-5 A.4.2, "rejection
    /// sampling"): random bytes are accepted if they form a scalar in
    /// [1, n-1], and redrawn otherwise.
    pub fn generate() -> Result<CertKey> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| Error::Other("generating a key: no randomness from the OS".into()))?;
        CertKey::from_pkcs8_der(doc.as_ref())
            .map_err(|why| Error::Other(format!("generating a key: the new key does not load: {why}")))
    }

    /// Parses a PKCS#8 `PRIVATE KEY` PEM (RFC 5958, RFC 7468 §10) holding a
    /// P-256 key.
    pub fn from_pkcs8_pem(text: &str) -> Result<CertKey, String> {
        let (label, der) =
            pem::decode_vec(text.as_bytes()).map_err(|e| format!("not a PKCS#8 P-256 private key: {e}"))?;
        let der = Zeroizing::new(der);
        if label != PKCS8_LABEL {
            return Err(format!(
                "not a PKCS#8 P-256 private key: the PEM block is {label:?}, not {PKCS8_LABEL:?}"
            ));
        }
        CertKey::from_pkcs8_der(&der)
    }

    /// Parses a PKCS#8 DER private key holding a P-256 key.
    ///
    /// ring takes the form it writes (and OpenSSL and older agents do):
    /// the public key beside the scalar, no curve repeated inside. Other
    /// valid forms (RFC 5915 makes both fields optional) are parsed with
    /// p256, which derives the public key; ring then checks the pair.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<CertKey, String> {
        let rng = SystemRandom::new();
        let pair = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
            Ok(pair) => pair,
            Err(ring_refused) => {
                let secret = p256::SecretKey::from_pkcs8_der(der)
                    .map_err(|e| format!("not a PKCS#8 P-256 private key: {e} (and ring: {ring_refused})"))?;
                let public = secret.public_key();
                let point = p256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&public, false);
                let scalar = Zeroizing::new(secret.to_bytes());
                EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &scalar,
                    point.as_bytes(),
                    &rng,
                )
                .map_err(|e| format!("not a usable P-256 key pair: {e}"))?
            }
        };
        Ok(CertKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            pair,
        })
    }

    /// The key as PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`: the one form
    /// nginx, lighttpd and uhttpd (mbedTLS/wolfSSL/OpenSSL) all read.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        pem::encode_string(PKCS8_LABEL, LineEnding::LF, &self.pkcs8)
            .map_err(|e| Error::Other(format!("encoding the private key as PEM: {e}")))
    }

    /// The key as PKCS#8 DER, wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(self.pkcs8.clone())
    }

    /// The public key as an uncompressed SEC1 point, 0x04 || X || Y.
    pub fn public_point(&self) -> [u8; 65] {
        let mut point = [0u8; 65];
        // ring's P-256 public keys are always the 65-byte uncompressed form.
        point.copy_from_slice(self.pair.public_key().as_ref());
        point
    }

    /// The public key as a DER SubjectPublicKeyInfo (RFC 5480), the form a
    /// certificate carries it in: comparing these bytes tells whether a
    /// certificate is for this key.
    pub fn spki_der(&self) -> Vec<u8> {
        spki_of(&self.public_point())
    }

    /// An ES256 signature of `message` (SHA-256, then ECDSA), as R || S
    /// (RFC 7518 §3.4): what a JWS carries.
    pub fn sign_fixed(&self, message: &[u8]) -> Result<[u8; 64]> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| Error::Other("signing: no randomness from the OS".into()))?;
        let mut fixed = [0u8; 64];
        fixed.copy_from_slice(signature.as_ref());
        Ok(fixed)
    }

    /// The key as rcgen's signer, for CSRs and certificates. rcgen only
    /// encodes; the signature is made here with ring, so rcgen needs no
    /// crypto backend of its own (and ring's RSA and Ed25519 signing stay
    /// out of the binary).
    pub(crate) fn rcgen_signer(&self) -> RcgenSigner<'_> {
        RcgenSigner {
            key: self,
            point: self.public_point(),
        }
    }
}

/// The public key a PKCS#8 P-256 private key carries beside the private
/// scalar (RFC 5915 `publicKey`, which this agent and OpenSSL always write),
/// as a DER SubjectPublicKeyInfo. `Ok(None)` if the key has no such field.
///
/// Reading it costs thousands of instructions where deriving it from the
/// scalar costs millions (a P-256 scalar multiplication), which was most of
/// a check with nothing to do. The point is still validated (on the curve);
/// that it belongs to the scalar is not: the key file is the agent's own,
/// written 0600, and whoever can rewrite it can replace the key outright.
pub fn embedded_spki(pkcs8_der: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use p256::pkcs8::der::asn1::{BitStringRef, ObjectIdentifier, OctetStringRef};
    use p256::pkcs8::der::{Decode, Reader, SliceReader, TagMode, TagNumber};
    use p256::pkcs8::PrivateKeyInfoRef;
    const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let bad = |e: p256::pkcs8::der::Error| format!("not a PKCS#8 P-256 private key: {e}");
    let info = PrivateKeyInfoRef::try_from(pkcs8_der).map_err(|e| format!("not a PKCS#8 P-256 private key: {e}"))?;
    let curve = info.algorithm.parameters.map(|p| p.decode_as::<ObjectIdentifier>());
    if info.algorithm.oid != EC_PUBLIC_KEY || !matches!(curve, Some(Ok(PRIME256V1))) {
        return Err("not a PKCS#8 P-256 private key: another algorithm or curve".into());
    }
    // ECPrivateKey ::= SEQUENCE { version INTEGER (1), privateKey OCTET
    // STRING, [0] parameters OPTIONAL, [1] publicKey BIT STRING OPTIONAL }
    let mut reader = SliceReader::new(info.private_key.as_bytes()).map_err(bad)?;
    let point = reader
        .sequence(|seq: &mut SliceReader<'_>| {
            let _version = u8::decode(seq)?;
            let _scalar = <&OctetStringRef>::decode(seq)?;
            let _curve = seq.context_specific::<ObjectIdentifier>(TagNumber(0), TagMode::Explicit)?;
            let point = seq.context_specific::<BitStringRef<'_>>(TagNumber(1), TagMode::Explicit)?;
            Ok(point.and_then(|bits| bits.as_bytes().map(<[u8]>::to_vec)))
        })
        .map_err(bad)?;
    let Some(point) = point else {
        return Ok(None);
    };
    let key = p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| "the private key's embedded public key is not a P-256 point".to_string())?;
    let uncompressed = p256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&key, false);
    Ok(Some(spki_of(uncompressed.as_bytes())))
}

/// The SubjectPublicKeyInfo of an uncompressed P-256 point.
fn spki_of(point: &[u8]) -> Vec<u8> {
    let mut der = Vec::with_capacity(SPKI_PREFIX.len() + point.len());
    der.extend_from_slice(&SPKI_PREFIX);
    der.extend_from_slice(point);
    der
}

/// A [`CertKey`] as rcgen's [`rcgen::SigningKey`]: ECDSA P-256 with SHA-256,
/// DER signatures (RFC 5480 §2, RFC 5758 §3.2).
pub(crate) struct RcgenSigner<'a> {
    key: &'a CertKey,
    /// The uncompressed public point, what rcgen puts in the
    /// SubjectPublicKeyInfo's BIT STRING.
    point: [u8; 65],
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let fixed = self.key.sign_fixed(msg).map_err(|_| rcgen::Error::RingUnspecified)?;
        let signature = p256::ecdsa::Signature::from_slice(&fixed).map_err(|_| rcgen::Error::RingUnspecified)?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey;

    #[test]
    fn pem_round_trip() {
        let key = CertKey::generate().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let back = CertKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.spki_der(), key.spki_der());
        assert_eq!(back.to_pkcs8_pem().unwrap(), pem);
        let der = key.to_pkcs8_der().unwrap();
        assert_eq!(CertKey::from_pkcs8_der(&der).unwrap().spki_der(), key.spki_der());
    }

    #[test]
    fn keys_differ() {
        assert_ne!(
            CertKey::generate().unwrap().spki_der(),
            CertKey::generate().unwrap().spki_der()
        );
    }

    #[test]
    fn spki_matches_the_encoder() {
        let key = CertKey::generate().unwrap();
        let der = key.to_pkcs8_der().unwrap();
        // p256 derives the public key from the scalar on its own.
        let derived = p256::SecretKey::from_pkcs8_der(&der).unwrap().public_key();
        let reference = derived.to_public_key_der().unwrap();
        assert_eq!(key.spki_der(), reference.as_bytes());
        assert_eq!(
            key.spki_der(),
            rcgen::PublicKeyData::subject_public_key_info(&key.rcgen_signer())
        );
    }

    /// Keys written by agents before ring signed (p256's PKCS#8 encoding)
    /// load on ring's fast path and are written back byte for byte.
    #[test]
    fn keys_written_by_p256_load_unchanged() {
        use p256::pkcs8::EncodePrivateKey;
        let old = p256::SecretKey::from_slice(&[7; 32]).unwrap();
        let pem = old.to_pkcs8_pem(LineEnding::LF).unwrap();
        let der = old.to_pkcs8_der().unwrap();
        let rng = SystemRandom::new();
        assert!(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_bytes(), &rng).is_ok());
        let key = CertKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(key.to_pkcs8_pem().unwrap(), pem.as_str());
        assert_eq!(key.spki_der(), old.public_key().to_public_key_der().unwrap().as_bytes());
    }

    /// ring's signatures verify with p256, JWS and CSR form alike; another
    /// message or key does not.
    #[test]
    fn signatures_verify_with_an_independent_implementation() {
        use p256::ecdsa::signature::Verifier;
        let key = CertKey::generate().unwrap();
        let public = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_point()).unwrap();
        let fixed = key.sign_fixed(b"message").unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&fixed).unwrap();
        public.verify(b"message", &signature).unwrap();
        assert!(public.verify(b"massage", &signature).is_err());
        let other = CertKey::generate().unwrap();
        let other_public = p256::ecdsa::VerifyingKey::from_sec1_bytes(&other.public_point()).unwrap();
        assert!(other_public.verify(b"message", &signature).is_err());

        let der = rcgen::SigningKey::sign(&key.rcgen_signer(), b"csr").unwrap();
        let der = p256::ecdsa::DerSignature::from_bytes(&der).unwrap();
        public.verify(b"csr", &der).unwrap();
        // ECDSA is randomized: two signatures of one message differ.
        assert_ne!(key.sign_fixed(b"message").unwrap(), fixed);
    }

    /// A key whose embedded public key is another key's is refused: signing
    /// with it would make signatures nobody can verify, and the certificate
    /// check would compare against the wrong key.
    #[test]
    fn a_mismatched_embedded_public_key_is_refused() {
        let key = CertKey::generate().unwrap();
        let other = CertKey::generate().unwrap();
        let mut der = key.to_pkcs8_der().unwrap().to_vec();
        let at = der.len() - 65;
        der[at..].copy_from_slice(&other.public_point());
        let refused = CertKey::from_pkcs8_der(&der).unwrap_err();
        assert!(refused.contains("P-256"), "{refused}");
    }

    #[test]
    fn rejects_garbage_and_other_keys() {
        assert!(CertKey::from_pkcs8_pem("hello").is_err());
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
        assert!(CertKey::from_pkcs8_pem(rsa_like).unwrap_err().contains("PKCS#8"));
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(CertKey::from_pkcs8_pem(&p384.serialize_pem()).is_err());
    }

    /// A PKCS#8 P-256 key without the optional public key (RFC 5915 allows
    /// leaving it out): version, algorithm, ECPrivateKey { 1, scalar }.
    fn pkcs8_without_public_key(key: &CertKey) -> Vec<u8> {
        let scalar = p256::SecretKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap())
            .unwrap()
            .to_bytes();
        let mut ec = vec![0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20];
        ec.extend_from_slice(&scalar);
        let mut der = vec![0x30, 0x41, 0x02, 0x01, 0x00];
        der.extend_from_slice(&SPKI_PREFIX[2..23]);
        der.extend_from_slice(&[0x04, 0x27]);
        der.extend_from_slice(&ec);
        der
    }

    #[test]
    fn embedded_public_key_is_read_without_deriving() {
        let key = CertKey::generate().unwrap();
        let der = key.to_pkcs8_der().unwrap();
        assert_eq!(embedded_spki(&der).unwrap(), Some(key.spki_der()));

        let bare = pkcs8_without_public_key(&key);
        assert_eq!(CertKey::from_pkcs8_der(&bare).unwrap().spki_der(), key.spki_der());
        assert_eq!(embedded_spki(&bare).unwrap(), None, "no public key: the caller derives");

        // A point off the curve (last coordinate byte changed) is refused.
        let mut off = der.to_vec();
        let last = off.len() - 1;
        off[last] ^= 1;
        assert!(embedded_spki(&off).unwrap_err().contains("not a P-256 point"));

        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(embedded_spki(&p384.serialize_der()).is_err());
        assert!(embedded_spki(b"\x30\x00").is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let key = CertKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "CertKey(P-256, private)");
    }
}
