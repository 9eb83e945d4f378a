//! Certificate signing requests (PKCS#10, RFC 2986) for the device's
//! hostname, signed by the fresh certificate key as proof of possession.

use crate::error::{Error, Result};
use crate::keygen::CertKey;

/// Builds a DER CSR for `hostname`: subject CN = hostname and one
/// subjectAltName dNSName = hostname, nothing else (protocol §8.1). The CN
/// is redundant for browsers (RFC 6125 §6.4.4, SAN wins) but older
/// embedded TLS stacks and admin UIs still show it.
pub fn build(key: &CertKey, hostname: &str) -> Result<Vec<u8>> {
    let doing = || format!("building a certificate request for {hostname:?}");
    check_hostname(hostname).map_err(|why| Error::Other(format!("{}: {why}", doing())))?;
    let params = params_for(hostname).map_err(|e| Error::Other(format!("{}: {e}", doing())))?;
    let signer = key.rcgen_signer();
    let csr = params
        .serialize_request(&signer)
        .map_err(|e| Error::Other(format!("{}: {e}", doing())))?;
    Ok(csr.der().to_vec())
}

/// Certificate parameters naming `hostname` only (CN and one dNSName).
pub(crate) fn params_for(hostname: &str) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![rcgen::SanType::DnsName(hostname.try_into()?)];
    Ok(params)
}

/// Refuses anything but a plain DNS hostname (RFC 1123 §2.1 LDH labels,
/// at most 253 characters, at least two labels, not all-numeric at the
/// end so it cannot be an IPv4 address): the CSR must not carry a wildcard,
/// an IP address or anything a CA would refuse.
pub(crate) fn check_hostname(hostname: &str) -> Result<(), String> {
    if hostname.is_empty() || hostname.len() > 253 {
        return Err("not a hostname (empty or longer than 253 characters)".into());
    }
    let labels: Vec<&str> = hostname.split('.').collect();
    if labels.len() < 2 {
        return Err("not a fully qualified hostname".into());
    }
    for label in &labels {
        let ldh = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ldh || label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label {label:?} is not a DNS label (letters, digits, inner hyphens)"
            ));
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("looks like an IP address, not a hostname".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::der::{Decode, Encode};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::request::CertReq;

    #[test]
    fn csr_names_only_the_hostname_and_carries_the_key() {
        let key = CertKey::generate().unwrap();
        let der = build(&key, "xi8qz.example.com").unwrap();
        let req = CertReq::from_der(&der).unwrap();
        assert_eq!(req.info.subject.to_string(), "CN=xi8qz.example.com");
        assert_eq!(req.info.public_key.to_der().unwrap(), key.spki_der());
        // One attribute: the extension request with one extension, the SAN.
        assert_eq!(req.info.attributes.len(), 1);
        let attr = req.info.attributes.iter().next().unwrap();
        assert_eq!(attr.oid, x509_cert::der::oid::db::rfc5912::ID_EXTENSION_REQ);
        let value = attr.values.iter().next().unwrap().to_der().unwrap();
        let exts = x509_cert::ext::Extensions::from_der(&value).unwrap();
        assert_eq!(exts.len(), 1);
        assert_eq!(
            exts[0].extn_id,
            x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME
        );
        let san = SubjectAltName::from_der(exts[0].extn_value.as_bytes()).unwrap();
        assert_eq!(san.0.len(), 1);
        match &san.0[0] {
            GeneralName::DnsName(n) => assert_eq!(n.to_string(), "xi8qz.example.com"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn csr_signature_verifies() {
        use p256::ecdsa::signature::Verifier;
        let key = CertKey::generate().unwrap();
        let der = build(&key, "a.example.com").unwrap();
        let req = CertReq::from_der(&der).unwrap();
        let info = req.info.to_der().unwrap();
        let sig = p256::ecdsa::DerSignature::from_bytes(req.signature.raw_bytes()).unwrap();
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_point())
            .unwrap()
            .verify(&info, &sig)
            .unwrap();
    }

    #[test]
    fn refuses_non_hostnames() {
        let key = CertKey::generate().unwrap();
        for bad in [
            "",
            "localhost",
            "*.example.com",
            "192.168.1.1",
            "a..example.com",
            "-a.example.com",
            "a b.com",
        ] {
            let err = build(&key, bad).unwrap_err().to_string();
            assert!(err.contains("building a certificate request"), "{bad}: {err}");
        }
        assert!(check_hostname(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(check_hostname("xi8qz.example.com").is_ok());
    }
}
