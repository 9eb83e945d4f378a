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
/// Default limit of connections served at once; more are closed as soon
/// as they are accepted. Each costs a task, a socket and TLS buffers
/// (tens of KiB), and it stays under the 1024 file descriptors a process
/// gets by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default time a client gets to finish the TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Default time a client gets to send a request's line and headers, counted
/// from when the server starts waiting for them (also on an idle
/// keep-alive connection).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default time one request may take once its headers are in, reading the
/// body included.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Default TTL of published records: short, so that an address change
/// reaches browsers quickly.
pub const DEFAULT_DNS_TTL: u32 = 60;
/// Default time to wait for a TXT record to reach every authoritative
/// server.
pub const DEFAULT_PROPAGATION_TIMEOUT_SECS: u64 = 300;
/// A week, the window of Let's Encrypt's certificate limits.
pub const WEEK_SECS: u64 = 7 * 86_400;

/// The ACME CA the `acme` issuer orders from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL (`https://...`).
    pub directory_url: String,
    /// Account contacts (`mailto:` URLs), given to the CA when the account
    /// is created.
    pub contact: Vec<String>,
    /// Whether the operator agreed to the CA's terms of service; the account
    /// cannot be created without it.
    pub agree_terms: bool,
    /// A PEM root the CA's own HTTPS certificate chains to, instead of the
    /// system's public roots (Pebble, a private CA).
    pub ca_file: Option<PathBuf>,
    /// An ACME profile to request (for example Let's Encrypt's `shortlived`),
    /// if any.
    pub profile: Option<String>,
}

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
    /// A public (or any RFC 8555) CA, with dns-01 challenges in the zone.
    Acme(AcmeConfig),
}

/// A TSIG key (RFC 8945) for dynamic updates.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name, lowercase, without a trailing dot.
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where the zone's records are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsConfig {
    /// Only in the server's database (the `records` command lists them):
    /// the embedded default, enough for the local CA.
    Database,
    /// The server answers DNS queries for the zone itself (the vendor
    /// delegates the zone to it).
    Authoritative {
        /// UDP and TCP address to answer on.
        listen: SocketAddr,
        /// The zone's name servers (NS records), lowercase, no trailing dot.
        nameservers: Vec<String>,
        /// The SOA RNAME (the responsible mailbox as a DNS name).
        hostmaster: String,
        /// TTL of the published records.
        ttl: u32,
        /// Servers that must answer with a challenge record before the CA is
        /// asked to validate it.
        check_servers: Vec<SocketAddr>,
        /// How long to wait for them.
        propagation_timeout_secs: u64,
    },
    /// RFC 2136 dynamic updates, signed with TSIG, to an existing primary.
    Rfc2136 {
        /// The primary server taking updates.
        server: SocketAddr,
        /// The key updates are signed with.
        key: TsigKey,
        /// TTL of the published records.
        ttl: u32,
        /// Servers that must answer with a challenge record before the CA is
        /// asked to validate it.
        check_servers: Vec<SocketAddr>,
        /// How long to wait for them.
        propagation_timeout_secs: u64,
    },
}

/// At most `limit` events in any `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Events allowed per window.
    pub limit: u32,
    /// The sliding window.
    pub window_secs: u64,
}

/// The issuance budget: what the server lets itself ask of the CA. Orders
/// beyond it wait in a queue (protocol §8.2: 202 with a Retry-After that
/// reflects the place in the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// New certificates for the zone (Let's Encrypt: 50 per registered
    /// domain per week). Renewals that replace a certificate (ARI) are not
    /// counted.
    pub certificates: Option<Limit>,
    /// New ACME orders (Let's Encrypt: 300 per account per 3 hours).
    /// Renewals that replace a certificate are not counted.
    pub orders: Option<Limit>,
    /// Certificates per hostname, renewals included (Let's Encrypt: 5 per
    /// identical set of names per week); beyond it the device's order is
    /// refused with `rateLimited`.
    pub per_name: Option<Limit>,
    /// Failed validations per hostname (Let's Encrypt: 5 per name per hour).
    pub failures_per_name: Option<Limit>,
}

