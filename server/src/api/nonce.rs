//! `HEAD /v1/nonce` (200) and `GET /v1/nonce` (204), as RFC 8555 §7.2.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::SharedApp;

fn fresh(app: &SharedApp, status: StatusCode) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    super::insert_nonce(app, headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) async fn head(State(app): State<SharedApp>) -> Response {
    fresh(&app, StatusCode::OK)
}

pub(super) async fn get(State(app): State<SharedApp>) -> Response {
    fresh(&app, StatusCode::NO_CONTENT)
}
