//! `loadgen summarize`: the table of all runs, the knee of each series, and
//! the JSON document with both.

use crate::{Args, Res};
use serde_json::{json, Value};
use std::path::Path;

/// A series' knee: the lowest concurrency reaching this share of the
/// series' best request rate. 85%: repeated runs here vary by about 10%.
/// Runs that shared the CPUs with other processes are lower bounds, so
/// counting them never overstates a rate.
const KNEE_SHARE: f64 = 0.85;

/// Runs in which other processes used more than this share of the machine
/// are marked: their rates are lower bounds.
const BUSY_OTHER_PCT: f64 = 10.0;

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// The POST latency's name: HEAD + POST on a fresh connection, the POST
/// alone on a kept one.
fn post_key(run: &Value) -> &'static str {
    if s(run, "mode") == "fresh" {
        "/latency_ms/nonce_post"
    } else {
        "/latency_ms/post"
    }
}

/// What bound a run, from its CPU shares: pinned, the core of the server or
/// of loadgen when it was over 90% busy; shared, the machine when under 10%
/// of it was idle; otherwise nothing CPU-wise (too few devices at once to
/// fill the CPUs: the rate is latency-bound).
fn bound(run: &Value) -> &'static str {
    let cores = f(run, "/cpu/cores");
    let core_pct = 100.0 / cores;
    let (server, loadgen, other) = (
        f(run, "/cpu/server_pct"),
        f(run, "/cpu/loadgen_pct"),
        f(run, "/cpu/other_pct"),
    );
    if s(run, "pinned") != "no" {
        if server >= 0.9 * core_pct {
            return "server core";
        }
        if loadgen >= 0.9 * core_pct {
            return "loadgen core";
        }
    } else if f(run, "/cpu/idle_pct") < 10.0 {
        return if other > BUSY_OTHER_PCT {
            "CPUs (+others)"
        } else {
            "CPUs"
        };
    }
    if other > BUSY_OTHER_PCT {
        "others' CPU?"
    } else {
        "latency"
    }
}

