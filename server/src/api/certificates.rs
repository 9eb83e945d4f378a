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

pub(super) async fn post(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let order = owned_order(&app, &headers, body, &format!("{CERTIFICATES_PATH}/{id}"), &id).await?;
    let chain = order.chain.ok_or_else(|| Problem::not_found("no such certificate"))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PEM_CHAIN))],
        chain,
    )
        .into_response())
}
