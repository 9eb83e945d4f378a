//! The state directory: the device's enrollment, the last reported
//! addresses, the renewal schedule and the failure record.
//!
//! Files (all written atomically, and only when their content changed, so
//! an idle device never writes to flash):
//! - `identity.key`: the identity key (see `identity.rs`), 0600;
//! - `device.json`: device id, hostname and server, written at enrollment;
//! - `state.json`: everything else, below;
//! - `pending.key`: the key of an order still being issued, 0600; whenever
//!   `state.json` names a pending order, this file holds that order's key.
//!
//! A missing or corrupt `state.json` is never by itself a reason to order a
//! certificate: it only loses the schedule, which is recomputed from the
//! installed certificate.

use crate::addresses::AddressSet;
use crate::atomic;
use crate::error::{Error, Result};
use lancert_protocol::time::{format_rfc3339, parse_rfc3339};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Largest state file read.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// The device's enrollment, from `device.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The device id (`kid`).
    pub device: String,
    /// The hostname the server assigned.
    pub hostname: String,
    /// The server base URL it enrolled with.
    pub server: String,
}

/// The renewal window the server suggested for one certificate, and the
/// moment picked inside it (kept so that repeated checks do not re-draw it,
/// which would skew renewals towards the window's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalPlan {
    /// Serial (hex) of the certificate the window is for.
    pub serial: String,
    /// Window start, Unix seconds.
    pub start: i64,
    /// Window end, Unix seconds.
    pub end: i64,
    /// The picked moment, Unix seconds.
    pub moment: i64,
}

impl RenewalPlan {
    /// The plan for certificate `serial` and the server's `window`, with a
    /// moment drawn uniformly inside it.
    pub fn draw(serial: &str, window: crate::renewal_window::Window, rng: &mut dyn crate::schedule::Random) -> Self {
        RenewalPlan {
            serial: serial.to_string(),
            start: window.start,
            end: window.end,
            moment: crate::renewal_window::pick_moment(window, rng),
        }
    }

    /// Whether this plan is for `serial` and exactly `window` (then the
    /// moment already drawn stays: re-drawing on every check would skew
    /// renewals towards the window's start).
    pub fn covers(&self, serial: &str, window: crate::renewal_window::Window) -> bool {
        self.serial == serial && self.start == window.start && self.end == window.end
    }
}

/// An order the server is still processing, to be resumed by the next
/// check instead of starting over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOrder {
    /// The order URL.
    pub url: String,
    /// The hostname ordered.
    pub hostname: String,
    /// Earliest wall-clock time to poll again (the server's Retry-After).
    pub not_before: i64,
}

/// Mutable state, from `state.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// The addresses the server last accepted.
    pub addresses: Option<AddressSet>,
    /// When they were accepted.
    pub addresses_reported_at: Option<i64>,
    /// The server's renewal window for the installed certificate.
    pub renewal: Option<RenewalPlan>,
    /// Consecutive failed checks.
    pub failures: u32,
    /// The last failure, for `status` and the status report.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<i64>,
    /// Wall-clock time before which the daemon does not retry.
    pub retry_at: Option<i64>,
    /// The last status report the server accepted.
    pub last_report: Option<Value>,
    /// When it was accepted.
    pub last_report_at: Option<i64>,
    /// An order still being issued.
    pub pending_order: Option<PendingOrder>,
    /// A set is being installed and the web server has not been reloaded
    /// with it yet: set (and saved) before the first rename, cleared once
    /// the reload was tried. A check that finds it set reloads the web
    /// server first, so a crash between install and reload cannot leave the
    /// web server on the old set until it happens to restart.
    pub reload_pending: bool,
}

impl State {
    /// The renewal moment drawn for certificate `serial`, if the server
    /// suggested a window for that very certificate.
    pub fn renewal_moment(&self, serial: &str) -> Option<i64> {
        self.renewal
            .as_ref()
            .filter(|plan| plan.serial == serial)
            .map(|plan| plan.moment)
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The directory at `dir` (not created until needed).
    pub fn new(dir: &Path) -> StateDir {
        StateDir { dir: dir.to_path_buf() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `identity.key`.
    pub fn identity_key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// `device.json`.
    pub fn device_file(&self) -> PathBuf {
        self.dir.join("device.json")
    }

    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// `pending.key`.
    pub fn pending_key(&self) -> PathBuf {
        self.dir.join("pending.key")
    }

    /// Creates the directory (0700: it holds the identity key).
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io("creating state directory", &self.dir, e))
    }

    /// The enrollment, or `None` if the device is not provisioned.
    pub fn enrollment(&self) -> Result<Option<Enrollment>> {
        let path = self.device_file();
        let v = match read_json(&path)? {
            Some(v) => v,
            None => return Ok(None),
        };
        let field = |name: &str| {
            v.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                Error::Other(format!(
                    "reading enrollment {}: field `{name}` is missing; provision the device again",
                    path.display()
                ))
            })
        };
        Ok(Some(Enrollment {
            device: field("device")?,
            hostname: field("hostname")?,
            server: field("server")?,
        }))
    }

    /// Writes `device.json`.
    pub fn save_enrollment(&self, e: &Enrollment) -> Result<()> {
        let v = json!({"device": e.device, "hostname": e.hostname, "server": e.server});
        atomic::write_if_changed(&self.device_file(), pretty(&v).as_bytes(), 0o644, "saving enrollment").map(|_| ())
    }

    /// Loads `state.json`; a missing or corrupt file gives the default state
    /// (logged), never an error.
    pub fn load(&self) -> State {
        let path = self.state_file();
        match read_json(&path) {
            Ok(Some(v)) => State::from_json(&v),
            Ok(None) => State::default(),
            Err(e) => {
                log::warn!("{e}; starting with an empty schedule (the installed certificate still decides)");
                State::default()
            }
        }
    }

    /// Saves `state.json` if it changed. Returns whether it wrote.
    pub fn save(&self, state: &State) -> Result<bool> {
        self.create()?;
        atomic::write_if_changed(
            &self.state_file(),
            pretty(&state.to_json()).as_bytes(),
            0o600,
            "saving state",
        )
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Reads a small JSON file; `Ok(None)` if it does not exist.
pub fn read_json(path: &Path) -> Result<Option<Value>> {
    let Some(bytes) = atomic::read_bounded(path, MAX_STATE_BYTES, "reading")? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Other(format!("reading {}: not valid JSON: {e}", path.display())))
}

