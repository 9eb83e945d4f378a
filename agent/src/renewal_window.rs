//! When the installed certificate is due for renewal.
//!
//! The certificate on disk is the truth: the decision reads the installed
//! certificate and key, never a remembered expiry, so a lost or corrupt
//! state file cannot by itself cause an order. Thresholds are fractions of
//! the certificate's own lifetime, never fixed days, because lifetimes are
//! shrinking (Let's Encrypt: 90 days, 64 from 2027, 45 from 2028).

use crate::certificate::CertInfo;
use crate::schedule::Random;

/// A server-suggested renewal window (protocol §8.3, e.g. RFC 9773 ARI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, Unix seconds.
    pub start: i64,
    /// End, Unix seconds (exclusive).
    pub end: i64,
}

/// Why a renewal is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No certificate is installed.
    Missing,
    /// The installed certificate cannot be parsed.
    Corrupt(String),
    /// The installed certificate is the first-boot self-signed one.
    SelfSigned,
    /// The certificate does not cover the device's hostname.
    WrongName,
    /// The key file does not hold the certificate's key.
    KeyMismatch,
    /// The certificate has expired.
    Expired,
    /// Less than a third of the lifetime is left (Let's Encrypt's advice).
    LastThird,
    /// The moment picked inside the server's window has come.
    ServerWindow,
    /// The fullchain file does not start with the installed certificate
    /// (and the `.bak` set could not be put back).
    FullchainMismatch,
    /// The key file lets group or others read it: the key may have been
    /// read, so it is replaced by a fresh one.
    KeyExposed {
        /// The key file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Missing => f.write_str("no certificate is installed"),
            Reason::Corrupt(why) => write!(f, "the installed certificate is unreadable ({why})"),
            Reason::SelfSigned => f.write_str("the installed certificate is the first-boot self-signed one"),
            Reason::WrongName => f.write_str("the installed certificate is not for this device's hostname"),
            Reason::KeyMismatch => f.write_str("the key file does not match the installed certificate"),
            Reason::Expired => f.write_str("the installed certificate has expired"),
            Reason::LastThird => f.write_str("less than a third of the certificate's lifetime is left"),
            Reason::ServerWindow => f.write_str("the server's renewal window has come"),
            Reason::FullchainMismatch => {
                f.write_str("the fullchain file does not start with the installed certificate")
            }
            Reason::KeyExposed { path, mode } => write!(
                f,
                "the key file {} has mode {mode:04o}: others may have read the private key, so it is replaced \
                 by a fresh one (the current certificate stays in service until then)",
                path.display()
            ),
        }
    }
}

/// The outcome of a certificate check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Renew now.
    Renew(Reason),
    /// Nothing to do until this wall-clock time (Unix seconds).
    Wait {
        /// When the certificate becomes due.
        until: i64,
    },
}

/// What is installed, as read from disk.
#[derive(Debug, Clone)]
pub enum Installed {
    /// No certificate file.
    Missing,
    /// A certificate file that does not parse.
    Corrupt(String),
    /// A certificate, and whether the key file holds its key.
    Present {
        /// The leaf.
        cert: CertInfo,
        /// Whether the key file's public key is the certificate's.
        key_matches: bool,
        /// Whether the fullchain file starts with this certificate.
        fullchain_matches: bool,
    },
}

/// The point at which a third of the lifetime is left.
pub fn last_third_starts(cert: &CertInfo) -> i64 {
    cert.not_before + cert.lifetime_secs().max(0) / 3 * 2
}

/// The latest moment a server window may put the renewal at: a tenth of
/// the lifetime before expiry, so that a window reaching past the expiry (a
/// misconfigured or test CA) still leaves time to renew and retry.
pub fn latest_renewal(cert: &CertInfo) -> i64 {
    cert.not_after - cert.lifetime_secs().max(0) / 10
}

/// A uniformly random moment inside `window` (RFC 9773 §4.2: clients select
/// a uniform random time within the window).
pub fn pick_moment(window: Window, rng: &mut dyn Random) -> i64 {
    let span = u64::try_from(window.end.saturating_sub(window.start)).unwrap_or(0);
    window.start + i64::try_from(rng.below(span)).unwrap_or(0)
}

