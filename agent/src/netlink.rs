//! Linux rtnetlink (`NETLINK_ROUTE`) sockets: address and route dumps, and a
//! monitor that wakes the daemon when addresses or default routes change.
//!
//! Messages are parsed from bytes rather than cast to structs: everything the
//! kernel sends is bounds-checked, and a malformed message is an error (in a
//! dump) or "something changed" (in the monitor), never a panic. Netlink
//! headers and attributes are in host byte order (`from_ne_bytes`, so the
//! same code runs on big-endian MIPS); the addresses themselves are in network
//! order. The format is described in netlink(7) and rtnetlink(7).
//!
//! Bounds:
//! - a dump ends within [`DUMP_TIMEOUT`] (2 s) and reads at most
//!   [`MAX_DUMP_BYTES`] (1 MiB), about 10 000 routes: beyond that it fails
//!   rather than grow without end;
//! - a dump the kernel marks as interrupted by a concurrent change
//!   (`NLM_F_DUMP_INTR`) is repeated, at most [`DUMP_ATTEMPTS`] times in all;
//! - [`AddressMonitor::drain`] reads at most [`MAX_DRAIN_DATAGRAMS`] datagrams
//!   per call, so a flood of events cannot keep the daemon from its work.

use crate::error::{Error, Result};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long a dump may take in all before it fails.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(2);
/// How many bytes a dump may read before it fails (1 MiB).
pub const MAX_DUMP_BYTES: usize = 1 << 20;
/// How often a dump is tried when the kernel reports it inconsistent; the
/// last attempt's result is used as it is.
pub const DUMP_ATTEMPTS: u32 = 3;
/// How many datagrams one [`AddressMonitor::drain`] reads at most.
pub const MAX_DRAIN_DATAGRAMS: usize = 256;

/// Receive buffer for dumps. The kernel sizes dump datagrams to the reader's
/// buffer but never above 32 KiB; a longer datagram is detected (`MSG_TRUNC`)
/// and fails the dump.
const DUMP_BUFFER: usize = 32 * 1024;
/// Receive buffer for the monitor: notifications are at most a page.
const MONITOR_BUFFER: usize = 16 * 1024;

const NLMSG_HDRLEN: usize = 16;
const RTA_HDRLEN: usize = 4;
/// `struct ifaddrmsg`: family, prefixlen, flags, scope (u8 each), index (u32).
const IFADDRMSG_LEN: usize = 8;
/// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope,
/// type (u8 each), flags (u32).
const RTMSG_LEN: usize = 12;
/// `struct rtnexthop`: len (u16), flags, hops (u8 each), ifindex (i32).
const RTNEXTHOP_LEN: usize = 8;
/// Attribute types carry two flag bits (nested, net byte order) on top.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// An address family the agent publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    fn from_af(af: u8) -> Option<Family> {
        match libc::c_int::from(af) {
            libc::AF_INET => Some(Family::V4),
            libc::AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }

    fn af(self) -> u8 {
        // AF_INET (2) and AF_INET6 (10) fit a byte on every Linux.
        match self {
            Family::V4 => libc::AF_INET as u8,
            Family::V6 => libc::AF_INET6 as u8,
        }
    }
}

/// One address configured on an interface (an `RTM_NEWADDR` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's index.
    pub index: u32,
    /// The address family.
    pub family: Family,
    /// The address (`IFA_LOCAL` when present, else `IFA_ADDRESS`: on
    /// point-to-point links `IFA_ADDRESS` is the peer's).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
    /// The scope (`RT_SCOPE_*`: 0 universe, 253 link, 254 host).
    pub scope: u8,
    /// `IFA_F_*` flags, from the `IFA_FLAGS` attribute when present (it holds
    /// the flags above bit 7).
    pub flags: u32,
}

/// One unicast route (an `RTM_NEWROUTE` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The address family.
    pub family: Family,
    /// The destination prefix length: 0 for a default route.
    pub dst_len: u8,
    /// The routing table (`RTA_TABLE` when present; 254 is main).
    pub table: u32,
    /// The output interface (`RTA_OIF`, else the first next hop's of a
    /// multipath route).
    pub oif: Option<u32>,
    /// The preferred source address (`RTA_PREFSRC`).
    pub prefsrc: Option<IpAddr>,
    /// The gateway (`RTA_GATEWAY`).
    pub gateway: Option<IpAddr>,
    /// The metric (`RTA_PRIORITY`; 0 when absent). Lower is preferred.
    pub priority: u32,
}

/// All addresses on all interfaces (an `RTM_GETADDR` dump, `AF_UNSPEC`).
/// Addresses of other families than IPv4 and IPv6 are left out.
pub fn dump_addresses() -> Result<Vec<IfAddr>> {
    let mut request = [0u8; IFADDRMSG_LEN];
    request[0] = libc::AF_UNSPEC as u8;
    dump(
        "reading addresses from",
        &[(libc::RTM_GETADDR, &request)],
        libc::RTM_NEWADDR,
        parse_ifaddr,
    )
}

