//! Problem responses (protocol §9): an `application/problem+json` document
//! built by `lancert_protocol::problem::document`, the matching HTTP status
//! and an optional `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lancert_protocol::problem::{document, ProblemType};
use lancert_protocol::CONTENT_TYPE_PROBLEM;

use crate::store::StoreError;

/// A request that ends in an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What the device can act on.
    pub kind: ProblemType,
    /// For humans; never internals beyond what helps.
    pub detail: String,
    /// `Retry-After` seconds, when known.
    pub retry_after: Option<u64>,
    /// An HTTP status other than the type's own (413 for oversized bodies,
    /// which protocol §2 allows).
    pub status: Option<u16>,
}

impl Problem {
    /// A problem of `kind`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            retry_after: None,
            status: None,
        }
    }

    /// `malformed`.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemType::Malformed, detail)
    }

    /// `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemType::Unauthorized, detail)
    }

    /// `notFound`.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemType::NotFound, detail)
    }

    /// `serverInternal`, logging the cause, which stays out of the response.
    pub fn internal(cause: &dyn std::fmt::Display) -> Problem {
        log::error!("{cause}");
        Problem::new(ProblemType::ServerInternal, "internal server error")
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    /// Overrides the HTTP status.
    pub fn with_status(mut self, status: u16) -> Problem {
        self.status = Some(status);
        self
    }

    /// The HTTP status of the response.
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.kind.http_status())
    }

    /// The problem document.
    pub fn body(&self) -> serde_json::Value {
        let mut doc = document(self.kind, &self.detail);
        doc["status"] = self.http_status().into();
        doc
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        Problem::internal(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_status_follows_override() {
        let p = Problem::malformed("too big").with_status(413);
        assert_eq!(p.body()["status"], 413);
        assert_eq!(p.body()["type"], "urn:lancert:problem:malformed");
        let r = Problem::new(ProblemType::RateLimited, "slow down")
            .with_retry_after(30)
            .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "30");
        assert_eq!(r.headers()[header::CONTENT_TYPE], CONTENT_TYPE_PROBLEM);
    }
}
