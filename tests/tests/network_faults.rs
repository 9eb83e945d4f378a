//! Network faults between the agent and its server: seconds of latency,
//! heavy loss, resets, a connection closed or gone silent in the middle of
//! an answer, a server that closes mid-body or stalls after the headers.
//! Every attempt ends within the bound its configuration implies, fails
//! (exit 1) naming the URL, and installs nothing: the files stay
//! byte-identical, no temporary file is left, nginx keeps serving the old
//! leaf. With mild latency a renewal still succeeds.
//!
//! The real server, the real agent and nginx run in a network namespace of
//! their own ([`Netns`]), with a [`FaultyRelay`] between agent and server.
//! The kernel here (and in CI) has no `netem` qdisc, so the relay makes the
//! faults at the TCP stream level; see `tests/src/faulty_relay.rs` for what
//! that models and what it cannot. `tc tbf` (rate limiting) does exist and
//! gives one more test, a slow link. The faults that need HTTP (headers
//! sent, then the body cut or never sent) come from the [`EvilServer`],
//! which speaks HTTP itself.
//!
//! These tests need root (network namespaces), as CI and `scripts/test` have.

use lancert_tests::scenario::{config_with_nginx, evil_device, provisioned_hostname, Device};
use lancert_tests::tls::first_cert_of_file;
use lancert_tests::{Agent, EvilServer, Fault, FaultyRelay, Mode, Netns, Output, Server, ServerConfig, TestEnv};
use std::time::Duration;

/// The agent's `http_timeout_secs` here: the bound on one HTTP exchange.
const HTTP_TIMEOUT_SECS: u64 = 3;
/// The agent's `poll_timeout_secs` here: the bound on the pauses between
/// polls of one order (the server asks for 1 s).
const POLL_TIMEOUT_SECS: u64 = 5;
/// The server's `Retry-After` while an order is processing (the test
/// server's `retry_after_secs`): one poll pause.
const SERVER_RETRY_AFTER_SECS: u64 = 1;
/// What a check costs besides its exchanges and poll pauses: starting the
/// process, keys, files, the reload. A few hundred milliseconds here; the
/// margin leaves room for a loaded CI machine.
const MARGIN: Duration = Duration::from_secs(3);

/// A device in its own network namespace, talking to the real server
/// through a faulty relay, with a real certificate installed and served.
/// Fields drop in order: the relay, the agent and nginx, the server, then
/// the namespace and the directory.
struct Net {
    relay: FaultyRelay,
    dev: Device,
    _server: Server,
    ns: Netns,
    /// The base URL the agent uses: the relay's.
    url: String,
    _env: TestEnv,
}

/// Starts the server, relay (no fault yet), and a provisioned agent with
/// nginx, all inside a new namespace, and runs a first check: it installs
/// a real certificate. The server issues 20-second certificates (80 s
/// with its 60 s of backdating), so every later check renews.
fn setup(name: &str) -> Net {
    let env = TestEnv::new(name);
    let ns = Netns::new();
    let relay_port = env.free_port();
    let url = format!("https://localhost:{relay_port}");
    let mut extra = serde_json::Map::new();
    // Every URL of the directory then points at the relay.
    extra.insert("public_url".into(), url.clone().into());
    let server = Server::start_under(
        &env,
        ServerConfig {
            validity_secs: 20,
            extra,
            ..ServerConfig::default()
        },
        ns.exec_prefix(),
    );
    let relay = FaultyRelay::start(Some(&ns), relay_port, server.port(), Fault::None);
    let (cfg, nginx) = config_with_nginx(&env, "device", &url, &server.ca_path());
    let cfg = cfg
        .set("http_timeout_secs", HTTP_TIMEOUT_SECS)
        .set("poll_timeout_secs", POLL_TIMEOUT_SECS);
    let mut agent = Agent::new(&env, "agent", cfg);
    agent.set_prefix(ns.exec_prefix());
    let out = agent.provision(&server.token());
    out.assert_code(0);
    let hostname = provisioned_hostname(&out);
    agent.check_now().assert_code(0);
    let leaf = first_cert_of_file(&agent.config().path("cert_file"));
    ns.run(|| {
        nginx.wait_running();
        nginx.wait_serving(&hostname, &leaf);
    });
    Net {
        relay,
        dev: Device { agent, nginx, hostname },
        _server: server,
        ns,
        url,
        _env: env,
    }
}

