//! The first-boot certificate: self-signed, for the device's hostname, so
//! the web server can start with TLS before the real certificate arrives.
//! The agent replaces it as soon as it can ([`crate::certificate::CertInfo`]
//! marks it `self_signed`, which always asks for renewal).

use crate::error::{Error, Result};
use crate::install::Material;
use crate::keygen::CertKey;

/// How far notBefore is set in the past: a day, so a browser whose clock
/// is a little behind the device's still accepts the dates.
pub const BACKDATE_SECS: i64 = 86_400;

/// Lifetime after `now`: a year. A device without an RTC may make this
/// certificate with a clock set from file times (OpenWrt's sysfixtime) and
/// stay offline for weeks; a short lifetime would add an "expired" warning
/// to the unavoidable "self-signed" one without buying anything.
pub const LIFETIME_SECS: i64 = 365 * 86_400;

/// A self-signed certificate for `hostname` with `key`, valid from
/// `now - 1 day` to `now + 1 year`. Returns the set to install: key,
/// certificate, an empty chain, and a fullchain that is the certificate.
pub fn generate(key: &CertKey, hostname: &str, now: i64) -> Result<Material> {
    let fail = |why: String| Error::Other(format!("making a self-signed certificate for {hostname:?}: {why}"));
    crate::csr::check_hostname(hostname).map_err(fail)?;
    let mut params = crate::csr::params_for(hostname).map_err(|e| fail(e.to_string()))?;
    set_validity(
        &mut params,
        now.saturating_sub(BACKDATE_SECS),
        now.saturating_add(LIFETIME_SECS),
    )
    .map_err(fail)?;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // A random serial: browsers (Firefox: SEC_ERROR_REUSED_ISSUER_AND_SERIAL)
    // refuse two different certificates with the same issuer and serial
    // (RFC 5280 §4.1.2.2), and rcgen's default serial is derived from the
    // key, which a reinstall could reuse with new dates.
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    let signer = key.rcgen_signer();
    let cert = params.self_signed(&signer).map_err(|e| fail(e.to_string()))?;
    let cert_pem = cert.pem();
    Ok(Material {
        key_pem: key.to_pkcs8_pem()?,
        cert_pem: cert_pem.clone(),
        chain_pem: String::new(),
        fullchain_pem: cert_pem,
    })
}

/// 16 random bytes, positive and without a leading zero byte (RFC 5280
/// §4.1.2.2: a positive integer of at most 20 octets).
fn random_serial() -> Result<[u8; 16]> {
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial)
        .map_err(|e| Error::Other(format!("making a certificate serial: no randomness from the OS: {e}")))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// Sets notBefore/notAfter from Unix seconds (both at or after 1970).
///
/// rcgen takes `time::OffsetDateTime` and does not re-export the `time`
/// crate; the values are reached from rcgen's epoch by inference so the
/// agent does not need `time` as a dependency of its own.
pub(crate) fn set_validity(
    params: &mut rcgen::CertificateParams,
    not_before: i64,
    not_after: i64,
) -> Result<(), String> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |unix: i64| {
        let secs = u64::try_from(unix).ok()?;
        epoch.checked_add(std::time::Duration::from_secs(secs).try_into().ok()?)
    };
    let out_of_range = |unix: i64| format!("time {unix} is out of range for a certificate");
    params.not_before = at(not_before).ok_or_else(|| out_of_range(not_before))?;
    params.not_after = at(not_after).ok_or_else(|| out_of_range(not_after))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::{inspect, pem_to_der_chain};

    #[test]
    fn self_signed_for_the_hostname() {
        let key = CertKey::generate().unwrap();
        let now = 1_800_000_000;
        let m = generate(&key, "xi8qz.example.com", now).unwrap();
        assert_eq!(m.chain_pem, "");
        assert_eq!(m.fullchain_pem, m.cert_pem);
        assert_eq!(CertKey::from_pkcs8_pem(&m.key_pem).unwrap().spki_der(), key.spki_der());
        let der = pem_to_der_chain(m.cert_pem.as_bytes()).unwrap();
        let info = inspect(&der[0]).unwrap();
        assert!(info.self_signed);
        assert!(info.covers_name("xi8qz.example.com"));
        assert_eq!(info.dns_names.len(), 1);
        assert_eq!(info.spki_der, key.spki_der());
        assert_eq!(info.not_before, now - BACKDATE_SECS);
        assert_eq!(info.not_after, now + LIFETIME_SECS);
        let again = inspect(
            &pem_to_der_chain(generate(&key, "xi8qz.example.com", now).unwrap().cert_pem.as_bytes()).unwrap()[0],
        )
        .unwrap();
        assert_ne!(again.serial_hex, info.serial_hex);
    }

    #[test]
    fn refuses_bad_input() {
        let key = CertKey::generate().unwrap();
        assert!(generate(&key, "*.example.com", 1_800_000_000).is_err());
        assert!(generate(&key, "a.example.com", -5).is_err());
    }
}
