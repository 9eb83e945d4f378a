//! The configuration file: a flat JSON object, every field but `server`
//! optional with the default documented in the README.
//!
//! Parsing is by hand over `serde_json::Value` so that every error names the
//! field and the file ("config /etc/lancert/agent.json: field
//! `reload_timeout_secs`: expected a whole number of seconds from 1 to
//! 3600"), and an unknown field is an error rather than silently ignored (a
//! typo must not turn a setting off).

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the agent looks for its configuration without `--config`.
pub const DEFAULT_PATH: &str = "/etc/lancert/agent.json";

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The agent's configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// Base URL of the management server (`https://…`). Required, except
    /// for `provision`, which takes it from the command line.
    pub server: Option<String>,
    /// PEM bundle of roots for the server's TLS certificate; `None`: the
    /// built-in Mozilla roots (webpki-roots).
    pub server_ca: Option<PathBuf>,
    /// PEM bundle of roots issued chains must verify to; `None`: built-in.
    pub trust_anchors: Option<PathBuf>,
    /// Identity, enrollment, schedule and last reported addresses.
    pub state_dir: PathBuf,
    /// Where the daemon publishes its next check times for `agent status`:
    /// a tmpfs, so that this frequent write never touches flash.
    pub runtime_dir: PathBuf,
    /// Publish this interface's addresses instead of the default route's.
    pub interface: Option<String>,
    /// Publish an A record.
    pub ipv4: bool,
    /// Publish an AAAA record.
    pub ipv6: bool,
    /// Installed private key (0600).
    pub key_file: PathBuf,
    /// Installed leaf certificate.
    pub cert_file: PathBuf,
    /// Installed intermediates.
    pub chain_file: PathBuf,
    /// Installed leaf followed by intermediates.
    pub fullchain_file: PathBuf,
    /// Command run after an install (argv, no shell); empty: none.
    pub reload_command: Vec<String>,
    /// Longest the reload command (and the served-certificate check) may take.
    pub reload_timeout: Duration,
    /// `host:port` where the web server must serve the new leaf after reload.
    pub verify_address: Option<String>,
    /// How often addresses are checked when no netlink event arrives.
    pub address_interval: Duration,
    /// Addresses are re-reported at least this often even if unchanged.
    pub address_refresh: Duration,
    /// How often the certificate is checked.
    pub certificate_interval: Duration,
    /// A status report is re-sent at least this often even if unchanged.
    pub status_refresh: Duration,
    /// Upper bound of the random delay before the daemon's first
    /// certificate check (spreads a fleet that boots at once).
    pub startup_splay: Duration,
    /// Bound on one HTTP exchange (connect, TLS, request, response).
    pub http_timeout: Duration,
    /// Longest one check keeps polling an order before leaving it pending.
    pub poll_timeout: Duration,
    /// Log verbosity.
    pub log_level: log::LevelFilter,
}

/// Defaults, one line each, so the README table can be checked against them.
pub mod defaults {
    /// `state_dir`
    pub const STATE_DIR: &str = "/var/lib/lancert";
    /// `runtime_dir`
    pub const RUNTIME_DIR: &str = "/run/lancert";
    /// `key_file`
    pub const KEY_FILE: &str = "/etc/lancert/device.key";
    /// `cert_file`
    pub const CERT_FILE: &str = "/etc/lancert/device.crt";
    /// `chain_file`
    pub const CHAIN_FILE: &str = "/etc/lancert/chain.pem";
    /// `fullchain_file`
    pub const FULLCHAIN_FILE: &str = "/etc/lancert/fullchain.pem";
    /// `reload_timeout_secs`
    pub const RELOAD_TIMEOUT_SECS: u64 = 30;
    /// `address_interval_secs`: 5 minutes.
    pub const ADDRESS_INTERVAL_SECS: u64 = 300;
    /// `address_refresh_secs`: 24 hours.
    pub const ADDRESS_REFRESH_SECS: u64 = 86_400;
    /// `certificate_interval_secs`: 6 hours.
    pub const CERTIFICATE_INTERVAL_SECS: u64 = 21_600;
    /// `status_refresh_secs`: 24 hours.
    pub const STATUS_REFRESH_SECS: u64 = 86_400;
    /// `startup_splay_secs`: 5 minutes.
    pub const STARTUP_SPLAY_SECS: u64 = 300;
    /// `http_timeout_secs`
    pub const HTTP_TIMEOUT_SECS: u64 = 30;
    /// `poll_timeout_secs`: 10 minutes.
    pub const POLL_TIMEOUT_SECS: u64 = 600;
}

