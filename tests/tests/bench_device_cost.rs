//! A benchmark, not a test (it is `#[ignore]`d and asserts only that each
//! flow did what it should): what a device pays for its certificate, our
//! agent side by side with a device running an ACME client itself (Debian's
//! `uacme` and `lego`, dns-01 with RFC 2136 updates to a BIND9 primary), all
//! against the same pebble. Run it with `bench/device-cost`, which installs
//! the tools, builds release binaries, and runs this inside a private mount
//! namespace where `/etc/ssl/certs` (which uacme's libcurl always reads) holds
//! only a bundle this benchmark fills with pebble's listener root
//! (`LANCERT_BENCH_CA_BUNDLE`): each client trusts just the root it needs.
//!
//! Set-up (all on loopback or in a network namespace made here):
//!
//! - pebble A, resolving through the lancert server's embedded
//!   authoritative DNS; the server (`acme` issuer) orders from it. The
//!   agent runs in a private network namespace whose `lan0` (one end of a
//!   veth pair, both ends inside) carries the address it publishes; it
//!   reaches the server through a byte-counting relay listening inside the
//!   namespace.
//! - pebble B, the same binary with the same settings (90-day certificates,
//!   `retryAfter` 1 s, `PEBBLE_VA_NOSLEEP=1`, `PEBBLE_AUTHZREUSE=0`; only
//!   the ports, the listener certificate and `-dnsserver` differ), resolving
//!   through BIND9, primary of the same zone with a TSIG key. uacme and lego
//!   reach pebble B through a byte-counting relay and BIND through a
//!   counting UDP relay (their updates, and lego's queries).
//!
//! Two passes of every flow, each with a fresh device name and fresh client
//! state: one under `/usr/bin/time` (wall time, peak RSS, CPU time, and the
//! requests and bytes), one under `valgrind --tool=callgrind
//! --trace-children=yes` (instructions, every process summed).
//!
//! Writes every figure to `LANCERT_BENCH_JSON` (default
//! `target/bench/device-cost.json`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lancert_tests::scenario::provisioned_hostname;
use lancert_tests::tls::{first_cert_of_file, CertInfo};
use lancert_tests::{
    authoritative_dns, AgentConfig, Bind, Netns, Output, Pebble, PebbleOptions, Server, ServerConfig, TestEnv, ZONE,
};
use serde_json::{json, Value};

const TIME: &str = "/usr/bin/time";
const VALGRIND: &str = "/usr/bin/valgrind";
const UACME: &str = "/usr/bin/uacme";
const LEGO: &str = "/usr/bin/lego";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Lifetime of every certificate pebble issues: Let's Encrypt's 90 days.
const VALIDITY_SECS: u64 = 90 * 86_400;
/// The renewal threshold given to uacme (`-d`) and lego (`--days`) for the
/// renewal: a fresh 90-day certificate has fewer days left, so their own
/// renewal check finds it due (their defaults, 30, for the no-op run).
const CLIENT_RENEW_DAYS: &str = "90";
/// The addresses the agent's `lan0` carries before and after the change.
const ADDRESSES: [&str; 2] = ["10.77.0.1/24", "10.77.0.2/24"];
/// Bound on one measured run (valgrind slows clients down many times).
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
const EMAIL: &str = "device@example.com";

/// How the figures were made, printed and written to the JSON file.
const SETUP: &[&str] = &[
    "pebble: two instances of /usr/bin/pebble with the same settings: 90-day certificates, retryAfter 1 s,",
    "  PEBBLE_VA_NOSLEEP=1, PEBBLE_AUTHZREUSE=0. A resolves through lancert-server's embedded authoritative DNS",
    "  (the server's acme issuer orders from it); B through BIND9, primary of the zone with a TSIG key (uacme, lego).",
    "agent: target/release/agent --check-now, log_level debug, in a private network namespace, its address on a",
    "  veth end there; reaches lancert-server through a counting TCP relay. No reload command (nor for uacme/lego).",
    "uacme: -t EC -b 256, hook bench/device-cost.d/uacme-hook (sh + nsupdate -y: one update adds the TXT record,",
    "  one removes it). lego: --key-type ec256 --dns rfc2136 --dns.disable-cp; its resolver and RFC2136_NAMESERVER",
    "  are a counting UDP relay to BIND. Both reach pebble B through a counting TCP relay.",
    "no-op: agent --check-now (exit 2), uacme issue (exit 1), lego renew (their default 30-day threshold).",
    "address update: the agent's address changes from 10.77.0.1 to 10.77.0.2, then one --check-now.",
    "renewal: the agent's clock (libfaketime) set 60 s past the moment it picked in the CA's ARI window (an unmeasured",
    "  check an hour earlier re-reported addresses and status, as the daemon's daily refresh would have); uacme -d 90,",
    "  lego renew --days 90: their own check finds a fresh 90-day certificate due.",
    "requests: HTTP requests (agent: to lancert-server, its own count; uacme, lego: answered by pebble, from its log).",
    "bytes: TCP payload both ways including TLS, counted by the relays; DNS not included (DNS u/q: update and query",
    "  messages sent, DNS B: their UDP payload both ways).",
    "instructions: callgrind Ir (--trace-children=yes), every process summed (uacme: with its hook's sh and nsupdate),",
    "  from a second, identical pass with a fresh name; lego there with GODEBUG=asyncpreemptoff=1 (without it",
    "  callgrind aborts on the Go runtime's preemption signals).",
    "wall: measured around GNU time; peak RSS (%M, the largest process) and CPU user+sys (children included) from",
    "  GNU time; all three from the first pass.",
    "trust: each client gets only the root it needs; for uacme (libcurl-gnutls reads /etc/ssl/certs at every",
    "  connection) a directory holding pebble's root alone is mounted over /etc/ssl/certs, in this run's mount namespace.",
    "lego has no separate account step: its first issuance creates the account.",
];

