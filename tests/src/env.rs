//! One test's private world: a temporary directory, free ports, binaries.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A test's environment: a fresh directory under the system temporary
/// directory, removed when the test passes and kept (with its path printed)
/// when it fails, so the logs and files in it can be read. Set
/// `LANCERT_KEEP_TEST_DIRS=1` to keep it also when the test passes.
pub struct TestEnv {
    dir: PathBuf,
    bin_dir: PathBuf,
}

/// Ports handed out in this process, so two tests running in parallel in one
/// test binary never get the same one (the kernel may give a port back once
/// its probing listener is closed).
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    /// Creates the directory `lancert-test-<name>-<pid>-<n>` and locates the
    /// binaries. `name` is the test's name, for finding its directory.
    pub fn new(name: &str) -> TestEnv {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lancert-test-{name}-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing stale {}: {e}", dir.display()));
        }
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TestEnv {
            dir,
            bin_dir: bin_dir(),
        }
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the test's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, rel: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        p
    }

    /// Path of the `agent` binary: `LANCERT_AGENT` if set (an agent built
    /// for another architecture, run under the emulator in `LANCERT_AGENT_RUNNER`), else the one
    /// in the binaries' directory.
    pub fn agent_bin(&self) -> PathBuf {
        match std::env::var_os("LANCERT_AGENT") {
            Some(path) => {
                let p = PathBuf::from(path);
                assert!(p.is_file(), "LANCERT_AGENT={} does not exist", p.display());
                p
            }
            None => self.binary("agent"),
        }
    }

    /// Path of the `lancert-server` binary.
    pub fn server_bin(&self) -> PathBuf {
        self.binary("lancert-server")
    }

    fn binary(&self, name: &str) -> PathBuf {
        let p = self.bin_dir.join(name);
        assert!(
            p.is_file(),
            "{} does not exist: run `cargo build --workspace` first (or set LANCERT_BIN_DIR)",
            p.display()
        );
        let crate_dir = if name == "agent" { "agent" } else { "server" };
        check_fresh(&p, &[crate_dir, "protocol"]);
        p
    }

    /// A loopback TCP port that nothing listens on now and that no other
    /// test of this process was given.
    pub fn free_port(&self) -> u16 {
        free_port()
    }
}

/// The emulator agents run under, `LANCERT_AGENT_RUNNER` (for example
/// `qemu-mips-static`), if set.
pub(crate) fn agent_runner() -> Option<PathBuf> {
    std::env::var_os("LANCERT_AGENT_RUNNER").map(PathBuf::from)
}

/// A free 127.0.0.1 port (see [`TestEnv::free_port`]).
pub(crate) fn free_port() -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding a probe listener on 127.0.0.1:0")
            .port();
        if used.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port after 100 tries");
}

/// Panics if a file of the crates `dirs` (workspace-relative) is newer than
/// `bin`.
///
/// `cargo test` rebuilds the binaries of the package under test only, so
/// after an edit to the agent, `cargo test -p lancert-tests` alone would test
/// the old binary. Set `LANCERT_ALLOW_STALE=1` to skip this check.
fn check_fresh(bin: &Path, dirs: &[&str]) {
    if std::env::var_os("LANCERT_ALLOW_STALE").is_some() || std::env::var_os("LANCERT_BIN_DIR").is_some() {
        return;
    }
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for dir in dirs {
        newest_file(&workspace.join(dir).join("src"), &mut newest);
        newest_file(&workspace.join(dir).join("Cargo.toml"), &mut newest);
    }
    if let Some((t, path)) = newest {
        assert!(
            t <= built,
            "{} is older than {}: run `cargo build --workspace` first (or set LANCERT_ALLOW_STALE=1)",
            bin.display(),
            path.display()
        );
    }
}

fn newest_file(path: &Path, newest: &mut Option<(std::time::SystemTime, PathBuf)>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newest_file(&e.path(), newest);
        }
    } else if let Ok(t) = std::fs::metadata(path).and_then(|m| m.modified()) {
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            *newest = Some((t, path.to_path_buf()));
        }
    }
}

/// `target/debug/`: the directory of the binaries under test.
///
/// A test binary lives in `target/debug/deps/`, the binaries one level up.
/// `LANCERT_BIN_DIR` overrides this (for example to test release builds).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LANCERT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("locating the test binary");
    let deps = exe.parent().expect("test binary has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its files are kept in {}", self.dir.display());
        } else if std::env::var_os("LANCERT_KEEP_TEST_DIRS").is_some() {
            eprintln!("LANCERT_KEEP_TEST_DIRS: files kept in {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: removing {}: {e}", self.dir.display());
        }
    }
}
