//! `POST /v1/enroll` (protocol §6): a new identity key plus a one-time
//! token make a device. Retrying with the same key answers 200 with the same
//! device and leaves the token alone.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lancert_protocol::jws;
use lancert_protocol::problem::ProblemType;
use serde_json::{json, Value};

use super::{SharedApp, ENROLL_PATH};
use crate::problem::Problem;
use crate::request_auth::{KeyRule, Signer};
use crate::store::{Device, EnrollOutcome, NewDevice};
use crate::{clock, random, tokens};

/// Longest token text looked up.
const MAX_TOKEN_LEN: usize = 256;
/// `agentVersion` is kept up to this many characters.
const MAX_AGENT_VERSION_LEN: usize = 64;

fn answer(status: StatusCode, device: &Device) -> Response {
    super::json(status, &json!({"device": device.id, "hostname": device.hostname}))
}

pub(super) async fn post(State(app): State<SharedApp>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let verified = app.verify(&headers, body, ENROLL_PATH, KeyRule::Jwk).await?;
    let Signer::NewKey(key) = verified.signer else {
        return Err(Problem::malformed("enrollment must be signed with jwk"));
    };
    let payload = verified.json()?;
    let token = payload
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
        .ok_or_else(|| Problem::malformed("`token` must be a non-empty string"))?;
    let agent_version = payload
        .get("agentVersion")
        .and_then(Value::as_str)
        .map(|v| v.chars().take(MAX_AGENT_VERSION_LEN).collect::<String>());

    let thumbprint = jws::thumbprint(&key);
    if let Some(existing) = app.store.device_by_thumbprint(&thumbprint)? {
        if existing.revoked {
            return Err(Problem::unauthorized("this identity key belongs to a revoked device"));
        }
        return Ok(answer(StatusCode::OK, &existing));
    }

    let new = NewDevice {
        id: random::token::<16>(),
        key_sec1: key.to_sec1_point(false).as_bytes().to_vec(),
        thumbprint,
        agent_version,
    };
    let zone = app.zone.clone();
    let outcome = match app.store.enroll(&tokens::hash(token), &new, clock::now(), &mut || {
        tokens::random_hostname(&zone)
    }) {
        Ok(outcome) => outcome,
        // A concurrent retry with the same key won the race (the thumbprint
        // is unique): answer as for any retry.
        Err(e) => match app.store.device_by_thumbprint(&new.thumbprint)? {
            Some(existing) if !existing.revoked => return Ok(answer(StatusCode::OK, &existing)),
            _ => return Err(e.into()),
        },
    };
    match outcome {
        EnrollOutcome::Enrolled(device) => {
            log::info!("enrolled device {} as {}", device.id, device.hostname);
            Ok(answer(StatusCode::CREATED, &device))
        }
        EnrollOutcome::BadToken(why) => Err(Problem::new(ProblemType::BadToken, why)),
        EnrollOutcome::HostnameInUse(hostname) => Err(Problem::new(
            ProblemType::BadToken,
            format!("the token's hostname {hostname} belongs to another device"),
        )),
        EnrollOutcome::NoFreeHostname => Err(Problem::internal(&"no free random hostname found")),
    }
}
