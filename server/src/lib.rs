//! The lancert reference management server (`docs/protocol.md`).
//!
//! Devices enroll with a one-time token, publish their LAN addresses as A/AAAA
//! records of their hostname, order certificates with a CSR and poll for
//! them, and send status reports. The "embedded default" issues from its own
//! local CA ([`issuer::local_ca`]) and keeps the zone's records in SQLite
//! ([`dns::store`]), so a whole fleet can be served from one machine. In
//! production the [`issuer::acme`] issuer obtains publicly trusted
//! certificates with dns-01, publishing the records itself
//! ([`dns::authoritative`]) or through an existing primary
//! ([`dns::rfc2136`]); [`issuance`] queues orders within the CA's rate limits
//! ([`budget`]).
//!
//! Request flow: [`api`] routes a request, [`request_auth`] checks its JWS
//! (size, shape, [`nonce`], url, key, signature), the endpoint handler applies
//! [`addresses`], [`csr_check`] or [`tokens`] rules and records the result in
//! the [`store`]; accepted orders are issued in the background by
//! [`issuance`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addresses;
pub mod admin;
pub mod api;
pub mod budget;
pub mod chain_info;
pub mod cli;
pub mod clock;
pub mod config;
pub mod csr_check;
pub mod dns;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod issuance;
pub mod issuer;
pub mod logger;
pub mod nonce;
pub mod problem;
pub mod random;
pub mod request_auth;
pub mod serve;
pub mod store;
pub mod tls;
pub mod tokens;

pub use error::Error;

/// A boxed, sendable future: the return type of the backend traits'
/// methods, so that backends can be chosen at run time (`dyn Issuer`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
