//! A benchmark, not a test (it is `#[ignore]`d and asserts only that the
//! flow works): how soon after an address change on the device the
//! management server has the new address, and answers it in DNS. Run it with
//! `bench/event-latency`, which builds release binaries first. Needs root
//! (`ip netns`).
//!
//! Set-up, all inside a private network namespace ([`Netns`], its own `lo`):
//! the release `lancert-server` in local-CA mode with its embedded
//! authoritative DNS on `127.0.0.1`, and the release `agent run` daemon
//! watching one interface (`"interface"`). The interface is a `dummy` one
//! when the kernel has the dummy driver, else one end of a `veth` pair whose
//! other end is up in the same namespace (an Ethernet-like port with carrier;
//! kernels built without `CONFIG_DUMMY` exist, this machine's is one). The
//! agent is provisioned and has its certificate before the daemon starts, so
//! every check the events cause is an address check only.
//!
//! Then `LANCERT_BENCH_EVENTS` (default 20) address changes of each family,
//! IPv4 and IPv6 interleaved, each one `ip -n NS -batch FILE` deleting the
//! old address and adding the new one (as a DHCP client does on a new lease;
//! IPv6 with `nodad`, so the new address is usable at once and the figure is
//! the agent's, not the kernel's duplicate-address detection, which adds
//! about one second on a link with carrier; `LANCERT_BENCH_DAD=1` measures
//! that case). `t0` is taken just before the `ip` process is started; every
//! later time is relative to it:
//!
//! - **agent woken**: the daemon's `address event` debug line (written after
//!   it drained the netlink socket);
//! - **directory**, **nonce**: the daemon's debug lines for the answers to
//!   its first two exchanges of the check (GET directory, HEAD new-nonce);
//! - **server has it**: the server's `device …: HOST now [...]` line, which
//!   it logs after the new records are committed, just before it answers;
//! - **DNS answers**: the first answer of the server's authoritative DNS
//!   (UDP, queried in-process every 2 ms from inside the namespace) that
//!   holds the new address;
//! - **agent published**: the daemon's `published … for HOST` line (answer
//!   received and checked);
//! - **check done**: the daemon's `check done` line (after the status report
//!   the new addresses also cause, and the state save).
//!
//! Log lines are stamped when they appear in the log files (each file is
//! polled every millisecond by a thread of its own), so every figure is
//! good to about a millisecond (lines read in the same poll get the same
//! time). The server's own log timestamps have only one-second resolution
//! and are not used. The namespace's TCP `DelayedACKs` counter is read
//! before and after each event: a delayed ACK costs 40 ms or more.
//!
//! Prints min / median / p90 / max per figure and family, and the breakdown
//! of the median; writes everything, every event included, as JSON to
//! `LANCERT_BENCH_JSON` (default `target/bench/event-latency.json`).

use std::io::{Read, Seek};
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lancert_tests::scenario::provisioned_hostname;
use lancert_tests::{authoritative_dns, wait_for, Agent, AgentConfig, Netns, Server, ServerConfig, TestEnv};
use serde_json::{json, Value};

/// iproute2.
const IP: &str = "/usr/sbin/ip";
/// The agent's settle delay after an address event (agent/src/schedule.rs
/// `ADDRESS_SETTLE`); only for the breakdown.
const SETTLE_MS: f64 = 500.0;
/// The goal: the server has the new address within this long.
const GOAL_MS: f64 = 2000.0;
/// How long one event may take before the benchmark gives up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause after each event (the agent's check done and DNS answering)
/// before the next change.
const GAP: Duration = Duration::from_millis(1500);
/// How often DNS is asked while waiting for the new record.
const DNS_EVERY: Duration = Duration::from_millis(2);

/// Set by SIGINT/SIGTERM: the benchmark stops at the next event and its
/// drops stop the daemon and the server and delete the namespace.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[allow(unsafe_code)]
fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; signal(2) takes no pointers of ours.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

fn check_interrupted() {
    assert!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted: stopping");
}

// ---------------------------------------------------------------------------
// Log files, stamped line by line as they grow

/// One line of a log and when it appeared.
#[derive(Clone)]
struct Stamped {
    at: Instant,
    line: String,
}