/// The unicast routes of the main table, IPv4 and IPv6 (two `RTM_GETROUTE`
/// dumps). Routes of other tables are dropped while reading, so large policy
/// tables do not grow the result; unreachable, blackhole, local and other
/// non-unicast routes and cached clones are left out.
pub fn dump_routes() -> Result<Vec<Route>> {
    let mut v4 = [0u8; RTMSG_LEN];
    v4[0] = Family::V4.af();
    let mut v6 = [0u8; RTMSG_LEN];
    v6[0] = Family::V6.af();
    dump(
        "reading routes from",
        &[(libc::RTM_GETROUTE, &v4), (libc::RTM_GETROUTE, &v6)],
        libc::RTM_NEWROUTE,
        |payload| parse_route(payload).filter(|r| r.table == u32::from(libc::RT_TABLE_MAIN)),
    )
}

/// The index of the interface called `name` (if_nametoindex(3)).
pub fn interface_index(name: &str) -> Result<u32> {
    const DOING: &str = "looking up network interface";
    let c_name = std::ffi::CString::new(name).map_err(|_| {
        Error::io(
            DOING,
            name,
            io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"),
        )
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the
    // call; if_nametoindex(3) only reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(Error::io(DOING, name, io::Error::last_os_error()));
    }
    Ok(index)
}

/// A socket subscribed to address and route change notifications. The daemon
/// waits on [`AddressMonitor::fd`] and calls [`AddressMonitor::drain`] when it
/// is readable.
#[derive(Debug)]
pub struct AddressMonitor {
    socket: Socket,
    buf: Vec<u8>,
}

impl AddressMonitor {
    /// Opens a non-blocking socket subscribed to IPv4 and IPv6 address and
    /// route changes.
    pub fn open() -> Result<AddressMonitor> {
        let groups =
            libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE;
        // The RTMGRP_* bits are small positive constants.
        let socket =
            Socket::open(groups as u32).map_err(|e| Error::io("subscribing to address changes on", "rtnetlink", e))?;
        Ok(AddressMonitor {
            socket,
            buf: vec![0; MONITOR_BUFFER],
        })
    }

    /// The fd to wait on: readable when notifications are pending.
    pub fn fd(&self) -> RawFd {
        self.socket.fd.as_raw_fd()
    }

    /// Reads all pending notifications without blocking. Returns `true` when
    /// any of them may change the published addresses: an address added or
    /// removed, a main-table default route added or removed, or a lost or
    /// unreadable notification (`ENOBUFS` when the kernel overran the socket
    /// buffer, a truncated or malformed message, an unexpected error). Route
    /// changes other than main-table default routes are ignored: they cannot
    /// change the selection. Note that address lifetime refreshes (every
    /// IPv6 router advertisement) do count: the caller re-detects and
    /// compares the [`crate::addresses::AddressSet`], which stays the same.
    pub fn drain(&mut self) -> bool {
        let mut changed = false;
        for _ in 0..MAX_DRAIN_DATAGRAMS {
            match self.socket.recv(&mut self.buf) {
                Ok(got) => {
                    if !got.from_kernel {
                        continue;
                    }
                    if got.truncated {
                        changed = true;
                    }
                    let data = self.buf.get(..got.len).unwrap_or(&self.buf);
                    for msg in Messages::new(data) {
                        match msg {
                            Ok(m) if is_relevant_event(&m) => changed = true,
                            Ok(_) => {}
                            Err(Malformed) => changed = true,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::debug!("address monitor overrun: notifications were lost; re-reading addresses");
                    changed = true;
                }
                Err(e) => {
                    log::warn!("reading address changes from rtnetlink: {e}");
                    return true;
                }
            }
        }
        // More may be pending: they are read on the next call. Checking the
        // addresses now is the safe answer.
        true
    }
}

/// Whether a notification may change the published addresses.
fn is_relevant_event(msg: &NlMsg<'_>) -> bool {
    match msg.ty {
        libc::RTM_NEWADDR | libc::RTM_DELADDR => true,
        libc::RTM_NEWROUTE | libc::RTM_DELROUTE => match parse_route(msg.payload) {
            Some(r) => r.dst_len == 0 && r.table == u32::from(libc::RT_TABLE_MAIN),
            // Not a unicast IPv4/IPv6 route, or unreadable: a route we do not
            // use unless its header is cut short.
            None => msg.payload.len() < RTMSG_LEN,
        },
        t if i32::from(t) == libc::NLMSG_OVERRUN => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Socket

/// A bound `NETLINK_ROUTE` socket (non-blocking, close-on-exec).
#[derive(Debug)]
struct Socket {
    fd: OwnedFd,
    /// The port id the kernel assigned; replies to our requests carry it.
    port: u32,
}

/// What one recv brought.
struct Received {
    /// Bytes in the buffer.
    len: usize,
    /// The datagram was longer than the buffer.
    truncated: bool,
    /// The sender is the kernel (port id 0).
    from_kernel: bool,
}

impl Socket {
    fn open(groups: u32) -> io::Result<Socket> {
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut addr = sockaddr_nl(0);
        addr.nl_groups = groups;
        let len = sockaddr_nl_len();
        // SAFETY: `addr` is a valid `sockaddr_nl` of `len` bytes, read only
        // during the call.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }

        let mut bound = sockaddr_nl(0);
        let mut bound_len = len;
        // SAFETY: `bound` is a writable `sockaddr_nl` and `bound_len` says its
        // size; getsockname(2) writes at most that many bytes.
        let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut bound).cast(), &mut bound_len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, port: bound.nl_pid })
    }

    /// Sends one request to the kernel.
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let kernel = sockaddr_nl(0);
        // SAFETY: `msg` is valid for `msg.len()` bytes and `kernel` is a valid
        // `sockaddr_nl`; both are only read during the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const kernel).cast(),
                sockaddr_nl_len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if usize::try_from(n).ok() != Some(msg.len()) {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short netlink send"));
        }
        Ok(())
    }

    /// Receives one datagram without blocking.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut from = sockaddr_nl(u32::MAX);
        let mut from_len = sockaddr_nl_len();
        // SAFETY: `buf` is writable for `buf.len()` bytes and `from` is a
        // writable `sockaddr_nl` of `from_len` bytes; recvfrom(2) writes
        // within those bounds only. With MSG_TRUNC the return value may
        // exceed `buf.len()`, but no more than `buf.len()` bytes are written.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let total = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Received {
            len: total.min(buf.len()),
            truncated: total > buf.len(),
            from_kernel: from.nl_pid == 0 && i32::from(from.nl_family) == libc::AF_NETLINK,
        })
    }
}

