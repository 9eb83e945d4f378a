//! `fleet-sim`: the fleet simulation's command line. Prints, per scenario,
//! requests per minute at the server (mean, p99, peak, peak-to-mean), the
//! peak of the disruption against the steady mean, how long until every
//! device is current again, the address publication delays, and how close
//! any certificate came to expiry; writes the per-minute series as CSV for
//! the plots.
//!
//! ```text
//! fleet-sim [--devices N] [--days D] [--seed S] [--ca-secs S] [--csv DIR] [SCENARIO...]
//! ```

use lancert_bench::fleet::metrics::{quantile, rates, Metrics};
use lancert_bench::fleet::scenario::{self, Scenario, DAY, EVENT_AT, MINUTE, SECOND, WARM_UP};
use lancert_bench::fleet::{Params, Simulation};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

const SEVEN_DAYS: i64 = 7 * 86_400;

struct Args {
    params: Params,
    csv: Option<PathBuf>,
    names: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut params = Params {
        devices: 100_000,
        days: 180,
        seed: 1,
        ca_ms: 10 * SECOND,
    };
    let mut csv = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| v.parse::<u64>().map_err(|e| format!("{name} {v}: {e}"));
        match arg.as_str() {
            "--devices" => params.devices = number("--devices", value("--devices")?)? as usize,
            "--days" => params.days = number("--days", value("--days")?)?,
            "--seed" => params.seed = number("--seed", value("--seed")?)?,
            "--ca-secs" => params.ca_ms = number("--ca-secs", value("--ca-secs")?)? * SECOND,
            "--csv" => csv = Some(PathBuf::from(value("--csv")?)),
            "-h" | "--help" => {
                return Err(
                    "usage: fleet-sim [--devices N] [--days D] [--seed S] [--ca-secs S] [--csv DIR] [SCENARIO...]"
                        .into(),
                )
            }
            name if !name.starts_with('-') => names.push(name.to_string()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    // The disruptions start on day 30 and are reported over two days.
    if WARM_UP + params.days * DAY < EVENT_AT + 2 * DAY {
        return Err("--days must be at least 32 (the disruptions start on day 30)".into());
    }
    if params.devices == 0 {
        return Err("--devices must be at least 1".into());
    }
    Ok(Args { params, csv, names })
}

fn minutes(ms: u64) -> f64 {
    ms as f64 / MINUTE as f64
}

fn report(s: &Scenario, params: &Params, m: &mut Metrics, elapsed: f64) -> String {
    let all = rates(&m.requests);
    let total: u64 = m.requests.iter().map(|&v| u64::from(v)).sum();
    let per_device_day = total as f64 / params.devices as f64 / params.days as f64;
    let near = m.least_left.iter().filter(|&&l| l < SEVEN_DAYS).count();
    let least_days = m.least_left.iter().copied().min().unwrap_or(0) as f64 / 86_400.0;
    let mut out = format!(
        "== {} ({})\n   requests/min: mean {:.1}, p99 {}, peak {} (peak/mean {:.2}); {:.2} requests per device per day; {} orders\n   certificates within 7 days of expiry: {} of {} ({:.3} %); least validity left at renewal {:.1} days\n",
        s.name,
        s.title,
        all.mean,
        all.p99,
        all.peak,
        f64::from(all.peak) / all.mean,
        per_device_day,
        m.orders,
        near,
        params.devices,
        near as f64 * 100.0 / params.devices as f64,
        least_days,
    );
    if let Some(end) = s.disruption_end() {
        let event = usize::try_from((EVENT_AT - WARM_UP) / MINUTE).unwrap_or(0);
        let before = rates(&m.requests[..event]);
        let after_end = (event + 2 * 1440).min(m.requests.len());
        let during = rates(&m.requests[event..after_end]);
        let refused: u64 = m.refused.iter().map(|&v| u64::from(v)).sum();
        out += &format!(
            "   disruption: peak {} requests/min {:.0} min after it began = {:.2} x the steady mean {:.1}; {} connection attempts refused while down\n",
            during.peak,
            during.peak_minute,
            f64::from(during.peak) / before.mean,
            before.mean,
            refused
        );
        let mut back: Vec<u64> = m
            .current_again
            .iter()
            .flatten()
            .map(|&t| t.saturating_sub(end))
            .collect();
        if !back.is_empty() {
            let n = back.len();
            out += &format!(
                "   current again ({} devices had to catch up): 50 % after {:.1} min, 99 % after {:.1} min, all after {:.1} min\n",
                n,
                minutes(quantile(&mut back, 0.5)),
                minutes(quantile(&mut back, 0.99)),
                minutes(quantile(&mut back, 1.0)),
            );
        }
    }
    if !m.publish_delays.is_empty() {
        let n = m.publish_delays.len();
        let d = &mut m.publish_delays;
        out += &format!(
            "   address change to update at the server ({} changes): median {:.2} s, p99 {:.2} s, max {:.2} s\n",
            n,
            quantile(d, 0.5) as f64 / 1000.0,
            quantile(d, 0.99) as f64 / 1000.0,
            quantile(d, 1.0) as f64 / 1000.0,
        );
    }
    out += &format!("   (simulated in {elapsed:.1} s)\n");
    out
}

fn write_csv(dir: &std::path::Path, s: &Scenario, m: &Metrics) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.csv", s.name));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(f, "minute,requests,refused")?;
    for (i, (r, x)) in m.requests.iter().zip(&m.refused).enumerate() {
        writeln!(f, "{i},{r},{x}")?;
    }
    f.flush()
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet-sim: {e}");
            std::process::exit(2);
        }
    };
    let chosen: Vec<Scenario> = scenario::all()
        .into_iter()
        .filter(|s| args.names.is_empty() || args.names.iter().any(|n| n == s.name))
        .collect();
    if chosen.is_empty() {
        let known: Vec<&str> = scenario::all().iter().map(|s| s.name).collect();
        eprintln!("fleet-sim: no such scenario; known: {}", known.join(", "));
        std::process::exit(2);
    }
    println!(
        "fleet simulation: {} devices, {} days after 1 day of warm-up, seed {}, CA time {} s per order; agent defaults (address check every {} s, certificate check every {} s, refreshes every {} s, start splay {} s)",
        args.params.devices,
        args.params.days,
        args.params.seed,
        args.params.ca_ms / SECOND,
        agent::config::defaults::ADDRESS_INTERVAL_SECS,
        agent::config::defaults::CERTIFICATE_INTERVAL_SECS,
        agent::config::defaults::STATUS_REFRESH_SECS,
        agent::config::defaults::STARTUP_SPLAY_SECS,
    );
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<String>>> = chosen.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(chosen.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(s) = chosen.get(i) else { break };
                let started = Instant::now();
                let mut m = Simulation::new(s, args.params).run();
                let text = report(s, &args.params, &mut m, started.elapsed().as_secs_f64());
                if let Some(dir) = &args.csv {
                    if let Err(e) = write_csv(dir, s, &m) {
                        eprintln!("fleet-sim: writing {}: {e}", dir.display());
                    }
                }
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(text);
                }
            });
        }
    });
    for r in &results {
        if let Ok(Some(text)) = r.lock().map(|g| g.clone()) {
            print!("{text}");
        }
    }
}