// ---------------------------------------------------------------------------
// Counting relays

#[derive(Default)]
struct TcpCounts {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
}

/// A TCP relay that counts the payload bytes it forwards each way (TLS
/// records included) and the connections.
struct TcpRelay {
    port: u16,
    counts: Arc<TcpCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TcpSnapshot {
    up: u64,
    down: u64,
    connections: u64,
}

impl TcpRelay {
    /// Relays what `listener` accepts (it may live in another network
    /// namespace) to `upstream`, connected from this one.
    fn start(listener: TcpListener, upstream: SocketAddr) -> TcpRelay {
        let port = listener.local_addr().expect("relay address").port();
        let counts = Arc::new(TcpCounts::default());
        let c = counts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                c.connections.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                std::thread::spawn(move || {
                    if let Ok(server) = TcpStream::connect(upstream) {
                        let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let cu = c.clone();
                        let up = std::thread::spawn(move || {
                            pipe(client2, &server2, &cu.up);
                            // The client is gone: the server has a moment to
                            // finish, not forever.
                            let _ = server2.set_read_timeout(Some(Duration::from_secs(2)));
                        });
                        pipe(server, &client, &c.down);
                        let _ = up.join();
                    }
                    c.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TcpRelay { port, counts }
    }

    /// The counts once every connection is closed (at most 10 s).
    fn snapshot(&self) -> TcpSnapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.counts.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        TcpSnapshot {
            up: self.counts.up.load(Ordering::SeqCst),
            down: self.counts.down.load(Ordering::SeqCst),
            connections: self.counts.connections.load(Ordering::SeqCst),
        }
    }
}

/// Copies `from` to `to`, counting what was delivered, then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: &TcpStream, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DnsSnapshot {
    /// UPDATE messages (opcode 5) sent.
    updates: u64,
    /// QUERY messages (opcode 0) sent.
    queries: u64,
    /// Other messages sent.
    other: u64,
    /// UDP payload bytes sent and received.
    up: u64,
    down: u64,
}

/// A UDP relay in front of BIND that counts DNS messages by opcode and
/// their bytes (UDP payload) each way.
struct DnsRelay {
    port: u16,
    counts: Arc<Mutex<DnsSnapshot>>,
}

impl DnsRelay {
    fn start(upstream: SocketAddr) -> DnsRelay {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the DNS relay");
        let port = socket.local_addr().unwrap().port();
        let counts = Arc::new(Mutex::new(DnsSnapshot::default()));
        let c = counts.clone();
        std::thread::spawn(move || {
            let mut peers: HashMap<SocketAddr, UdpSocket> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                {
                    let mut c = lock(&c);
                    c.up += n as u64;
                    match buf.get(2).map(|b| (b >> 3) & 0x0f) {
                        Some(5) => c.updates += 1,
                        Some(0) => c.queries += 1,
                        _ => c.other += 1,
                    }
                }
                let up = peers.entry(peer).or_insert_with(|| {
                    let up = UdpSocket::bind("127.0.0.1:0").expect("binding an upstream socket");
                    up.connect(upstream).expect("connecting to BIND");
                    up.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                    let (reader, back, c) = (up.try_clone().unwrap(), socket.try_clone().unwrap(), c.clone());
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(n) = reader.recv(&mut buf) {
                            if back.send_to(&buf[..n], peer).is_ok() {
                                lock(&c).down += n as u64;
                            }
                        }
                    });
                    up
                });
                let _ = up.send(&buf[..n]);
            }
        });
        DnsRelay { port, counts }
    }

    fn snapshot(&self) -> DnsSnapshot {
        *lock(&self.counts)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Running a client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Under `/usr/bin/time`: wall time, peak RSS, CPU time.
    Time,
    /// Under callgrind: instructions.
    Callgrind,
}