fn sockaddr_nl(pid: u32) -> libc::sockaddr_nl {
    // SAFETY: `sockaddr_nl` is plain old data (integers and padding) for
    // which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = pid;
    addr
}

fn sockaddr_nl_len() -> libc::socklen_t {
    // 12 bytes on every Linux.
    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t
}

// ---------------------------------------------------------------------------
// Dumps

/// Runs `requests` as dumps on one socket and returns what `parse` makes of
/// each message of type `want`. `doing` names the operation in errors.
fn dump<T>(
    doing: &str,
    requests: &[(u16, &[u8])],
    want: u16,
    mut parse: impl FnMut(&[u8]) -> Option<T>,
) -> Result<Vec<T>> {
    let err = |e: io::Error| Error::io(doing, "rtnetlink", e);
    let socket = Socket::open(0).map_err(err)?;
    let mut buf = vec![0u8; DUMP_BUFFER];
    let deadline = Instant::now() + DUMP_TIMEOUT;
    let mut seq: u32 = 0;
    let mut out = Vec::new();
    for attempt in 1..=DUMP_ATTEMPTS {
        out.clear();
        let mut interrupted = false;
        for &(ty, body) in requests {
            seq = seq.wrapping_add(1);
            socket.send(&dump_request(ty, seq, body)).map_err(err)?;
            interrupted |= receive_dump(&socket, seq, deadline, &mut buf, |ty, payload| {
                if ty == want {
                    if let Some(item) = parse(payload) {
                        out.push(item);
                    }
                }
            })
            .map_err(err)?;
        }
        if !interrupted {
            break;
        }
        log::debug!("{doing} rtnetlink: dump interrupted by a concurrent change (attempt {attempt})");
    }
    Ok(out)
}

/// A dump request: a netlink header with `NLM_F_REQUEST | NLM_F_DUMP`
/// followed by `body` (padded to 4 bytes).
fn dump_request(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + align4(body.len());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut msg = Vec::with_capacity(len);
    // Request bodies are a few bytes: the length always fits.
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    msg.resize(len, 0);
    msg
}

/// Reads the answer to dump `seq` until `NLMSG_DONE`, handing every data
/// message to `each`. Returns whether the kernel flagged the dump as
/// interrupted (`NLM_F_DUMP_INTR`).
fn receive_dump(
    socket: &Socket,
    seq: u32,
    deadline: Instant,
    buf: &mut [u8],
    mut each: impl FnMut(u16, &[u8]),
) -> io::Result<bool> {
    let mut total = 0usize;
    let mut interrupted = false;
    loop {
        let got = match socket.recv(buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no complete answer within {}s", DUMP_TIMEOUT.as_secs()),
                    ));
                }
                crate::wakeup::wait_readable(&[socket.fd.as_raw_fd()], left)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !got.from_kernel {
            continue;
        }
        total = total.saturating_add(got.len);
        if total > MAX_DUMP_BYTES {
            return Err(invalid(format!("answer larger than {MAX_DUMP_BYTES} bytes")));
        }
        if got.truncated {
            return Err(invalid(format!("a message larger than {} bytes", buf.len())));
        }
        let data = buf.get(..got.len).unwrap_or_default();
        match dump_step(data, socket.port, seq, &mut each)? {
            Step::More { interrupted: i } => interrupted |= i,
            Step::Done { interrupted: i } => return Ok(interrupted | i),
        }
    }
}

/// Where a dump stands after one datagram.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// More datagrams follow.
    More { interrupted: bool },
    /// `NLMSG_DONE` was seen.
    Done { interrupted: bool },
}

