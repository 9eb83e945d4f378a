//! Status reports (protocol §10): what the fleet operator sees of this
//! device. A report is sent when its content differs from the last one the
//! server accepted (a renewal, an error appearing or clearing, new
//! addresses), and every `status_refresh_secs` as a sign of life, at the
//! device's own slots ([`refresh_due`]); otherwise nothing is sent.

use crate::addresses::AddressSet;
use crate::certificate::CertInfo;
use crate::schedule::refresh_due;
use crate::state::State;
use lancert_protocol::time::format_rfc3339;
use serde_json::{json, Value};
use std::time::Duration;

/// The report for the current situation.
pub fn build(cert: Option<&CertInfo>, addresses: Option<&AddressSet>, state: &State) -> Value {
    json!({
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "certificate": cert.map(|c| json!({"serial": c.serial_hex, "notAfter": format_rfc3339(c.not_after)})),
        "addresses": addresses.map_or_else(|| AddressSet::default().to_json(), AddressSet::to_json),
        "lastError": state.last_error,
        "lastErrorAt": state.last_error_at.map(format_rfc3339),
    })
}

/// Whether `report` must be sent at wall-clock `now`: it changed, or a
/// refresh is due ([`refresh_due`], with the caller's `grace`).
pub fn should_send(report: &Value, state: &State, now: i64, refresh: Duration, grace: Option<Duration>) -> bool {
    state.last_report.as_ref() != Some(report) || refresh_due(state.last_report_at, now, refresh, grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_on_change_and_on_refresh_only() {
        let mut state = State::default();
        let r = build(None, None, &state);
        let day = Duration::from_secs(86_400);
        assert!(should_send(&r, &state, 1_000, day, None), "never reported");
        state.last_report = Some(r.clone());
        state.last_report_at = Some(1_000);
        assert!(!should_send(&r, &state, 1_000 + 3_600, day, None));
        assert!(should_send(&r, &state, 1_000 + 86_400, day, None), "refresh");
        state.last_error = Some("boom".into());
        let r2 = build(None, None, &state);
        assert!(should_send(&r2, &state, 1_001, day, None), "an error appeared");
        assert!(should_send(&r, &state, 999, day, None), "clock went backwards");
    }
}