/// `loadgen summarize`.
pub fn summarize(args: &Args) -> Res<()> {
    let results = args.req("results")?;
    let json_out = Path::new(args.req("json")?);
    let meta: Value = match args.opt("meta") {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("{p}: not JSON: {e}"))?
        }
        None => Value::Null,
    };
    let text = std::fs::read_to_string(results).map_err(|e| format!("reading {results}: {e}"))?;
    let runs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("{results}:{}: {e}", n + 1)))
        .collect::<Res<_>>()?;
    if runs.is_empty() {
        return Err(format!("{results}: no run in it"));
    }

    // Series in the order they first appear.
    let mut series: Vec<(String, String, String)> = Vec::new();
    for r in &runs {
        let key = (
            s(r, "mode").to_string(),
            s(r, "kind").to_string(),
            s(r, "pinned").to_string(),
        );
        if !series.contains(&key) {
            series.push(key);
        }
    }
    let mut knees = Vec::new();
    let mut contaminated = 0;
    // Address runs checked against the zone's SOA serial: (runs, updates,
    // runs where some update changed nothing).
    let mut zone_checked = (0u32, 0u64, 0u32);
    for (mode, kind, pinned) in &series {
        let mut rows: Vec<&Value> = runs
            .iter()
            .filter(|r| s(r, "mode") == mode && s(r, "kind") == kind && s(r, "pinned") == pinned)
            .collect();
        rows.sort_by_key(|r| r["concurrency"].as_u64().unwrap_or(0));
        let what = match mode.as_str() {
            "fresh" => "a new TLS connection per session: directory GET + nonce HEAD + POST",
            _ => "one kept-alive connection per device: the POST alone",
        };
        println!();
        println!("{kind} updates, {mode} ({what}); server/loadgen pinned: {pinned}");
        let post_title = if mode == "fresh" {
            "HEAD+POST p50/p99"
        } else {
            "POST p50/p99"
        };
        let cores_title = format!("% of {}", f(rows[0], "/cpu/cores"));
        let titles = [
            [
                "conc",
                "req/s",
                "sess/s",
                "errors",
                "session p50/p99",
                post_title,
                "srv CPU",
                "srv ms",
                "srv ms",
                "loadgen",
                "irq",
                "other",
                "bound by",
            ],
            [
                "",
                "",
                "",
                "",
                "ms",
                "ms",
                &cores_title,
                "/req",
                "/session",
                "CPU %",
                "%",
                "CPU %",
                "",
            ],
        ];
        for t in titles {
            println!(
                "{:>5} {:>8} {:>8} {:>6} {:>17} {:>17} {:>8} {:>7} {:>8} {:>8} {:>4} {:>7}   {}",
                t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12]
            );
        }
        for r in &rows {
            let pk = post_key(r);
            let other = f(r, "/cpu/other_pct");
            if other > BUSY_OTHER_PCT {
                contaminated += 1;
            }
            println!(
                "{:>5} {:>8.1} {:>8.1} {:>6} {:>8.1}/{:<8.1} {:>8.1}/{:<8.1} {:>7.0}% {:>7.2} {:>8.2} {:>7.0}% {:>3.0}% {:>6.0}%{:<2} {}",
                r["concurrency"].as_u64().unwrap_or(0),
                f(r, "/requests_per_s"),
                f(r, "/sessions_per_s"),
                r["errors"].as_u64().unwrap_or(0),
                f(r, "/latency_ms/session/p50"),
                f(r, "/latency_ms/session/p99"),
                f(r, &format!("{pk}/p50")),
                f(r, &format!("{pk}/p99")),
                f(r, "/cpu/server_pct"),
                f(r, "/server_cpu_ms_per_request"),
                f(r, "/server_cpu_ms_per_session"),
                f(r, "/cpu/loadgen_pct"),
                f(r, "/cpu/irq_pct"),
                other,
                if other > BUSY_OTHER_PCT { " *" } else { "" },
                bound(r),
            );
            for e in r["error_samples"].as_array().into_iter().flatten().take(2) {
                println!("        error: {}", e.as_str().unwrap_or("?"));
            }
            if let (Some(before), Some(after)) = (
                r.pointer("/zone/serial_before").and_then(Value::as_u64),
                r.pointer("/zone/serial_after").and_then(Value::as_u64),
            ) {
                let posts = r.pointer("/zone/posts_ok_total").and_then(Value::as_u64).unwrap_or(0);
                let changes = (after as u32).wrapping_sub(before as u32);
                zone_checked.0 += 1;
                zone_checked.1 += posts;
                if u64::from(changes) != posts {
                    zone_checked.2 += 1;
                    println!(
                        "        zone serial +{changes} for {posts} successful updates: not every update changed the records"
                    );
                }
            }
        }
        let best = rows.iter().map(|r| f(r, "/requests_per_s")).fold(0.0, f64::max);
        let Some(knee) = rows.iter().find(|r| f(r, "/requests_per_s") >= KNEE_SHARE * best) else {
            continue;
        };
        let cores = f(knee, "/cpu/cores");
        let ms_req = f(knee, "/server_cpu_ms_per_request");
        let ms_session = f(knee, "/server_cpu_ms_per_session");
        println!(
            "knee: concurrency {}: {:.0} requests/s, {:.0} sessions/s, session p99 {:.1} ms; server {:.2} CPU-ms/request, \
             {:.2} CPU-ms/session (the server alone on {cores} cores: ~{:.0} sessions/s)",
            knee["concurrency"],
            f(knee, "/requests_per_s"),
            f(knee, "/sessions_per_s"),
            f(knee, "/latency_ms/session/p99"),
            ms_req,
            ms_session,
            cores * 1000.0 / ms_session,
        );
        knees.push(json!({
            "mode": mode, "kind": kind, "pinned": pinned,
            "concurrency": knee["concurrency"],
            "requests_per_s": f(knee, "/requests_per_s"),
            "sessions_per_s": f(knee, "/sessions_per_s"),
            "session_p50_ms": f(knee, "/latency_ms/session/p50"),
            "session_p99_ms": f(knee, "/latency_ms/session/p99"),
            "server_cpu_ms_per_request": ms_req,
            "server_cpu_ms_per_session": ms_session,
            "server_alone_sessions_per_s_estimate": cores * 1000.0 / ms_session,
        }));
    }
    let fresh: Vec<&Value> = knees
        .iter()
        .filter(|k| k["mode"] == "fresh" && k["pinned"] == "no")
        .collect();
    if !fresh.is_empty() {
        let min = |key: &str| {
            fresh
                .iter()
                .map(|k| f(k, &format!("/{key}")))
                .fold(f64::INFINITY, f64::min)
        };
        println!();
        println!(
            "Sustainable (fresh connection per session, as devices do; server and loadgen sharing the cores): \
             {:.0} requests/s, {:.0} sessions/s ({:.0} sessions/minute), the lower of the two kinds at their knee.",
            min("requests_per_s"),
            min("sessions_per_s"),
            min("sessions_per_s") * 60.0
        );
        for k in &fresh {
            println!(
                "  {}: {:.2} server CPU-ms per session ({:.2} per request)",
                s(k, "kind"),
                f(k, "/server_cpu_ms_per_session"),
                f(k, "/server_cpu_ms_per_request")
            );
        }
    }
    if zone_checked.0 > 0 && zone_checked.2 == 0 {
        println!();
        println!(
            "Zone: the SOA serial grew by exactly the {} successful address updates of the {} address runs: \
             every update changed the device's A and AAAA records.",
            zone_checked.1, zone_checked.0
        );
    }
    if contaminated > 0 {
        println!();
        println!(
            "* {contaminated} of {} runs shared the machine with other processes using over {BUSY_OTHER_PCT:.0}% of it \
             (`other`): their rates and latencies are lower bounds; the CPU-ms per request hold better.",
            runs.len()
        );
    }
    println!();
    println!(
        "knee: the lowest concurrency reaching {:.0}% of the series' best requests/s. \
         CPU % are of all {} cores over the window; loadgen shares them with the server, so the rates are \
         what the server does with the CPU loadgen leaves it; `other` is every other process (a CI run?).",
        KNEE_SHARE * 100.0,
        f(&runs[0], "/cpu/cores")
    );

    let doc = json!({
        "meta": meta,
        "knee_rule": format!(
            "lowest concurrency reaching {:.0}% of the series' best requests/s",
            KNEE_SHARE * 100.0
        ),
        "knees": knees,
        "runs": runs,
    });
    if let Some(dir) = json_out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let pretty = serde_json::to_string_pretty(&doc).map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::write(json_out, pretty + "\n").map_err(|e| format!("writing {}: {e}", json_out.display()))?;
    println!("figures: {}", json_out.display());
    Ok(())
}
