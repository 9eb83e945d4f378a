//! `POST /v1/orders` (new order, protocol §8.1) and `POST /v1/orders/{id}`
//! (polling, §8.2); the order object of §8.3.
//!
//! New orders go to the issuance queue ([`crate::issuance`]); while one is
//! queued behind the budget, its Retry-After is the estimated wait for its
//! place in the queue.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use lancert_protocol::base64url;
use lancert_protocol::problem::{self, ProblemType};
use lancert_protocol::time::format_rfc3339;
use serde_json::{json, Value};

use super::{SharedApp, CERTIFICATES_PATH, ORDERS_PATH, ORDER_LIFETIME_SECS};
use crate::issuance::Submission;
use crate::problem::Problem;
use crate::request_auth::KeyRule;
use crate::store::{Order, OrderStatus};
use crate::{clock, csr_check, random};

/// Longest Retry-After for a queued order (a day, the most the reference
/// agent honours): a device asks again at least daily and sees its place
/// move up.
const MAX_QUEUED_RETRY_AFTER_SECS: u64 = 86_400;

/// Whether the order waits in the issuance queue (not started yet).
fn queued(order: &Order) -> bool {
    order.status == OrderStatus::Processing && order.started.is_none()
}

/// The order's `expires` as the device sees it at `now`: while queued, the
/// order lifetime from now (it is kept however long it waits; the stored
/// `expires` moves to at least start + lifetime when it starts).
fn expires(order: &Order, now: i64) -> i64 {
    if queued(order) {
        order.expires.max(now + (order.expires - order.created))
    } else {
        order.expires
    }
}

/// The order object (protocol §8.3) at `now`.
pub(super) fn order_json(app: &SharedApp, order: &Order, now: i64) -> Value {
    let mut v = json!({
        "status": order.status.as_str(),
        "hostname": order.hostname,
        "expires": format_rfc3339(expires(order, now)),
    });
    if order.status == OrderStatus::Valid {
        v["certificate"] = app.url(&format!("{CERTIFICATES_PATH}/{}", order.id)).into();
    }
    if let Some((start, end)) = order.renewal {
        v["renewal"] = json!({"start": format_rfc3339(start), "end": format_rfc3339(end)});
    }
    if order.status == OrderStatus::Invalid {
        let (name, detail) = order.error.clone().unwrap_or_default();
        let kind = ProblemType::from_uri(&format!("{}{name}", problem::PREFIX)).unwrap_or(ProblemType::IssuanceFailed);
        v["error"] = problem::document(kind, &detail);
    }
    v
}

fn respond(app: &SharedApp, order: &Order, done_status: StatusCode, location: bool) -> Result<Response, Problem> {
    let now = clock::now();
    let processing = order.status == OrderStatus::Processing;
    let status = if processing { StatusCode::ACCEPTED } else { done_status };
    let retry_after = if processing {
        // Started: the CA is at work, poll when it is typically done.
        // Queued: not before the budget lets it start.
        let wait = app
            .issuance
            .queue_wait(order, now)?
            .max(app.issuance.expected_remaining(order, now));
        Some(app.retry_after_secs.max(wait).min(MAX_QUEUED_RETRY_AFTER_SECS))
    } else {
        order.retry_after
    };
    let mut response = super::json(status, &order_json(app, order, now));
    let headers = response.headers_mut();
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if location {
        if let Ok(v) = HeaderValue::from_str(&app.url(&format!("{ORDERS_PATH}/{}", order.id))) {
            headers.insert(header::LOCATION, v);
        }
    }
    Ok(response)
}

pub(super) async fn create(State(app): State<SharedApp>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let verified = app.verify(&headers, body, ORDERS_PATH, KeyRule::Kid).await?;
    let device = verified.device()?;
    let payload = verified.json()?;
    let csr_text = payload
        .get("csr")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::malformed("`csr` must be a base64url string"))?;
    let der = base64url::decode(csr_text).map_err(|_| Problem::malformed("`csr` is not unpadded base64url"))?;
    csr_check::check(&der, &device.hostname, &device.key_sec1).map_err(|e| Problem::new(ProblemType::BadCsr, e.0))?;

    let order = Order::new(
        random::token::<16>(),
        device.id.clone(),
        device.hostname.clone(),
        der,
        clock::now(),
        ORDER_LIFETIME_SECS,
    );
    if let Submission::Refused(refusal) = app.issuance.submit(&order, app.orders_per_hour)? {
        return Err(Problem::new(ProblemType::RateLimited, refusal.detail).with_retry_after(refusal.retry_after));
    }
    log::info!("device {}: order {} for {}", device.id, order.id, order.hostname);
    let current = app.store.order(&order.id)?.unwrap_or(order);
    respond(&app, &current, StatusCode::CREATED, true)
}

/// Verifies a POST-as-GET at `path` and returns the requesting device's
/// own, unexpired order `id` (a processing order never expires); anything
/// else is `notFound`. Shared by order polling and certificate download,
/// which read the same resource.
pub(super) async fn owned_order(
    app: &SharedApp,
    headers: &HeaderMap,
    body: Body,
    path: &str,
    id: &str,
) -> Result<Order, Problem> {
    let verified = app.verify(headers, body, path, KeyRule::Kid).await?;
    verified.expect_post_as_get()?;
    let device = verified.device()?;
    match app.store.order(id)? {
        Some(order)
            if order.device == device.id
                && (order.status == OrderStatus::Processing || order.expires > clock::now()) =>
        {
            Ok(order)
        }
        _ => Err(Problem::not_found("no such order")),
    }
}

pub(super) async fn poll(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let order = owned_order(&app, &headers, body, &format!("{ORDERS_PATH}/{id}"), &id).await?;
    respond(&app, &order, StatusCode::OK, false)
}
