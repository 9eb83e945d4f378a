//! CSR parsing and the order policy of protocol §8.1: the CSR must name
//! exactly the device's hostname, carry an ECDSA P-256 (or P-384) key that
//! signed it, and not reuse the device's identity key.

use std::fmt;

use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Header, Reader, SliceReader};
use x509_cert::ext::pkix::name::{DirectoryString, GeneralName};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::request::{CertReq, ExtensionReq};

use x509_cert::der::oid::AssociatedOid;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// Why a CSR was refused (`badCSR`). The text is safe to send to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrError(pub String);

impl fmt::Display for CsrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CsrError {}

fn bad<T>(msg: impl Into<String>) -> Result<T, CsrError> {
    Err(CsrError(msg.into()))
}

/// The curves a CSR key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 with ECDSA-SHA256.
    P256,
    /// NIST P-384 with ECDSA-SHA384.
    P384,
}

/// The CSR's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrKey {
    /// Its curve.
    pub curve: Curve,
    /// The SEC1 point as in the CSR (compressed or not).
    pub sec1: Vec<u8>,
}

/// A CSR whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCsr {
    /// The public key.
    pub key: CsrKey,
    /// Subject common names.
    pub common_names: Vec<String>,
    /// dNSName entries of the subjectAltName extension request.
    pub dns_names: Vec<String>,
    /// Every other subjectAltName entry, described ("IP address 10.0.0.1").
    pub other_names: Vec<String>,
    /// Number of subjectAltName extensions requested.
    pub san_extensions: usize,
}

/// Parses a DER CSR and verifies its signature (proof of possession).
pub fn parse(der: &[u8]) -> Result<ParsedCsr, CsrError> {
    let req = CertReq::from_der(der).map_err(|e| CsrError(format!("CSR is not DER PKCS#10: {e}")))?;
    let key = public_key(&req)?;
    verify_signature(der, &req, &key)?;

    let mut common_names = Vec::new();
    for atv in req.info.subject.iter() {
        if atv.oid == COMMON_NAME {
            let s: DirectoryString = atv
                .value
                .decode_as()
                .map_err(|_| CsrError("subject CN is not a string".into()))?;
            common_names.push(s.value().into_owned());
        }
    }

    let mut parsed = ParsedCsr {
        key,
        common_names,
        dns_names: Vec::new(),
        other_names: Vec::new(),
        san_extensions: 0,
    };
    for attr in req.info.attributes.iter() {
        if attr.oid != ExtensionReq::OID {
            continue;
        }
        for value in attr.values.iter() {
            let extensions: Vec<Extension> = value
                .decode_as()
                .map_err(|e| CsrError(format!("extension request is not valid: {e}")))?;
            for ext in extensions.iter().filter(|e| e.extn_id == SubjectAltName::OID) {
                parsed.san_extensions += 1;
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| CsrError(format!("subjectAltName is not valid: {e}")))?;
                for name in san.0 {
                    match name {
                        GeneralName::DnsName(n) => parsed.dns_names.push(n.as_str().to_string()),
                        other => parsed.other_names.push(describe(&other)),
                    }
                }
            }
        }
    }
    Ok(parsed)
}

/// Parses `der` and applies the order policy for a device with `hostname`
/// and identity key `identity_sec1` (uncompressed SEC1 P-256 point).
pub fn check(der: &[u8], hostname: &str, identity_sec1: &[u8]) -> Result<ParsedCsr, CsrError> {
    let csr = parse(der)?;
    if let Some(other) = csr.other_names.first() {
        return bad(format!(
            "CSR names {other}; only the device's hostname {hostname} is allowed"
        ));
    }
    if csr.san_extensions != 1 {
        return bad(format!(
            "CSR must request exactly one subjectAltName extension naming {hostname}"
        ));
    }
    if let Some(wild) = csr.dns_names.iter().find(|n| n.contains('*')) {
        return bad(format!("CSR names the wildcard {wild:?}; only {hostname} is allowed"));
    }
    match csr.dns_names.as_slice() {
        [one] if one.eq_ignore_ascii_case(hostname) => {}
        [one] => return bad(format!("CSR names {one:?}; this device may only request {hostname}")),
        names => {
            return bad(format!(
                "CSR names {} DNS names; it must name exactly {hostname}",
                names.len()
            ))
        }
    }
    match csr.common_names.as_slice() {
        [] => {}
        [cn] if cn.eq_ignore_ascii_case(hostname) => {}
        [cn] => return bad(format!("CSR subject CN {cn:?} differs from {hostname}")),
        _ => return bad("CSR subject has more than one CN"),
    }
    if csr.key.curve == Curve::P256 && same_p256_key(&csr.key.sec1, identity_sec1) {
        return bad("CSR key is the device's identity key; use a separate certificate key");
    }
    Ok(csr)
}

fn same_p256_key(a: &[u8], b: &[u8]) -> bool {
    match (
        p256::ecdsa::VerifyingKey::from_sec1_bytes(a),
        p256::ecdsa::VerifyingKey::from_sec1_bytes(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn public_key(req: &CertReq) -> Result<CsrKey, CsrError> {
    let spki = &req.info.public_key;
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return bad("CSR key is not an ECDSA key (P-256 or P-384 required)");
    }
    let curve_oid: ObjectIdentifier = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .ok_or_else(|| CsrError("CSR key has no named curve".into()))?;
    let curve = match curve_oid {
        SECP256R1 => Curve::P256,
        SECP384R1 => Curve::P384,
        _ => return bad("CSR key curve is not P-256 or P-384"),
    };
    let sec1 = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| CsrError("CSR public key is not a whole number of bytes".into()))?
        .to_vec();
    // Parse the point now, so a key off the curve is a CSR error.
    let on_curve = match curve {
        Curve::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).is_ok(),
        Curve::P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).is_ok(),
    };
    if !on_curve {
        return bad("CSR public key is not a valid point");
    }
    Ok(CsrKey { curve, sec1 })
}

