//! `loadgen run`: `--concurrency` threads, each a simulated device (or a
//! round of devices) sending sessions back to back with the agent's client,
//! for `--warmup` + `--duration` seconds; the figures of the sessions that
//! end inside the measurement window, one JSON line appended to `--out`.

use crate::cpu::{self, Sample};
use crate::devices::{self, Device, HTTP_TIMEOUT};
use crate::{Args, Res};
use agent::addresses::AddressSet;
use agent::client::Client;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What each session sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `POST addresses` (protocol §7), alternating between two sets so that
    /// every update changes the device's A and AAAA records.
    Addresses,
    /// `POST status` (protocol §10).
    Status,
}

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new client per session: TCP + TLS handshake, directory GET, nonce
    /// HEAD, the POST, as a device's check does.
    Fresh,
    /// One client per device for the whole run: after the first session,
    /// the POST alone on the kept connection.
    KeepAlive,
}

/// Most error messages kept per thread.
const ERROR_SAMPLES: usize = 3;

/// What one thread saw.
#[derive(Default)]
struct Tally {
    /// Sessions that ended in the window, successful or not.
    sessions: u64,
    /// HTTP requests of those sessions.
    requests: u64,
    /// Sessions of those that failed.
    errors: u64,
    /// Whole-session latencies, µs (successful sessions).
    session_us: Vec<u32>,
    /// Fresh: connect + TLS + directory GET, µs.
    first_us: Vec<u32>,
    /// Fresh: nonce HEAD + POST; keep-alive: the POST of one-request
    /// sessions, µs.
    second_us: Vec<u32>,
    /// Keep-alive sessions that needed more than the POST (the first one,
    /// or one after an error).
    longer_sessions: u64,
    /// Successful POSTs over the whole run, warm-up and tail included (for
    /// the zone serial check).
    posts_ok_total: u64,
    /// A few error messages.
    error_samples: Vec<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.sessions += o.sessions;
        self.requests += o.requests;
        self.errors += o.errors;
        self.session_us.extend(o.session_us);
        self.first_us.extend(o.first_us);
        self.second_us.extend(o.second_us);
        self.longer_sessions += o.longer_sessions;
        self.posts_ok_total += o.posts_ok_total;
        for e in o.error_samples {
            if self.error_samples.len() < 10 && !self.error_samples.contains(&e) {
                self.error_samples.push(e);
            }
        }
    }
}

/// What the threads share.
struct Plan<'a> {
    url: &'a str,
    ca: &'a Path,
    kind: Kind,
    mode: Mode,
    phase: u32,
    window_start: Instant,
    window_end: Instant,
    stop: AtomicBool,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The two address sets device `index` alternates between in run `phase`
/// (10.P.x.y and fd00:P:flip::index): different from every other device's
/// and from the sets of other phases, so the first update of a run changes
/// the records too.
fn address_set(index: usize, phase: u32, flip: bool) -> AddressSet {
    let p = (phase % 120) as u8 * 2 + u8::from(flip);
    let [_, _, hi, lo] = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
    AddressSet {
        ipv4: vec![Ipv4Addr::new(10, p, hi, lo)],
        ipv6: vec![Ipv6Addr::new(
            0xfd00,
            (phase & 0xffff) as u16,
            u16::from(flip),
            0,
            0,
            0,
            u16::from(hi),
            u16::from(lo),
        )],
    }
}

/// A status report as the agent builds it (`agent::report::build`): an
/// installed certificate, the addresses, and an error that comes and goes,
/// so that successive reports differ as they do when a device has news.
fn status_report(index: usize, phase: u32, flip: bool) -> Value {
    let set = address_set(index, phase, false);
    let (error, at) = if flip {
        (
            json!("renewing certificate: server answered 502 issuanceFailed: the CA is unreachable"),
            json!("2026-11-23T20:01:00Z"),
        )
    } else {
        (Value::Null, Value::Null)
    };
    json!({
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "certificate": {"serial": format!("3f0a{index:012x}"), "notAfter": "2027-02-21T20:01:00Z"},
        "addresses": set.to_json(),
        "lastError": error,
        "lastErrorAt": at,
    })
}

