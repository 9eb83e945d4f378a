//! Enrollment tokens and hostnames: minting, hashing, random labels.
//!
//! A token is 24 random bytes in base64url (192 bits): unguessable, and short
//! enough to paste. Only its SHA-256 is stored.

use sha2::{Digest, Sha256};

use crate::store::NewToken;

/// Most tokens one `token` command mints.
pub const MAX_TOKENS_PER_MINT: u32 = 10_000;
/// Default token lifetime: 7 days.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 7 * 86_400;
/// Longest token lifetime: 1 year.
pub const MAX_TOKEN_TTL_SECS: u64 = 366 * 86_400;
/// Length of a random hostname label (36^5, about 60 million names).
pub const LABEL_LEN: usize = 5;

/// SHA-256 of a token's text, the form it is stored in.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Mints `count` tokens valid from `now` for `ttl_secs`, optionally bound to
/// `hostname`. Returns the token texts and the rows to store.
pub fn mint(count: u32, hostname: Option<&str>, now: i64, ttl_secs: u64) -> (Vec<String>, Vec<NewToken>) {
    let expires = now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
    (0..count)
        .map(|_| {
            let text = crate::random::token::<24>();
            let row = NewToken {
                hash: hash(&text),
                hostname: hostname.map(str::to_string),
                created: now,
                expires,
            };
            (text, row)
        })
        .unzip()
}

/// A random label of [`LABEL_LEN`] characters from `[a-z0-9]`, uniformly
/// drawn (bytes of 252 and above are rejected so that `% 36` is unbiased).
pub fn random_label() -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut label = String::with_capacity(LABEL_LEN);
    while label.len() < LABEL_LEN {
        for b in crate::random::bytes::<16>() {
            if b < 252 && label.len() < LABEL_LEN {
                label.push(ALPHABET[usize::from(b % 36)] as char);
            }
        }
    }
    label
}

/// A random hostname `label.zone`.
pub fn random_hostname(zone: &str) -> String {
    format!("{}.{zone}", random_label())
}

/// Checks that `name` is a single label directly under `zone`
/// (`label.zone`), returning it lowercased.
pub fn check_hostname_in_zone(name: &str, zone: &str) -> Result<String, String> {
    let name = crate::config::check_dns_name(name)?;
    match name.strip_suffix(zone).and_then(|l| l.strip_suffix('.')) {
        Some(label) if !label.is_empty() && !label.contains('.') => Ok(name),
        _ => Err(format!(
            "{name:?} is not a name directly under the zone {zone:?} (label.{zone})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_distinct_and_hashed() {
        let (texts, rows) = mint(3, Some("ab.zone.test"), 100, 60);
        assert_eq!(texts.len(), 3);
        assert_ne!(texts[0], texts[1]);
        assert_eq!(texts[0].len(), 32);
        assert_eq!(rows[0].hash, hash(&texts[0]));
        assert_eq!(rows[0].hash.len(), 32);
        assert_eq!(rows[0].expires, 160);
        assert_eq!(rows[2].hostname.as_deref(), Some("ab.zone.test"));
    }

    #[test]
    fn labels_are_short_lowercase_alphanumerics() {
        for _ in 0..200 {
            let l = random_label();
            assert_eq!(l.len(), LABEL_LEN);
            assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{l}");
        }
        assert!(random_hostname("d.example.com").ends_with(".d.example.com"));
    }

    #[test]
    fn hostnames_must_be_one_label_under_the_zone() {
        let zone = "devices.example.com";
        assert_eq!(
            check_hostname_in_zone("Xi8qz.Devices.Example.com", zone).unwrap(),
            "xi8qz.devices.example.com"
        );
        for bad in [
            "devices.example.com",
            "a.b.devices.example.com",
            "xdevices.example.com",
            "a.example.com",
            "*.devices.example.com",
            "-a.devices.example.com",
        ] {
            assert!(check_hostname_in_zone(bad, zone).is_err(), "{bad}");
        }
    }
}
