//! Two clocks, kept apart on purpose: schedules run on the monotonic clock
//! (`Instant`), which never jumps when NTP steps the time; certificate
//! validity is judged on the wall clock, but only once the wall clock is
//! plausible.
//!
//! A device without an RTC may boot with its clock in 1970 or at the time of
//! its newest file (OpenWrt's sysfixtime). Until the wall clock has passed
//! both the agent's build time and the newest of the agent's own files, the
//! agent makes no time-based decision (no renewal, no expiry judgement) and
//! looks again soon.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// When this binary was built (Unix seconds), from `build.rs`.
pub fn build_epoch() -> i64 {
    env!("LANCERT_BUILD_EPOCH").parse().unwrap_or(0) // ok: compile-time constant
}

/// The wall clock in Unix seconds (negative if before 1970).
pub fn wall_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The newest modification time among `paths` (missing files are skipped).
pub fn newest_mtime(paths: &[&Path]) -> Option<i64> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .filter_map(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .max()
}

/// The earliest wall-clock time the agent believes: the build time or the
/// newest of its own files, whichever is later.
pub fn floor(own_files: &[&Path]) -> i64 {
    build_epoch().max(newest_mtime(own_files).unwrap_or(i64::MIN))
}

/// Whether `now` can be trusted for validity decisions.
pub fn is_sane(now: i64, floor: i64) -> bool {
    now >= floor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_epoch_is_recent_and_not_in_the_future() {
        let b = build_epoch();
        assert!(b > 1_700_000_000, "{b}");
        assert!(b <= wall_now() + 60);
    }

    #[test]
    fn floor_follows_the_newest_own_file() {
        let dir = std::env::temp_dir().join(format!("lancert-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x");
        std::fs::write(&f, b"x").unwrap();
        let mtime = newest_mtime(&[&f]).unwrap();
        assert!(floor(&[&f, Path::new("/nonexistent")]) >= mtime);
        assert!(is_sane(wall_now(), floor(&[&f])));
        assert!(!is_sane(0, floor(&[&f])), "1970 is not a plausible time");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