const FIELDS: &[&str] = &[
    "server",
    "server_ca",
    "trust_anchors",
    "state_dir",
    "runtime_dir",
    "interface",
    "ipv4",
    "ipv6",
    "key_file",
    "cert_file",
    "chain_file",
    "fullchain_file",
    "reload_command",
    "reload_timeout_secs",
    "verify_address",
    "address_interval_secs",
    "address_refresh_secs",
    "certificate_interval_secs",
    "status_refresh_secs",
    "startup_splay_secs",
    "http_timeout_secs",
    "poll_timeout_secs",
    "log_level",
];

const DAY: u64 = 86_400;

impl Config {
    /// Reads and validates `file`. With `server_required`, a missing `server`
    /// is an error. With `allow_missing`, an absent file yields the defaults
    /// (for `provision` on a device without a configuration yet).
    pub fn load(file: &Path, server_required: bool, allow_missing: bool) -> Result<Config> {
        const DOING: &str = "reading configuration";
        let bytes = match crate::atomic::read_bounded(file, MAX_CONFIG_BYTES, DOING)? {
            Some(b) => b,
            None if allow_missing => b"{}".to_vec(),
            None => return Err(Error::io(DOING, file, std::io::ErrorKind::NotFound.into())),
        };
        Config::parse_bytes(file, &bytes, server_required)
    }