/// Handles one datagram of a dump answer: messages that do not answer
/// request `seq` from port `port` are skipped (left-overs of an earlier
/// request); data messages go to `each`.
fn dump_step(data: &[u8], port: u32, seq: u32, each: &mut impl FnMut(u16, &[u8])) -> io::Result<Step> {
    let mut interrupted = false;
    for msg in Messages::new(data) {
        let msg = msg.map_err(|Malformed| invalid("malformed message".to_string()))?;
        if msg.seq != seq || msg.pid != port {
            continue;
        }
        if msg.flags & libc::NLM_F_DUMP_INTR as u16 != 0 {
            interrupted = true;
        }
        match i32::from(msg.ty) {
            libc::NLMSG_NOOP => {}
            libc::NLMSG_DONE => {
                // Since Linux 4.x, DONE carries the dump's error code.
                if let Some(code) = i32_at(msg.payload, 0).filter(|&c| c < 0) {
                    return Err(os_error(code));
                }
                return Ok(Step::Done { interrupted });
            }
            libc::NLMSG_ERROR => match i32_at(msg.payload, 0) {
                Some(0) => {} // an acknowledgement: not asked for, harmless
                Some(code) => return Err(os_error(code)),
                None => return Err(invalid("truncated error message".to_string())),
            },
            libc::NLMSG_OVERRUN => return Err(invalid("the kernel reported an overrun".to_string())),
            _ => each(msg.ty, msg.payload),
        }
    }
    Ok(Step::More { interrupted })
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The OS error for a netlink error code (a negative errno).
fn os_error(code: i32) -> io::Error {
    match code.checked_neg() {
        Some(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
        _ => invalid(format!("error code {code}")),
    }
}

// ---------------------------------------------------------------------------
// Parsing

/// A message that does not fit the bytes it came in.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

/// One netlink message.
#[derive(Debug, PartialEq, Eq)]
struct NlMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    payload: &'a [u8],
}

/// The messages of one datagram. Yields `Err(Malformed)` once and stops when
/// a header's length does not fit.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(data: &'a [u8]) -> Messages<'a> {
        Messages { rest: data }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NlMsg<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let len = u32_at(rest, 0).and_then(|l| usize::try_from(l).ok());
        let msg = match len {
            Some(len) if (NLMSG_HDRLEN..=rest.len()).contains(&len) => NlMsg {
                ty: u16_at(rest, 4)?,
                flags: u16_at(rest, 6)?,
                seq: u32_at(rest, 8)?,
                pid: u32_at(rest, 12)?,
                payload: rest.get(NLMSG_HDRLEN..len)?,
            },
            _ => return Some(Err(Malformed)),
        };
        self.rest = rest.get(align4(msg.payload.len() + NLMSG_HDRLEN)..).unwrap_or_default();
        Some(Ok(msg))
    }
}

/// The attributes (`struct rtattr`) in `data`: (type, value) pairs. Stops
/// quietly at an attribute whose length does not fit.
struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = std::mem::take(&mut self.rest);
        let len = usize::from(u16_at(rest, 0)?);
        let ty = u16_at(rest, 2)? & NLA_TYPE_MASK;
        if len < RTA_HDRLEN {
            return None;
        }
        let value = rest.get(RTA_HDRLEN..len)?;
        self.rest = rest.get(align4(len)..).unwrap_or_default();
        Some((ty, value))
    }
}

fn attrs(data: &[u8]) -> Attrs<'_> {
    Attrs { rest: data }
}

/// An `RTM_NEWADDR` payload as an [`IfAddr`]; `None` for other families and
/// for payloads without a well-formed address.
fn parse_ifaddr(payload: &[u8]) -> Option<IfAddr> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    let family = Family::from_af(header[0])?;
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(header[2]);
    for (ty, value) in attrs(payload.get(IFADDRMSG_LEN..)?) {
        match ty {
            libc::IFA_LOCAL => local = ip_from(family, value),
            libc::IFA_ADDRESS => address = ip_from(family, value),
            libc::IFA_FLAGS => flags = u32_at(value, 0).unwrap_or(flags),
            _ => {}
        }
    }
    Some(IfAddr {
        index: u32_at(header, 4)?,
        family,
        addr: local.or(address)?,
        prefix_len: header[1],
        scope: header[3],
        flags,
    })
}

/// An `RTM_NEWROUTE` payload as a [`Route`]; `None` for other families,
/// non-unicast routes and cached clones.
fn parse_route(payload: &[u8]) -> Option<Route> {
    let header = payload.get(..RTMSG_LEN)?;
    let family = Family::from_af(header[0])?;
    if header[7] != libc::RTN_UNICAST || u32_at(header, 8)? & libc::RTM_F_CLONED != 0 {
        return None;
    }
    let mut route = Route {
        family,
        dst_len: header[1],
        table: u32::from(header[4]),
        oif: None,
        prefsrc: None,
        gateway: None,
        priority: 0,
    };
    let mut first_hop = None;
    for (ty, value) in attrs(payload.get(RTMSG_LEN..)?) {
        match ty {
            libc::RTA_TABLE => route.table = u32_at(value, 0).unwrap_or(route.table),
            libc::RTA_OIF => route.oif = u32_at(value, 0),
            libc::RTA_PREFSRC => route.prefsrc = ip_from(family, value),
            libc::RTA_GATEWAY => route.gateway = ip_from(family, value),
            libc::RTA_PRIORITY => route.priority = u32_at(value, 0).unwrap_or(0),
            // The first `struct rtnexthop`'s interface index.
            libc::RTA_MULTIPATH if value.len() >= RTNEXTHOP_LEN => first_hop = u32_at(value, 4),
            _ => {}
        }
    }
    route.oif = route.oif.or(first_hop).filter(|&i| i != 0);
    Some(route)
}

