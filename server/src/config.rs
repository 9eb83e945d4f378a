//! The server's JSON configuration file.
//!
//! Every field is checked; an unknown field or a bad value is an error that
//! names the field and the file. Relative paths are resolved against the
//! configuration file's directory, so a config and its data can move together.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::Error;

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default leaf lifetime of the local CA: 90 days, like public CAs.
pub const DEFAULT_VALIDITY_SECS: u64 = 90 * 86_400;
/// Default `Retry-After` for orders still processing.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// Default nonce lifetime (protocol §5: 10 minutes).
pub const DEFAULT_NONCE_TTL_SECS: u64 = 600;
/// Default per-device order limit per hour. Protects the CA's
/// duplicate-certificate limit (Let's Encrypt: 5 per week per name set)
/// once a public CA is behind the [`crate::issuer::Issuer`].
pub const DEFAULT_ORDERS_PER_HOUR: u32 = 5;
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Which CA issues the certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerConfig {
    /// The built-in local CA (`issuer::local_ca`).
    LocalCa {
        /// Lifetime of issued leaf certificates.
        validity_secs: u64,
        /// How long the CA "takes" before an order becomes valid, so that
        /// clients exercise polling.
        delay_secs: u64,
    },
}

/// The parsed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The base URL devices use, `https://host[:port]`, without a trailing
    /// slash. JWS `url` headers are compared against it.
    pub public_url: String,
    /// Directory of the CA files, TLS files and the database.
    pub data_dir: PathBuf,
    /// The zone device hostnames live in, lowercase, without a trailing dot.
    pub zone: String,
    /// Names (DNS names or IP addresses) of the server's own TLS certificate.
    pub tls_names: Vec<String>,
    /// An existing TLS certificate chain (PEM) to use instead of one from the
    /// local CA.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The CA behind the orders.
    pub issuer: IssuerConfig,
    /// `Retry-After` sent while an order is processing.
    pub retry_after_secs: u64,
    /// How long an issued nonce stays valid.
    pub nonce_ttl_secs: u64,
    /// Whether valid orders carry a `renewal` window (protocol §8.3).
    pub renewal_window: bool,
    /// Most orders one device may create per hour.
    pub orders_per_hour: u32,
}

impl Config {
    /// Reads and checks the configuration file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| Error::io("reading config", path, e))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| Error::io("reading config", path, e))?;
        Config::parse(&text, path)
    }

    /// Checks configuration text; `path` names the file in errors and
    /// anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let fail = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(fail("the top level must be a JSON object".into()));
        };
        let base = path.parent().unwrap_or(Path::new("."));
        parse_object(&obj, path, base).map_err(fail)
    }
}

const FIELDS: [&str; 13] = [
    "listen",
    "public_url",
    "data_dir",
    "zone",
    "tls_names",
    "tls_cert",
    "tls_key",
    "issuer",
    "retry_after_secs",
    "nonce_ttl_secs",
    "renewal_window",
    "orders_per_hour",
    "$comment",
];

