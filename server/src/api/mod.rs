//! The HTTP API (protocol §4–§10): routes, shared state, and the layers
//! every request passes (a time limit, and a fresh `Replay-Nonce` on every
//! POST response, errors included).

mod addresses;
mod certificates;
mod directory;
mod enroll;
mod nonce;
mod orders;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lancert_protocol::problem::ProblemType;
use lancert_protocol::HEADER_REPLAY_NONCE;
use serde_json::Value;

use crate::dns::DnsBackend;
use crate::issuance::Issuance;
use crate::nonce::NonceStore;
use crate::problem::Problem;
use crate::request_auth::{self, KeyRule, Verified, Verifier};
use crate::store::Store;

/// How long orders are kept, and so how long a certificate can be
/// downloaded (the order's `expires`).
pub const ORDER_LIFETIME_SECS: i64 = 7 * 86_400;

/// Path of the nonce endpoint.
pub const NONCE_PATH: &str = "/v1/nonce";
/// Path of the enroll endpoint.
pub const ENROLL_PATH: &str = "/v1/enroll";
/// Path of the addresses endpoint.
pub const ADDRESSES_PATH: &str = "/v1/addresses";
/// Path of the new-order endpoint; orders are below it.
pub const ORDERS_PATH: &str = "/v1/orders";
/// Certificates are below this path.
pub const CERTIFICATES_PATH: &str = "/v1/certificates";
/// Path of the status endpoint.
pub const STATUS_PATH: &str = "/v1/status";

/// Everything the handlers share.
pub struct App {
    /// The database.
    pub store: Arc<Store>,
    /// Issued nonces.
    pub nonces: NonceStore,
    /// The zone's records.
    pub dns: Arc<dyn DnsBackend>,
    /// Background issuance.
    pub issuance: Issuance,
    /// Base URL, no trailing slash.
    pub public_url: String,
    /// The zone device hostnames are drawn in.
    pub zone: String,
    /// `Retry-After` while an order is processing.
    pub retry_after_secs: u64,
    /// Most orders per device per hour.
    pub orders_per_hour: u32,
    /// Longest time one request may take once its headers are in, body
    /// reading included, so a slow client cannot hold a connection longer
    /// (`request_timeout_secs`; the headers have their own limit, see
    /// `serve`). Answered with 408.
    pub request_timeout: Duration,
}

/// The shared state.
pub type SharedApp = Arc<App>;

impl App {
    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Checks and verifies a signed POST to `path`.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: Body,
        path: &str,
        rule: KeyRule,
    ) -> Result<Verified, Problem> {
        request_auth::check_content_type(headers)?;
        let bytes = request_auth::read_body(headers, body).await?;
        Verifier {
            nonces: &self.nonces,
            store: &self.store,
            public_url: &self.public_url,
        }
        .verify(&bytes, path, rule)
    }
}

/// The router with all endpoints and layers.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route(lancert_protocol::DIRECTORY_PATH, get(directory::get))
        .route(NONCE_PATH, get(nonce::get).head(nonce::head))
        .route(ENROLL_PATH, post(enroll::post))
        .route(ADDRESSES_PATH, post(addresses::post))
        .route(ORDERS_PATH, post(orders::create))
        .route(&format!("{ORDERS_PATH}/{{id}}"), post(orders::poll))
        .route(&format!("{CERTIFICATES_PATH}/{{id}}"), post(certificates::post))
        .route(STATUS_PATH, post(status::post))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), time_limit))
        .layer(middleware::from_fn_with_state(app.clone(), replay_nonce))
        .with_state(app)
}

async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

async fn time_limit(State(app): State<SharedApp>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Problem::new(ProblemType::ServerInternal, "request took too long")
            .with_status(408)
            .into_response(),
    }
}

/// Protocol §2: every response to a POST carries a fresh nonce.
async fn replay_nonce(State(app): State<SharedApp>, req: Request, next: Next) -> Response {
    let is_post = req.method() == Method::POST;
    let mut response = next.run(req).await;
    if is_post {
        insert_nonce(&app, response.headers_mut());
    }
    response
}

fn insert_nonce(app: &App, headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&app.nonces.issue()) {
        headers.insert(HEADER_REPLAY_NONCE, v);
    }
}

/// A JSON response.
fn json(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        value.to_string(),
    )
        .into_response()
}
