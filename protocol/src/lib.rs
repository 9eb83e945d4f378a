//! The wire format of the lancert device protocol, version 1 (`docs/protocol.md`).
//!
//! Shared by the agent (which signs) and the reference server (which
//! verifies), so both sides agree byte for byte on encodings. Nothing here
//! does I/O.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod base64url;
#[cfg(feature = "corpus-replay")]
pub mod corpus;
pub mod jws;
pub mod problem;
pub mod time;

/// Protocol version carried in the directory's `meta.protocol`.
pub const PROTOCOL_VERSION: u64 = 1;

/// Content type of every signed request body.
pub const CONTENT_TYPE_JOSE: &str = "application/jose+json";
/// Content type of error bodies (RFC 9457).
pub const CONTENT_TYPE_PROBLEM: &str = "application/problem+json";
/// Content type of a certificate chain download (RFC 8555 §9.1).
pub const CONTENT_TYPE_PEM_CHAIN: &str = "application/pem-certificate-chain";

/// Response header carrying a fresh nonce.
pub const HEADER_REPLAY_NONCE: &str = "Replay-Nonce";

/// Path of the directory below the server's base URL.
pub const DIRECTORY_PATH: &str = "/v1/directory";

/// Largest request body a server must accept; larger ones are refused (413).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Most addresses of one family a device may publish.
pub const MAX_ADDRESSES_PER_FAMILY: usize = 4;