fn parse_object(obj: &Map<String, Value>, path: &Path, base: &Path) -> Result<Config, String> {
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field `{unknown}`"));
    }
    let listen_text = opt_str(obj, "listen")?.unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| format!("field `listen`: {listen_text:?} is not an address:port"))?;
    let public_url = match opt_str(obj, "public_url")? {
        Some(url) => check_public_url(url).map_err(|m| format!("field `public_url`: {m}"))?,
        None => default_public_url(listen),
    };
    let data_dir = base.join(req_str(obj, "data_dir")?);
    let zone = check_zone(req_str(obj, "zone")?).map_err(|m| format!("field `zone`: {m}"))?;
    let tls_names = match obj.get("tls_names") {
        None | Some(Value::Null) => vec!["localhost".to_string(), "127.0.0.1".to_string()],
        Some(v) => check_tls_names(v).map_err(|m| format!("field `tls_names`: {m}"))?,
    };
    let tls_cert = opt_str(obj, "tls_cert")?.map(|p| base.join(p));
    let tls_key = opt_str(obj, "tls_key")?.map(|p| base.join(p));
    if tls_cert.is_some() != tls_key.is_some() {
        let missing = if tls_cert.is_some() { "tls_key" } else { "tls_cert" };
        return Err(format!(
            "field `{missing}`: tls_cert and tls_key must be given together"
        ));
    }
    let issuer = match obj.get("issuer") {
        None | Some(Value::Null) => IssuerConfig::LocalCa {
            validity_secs: DEFAULT_VALIDITY_SECS,
            delay_secs: 0,
        },
        Some(Value::Object(o)) => parse_issuer(o)?,
        Some(_) => return Err("field `issuer`: expected an object".into()),
    };
    Ok(Config {
        path: path.to_path_buf(),
        listen,
        public_url,
        data_dir,
        zone,
        tls_names,
        tls_cert,
        tls_key,
        issuer,
        retry_after_secs: opt_u64(obj, "retry_after_secs", 1..=86_400)?.unwrap_or(DEFAULT_RETRY_AFTER_SECS),
        nonce_ttl_secs: opt_u64(obj, "nonce_ttl_secs", 1..=86_400)?.unwrap_or(DEFAULT_NONCE_TTL_SECS),
        renewal_window: opt_bool(obj, "renewal_window")?.unwrap_or(false),
        orders_per_hour: opt_u64(obj, "orders_per_hour", 1..=10_000)?
            .map(|n| n as u32)
            .unwrap_or(DEFAULT_ORDERS_PER_HOUR),
    })
}

fn parse_issuer(o: &Map<String, Value>) -> Result<IssuerConfig, String> {
    const ISSUER_FIELDS: [&str; 3] = ["type", "validity_secs", "delay_secs"];
    if let Some(unknown) = o.keys().find(|k| !ISSUER_FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field `issuer.{unknown}`"));
    }
    let kind = match o.get("type") {
        None | Some(Value::Null) => "local_ca",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("field `issuer.type`: expected a string".into()),
    };
    if kind != "local_ca" {
        return Err(format!(
            "field `issuer.type`: unknown issuer {kind:?} (supported: \"local_ca\")"
        ));
    }
    // Ten years: longer leaf lifetimes make no sense and overflow nothing.
    let validity_secs = opt_u64(o, "validity_secs", 1..=10 * 366 * 86_400)
        .map_err(|m| m.replace("field `", "field `issuer."))?
        .unwrap_or(DEFAULT_VALIDITY_SECS);
    let delay_secs = opt_u64(o, "delay_secs", 0..=600)
        .map_err(|m| m.replace("field `", "field `issuer."))?
        .unwrap_or(0);
    Ok(IssuerConfig::LocalCa {
        validity_secs,
        delay_secs,
    })
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(format!("field `{field}`: expected a non-empty string")),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    opt_str(obj, field)?.ok_or_else(|| format!("field `{field}` is required"))
}

fn opt_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("field `{field}`: expected true or false")),
    }
}

fn opt_u64(obj: &Map<String, Value>, field: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u64>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "field `{field}`: expected an integer from {} to {}",
                range.start(),
                range.end()
            )),
        },
    }
}

/// `https://localhost:PORT` for loopback and wildcard listeners (the names
/// of the default TLS certificate), `https://IP:PORT` otherwise.
fn default_public_url(listen: SocketAddr) -> String {
    let ip = listen.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("https://localhost:{}", listen.port())
    } else {
        format!("https://{listen}")
    }
}

/// An `https` URL with a host, an optional port and no path: the server's
/// routes are at `/v1/...` below it.
fn check_public_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("https://").ok_or("must start with https://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("has no host".into());
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be https://host[:port] without path, query or user".into());
    }
    Ok(format!("https://{authority}"))
}

/// Checks a DNS name: labels of 1 to 63 letters, digits and inner hyphens;
/// returns it lowercased without a trailing dot.
pub fn check_dns_name(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name (1 to 253 characters)"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("{name:?} is not a DNS name (bad label {label:?})"));
        }
    }
    Ok(name)
}

fn check_zone(zone: &str) -> Result<String, String> {
    let zone = check_dns_name(zone)?;
    // Room for a 63-character label and the dot in front of the zone.
    if zone.len() > 253 - 64 {
        return Err(format!("{zone:?} is too long to hold device names"));
    }
    Ok(zone)
}