impl BudgetConfig {
    /// No limits (the local CA's default).
    pub const UNLIMITED: BudgetConfig = BudgetConfig {
        certificates: None,
        orders: None,
        per_name: None,
        failures_per_name: None,
    };

    /// Let's Encrypt's limits with a margin (the `acme` issuer's default).
    pub const LETS_ENCRYPT: BudgetConfig = BudgetConfig {
        certificates: Some(Limit {
            limit: 45,
            window_secs: WEEK_SECS,
        }),
        orders: Some(Limit {
            limit: 90,
            window_secs: 3600,
        }),
        per_name: Some(Limit {
            limit: 3,
            window_secs: WEEK_SECS,
        }),
        failures_per_name: Some(Limit {
            limit: 3,
            window_secs: 3600,
        }),
    };
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
    /// Where the zone's records are published.
    pub dns: DnsConfig,
    /// What the server lets itself ask of the CA.
    pub budget: BudgetConfig,
    /// `Retry-After` sent while an order is processing.
    pub retry_after_secs: u64,
    /// How long an issued nonce stays valid.
    pub nonce_ttl_secs: u64,
    /// Whether valid orders carry a `renewal` window (protocol §8.3).
    pub renewal_window: bool,
    /// Most orders one device may create per hour.
    pub orders_per_hour: u32,
    /// Most connections served at once.
    pub max_connections: u32,
    /// Time a client gets to finish the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Time a client gets to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Time one request may take, body included.
    pub request_timeout_secs: u64,
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

const FIELDS: [&str; 19] = [
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
    "dns",
    "budget",
    "max_connections",
    "tls_handshake_timeout_secs",
    "header_read_timeout_secs",
    "request_timeout_secs",
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
        Some(Value::Object(o)) => parse_issuer(o, base)?,
        Some(_) => return Err("field `issuer`: expected an object".into()),
    };
    let dns = match obj.get("dns") {
        None | Some(Value::Null) => DnsConfig::Database,
        Some(Value::Object(o)) => within("dns", parse_dns(o, base))?,
        Some(_) => return Err("field `dns`: expected an object".into()),
    };
    if matches!(issuer, IssuerConfig::Acme(_)) && dns == DnsConfig::Database {
        return Err(
            "field `dns`: the acme issuer needs a DNS backend that publishes challenge records \
             (\"authoritative\" or \"rfc2136\")"
                .into(),
        );
    }
    let default_budget = match issuer {
        IssuerConfig::LocalCa { .. } => BudgetConfig::UNLIMITED,
        IssuerConfig::Acme(_) => BudgetConfig::LETS_ENCRYPT,
    };
    let budget = match obj.get("budget") {
        None | Some(Value::Null) => default_budget,
        Some(Value::Object(o)) => within("budget", parse_budget(o, default_budget))?,
        Some(_) => return Err("field `budget`: expected an object".into()),
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
        dns,
        budget,
        retry_after_secs: opt_u64(obj, "retry_after_secs", 1..=86_400)?.unwrap_or(DEFAULT_RETRY_AFTER_SECS),
        nonce_ttl_secs: opt_u64(obj, "nonce_ttl_secs", 1..=86_400)?.unwrap_or(DEFAULT_NONCE_TTL_SECS),
        renewal_window: opt_bool(obj, "renewal_window")?.unwrap_or(false),
        orders_per_hour: opt_u64(obj, "orders_per_hour", 1..=10_000)?
            .map(|n| n as u32)
            .unwrap_or(DEFAULT_ORDERS_PER_HOUR),
        max_connections: opt_u64(obj, "max_connections", 1..=1_000_000)?
            .map(|n| n as u32)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        tls_handshake_timeout_secs: opt_u64(obj, "tls_handshake_timeout_secs", 1..=3600)?
            .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS),
        header_read_timeout_secs: opt_u64(obj, "header_read_timeout_secs", 1..=3600)?
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_SECS),
        request_timeout_secs: opt_u64(obj, "request_timeout_secs", 1..=3600)?.unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS),
    })
}

