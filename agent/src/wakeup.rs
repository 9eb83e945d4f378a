//! Waiting on fds with a timeout: the daemon's only blocking point.
//!
//! The daemon sleeps in [`wait_readable`] on the signal self-pipe and the
//! address monitor until one of them has something to read or the next
//! scheduled step is due. A signal interrupts the wait (the handlers are
//! installed without `SA_RESTART`), and the caller then looks at the signal
//! flags.

use crate::error::{Error, Result};
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until at least one of `fds` is readable or `timeout` has passed.
///
/// Returns one flag per fd, in order: `true` when it is readable, has hung
/// up or has a pending error, i.e. when reading it will not block. All flags
/// are `false` on a timeout and when a signal interrupted the wait (`EINTR`):
/// the caller then checks its signal flags. A negative fd is ignored (its
/// flag stays `false`), so optional sources can be passed as `-1`.
///
/// The timeout is rounded up to whole milliseconds, so the wait never ends
/// before it is due (which would make the caller spin), and capped at
/// `i32::MAX` ms (about 24.8 days); the caller re-checks its clock and waits
/// again.
pub fn wait_readable(fds: &[RawFd], timeout: Duration) -> Result<Vec<bool>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let nfds = libc::nfds_t::try_from(pollfds.len())
        .map_err(|_| Error::Other(format!("waiting on {} fds: too many", fds.len())))?;
    // SAFETY: `pollfds` is a live, exclusively borrowed buffer of exactly
    // `nfds` initialised `pollfd` structures; poll(2) only writes `revents`
    // within it and keeps no reference after returning.
    let n = unsafe { libc::poll(pollfds.as_mut_ptr(), nfds, timeout_ms(timeout)) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(Error::Other(format!("waiting for events (poll): {err}")));
    }
    let mut ready = Vec::with_capacity(pollfds.len());
    for p in &pollfds {
        if p.revents & libc::POLLNVAL != 0 {
            // A closed fd would be reported forever and turn the daemon loop
            // into a busy loop: this is a bug, so say so.
            return Err(Error::Other(format!(
                "waiting for events (poll): fd {} is not open",
                p.fd
            )));
        }
        ready.push(p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0);
    }
    Ok(ready)
}

/// `timeout` in milliseconds for poll(2): rounded up, capped at `i32::MAX`.
fn timeout_ms(timeout: Duration) -> libc::c_int {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn timeout_is_rounded_up_and_capped() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), i32::MAX);
        assert_eq!(timeout_ms(Duration::from_millis(i32::MAX as u64 + 1)), i32::MAX);
    }

    #[test]
    fn times_out_when_nothing_is_readable() {
        let (a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let ready = wait_readable(&[a.as_raw_fd()], Duration::from_millis(50)).unwrap();
        assert_eq!(ready, vec![false]);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn reports_which_fd_is_readable() {
        let (a, _a2) = UnixStream::pair().unwrap();
        let (b, mut b2) = UnixStream::pair().unwrap();
        b2.write_all(b"x").unwrap();
        let ready = wait_readable(&[a.as_raw_fd(), -1, b.as_raw_fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, vec![false, false, true]);
    }

    #[test]
    fn hang_up_counts_as_readable() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let ready = wait_readable(&[a.as_raw_fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, vec![true]);
    }

    #[test]
    fn no_fds_is_a_plain_sleep() {
        let ready = wait_readable(&[], Duration::from_millis(1)).unwrap();
        assert!(ready.is_empty());
    }
}
