//! A minimal `log` backend: one line per record on stderr, with a UTC
//! timestamp. The level comes from `LANCERT_LOG` (`error` … `trace`,
//! default `info`).
//!
//! Each line is formatted first and written with one `write(2)`: stderr is
//! unbuffered, and `eprintln!` wrote a line in about 15 pieces (under load,
//! a few percent of a request's CPU), which other processes writing to the
//! same journal or pipe could split. A failed write is ignored: a log
//! reader gone away must not take a request down (`eprintln!` panics).

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = lancert_protocol::time::format_rfc3339(crate::clock::now());
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let _ = std::io::stderr()
            .lock()
            .write_all(line(&ts, level, record.args()).as_bytes());
    }

    fn flush(&self) {}
}

/// One log line, newline included.
fn line(ts: &str, level: &str, message: &std::fmt::Arguments<'_>) -> String {
    format!("{ts} {level} {message}\n")
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = match std::env::var("LANCERT_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => LevelFilter::Info,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_timestamp_level_message_newline() {
        assert_eq!(
            line("2026-11-24T06:00:00Z", "WARN", &format_args!("order {} failed", 7)),
            "2026-11-24T06:00:00Z WARN order 7 failed\n"
        );
    }
}