/// Decides at wall-clock `now` (already known to be sane). `moment` is the
/// time picked inside the server's window for this very certificate, if the
/// server suggested one.
pub fn decide(installed: &Installed, hostname: &str, moment: Option<i64>, now: i64) -> Decision {
    let (cert, key_matches) = match installed {
        Installed::Missing => return Decision::Renew(Reason::Missing),
        Installed::Corrupt(why) => return Decision::Renew(Reason::Corrupt(why.clone())),
        Installed::Present { cert, key_matches, .. } => (cert, *key_matches),
    };
    if cert.self_signed {
        return Decision::Renew(Reason::SelfSigned);
    }
    if !cert.covers_name(hostname) {
        return Decision::Renew(Reason::WrongName);
    }
    if !key_matches {
        return Decision::Renew(Reason::KeyMismatch);
    }
    if now >= cert.not_after {
        return Decision::Renew(Reason::Expired);
    }
    let (at, reason) = match moment {
        Some(m) => (m.min(latest_renewal(cert)), Reason::ServerWindow),
        None => (last_third_starts(cert), Reason::LastThird),
    };
    if now >= at {
        Decision::Renew(reason)
    } else {
        Decision::Wait { until: at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SeededRandom;

    const DAY: i64 = 86_400;

    fn cert(not_before: i64, days: i64) -> CertInfo {
        CertInfo {
            not_before,
            not_after: not_before + days * DAY,
            dns_names: vec!["xi8qz.example.com".into()],
            spki_der: vec![1, 2, 3],
            serial_hex: "01".into(),
            subject: "CN=xi8qz.example.com".into(),
            issuer: "CN=CA".into(),
            self_signed: false,
        }
    }

    fn present(c: CertInfo) -> Installed {
        Installed::Present {
            cert: c,
            key_matches: true,
            fullchain_matches: true,
        }
    }

    #[test]
    fn renews_at_two_thirds_of_any_lifetime() {
        for days in [90, 64, 45, 6] {
            let c = cert(0, days);
            let two_thirds = days * DAY * 2 / 3;
            assert_eq!(
                decide(&present(c.clone()), "xi8qz.example.com", None, two_thirds - 1),
                Decision::Wait { until: two_thirds }
            );
            assert_eq!(
                decide(&present(c), "xi8qz.example.com", None, two_thirds),
                Decision::Renew(Reason::LastThird)
            );
        }
    }

    #[test]
    fn every_reason() {
        let h = "xi8qz.example.com";
        assert_eq!(
            decide(&Installed::Missing, h, None, 0),
            Decision::Renew(Reason::Missing)
        );
        assert!(matches!(
            decide(&Installed::Corrupt("x".into()), h, None, 0),
            Decision::Renew(Reason::Corrupt(_))
        ));
        let mut c = cert(0, 90);
        c.self_signed = true;
        assert_eq!(decide(&present(c), h, None, 1), Decision::Renew(Reason::SelfSigned));
        assert_eq!(
            decide(&present(cert(0, 90)), "other.example.com", None, 1),
            Decision::Renew(Reason::WrongName)
        );
        let mismatched = Installed::Present {
            cert: cert(0, 90),
            key_matches: false,
            fullchain_matches: true,
        };
        assert_eq!(decide(&mismatched, h, None, 1), Decision::Renew(Reason::KeyMismatch));
        assert_eq!(
            decide(&present(cert(0, 90)), h, Some(200 * DAY), 90 * DAY),
            Decision::Renew(Reason::Expired)
        );
    }

    #[test]
    fn server_window_moment_overrides_the_last_third() {
        let c = cert(0, 90);
        let early = 30 * DAY;
        assert_eq!(
            decide(&present(c.clone()), "xi8qz.example.com", Some(early), early - 1),
            Decision::Wait { until: early }
        );
        assert_eq!(
            decide(&present(c.clone()), "xi8qz.example.com", Some(early), early),
            Decision::Renew(Reason::ServerWindow)
        );
        // A moment past the last tenth of the lifetime (a window reaching
        // beyond expiry) is capped there, leaving 9 days to renew and retry.
        assert_eq!(
            decide(&present(c.clone()), "xi8qz.example.com", Some(500 * DAY), 0),
            Decision::Wait { until: 81 * DAY }
        );
        assert_eq!(
            decide(&present(c), "xi8qz.example.com", Some(85 * DAY), 81 * DAY),
            Decision::Renew(Reason::ServerWindow)
        );
    }

    #[test]
    fn moments_are_uniform_inside_the_window() {
        let w = Window {
            start: 1_000,
            end: 2_000,
        };
        let mut r = SeededRandom(9);
        let picks: Vec<i64> = (0..5_000).map(|_| pick_moment(w, &mut r)).collect();
        assert!(picks.iter().all(|p| (1_000..2_000).contains(p)));
        let low = picks.iter().filter(|p| **p < 1_500).count();
        assert!((2_250..2_750).contains(&low), "{low}");
        assert_eq!(pick_moment(Window { start: 5, end: 5 }, &mut r), 5);
    }
}
