//! The check lock: the check never runs twice at once.
//!
//! The daemon's loop and a `check` run from the command line (or cron) both
//! take an exclusive flock(2) on `<runtime_dir>/check.lock` before they touch
//! the state, the key or the certificate. The kernel drops the lock when the
//! holder's fd is closed, including when the process dies, so there are no
//! stale locks to clean up; the file itself stays. The holder writes its pid
//! into the file so the one that waits can say who holds it.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "check.lock";
/// How often a busy lock is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A held check lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct CheckLock {
    file: File,
    path: PathBuf,
}

impl CheckLock {
    /// Takes the lock on `dir/check.lock` (created with mode 0600; `dir` is
    /// the runtime directory, a tmpfs, so that writing our pid on every
    /// check never wears flash; it is created if missing),
    /// trying every [`RETRY_INTERVAL`] for up to `wait` (`Duration::ZERO`:
    /// try once). When it stays busy the error says so and names the
    /// holder's pid when the file tells it; its source has kind
    /// [`io::ErrorKind::WouldBlock`], so callers can tell "busy" from a real
    /// failure:
    /// "taking the check lock /var/lib/lancert/check.lock: another check is
    /// running (pid 812)".
    pub fn acquire(dir: &Path, wait: Duration) -> Result<CheckLock> {
        const DOING: &str = "taking the check lock";
        std::fs::create_dir_all(dir).map_err(|e| Error::io(DOING, dir, e))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's pid is in it
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(DOING, &path, e))?;
        let deadline = Instant::now() + wait;
        loop {
            match try_lock(&file) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(Error::io(DOING, &path, e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let holder = holder_pid(&file).map(|pid| format!(" (pid {pid})")).unwrap_or_default();
                let busy = io::Error::new(io::ErrorKind::WouldBlock, format!("another check is running{holder}"));
                return Err(Error::io(DOING, &path, busy));
            }
            std::thread::sleep(left.min(RETRY_INTERVAL));
        }
        let mut lock = CheckLock { file, path };
        lock.write_pid()
            .map_err(|e| Error::io("writing our pid into the check lock", &lock.path, e))?;
        Ok(lock)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(format!("{}\n", std::process::id()).as_bytes())
    }
}

/// One non-blocking attempt: `Ok(false)` when another open file holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock(2) takes no pointers; the fd is open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}

/// The pid the holder wrote, if the file holds one (read at most 32 bytes).
fn holder_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lancert-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn second_acquire_times_out_and_names_the_holder() {
        let dir = temp_dir("busy");
        let first = CheckLock::acquire(&dir, Duration::ZERO).unwrap();
        let path = dir.join(LOCK_FILE);
        assert_eq!(first.path(), path);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let start = Instant::now();
        let err = CheckLock::acquire(&dir, Duration::from_millis(250)).unwrap_err();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        let text = err.to_string();
        assert!(text.contains("another check is running"), "{text}");
        assert!(text.contains(&format!("(pid {})", std::process::id())), "{text}");
        assert!(text.contains(LOCK_FILE), "{text}");
        match &err {
            Error::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::WouldBlock),
            other => panic!("{other:?}"),
        }
        // The failed attempt did not disturb the holder's pid.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );

        drop(first);
        let again = CheckLock::acquire(&dir, Duration::ZERO).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiting_acquire_gets_the_lock_when_it_is_released() {
        let dir = temp_dir("wait");
        let first = CheckLock::acquire(&dir, Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(first);
        });
        let second = CheckLock::acquire(&dir, Duration::from_secs(5));
        releaser.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_in_the_file_is_overwritten_and_not_quoted() {
        let dir = temp_dir("garbage");
        let path = dir.join(LOCK_FILE);
        std::fs::write(&path, "not a pid, and quite a long line of text\n").unwrap();
        let first = CheckLock::acquire(&dir, Duration::ZERO).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(first);

        // A holder that wrote nothing (yet): the error has no pid.
        std::fs::write(&path, "").unwrap();
        let holder = File::open(&path).unwrap();
        assert!(try_lock(&holder).unwrap());
        let text = CheckLock::acquire(&dir, Duration::ZERO).unwrap_err().to_string();
        assert!(text.ends_with("another check is running"), "{text}");
        drop(holder);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_dir_is_created_and_an_unusable_one_is_an_io_error() {
        let base = temp_dir("missing");
        let dir = base.join("does-not-exist");
        drop(CheckLock::acquire(&dir, Duration::ZERO).unwrap());
        assert!(dir.join(LOCK_FILE).exists());
        let file = base.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let text = CheckLock::acquire(&file.join("sub"), Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("taking the check lock"), "{text}");
        assert!(text.contains("a-file"), "{text}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