/// The exact DER of `certificationRequestInfo`, the signed bytes: taken from
/// the input rather than re-encoded, so what is verified is what was signed.
fn signed_bytes(der: &[u8]) -> Result<&[u8], x509_cert::der::Error> {
    let mut reader = SliceReader::new(der)?;
    let _outer = Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

fn verify_signature(der: &[u8], req: &CertReq, key: &CsrKey) -> Result<(), CsrError> {
    use p256::ecdsa::signature::Verifier;
    let info = signed_bytes(der).map_err(|e| CsrError(format!("CSR is not DER PKCS#10: {e}")))?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| CsrError("CSR signature is not a whole number of bytes".into()))?;
    let alg = req.algorithm.oid;
    let ok = match key.curve {
        Curve::P256 if alg == ECDSA_WITH_SHA256 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.sec1);
            let sig = p256::ecdsa::Signature::from_der(sig);
            match (vk, sig) {
                (Ok(vk), Ok(sig)) => vk.verify(info, &sig.normalize_s()).is_ok(),
                _ => false,
            }
        }
        Curve::P384 if alg == ECDSA_WITH_SHA384 => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&key.sec1);
            let sig = p384::ecdsa::Signature::from_der(sig);
            match (vk, sig) {
                (Ok(vk), Ok(sig)) => vk.verify(info, &sig.normalize_s()).is_ok(),
                _ => false,
            }
        }
        Curve::P256 => return bad("CSR signature algorithm must be ecdsa-with-SHA256 for a P-256 key"),
        Curve::P384 => return bad("CSR signature algorithm must be ecdsa-with-SHA384 for a P-384 key"),
    };
    if ok {
        Ok(())
    } else {
        bad("CSR signature does not verify")
    }
}

fn describe(name: &GeneralName) -> String {
    match name {
        GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
            4 | 16 => {
                let b = ip.as_bytes();
                let addr: std::net::IpAddr = if b.len() == 4 {
                    std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
                } else {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(b);
                    std::net::Ipv6Addr::from(a).into()
                };
                format!("the IP address {addr}")
            }
            _ => "an IP address".into(),
        },
        GeneralName::Rfc822Name(n) => format!("the email address {:?}", n.as_str()),
        GeneralName::UniformResourceIdentifier(n) => format!("the URI {:?}", n.as_str()),
        GeneralName::DnsName(n) => format!("the DNS name {:?}", n.as_str()),
        GeneralName::OtherName(_) => "an otherName".into(),
        GeneralName::DirectoryName(_) => "a directory name".into(),
        GeneralName::EdiPartyName(_) => "an EDI party name".into(),
        GeneralName::RegisteredId(_) => "a registered id".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    pub(crate) const HOST: &str = "xi8qz.devices.example.com";

    /// A CSR for `sans` (strings parsing as IPs become IP SANs) with an
    /// optional CN, signed by `key`.
    pub(crate) fn csr(key: &KeyPair, sans: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn p256_key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn identity() -> Vec<u8> {
        p256_key().public_key_raw().to_vec()
    }

    #[test]
    fn good_csr_passes() {
        let k = p256_key();
        let parsed = check(&csr(&k, &[HOST], Some(HOST)), HOST, &identity()).unwrap();
        assert_eq!(parsed.dns_names, [HOST]);
        assert_eq!(parsed.key.curve, Curve::P256);
        assert_eq!(parsed.key.sec1, k.public_key_raw());
        // Case-insensitive, and CN optional.
        check(&csr(&k, &[&HOST.to_uppercase()], None), HOST, &identity()).unwrap();
    }

    #[test]
    fn p384_is_accepted() {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let parsed = check(&csr(&k, &[HOST], None), HOST, &identity()).unwrap();
        assert_eq!(parsed.key.curve, Curve::P384);
    }

    fn refused(der: &[u8], identity: &[u8], expect: &str) {
        let e = check(der, HOST, identity).unwrap_err();
        assert!(e.0.contains(expect), "expected {expect:?} in {:?}", e.0);
    }

    #[test]
    fn extra_and_foreign_names_are_refused() {
        let k = p256_key();
        let id = identity();
        refused(&csr(&k, &[HOST, "other.devices.example.com"], None), &id, "2 DNS names");
        refused(&csr(&k, &["ab123.devices.example.com"], None), &id, "may only request");
        refused(&csr(&k, &[HOST, "10.1.1.4"], None), &id, "IP address 10.1.1.4");
        refused(&csr(&k, &["*.devices.example.com"], None), &id, "wildcard");
        refused(&csr(&k, &[], Some(HOST)), &id, "exactly one subjectAltName");
        refused(&csr(&k, &[HOST], Some("other")), &id, "CN");
    }

    #[test]
    fn identity_key_reuse_is_refused() {
        let k = p256_key();
        refused(&csr(&k, &[HOST], None), k.public_key_raw(), "identity key");
    }

    #[test]
    fn other_key_types_are_refused() {
        let k = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        refused(&csr(&k, &[HOST], None), &identity(), "not an ECDSA key");
    }

    #[test]
    fn bad_signature_and_garbage_are_refused() {
        let k = p256_key();
        let mut der = csr(&k, &[HOST], None);
        // The hostname bytes sit inside the signed part: flip one.
        let pos = der.windows(5).position(|w| w == b"xi8qz").unwrap();
        der[pos] = b'y';
        refused(&der, &identity(), "signature does not verify");
        refused(b"\x30\x03\x02\x01\x00", &identity(), "not DER");
        refused(b"", &identity(), "not DER");
    }
}