fn check_tls_names(v: &Value) -> Result<Vec<String>, String> {
    let list = v.as_array().ok_or("expected an array of names")?;
    if list.is_empty() || list.len() > 100 {
        return Err("expected 1 to 100 names".into());
    }
    list.iter()
        .map(|n| {
            let n = n.as_str().ok_or("expected strings")?;
            if n.parse::<IpAddr>().is_ok() {
                Ok(n.to_string())
            } else {
                check_dns_name(n)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/lancert/server.json")).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(r#"{"zone":"Devices.Example.com.","data_dir":"data"}"#).unwrap();
        assert_eq!(c.zone, "devices.example.com");
        assert_eq!(c.data_dir, PathBuf::from("/etc/lancert/data"));
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.public_url, "https://localhost:8443");
        assert_eq!(c.tls_names, ["localhost", "127.0.0.1"]);
        assert_eq!(
            c.issuer,
            IssuerConfig::LocalCa {
                validity_secs: DEFAULT_VALIDITY_SECS,
                delay_secs: 0
            }
        );
        assert_eq!(c.nonce_ttl_secs, 600);
        assert_eq!(c.orders_per_hour, 5);
        assert!(!c.renewal_window);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"{
              "listen": "0.0.0.0:9443",
              "public_url": "https://mgmt.example.com/",
              "data_dir": "/var/lib/lancert-server",
              "zone": "devices.example.com",
              "tls_names": ["localhost", "127.0.0.1"],
              "tls_cert": null, "tls_key": null,
              "issuer": {"type": "local_ca", "validity_secs": 120, "delay_secs": 2},
              "retry_after_secs": 3,
              "nonce_ttl_secs": 60,
              "renewal_window": true
            }"#,
        )
        .unwrap();
        assert_eq!(c.public_url, "https://mgmt.example.com");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/lancert-server"));
        assert_eq!(
            c.issuer,
            IssuerConfig::LocalCa {
                validity_secs: 120,
                delay_secs: 2
            }
        );
        assert_eq!(c.retry_after_secs, 3);
        assert!(c.renewal_window);
    }

    #[test]
    fn errors_name_the_field_and_the_file() {
        let cases = [
            (r#"{"data_dir":"d"}"#, "`zone`"),
            (r#"{"zone":"a.b"}"#, "`data_dir`"),
            (r#"{"zone":"a.b","data_dir":"d","colour":1}"#, "`colour`"),
            (r#"{"zone":"a_b","data_dir":"d"}"#, "`zone`"),
            (r#"{"zone":"a.b","data_dir":"d","listen":"nope"}"#, "`listen`"),
            (
                r#"{"zone":"a.b","data_dir":"d","public_url":"http://x"}"#,
                "`public_url`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","public_url":"https://x/api"}"#,
                "`public_url`",
            ),
            (r#"{"zone":"a.b","data_dir":"d","tls_names":[]}"#, "`tls_names`"),
            (r#"{"zone":"a.b","data_dir":"d","tls_cert":"c.pem"}"#, "`tls_key`"),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"type":"acme"}}"#,
                "`issuer.type`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"validity_secs":0}}"#,
                "`issuer.validity_secs`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"delay_secs":-1}}"#,
                "`issuer.delay_secs`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"extra":1}}"#,
                "`issuer.extra`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","retry_after_secs":"1"}"#,
                "`retry_after_secs`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","nonce_ttl_secs":0}"#,
                "`nonce_ttl_secs`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","renewal_window":1}"#,
                "`renewal_window`",
            ),
        ];
        for (text, field) in cases {
            let msg = parse(text).unwrap_err();
            assert!(msg.contains(field), "{text}: {msg}");
            assert!(msg.contains("/etc/lancert/server.json"), "{text}: {msg}");
        }
        assert!(parse("[]").unwrap_err().contains("object"));
        assert!(parse("{").unwrap_err().contains("JSON"));
    }

    #[test]
    fn public_url_follows_listen() {
        let c = parse(r#"{"zone":"a.b","data_dir":"d","listen":"10.0.0.1:443"}"#).unwrap();
        assert_eq!(c.public_url, "https://10.0.0.1:443");
        let c = parse(r#"{"zone":"a.b","data_dir":"d","listen":"[::1]:8000"}"#).unwrap();
        assert_eq!(c.public_url, "https://localhost:8000");
    }
}
