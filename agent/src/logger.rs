//! Logs to stderr, one line per record, prefixed with the `<N>` syslog
//! priority that journald (`SyslogLevelPrefix=`, on by default) and procd's
//! stderr capture understand, so priorities survive without a syslog client.
//! Key material is never passed to the logger anywhere in the agent.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

/// The syslog priority (RFC 5424 §6.2.1) of a log level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries (ureq, rustls) are chatty at debug level and may print
        // request details: only `trace` lets their debug lines through.
        let ours = metadata.target().starts_with("agent");
        metadata.level() <= log::max_level()
            && (ours || metadata.level() <= Level::Info || log::max_level() == LevelFilter::Trace)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line so concurrent writers do not interleave.
        let line = format!("<{}>{}\n", priority(record.level()), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger (once) and sets the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_match_syslog() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
    }
}
