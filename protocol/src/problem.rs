//! Problem types (RFC 9457 `application/problem+json`) of protocol version 1.
//!
//! The `type` URI is stable: clients branch on it, never on `detail`.

/// Prefix of every problem type URI.
pub const PREFIX: &str = "urn:lancert:problem:";

/// What went wrong, as a device can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// The nonce was unknown, used or expired: retry once with the fresh
    /// nonce from this response's `Replay-Nonce`.
    BadNonce,
    /// The request could not be parsed or is not allowed in this form.
    Malformed,
    /// The signature is invalid, or the key/device is unknown or revoked:
    /// the device must be provisioned again.
    Unauthorized,
    /// The enrollment token is unknown, used or expired.
    BadToken,
    /// The CSR is invalid: wrong names, unsupported key, bad signature.
    BadCsr,
    /// An address is not acceptable (not unicast, too many).
    RejectedAddress,
    /// Too many requests: retry after `Retry-After`.
    RateLimited,
    /// The CA or DNS step failed; retry after `Retry-After`.
    IssuanceFailed,
    /// The resource does not exist (for example an order that expired).
    NotFound,
    /// An error inside the server; retry later.
    ServerInternal,
}

impl ProblemType {
    /// Every problem type, for tables and tests.
    pub const ALL: [ProblemType; 10] = [
        ProblemType::BadNonce,
        ProblemType::Malformed,
        ProblemType::Unauthorized,
        ProblemType::BadToken,
        ProblemType::BadCsr,
        ProblemType::RejectedAddress,
        ProblemType::RateLimited,
        ProblemType::IssuanceFailed,
        ProblemType::NotFound,
        ProblemType::ServerInternal,
    ];

    /// The short name after [`PREFIX`].
    pub fn name(self) -> &'static str {
        match self {
            ProblemType::BadNonce => "badNonce",
            ProblemType::Malformed => "malformed",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::BadToken => "badToken",
            ProblemType::BadCsr => "badCSR",
            ProblemType::RejectedAddress => "rejectedAddress",
            ProblemType::RateLimited => "rateLimited",
            ProblemType::IssuanceFailed => "issuanceFailed",
            ProblemType::NotFound => "notFound",
            ProblemType::ServerInternal => "serverInternal",
        }
    }

    /// The full `type` URI.
    pub fn uri(self) -> String {
        format!("{PREFIX}{}", self.name())
    }

    /// The HTTP status a server answers with for this problem.
    pub fn http_status(self) -> u16 {
        match self {
            ProblemType::BadNonce | ProblemType::Malformed => 400,
            ProblemType::BadCsr | ProblemType::RejectedAddress => 400,
            ProblemType::Unauthorized | ProblemType::BadToken => 403,
            ProblemType::NotFound => 404,
            ProblemType::RateLimited => 429,
            ProblemType::IssuanceFailed => 502,
            ProblemType::ServerInternal => 500,
        }
    }

    /// Parses a `type` URI; `None` for types this version does not know
    /// (clients treat those like [`ProblemType::ServerInternal`]).
    pub fn from_uri(uri: &str) -> Option<ProblemType> {
        let name = uri.strip_prefix(PREFIX)?;
        ProblemType::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether retrying the same request later can succeed without the
    /// device changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProblemType::BadNonce
                | ProblemType::RateLimited
                | ProblemType::IssuanceFailed
                | ProblemType::ServerInternal
        )
    }
}

/// Builds a problem document.
pub fn document(kind: ProblemType, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "type": kind.uri(),
        "detail": detail,
        "status": kind.http_status(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for p in ProblemType::ALL {
            assert_eq!(ProblemType::from_uri(&p.uri()), Some(p));
        }
        assert_eq!(ProblemType::from_uri("urn:ietf:params:acme:error:badNonce"), None);
    }
}
