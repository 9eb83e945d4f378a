//! A throwaway certificate authority made with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use std::sync::atomic::{AtomicU64, Ordering};
use x509_cert::der::Decode;

/// A root and an intermediate CA; leaves are issued by the intermediate, so
/// a chain is `leaf, intermediate` and verifies to the root.
pub struct TestCa {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

/// A public key taken from a CSR, in the form rcgen signs for.
pub(crate) struct RawPublicKey {
    /// The subjectPublicKey BIT STRING's bytes (for EC: the SEC1 point).
    point: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for RawPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl RawPublicKey {
    /// Extracts the public key of a PKCS#10 CSR (DER). Only EC P-256 and
    /// P-384 keys, the two the protocol allows.
    pub(crate) fn from_csr(csr_der: &[u8]) -> Result<RawPublicKey, String> {
        let req = x509_cert::request::CertReq::from_der(csr_der).map_err(|e| format!("CSR is not DER: {e}"))?;
        let spki = &req.info.public_key;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok())
            .map(|oid| oid.to_string());
        let alg = match curve.as_deref() {
            Some("1.2.840.10045.3.1.7") => &rcgen::PKCS_ECDSA_P256_SHA256,
            Some("1.3.132.0.34") => &rcgen::PKCS_ECDSA_P384_SHA384,
            other => return Err(format!("CSR key is not EC P-256/P-384 (curve {other:?})")),
        };
        Ok(RawPublicKey {
            point: spki.subject_public_key.raw_bytes().to_vec(),
            alg,
        })
    }
}

/// A fresh serial number, unique in this process.
fn next_serial() -> SerialNumber {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = crate::unix_now() as u64;
    let mut bytes = vec![0x42];
    bytes.extend_from_slice(&t.to_be_bytes());
    bytes.extend_from_slice(&n.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("timestamp in range")
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = crate::unix_now();
    p.not_before = at(now - 86_400 * 365);
    p.not_after = at(now + 86_400 * 365 * 5);
    p.serial_number = Some(next_serial());
    p
}

impl TestCa {
    /// A new root "`name` Root" and intermediate "`name` Intermediate".
    pub fn new(name: &str) -> TestCa {
        let root_key = KeyPair::generate().expect("generating root key");
        let root_params = ca_params(&format!("{name} Root"));
        let root_cert = root_params.self_signed(&root_key).expect("self-signing root");
        let root = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate().expect("generating intermediate key");
        let int_params = ca_params(&format!("{name} Intermediate"));
        let int_cert = int_params.signed_by(&int_key, &root).expect("signing intermediate");
        TestCa {
            root_pem: root_cert.pem(),
            intermediate_pem: int_cert.pem(),
            intermediate: Issuer::new(int_params, int_key),
        }
    }

    /// The root certificate (PEM): what a client trusts.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The intermediate certificate (PEM).
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Issues a leaf for `key` naming `names` (DNS names or IP addresses),
    /// valid from `not_before` to `not_after` (Unix seconds). Returns the
    /// chain PEM: leaf, then intermediate.
    pub(crate) fn issue(&self, key: &impl PublicKeyData, names: &[&str], not_before: i64, not_after: i64) -> String {
        let mut p = CertificateParams::default();
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("valid DNS name")),
            })
            .collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0]);
        p.distinguished_name = dn;
        p.not_before = at(not_before);
        p.not_after = at(not_after);
        p.serial_number = Some(next_serial());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let leaf = p.signed_by(key, &self.intermediate).expect("signing leaf");
        format!("{}{}", leaf.pem(), self.intermediate_pem)
    }

    /// A new key pair and a chain for it (leaf, then intermediate); returns
    /// `(chain PEM, PKCS#8 key PEM)`. For TLS servers the harness runs.
    pub fn issue_with_new_key(&self, names: &[&str], not_before: i64, not_after: i64) -> (String, String) {
        let key = KeyPair::generate().expect("generating leaf key");
        let chain = self.issue(&key, names, not_before, not_after);
        (chain, key.serialize_pem())
    }
}

/// A self-signed certificate for `names` with a new key, valid for a day
/// around now: `(certificate PEM, PKCS#8 key PEM)`.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("generating key");
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("names");
    let now = crate::unix_now();
    p.not_before = at(now - 3600);
    p.not_after = at(now + 86_400);
    let cert = p.self_signed(&key).expect("self-signing");
    (cert.pem(), key.serialize_pem())
}
