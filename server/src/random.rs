//! Random values from the operating system: nonces, ids, tokens, serials.

use lancert_protocol::base64url;

/// `N` random bytes.
///
/// Panics if the operating system's random source fails: a server that
/// cannot draw random numbers cannot mint nonces, ids or keys safely, and
/// that is not a condition any request could recover from.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("operating system random source failed: {e}");
    }
    buf
}

/// `N` random bytes as unpadded base64url: 16 bytes give 128 bits in 22
/// characters from `[A-Za-z0-9_-]`.
pub fn token<const N: usize>() -> String {
    base64url::encode(&bytes::<N>())
}