/// Prefixes the field names in `result`'s message with `section.`.
fn within<T>(section: &str, result: Result<T, String>) -> Result<T, String> {
    result.map_err(|m| m.replace("field `", &format!("field `{section}.")))
}

/// Refuses fields not in `known` (callers prefix the section with [`within`]).
fn reject_unknown(o: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(format!("unknown field `{unknown}`")),
        None => Ok(()),
    }
}

fn parse_issuer(o: &Map<String, Value>, base: &Path) -> Result<IssuerConfig, String> {
    let kind = match o.get("type") {
        None | Some(Value::Null) => "local_ca",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("field `issuer.type`: expected a string".into()),
    };
    match kind {
        "local_ca" => {
            within("issuer", reject_unknown(o, &["type", "validity_secs", "delay_secs"]))?;
            // Ten years: longer leaf lifetimes make no sense and overflow nothing.
            let validity_secs =
                within("issuer", opt_u64(o, "validity_secs", 1..=10 * 366 * 86_400))?.unwrap_or(DEFAULT_VALIDITY_SECS);
            let delay_secs = within("issuer", opt_u64(o, "delay_secs", 0..=600))?.unwrap_or(0);
            Ok(IssuerConfig::LocalCa {
                validity_secs,
                delay_secs,
            })
        }
        "acme" => {
            within(
                "issuer",
                reject_unknown(
                    o,
                    &["type", "directory_url", "contact", "agree_terms", "ca_file", "profile"],
                ),
            )?;
            within("issuer", parse_acme(o, base)).map(IssuerConfig::Acme)
        }
        other => Err(format!(
            "field `issuer.type`: unknown issuer {other:?} (supported: \"local_ca\", \"acme\")"
        )),
    }
}