    /// Parses the configuration file's bytes as read from disk (UTF-8 JSON);
    /// `file` is only used in messages and to resolve relative paths. This
    /// is what [`Config::load`] runs, and what the `agent_config` fuzz
    /// target feeds arbitrary bytes.
    pub fn parse_bytes(file: &Path, bytes: &[u8], server_required: bool) -> Result<Config> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Config {
            file: file.to_path_buf(),
            field: String::new(),
            problem: "not valid UTF-8".into(),
        })?;
        Config::parse(file, text, server_required)
    }

    /// Parses configuration text; `file` is only used in messages and to
    /// resolve relative paths.
    pub fn parse(file: &Path, text: &str, server_required: bool) -> Result<Config> {
        let p = Parser {
            file,
            base: file.parent().unwrap_or(Path::new("/")),
        };
        let value: Value = serde_json::from_str(text).map_err(|e| p.err("", format!("not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| p.err("", "expected a JSON object"))?;
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(p.err(unknown, format!("unknown field (known fields: {})", FIELDS.join(", "))));
        }
        let server = p.opt_str(obj, "server")?.map(|s| p.url(&s)).transpose()?;
        if server_required && server.is_none() {
            return Err(p.err(
                "server",
                "missing: the management server's base URL, e.g. \"https://mgmt.example.com\"",
            ));
        }
        let config = Config {
            file: file.to_path_buf(),
            server,
            server_ca: p.opt_path(obj, "server_ca")?,
            trust_anchors: p.opt_path(obj, "trust_anchors")?,
            state_dir: p.path(obj, "state_dir", defaults::STATE_DIR)?,
            runtime_dir: p.path(obj, "runtime_dir", defaults::RUNTIME_DIR)?,
            interface: p.opt_str(obj, "interface")?.map(|s| p.interface(&s)).transpose()?,
            ipv4: p.bool(obj, "ipv4", true)?,
            ipv6: p.bool(obj, "ipv6", true)?,
            key_file: p.path(obj, "key_file", defaults::KEY_FILE)?,
            cert_file: p.path(obj, "cert_file", defaults::CERT_FILE)?,
            chain_file: p.path(obj, "chain_file", defaults::CHAIN_FILE)?,
            fullchain_file: p.path(obj, "fullchain_file", defaults::FULLCHAIN_FILE)?,
            reload_command: p.argv(obj, "reload_command")?,
            reload_timeout: p.secs(obj, "reload_timeout_secs", defaults::RELOAD_TIMEOUT_SECS, 1, 3600)?,
            verify_address: p.opt_str(obj, "verify_address")?.map(|s| p.host_port(&s)).transpose()?,
            address_interval: p.secs(obj, "address_interval_secs", defaults::ADDRESS_INTERVAL_SECS, 1, DAY)?,
            address_refresh: p.secs(
                obj,
                "address_refresh_secs",
                defaults::ADDRESS_REFRESH_SECS,
                60,
                30 * DAY,
            )?,
            certificate_interval: p.secs(
                obj,
                "certificate_interval_secs",
                defaults::CERTIFICATE_INTERVAL_SECS,
                1,
                7 * DAY,
            )?,
            status_refresh: p.secs(obj, "status_refresh_secs", defaults::STATUS_REFRESH_SECS, 60, 30 * DAY)?,
            startup_splay: p.secs(obj, "startup_splay_secs", defaults::STARTUP_SPLAY_SECS, 0, DAY)?,
            http_timeout: p.secs(obj, "http_timeout_secs", defaults::HTTP_TIMEOUT_SECS, 1, 600)?,
            poll_timeout: p.secs(obj, "poll_timeout_secs", defaults::POLL_TIMEOUT_SECS, 0, DAY)?,
            log_level: p.log_level(obj, "log_level")?,
        };
        if !config.ipv4 && !config.ipv6 {
            return Err(p.err("ipv6", "`ipv4` and `ipv6` are both false: nothing would be published"));
        }
        let installed = [
            ("key_file", &config.key_file),
            ("cert_file", &config.cert_file),
            ("chain_file", &config.chain_file),
            ("fullchain_file", &config.fullchain_file),
        ];
        for (i, (name, path)) in installed.iter().enumerate() {
            if installed[..i].iter().any(|(_, other)| other == path) {
                return Err(p.err(name, format!("{} is also used by another *_file field", path.display())));
            }
        }
        Ok(config)
    }

    /// The server URL, or an error naming the field.
    pub fn server_url(&self) -> Result<&str> {
        self.server.as_deref().ok_or_else(|| Error::Config {
            file: self.file.clone(),
            field: "server".into(),
            problem: "missing: the management server's base URL".into(),
        })
    }
}

struct Parser<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Parser<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn opt_str(&self, obj: &Map<String, Value>, name: &str) -> Result<Option<String>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Err(self.err(name, "must not be empty (omit it or use null)")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(name, "expected a string")),
        }
    }

    fn opt_path(&self, obj: &Map<String, Value>, name: &str) -> Result<Option<PathBuf>> {
        Ok(self.opt_str(obj, name)?.map(|s| self.base.join(s)))
    }

    fn path(&self, obj: &Map<String, Value>, name: &str, default: &str) -> Result<PathBuf> {
        Ok(self.opt_path(obj, name)?.unwrap_or_else(|| PathBuf::from(default)))
    }

    fn bool(&self, obj: &Map<String, Value>, name: &str, default: bool) -> Result<bool> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(name, "expected true or false")),
        }
    }

    fn secs(&self, obj: &Map<String, Value>, name: &str, default: u64, min: u64, max: u64) -> Result<Duration> {
        let secs = match obj.get(name) {
            None | Some(Value::Null) => default,
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => n,
                _ => {
                    return Err(self.err(
                        name,
                        format!("expected a whole number of seconds from {min} to {max}, got {v}"),
                    ))
                }
            },
        };
        Ok(Duration::from_secs(secs))
    }

    fn url(&self, s: &str) -> Result<String> {
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| self.err("server", format!("{s:?} is not an https:// URL (TLS is always used)")))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.contains('@') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err("server", format!("{s:?} is not a valid URL")));
        }
        Ok(s.trim_end_matches('/').to_string())
    }

    fn interface(&self, s: &str) -> Result<String> {
        // IFNAMSIZ is 16 including the terminating NUL.
        if s.len() > 15 || s.contains('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err("interface", format!("{s:?} is not an interface name")));
        }
        Ok(s.to_string())
    }

    fn host_port(&self, s: &str) -> Result<String> {
        let ok = s
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(self.err(
                "verify_address",
                format!("{s:?} is not host:port (e.g. \"127.0.0.1:443\")"),
            ));
        }
        Ok(s.to_string())
    }

    fn argv(&self, obj: &Map<String, Value>, name: &str) -> Result<Vec<String>> {
        let items = match obj.get(name) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= 64 => items,
            Some(_) => {
                return Err(self.err(
                    name,
                    "expected a non-empty array of strings: the program and its arguments, run without a shell",
                ))
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                Some(s) if i > 0 || !s.is_empty() => Ok(s.to_string()),
                _ => Err(self.err(name, format!("element {i} is not a (non-empty) string"))),
            })
            .collect()
    }

    fn log_level(&self, obj: &Map<String, Value>, name: &str) -> Result<log::LevelFilter> {
        match self.opt_str(obj, name)?.as_deref() {
            None | Some("info") => Ok(log::LevelFilter::Info),
            Some("error") => Ok(log::LevelFilter::Error),
            Some("warn") => Ok(log::LevelFilter::Warn),
            Some("debug") => Ok(log::LevelFilter::Debug),
            Some("trace") => Ok(log::LevelFilter::Trace),
            Some(other) => Err(self.err(name, format!("{other:?} is not one of error, warn, info, debug, trace"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/lancert/agent.json"), text, true)
    }

    fn err_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(r#"{"server": "https://mgmt.example.com/"}"#).unwrap();
        assert_eq!(c.server.as_deref(), Some("https://mgmt.example.com"));
        assert_eq!(c.state_dir, PathBuf::from(defaults::STATE_DIR));
        assert_eq!(c.key_file, PathBuf::from(defaults::KEY_FILE));
        assert!(c.ipv4 && c.ipv6);
        assert!(c.reload_command.is_empty());
        assert_eq!(c.certificate_interval, Duration::from_secs(21_600));
        assert_eq!(c.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn every_field_parses() {
        let c = parse(
            r#"{"server":"https://s:8443","server_ca":"ca.pem","trust_anchors":"/r.pem","state_dir":"/st","runtime_dir":"/run/x",
            "interface":"br-lan","ipv4":true,"ipv6":false,"key_file":"/k","cert_file":"/c","chain_file":"/ch",
            "fullchain_file":"/f","reload_command":["/usr/sbin/nginx","-s","reload"],"reload_timeout_secs":5,
            "verify_address":"127.0.0.1:443","address_interval_secs":60,"address_refresh_secs":3600,
            "certificate_interval_secs":600,"status_refresh_secs":600,"startup_splay_secs":0,
            "http_timeout_secs":3,"poll_timeout_secs":0,"log_level":"debug"}"#,
        )
        .unwrap();
        assert_eq!(
            c.server_ca,
            Some(PathBuf::from("/etc/lancert/ca.pem")),
            "relative to the config file"
        );
        assert_eq!(c.interface.as_deref(), Some("br-lan"));
        assert_eq!(c.reload_command, ["/usr/sbin/nginx", "-s", "reload"]);
        assert_eq!(c.verify_address.as_deref(), Some("127.0.0.1:443"));
        assert_eq!(c.startup_splay, Duration::ZERO);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn errors_name_the_field_and_the_file() {
        let e = err_text(r#"{"server":"https://s","reload_timeout":5}"#);
        assert!(
            e.contains("/etc/lancert/agent.json") && e.contains("`reload_timeout`") && e.contains("unknown"),
            "{e}"
        );
        let e = err_text(r#"{"server":"https://s","reload_timeout_secs":0}"#);
        assert!(
            e.contains("`reload_timeout_secs`") && e.contains("from 1 to 3600"),
            "{e}"
        );
        let e = err_text(r#"{"server":"https://s","ipv4":"yes"}"#);
        assert!(e.contains("`ipv4`"), "{e}");
        let e = err_text(r#"{"server":"http://s"}"#);
        assert!(e.contains("`server`") && e.contains("https"), "{e}");
        let e = err_text(r#"{}"#);
        assert!(e.contains("`server`") && e.contains("missing"), "{e}");
        let e = err_text(r#"{"server":"https://s","reload_command":"nginx -s reload"}"#);
        assert!(e.contains("`reload_command`") && e.contains("without a shell"), "{e}");
        let e = err_text(r#"{"server":"https://s","verify_address":"localhost"}"#);
        assert!(e.contains("`verify_address`"), "{e}");
        let e = err_text(r#"{"server":"https://s","log_level":"loud"}"#);
        assert!(e.contains("`log_level`"), "{e}");
        let e = err_text(r#"{"server":"https://s","ipv4":false,"ipv6":false}"#);
        assert!(e.contains("nothing would be published"), "{e}");
        let e = err_text(r#"{"server":"https://s","cert_file":"/x","chain_file":"/x"}"#);
        assert!(e.contains("`chain_file`"), "{e}");
        let e = err_text("{not json");
        assert!(e.contains("not valid JSON") && e.contains("agent.json"), "{e}");
        let e = err_text(r#"{"server":"https://s","interface":"a-very-long-interface-name"}"#);
        assert!(e.contains("`interface`"), "{e}");
    }

    #[test]
    fn server_is_optional_for_provisioning() {
        let c = Config::parse(Path::new("/a.json"), "{}", false).unwrap();
        assert!(c.server.is_none());
        assert!(c.server_url().unwrap_err().to_string().contains("`server`"));
    }

    #[test]
    fn missing_file_is_an_error_unless_allowed() {
        let p = Path::new("/nonexistent/lancert/agent.json");
        let e = Config::load(p, true, false).unwrap_err().to_string();
        assert!(
            e.contains("reading configuration /nonexistent/lancert/agent.json"),
            "{e}"
        );
        assert!(Config::load(p, false, true).is_ok());
    }
}
