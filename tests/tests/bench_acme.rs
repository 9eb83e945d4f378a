//! A benchmark, not a test (it is `#[ignore]`d and asserts only that the
//! flow works): what one issuance costs at the management server against
//! a real ACME CA, Debian's pebble with `PEBBLE_VA_NOSLEEP=1`. Run it with
//! `scripts/bench-acme`, which builds release binaries first.
//!
//! Prints, for `LANCERT_BENCH_DEVICES` devices (default 10), one after the
//! other: the server's time from CSR to chain (its issuer call: new order,
//! dns-01 record published and seen on the zone's server, validation,
//! finalize, download, ARI), the ACME requests pebble answered per issuance,
//! and the agent's whole `--check-now`; then the same for a renewal round
//! (30-second certificates, so the renewals come at once, with `replaces`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lancert_tests::scenario::{server_device_named, Device};
use lancert_tests::{authoritative_dns, wait_for, Pebble, PebbleOptions, Server, ServerConfig, TestEnv};

fn stats(label: &str, unit: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    println!(
        "{label}: n={n} min={:.1} median={:.1} mean={mean:.1} max={:.1} {unit}",
        values[0],
        values[n / 2],
        values[n - 1]
    );
}

/// The "CSR to chain in N ms" figures the server logged after `skip` lines.
fn csr_to_chain_ms(log: &str, skip: usize) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("CSR to chain in ").nth(1))
        .skip(skip)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Runs each device's check (after waiting until its certificate is due,
/// with `when_due`) and prints the costs.
fn round(devices: &[Device], pebble: &Pebble, server: &Server, what: &str, when_due: bool) {
    let logged_before = csr_to_chain_ms(&server.log(), 0).len();
    let mut requests = Vec::new();
    let mut checks = Vec::new();
    for dev in devices {
        if when_due {
            wait_for("renewal to be due", Duration::from_secs(40), || {
                dev.agent.status()["renewalDue"]
                    .as_str()
                    .filter(|d| d.starts_with("now"))
                    .map(|_| ())
            });
        }
        let before = pebble.acme_requests();
        let started = Instant::now();
        dev.agent.check_now().assert_code(0);
        checks.push(started.elapsed().as_secs_f64() * 1000.0);
        requests.push((pebble.acme_requests() - before) as f64);
    }
    println!("== {what}");
    stats(
        "server, CSR to chain",
        "ms",
        csr_to_chain_ms(&server.log(), logged_before),
    );
    stats("ACME requests per issuance", "", requests);
    stats("agent --check-now, whole", "ms", checks);
}

#[test]
#[ignore = "a benchmark: scripts/bench-acme"]
fn acme_issuance_costs() {
    let count: usize = std::env::var("LANCERT_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let env = TestEnv::new("bench-acme");
    let dns_port = env.free_port();
    let pebble = Pebble::start_with(
        &env,
        SocketAddr::from(([127, 0, 0, 1], dns_port)),
        PebbleOptions {
            validity_secs: Some(30),
            ..PebbleOptions::default()
        },
    );
    let mut extra = serde_json::Map::new();
    extra.insert("issuer".into(), pebble.issuer_config());
    extra.insert("dns".into(), authoritative_dns(dns_port));
    let server = Server::start_with(
        &env,
        ServerConfig {
            extra,
            ..ServerConfig::default()
        },
    );
    let root = pebble.root_file().to_str().expect("UTF-8 path").to_string();
    let devices: Vec<Device> = (0..count)
        .map(|i| {
            server_device_named(&env, &server, &format!("device{i}"), |c| {
                c.set("trust_anchors", root.as_str())
            })
        })
        .collect();
    round(&devices, &pebble, &server, "first issuance", false);
    round(&devices, &pebble, &server, "renewal (ARI replaces)", true);
    let replaced = server.log().matches("; it replaces ").count();
    println!("renewal orders sent with replaces: {replaced} of {count}");
}