fn parse_acme(o: &Map<String, Value>, base: &Path) -> Result<AcmeConfig, String> {
    let directory_url = req_str(o, "directory_url")?;
    if !directory_url.starts_with("https://") || directory_url.len() <= "https://".len() {
        return Err(format!(
            "field `directory_url`: {directory_url:?} must be an https:// URL"
        ));
    }
    let contact = match o.get("contact") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= 10 => list
            .iter()
            .map(|c| match c.as_str() {
                Some(c) if c.starts_with("mailto:") && c.contains('@') && !c.contains([' ', ',']) => Ok(c.to_string()),
                _ => Err(format!(
                    "field `contact`: {c} is not a mailto: URL (\"mailto:ops@example.com\")"
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("field `contact`: expected up to 10 mailto: URLs".into()),
    };
    let agree_terms = opt_bool(o, "agree_terms")?.unwrap_or(false);
    if !agree_terms {
        return Err(
            "field `agree_terms`: must be true: the CA creates no account unless its terms of service \
                    are agreed to (read them at the directory's meta.termsOfService)"
                .into(),
        );
    }
    Ok(AcmeConfig {
        directory_url: directory_url.to_string(),
        contact,
        agree_terms,
        ca_file: opt_str(o, "ca_file")?.map(|p| base.join(p)),
        profile: opt_str(o, "profile")?.map(str::to_string),
    })
}

fn parse_dns(o: &Map<String, Value>, base: &Path) -> Result<DnsConfig, String> {
    let kind = match o.get("type") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err("field `type`: expected \"database\", \"authoritative\" or \"rfc2136\"".into()),
    };
    let ttl = |o: &Map<String, Value>| opt_u64(o, "ttl", 1..=86_400).map(|t| t.map_or(DEFAULT_DNS_TTL, |t| t as u32));
    let timeout = |o: &Map<String, Value>| {
        opt_u64(o, "propagation_timeout_secs", 1..=3600).map(|t| t.unwrap_or(DEFAULT_PROPAGATION_TIMEOUT_SECS))
    };
    match kind {
        "database" => {
            reject_unknown(o, &["type"])?;
            Ok(DnsConfig::Database)
        }
        "authoritative" => {
            reject_unknown(
                o,
                &[
                    "type",
                    "listen",
                    "nameservers",
                    "hostmaster",
                    "ttl",
                    "check_servers",
                    "propagation_timeout_secs",
                ],
            )?;
            let listen = socket_addr(req_str(o, "listen")?, 53).map_err(|m| format!("field `listen`: {m}"))?;
            let nameservers = match o.get("nameservers") {
                Some(Value::Array(list)) if !list.is_empty() && list.len() <= 13 => list
                    .iter()
                    .map(|n| {
                        n.as_str()
                            .ok_or("expected strings".to_string())
                            .and_then(check_dns_name)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| format!("field `nameservers`: {m}"))?,
                _ => return Err("field `nameservers`: expected 1 to 13 name server names".into()),
            };
            let hostmaster = match opt_str(o, "hostmaster")? {
                Some(h) => check_dns_name(&h.replacen('@', ".", 1)).map_err(|m| format!("field `hostmaster`: {m}"))?,
                None => format!("hostmaster.{}", nameservers[0]),
            };
            let loopback_of_listen = if listen.ip().is_unspecified() {
                SocketAddr::new(IpAddr::from([127, 0, 0, 1]), listen.port())
            } else {
                listen
            };
            Ok(DnsConfig::Authoritative {
                listen,
                nameservers,
                hostmaster,
                ttl: ttl(o)?,
                check_servers: check_servers(o)?.unwrap_or_else(|| vec![loopback_of_listen]),
                propagation_timeout_secs: timeout(o)?,
            })
        }
        "rfc2136" => {
            reject_unknown(
                o,
                &[
                    "type",
                    "server",
                    "key_name",
                    "key_algorithm",
                    "key_secret",
                    "key_secret_file",
                    "ttl",
                    "check_servers",
                    "propagation_timeout_secs",
                ],
            )?;
            let server = socket_addr(req_str(o, "server")?, 53).map_err(|m| format!("field `server`: {m}"))?;
            let name = check_dns_name(req_str(o, "key_name")?).map_err(|m| format!("field `key_name`: {m}"))?;
            let algorithm = opt_str(o, "key_algorithm")?
                .unwrap_or("hmac-sha256")
                .to_ascii_lowercase();
            if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&algorithm.as_str()) {
                return Err(format!(
                    "field `key_algorithm`: {algorithm:?} is not supported (hmac-sha256, hmac-sha384, hmac-sha512)"
                ));
            }
            let secret = match (opt_str(o, "key_secret")?, opt_str(o, "key_secret_file")?) {
                (Some(text), None) => decode_secret(text).map_err(|m| format!("field `key_secret`: {m}"))?,
                (None, Some(file)) => {
                    let path = base.join(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("field `key_secret_file`: reading {}: {e}", path.display()))?;
                    decode_secret(text.trim())
                        .map_err(|m| format!("field `key_secret_file`: {}: {m}", path.display()))?
                }
                _ => return Err("field `key_secret`: give exactly one of key_secret and key_secret_file".into()),
            };
            Ok(DnsConfig::Rfc2136 {
                server,
                key: TsigKey {
                    name,
                    algorithm,
                    secret,
                },
                ttl: ttl(o)?,
                check_servers: check_servers(o)?.unwrap_or_else(|| vec![server]),
                propagation_timeout_secs: timeout(o)?,
            })
        }
        other => Err(format!(
            "field `type`: unknown DNS backend {other:?} (supported: \"database\", \"authoritative\", \"rfc2136\")"
        )),
    }
}

/// `ip:port`, or a bare IP with `default_port`.
fn socket_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("{text:?} is not an IP address or address:port"))
}

fn check_servers(o: &Map<String, Value>) -> Result<Option<Vec<SocketAddr>>, String> {
    match o.get("check_servers") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= 20 => list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or("expected strings".to_string())
                    .and_then(|t| socket_addr(t, 53))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|m| format!("field `check_servers`: {m}")),
        Some(_) => Err("field `check_servers`: expected 1 to 20 addresses of the zone's name servers".into()),
    }
}

