//! Certificate issuance behind a trait, so that the local CA
//! ([`local_ca::LocalCa`]) and a public ACME CA (dns-01) are interchangeable.
//!
//! An issuer gets a CSR the server has already checked (`csr_check`) and the
//! device's hostname, and may take minutes: orders call it from a background
//! task (`issuance`).

pub mod acme;
pub mod local_ca;

use std::fmt;

use lancert_protocol::problem::ProblemType;

use crate::BoxFuture;

/// When the server wants the device to renew (protocol §8.3 `renewal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Unix seconds.
    pub start: i64,
    /// Unix seconds.
    pub end: i64,
}

impl RenewalWindow {
    /// The window the reference server suggests for a certificate valid
    /// from `not_before` to `not_after`: it opens when two thirds of the
    /// lifetime have passed (where an agent without a window renews anyway,
    /// protocol §8.3) and stays open for a tenth of the lifetime, so that a
    /// fleet spreads its renewals over that tenth. For 90 days: day 60 to
    /// day 69.
    pub fn for_validity(not_before: i64, not_after: i64) -> RenewalWindow {
        let lifetime = (not_after - not_before).max(0);
        let start = not_before + lifetime * 2 / 3;
        RenewalWindow {
            start,
            end: start + (lifetime / 10).max(1),
        }
    }
}

/// A certificate chain from an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChain {
    /// PEM certificates, leaf first, then the intermediates in order.
    pub pem_chain: String,
    /// The issuer's renewal window (ACME ARI, RFC 9773), if it has one.
    pub renewal: Option<RenewalWindow>,
}

/// Why issuance failed; becomes the order's `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueError {
    /// Problem type for the device (`issuanceFailed`, `badCSR`, `rateLimited`).
    pub problem: ProblemType,
    /// For humans.
    pub detail: String,
    /// When trying again may succeed.
    pub retry_after: Option<u64>,
    /// The CA tried to validate the name and failed (counts against the
    /// CA's failed-validation limit, `budget.failures_per_name`).
    pub validation_failed: bool,
}

impl IssueError {
    /// An `issuanceFailed` error.
    pub fn failed(detail: impl Into<String>) -> IssueError {
        IssueError {
            problem: ProblemType::IssuanceFailed,
            detail: detail.into(),
            retry_after: None,
            validation_failed: false,
        }
    }
}

/// What an issuer is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// The CSR (DER), already checked by `csr_check`.
    pub csr_der: Vec<u8>,
    /// The device's hostname, the certificate's only name.
    pub hostname: String,
    /// The leaf (PEM) of the unexpired certificate this one replaces, when
    /// the same issuer issued one for this hostname (ACME ARI `replaces`).
    pub replaces: Option<String>,
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.problem.name(), self.detail)
    }
}

impl std::error::Error for IssueError {}

/// A certificate authority.
pub trait Issuer: Send + Sync {
    /// Which CA this is, as recorded with the orders (`Store::set_issuer`):
    /// certificates of another CA are never `replaces`d.
    fn name(&self) -> String;

    /// Issues a certificate for `request.hostname` from its CSR.
    fn issue<'a>(&'a self, request: &'a IssueRequest) -> BoxFuture<'a, Result<IssuedChain, IssueError>>;

    /// Whether an order that replaces an unexpired certificate is exempt
    /// from the CA's rate limits (ACME ARI, RFC 9773 `replaces`), so that the
    /// issuance budget need not count it. `false` when not known yet.
    fn renewals_exempt(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_after_two_thirds_for_a_tenth() {
        let day = 86_400;
        let w = RenewalWindow::for_validity(0, 90 * day);
        assert_eq!(w.start, 60 * day);
        assert_eq!(w.end, 69 * day);
        let w = RenewalWindow::for_validity(100, 100);
        assert!(w.end > w.start);
    }
}