impl Net {
    /// The leaf nginx serves now, asked from inside the namespace.
    fn served_leaf(&self) -> Vec<u8> {
        self.ns.run(|| self.dev.nginx.served_leaf(&self.dev.hostname))
    }

    /// A renewal without fault, to find the TLS record that carries the
    /// certificate chain: the last server record of 1 KiB or more (the
    /// chain is ~1.5 KiB; every later answer of a check, the status report
    /// and the TLS close, is a few hundred bytes at most). Returns its
    /// index in the connection.
    fn chain_record(&self) -> usize {
        self.relay.set_fault(Fault::None);
        self.dev.agent.check_now().assert_code(0);
        let records = self.relay.server_records();
        let last = records.last().expect("the check made a connection");
        let index = last.iter().rposition(|&len| len >= 1024).unwrap_or_else(|| {
            panic!(
                "no server record of 1 KiB or more: {last:?}\n{}",
                self.relay.transcript()
            )
        });
        // The handshake's records come first (ServerHello, change cipher
        // spec, the encrypted flight); the chain comes well after them.
        assert!(index >= 4, "record {index} of {last:?} is in the handshake");
        index
    }

    /// Runs one check with `fault` on the relay and asserts what every
    /// fault must leave: exit 1 naming a URL of the server, within the
    /// bound, nothing installed, no temporary file, nginx serving the old
    /// leaf. Returns the run.
    #[track_caller]
    fn failing_check(&self, fault: Fault) -> Output {
        self.failing_check_named(&format!("{fault:?}"), fault)
    }

    /// [`Net::failing_check`], `what` naming the fault in messages.
    #[track_caller]
    fn failing_check_named(&self, what: &str, fault: Fault) -> Output {
        let agent = &self.dev.agent;
        let leaf = first_cert_of_file(&agent.config().path("cert_file"));
        let before = agent.installed_snapshot();
        let reloads = self.dev.nginx.reload_count();
        self.relay.set_fault(fault);
        let out = agent.check_now();
        let context = format!("{out}\n--- relay ---\n{}", self.relay.transcript());
        let bound = within_bound(what, &out, &context);
        assert_eq!(out.code, Some(1), "a check through {what} did not fail\n{context}");
        assert!(
            out.stderr.contains(&format!("{}/v1/", self.url)),
            "the error does not name the server's URL\n{context}"
        );
        before.assert_same(&agent.installed_snapshot(), &format!("check through {what}"));
        let temporaries = agent.leftover_temporaries();
        assert!(temporaries.is_empty(), "temporary files left: {temporaries:?}");
        assert_eq!(self.dev.nginx.reload_count(), reloads, "nginx was reloaded");
        assert_eq!(self.served_leaf(), leaf, "nginx no longer serves the old leaf");
        eprintln!(
            "{what}: failed after {:.2?} ({} requests; bound {bound:.2?})",
            out.elapsed,
            requests_sent(&out)
        );
        out
    }
}

/// The requests the check sent, from its last debug line ("check done: N
/// requests").
fn requests_sent(out: &Output) -> u64 {
    out.stderr
        .lines()
        .rev()
        .find_map(|l| l.split("check done: ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `check done: N requests` line\n{out}"))
}

/// Asserts that the run ended within the bound its configuration implies:
/// each request at most `http_timeout_secs`, the order's poll pauses at
/// most `poll_timeout_secs`, plus [`MARGIN`]. Returns the bound.
#[track_caller]
fn within_bound(what: &str, out: &Output, context: &str) -> Duration {
    let requests = requests_sent(out);
    let bound = Duration::from_secs(requests * HTTP_TIMEOUT_SECS + POLL_TIMEOUT_SECS) + MARGIN;
    assert!(
        out.elapsed <= bound,
        "{what}: the check took {:.2?}, more than {requests} requests × {HTTP_TIMEOUT_SECS} s \
         + {POLL_TIMEOUT_SECS} s of polling + {MARGIN:?}\n{context}",
        out.elapsed
    );
    bound
}

