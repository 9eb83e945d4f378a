//! Running the binaries under test with a time limit, and signalling them.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one run of a command may take before it is killed and the test
/// fails: 60 s. Every check in the suite is expected to end in a few seconds.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long, after a command exited, its output pipes may stay open (held by
/// a grandchild, for example nginx started by a reload command) before the
/// harness stops waiting for more output: 5 s.
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The result of one command run.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Output {
    /// Panics, showing the whole run, unless the exit code is `expected`.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, Some(expected), "unexpected exit code\n{self}");
        self
    }

    /// Panics unless stdout or stderr contains one of `needles`, compared
    /// case-insensitively.
    #[track_caller]
    pub fn assert_mentions(&self, needles: &[&str]) -> &Self {
        let all = format!("{}\n{}", self.stdout, self.stderr).to_lowercase();
        assert!(
            needles.iter().any(|n| all.contains(&n.to_lowercase())),
            "expected the output to mention one of {needles:?}\n{self}"
        );
        self
    }

    /// Panics unless stderr contains one of `needles`, compared
    /// case-insensitively.
    #[track_caller]
    pub fn assert_stderr_mentions(&self, needles: &[&str]) -> &Self {
        let err = self.stderr.to_lowercase();
        assert!(
            needles.iter().any(|n| err.contains(&n.to_lowercase())),
            "expected stderr to mention one of {needles:?}\n{self}"
        );
        self
    }

    /// Parses stdout as JSON, panicking with the whole run if it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(self.stdout.trim()) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not JSON ({e})\n{self}"),
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "exit code: {:?} after {:.1?}", self.code, self.elapsed)?;
        // Errors and warnings first (syslog priorities 0 to 4): a report that
        // shows only the start of a long message still shows why.
        let alarms: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| matches!(l.get(..3), Some("<0>" | "<1>" | "<2>" | "<3>" | "<4>")))
            .collect();
        if !alarms.is_empty() {
            writeln!(f, "--- errors and warnings ---\n{}", alarms.join("\n"))?;
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Reads a pipe to its end on a thread and sends the text when done.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Runs `program args…` with no stdin, collecting its output, killing it
/// after `timeout`.
pub fn run(program: &Path, args: &[&str], timeout: Duration) -> Output {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let code = wait_with_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        let so = out.recv_timeout(PIPE_DRAIN_TIMEOUT).unwrap_or_default();
        let se = err.recv_timeout(PIPE_DRAIN_TIMEOUT).unwrap_or_default();
        panic!("{command}: still running after {timeout:?}, killed\n--- stdout ---\n{so}\n--- stderr ---\n{se}");
    });
    let stdout = out.recv_timeout(PIPE_DRAIN_TIMEOUT).unwrap_or_default();
    let stderr = err.recv_timeout(PIPE_DRAIN_TIMEOUT).unwrap_or_default();
    Output {
        command,
        code,
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

/// Waits for `child` to exit; `None` if it is still running after `timeout`.
/// The inner `Option` is the exit code (`None` when killed by a signal).
pub(crate) fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
    }
}

/// Sends `signal` (for example `libc::SIGTERM`) to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    let rc = kill(pid as i32, signal);
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Sends `signal` to `pid`; false if that failed (for example, no such process).
pub(crate) fn try_signal(pid: i32, signal: i32) -> bool {
    kill(pid, signal) == 0
}

/// Whether a process with this pid exists (zombies included).
pub(crate) fn alive(pid: i32) -> bool {
    kill(pid, 0) == 0
}

#[allow(unsafe_code)]
fn kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) }
}
