//! `POST /v1/orders` (new order, protocol §8.1) and `POST /v1/orders/{id}`
//! (polling, §8.2); the order object of §8.3.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use lancert_protocol::base64url;
use lancert_protocol::problem::{self, ProblemType};
use lancert_protocol::time::format_rfc3339;
use serde_json::{json, Value};

use super::{SharedApp, CERTIFICATES_PATH, ORDERS_PATH, ORDER_LIFETIME_SECS};
use crate::problem::Problem;
use crate::request_auth::KeyRule;
use crate::store::{Order, OrderStatus, Reservation};
use crate::{clock, csr_check, random};

/// The order object (protocol §8.3).
pub(super) fn order_json(app: &SharedApp, order: &Order) -> Value {
    let mut v = json!({
        "status": order.status.as_str(),
        "hostname": order.hostname,
        "expires": format_rfc3339(order.expires),
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

fn respond(app: &SharedApp, order: &Order, done_status: StatusCode, location: bool) -> Response {
    let processing = order.status == OrderStatus::Processing;
    let status = if processing { StatusCode::ACCEPTED } else { done_status };
    let mut response = super::json(status, &order_json(app, order));
    let headers = response.headers_mut();
    let retry_after = if processing {
        Some(app.retry_after_secs)
    } else {
        order.retry_after
    };
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if location {
        if let Ok(v) = HeaderValue::from_str(&app.url(&format!("{ORDERS_PATH}/{}", order.id))) {
            headers.insert(header::LOCATION, v);
        }
    }
    response
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
    if let Reservation::Limited { retry_after } = app.store.create_order(&order, app.orders_per_hour)? {
        return Err(Problem::new(
            ProblemType::RateLimited,
            format!("at most {} orders per hour per device", app.orders_per_hour),
        )
        .with_retry_after(retry_after));
    }
    log::info!("device {}: order {} for {}", device.id, order.id, order.hostname);
    app.issuance.start(&order);
    let current = app.store.order(&order.id)?.unwrap_or(order);
    Ok(respond(&app, &current, StatusCode::CREATED, true))
}

/// Verifies a POST-as-GET at `path` and returns the requesting device's
/// own, unexpired order `id`; anything else is `notFound`. Shared by order
/// polling and certificate download, which read the same resource.
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
        Some(order) if order.device == device.id && order.expires > clock::now() => Ok(order),
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
    Ok(respond(&app, &order, StatusCode::OK, false))
}
