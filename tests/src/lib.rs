//! Test harness for lancert's end-to-end tests.
//!
//! The tests in `tests/tests/` drive the real `agent` and `lancert-server`
//! binaries (built by `cargo build --workspace` into `target/debug/`), over
//! real HTTPS on loopback, with a real nginx serving the agent's files. This
//! crate holds the pieces they share:
//!
//! | piece | what it is |
//! |---|---|
//! | [`TestEnv`] | a private temporary directory, free loopback ports, the binaries' paths |
//! | [`Server`] | `lancert-server serve` in local-CA mode, plus its `token`/`records`/`devices` commands |
//! | [`Agent`] | an agent configuration file and runs of the `agent` binary with a time limit |
//! | [`attacker`] | a hostile client: signed requests changed one way at a time, slow and oversized connections, database snapshots |
//! | [`dig()`] | a non-recursive `dig` query to one DNS server |
//! | [`Pebble`] | Debian's pebble, the ACME test CA, resolving challenges through the test's DNS server |
//! | [`Nginx`] | Debian's nginx serving the agent's certificate files on a loopback port |
//! | [`Bind`] | Debian's BIND9 as the primary of a test zone on a loopback port, updatable with a TSIG key |
//! | [`EvilServer`] | an in-process protocol server whose answers a test can make wrong, one way at a time |
//! | [`Netns`] | a private network namespace the server, the agent and nginx run in (`ip netns`) |
//! | [`FaultyRelay`] | a TCP relay between agent and server that adds latency, loss, resets and cuts |
//! | [`scenario`] | set-ups several tests share: a provisioned device with nginx in front |
//! | [`tls`] | client handshakes that report which certificate a port serves, and certificate inspection |
//!
//! Run everything with `scripts/test`, or, after `cargo build --workspace`,
//! `cargo test -p lancert-tests`. Environment variables:
//!
//! | variable | effect |
//! |---|---|
//! | `LANCERT_AGENT` | the agent binary under test, e.g. one cross-compiled for MIPS (default: the one in the binaries' directory) |
//! | `LANCERT_AGENT_RUNNER` | an emulator to run the agent under, e.g. `qemu-mips-static` |
//! | `LANCERT_BIN_DIR` | directory of the binaries under test (default: the `target/debug/` of the test binary) |
//! | `LANCERT_ALLOW_STALE` | skip the check that the binaries are newer than their sources |
//! | `LANCERT_KEEP_TEST_DIRS` | keep each test's directory also when it passes (it is always kept on failure) |
//!
//! Every test builds its own environment: nothing is shared between tests, so
//! they can run in parallel and in any order. Every wait has a bound
//! ([`COMMAND_TIMEOUT`], [`SERVER_START_TIMEOUT`]) so a hanging binary fails
//! its test instead of hanging the suite.
// `deny`, not `forbid`: one call, kill(2), needs `unsafe` (see `process.rs`).
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod agent;
pub mod attacker;
mod bind;
mod dig;
mod env;
mod evil;
mod faulty_relay;
mod netns;
mod nginx;
mod pebble;
mod pki;
mod process;
pub mod scenario;
mod server;
pub mod tls;

pub use agent::{Agent, AgentConfig, Daemon, FileSnapshot, FileState};
pub use bind::Bind;
pub use dig::{dig, DIG};
pub use env::TestEnv;
pub use evil::{EvilServer, Mode, Stats, EVIL_HOSTNAME, HUGE_BODY_BYTES, OTHER_TLS_HOST};
pub use faulty_relay::{Fault, FaultyRelay, RelayStats};
pub use netns::Netns;
pub use nginx::{Nginx, NGINX, STABLE_HANDSHAKES};
pub use pebble::{Pebble, PebbleOptions, PEBBLE};
pub use pki::{self_signed, TestCa};
pub use process::{run, signal, Output, COMMAND_TIMEOUT};
pub use server::{authoritative_dns, Server, ServerConfig, SERVER_START_TIMEOUT, ZONE};

/// Polls `cond` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}