/// Asserts the fault hit the first exchange: one request, failed within one
/// timeout (plus [`MARGIN`]).
#[track_caller]
fn failed_at_the_first_exchange(out: &Output, mentions: &[&str]) {
    assert_eq!(requests_sent(out), 1, "the check went past the first exchange\n{out}");
    let bound = Duration::from_secs(HTTP_TIMEOUT_SECS) + MARGIN;
    assert!(
        out.elapsed <= bound,
        "took {:.2?}, more than {bound:?}\n{out}",
        out.elapsed
    );
    out.assert_stderr_mentions(&["/v1/directory"]);
    out.assert_stderr_mentions(mentions);
}

#[test]
fn seconds_of_latency_time_out_at_the_first_exchange() {
    let net = setup("net-latency");
    let out = net.failing_check(Fault::Latency {
        each_way: Duration::from_secs(2),
    });
    // The TLS handshake and the request need two round trips: 8 s > 3 s.
    failed_at_the_first_exchange(&out, &["timed out"]);
}

#[test]
fn mild_latency_still_renews() {
    let net = setup("net-mild-latency");
    let agent = &net.dev.agent;
    let old = first_cert_of_file(&agent.config().path("cert_file"));
    net.relay.set_fault(Fault::Latency {
        each_way: Duration::from_millis(300),
    });
    let out = agent.check_now();
    out.assert_code(0);
    let requests = requests_sent(&out);
    within_bound("300 ms latency", &out, &out.to_string());
    // Each request costs at least a round trip, the TLS handshake one more.
    let floor = Duration::from_millis(600 * (requests + 1));
    assert!(
        out.elapsed >= floor,
        "took {:.2?} for {requests} requests: was the latency applied?\n{}",
        out.elapsed,
        net.relay.transcript()
    );
    let new = first_cert_of_file(&agent.config().path("cert_file"));
    assert_ne!(new, old, "no new certificate installed");
    net.ns.run(|| net.dev.nginx.wait_serving(&net.dev.hostname, &new));
    assert!(agent.leftover_temporaries().is_empty());
    eprintln!("300 ms each way: renewed in {:.2?} ({requests} requests)", out.elapsed);
}

#[test]
fn heavy_loss_ends_within_the_bound() {
    let net = setup("net-loss");
    let out = net.failing_check(Fault::Loss {
        percent: 50,
        rto: Duration::from_secs(1),
    });
    out.assert_stderr_mentions(&["timed out"]);
}

#[test]
fn reset_at_connect_fails_at_once() {
    let net = setup("net-reset-start");
    let out = net.failing_check(Fault::ResetAtStart);
    failed_at_the_first_exchange(&out, &["reset"]);
    assert!(
        out.elapsed < Duration::from_secs(HTTP_TIMEOUT_SECS),
        "waited for a timeout\n{out}"
    );
}

#[test]
fn reset_in_the_middle_of_the_chain_installs_nothing() {
    let net = setup("net-reset-mid");
    let records = net.chain_record();
    let out = net.failing_check(Fault::ResetAfter { records });
    out.assert_stderr_mentions(&["downloading the certificate"]);
    out.assert_stderr_mentions(&["reset"]);
    assert!(
        out.elapsed < Duration::from_secs(SERVER_RETRY_AFTER_SECS + HTTP_TIMEOUT_SECS),
        "waited for a timeout\n{out}"
    );
}

