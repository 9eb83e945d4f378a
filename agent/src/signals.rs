//! Signal handling with a self-pipe.
//!
//! | Signal            | Meaning                                   |
//! |-------------------|-------------------------------------------|
//! | SIGTERM, SIGINT   | stop: finish the current step and exit    |
//! | SIGHUP            | reload the configuration                  |
//! | SIGUSR1           | check now (addresses and certificate)     |
//!
//! The handlers only set an atomic flag and write one byte to a
//! non-blocking, close-on-exec pipe (write(2) is async-signal-safe; a full
//! pipe just drops the byte, the flag is already set). The daemon waits on
//! the pipe's read end ([`Signals::fd`]) in [`crate::wakeup::wait_readable`],
//! and the handlers are installed without `SA_RESTART`, so a signal also
//! interrupts a wait that is in progress. [`Signals::take`] then says what
//! arrived.
//!
//! The pipe is created once and lives as long as the process: a handler can
//! run at any moment, so its write end is never closed (it could otherwise
//! write into an unrelated file that reused the fd number). Every
//! [`Signals`] value shares it.

use crate::error::{Error, Result};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

// `AtomicBool`/`AtomicI32` only: 32-bit MIPS has no 64-bit atomics.
static TERMINATE: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
static CHECK_NOW: AtomicBool = AtomicBool::new(false);
/// The pipe's write end for the handlers; -1 before [`Signals::install`].
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The pipe (read end, write end), created by the first install.
static PIPE: Mutex<Option<(RawFd, RawFd)>> = Mutex::new(None);

/// What arrived since the last [`Signals::take`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// SIGTERM or SIGINT: stop.
    pub terminate: bool,
    /// SIGHUP: reload the configuration.
    pub reload: bool,
    /// SIGUSR1: check now.
    pub check_now: bool,
}

/// The installed handlers: a handle on the self-pipe's read end.
#[derive(Debug)]
pub struct Signals {
    read_fd: RawFd,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT, SIGHUP and SIGUSR1.
    /// Installing again is harmless and shares the same pipe.
    pub fn install() -> Result<Signals> {
        let (read_fd, write_fd) = pipe()?;
        WAKE_FD.store(write_fd, Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            set_handler(sig)?;
        }
        Ok(Signals { read_fd })
    }

    /// The fd that becomes readable when a signal arrives.
    pub fn fd(&self) -> RawFd {
        self.read_fd
    }

    /// Returns what arrived since the last call and clears it.
    pub fn take(&self) -> Pending {
        // Drain first, then read the flags: a signal that lands in between
        // leaves a byte behind and wakes the next wait, at worst for nothing.
        // The other order could clear a byte whose flag was already taken
        // and then miss the flag set for it.
        self.drain();
        Pending {
            terminate: TERMINATE.swap(false, Ordering::SeqCst),
            reload: RELOAD.swap(false, Ordering::SeqCst),
            check_now: CHECK_NOW.swap(false, Ordering::SeqCst),
        }
    }

    /// Whether SIGTERM or SIGINT arrived, clearing nothing: for waits inside
    /// a step, which stop early on terminate and leave the rest to the
    /// daemon loop's [`Signals::take`]. The pipe is drained (otherwise every
    /// later wait on [`Signals::fd`] would return at once), so a SIGHUP or
    /// SIGUSR1 remembered this way does not wake the next wait by itself:
    /// check [`Signals::is_pending`] before waiting.
    pub fn peek_terminate(&self) -> bool {
        self.drain();
        TERMINATE.load(Ordering::SeqCst)
    }

    /// Whether any signal is waiting to be taken.
    pub fn is_pending(&self) -> bool {
        TERMINATE.load(Ordering::SeqCst) || RELOAD.load(Ordering::SeqCst) || CHECK_NOW.load(Ordering::SeqCst)
    }

