//! `POST /v1/status` (protocol §10): keeps the device's last report for the
//! operator (`lancert-server devices`) and answers with the renewal window of
//! the reported certificate when one is known.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{SharedApp, STATUS_PATH};
use crate::chain_info::normalize_serial;
use crate::problem::Problem;
use crate::request_auth::KeyRule;
use lancert_protocol::time::format_rfc3339;

pub(super) async fn post(State(app): State<SharedApp>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let verified = app.verify(&headers, body, STATUS_PATH, KeyRule::Kid).await?;
    let device = verified.device()?;
    let report = verified.json()?;
    app.store
        .save_report(&device.id, &report.to_string(), crate::clock::now())?;
    let serial = report
        .get("certificate")
        .and_then(|c| c.get("serial"))
        .and_then(Value::as_str)
        .and_then(normalize_serial);
    let window = match serial {
        Some(s) => app.store.renewal_for_serial(&device.id, &s)?,
        None => None,
    };
    let body = match window {
        Some((start, end)) => json!({"renewal": {"start": format_rfc3339(start), "end": format_rfc3339(end)}}),
        None => json!({}),
    };
    Ok(super::json(StatusCode::OK, &body))
}