#[test]
fn close_in_the_middle_of_the_chain_installs_nothing() {
    let net = setup("net-close-mid");
    let records = net.chain_record();
    let out = net.failing_check(Fault::CloseAfter { records });
    out.assert_stderr_mentions(&["downloading the certificate"]);
    out.assert_stderr_mentions(&["closed before the answer was complete"]);
    assert!(
        out.elapsed < Duration::from_secs(SERVER_RETRY_AFTER_SECS + HTTP_TIMEOUT_SECS),
        "waited for a timeout\n{out}"
    );
}

#[test]
fn stall_in_the_middle_of_the_chain_times_out() {
    let net = setup("net-stall-mid");
    let records = net.chain_record();
    let out = net.failing_check(Fault::StallAfter { records });
    out.assert_stderr_mentions(&["downloading the certificate"]);
    out.assert_stderr_mentions(&["timed out"]);
    // One poll pause, then the stalled download: one timeout.
    let bound = Duration::from_secs(SERVER_RETRY_AFTER_SECS + HTTP_TIMEOUT_SECS) + MARGIN;
    assert!(
        out.elapsed <= bound,
        "took {:.2?}, more than {bound:?}\n{out}",
        out.elapsed
    );
}

#[test]
fn stall_during_the_tls_handshake_times_out() {
    let net = setup("net-stall-handshake");
    let out = net.failing_check(Fault::StallAfter { records: 0 });
    failed_at_the_first_exchange(&out, &["timed out"]);
}

#[test]
fn slow_link_with_tc_tbf_ends_within_the_bound() {
    let net = setup("net-tbf");
    // The one shaping qdisc this kernel has. At 4 kbit/s (500 bytes/s)
    // the first exchange alone, TLS handshake and directory (~2.3 KB, and
    // through the relay every byte crosses lo twice), needs some 9 s: far
    // over the 3 s timeout. lo's 64 KiB MTU would exceed any small burst,
    // so the namespace's lo gets an Ethernet MTU first.
    net.ns.ip(&["link", "set", "lo", "mtu", "1500"]).assert_code(0);
    net.ns
        .tc(&[
            "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "4kbit", "burst", "1600", "latency", "10s",
        ])
        .assert_code(0);
    let out = net.failing_check_named("tc tbf 4kbit", Fault::None);
    out.assert_stderr_mentions(&["timed out"]);
}

/// An evil-server device whose check fails on `mode` within one request
/// timeout of the download, leaving everything as it was.
fn evil_download_fault(name: &str, mode: Mode, mentions: &[&str]) -> Output {
    let env = TestEnv::new(name);
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = evil_device(&env, &evil, |c| c.set("http_timeout_secs", HTTP_TIMEOUT_SECS));
    let agent = &dev.agent;
    let leaf = first_cert_of_file(&agent.config().path("cert_file"));
    let before = agent.installed_snapshot();
    evil.set_mode(mode);
    let out = agent.check_now();
    within_bound(&format!("{mode:?}"), &out, &out.to_string());
    out.assert_code(1);
    out.assert_stderr_mentions(&[&format!("{}/v1/certificates/", evil.url())]);
    out.assert_stderr_mentions(&["downloading the certificate"]);
    out.assert_stderr_mentions(mentions);
    before.assert_same(&agent.installed_snapshot(), &format!("check against {mode:?}"));
    assert!(agent.leftover_temporaries().is_empty());
    assert_eq!(dev.nginx.served_leaf(&dev.hostname), leaf);
    eprintln!("{mode:?}: failed after {:.2?}", out.elapsed);
    out
}

#[test]
fn server_closing_mid_body_is_refused() {
    let out = evil_download_fault(
        "http-truncated",
        Mode::TruncatedDownload,
        &["closed before the answer was complete"],
    );
    assert!(
        out.elapsed < Duration::from_secs(HTTP_TIMEOUT_SECS),
        "waited for a timeout\n{out}"
    );
}

#[test]
fn server_stalling_after_the_headers_times_out() {
    let out = evil_download_fault("http-stall-body", Mode::StallAfterHeaders, &["timed out"]);
    assert!(out.elapsed >= Duration::from_secs(HTTP_TIMEOUT_SECS) - Duration::from_millis(500));
}