    /// Reads the pipe empty.
    fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` is writable for its length; read(2) writes at most
            // that many bytes. The fd is the pipe's read end, which is never
            // closed.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break; // empty (EAGAIN), or an error that reading again will not fix
        }
    }
}

/// The process's self-pipe, created on first use.
fn pipe() -> Result<(RawFd, RawFd)> {
    let mut guard = PIPE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(fds) = *guard {
        return Ok(fds);
    }
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a writable array of two ints, as pipe2(2) requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Other(format!(
            "installing signal handlers: creating the self-pipe: {err}"
        )));
    }
    *guard = Some((fds[0], fds[1]));
    Ok((fds[0], fds[1]))
}

fn set_handler(sig: libc::c_int) -> Result<()> {
    // SAFETY: `sigaction` is plain old data for which all-zero bytes are a
    // valid value (no flags, empty mask, default handler); the fields that
    // matter are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // No SA_RESTART: the signal must interrupt poll(2). No SA_SIGINFO: the
    // handler takes one argument.
    action.sa_flags = 0;
    // SAFETY: `action.sa_mask` is a valid sigset_t owned by us.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is a fully initialised sigaction whose handler is an
    // `extern "C" fn(c_int)` that only performs async-signal-safe operations;
    // the old action is not wanted (null).
    let rc = unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Other(format!("installing the handler for signal {sig}: {err}")));
    }
    Ok(())
}

/// The signal handler: async-signal-safe operations only (atomic stores,
/// write(2), errno save and restore).
extern "C" fn handler(sig: libc::c_int) {
    let flag = match sig {
        libc::SIGTERM | libc::SIGINT => &TERMINATE,
        libc::SIGHUP => &RELOAD,
        libc::SIGUSR1 => &CHECK_NOW,
        _ => return,
    };
    flag.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    // write(2) may set errno (EAGAIN on a full pipe), and the interrupted
    // code may be about to read errno: keep it.
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's lifetime.
    let errno = unsafe { *libc::__errno_location() };
    let byte = [1u8];
    // SAFETY: `byte` is valid for one byte; `fd` is the pipe's write end,
    // which is never closed. A failed write is fine: the flag is set and the
    // pipe already holds bytes.
    let _ = unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Serialises the tests that raise signals: the flags are process-wide.
    static LOCK: Mutex<()> = Mutex::new(());

    fn raise(sig: libc::c_int) {
        // SAFETY: raise(3) takes no pointers; a handler is installed for
        // `sig`, so the test process is not killed.
        assert_eq!(unsafe { libc::raise(sig) }, 0);
    }

    #[test]
    fn signals_set_flags_and_wake_the_pipe() {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let signals = Signals::install().unwrap();
        signals.take();
        let ready = crate::wakeup::wait_readable(&[signals.fd()], Duration::ZERO).unwrap();
        assert_eq!(ready, vec![false]);

        raise(libc::SIGUSR1);
        let ready = crate::wakeup::wait_readable(&[signals.fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, vec![true]);
        assert_eq!(
            signals.take(),
            Pending {
                check_now: true,
                ..Pending::default()
            }
        );
        assert_eq!(signals.take(), Pending::default());
        let ready = crate::wakeup::wait_readable(&[signals.fd()], Duration::ZERO).unwrap();
        assert_eq!(ready, vec![false], "take() drains the pipe");

        raise(libc::SIGHUP);
        raise(libc::SIGUSR1);
        raise(libc::SIGUSR1);
        assert_eq!(
            signals.take(),
            Pending {
                terminate: false,
                reload: true,
                check_now: true
            }
        );

        // SIGTERM and SIGINT are caught (not fatal) and mean terminate.
        raise(libc::SIGTERM);
        assert_eq!(
            signals.take(),
            Pending {
                terminate: true,
                ..Pending::default()
            }
        );
        raise(libc::SIGINT);
        assert_eq!(
            signals.take(),
            Pending {
                terminate: true,
                ..Pending::default()
            }
        );
    }

    #[test]
    fn installing_twice_shares_the_pipe() {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let a = Signals::install().unwrap();
        let b = Signals::install().unwrap();
        assert_eq!(a.fd(), b.fd());
        a.take();
        raise(libc::SIGHUP);
        assert!(b.take().reload);
        assert_eq!(a.take(), Pending::default());
    }

    #[test]
    fn many_signals_do_not_block_on_a_full_pipe() {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let signals = Signals::install().unwrap();
        // More than a pipe holds (64 KiB on Linux): the handler must not
        // block, and errno must survive.
        for _ in 0..70_000 {
            raise(libc::SIGUSR1);
        }
        assert!(signals.take().check_now);
        let ready = crate::wakeup::wait_readable(&[signals.fd()], Duration::ZERO).unwrap();
        assert_eq!(ready, vec![false]);
    }

    #[test]
    fn a_signal_interrupts_a_wait() {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let signals = Signals::install().unwrap();
        signals.take();
        // Signal this thread only (other tests run on other threads) while
        // it is blocked in poll(2).
        // SAFETY: pthread_self(3) takes no arguments and cannot fail.
        // pthread_t is an integer on glibc and a pointer on musl; as an
        // integer it can move to the other thread on both.
        let me = unsafe { libc::pthread_self() } as usize;
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: `me` is the test thread, which is alive: it joins this
            // thread before returning.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1) }
        });
        let start = std::time::Instant::now();
        let ready = crate::wakeup::wait_readable(&[signals.fd()], Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(sender.join().unwrap(), 0);
        // Interrupted (EINTR: all false), or the byte was seen first.
        assert!(ready == vec![false] || ready == vec![true], "{ready:?}");
        assert!(signals.take().check_now);
    }

    #[test]
    fn the_handler_keeps_errno() {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let signals = Signals::install().unwrap();
        // Fill the pipe so the handler's write fails with EAGAIN.
        for _ in 0..70_000 {
            raise(libc::SIGUSR1);
        }
        // SAFETY: this thread's errno slot.
        unsafe { *libc::__errno_location() = 1234 };
        raise(libc::SIGUSR1);
        // SAFETY: as above.
        assert_eq!(unsafe { *libc::__errno_location() }, 1234);
        signals.take();
    }

    #[test]
    fn peek_terminate_keeps_the_flags_and_empties_the_pipe() {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let signals = Signals::install().unwrap();
        signals.take();
        assert!(!signals.is_pending());
        raise(libc::SIGUSR1);
        assert!(!signals.peek_terminate());
        assert!(signals.is_pending());
        let ready = crate::wakeup::wait_readable(&[signals.fd()], Duration::ZERO).unwrap();
        assert_eq!(ready, vec![false]);
        raise(libc::SIGTERM);
        assert!(signals.peek_terminate());
        assert!(signals.peek_terminate(), "peeking does not clear");
        assert_eq!(
            signals.take(),
            Pending {
                terminate: true,
                reload: false,
                check_now: true
            }
        );
        assert!(!signals.is_pending());
    }
}
