//! The service manager's notification protocol (systemd's `sd_notify(3)`):
//! newline-separated `KEY=VALUE` lines in one datagram on the Unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). No library: it is one `sendto(2)`.
//!
//! The daemon says `READY=1` once it waits for its first check,
//! `RELOADING=1` … `READY=1` around a SIGHUP, `STOPPING=1` on SIGTERM, a
//! one-line `STATUS=` after each check, and feeds the watchdog
//! (`WATCHDOG=1`) at half the `$WATCHDOG_USEC` period that systemd sets
//! from `WatchdogSec=`.
//!
//! Without `$NOTIFY_SOCKET` (procd, a shell, a test) every call is a no-op.
//! The variables are not passed on to the commands the agent runs (see
//! [`crate::reload`]): a reload command must not speak for the agent.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The environment variables of the protocol, removed from children.
pub const ENV_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Shortest watchdog feeding period honoured (a smaller `WATCHDOG_USEC`
/// would make the daemon spin).
const MIN_WATCHDOG_PERIOD: Duration = Duration::from_millis(100);

/// Longest `STATUS=` text sent.
const MAX_STATUS_CHARS: usize = 200;

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    /// Half the watchdog timeout: how often `WATCHDOG=1` is due.
    watchdog_period: Option<Duration>,
    last_fed: Option<Instant>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
    /// For messages: the variable's value.
    name: String,
}

impl Notifier {
    /// From the process environment.
    pub fn from_env() -> Notifier {
        let var = |k: &str| std::env::var(k).ok();
        Notifier::new(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the values of the three variables; `pid` is this process.
    /// Unusable values are logged and ignored (the agent still runs).
    pub fn new(socket: Option<&str>, watchdog_usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|s| match Target::open(s) {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={s}: {e}; not notifying the service manager");
                None
            }
        });
        let watchdog_period = match (watchdog_usec, watchdog_pid) {
            (None, _) => None,
            // systemd names the process that must feed it; not us: ignore.
            (Some(_), Some(p)) if p.trim().parse::<u32>().ok() != Some(pid) => None,
            (Some(usec), _) => match usec.trim().parse::<u64>() {
                Ok(u) if u > 0 => Some((Duration::from_micros(u) / 2).max(MIN_WATCHDOG_PERIOD)),
                _ => {
                    log::warn!("WATCHDOG_USEC={usec:?} is not a positive number of microseconds; ignored");
                    None
                }
            },
        };
        Notifier {
            watchdog_period: watchdog_period.filter(|_| target.is_some()),
            target,
            last_fed: None,
        }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier {
            target: None,
            watchdog_period: None,
            last_fed: None,
        }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Startup is complete.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
        self.last_fed = Some(Instant::now());
    }

    /// A configuration reload starts (`READY=1` follows when it is done).
    pub fn reloading(&mut self) {
        let mut msg = String::from("RELOADING=1");
        if let Some(usec) = monotonic_usec() {
            msg.push_str(&format!("\nMONOTONIC_USEC={usec}"));
        }
        self.send(&msg);
    }

    /// The daemon is stopping.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// A free-form one-line status (`systemctl status` shows it).
    pub fn status(&mut self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// How often the watchdog must be fed, if it is enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog_period
    }

    /// Feeds the watchdog if half its period has passed since the last
    /// feed (cheap to call often).
    pub fn feed_watchdog(&mut self) {
        let Some(period) = self.watchdog_period else { return };
        if self.last_fed.is_some_and(|at| at.elapsed() < period / 2) {
            return;
        }
        self.send("WATCHDOG=1");
        self.last_fed = Some(Instant::now());
    }

    /// How long the daemon may sleep before the watchdog must be fed.
    pub fn watchdog_due_in(&self) -> Option<Duration> {
        let period = self.watchdog_period?;
        Some(match self.last_fed {
            Some(at) => period.saturating_sub(at.elapsed()),
            None => Duration::ZERO,
        })
    }

    fn send(&self, message: &str) {
        let Some(t) = &self.target else { return };
        if let Err(e) = t.socket.send_to_addr(message.as_bytes(), &t.address) {
            // The service manager restarts us if it misses READY or the
            // watchdog; nothing better to do than say why.
            log::warn!("notifying the service manager at {}: {e}", t.name);
        }
    }
}

impl Target {
    fn open(value: &str) -> std::io::Result<Target> {
        use std::os::unix::net::SocketAddr;
        let address = match value.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None if value.starts_with('/') => SocketAddr::from_pathname(value)?,
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Target {
            socket,
            address,
            name: value.to_string(),
        })
    }
}

/// `STATUS=` takes one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_STATUS_CHARS)
        .collect()
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC=` wants it.
fn monotonic_usec() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs * 1_000_000 + nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (UnixDatagram, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let sock = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (sock, dir)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    mod tempdir {
        use std::path::{Path, PathBuf};
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                let p = std::env::temp_dir().join(format!("lancert-notify-{hex}"));
                std::fs::create_dir(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn sends_ready_status_and_watchdog_on_a_path_socket() {
        let (sock, dir) = listener();
        let path = dir.path().join("notify");
        let mut n = Notifier::new(path.to_str(), Some("2000000"), None, 1);
        assert!(n.is_active());
        assert_eq!(n.watchdog_period(), Some(Duration::from_secs(1)));
        n.ready("waiting\nfor the first check");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=waiting for the first check");
        // Fed at READY: not again at once.
        n.feed_watchdog();
        n.status("ok");
        assert_eq!(recv(&sock), "STATUS=ok");
        n.last_fed = Some(Instant::now() - Duration::from_secs(1));
        n.feed_watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.reloading();
        assert!(recv(&sock).starts_with("RELOADING=1\nMONOTONIC_USEC="));
        n.stopping();
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn abstract_socket_names_work() {
        let name = format!("lancert-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier::new(Some(&format!("@{name}")), None, None, 1);
        n.ready("up");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=up");
        assert_eq!(n.watchdog_period(), None);
    }

    #[test]
    fn watchdog_for_another_pid_or_garbage_is_ignored() {
        let (_sock, dir) = listener();
        let path = dir.path().join("notify");
        let n = Notifier::new(path.to_str(), Some("2000000"), Some("4242"), 1);
        assert_eq!(n.watchdog_period(), None);
        let n = Notifier::new(path.to_str(), Some("2000000"), Some("1"), 1);
        assert_eq!(n.watchdog_period(), Some(Duration::from_secs(1)));
        let n = Notifier::new(path.to_str(), Some("soon"), None, 1);
        assert_eq!(n.watchdog_period(), None);
        // A tiny period is raised so the daemon never spins.
        let n = Notifier::new(path.to_str(), Some("10"), None, 1);
        assert_eq!(n.watchdog_period(), Some(MIN_WATCHDOG_PERIOD));
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let mut n = Notifier::new(None, Some("2000000"), None, 1);
        assert!(!n.is_active());
        assert_eq!(n.watchdog_period(), None);
        n.ready("x");
        n.feed_watchdog();
        let n = Notifier::new(Some("relative/path"), None, None, 1);
        assert!(!n.is_active());
    }

    #[test]
    fn a_missing_listener_is_not_fatal() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("nobody-listens");
        let mut n = Notifier::new(path.to_str(), None, None, 1);
        n.ready("x");
    }
}