/// A file followed by a thread that polls it every millisecond and stamps
/// each complete line when it sees it.
struct Tail {
    lines: Arc<Mutex<Vec<Stamped>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tail {
    fn follow(path: PathBuf) -> Tail {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut file: Option<std::fs::File> = None;
            let mut pending = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if file.is_none() {
                    file = std::fs::File::open(&path).ok();
                }
                if let Some(f) = file.as_mut() {
                    let _ = f.read_to_end(&mut pending);
                    let at = Instant::now();
                    if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                        let text = String::from_utf8_lossy(&pending[..end]).into_owned();
                        pending.drain(..=end);
                        let mut guard = l.lock().unwrap_or_else(|e| e.into_inner());
                        guard.extend(text.split('\n').map(|line| Stamped {
                            at,
                            line: line.to_string(),
                        }));
                    }
                    // A file truncated (recreated) under us: start over.
                    if f.stream_position().ok() > f.metadata().ok().map(|m| m.len()) {
                        file = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Tail {
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// The first line at or after `since` that `matches`, with its time.
    fn first_after(&self, since: Instant, matches: impl Fn(&str) -> bool) -> Option<Stamped> {
        let guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        guard.iter().find(|s| s.at >= since && matches(&s.line)).cloned()
    }

    /// All lines at or after `since`.
    fn since(&self, since: Instant) -> Vec<String> {
        let guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        guard.iter().filter(|s| s.at >= since).map(|s| s.line.clone()).collect()
    }

    /// When the last line appeared.
    fn last_at(&self) -> Option<Instant> {
        let guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        guard.last().map(|s| s.at)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// DNS, in-process: one UDP query, one answer

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;

/// A non-recursive query for `name`/`qtype`.
fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no RD; QDCOUNT 1
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("label under 64 bytes"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        if len == 0 {
            return Some(pos + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(pos + 2);
        }
        pos += 1 + usize::from(len);
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The addresses of type `qtype` in the answer section of reply `msg` to
/// query `id`; `None` for another message or a malformed one.
fn dns_answers(msg: &[u8], id: u16, qtype: u16) -> Option<Vec<IpAddr>> {
    if u16_at(msg, 0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        pos = skip_name(msg, pos)?;
        let rtype = u16_at(msg, pos)?;
        let rdlen = usize::from(u16_at(msg, pos + 8)?);
        let rdata = msg.get(pos + 10..pos + 10 + rdlen)?;
        pos += 10 + rdlen;
        match (rtype, rdata.len()) {
            (t, 4) if t == qtype && t == QTYPE_A => {
                out.push(IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?));
            }
            (t, 16) if t == qtype && t == QTYPE_AAAA => {
                out.push(IpAddr::from(<[u8; 16]>::try_from(rdata).ok()?));
            }
            _ => {}
        }
    }
    Some(out)
}

/// A UDP socket inside the namespace, asking the server's DNS.
struct Resolver {
    socket: UdpSocket,
    next_id: u16,
}

impl Resolver {
    fn new(ns: &Netns, server_port: u16) -> Resolver {
        let socket = ns.run(|| UdpSocket::bind("127.0.0.1:0")).expect("binding a UDP socket");
        socket.connect(("127.0.0.1", server_port)).expect("connecting UDP");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Resolver { socket, next_id: 1 }
    }

    /// The addresses the server answers for `name`/`qtype` now (`None` on
    /// no answer within 200 ms).
    fn ask(&mut self, name: &str, qtype: u16) -> Option<Vec<IpAddr>> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.socket.send(&dns_query(id, name, qtype)).ok()?;
        let mut buf = [0u8; 1500];
        loop {
            let n = self.socket.recv(&mut buf).ok()?;
            if let Some(a) = dns_answers(&buf[..n], id, qtype) {
                return Some(a);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Statistics

/// min / median / p90 / max (nearest rank) of `v`, in ms.
fn summary(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    json!({
        "n": s.len(),
        "min": round(s[0]),
        "median": round(rank(0.5)),
        "p90": round(rank(0.9)),
        "max": round(s[s.len() - 1]),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------
// The interface

/// Creates the interface the agent watches: `dummy0` (dummy) if the kernel
/// can, else `veth0` with its peer `veth0p` up in the same namespace.
/// Returns its name and kind.
fn make_interface(ns: &Netns) -> (String, &'static str) {
    let out = ns.ip(&["link", "add", "dummy0", "type", "dummy"]);
    let (name, kind) = if out.code == Some(0) {
        ("dummy0", "dummy")
    } else {
        eprintln!(
            "no dummy interfaces here (`ip link add dummy0 type dummy`: {}); using a veth pair",
            out.stderr.trim()
        );
        ns.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth0p"])
            .assert_code(0);
        ns.ip(&["link", "set", "veth0p", "up"]).assert_code(0);
        ("veth0", "veth")
    };
    ns.ip(&["link", "set", name, "up"]).assert_code(0);
    (name.to_string(), kind)
}

/// `ip -n NS -batch FILE` with `commands`; returns how long it took.
fn ip_batch(ns: &Netns, file: &Path, commands: &str) -> (Instant, Duration) {
    std::fs::write(file, commands).expect("writing the ip batch");
    let t0 = Instant::now();
    let out = Command::new(IP)
        .args(["-n", ns.name(), "-batch"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("running ip");
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "ip -batch failed: {}\n{commands}",
        String::from_utf8_lossy(&out.stderr)
    );
    (t0, took)
}

/// The namespace's `TcpExt: DelayedACKs` counter (`/proc/net/netstat`
/// read inside it): delayed ACKs its TCP stack sent so far.
fn delayed_acks(ns: &Netns) -> u64 {
    let out = Command::new(IP)
        .args(["netns", "exec", ns.name(), "cat", "/proc/net/netstat"])
        .stdin(Stdio::null())
        .output()
        .expect("reading /proc/net/netstat in the namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        panic!("no TcpExt lines in /proc/net/netstat:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "DelayedACKs")
        .and_then(|(_, v)| v.parse().ok())
        .expect("TcpExt DelayedACKs")
}

// ---------------------------------------------------------------------------
// One event

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The figures of one event, ms after `t0`.
struct Event {
    family: Family,
    from: String,
    to: String,
    ip_done: f64,
    woken: f64,
    directory: f64,
    nonce: f64,
    server: f64,
    dns: f64,
    published: f64,
    check_done: f64,
    wakeups: usize,
    /// Updates for the hostname the server took in between that do not
    /// hold the new address (with DAD: the set without IPv6).
    interim_updates: usize,
    dns_queries: u32,
    /// TCP delayed ACKs sent in the namespace during the event.
    delayed_acks: u64,
}

impl Event {
    fn to_json(&self) -> Value {
        json!({
            "family": self.family.name(), "from": self.from, "to": self.to,
            "ip_done_ms": round(self.ip_done), "agent_woken_ms": round(self.woken),
            "directory_ms": round(self.directory), "nonce_ms": round(self.nonce),
            "server_has_it_ms": round(self.server), "dns_answers_ms": round(self.dns),
            "agent_published_ms": round(self.published), "check_done_ms": round(self.check_done),
            "address_event_lines": self.wakeups, "interim_updates": self.interim_updates, "dns_queries": self.dns_queries,
            "tcp_delayed_acks": self.delayed_acks,
        })
    }
}

struct Bench<'a> {
    ns: &'a Netns,
    iface: String,
    hostname: String,
    batch_file: PathBuf,
    agent_log: &'a Tail,
    server_log: &'a Tail,
    resolver: Resolver,
    /// IPv6 addresses are added without `nodad`.
    dad: bool,
}

impl Bench<'_> {
    /// Replaces `from` (with its prefix) by `to` on the interface and
    /// measures until the server answers `to`.
    fn event(&mut self, family: Family, from: &str, to: &str) -> Event {
        check_interrupted();
        let (prefix, extra, qtype) = match family {
            Family::V4 => ("/16", "", QTYPE_A),
            Family::V6 if self.dad => ("/64", "", QTYPE_AAAA),
            Family::V6 => ("/64", " nodad", QTYPE_AAAA),
        };
        let iface = &self.iface;
        let acks_before = delayed_acks(self.ns);
        let commands = format!("address del {from}{prefix} dev {iface}\naddress add {to}{prefix} dev {iface}{extra}\n");
        let (t0, ip_took) = ip_batch(self.ns, &self.batch_file, &commands);
        let want: IpAddr = to.parse().unwrap();
        let after = |s: &Stamped| ms(s.at - t0);
        let quoted = format!("\"{to}\"");
        let update_line = format!(" {} now ", self.hostname);
        let mut dns = None;
        let mut queries = 0;
        let mut last_query: Option<Instant> = None;
        loop {
            if dns.is_none() && last_query.is_none_or(|q| q.elapsed() >= DNS_EVERY) {
                last_query = Some(Instant::now());
                queries += 1;
                if let Some(answer) = self.resolver.ask(&self.hostname, qtype) {
                    if answer == [want] {
                        dns = Some(ms(t0.elapsed()));
                    }
                }
            }
            let server = self
                .server_log
                .first_after(t0, |l| l.contains(&update_line) && l.contains(&quoted));
            let published = self
                .agent_log
                .first_after(t0, |l| l.contains("published ") && l.contains(&quoted));
            let done = published
                .as_ref()
                .and_then(|p| self.agent_log.first_after(p.at, |l| l.contains("check done")));
            if let (Some(server), Some(dns), Some(published), Some(done)) = (&server, dns, &published, &done) {
                let line = |needle: &str| {
                    self.agent_log
                        .first_after(t0, |l| l.contains(needle))
                        .map(|s| after(&s))
                        .unwrap_or_else(|| panic!("no agent line {needle:?} for {from} -> {to}"))
                };
                let all = self.agent_log.since(t0);
                let wakeups = all.iter().filter(|l| l.contains("address event")).count();
                for l in &all {
                    assert!(
                        !l.starts_with("<3>") && !l.starts_with("<4>"),
                        "agent error or warning for {from} -> {to}: {l}\n{}",
                        all.join("\n")
                    );
                }
                let interim = self
                    .server_log
                    .since(t0)
                    .iter()
                    .filter(|l| l.contains(&update_line) && !l.contains(&quoted))
                    .count();
                // After the pause, so that the connection's close is counted
                // too.
                std::thread::sleep(GAP);
                let delayed = delayed_acks(self.ns) - acks_before;
                return Event {
                    family,
                    from: from.to_string(),
                    to: to.to_string(),
                    ip_done: ms(ip_took),
                    woken: line("address event"),
                    directory: line("reading the server's directory: "),
                    nonce: line("/v1/nonce: "),
                    server: after(server),
                    dns,
                    published: after(published),
                    check_done: after(done),
                    wakeups,
                    interim_updates: interim,
                    dns_queries: queries,
                    delayed_acks: delayed,
                };
            }
            check_interrupted();
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "{from} -> {to}: not done after {EVENT_TIMEOUT:?} (server {}, DNS {dns:?}, published {})\nagent:\n{}\nserver:\n{}",
                server.is_some(),
                published.is_some(),
                self.agent_log.since(t0).join("\n"),
                self.server_log.since(t0).join("\n")
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

// ---------------------------------------------------------------------------
// The benchmark

#[test]
#[ignore = "a benchmark: bench/event-latency (needs root)"]
fn address_event_latency() {
    catch_interrupts();
    let per_family: usize = std::env::var("LANCERT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20);
    let dad = std::env::var_os("LANCERT_BENCH_DAD").is_some_and(|v| v == "1");
    let json_path = std::env::var_os("LANCERT_BENCH_JSON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/event-latency.json"),
        PathBuf::from,
    );

    // Drop order (reverse of declaration): daemon, tails, server, namespace,
    // directory.
    let env = TestEnv::new("bench-event-latency");
    let ns = Netns::new();
    let (iface, kind) = make_interface(&ns);
    let mut v4 = "10.77.0.10".to_string();
    let mut v6 = "fd77::10".to_string();
    ns.ip(&["addr", "add", &format!("{v4}/16"), "dev", &iface])
        .assert_code(0);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", &iface, "nodad"])
        .assert_code(0);

    let dns_port = env.free_port();
    let mut extra = serde_json::Map::new();
    extra.insert("dns".into(), authoritative_dns(dns_port));
    let server = Server::start_under(
        &env,
        ServerConfig {
            extra,
            ..ServerConfig::default()
        },
        ns.exec_prefix(),
    );
    let server_log = Tail::follow(env.path("server.log"));

    let cfg = AgentConfig::new(&server.url(), &server.ca_path(), &env.subdir("device"))
        .set("interface", iface.as_str())
        .set("ipv4", true)
        .set("ipv6", true)
        .set("address_interval_secs", 3600)
        .set("certificate_interval_secs", 86_400)
        .set("status_refresh_secs", 86_400);
    let mut agent = Agent::new(&env, "agent", cfg);
    agent.set_prefix(ns.exec_prefix());
    let out = agent.provision(&server.token());
    out.assert_code(0);
    let hostname = provisioned_hostname(&out);

    // Link-local addresses and their DAD first: no kernel event of the
    // set-up may fall into the first measurement.
    wait_for("no tentative address left", Duration::from_secs(10), || {
        let out = ns.ip(&["addr", "show", "tentative"]);
        out.stdout.trim().is_empty().then_some(())
    });
    agent.check_now().assert_code(0);
    let mut resolver = Resolver::new(&ns, dns_port);
    let parse = |s: &str| s.parse::<IpAddr>().unwrap();
    wait_for("DNS answering the first addresses", Duration::from_secs(10), || {
        (resolver.ask(&hostname, QTYPE_A)? == [parse(&v4)] && resolver.ask(&hostname, QTYPE_AAAA)? == [parse(&v6)])
            .then_some(())
    });

    let started = Instant::now();
    let mut daemon = agent.spawn_daemon();
    let agent_log = Tail::follow(env.path("agent.log.daemon"));
    wait_for("the daemon's first check", Duration::from_secs(30), || {
        agent_log.first_after(started, |l| l.contains("check done"))
    });
    wait_for("the daemon to be idle for 1 s", Duration::from_secs(30), || {
        agent_log
            .last_at()
            .filter(|t| t.elapsed() > Duration::from_secs(1))
            .map(|_| ())
    });

    let mut bench = Bench {
        ns: &ns,
        iface: iface.clone(),
        hostname: hostname.clone(),
        batch_file: env.path("change.ip"),
        agent_log: &agent_log,
        server_log: &server_log,
        resolver: Resolver::new(&ns, dns_port),
        dad,
    };
    let load_before = loadavg();
    let mut events = Vec::new();
    for i in 0..per_family {
        for family in [Family::V4, Family::V6] {
            let (current, next) = match family {
                Family::V4 => (&mut v4, format!("10.77.{}.{}", 1 + i / 200, 10 + i % 200)),
                Family::V6 => (&mut v6, format!("fd77::{:x}", 0x1000 + i)),
            };
            let e = bench.event(family, current, &next);
            *current = next;
            eprintln!(
                "{} {} -> {}: server has it {:.1} ms, DNS {:.1} ms",
                family.name(),
                e.from,
                e.to,
                e.server,
                e.dns
            );
            events.push(e);
        }
    }
    assert!(daemon.exited().is_none(), "the daemon exited\n{}", daemon.log());
    let code = daemon.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "daemon exit after SIGTERM\n{}", daemon.log());

    let load = [load_before, loadavg()];
    report(&events, &iface, kind, per_family, dad, &load, &json_path);
}

/// A figure: its key in the JSON, its label, and how to get it from an event.
type Figure = (&'static str, &'static str, fn(&Event) -> f64);

const TOTALS: [Figure; 5] = [
    ("agent_woken", "agent woken (netlink)", |e| e.woken),
    ("server_has_it", "server has it (committed)", |e| e.server),
    ("dns_answers", "server's DNS answers it", |e| e.dns),
    ("agent_published", "agent got the 200", |e| e.published),
    ("check_done", "agent's check done", |e| e.check_done),
];

const STEPS: [Figure; 7] = [
    ("ip", "`ip -batch` runs (del + add)", |e| e.ip_done),
    ("netlink_to_agent", "t0 -> agent woken", |e| e.woken),
    ("settle", "settle (ADDRESS_SETTLE, by design)", |_| SETTLE_MS),
    (
        "check_start_to_directory",
        "addresses read, key, TLS + GET directory",
        |e| e.directory - e.woken - SETTLE_MS,
    ),
    ("nonce", "HEAD new-nonce", |e| e.nonce - e.directory),
    ("post_to_commit", "sign + POST -> server committed", |e| {
        e.server - e.nonce
    }),
    ("commit_to_dns", "server committed -> DNS answers", |e| e.dns - e.server),
];

fn f1(v: &Value) -> String {
    format!("{:.1}", v.as_f64().unwrap_or(f64::NAN))
}

/// The 1-minute load average (`/proc/loadavg`): the benchmark measures
/// milliseconds, so a busy machine shows in its maxima.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn report(events: &[Event], iface: &str, kind: &str, per_family: usize, dad: bool, load: &[f64; 2], json_path: &Path) {
    let v6_mode = if dad { "with DAD" } else { "with nodad" };
    println!();
    println!(
        "== address change -> server: release agent + server in a network namespace, {iface} ({kind}), \
         {per_family} IPv4 + {per_family} IPv6 changes (IPv6 {v6_mode})"
    );
    println!(
        "{} CPUs, load average {:.2} before, {:.2} after",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load[0],
        load[1]
    );
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>7}",
        "ms after t0 (just before `ip` starts)", "min", "median", "p90", "max"
    );
    let mut families = serde_json::Map::new();
    for family in [Family::V4, Family::V6] {
        let evs: Vec<&Event> = events.iter().filter(|e| e.family == family).collect();
        let mut totals = serde_json::Map::new();
        let mut steps = serde_json::Map::new();
        for (key, label, f) in TOTALS {
            let s = summary(&evs.iter().map(|e| f(e)).collect::<Vec<_>>());
            println!(
                "{:<40} {:>7} {:>7} {:>7} {:>7}",
                format!("{} {label}", family.name()),
                f1(&s["min"]),
                f1(&s["median"]),
                f1(&s["p90"]),
                f1(&s["max"])
            );
            totals.insert(key.into(), s);
        }
        for (key, _, f) in STEPS {
            steps.insert(key.into(), summary(&evs.iter().map(|e| f(e)).collect::<Vec<_>>()));
        }
        families.insert(family.name().into(), json!({"totals": totals, "steps": steps}));
    }
    println!("breakdown, median of each step (ms; per event the steps add up to \"server has it\"):");
    for family in [Family::V4, Family::V6] {
        let steps = &families[family.name()]["steps"];
        let parts: Vec<String> = STEPS
            .iter()
            .take(6)
            .skip(1)
            .map(|(key, label, _)| format!("{label} {}", f1(&steps[*key]["median"])))
            .collect();
        println!(
            "  {}: {}; then {} {}",
            family.name(),
            parts.join("; "),
            STEPS[6].1,
            f1(&steps[STEPS[6].0]["median"])
        );
    }
    println!(
        "  (t0 -> agent woken includes `ip` starting: the whole `ip -batch` took {} ms median)",
        f1(&summary(&events.iter().map(|e| e.ip_done).collect::<Vec<_>>())["median"])
    );

    // The connection's first answer: with and without a TCP delayed ACK.
    let first = |e: &Event| e.directory - e.woken - SETTLE_MS;
    let (with, without): (Vec<&Event>, Vec<&Event>) = events.iter().partition(|e| e.delayed_acks > 0);
    let median_of = |v: &[&Event]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            f1(&summary(&v.iter().map(|e| first(e)).collect::<Vec<_>>())["median"])
        }
    };
    println!(
        "TCP delayed ACKs in the namespace: {} of {} events had one; \"{}\" median {} ms with, {} ms without",
        with.len(),
        events.len(),
        STEPS[3].1,
        median_of(&with),
        median_of(&without)
    );
    let interim = events.iter().filter(|e| e.interim_updates > 0).count();
    if interim > 0 {
        println!(
            "{interim} of {} events sent the server an update without the new address first \
             (the breakdown above is then that of the first check)",
            events.len()
        );
    }
    let all_server: Vec<f64> = events.iter().map(|e| e.server).collect();
    let worst = all_server.iter().copied().fold(0.0, f64::max);
    let beyond = summary(&all_server.iter().map(|s| s - SETTLE_MS).collect::<Vec<_>>());
    println!(
        "server has it, beyond the {SETTLE_MS} ms settle: median {} ms, max {} ms; goal < {GOAL_MS} ms: {} (worst {worst:.1} ms)",
        f1(&beyond["median"]),
        f1(&beyond["max"]),
        if worst < GOAL_MS { "met" } else { "MISSED" },
    );

    let doc = json!({
        "benchmark": "event-latency",
        "what": "address change on the device -> address update at the server (committed) and in its DNS",
        "t0": "just before the `ip -n NS -batch` process (del old + add new) is started",
        "interface": iface,
        "interface_kind": kind,
        "ipv6_nodad": !dad,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_before_after": load,
        "events_with_interim_updates": events.iter().filter(|e| e.interim_updates > 0).count(),
        "events_per_family": per_family,
        "settle_ms": SETTLE_MS,
        "goal_ms": GOAL_MS,
        "goal_met": worst < GOAL_MS,
        "beyond_settle_server_has_it": beyond,
        "events_with_tcp_delayed_ack": with.len(),
        "families": families,
        "events": events.iter().map(Event::to_json).collect::<Vec<_>>(),
    });
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    std::fs::write(json_path, serde_json::to_vec_pretty(&doc).unwrap())
        .unwrap_or_else(|e| panic!("writing {}: {e}", json_path.display()));
    println!("written: {}", json_path.display());
}
