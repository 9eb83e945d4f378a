//! Validation of a certificate chain from the server before anything is
//! written (protocol §8.4): the leaf holds our CSR's key, names our
//! hostname, is valid now, and the chain verifies to the trust anchors for
//! TLS server authentication.
//!
//! webpki does the authoritative check (path building, signatures, name,
//! validity of every certificate, EKU, basic constraints). The same
//! properties are also checked one by one first, only so that a refusal
//! says precisely what was wrong instead of webpki's terse error kinds.

use crate::certificate::{inspect, pem_to_der_chain, CertInfo};
use crate::error::{Error, Result};
use crate::trust::{crypto_provider, TrustAnchors};
use lancert_protocol::time::format_rfc3339;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_cert::der::pem::LineEnding;

/// A chain that passed [`validate`], re-encoded as clean PEM (whatever text
/// the server put around the blocks is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidChain {
    /// The leaf certificate.
    pub leaf_pem: String,
    /// The certificates after the leaf, in the server's order (the
    /// intermediates, and the root if the server sent it).
    pub chain_pem: String,
    /// The leaf followed by the chain.
    pub fullchain_pem: String,
    /// What the leaf says.
    pub info: CertInfo,
}

/// Validates the PEM chain `chain_pem` (leaf first, RFC 8555 §9.1) for
/// `hostname` at `now` (Unix seconds): the leaf's key must be
/// `expected_spki` (DER SubjectPublicKeyInfo of the CSR key), and the chain
/// must verify to `anchors`. Any failure is `Error::Rejected` with the
/// reason.
pub fn validate(
    chain_pem: &[u8],
    expected_spki: &[u8],
    hostname: &str,
    now: i64,
    anchors: &TrustAnchors,
) -> Result<ValidChain> {
    let refuse = |why: String| Error::rejected(format!("validating the certificate for {hostname}"), why);
    let ders = pem_to_der_chain(chain_pem).map_err(|e| refuse(format!("not PEM: {e}")))?;
    let info = inspect(&ders[0]).map_err(|e| refuse(format!("leaf certificate: {e}")))?;

    if info.spki_der != expected_spki {
        return Err(refuse("leaf key is not the key of our CSR".into()));
    }
    if !info.covers_name(hostname) {
        let names = if info.dns_names.is_empty() {
            "no DNS name".to_string()
        } else {
            info.dns_names.join(", ")
        };
        return Err(refuse(format!("certificate is for {names}, not {hostname}")));
    }
    // RFC 5280 §4.1.2.5: both ends of the validity period are inclusive.
    if now < info.not_before {
        return Err(refuse(format!(
            "not valid before {} (now is {}; is the clock right?)",
            format_rfc3339(info.not_before),
            format_rfc3339(now)
        )));
    }
    if now > info.not_after {
        return Err(refuse(format!(
            "expired at {} (now is {})",
            format_rfc3339(info.not_after),
            format_rfc3339(now)
        )));
    }

    let server_name = ServerName::try_from(hostname.to_string())
        .map_err(|e| refuse(format!("{hostname:?} is not a DNS name: {e}")))?;
    let now_unix = u64::try_from(now).map_err(|_| refuse(format!("the clock is before 1970 ({now})")))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(anchors.root_store(), crypto_provider())
        .build()
        .map_err(|e| refuse(format!("chain does not verify to the trust anchors: {e}")))?;
    let certs: Vec<CertificateDer<'_>> = ders.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
    verifier
        .verify_server_cert(
            &certs[0],
            &certs[1..],
            &server_name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix)),
        )
        .map_err(|e| refuse(format!("chain does not verify to the trust anchors: {e}")))?;

    let encode = |der: &[u8]| {
        x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, der)
            .map_err(|e| Error::Other(format!("encoding a certificate as PEM: {e}")))
    };
    let leaf_pem = encode(&ders[0])?;
    let mut chain = String::new();
    for der in &ders[1..] {
        chain.push_str(&encode(der)?);
    }
    Ok(ValidChain {
        fullchain_pem: format!("{leaf_pem}{chain}"),
        leaf_pem,
        chain_pem: chain,
        info,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keygen::CertKey;
    use crate::self_signed::set_validity;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    pub(crate) const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    /// A root CA and an intermediate, as a public CA would have.
    pub(crate) struct TestCa {
        pub root_pem: String,
        pub intermediate_pem: String,
        intermediate: Issuer<'static, KeyPair>,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut p, NOW - 1000 * DAY, NOW + 1000 * DAY).unwrap();
        p
    }

    impl TestCa {
        pub(crate) fn new(name: &str) -> TestCa {
            let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let root_params = ca_params(&format!("{name} Root"));
            let root_cert = root_params.self_signed(&root_key).unwrap();
            let root = Issuer::new(root_params, root_key);
            let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let int_params = ca_params(&format!("{name} Intermediate"));
            let int_cert = int_params.signed_by(&int_key, &root).unwrap();
            TestCa {
                root_pem: root_cert.pem(),
                intermediate_pem: int_cert.pem(),
                intermediate: Issuer::new(int_params, int_key),
            }
        }

        pub(crate) fn anchors(&self) -> TrustAnchors {
            TrustAnchors::from_pem(self.root_pem.as_bytes()).unwrap()
        }

        /// A leaf for `names` with `key`, valid `not_before..=not_after`.
        pub(crate) fn leaf(&self, key: &CertKey, names: &[&str], not_before: i64, not_after: i64) -> String {
            let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            p.use_authority_key_identifier_extension = true;
            set_validity(&mut p, not_before, not_after).unwrap();
            let pk = key.rcgen_signer();
            p.signed_by(&pk, &self.intermediate).unwrap().pem()
        }

        /// The leaf and intermediate as a server sends them.
        pub(crate) fn chain(&self, key: &CertKey, host: &str) -> String {
            format!(
                "{}{}",
                self.leaf(key, &[host], NOW - DAY, NOW + 89 * DAY),
                self.intermediate_pem
            )
        }
    }

    const HOST: &str = "a.example.com";

    fn reason(r: Result<ValidChain>) -> String {
        match r {
            Err(Error::Rejected { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn good_chain() {
        let ca = TestCa::new("Test");
        let key = CertKey::generate().unwrap();
        let pem = format!("some text\n{}", ca.chain(&key, HOST));
        let v = validate(pem.as_bytes(), &key.spki_der(), HOST, NOW, &ca.anchors()).unwrap();
        assert_eq!(v.info.dns_names, [HOST]);
        assert_eq!(v.chain_pem, ca.intermediate_pem.replace("\r\n", "\n"));
        assert_eq!(v.fullchain_pem, format!("{}{}", v.leaf_pem, v.chain_pem));
        assert!(!v.leaf_pem.contains("some text"));
        // The root in the response is fine and kept, in order.
        let with_root = format!("{}{}", ca.chain(&key, HOST), ca.root_pem);
        let v = validate(with_root.as_bytes(), &key.spki_der(), HOST, NOW, &ca.anchors()).unwrap();
        assert_eq!(pem_to_der_chain(v.chain_pem.as_bytes()).unwrap().len(), 2);
        // Case differences in the name do not matter.
        assert!(validate(
            with_root.as_bytes(),
            &key.spki_der(),
            "A.Example.COM",
            NOW,
            &ca.anchors()
        )
        .is_ok());
    }

    #[test]
    fn wrong_key() {
        let ca = TestCa::new("Test");
        let key = CertKey::generate().unwrap();
        let other = CertKey::generate().unwrap();
        let r = validate(
            ca.chain(&key, HOST).as_bytes(),
            &other.spki_der(),
            HOST,
            NOW,
            &ca.anchors(),
        );
        assert_eq!(reason(r), "leaf key is not the key of our CSR");
    }

    #[test]
    fn wrong_name() {
        let ca = TestCa::new("Test");
        let key = CertKey::generate().unwrap();
        let pem = ca.chain(&key, "other.example.com");
        let r = validate(pem.as_bytes(), &key.spki_der(), HOST, NOW, &ca.anchors());
        assert_eq!(reason(r), "certificate is for other.example.com, not a.example.com");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let ca = TestCa::new("Test");
        let key = CertKey::generate().unwrap();
        let old = format!(
            "{}{}",
            ca.leaf(&key, &[HOST], NOW - 90 * DAY, NOW - 1),
            ca.intermediate_pem
        );
        let r = reason(validate(old.as_bytes(), &key.spki_der(), HOST, NOW, &ca.anchors()));
        assert_eq!(r, "expired at 2027-01-15T07:59:59Z (now is 2027-01-15T08:00:00Z)");
        let future = format!(
            "{}{}",
            ca.leaf(&key, &[HOST], NOW + 1, NOW + 90 * DAY),
            ca.intermediate_pem
        );
        let r = reason(validate(future.as_bytes(), &key.spki_der(), HOST, NOW, &ca.anchors()));
        assert!(r.starts_with("not valid before 2027-01-15T08:00:01Z"), "{r}");
        // The last second is still valid (RFC 5280: inclusive).
        assert!(validate(old.as_bytes(), &key.spki_der(), HOST, NOW - 1, &ca.anchors()).is_ok());
    }

    #[test]
    fn untrusted_chain() {
        let ca = TestCa::new("Test");
        let other = TestCa::new("Other");
        let key = CertKey::generate().unwrap();
        let r = reason(validate(
            ca.chain(&key, HOST).as_bytes(),
            &key.spki_der(),
            HOST,
            NOW,
            &other.anchors(),
        ));
        assert!(r.starts_with("chain does not verify to the trust anchors: "), "{r}");
        // Missing intermediate: no path either.
        let leaf_only = ca.leaf(&key, &[HOST], NOW - DAY, NOW + DAY);
        let r = reason(validate(
            leaf_only.as_bytes(),
            &key.spki_der(),
            HOST,
            NOW,
            &ca.anchors(),
        ));
        assert!(r.starts_with("chain does not verify"), "{r}");
        // The built-in roots do not know the test CA.
        let r = reason(validate(
            ca.chain(&key, HOST).as_bytes(),
            &key.spki_der(),
            HOST,
            NOW,
            &TrustAnchors::builtin(),
        ));
        assert!(r.starts_with("chain does not verify"), "{r}");
    }

    #[test]
    fn garbage_and_too_many() {
        let ca = TestCa::new("Test");
        let key = CertKey::generate().unwrap();
        let r = reason(validate(
            b"<html>502 Bad Gateway</html>",
            &key.spki_der(),
            HOST,
            NOW,
            &ca.anchors(),
        ));
        assert!(r.starts_with("not PEM: "), "{r}");
        let many = format!("{}{}", ca.chain(&key, HOST), ca.intermediate_pem.repeat(7));
        let r = reason(validate(many.as_bytes(), &key.spki_der(), HOST, NOW, &ca.anchors()));
        assert!(r.contains("more than 8 certificates"), "{r}");
        let error = validate(b"", &key.spki_der(), HOST, NOW, &ca.anchors())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("validating the certificate for a.example.com: "),
            "{error}"
        );
    }
}
