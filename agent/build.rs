//! Embeds the build time, the agent's lower bound for a sane wall clock: a
//! device without an RTC can boot with a clock far in the past, and no
//! time-based decision may be made before the clock passes this point.
//! `SOURCE_DATE_EPOCH` (reproducible builds) takes precedence.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=LANCERT_BUILD_EPOCH={epoch}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