/// An address of `family` from its network-order bytes.
fn ip_from(family: Family, value: &[u8]) -> Option<IpAddr> {
    match family {
        Family::V4 => Some(Ipv4Addr::from(<[u8; 4]>::try_from(value.get(..4)?).ok()?).into()),
        Family::V6 => Some(Ipv6Addr::from(<[u8; 16]>::try_from(value.get(..16)?).ok()?).into()),
    }
}

fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    let bytes = data.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn i32_at(data: &[u8], offset: usize) -> Option<i32> {
    u32_at(data, offset).map(|v| v as i32)
}

/// `NLMSG_ALIGN` / `RTA_ALIGN`: rounds up to a multiple of 4.
fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- builders for hand-made kernel messages ---

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDRLEN + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(ty: u16, flags: u16, seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&pid.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn ifaddrmsg(family: Family, prefix: u8, flags: u8, scope: u8, index: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![family.af(), prefix, flags, scope];
        p.extend_from_slice(&index.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    fn rtmsg(family: Family, dst_len: u8, table: u8, rtype: u8, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![family.af(), dst_len, 0, 0, table, 4, 0, rtype];
        p.extend_from_slice(&flags.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    fn v6(s: &str) -> Vec<u8> {
        s.parse::<Ipv6Addr>().unwrap().octets().to_vec()
    }

    fn v4(s: &str) -> Vec<u8> {
        s.parse::<Ipv4Addr>().unwrap().octets().to_vec()
    }

    // --- messages and attributes ---

    #[test]
    fn splits_messages_and_skips_padding() {
        let mut data = message(libc::RTM_NEWADDR, 2, 7, 9, &[1, 2, 3]);
        data.extend(message(libc::NLMSG_DONE as u16, 2, 7, 9, &0i32.to_ne_bytes()));
        let msgs: Vec<_> = Messages::new(&data).collect();
        assert_eq!(msgs.len(), 2);
        let first = msgs[0].as_ref().unwrap();
        assert_eq!(
            (first.ty, first.flags, first.seq, first.pid),
            (libc::RTM_NEWADDR, 2, 7, 9)
        );
        assert_eq!(first.payload, &[1, 2, 3]);
        assert_eq!(msgs[1].as_ref().unwrap().ty, libc::NLMSG_DONE as u16);
    }

    #[test]
    fn bad_message_lengths_are_malformed_not_panics() {
        let good = message(libc::RTM_NEWADDR, 0, 1, 1, &[0; 8]);
        // Length larger than the data.
        let mut long = good.clone();
        long[..4].copy_from_slice(&1000u32.to_ne_bytes());
        // Length smaller than a header.
        let mut short = good.clone();
        short[..4].copy_from_slice(&3u32.to_ne_bytes());
        // Length u32::MAX.
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        for bad in [long, short, huge, good[..10].to_vec(), vec![0xff; 3]] {
            let msgs: Vec<_> = Messages::new(&bad).collect();
            assert_eq!(msgs, vec![Err(Malformed)], "{bad:?}");
        }
        // A good message followed by garbage: the good one, then the error.
        let mut mixed = good.clone();
        mixed.extend_from_slice(&[9, 9, 9, 9, 9]);
        let msgs: Vec<_> = Messages::new(&mixed).collect();
        assert!(msgs[0].is_ok());
        assert_eq!(msgs[1], Err(Malformed));
        assert_eq!(msgs.len(), 2);
        // A last message whose length is not a multiple of 4 and has no
        // padding after it is fine.
        let odd = message(libc::RTM_NEWADDR, 0, 1, 1, &[1, 2, 3]);
        let msgs: Vec<_> = Messages::new(&odd[..NLMSG_HDRLEN + 3]).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].as_ref().unwrap().payload, &[1, 2, 3]);
    }

    #[test]
    fn attributes_stop_at_garbage() {
        let mut data = attr(1, &[1, 2, 3, 4, 5]);
        data.extend(attr(2 | 0x8000, &[6]));
        let got: Vec<_> = attrs(&data).collect();
        assert_eq!(got, vec![(1, &[1, 2, 3, 4, 5][..]), (2, &[6][..])]);

        let mut bad_len = attr(1, &[1, 2, 3, 4]);
        bad_len[..2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(attrs(&bad_len).count(), 0);
        let mut zero_len = attr(1, &[1, 2, 3, 4]);
        zero_len[..2].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(attrs(&zero_len).count(), 0);
        assert_eq!(attrs(&[4, 0]).count(), 0);
        assert_eq!(attrs(&[]).count(), 0);
    }

    // --- addresses ---

    #[test]
    fn parses_an_ipv6_address_with_extended_flags() {
        let p = ifaddrmsg(
            Family::V6,
            64,
            0x01,
            0,
            3,
            &[
                attr(libc::IFA_ADDRESS, &v6("2001:db8::5")),
                attr(libc::IFA_FLAGS, &0x801u32.to_ne_bytes()),
            ],
        );
        let a = parse_ifaddr(&p).unwrap();
        assert_eq!(
            a,
            IfAddr {
                index: 3,
                family: Family::V6,
                addr: "2001:db8::5".parse().unwrap(),
                prefix_len: 64,
                scope: 0,
                flags: 0x801,
            }
        );
    }

    #[test]
    fn ipv4_prefers_the_local_address_over_the_peer() {
        let p = ifaddrmsg(
            Family::V4,
            32,
            0x80,
            0,
            7,
            &[
                attr(libc::IFA_ADDRESS, &v4("10.0.0.2")),
                attr(libc::IFA_LOCAL, &v4("10.0.0.1")),
            ],
        );
        let a = parse_ifaddr(&p).unwrap();
        assert_eq!(a.addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.flags, 0x80);
        assert_eq!(a.index, 7);
    }

    #[test]
    fn unusable_addresses_are_skipped() {
        // Wrong family.
        let mut p = ifaddrmsg(Family::V4, 24, 0, 0, 1, &[attr(libc::IFA_LOCAL, &v4("10.0.0.1"))]);
        p[0] = libc::AF_PACKET as u8;
        assert_eq!(parse_ifaddr(&p), None);
        // IPv6 family with a 4-byte address.
        let p = ifaddrmsg(Family::V6, 64, 0, 0, 1, &[attr(libc::IFA_ADDRESS, &v4("10.0.0.1"))]);
        assert_eq!(parse_ifaddr(&p), None);
        // No address at all.
        let p = ifaddrmsg(Family::V4, 24, 0, 0, 1, &[]);
        assert_eq!(parse_ifaddr(&p), None);
        // Short IFA_FLAGS keeps the header flags.
        let p = ifaddrmsg(
            Family::V4,
            24,
            0x80,
            0,
            1,
            &[attr(libc::IFA_LOCAL, &v4("10.0.0.1")), attr(libc::IFA_FLAGS, &[1])],
        );
        assert_eq!(parse_ifaddr(&p).unwrap().flags, 0x80);
    }

    #[test]
    fn truncated_payloads_never_panic() {
        let addr = ifaddrmsg(
            Family::V6,
            64,
            0,
            0,
            2,
            &[
                attr(libc::IFA_ADDRESS, &v6("fd00::1")),
                attr(libc::IFA_FLAGS, &0u32.to_ne_bytes()),
            ],
        );
        let route = rtmsg(
            Family::V6,
            0,
            254,
            libc::RTN_UNICAST,
            0,
            &[
                attr(libc::RTA_OIF, &2u32.to_ne_bytes()),
                attr(libc::RTA_GATEWAY, &v6("fe80::1")),
                attr(libc::RTA_MULTIPATH, &[16, 0, 0, 0, 5, 0, 0, 0, 1, 2]),
            ],
        );
        for data in [&addr, &route] {
            for cut in 0..=data.len() {
                let _ = parse_ifaddr(&data[..cut]);
                let _ = parse_route(&data[..cut]);
                let _: Vec<_> = Messages::new(&data[..cut]).collect();
            }
        }
        // Pseudo-random garbage of many lengths.
        let mut x: u32 = 0x1234_5678;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_ifaddr(&bytes);
            let _ = parse_route(&bytes);
            for m in Messages::new(&bytes).flatten() {
                let _ = is_relevant_event(&m);
            }
            let _ = dump_step(&bytes, 0, 0, &mut |_, _| {});
        }
    }

    // --- routes ---

    #[test]
    fn parses_a_default_route() {
        let p = rtmsg(
            Family::V4,
            0,
            254,
            libc::RTN_UNICAST,
            0,
            &[
                attr(libc::RTA_TABLE, &254u32.to_ne_bytes()),
                attr(libc::RTA_PRIORITY, &100u32.to_ne_bytes()),
                attr(libc::RTA_PREFSRC, &v4("192.168.1.10")),
                attr(libc::RTA_GATEWAY, &v4("192.168.1.1")),
                attr(libc::RTA_OIF, &2u32.to_ne_bytes()),
            ],
        );
        assert_eq!(
            parse_route(&p).unwrap(),
            Route {
                family: Family::V4,
                dst_len: 0,
                table: 254,
                oif: Some(2),
                prefsrc: Some("192.168.1.10".parse().unwrap()),
                gateway: Some("192.168.1.1".parse().unwrap()),
                priority: 100,
            }
        );
    }

    #[test]
    fn route_table_attribute_overrides_the_header() {
        let p = rtmsg(
            Family::V6,
            0,
            252,
            libc::RTN_UNICAST,
            0,
            &[attr(libc::RTA_TABLE, &1000u32.to_ne_bytes())],
        );
        let r = parse_route(&p).unwrap();
        assert_eq!(r.table, 1000);
        assert_eq!((r.oif, r.priority), (None, 0));
    }

    #[test]
    fn multipath_route_uses_the_first_hop_interface() {
        let mut hops = Vec::new();
        for (ifindex, gw) in [(4u32, "10.0.0.1"), (5, "10.0.1.1")] {
            let gw_attr = attr(libc::RTA_GATEWAY, &v4(gw));
            hops.extend_from_slice(&((RTNEXTHOP_LEN + gw_attr.len()) as u16).to_ne_bytes());
            hops.extend_from_slice(&[0, 0]);
            hops.extend_from_slice(&ifindex.to_ne_bytes());
            hops.extend(gw_attr);
        }
        let p = rtmsg(
            Family::V4,
            0,
            254,
            libc::RTN_UNICAST,
            0,
            &[attr(libc::RTA_MULTIPATH, &hops)],
        );
        assert_eq!(parse_route(&p).unwrap().oif, Some(4));
    }

    #[test]
    fn non_unicast_and_cloned_routes_are_skipped() {
        let unreachable = rtmsg(Family::V6, 0, 254, libc::RTN_UNREACHABLE, 0, &[]);
        assert_eq!(parse_route(&unreachable), None);
        let local = rtmsg(Family::V4, 32, 255, libc::RTN_LOCAL, 0, &[]);
        assert_eq!(parse_route(&local), None);
        let cloned = rtmsg(Family::V6, 128, 254, libc::RTN_UNICAST, libc::RTM_F_CLONED, &[]);
        assert_eq!(parse_route(&cloned), None);
    }

    // --- dump bookkeeping ---

    #[test]
    fn dump_step_filters_by_seq_and_port_and_stops_at_done() {
        let mut data = message(libc::RTM_NEWADDR, 2, 5, 42, b"ours");
        data.extend(message(libc::RTM_NEWADDR, 2, 4, 42, b"old seq"));
        data.extend(message(libc::RTM_NEWADDR, 2, 5, 43, b"other port"));
        data.extend(message(libc::NLMSG_NOOP as u16, 0, 5, 42, b""));
        let mut seen = Vec::new();
        let step = dump_step(&data, 42, 5, &mut |ty, p| seen.push((ty, p.to_vec()))).unwrap();
        assert_eq!(step, Step::More { interrupted: false });
        assert_eq!(seen, vec![(libc::RTM_NEWADDR, b"ours".to_vec())]);

        let mut data = message(libc::RTM_NEWADDR, 2 | libc::NLM_F_DUMP_INTR as u16, 5, 42, b"x");
        data.extend(message(libc::NLMSG_DONE as u16, 2, 5, 42, &0i32.to_ne_bytes()));
        data.extend(message(libc::RTM_NEWADDR, 2, 5, 42, b"after done"));
        let mut seen = 0;
        let step = dump_step(&data, 42, 5, &mut |_, _| seen += 1).unwrap();
        assert_eq!(step, Step::Done { interrupted: true });
        assert_eq!(seen, 1);
    }

    #[test]
    fn dump_step_reports_errors() {
        let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        let data = message(libc::NLMSG_ERROR as u16, 0, 1, 1, &err);
        let e = dump_step(&data, 1, 1, &mut |_, _| {}).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));

        let data = message(libc::NLMSG_DONE as u16, 2, 1, 1, &(-libc::EINVAL).to_ne_bytes());
        let e = dump_step(&data, 1, 1, &mut |_, _| {}).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));

        let data = message(libc::NLMSG_ERROR as u16, 0, 1, 1, &i32::MIN.to_ne_bytes());
        assert!(dump_step(&data, 1, 1, &mut |_, _| {}).is_err());

        let data = message(libc::NLMSG_ERROR as u16, 0, 1, 1, &[1, 2]);
        assert!(dump_step(&data, 1, 1, &mut |_, _| {}).is_err());

        // DONE without a payload (older kernels) is fine.
        let data = message(libc::NLMSG_DONE as u16, 2, 1, 1, &[]);
        assert_eq!(
            dump_step(&data, 1, 1, &mut |_, _| {}).unwrap(),
            Step::Done { interrupted: false }
        );

        // Garbage is an error, not a panic.
        assert!(dump_step(&[1, 2, 3, 4, 5], 1, 1, &mut |_, _| {}).is_err());
    }

    #[test]
    fn dump_request_layout() {
        let r = dump_request(libc::RTM_GETROUTE, 9, &[10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.len(), 28);
        assert_eq!(u32_at(&r, 0), Some(28));
        assert_eq!(u16_at(&r, 4), Some(libc::RTM_GETROUTE));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(9));
        let r = dump_request(libc::RTM_GETADDR, 1, &[0; 5]);
        assert_eq!(r.len(), 24);
        assert_eq!(u32_at(&r, 0), Some(24));
    }

    #[test]
    fn monitor_relevance() {
        let ev = |ty: u16, payload: &[u8]| {
            let data = message(ty, 0, 0, 0, payload);
            let m = Messages::new(&data).next().unwrap().unwrap();
            is_relevant_event(&m)
        };
        assert!(ev(libc::RTM_NEWADDR, &[]));
        assert!(ev(libc::RTM_DELADDR, &[]));
        assert!(ev(
            libc::RTM_DELROUTE,
            &rtmsg(Family::V4, 0, 254, libc::RTN_UNICAST, 0, &[])
        ));
        assert!(!ev(
            libc::RTM_NEWROUTE,
            &rtmsg(Family::V6, 64, 254, libc::RTN_UNICAST, 0, &[])
        ));
        assert!(!ev(
            libc::RTM_NEWROUTE,
            &rtmsg(Family::V6, 0, 100, libc::RTN_UNICAST, 0, &[])
        ));
        assert!(!ev(
            libc::RTM_NEWROUTE,
            &rtmsg(Family::V6, 0, 254, libc::RTN_UNREACHABLE, 0, &[])
        ));
        assert!(ev(libc::RTM_NEWROUTE, &[1, 2]));
        assert!(ev(libc::NLMSG_OVERRUN as u16, &[]));
        assert!(!ev(libc::RTM_NEWLINK, &[]));
    }

    // --- the real kernel ---

    #[test]
    fn real_dump_finds_loopback() {
        let lo = interface_index("lo").unwrap();
        let addrs = dump_addresses().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.index == lo && a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST) && a.scope == 254),
            "{addrs:?}"
        );
        // Routes may be empty in a bare container, but the dump must work.
        let routes = dump_routes().unwrap();
        assert!(routes.iter().all(|r| r.table == 254), "{routes:?}");
    }

    #[test]
    fn unknown_interface_is_an_error() {
        let e = interface_index("no-such-if0").unwrap_err().to_string();
        assert!(e.contains("no-such-if0"), "{e}");
        assert!(interface_index("a\0b").is_err());
    }

    #[test]
    fn monitor_opens_and_drains_without_blocking() {
        let mut m = AddressMonitor::open().unwrap();
        assert!(m.fd() >= 0);
        // Whatever is pending, draining must return promptly.
        let _ = m.drain();
    }

    /// Waits up to 5 s for the monitor to become readable, then drains it.
    fn wait_and_drain(m: &mut AddressMonitor) -> bool {
        let ready = crate::wakeup::wait_readable(&[m.fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, vec![true], "no notification within 5 s");
        m.drain()
    }

    #[test]
    fn monitor_sees_changes_in_a_namespace() {
        let result = test_netns::run(|ip| {
            let mut m = AddressMonitor::open().unwrap();
            assert!(!m.drain(), "a fresh namespace has no pending events");
            ip(&["link", "set", "lo", "up"]);
            let mut got = Vec::new();
            // Bringing lo up adds 127.0.0.1 and ::1.
            got.push(wait_and_drain(&mut m));
            ip(&["addr", "add", "10.9.9.9/24", "dev", "lo"]);
            got.push(wait_and_drain(&mut m));
            assert!(!m.drain(), "drained");
            // A route that is not a default route does not count.
            ip(&["route", "add", "10.8.0.0/16", "dev", "lo"]);
            got.push(wait_and_drain(&mut m));
            ip(&["route", "add", "default", "dev", "lo"]);
            got.push(wait_and_drain(&mut m));
            ip(&["route", "del", "default", "dev", "lo"]);
            got.push(wait_and_drain(&mut m));
            ip(&["addr", "del", "10.9.9.9/24", "dev", "lo"]);
            got.push(wait_and_drain(&mut m));
            let lo = interface_index("lo").unwrap();
            let addrs = dump_addresses().unwrap();
            (got, lo, addrs)
        });
        let Some((got, lo, addrs)) = result else { return };
        assert_eq!(got, vec![true, true, false, true, true, true]);
        assert!(addrs
            .iter()
            .any(|a| a.index == lo && a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!addrs.iter().any(|a| a.addr == "10.9.9.9".parse::<IpAddr>().unwrap()));
    }
}

/// Runs test code in a private network namespace, so tests can add
/// addresses and routes without touching the machine's own.
#[cfg(test)]
pub(crate) mod test_netns {
    use std::process::Command;

    /// Runs `f` on a new thread that has moved into a fresh network
    /// namespace (unshare(2) affects only the calling thread, and `ip`
    /// started from it inherits it). `f` gets a function running `ip` with
    /// the given arguments, failing the test if it fails. Returns `None`,
    /// and the test is skipped, when not root or `ip` is missing.
    pub(crate) fn run<T: Send + 'static>(f: impl FnOnce(&dyn Fn(&[&str])) -> T + Send + 'static) -> Option<T> {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: needs root and the `ip` command");
            return None;
        }
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET moves only
            // this thread, which ends with the test.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
                return None;
            }
            let ip = |args: &[&str]| {
                let out = Command::new("ip").args(args).output().unwrap();
                assert!(
                    out.status.success(),
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            Some(f(&ip))
        });
        match thread.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
