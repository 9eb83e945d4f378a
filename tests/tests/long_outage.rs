//! A 30-day outage of the management server, in virtual time: the real
//! daemon runs under libfaketime (Debian's `faketime`) at 100,000 times real
//! speed, so 30 days pass in about 26 s. Its clocks (wall and monotonic)
//! and its sleeps (`poll(2)`) are scaled alike, so the daemon's own
//! timetable, backoff and renewal decisions run unchanged.
//!
//! While the server is down a listener on its port counts every connection
//! attempt and closes it at once. Asserted: the attempts follow the backoff
//! schedule (1 min, 10 min, 100 min, then daily, each stretched by up to
//! 10 %, read from the daemon's own `next attempt in` decisions), the
//! certificate in service stays installed (even after it expires on day
//! 20), the daemon's log stays within a stated bound, and once the server
//! is back the next attempt renews.

use lancert_tests::scenario::server_device;
use lancert_tests::tls::{self, CertInfo};
use lancert_tests::{Server, ServerConfig, TestEnv};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Virtual seconds per real second.
const SPEED: u64 = 100_000;
const DAY: u64 = 86_400;
const OUTAGE_DAYS: u64 = 30;
/// The certificate's lifetime: it becomes due on day 13 of the outage and
/// expires on day 20.
const VALIDITY_DAYS: u64 = 20;
/// The bound the daemon's log must stay within over the outage: a few
/// lines per attempt, about 40 attempts.
const MAX_LOG_BYTES: usize = 32 * 1024;

fn virtual_secs(real: Duration) -> u64 {
    (real.as_secs_f64() * SPEED as f64) as u64
}

/// Counts connection attempts on a port and closes each at once.
struct Blackhole {
    attempts: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    fn listen(port: u16) -> Blackhole {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the server's port");
        listener.set_nonblocking(true).unwrap();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (attempts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        a.lock().unwrap().push(Instant::now());
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Blackhole {
            attempts,
            stop,
            thread: Some(thread),
        }
    }

    fn close(mut self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let a = self.attempts.lock().unwrap().clone();
        a
    }
}

#[test]
fn a_30_day_outage_follows_the_backoff_keeps_the_certificate_and_recovers() {
    assert!(
        std::path::Path::new(LIBFAKETIME).is_file(),
        "{LIBFAKETIME} is missing: install faketime (scripts/test does: apt-get install faketime)"
    );
    let env = TestEnv::new("long-outage");
    let mut server = Server::start_with(
        &env,
        ServerConfig {
            validity_secs: VALIDITY_DAYS * DAY,
            ..ServerConfig::default()
        },
    );
    let dev = server_device(&env, &server, |c| c.set("log_level", "info"));
    dev.agent.check_now().assert_code(0);
    let cert_path = dev.agent.config().path("cert_file");
    let first = tls::pem_certs(&std::fs::read(&cert_path).unwrap()).remove(0);
    let first_serial = CertInfo::parse(&first).serial;
    dev.nginx.wait_serving(&dev.hostname, &first);
    let installed = dev.agent.installed_snapshot();

    // The outage starts: nothing answers on the server's port.
    server.stop();
    let hole = Blackhole::listen(server.port());
    let started = Instant::now();
    let faketime = format!("+0 x{SPEED}");
    let mut daemon = dev
        .agent
        .spawn_daemon_with_env(&[("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", faketime.as_str())]);
    let outage = Duration::from_secs_f64((OUTAGE_DAYS * DAY) as f64 / SPEED as f64);
    std::thread::sleep(outage);
    assert!(daemon.exited().is_none(), "the daemon exited\n{}", daemon.log());
    let attempts = hole.close();
    let log_during = daemon.log();

    // The certificate in service stayed in service, past its expiry.
    installed.assert_same(&dev.agent.installed_snapshot(), "30 days without a server");

    // What the daemon decided after each failure: `next attempt in Ns`.
    let waits: Vec<u64> = log_during
        .lines()
        .filter_map(|l| l.split("next attempt in ").nth(1))
        .filter_map(|rest| rest.trim_end_matches('s').parse().ok())
        .collect();
    let days: Vec<f64> = attempts
        .iter()
        .map(|t| virtual_secs(t.duration_since(started)) as f64 / DAY as f64)
        .collect();
    eprintln!("{} failed checks; waits chosen (virtual s): {waits:?}", waits.len());
    eprintln!("{} connection attempts, on virtual days {days:.1?}", attempts.len());
    eprintln!(
        "daemon log: {} bytes, {} lines",
        log_during.len(),
        log_during.lines().count()
    );
    // The integration guide's schedule, each step stretched by up to 10 %.
    let schedule = [60u64, 600, 6_000];
    assert!(
        waits.len() >= schedule.len() + 10,
        "too few retries in 30 days: {waits:?}"
    );
    for (i, wait) in waits.iter().enumerate() {
        let step = schedule.get(i).copied().unwrap_or(DAY);
        assert!(
            (step..=step * 11 / 10).contains(wait),
            "retry {} waits {wait} s where the schedule says {step} s (+10 %): {waits:?}",
            i + 1
        );
    }
    // At most one failed check a day after the first three retries, and
    // every connection attempt belongs to one (address step and
    // certificate step may each try) or to a sign of life: at most one
    // address refresh and one status report a day, at their slots (a
    // refresh that finds no server is not a failed check).
    assert!(
        waits.len() as u64 <= schedule.len() as u64 + OUTAGE_DAYS + 1,
        "{} failed checks in {OUTAGE_DAYS} days",
        waits.len()
    );
    assert!(
        !attempts.is_empty() && attempts.len() <= 2 * waits.len() + 2 * (OUTAGE_DAYS as usize + 1),
        "{} connection attempts for {} failed checks",
        attempts.len(),
        waits.len()
    );
    assert!(
        log_during.len() <= MAX_LOG_BYTES,
        "the log grew to {} bytes in {OUTAGE_DAYS} days (bound {MAX_LOG_BYTES})\n{log_during}",
        log_during.len()
    );
    assert_eq!(daemon.terminate(Duration::from_secs(10)), Some(0), "{}", daemon.log());

    // The server is back. At 100,000 times real speed every timeout of a
    // real exchange (10 s of HTTP, 30 s of reload) would be over in under a
    // millisecond, so the next attempt runs at real speed, on the clock the
    // daemon had reached, as does the server.
    let ahead = virtual_secs(started.elapsed()).saturating_sub(started.elapsed().as_secs());
    let offset = format!("+{ahead}s");
    let vars = [("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", offset.as_str())];
    server.restart_with_env(&vars);
    let out = dev.agent.run_with_env(&["--check-now"], &vars);
    out.assert_code(0).assert_stderr_mentions(&["expired"]);
    let second = tls::pem_certs(&std::fs::read(&cert_path).unwrap()).remove(0);
    assert_ne!(CertInfo::parse(&second).serial, first_serial, "not renewed\n{out}");
    dev.nginx.wait_serving(&dev.hostname, &second);
}