fn time_field(v: &Value, name: &str) -> Option<i64> {
    v.get(name).and_then(Value::as_str).and_then(|s| parse_rfc3339(s).ok())
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_string)
}

impl State {
    fn from_json(v: &Value) -> State {
        let renewal = v.get("renewal").and_then(|r| {
            Some(RenewalPlan {
                serial: str_field(r, "serial")?,
                start: time_field(r, "start")?,
                end: time_field(r, "end")?,
                moment: time_field(r, "moment")?,
            })
        });
        let pending_order = v.get("pendingOrder").and_then(|p| {
            Some(PendingOrder {
                url: str_field(p, "url")?,
                hostname: str_field(p, "hostname")?,
                not_before: time_field(p, "notBefore")?,
            })
        });
        State {
            addresses: v.get("addresses").and_then(AddressSet::from_json),
            addresses_reported_at: time_field(v, "addressesReportedAt"),
            renewal,
            failures: v
                .get("failures")
                .and_then(Value::as_u64)
                .map_or(0, |n| n.min(1_000) as u32),
            last_error: str_field(v, "lastError"),
            last_error_at: time_field(v, "lastErrorAt"),
            retry_at: time_field(v, "retryAt"),
            last_report: v.get("lastReport").filter(|r| r.is_object()).cloned(),
            last_report_at: time_field(v, "lastReportAt"),
            pending_order,
            reload_pending: v.get("reloadPending").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let time = |t: i64| Value::from(format_rfc3339(t));
        if let Some(a) = &self.addresses {
            m.insert("addresses".into(), a.to_json());
        }
        if let Some(t) = self.addresses_reported_at {
            m.insert("addressesReportedAt".into(), time(t));
        }
        if let Some(r) = &self.renewal {
            m.insert(
                "renewal".into(),
                json!({"serial": r.serial, "start": time(r.start), "end": time(r.end), "moment": time(r.moment)}),
            );
        }
        if self.failures > 0 {
            m.insert("failures".into(), self.failures.into());
        }
        if let Some(e) = &self.last_error {
            m.insert("lastError".into(), e.clone().into());
        }
        if let Some(t) = self.last_error_at {
            m.insert("lastErrorAt".into(), time(t));
        }
        if let Some(t) = self.retry_at {
            m.insert("retryAt".into(), time(t));
        }
        if let Some(r) = &self.last_report {
            m.insert("lastReport".into(), r.clone());
        }
        if let Some(t) = self.last_report_at {
            m.insert("lastReportAt".into(), time(t));
        }
        if let Some(p) = &self.pending_order {
            m.insert(
                "pendingOrder".into(),
                json!({"url": p.url, "hostname": p.hostname, "notBefore": time(p.not_before)}),
            );
        }
        if self.reload_pending {
            m.insert("reloadPending".into(), true.into());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lancert-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn state_round_trips() {
        let dir = StateDir::new(&tempdir("rt"));
        let s = State {
            addresses: Some(AddressSet {
                ipv4: vec![Ipv4Addr::new(10, 1, 1, 4)],
                ipv6: vec![],
            }),
            addresses_reported_at: Some(1_795_464_060),
            renewal: Some(RenewalPlan {
                serial: "0a".into(),
                start: 10,
                end: 20,
                moment: 15,
            }),
            failures: 2,
            last_error: Some("boom".into()),
            last_error_at: Some(1_795_464_000),
            retry_at: Some(1_795_464_600),
            last_report: Some(json!({"agentVersion": "0.1.0"})),
            last_report_at: Some(1_795_464_060),
            pending_order: Some(PendingOrder {
                url: "https://s/o/1".into(),
                hostname: "h".into(),
                not_before: 5,
            }),
            reload_pending: true,
        };
        assert!(dir.save(&s).unwrap());
        assert_eq!(dir.load(), s);
        assert!(!dir.save(&s).unwrap(), "unchanged state must not be rewritten");
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn corrupt_or_missing_state_is_the_default() {
        let dir = StateDir::new(&tempdir("corrupt"));
        assert_eq!(dir.load(), State::default());
        dir.create().unwrap();
        std::fs::write(dir.state_file(), b"{garbage").unwrap();
        assert_eq!(dir.load(), State::default());
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn enrollment_round_trips() {
        let dir = StateDir::new(&tempdir("enr"));
        assert_eq!(dir.enrollment().unwrap(), None);
        dir.create().unwrap();
        let e = Enrollment {
            device: "d1".into(),
            hostname: "xi8qz.example.com".into(),
            server: "https://s".into(),
        };
        dir.save_enrollment(&e).unwrap();
        assert_eq!(dir.enrollment().unwrap(), Some(e));
        std::fs::write(dir.device_file(), br#"{"device":"d1"}"#).unwrap();
        assert!(dir.enrollment().unwrap_err().to_string().contains("`hostname`"));
        std::fs::remove_dir_all(dir.path()).unwrap();
    }
}
