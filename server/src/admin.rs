//! The operator's commands: minting tokens, listing devices and records,
//! revoking devices. They open the same database as a running server.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::Config;
use crate::dns::store::SqliteZone;
use crate::dns::{self, DnsBackend, Record};
use crate::error::Error;
use crate::store::Store;
use crate::tokens;
use lancert_protocol::time::format_rfc3339;

fn block_on<T>(future: crate::BoxFuture<'_, T>) -> Result<T, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("starting the async runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

fn open(config: &Config) -> Result<(Arc<Store>, SqliteZone), Error> {
    let store = Arc::new(crate::serve::open_store(config)?);
    let zone = SqliteZone::new(store.clone());
    Ok((store, zone))
}

fn records(zone: &SqliteZone, name: Option<&str>) -> Result<Vec<Record>, Error> {
    block_on(zone.records(name))?.map_err(|e| Error::Other(e.to_string()))
}

/// `token`: mints `count` tokens valid for `ttl_secs`, bound to `hostname`
/// if given; returns their texts.
pub fn mint_tokens(config: &Config, hostname: Option<&str>, count: u32, ttl_secs: u64) -> Result<Vec<String>, Error> {
    if count == 0 || count > tokens::MAX_TOKENS_PER_MINT {
        return Err(Error::Usage(format!(
            "--count must be from 1 to {}",
            tokens::MAX_TOKENS_PER_MINT
        )));
    }
    if ttl_secs == 0 || ttl_secs > tokens::MAX_TOKEN_TTL_SECS {
        return Err(Error::Usage(format!(
            "--ttl-secs must be from 1 to {}",
            tokens::MAX_TOKEN_TTL_SECS
        )));
    }
    let hostname = match hostname {
        Some(h) => Some(
            tokens::check_hostname_in_zone(h, &config.zone).map_err(|m| Error::Usage(format!("--hostname: {m}")))?,
        ),
        None => None,
    };
    let (store, _) = open(config)?;
    let (texts, rows) = tokens::mint(count, hostname.as_deref(), crate::clock::now(), ttl_secs);
    store.insert_tokens(&rows)?;
    Ok(texts)
}

/// `devices`: every device with its addresses and last status report.
pub fn devices(config: &Config) -> Result<Value, Error> {
    let (store, zone) = open(config)?;
    let all_records = records(&zone, None)?;
    let mut out = Vec::new();
    for d in store.devices()? {
        let own: Vec<Record> = all_records.iter().filter(|r| r.name == d.hostname).cloned().collect();
        // A revoked device's name may belong to its replacement now.
        let (ipv4, ipv6) = if d.revoked {
            (Vec::new(), Vec::new())
        } else {
            dns::addresses_of(&own)
        };
        let status = match store.report(&d.id)? {
            Some(report) => {
                let mut v: Value = serde_json::from_str(&report.payload).unwrap_or_else(|_| json!({}));
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("receivedAt".into(), format_rfc3339(report.received).into());
                }
                v
            }
            None => Value::Null,
        };
        out.push(json!({
            "device": d.id,
            "hostname": d.hostname,
            "enrolled": format_rfc3339(d.enrolled),
            "revoked": d.revoked,
            "ipv4": ipv4,
            "ipv6": ipv6,
            "status": status,
        }));
    }
    Ok(Value::Array(out))
}

/// `records`: the zone's records, or those of one name.
pub fn list_records(config: &Config, hostname: Option<&str>) -> Result<Value, Error> {
    let name = match hostname {
        Some(h) => Some(crate::config::check_dns_name(h).map_err(|m| Error::Usage(format!("--hostname: {m}")))?),
        None => None,
    };
    let (_, zone) = open(config)?;
    Ok(Value::Array(
        records(&zone, name.as_deref())?.iter().map(Record::to_json).collect(),
    ))
}

/// `revoke`: marks the device revoked (its requests then fail with
/// `unauthorized`) and withdraws its address records.
pub fn revoke(config: &Config, device: &str) -> Result<String, Error> {
    let (store, zone) = open(config)?;
    let before = store
        .device(device)?
        .ok_or_else(|| Error::Other(format!("no device {device:?}")))?;
    store.revoke_device(device)?;
    if !before.revoked {
        block_on(zone.set_addresses(&before.hostname, &[], &[]))?.map_err(|e| Error::Other(e.to_string()))?;
    }
    Ok(before.hostname)
}
