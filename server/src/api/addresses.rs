//! `POST /v1/addresses` (protocol §7): replaces the A and AAAA records of
//! the signing device's own hostname.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lancert_protocol::problem::ProblemType;
use serde_json::json;

use super::{SharedApp, ADDRESSES_PATH};
use crate::dns::{self, DnsError};
use crate::problem::Problem;
use crate::request_auth::KeyRule;

/// Retry-After when the DNS backend fails.
const DNS_RETRY_AFTER_SECS: u64 = 60;

fn dns_failed(e: DnsError) -> Problem {
    log::error!("{e}");
    Problem::new(ProblemType::IssuanceFailed, "could not publish the records").with_retry_after(DNS_RETRY_AFTER_SECS)
}

pub(super) async fn post(State(app): State<SharedApp>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let verified = app.verify(&headers, body, ADDRESSES_PATH, KeyRule::Kid).await?;
    let device = verified.device()?;
    let set = crate::addresses::parse(&verified.json()?)?;
    app.dns
        .set_addresses(&device.hostname, &set.ipv4, &set.ipv6)
        .await
        .map_err(dns_failed)?;
    let records = app.dns.records(Some(&device.hostname)).await.map_err(dns_failed)?;
    let (ipv4, ipv6) = dns::addresses_of(&records);
    log::info!("device {}: {} now {:?} {:?}", device.id, device.hostname, ipv4, ipv6);
    Ok(super::json(
        StatusCode::OK,
        &json!({"hostname": device.hostname, "ipv4": ipv4, "ipv6": ipv6}),
    ))
}