/// One measured run of a client.
#[derive(Debug, Clone, Default)]
struct Figures {
    exit: Option<i32>,
    /// HTTP requests: to the lancert server (the agent's own count), or
    /// answered by pebble B (uacme, lego).
    requests: u64,
    tcp: TcpSnapshot,
    dns: DnsSnapshot,
    /// For the agent: ACME requests the server made to pebble A meanwhile.
    server_ca_requests: Option<u64>,
    wall_secs: f64,
    peak_rss_kib: Option<u64>,
    cpu_user_secs: Option<f64>,
    cpu_sys_secs: Option<f64>,
    instructions: Option<u64>,
    /// Processes callgrind measured (the client and its children).
    processes: Option<usize>,
    stderr: String,
}

/// A command line with its environment.
struct Cmd {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Cmd {
    fn new(argv: &[&str]) -> Cmd {
        Cmd {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        }
    }

    fn args(mut self, more: &[&str]) -> Cmd {
        self.argv.extend(more.iter().map(|s| s.to_string()));
        self
    }

    fn env(mut self, key: &str, value: &str) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Runs `cmd` under `/usr/bin/time` or callgrind (inside `ns` when given),
/// with its output in `dir/label.{out,err}`.
fn execute(mode: Mode, dir: &Path, label: &str, cmd: &Cmd, ns: Option<&Netns>) -> Figures {
    let time_file = dir.join(format!("{label}.time"));
    let mut argv: Vec<String> = match mode {
        Mode::Time => vec![
            TIME.into(),
            "-f".into(),
            "%e %M %U %S".into(),
            "-o".into(),
            time_file.display().to_string(),
        ],
        Mode::Callgrind => vec![
            VALGRIND.into(),
            "--tool=callgrind".into(),
            "--trace-children=yes".into(),
            format!("--callgrind-out-file={}/{label}.cg.%p", dir.display()),
            format!("--log-file={}/{label}.vg.%p", dir.display()),
        ],
    };
    argv.extend(cmd.argv.iter().cloned());
    let (out_path, err_path) = (dir.join(format!("{label}.out")), dir.join(format!("{label}.err")));
    let spawn_and_wait = || {
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap());
        let started = Instant::now();
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", argv[0]));
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the client") {
                break status;
            }
            if started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{label} did not finish within {RUN_TIMEOUT:?}: {}", argv.join(" "));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        (status.code(), started.elapsed().as_secs_f64())
    };
    let (exit, wall_secs) = match ns {
        Some(ns) => ns.run(spawn_and_wait),
        None => spawn_and_wait(),
    };
    let mut f = Figures {
        exit,
        wall_secs,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        ..Figures::default()
    };
    match mode {
        Mode::Time => {
            let text = std::fs::read_to_string(&time_file).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            let w: Vec<&str> = last.split_whitespace().collect();
            if w.len() == 4 {
                f.peak_rss_kib = w[1].parse().ok();
                f.cpu_user_secs = w[2].parse().ok();
                f.cpu_sys_secs = w[3].parse().ok();
            }
        }
        Mode::Callgrind => {
            // One file per process image that ran to its end. A forked child
            // that execs leaves none for its few instructions before the
            // exec (nor for the parent's counts it inherited, which would be
            // counted twice), so uacme's hook does not exec nsupdate: the
            // shell and nsupdate are both measured.
            let prefix = format!("{label}.cg.");
            let (mut total, mut pids) = (0u64, std::collections::BTreeSet::new());
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(&prefix) else {
                    continue;
                };
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Some(n) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("totals:"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                {
                    total += n;
                    pids.insert(rest.split('.').next().unwrap_or_default().to_string());
                }
            }
            if !pids.is_empty() {
                f.instructions = Some(total);
                f.processes = Some(pids.len());
            }
        }
    }
    f
}

/// Waits until `count` has not changed for 300 ms (pebble's log is read by
/// threads), and returns it.
fn settled(count: impl Fn() -> usize) -> u64 {
    let mut last = count();
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stable_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = count();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    last as u64
}

fn diff_tcp(a: TcpSnapshot, b: TcpSnapshot) -> TcpSnapshot {
    TcpSnapshot {
        up: b.up - a.up,
        down: b.down - a.down,
        connections: b.connections - a.connections,
    }
}

fn diff_dns(a: DnsSnapshot, b: DnsSnapshot) -> DnsSnapshot {
    DnsSnapshot {
        updates: b.updates - a.updates,
        queries: b.queries - a.queries,
        other: b.other - a.other,
        up: b.up - a.up,
        down: b.down - a.down,
    }
}

