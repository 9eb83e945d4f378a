//! `POST /v1/certificates/{id}` (protocol §8.4): the chain of a valid
//! order, leaf first, to its owner only.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lancert_protocol::CONTENT_TYPE_PEM_CHAIN;

use super::orders::owned_order;
use super::{SharedApp, CERTIFICATES_PATH};
use crate::problem::Problem;
use crate::request_auth::KeyRule;

pub(super) async fn post(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let verified = app
        .verify(&headers, body, &format!("{CERTIFICATES_PATH}/{id}"), KeyRule::Kid)
        .await?;
    verified.expect_post_as_get()?;
    let order = owned_order(&app, verified.device()?, &id)?;
    let chain = order.chain.ok_or_else(|| Problem::not_found("no such certificate"))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PEM_CHAIN))],
        chain,
    )
        .into_response())
}