/// The session's POST.
fn post(client: &mut Client, plan: &Plan<'_>, index: usize, device: &Device, flip: bool) -> Res<()> {
    let key = &device.key;
    match plan.kind {
        Kind::Addresses => {
            let set = address_set(index, plan.phase, flip);
            let published = client
                .update_addresses(key, &device.id, &set)
                .map_err(|e| e.to_string())?;
            if published != set {
                return Err(format!(
                    "{}: sent {set}, the server publishes {published}",
                    device.hostname
                ));
            }
            Ok(())
        }
        Kind::Status => client
            .report_status(key, &device.id, &status_report(index, plan.phase, flip))
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// One thread: sessions back to back over `mine` (indices into `devices`)
/// until told to stop.
fn worker(plan: &Plan<'_>, devices: &[Device], mine: &[usize]) -> Tally {
    let mut tally = Tally::default();
    let mut flips = vec![false; mine.len()];
    let mut kept: Option<Client> = None;
    let mut turn = 0usize;
    while !plan.stop.load(Ordering::Relaxed) {
        let slot = turn % mine.len();
        turn += 1;
        let index = mine[slot];
        let device = &devices[index];
        let t0 = Instant::now();
        let mut client = match kept.take() {
            Some(c) => c,
            None => match Client::new(plan.url, Some(plan.ca), HTTP_TIMEOUT) {
                Ok(c) => c,
                Err(e) => {
                    // The CA file is unreadable: no session can run.
                    tally.errors += 1;
                    tally.error_samples.push(e.to_string());
                    plan.stop.store(true, Ordering::Relaxed);
                    break;
                }
            },
        };
        let before = client.stats().requests;
        let dir = client.directory().map(|_| ()).map_err(|e| e.to_string());
        let t1 = Instant::now();
        let result = dir.and_then(|()| post(&mut client, plan, index, device, flips[slot]));
        let t2 = Instant::now();
        let requests = client.stats().requests - before;
        if result.is_ok() {
            flips[slot] = !flips[slot];
            tally.posts_ok_total += 1;
            if plan.mode == Mode::KeepAlive {
                kept = Some(client);
            }
        }
        // A fresh client is dropped here, closing its connection, as a
        // device's check ends.
        if t2 < plan.window_start || t2 > plan.window_end {
            continue;
        }
        tally.sessions += 1;
        tally.requests += u64::from(requests);
        match result {
            Ok(()) => {
                tally.session_us.push(micros(t2 - t0));
                match plan.mode {
                    Mode::Fresh => {
                        tally.first_us.push(micros(t1 - t0));
                        tally.second_us.push(micros(t2 - t1));
                    }
                    Mode::KeepAlive if requests == 1 => tally.second_us.push(micros(t2 - t1)),
                    Mode::KeepAlive => tally.longer_sessions += 1,
                }
            }
            Err(e) => {
                tally.errors += 1;
                if tally.error_samples.len() < ERROR_SAMPLES {
                    tally.error_samples.push(e);
                }
            }
        }
    }
    tally
}

/// Percentiles of `v` (µs) in ms.
fn percentiles(mut v: Vec<u32>) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_unstable();
    let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    json!({"n": v.len(), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// `loadgen run`.
pub fn run(args: &Args) -> Res<()> {
    let url = args.req("url")?;
    let ca = Path::new(args.req("ca")?);
    let devices = devices::load(Path::new(args.req("devices")?))?;
    let kind = match args.req("kind")? {
        "addresses" => Kind::Addresses,
        "status" => Kind::Status,
        other => return Err(format!("--kind: {other:?} is not addresses or status")),
    };
    let mode = match args.req("mode")? {
        "fresh" => Mode::Fresh,
        "keepalive" => Mode::KeepAlive,
        other => return Err(format!("--mode: {other:?} is not fresh or keepalive")),
    };
    let concurrency: usize = args.num("concurrency", 1)?;
    if concurrency == 0 || concurrency > devices.len() {
        return Err(format!(
            "--concurrency {concurrency}: must be 1 to the number of devices ({})",
            devices.len()
        ));
    }
    let duration = Duration::from_secs_f64(args.num("duration", 20.0)?);
    let warmup = Duration::from_secs_f64(args.num("warmup", 3.0)?);
    let server_pid: Option<u32> = args
        .opt("server-pid")
        .map(|p| {
            p.parse()
                .map_err(|_| format!("--server-pid: {p:?} is not a process id"))
        })
        .transpose()?;
    let dns: Option<SocketAddr> = args
        .opt("dns")
        .map(|a| a.parse().map_err(|_| format!("--dns: {a:?} is not an address:port")))
        .transpose()?;
    let phase: u32 = args.num("phase", 0)?;
    let pinned = args.opt("pinned").unwrap_or("no");
    let out = Path::new(args.req("out")?);
    let zone = devices[0]
        .hostname
        .split_once('.')
        .map(|(_, z)| z.to_string())
        .ok_or("the first device's hostname has no zone")?;

    // Fresh: thread t takes devices t, t+C, t+2C, ... in turn (all devices
    // are used); keep-alive: thread t is device t.
    let assignment: Vec<Vec<usize>> = (0..concurrency)
        .map(|t| match mode {
            Mode::Fresh => (t..devices.len()).step_by(concurrency).collect(),
            Mode::KeepAlive => vec![t],
        })
        .collect();
    let devices_used: usize = assignment.iter().map(Vec::len).sum();
    let serial_before = match (kind, dns) {
        (Kind::Addresses, Some(server)) => Some(crate::dns::soa_serial(server, &zone)?),
        _ => None,
    };

    let start = Instant::now();
    let plan = Plan {
        url,
        ca,
        kind,
        mode,
        phase,
        window_start: start + warmup,
        window_end: start + warmup + duration,
        stop: AtomicBool::new(false),
    };
    let mut tally = Tally::default();
    let (first, last, sampled) = std::thread::scope(|s| -> Res<(Sample, Sample, Duration)> {
        let handles: Vec<_> = assignment
            .iter()
            .map(|mine| {
                let (plan, devices) = (&plan, &devices);
                s.spawn(move || worker(plan, devices, mine))
            })
            .collect();
        let stop_all = |plan: &Plan<'_>| plan.stop.store(true, Ordering::Relaxed);
        sleep_until(plan.window_start);
        let first = Sample::take(server_pid).inspect_err(|_| stop_all(&plan));
        let first_at = Instant::now();
        sleep_until(plan.window_end);
        let last = Sample::take(server_pid);
        let sampled = first_at.elapsed();
        stop_all(&plan);
        for h in handles {
            match h.join() {
                Ok(t) => tally.merge(t),
                Err(_) => return Err("a load thread panicked".into()),
            }
        }
        Ok((first?, last?, sampled))
    })?;
    let serial_after = match (kind, dns) {
        (Kind::Addresses, Some(server)) => Some(crate::dns::soa_serial(server, &zone)?),
        _ => None,
    };

    let window_s = duration.as_secs_f64();
    let cores = f64::from(cpu::cpus()?);
    // CPU shares are over the time between the two samples.
    let wall_ms = (sampled.as_secs_f64() * 1000.0).max(1.0);
    let server_ms = last.server_ms.saturating_sub(first.server_ms) as f64;
    let loadgen_ms = last.loadgen_ms.saturating_sub(first.loadgen_ms) as f64;
    let busy_ms = last.busy_ms.saturating_sub(first.busy_ms) as f64;
    let irq_ms = last.irq_ms.saturating_sub(first.irq_ms) as f64;
    let other_ms = (busy_ms - server_ms - loadgen_ms - irq_ms).max(0.0);
    let pct = |ms: f64| ms / (wall_ms * cores) * 100.0;
    let ok_sessions = tally.sessions - tally.errors;
    let per = |ms: f64, n: u64| if n == 0 { Value::Null } else { json!(ms / n as f64) };
    let delta = |f: fn(&Sample) -> u64| f(&last).saturating_sub(f(&first));
    let mut latency = serde_json::Map::new();
    latency.insert("session".into(), percentiles(std::mem::take(&mut tally.session_us)));
    match mode {
        Mode::Fresh => {
            latency.insert(
                "connect_tls_directory".into(),
                percentiles(std::mem::take(&mut tally.first_us)),
            );
            latency.insert("nonce_post".into(), percentiles(std::mem::take(&mut tally.second_us)));
        }
        Mode::KeepAlive => {
            latency.insert("post".into(), percentiles(std::mem::take(&mut tally.second_us)));
        }
    }
    let result = json!({
        "mode": match mode { Mode::Fresh => "fresh", Mode::KeepAlive => "keepalive" },
        "kind": match kind { Kind::Addresses => "addresses", Kind::Status => "status" },
        "pinned": pinned,
        "concurrency": concurrency,
        "devices": devices_used,
        "window_s": window_s,
        "sessions": tally.sessions,
        "requests": tally.requests,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "keepalive_longer_sessions": tally.longer_sessions,
        "sessions_per_s": tally.sessions as f64 / window_s,
        "requests_per_s": tally.requests as f64 / window_s,
        "posts_per_s": ok_sessions as f64 / window_s,
        "latency_ms": latency,
        "cpu": {
            "cores": cores,
            "server_ms": server_ms,
            "loadgen_ms": loadgen_ms,
            "other_ms": other_ms,
            "server_pct": pct(server_ms),
            "loadgen_pct": pct(loadgen_ms),
            "irq_ms": irq_ms,
            "irq_pct": pct(irq_ms),
            "other_pct": pct(other_ms),
            "idle_pct": (100.0 - pct(busy_ms)).max(0.0),
        },
        "server_cpu_ms_per_request": per(server_ms, tally.requests),
        "server_cpu_ms_per_session": per(server_ms, tally.sessions),
        "loadgen_cpu_ms_per_session": per(loadgen_ms, tally.sessions),
        "tcp": {
            "active_opens": delta(|s| s.tcp_active_opens),
            "passive_opens": delta(|s| s.tcp_passive_opens),
            "opens_per_session": per(delta(|s| s.tcp_passive_opens) as f64, tally.sessions),
            "listen_overflows": delta(|s| s.listen_overflows),
            "listen_drops": delta(|s| s.listen_drops),
        },
        "zone": {
            "posts_ok_total": tally.posts_ok_total,
            "serial_before": serial_before,
            "serial_after": serial_after,
        },
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| format!("opening {}: {e}", out.display()))?;
    writeln!(file, "{result}").map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!(
        "  {:>9} {:<9} c={:<3} {:>7.1} req/s {:>7.1} sessions/s  errors {}  server CPU {:.0}%  loadgen CPU {:.0}%",
        result["mode"].as_str().unwrap_or(""),
        result["kind"].as_str().unwrap_or(""),
        concurrency,
        tally.requests as f64 / window_s,
        tally.sessions as f64 / window_s,
        tally.errors,
        pct(server_ms),
        pct(loadgen_ms),
    );
    Ok(())
}
