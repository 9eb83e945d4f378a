//! `GET /v1/directory` (protocol §4).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{SharedApp, ADDRESSES_PATH, ENROLL_PATH, NONCE_PATH, ORDERS_PATH, STATUS_PATH};

pub(super) async fn get(State(app): State<SharedApp>) -> Response {
    let body = json!({
        "newNonce": app.url(NONCE_PATH),
        "enroll": app.url(ENROLL_PATH),
        "addresses": app.url(ADDRESSES_PATH),
        "newOrder": app.url(ORDERS_PATH),
        "status": app.url(STATUS_PATH),
        "meta": {"protocol": lancert_protocol::PROTOCOL_VERSION},
    });
    super::json(StatusCode::OK, &body)
}
