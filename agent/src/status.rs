//! `agent status`: what the device knows about itself, as JSON on stdout,
//! read from files only (no network, no writes).

use crate::check::{self, installed};
use crate::clock;
use crate::config::Config;
use crate::renewal_window::{decide, Decision, Installed};
use crate::state::{read_json, StateDir};
use lancert_protocol::time::format_rfc3339;
use serde_json::{json, Value};

/// The status document.
pub fn collect(config: &Config) -> Value {
    let dir = StateDir::new(&config.state_dir);
    let enrollment = dir.enrollment().ok().flatten();
    let st = dir.load();
    let now = clock::wall_now();
    let current = installed(config);
    let hostname = enrollment.as_ref().map(|e| e.hostname.clone());
    let certificate = match &current {
        Installed::Present { cert, key_matches, .. } => json!({
            "subject": cert.subject,
            "issuer": cert.issuer,
            "serial": cert.serial_hex,
            "names": cert.dns_names,
            "notBefore": format_rfc3339(cert.not_before),
            "notAfter": format_rfc3339(cert.not_after),
            "selfSigned": cert.self_signed,
            "keyMatches": key_matches,
        }),
        Installed::Corrupt(why) => json!({"error": why}),
        Installed::Missing => Value::Null,
    };
    let moment = match &current {
        Installed::Present { cert, .. } => st.renewal_moment(&cert.serial_hex),
        _ => None,
    };
    let due = hostname.as_deref().map(|h| decide(&current, h, moment, now));
    let renewal_due = match &due {
        Some(Decision::Wait { until }) => Value::from(format_rfc3339(*until)),
        Some(Decision::Renew(reason)) => Value::from(format!("now: {reason}")),
        None => Value::Null,
    };
    // The daemon publishes its timetable in the runtime directory; without
    // a daemon, the next check is whenever the certificate is due or the
    // backoff ends.
    let daemon = read_json(&config.runtime_dir.join(crate::daemon::SCHEDULE_FILE))
        .ok()
        .flatten();
    let from_daemon = |name: &str| daemon.as_ref().and_then(|d| d.get(name)).cloned();
    let computed_next = match (due, st.retry_at) {
        (_, Some(retry)) if retry > now => Some(retry),
        (Some(Decision::Wait { until }), _) => Some(until),
        (Some(Decision::Renew(_)), _) => Some(now),
        _ => None,
    };
    json!({
        "hostname": hostname,
        "device": enrollment.as_ref().map(|e| e.device.clone()),
        "server": config.server.clone().or(enrollment.as_ref().map(|e| e.server.clone())),
        "addresses": st.addresses.as_ref().map(|a| a.to_json()),
        "addressesReportedAt": st.addresses_reported_at.map(format_rfc3339),
        "certificate": certificate,
        "renewalDue": renewal_due,
        "nextAddressCheck": from_daemon("nextAddressCheck").unwrap_or(Value::Null),
        "nextCertificateCheck": from_daemon("nextCertificateCheck")
            .unwrap_or_else(|| computed_next.map(format_rfc3339).map_or(Value::Null, Value::from)),
        "daemonPid": from_daemon("pid").unwrap_or(Value::Null),
        "pendingOrder": st.pending_order.as_ref().map(|p| p.url.clone()),
        "failures": st.failures,
        "lastError": st.last_error,
        "lastErrorAt": st.last_error_at.map(format_rfc3339),
        "retryAt": st.retry_at.map(format_rfc3339),
        "provisioned": check::enrolled(&dir).is_ok(),
    })
}
