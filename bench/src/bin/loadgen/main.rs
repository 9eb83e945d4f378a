//! `loadgen`: the reference server's throughput and latency under many
//! concurrent simulated devices, each request made by the agent's own client
//! (`agent::client::Client`: JWS-signed, over rustls, certificate verified).
//!
//! ```text
//! loadgen enroll    --url URL --ca PEM --tokens FILE --out FILE [--threads N]
//! loadgen run       --url URL --ca PEM --devices FILE --kind addresses|status
//!                   --mode fresh|keepalive --concurrency C [--duration S] [--warmup S]
//!                   [--server-pid PID] [--dns ADDR] [--phase N] [--pinned TEXT] --out FILE
//! loadgen summarize --results FILE --json FILE [--meta FILE]
//! ```
//!
//! `enroll` enrolls one device per token and writes the devices (id,
//! hostname, identity key) to `--out`. `run` drives the server with
//! `--concurrency` threads for `--duration` seconds after `--warmup`, and
//! appends one JSON line with the figures to `--out`. `summarize` prints the
//! table of all runs and writes them, with the knee of each series, as one
//! JSON document. `bench/throughput` runs the three.
//!
//! Modes: `fresh` is a device's check: a new client, so a new TCP and TLS
//! connection, per session (directory GET, nonce HEAD, the POST); `keepalive`
//! keeps one client per device, so after its first session each session is
//! the POST alone, on the kept connection, with the nonce of the previous
//! answer.

mod cpu;
mod devices;
mod dns;
mod run;
mod summary;

use std::collections::HashMap;
use std::process::ExitCode;

/// An error for the operator: what was being done and why it failed.
pub type Res<T> = Result<T, String>;

const USAGE: &str = "usage:
  loadgen enroll    --url URL --ca PEM --tokens FILE --out FILE [--threads N]
  loadgen run       --url URL --ca PEM --devices FILE --kind addresses|status --mode fresh|keepalive
                    --concurrency C [--duration S] [--warmup S] [--server-pid PID] [--dns ADDR]
                    [--phase N] [--pinned TEXT] --out FILE
  loadgen summarize --results FILE --json FILE [--meta FILE]";

/// `--name value` pairs, each name at most once and from `allowed`.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    fn parse(argv: &[String], allowed: &[&str]) -> Res<Args> {
        let mut values = HashMap::new();
        let mut it = argv.iter();
        while let Some(name) = it.next() {
            let key = name
                .strip_prefix("--")
                .filter(|k| allowed.contains(k))
                .ok_or_else(|| format!("unknown argument {name:?}"))?;
            let value = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            if values.insert(key.to_string(), value.clone()).is_some() {
                return Err(format!("{name} given twice"));
            }
        }
        Ok(Args { values })
    }

    /// A required argument.
    pub fn req(&self, name: &str) -> Res<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// An optional argument.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// An optional number, `default` when absent.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Res<T> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: {v:?} is not a valid number")),
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) if cmd == "enroll" => {
            Args::parse(rest, &["url", "ca", "tokens", "out", "threads"]).and_then(|a| devices::enroll(&a))
        }
        Some((cmd, rest)) if cmd == "run" => Args::parse(
            rest,
            &[
                "url",
                "ca",
                "devices",
                "kind",
                "mode",
                "concurrency",
                "duration",
                "warmup",
                "server-pid",
                "dns",
                "phase",
                "pinned",
                "out",
            ],
        )
        .and_then(|a| run::run(&a)),
        Some((cmd, rest)) if cmd == "summarize" => {
            Args::parse(rest, &["results", "json", "meta"]).and_then(|a| summary::summarize(&a))
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