/// A TSIG secret as `tsig-keygen` prints it: standard base64, padded.
fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let url: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    match lancert_protocol::base64url::decode(&url) {
        Ok(secret) if secret.len() >= 16 => Ok(secret),
        Ok(_) => Err("the secret is shorter than 16 bytes".into()),
        Err(_) => Err("not base64 (as tsig-keygen prints it)".into()),
    }
}

fn parse_budget(o: &Map<String, Value>, default: BudgetConfig) -> Result<BudgetConfig, String> {
    reject_unknown(
        o,
        &["certificates", "orders", "per_name", "failures_per_name", "$comment"],
    )?;
    Ok(BudgetConfig {
        certificates: parse_limit(o, "certificates", default.certificates)?,
        orders: parse_limit(o, "orders", default.orders)?,
        per_name: parse_limit(o, "per_name", default.per_name)?,
        failures_per_name: parse_limit(o, "failures_per_name", default.failures_per_name)?,
    })
}

/// `{"limit": N, "window_secs": S}`, `false` for no limit, or absent for the
/// default.
fn parse_limit(o: &Map<String, Value>, field: &str, default: Option<Limit>) -> Result<Option<Limit>, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(false)) => Ok(None),
        Some(Value::Object(l)) => {
            within(field, reject_unknown(l, &["limit", "window_secs"]))?;
            let limit = within(field, opt_u64(l, "limit", 1..=1_000_000))?
                .ok_or_else(|| format!("field `{field}.limit` is required"))? as u32;
            let window_secs = within(field, opt_u64(l, "window_secs", 1..=366 * 86_400))?
                .ok_or_else(|| format!("field `{field}.window_secs` is required"))?;
            Ok(Some(Limit { limit, window_secs }))
        }
        Some(_) => Err(format!(
            "field `{field}`: expected {{\"limit\": N, \"window_secs\": S}} or false"
        )),
    }
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
        assert_eq!(c.max_connections, 512);
        assert_eq!(c.tls_handshake_timeout_secs, 10);
        assert_eq!(c.header_read_timeout_secs, 10);
        assert_eq!(c.request_timeout_secs, 30);
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
              "renewal_window": true,
              "max_connections": 64,
              "tls_handshake_timeout_secs": 5,
              "header_read_timeout_secs": 4,
              "request_timeout_secs": 20
            }"#,
        )
        .unwrap();
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.tls_handshake_timeout_secs, 5);
        assert_eq!(c.header_read_timeout_secs, 4);
        assert_eq!(c.request_timeout_secs, 20);
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
            (
                r#"{"zone":"a.b","data_dir":"d","max_connections":0}"#,
                "`max_connections`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","header_read_timeout_secs":0}"#,
                "`header_read_timeout_secs`",
            ),
            (r#"{"zone":"a.b","data_dir":"d","tls_cert":"c.pem"}"#, "`tls_key`"),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"type":"pki"}}"#,
                "`issuer.type`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"type":"acme"}}"#,
                "`issuer.directory_url`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"type":"acme","directory_url":"https://ca/dir"}}"#,
                "`issuer.agree_terms`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"type":"acme","directory_url":"https://ca/dir","agree_terms":true}}"#,
                "`dns`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","issuer":{"type":"acme","directory_url":"https://c/d","agree_terms":true,"contact":["ops@x"]}}"#,
                "`issuer.contact`",
            ),
            (r#"{"zone":"a.b","data_dir":"d","dns":{"type":"bind"}}"#, "`dns.type`"),
            (
                r#"{"zone":"a.b","data_dir":"d","dns":{"type":"authoritative","listen":"127.0.0.1:53"}}"#,
                "`dns.nameservers`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","dns":{"type":"authoritative","listen":"x","nameservers":["ns.a.b"]}}"#,
                "`dns.listen`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","dns":{"type":"rfc2136","server":"127.0.0.1","key_name":"k"}}"#,
                "`dns.key_secret`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","dns":{"type":"rfc2136","server":"127.0.0.1","key_name":"k","key_secret":"c2hvcnQ="}}"#,
                "`dns.key_secret`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","dns":{"type":"rfc2136","server":"127.0.0.1","key_name":"k","key_algorithm":"hmac-md5","key_secret":"c2hvcnQ="}}"#,
                "`dns.key_algorithm`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","dns":{"type":"rfc2136","server":"127.0.0.1","key_name":"k","key_secret_file":"/nonexistent/k"}}"#,
                "`dns.key_secret_file`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","budget":{"orders":{"limit":0,"window_secs":1}}}"#,
                "`budget.orders.limit`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","budget":{"orders":{"limit":1}}}"#,
                "`budget.orders.window_secs`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","budget":{"orders":{"limit":1,"window_secs":1,"x":1}}}"#,
                "`budget.orders.x`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","budget":{"orders":3}}"#,
                "`budget.orders`",
            ),
            (
                r#"{"zone":"a.b","data_dir":"d","budget":{"weekly":3}}"#,
                "`budget.weekly`",
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
    fn acme_with_dns_backends_parses() {
        let c = parse(
            r#"{"zone":"d.example.com","data_dir":"d",
                "issuer":{"type":"acme","directory_url":"https://acme-staging-v02.api.letsencrypt.org/directory",
                          "contact":["mailto:ops@example.com"],"agree_terms":true,"ca_file":"root.pem"},
                "dns":{"type":"authoritative","listen":"0.0.0.0:5353","nameservers":["NS1.example.net."]}}"#,
        )
        .unwrap();
        let IssuerConfig::Acme(acme) = &c.issuer else {
            panic!("{:?}", c.issuer)
        };
        assert_eq!(acme.ca_file.as_deref(), Some(Path::new("/etc/lancert/root.pem")));
        assert_eq!(acme.contact, ["mailto:ops@example.com"]);
        assert_eq!(
            c.budget,
            BudgetConfig::LETS_ENCRYPT,
            "acme defaults to Let's Encrypt's limits"
        );
        let DnsConfig::Authoritative {
            nameservers,
            hostmaster,
            check_servers,
            ttl,
            ..
        } = &c.dns
        else {
            panic!("{:?}", c.dns)
        };
        assert_eq!(nameservers, &["ns1.example.net"]);
        assert_eq!(hostmaster, "hostmaster.ns1.example.net");
        assert_eq!(check_servers, &["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        assert_eq!(*ttl, DEFAULT_DNS_TTL);

        let c = parse(
            r#"{"zone":"d.example.com","data_dir":"d",
                "dns":{"type":"rfc2136","server":"192.0.2.53","key_name":"lancert.","key_secret":"3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvu8=",
                       "check_servers":["192.0.2.54:53","192.0.2.55"]},
                "budget":{"orders":{"limit":2,"window_secs":10},"per_name":false}}"#,
        )
        .unwrap();
        let DnsConfig::Rfc2136 {
            server,
            key,
            check_servers,
            ..
        } = &c.dns
        else {
            panic!("{:?}", c.dns)
        };
        assert_eq!(server.port(), 53);
        assert_eq!(key.name, "lancert");
        assert_eq!(key.algorithm, "hmac-sha256");
        assert_eq!(key.secret.len(), 32);
        assert_eq!(key.secret[..2], [0xde, 0xad]);
        assert_eq!(check_servers.len(), 2);
        assert!(!format!("{key:?}").contains("222"), "the secret is never printed");
        assert_eq!(
            c.budget.orders,
            Some(Limit {
                limit: 2,
                window_secs: 10
            })
        );
        assert_eq!(c.budget.per_name, None);
        assert_eq!(c.budget.certificates, None, "local CA: unlimited unless configured");
    }

    #[test]
    fn public_url_follows_listen() {
        let c = parse(r#"{"zone":"a.b","data_dir":"d","listen":"10.0.0.1:443"}"#).unwrap();
        assert_eq!(c.public_url, "https://10.0.0.1:443");
        let c = parse(r#"{"zone":"a.b","data_dir":"d","listen":"[::1]:8000"}"#).unwrap();
        assert_eq!(c.public_url, "https://localhost:8000");
    }
}