// ---------------------------------------------------------------------------
// The world

struct World {
    env_a: TestEnv,
    env_b: TestEnv,
    ns: Netns,
    server: Server,
    pebble_a: Pebble,
    pebble_b: Pebble,
    bind: Bind,
    /// Agent → server, listening inside `ns`.
    agent_relay: TcpRelay,
    /// uacme/lego → pebble B.
    pebble_relay: TcpRelay,
    /// uacme/lego → BIND.
    dns_relay: DnsRelay,
    hook: PathBuf,
}

impl World {
    fn server_url(&self) -> String {
        format!("https://localhost:{}", self.agent_relay.port)
    }

    fn pebble_b_url(&self) -> String {
        format!("https://localhost:{}/dir", self.pebble_relay.port)
    }

    fn set_address(&self, address: &str) {
        let out = self.ns.ip(&["addr", "flush", "dev", "lan0"]);
        assert_eq!(out.code, Some(0), "{out}");
        let out = self.ns.ip(&["addr", "add", address, "dev", "lan0"]);
        assert_eq!(out.code, Some(0), "{out}");
    }
}

fn setup() -> World {
    for tool in [TIME, VALGRIND, UACME, LEGO, LIBFAKETIME] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: bench/device-cost installs it"
        );
    }
    let bundle = std::env::var("LANCERT_BENCH_CA_BUNDLE")
        .expect("LANCERT_BENCH_CA_BUNDLE is not set: run bench/device-cost, which sets up uacme's CA bundle");
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/device-cost.d/uacme-hook");
    let hook = hook.canonicalize().expect("bench/device-cost.d/uacme-hook");

    let options = || PebbleOptions {
        validity_secs: Some(VALIDITY_SECS),
        ..PebbleOptions::default()
    };

    // Our side: pebble A ← server (embedded authoritative DNS) ← relay ← agent.
    let env_a = TestEnv::new("device-cost-agent");
    let dns_port = env_a.free_port();
    let pebble_a = Pebble::start_with(&env_a, SocketAddr::from(([127, 0, 0, 1], dns_port)), options());
    let ns = Netns::new();
    for args in [
        &["link", "add", "lan0", "type", "veth", "peer", "name", "lan0-peer"][..],
        &["link", "set", "lan0-peer", "up"],
        &["link", "set", "lan0", "up"],
    ] {
        let out = ns.ip(args);
        assert_eq!(out.code, Some(0), "{out}");
    }
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("binding the agent's relay in the namespace"));
    let relay_port = listener.local_addr().unwrap().port();
    let mut extra = serde_json::Map::new();
    extra.insert("issuer".into(), pebble_a.issuer_config());
    extra.insert("dns".into(), authoritative_dns(dns_port));
    extra.insert("public_url".into(), json!(format!("https://localhost:{relay_port}")));
    let server = Server::start_with(
        &env_a,
        ServerConfig {
            extra,
            ..ServerConfig::default()
        },
    );
    let agent_relay = TcpRelay::start(listener, SocketAddr::from(([127, 0, 0, 1], server.port())));

    // The clients' side: pebble B ← BIND ← relay ← uacme/lego.
    let env_b = TestEnv::new("device-cost-clients");
    let bind = Bind::start(&env_b, ZONE);
    let pebble_b = Pebble::start_with(&env_b, bind.addr(), options());
    let pebble_relay = TcpRelay::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port_of(&pebble_b.directory_url()))),
    );
    let dns_relay = DnsRelay::start(bind.addr());
    // uacme's libcurl trusts only the system bundle: pebble B's listener
    // root goes into the file mounted over it in this mount namespace.
    let root = std::fs::read(pebble_b.ca_file()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&bundle)
        .unwrap_or_else(|e| panic!("opening {bundle}: {e}"));
    f.write_all(b"\n").unwrap();
    f.write_all(&root).unwrap();

    World {
        env_a,
        env_b,
        ns,
        server,
        pebble_a,
        pebble_b,
        bind,
        agent_relay,
        pebble_relay,
        dns_relay,
        hook,
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

// ---------------------------------------------------------------------------
// The flows

/// One row: a client, a step, what it did and cost.
struct Row {
    client: &'static str,
    step: &'static str,
    figures: Figures,
}

impl Row {
    fn new(client: &'static str, step: &'static str, figures: Figures) -> Row {
        Row { client, step, figures }
    }
}

/// The agent's measured run: its own request count, the relay's bytes, the
/// server's requests to pebble A.
fn agent_run(w: &World, mode: Mode, dir: &Path, label: &str, cmd: &Cmd) -> Figures {
    let (tcp0, ca0) = (w.agent_relay.snapshot(), settled(|| w.pebble_a.acme_requests()));
    let mut f = execute(mode, dir, label, cmd, Some(&w.ns));
    f.tcp = diff_tcp(tcp0, w.agent_relay.snapshot());
    f.server_ca_requests = Some(settled(|| w.pebble_a.acme_requests()) - ca0);
    // The agent logs each answer at debug level: "<doing>: <url>: <status>, N bytes".
    f.requests = f
        .stderr
        .lines()
        .filter(|l| l.contains(": https://") && l.trim_end().ends_with(" bytes"))
        .count() as u64;
    if let Some(n) = f
        .stderr
        .lines()
        .find_map(|l| l.split("check done: ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
    {
        assert_eq!(
            n, f.requests,
            "the agent's count and its logged answers differ\n{}",
            f.stderr
        );
    }
    f
}

/// A uacme or lego run: pebble B's answered requests, the relays' bytes and
/// DNS messages.
fn client_run(w: &World, mode: Mode, dir: &Path, label: &str, cmd: &Cmd) -> Figures {
    let (tcp0, dns0, req0) = (
        w.pebble_relay.snapshot(),
        w.dns_relay.snapshot(),
        settled(|| w.pebble_b.acme_requests()),
    );
    let mut f = execute(mode, dir, label, cmd, None);
    f.tcp = diff_tcp(tcp0, w.pebble_relay.snapshot());
    f.dns = diff_dns(dns0, w.dns_relay.snapshot());
    f.requests = settled(|| w.pebble_b.acme_requests()) - req0;
    f
}

#[track_caller]
fn expect_exit(f: &Figures, code: i32, what: &str) {
    assert_eq!(f.exit, Some(code), "{what}: unexpected exit code\n{}", f.stderr);
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// When the installed certificate becomes due for the agent: the moment it
/// picked in the server's renewal window (its state file), else the start
/// of the last third of the lifetime.
fn renewal_moment(state_file: &Path, cert: &Path) -> i64 {
    let info = CertInfo::parse(&first_cert_of_file(cert));
    let last_third = info.not_before + (info.not_after - info.not_before) / 3 * 2;
    let state: Value = serde_json::from_slice(&read(state_file)).unwrap_or(Value::Null);
    state["renewal"]["moment"]
        .as_str()
        .and_then(|m| lancert_protocol::time::parse_rfc3339(m).ok())
        .map_or(last_third, |m| {
            m.min(info.not_after - (info.not_after - info.not_before) / 10)
        })
}

/// Every flow once in `mode`, with a fresh device and fresh client state.
fn pass(w: &World, mode: Mode, n: usize, notes: &mut BTreeMap<String, Value>) -> Vec<Row> {
    let mut rows = Vec::new();
    let tag = format!("pass{n}");

    // --- our agent
    let dir = w.env_a.subdir(&format!("{tag}/agent"));
    let runs = w.env_a.subdir(&format!("{tag}/runs"));
    w.set_address(ADDRESSES[0]);
    let config = AgentConfig::new(&w.server_url(), &w.server.ca_path(), &dir)
        .set("trust_anchors", w.pebble_a.root_file().to_str().unwrap())
        .set("interface", "lan0");
    let config_path = dir.join("agent.json");
    std::fs::write(&config_path, config.to_json()).unwrap();
    let agent_bin = w.env_a.agent_bin();
    let agent =
        |more: &[&str]| Cmd::new(&[agent_bin.to_str().unwrap(), "--config", config_path.to_str().unwrap()]).args(more);
    let token = w.server.token();
    let url = w.server_url();
    let f = agent_run(
        w,
        mode,
        &runs,
        "provision",
        &agent(&["provision", "--server", &url, "--token", &token]),
    );
    expect_exit(&f, 0, "agent provision");
    let out = std::fs::read_to_string(runs.join("provision.out")).unwrap();
    let hostname = provisioned_hostname(&Output {
        command: "agent provision".into(),
        code: f.exit,
        stdout: out,
        stderr: f.stderr.clone(),
        elapsed: Duration::ZERO,
    });
    rows.push(Row::new("agent", "enrol", f));
    let cert = config.path("cert_file");

    let f = agent_run(w, mode, &runs, "first", &agent(&["--check-now"]));
    expect_exit(&f, 0, "agent first issuance");
    let first = read(&cert);
    rows.push(Row::new("agent", "first issuance", f));

    let f = agent_run(w, mode, &runs, "noop", &agent(&["--check-now"]));
    expect_exit(&f, 2, "agent no-op check");
    assert_eq!(read(&cert), first, "the no-op check changed the certificate");
    rows.push(Row::new("agent", "no-op", f));

    if mode == Mode::Callgrind {
        // What libfaketime itself adds to a run (it is in the renewal's
        // figure): the same no-op check again, under libfaketime at +0.
        let faked = agent_run(
            w,
            mode,
            &runs,
            "noop-faketime",
            &agent(&["--check-now"])
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", "+0"),
        );
        expect_exit(&faked, 2, "agent no-op check under libfaketime");
        if let (Some(a), Some(b)) = (
            rows.last().and_then(|r: &Row| r.figures.instructions),
            faked.instructions,
        ) {
            notes.insert("agent_libfaketime_instructions".into(), json!(b as i64 - a as i64));
        }
    }

    w.set_address(ADDRESSES[1]);
    let f = agent_run(w, mode, &runs, "address", &agent(&["--check-now"]));
    expect_exit(&f, 0, "agent address update");
    assert_eq!(read(&cert), first, "the address update changed the certificate");
    let published = w.server.record_values(&hostname, "A");
    let new_ip = ADDRESSES[1].split('/').next().unwrap();
    assert!(
        published.iter().any(|v| v == new_ip),
        "the server does not publish {new_ip} for {hostname}: {published:?}"
    );
    rows.push(Row::new("agent", "address update", f));

    // The renewal comes when the agent's clock (libfaketime) reaches the
    // moment it picked in the server's window (or the last third), plus a
    // minute. An unmeasured check an hour earlier re-reports the addresses
    // and the status, as the running daemon's daily refresh would have: the
    // jump of weeks must not add them to the renewal.
    let due = renewal_moment(&dir.join("state/state.json"), &cert);
    let ahead = |at: i64| format!("+{}", at - lancert_tests::unix_now());
    let warm = execute(
        mode,
        &runs,
        "before-renewal",
        &agent(&["--check-now"])
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", &ahead(due - 3600)),
        Some(&w.ns),
    );
    assert!(
        matches!(warm.exit, Some(0 | 2)),
        "agent check before the renewal\n{}",
        warm.stderr
    );
    assert_eq!(read(&cert), first, "the certificate was renewed before it was due");
    let f = agent_run(
        w,
        mode,
        &runs,
        "renewal",
        &agent(&["--check-now"])
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", &ahead(due + 60)),
    );
    expect_exit(&f, 0, "agent renewal");
    assert_ne!(read(&cert), first, "the renewal did not replace the certificate");
    rows.push(Row::new("agent", "renewal", f));

    // --- uacme
    let dir = w.env_b.subdir(&format!("{tag}/uacme"));
    let runs = w.env_b.subdir(&format!("{tag}/runs"));
    let pebble_url = w.pebble_b_url();
    let tsig = format!(
        "{}:{}:{}",
        w.bind.key_algorithm(),
        w.bind.key_name(),
        w.bind.key_secret_base64()
    );
    let dns_port = w.dns_relay.port.to_string();
    let uacme = |more: &[&str]| {
        Cmd::new(&[
            UACME,
            "-c",
            dir.to_str().unwrap(),
            "-a",
            &pebble_url,
            "-t",
            "EC",
            "-b",
            "256",
        ])
        .args(more)
        .env("HOOK_DNS_SERVER", "127.0.0.1")
        .env("HOOK_DNS_PORT", &dns_port)
        .env("HOOK_DNS_ZONE", ZONE)
        .env("HOOK_TSIG", &tsig)
    };
    let hook = w.hook.to_str().unwrap();
    let cert = dir.join(&hostname).join("cert.pem");

    let f = client_run(w, mode, &runs, "uacme-new", &uacme(&["-y", "new", EMAIL]));
    expect_exit(&f, 0, "uacme new");
    rows.push(Row::new("uacme", "enrol", f));
    let f = client_run(w, mode, &runs, "uacme-first", &uacme(&["-h", hook, "issue", &hostname]));
    expect_exit(&f, 0, "uacme first issuance");
    let first = read(&cert);
    rows.push(Row::new("uacme", "first issuance", f));
    let f = client_run(w, mode, &runs, "uacme-noop", &uacme(&["-h", hook, "issue", &hostname]));
    expect_exit(&f, 1, "uacme no-op run");
    assert_eq!(read(&cert), first, "uacme's no-op run changed the certificate");
    rows.push(Row::new("uacme", "no-op", f));
    let f = client_run(
        w,
        mode,
        &runs,
        "uacme-renewal",
        &uacme(&["-d", CLIENT_RENEW_DAYS, "-h", hook, "issue", &hostname]),
    );
    expect_exit(&f, 0, "uacme renewal");
    assert_ne!(read(&cert), first, "uacme's renewal did not replace the certificate");
    rows.push(Row::new("uacme", "renewal", f));

    // --- lego
    let dir = w.env_b.subdir(&format!("{tag}/lego"));
    let resolver = format!("127.0.0.1:{}", w.dns_relay.port);
    let ca_file = w.pebble_b.ca_file().to_str().unwrap().to_string();
    let lego = |more: &[&str]| {
        let mut c = Cmd::new(&[
            LEGO,
            "--server",
            &pebble_url,
            "--path",
            dir.to_str().unwrap(),
            "--email",
            EMAIL,
            "--accept-tos",
            "--key-type",
            "ec256",
            "--dns",
            "rfc2136",
            "--dns.resolvers",
            &resolver,
            "--dns.disable-cp",
            "--domains",
            &hostname,
        ])
        .args(more)
        .env("LEGO_CA_CERTIFICATES", &ca_file)
        .env("RFC2136_NAMESERVER", &resolver)
        .env("RFC2136_TSIG_ALGORITHM", &format!("{}.", w.bind.key_algorithm()))
        .env("RFC2136_TSIG_KEY", w.bind.key_name())
        .env("RFC2136_TSIG_SECRET", w.bind.key_secret_base64());
        if mode == Mode::Callgrind {
            // Without it callgrind aborts on the Go runtime's preemption
            // signals (threads.c: Assertion 'sigNum == ...sig' failed).
            c = c.env("GODEBUG", "asyncpreemptoff=1");
        }
        c
    };
    let cert = dir.join("certificates").join(format!("{hostname}.crt"));
    let f = client_run(w, mode, &runs, "lego-first", &lego(&["run"]));
    expect_exit(&f, 0, "lego first issuance");
    let first = read(&cert);
    rows.push(Row::new("lego", "first issuance", f));
    let f = client_run(w, mode, &runs, "lego-noop", &lego(&["renew", "--no-random-sleep"]));
    expect_exit(&f, 0, "lego no-op run");
    assert_eq!(read(&cert), first, "lego's no-op run changed the certificate");
    rows.push(Row::new("lego", "no-op", f));
    let f = client_run(
        w,
        mode,
        &runs,
        "lego-renewal",
        &lego(&["renew", "--days", CLIENT_RENEW_DAYS, "--no-random-sleep"]),
    );
    expect_exit(&f, 0, "lego renewal");
    assert_ne!(read(&cert), first, "lego's renewal did not replace the certificate");
    rows.push(Row::new("lego", "renewal", f));
    rows
}

// ---------------------------------------------------------------------------
// Output

fn package_version(name: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", name])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn row_json(timed: &Row, counted: &Row) -> Value {
    let (t, c) = (&timed.figures, &counted.figures);
    json!({
        "client": timed.client,
        "step": timed.step,
        "exit_code": t.exit,
        "http_requests": t.requests,
        "tcp_connections": t.tcp.connections,
        "bytes_up": t.tcp.up,
        "bytes_down": t.tcp.down,
        "bytes_total": t.tcp.up + t.tcp.down,
        "dns_update_messages": t.dns.updates,
        "dns_query_messages": t.dns.queries,
        "dns_bytes_up": t.dns.up,
        "dns_bytes_down": t.dns.down,
        "server_ca_requests": t.server_ca_requests,
        "wall_secs": (t.wall_secs * 1000.0).round() / 1000.0,
        "peak_rss_kib": t.peak_rss_kib,
        "cpu_user_secs": t.cpu_user_secs,
        "cpu_sys_secs": t.cpu_sys_secs,
        "instructions": c.instructions,
        "instructions_processes": c.processes,
        "callgrind_run": {
            "exit_code": c.exit,
            "http_requests": c.requests,
            "bytes_total": c.tcp.up + c.tcp.down,
            "dns_update_messages": c.dns.updates,
        },
    })
}

fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some((a as f64 / b as f64 * 100.0).round() / 100.0),
        _ => None,
    }
}

#[test]
#[ignore = "a benchmark: bench/device-cost"]
fn device_cost() {
    let world = setup();
    let mut notes = BTreeMap::new();
    let timed = pass(&world, Mode::Time, 1, &mut notes);
    let counted = pass(&world, Mode::Callgrind, 2, &mut notes);
    assert_eq!(timed.len(), counted.len());

    let versions = json!({
        "uacme": package_version("uacme"),
        "lego": package_version("lego"),
        "pebble": package_version("pebble"),
        "bind9": package_version("bind9"),
        "bind9-dnsutils": package_version("bind9-dnsutils"),
        "valgrind": package_version("valgrind"),
        "libfaketime": package_version("libfaketime"),
    });

    println!();
    println!("== device cost: our agent vs. an ACME client on the device (dns-01, same pebble, loopback)");
    println!(
        "versions: uacme {}, lego {}, pebble {}, bind9 {}, valgrind {}",
        versions["uacme"].as_str().unwrap(),
        versions["lego"].as_str().unwrap(),
        versions["pebble"].as_str().unwrap(),
        versions["bind9"].as_str().unwrap(),
        versions["valgrind"].as_str().unwrap()
    );
    for line in SETUP {
        println!("{line}");
    }
    println!();
    println!(
        "{:<6} {:<15} {:>4} {:>4} {:>4} {:>8} {:>8} {:>8} {:>9} {:>10} {:>15} {:>5} {:>8} {:>7} {:>7}",
        "client",
        "step",
        "exit",
        "reqs",
        "conn",
        "up B",
        "down B",
        "total B",
        "DNS u/q",
        "DNS B",
        "instructions",
        "procs",
        "wall s",
        "RSS KiB",
        "CPU s"
    );
    let mut json_rows = Vec::new();
    for (t, c) in timed.iter().zip(&counted) {
        let (tf, cf) = (&t.figures, &c.figures);
        let dns = if t.client == "agent" {
            "-".to_string()
        } else {
            format!("{}/{}", tf.dns.updates, tf.dns.queries)
        };
        let dns_bytes = if t.client == "agent" {
            "-".to_string()
        } else {
            (tf.dns.up + tf.dns.down).to_string()
        };
        println!(
            "{:<6} {:<15} {:>4} {:>4} {:>4} {:>8} {:>8} {:>8} {:>9} {:>10} {:>15} {:>5} {:>8.3} {:>7} {:>7}",
            t.client,
            t.step,
            opt(tf.exit),
            tf.requests,
            tf.tcp.connections,
            tf.tcp.up,
            tf.tcp.down,
            tf.tcp.up + tf.tcp.down,
            dns,
            dns_bytes,
            cf.instructions.map_or("-".into(), thousands),
            opt(cf.processes),
            tf.wall_secs,
            opt(tf.peak_rss_kib),
            match (tf.cpu_user_secs, tf.cpu_sys_secs) {
                (Some(u), Some(s)) => format!("{:.2}", u + s),
                _ => "-".into(),
            }
        );
        if tf.requests != cf.requests || tf.dns.updates != cf.dns.updates {
            println!(
                "  note: the callgrind pass made {} requests and {} DNS updates",
                cf.requests, cf.dns.updates
            );
        }
        json_rows.push(row_json(t, c));
    }
    for (t, _) in timed.iter().zip(&counted) {
        if let Some(n) = t.figures.server_ca_requests.filter(|n| *n > 0) {
            println!(
                "  (agent {}: the server made {n} ACME requests to pebble A meanwhile; not the device's cost)",
                t.step
            );
        }
    }
    if let Some(n) = notes.get("agent_libfaketime_instructions") {
        println!("  libfaketime's own share of the agent's renewal instructions (measured on a no-op): {n}");
    }

    // Ratios of a renewal.
    let renewal = |client: &str| -> (Option<u64>, u64, u64, u64) {
        let i = timed
            .iter()
            .position(|r| r.client == client && r.step == "renewal")
            .unwrap();
        let (t, c) = (&timed[i].figures, &counted[i].figures);
        (c.instructions, t.tcp.up + t.tcp.down, t.requests, t.dns.up + t.dns.down)
    };
    let agent = renewal("agent");
    let mut ratios = serde_json::Map::new();
    println!();
    println!("== renewal, relative to the agent (bytes: HTTPS only; DNS bytes excluded)");
    for client in ["uacme", "lego"] {
        let r = renewal(client);
        let (instr, bytes, reqs) = (
            ratio(r.0, agent.0),
            ratio(Some(r.1), Some(agent.1)),
            ratio(Some(r.2), Some(agent.2)),
        );
        let bytes_dns = ratio(Some(r.1 + r.3), Some(agent.1));
        println!(
            "{client}/agent: instructions {}x, bytes {}x ({}x with its DNS bytes), requests {}x",
            opt(instr),
            opt(bytes),
            opt(bytes_dns),
            opt(reqs)
        );
        ratios.insert(
            format!("{client}_over_agent"),
            json!({"instructions": instr, "bytes": bytes, "bytes_with_dns": bytes_dns, "requests": reqs}),
        );
    }

    let document = json!({
        "benchmark": "device-cost",
        "versions": versions,
        "setup": {
            "how": SETUP.iter().map(|l| l.trim()).collect::<Vec<_>>(),
            "pebble_validity_secs": VALIDITY_SECS,
            "client_renew_days": CLIENT_RENEW_DAYS,
            "agent_addresses": ADDRESSES,
        },
        "rows": json_rows,
        "renewal_ratios": ratios,
        "notes": notes,
    });
    let path = std::env::var_os("LANCERT_BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/device-cost.json"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    println!();
    println!("wrote {}", path.display());
}
