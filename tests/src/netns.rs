//! Private network namespaces: a test's own loopback, where the server, the
//! agent, nginx and a [`FaultyRelay`](crate::FaultyRelay) talk without any
//! other test (or anything else on the machine) in between.
//!
//! A namespace is made with `ip netns add lancert-<pid>-<n>` (its `lo` is
//! brought up) and deleted on drop. Child processes run inside it under
//! [`Netns::exec_prefix`] (`ip netns exec NAME`, which execs the command, so
//! the pid the harness signals is the program's own); threads of the test
//! process enter it with setns(2) ([`Netns::run`], [`Netns::enter`]). Only
//! root can do this: the tests that need it are meant for CI and `scripts/test`,
//! which run as root.
//!
//! Why not `tc netem`: the kernels of this machine and of CI have no `netem`
//! qdisc (`Specified qdisc kind is unknown`, and no modules to load), so the
//! faults are made by the relay at the TCP stream level instead. `tbf` (rate
//! limiting) exists; [`Netns::tc`] runs `tc` inside the namespace for it.

use crate::process::{run, Output};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The `ip` binary (iproute2).
pub const IP: &str = "/usr/sbin/ip";

/// Bound on one `ip` or `tc` command: 10 s.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A network namespace with only `lo` (up); deleted on drop. Processes still
/// running inside it keep it alive until they exit, so drop it after the
/// servers, agents and nginx of the test (declare it first).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `lancert-<pid>-<n>` and brings its `lo` up. Namespaces left
    /// behind by test processes that no longer run are deleted first.
    pub fn new() -> Netns {
        assert!(
            Path::new(IP).is_file(),
            "{IP} is missing: install iproute2 (network-namespace tests need it)"
        );
        remove_stale();
        let name = format!(
            "lancert-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let out = ip(&["netns", "add", &name]);
        assert_eq!(
            out.code,
            Some(0),
            "creating network namespace {name} failed (network-namespace tests must run as root)\n{out}"
        );
        let ns = Netns { name };
        let out = ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        assert_eq!(out.code, Some(0), "bringing lo up in {} failed\n{out}", ns.name);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME`: put before a command line to run it inside.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![IP.into(), "netns".into(), "exec".into(), self.name.clone()]
    }

    /// Runs `ip -n NAME ARGS…`: `ip` on the namespace (e.g. `link set lo
    /// mtu 1500`).
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `tc ARGS…` inside the namespace (e.g. a `tbf` rate limit on `lo`).
    pub fn tc(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, "tc"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves the calling thread into the namespace (setns(2)): sockets it
    /// creates from now on, and threads it spawns, live there. Other
    /// threads of the process are not affected.
    pub fn enter(&self) -> std::io::Result<()> {
        setns_net(&self.open()?)
    }

    /// A handle on the namespace (`/run/netns/NAME`), for a thread that
    /// enters it later with `enter_handle`.
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(Path::new("/run/netns").join(&self.name))
    }

    /// Runs `f` on a thread inside the namespace and returns its result
    /// (panics propagate): for test-side connections, e.g. asking nginx
    /// inside which certificate it serves.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                self.enter()
                    .unwrap_or_else(|e| panic!("entering network namespace {}: {e}", self.name));
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = ip(&["netns", "del", &self.name]);
        if out.code != Some(0) {
            eprintln!(
                "warning: deleting network namespace {}: {}",
                self.name,
                out.stderr.trim()
            );
        }
    }
}

fn ip(args: &[&str]) -> Output {
    run(Path::new(IP), args, IP_TIMEOUT)
}

/// Deletes `lancert-<pid>-<n>` namespaces whose test process is gone (a
/// test binary killed before its drops ran).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("lancert-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32 && !crate::process::alive(pid) {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Moves the calling thread into the namespace `handle` ([`Netns::open`])
/// refers to.
pub fn enter_handle(handle: &std::fs::File) -> std::io::Result<()> {
    setns_net(handle)
}

#[allow(unsafe_code)]
fn setns_net(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) takes a file descriptor we own (open for the whole
    // call) and a flag; it changes the calling thread's namespace only and
    // touches no memory of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
