//! A TCP relay that puts network faults between the agent and its server:
//! seconds of latency, a lossy link, connection resets, a connection closed
//! or gone silent in the middle of an answer.
//!
//! **Why a relay and not `tc netem`:** the kernel of this machine and of CI
//! has no `netem` qdisc (`tc qdisc add dev lo root netem …` fails with
//! "Specified qdisc kind is unknown", and there are no modules to load). So
//! the relay models the faults at the TCP stream level, in-process: it
//! accepts the agent's connection, opens one to the server, and forwards the
//! bytes both ways through a scheduler that can delay, hold back and cut
//! them. What that can and cannot model:
//!
//! - **latency**: every chunk is delivered a fixed time after it was read,
//!   per direction, order kept (a long path);
//! - **loss**: a lost segment is what TCP makes of it: the stream stalls
//!   until the retransmission arrives (after a retransmission timeout that
//!   doubles for each further loss of the same segment), and everything
//!   behind it waits (head-of-line blocking). Losses are drawn per chunk the
//!   relay reads, from a fixed seed;
//! - **resets**: `SO_LINGER` 0 and close, so the peer gets a TCP RST, at
//!   once or in the middle of the server's answer;
//! - **close / stall mid-answer**: the relay sees only TLS, not HTTP, so it
//!   cannot find the end of the headers; it counts the server's TLS records
//!   instead (their 5-byte headers are in clear text), forwards the first
//!   `records` and half of the next, then closes (FIN), resets or goes
//!   silent. HTTP-aware variants (headers sent, then the body cut or never
//!   sent) are modes of the [`EvilServer`](crate::EvilServer), which speaks
//!   HTTP itself;
//! - **not modelled**: packet reordering, duplication or corruption (TCP
//!   hides them from the application anyway, except as delay), asymmetric
//!   routes, MTU problems, SYN loss (the kernel completes the handshake with
//!   the relay's listening socket before the relay sees the connection).
//!
//! The relay listens on `127.0.0.1:PORT`, inside a [`Netns`] when given one,
//! and connects to `127.0.0.1:UPSTREAM` from there. One thread per
//! connection polls both sockets (non-blocking, 1 ms idle sleep), so a
//! connection is one owner of both sockets and a reset is a plain close.

use crate::netns::{enter_handle, Netns};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a stalled connection is held open at most: 120 s (the agent's
/// timeout must end the exchange long before).
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Connecting to the upstream server: 5 s at most.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most consecutive losses of one chunk; the retransmission timeout
/// doubles each time (TCP gives up after ~15, long after the agent does).
const MAX_LOSSES_IN_A_ROW: u32 = 6;

/// Seed of the loss draws: the same chunks are lost in every run.
const LOSS_SEED: u64 = 0x6c61_6e63_6572_7421;

/// What the relay does to the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged, at once.
    None,
    /// Deliver every byte `each_way` after it was read, in each direction.
    Latency {
        /// One-way delay.
        each_way: Duration,
    },
    /// A lossy link: each chunk (either direction) is lost with probability
    /// `percent`/100 and retransmitted after `rto`, which doubles for each
    /// further loss of the same chunk (at most `MAX_LOSSES_IN_A_ROW`);
    /// later chunks wait behind it.
    Loss {
        /// Loss probability per chunk, 0 to 100.
        percent: u32,
        /// The first retransmission timeout.
        rto: Duration,
    },
    /// Reset (RST) every connection as soon as it is accepted, before any
    /// byte is exchanged.
    ResetAtStart,
    /// Forward the server's first `records` TLS records and half of the
    /// next, then reset both connections (RST).
    ResetAfter {
        /// Complete server records forwarded before the cut.
        records: usize,
    },
    /// Forward the server's first `records` TLS records and half of the
    /// next, then close both connections (FIN, no TLS `close_notify`).
    CloseAfter {
        /// Complete server records forwarded before the cut.
        records: usize,
    },
    /// Forward the server's first `records` TLS records and half of the
    /// next, then nothing more in either direction, keeping both
    /// connections open (a peer gone silent) for up to `STALL_LIMIT`.
    StallAfter {
        /// Complete server records forwarded before the cut.
        records: usize,
    },
}

/// What the relay saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes forwarded from the agent to the server.
    pub bytes_up: u64,
    /// Bytes forwarded from the server to the agent.
    pub bytes_down: u64,
    /// Connections the fault cut (reset, closed or stalled).
    pub cuts: u64,
}

struct Shared {
    upstream_port: u16,
    fault: Mutex<Fault>,
    stats: Mutex<RelayStats>,
    transcript: Mutex<Vec<String>>,
    records: Mutex<Vec<Vec<usize>>>,
    rng: Mutex<u64>,
    started: Instant,
    stop: AtomicBool,
}

/// The relay; stops (closing every connection) on drop.
pub struct FaultyRelay {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl FaultyRelay {
    /// Listens on `127.0.0.1:port` (inside `netns` when given) and relays
    /// each connection to `127.0.0.1:upstream_port`, applying `fault`.
    /// Returns once the port is bound.
    pub fn start(netns: Option<&Netns>, port: u16, upstream_port: u16, fault: Fault) -> FaultyRelay {
        let handle = netns.map(|ns| {
            ns.open()
                .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", ns.name()))
        });
        let shared = Arc::new(Shared {
            upstream_port,
            fault: Mutex::new(fault),
            stats: Mutex::new(RelayStats::default()),
            transcript: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            rng: Mutex::new(LOSS_SEED),
            started: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            if let Some(h) = &handle {
                if let Err(e) = enter_handle(h) {
                    let _ = tx.send(Err(format!("entering the network namespace: {e}")));
                    return;
                }
            }
            match TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    accept_loop(s, l);
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("binding 127.0.0.1:{port}: {e}")));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("starting the faulty relay: {e}"),
            Err(e) => panic!("starting the faulty relay: {e}"),
        }
        FaultyRelay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes the fault for connections accepted from now on.
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *lock(&self.shared.fault)
    }

    /// What was seen so far.
    pub fn stats(&self) -> RelayStats {
        lock(&self.shared.stats).clone()
    }

    /// The lengths of the TLS records the server sent, per connection in
    /// the order accepted: for finding which record carries which answer
    /// in a run without fault (e.g. the certificate chain, the largest
    /// answer after the handshake).
    pub fn server_records(&self) -> Vec<Vec<usize>> {
        lock(&self.shared.records).clone()
    }

    /// One line per event (connection, chunk forwarded, record boundary
    /// cut, close), with milliseconds since the start: for failure messages.
    pub fn transcript(&self) -> String {
        lock(&self.shared.transcript).join("\n")
    }
}

impl Drop for FaultyRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn note(&self, line: String) {
        let ms = self.started.elapsed().as_millis();
        let mut t = lock(&self.transcript);
        // Bounded: a long test must not grow it without end.
        if t.len() < 10_000 {
            t.push(format!("+{ms}ms {line}"));
        }
    }

    /// A uniform draw in 0..100 (SplitMix64 over a shared seed).
    fn percent(&self) -> u32 {
        let mut s = lock(&self.rng);
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % 100) as u32
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut workers = Vec::new();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((sock, _)) => {
                lock(&shared.stats).connections += 1;
                let s = shared.clone();
                let id = n;
                n += 1;
                // Spawned from this thread, so inside its network namespace.
                workers.push(std::thread::spawn(move || relay_connection(s, id, sock)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Sets `SO_LINGER` to on, 0 s: closing the socket then sends a RST.
#[allow(unsafe_code)]
fn linger_zero(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a socket we own, reading a `linger` that
    // lives for the whole call; the size passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", std::io::Error::last_os_error());
}

/// What the relay does when the cut point of the server's stream is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Reset,
    Close,
    Stall,
}

/// Something to deliver to one side at a time.
enum Item {
    Data(Vec<u8>),
    /// The sending side closed its half: shut down writing on this side.
    Eof,
    /// The server's stream reached the cut point.
    Cut(Cut),
}

/// One direction: what was read and when each item is due.
struct Pipe {
    queue: VecDeque<(Instant, Item)>,
    /// The last due time handed out: nothing may overtake it (TCP keeps
    /// order).
    last_due: Instant,
    /// The reading side has ended (EOF or error).
    read_done: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            queue: VecDeque::new(),
            last_due: Instant::now(),
            read_done: false,
        }
    }

    fn push(&mut self, due: Instant, item: Item) {
        let due = due.max(self.last_due);
        self.last_due = due;
        self.queue.push_back((due, item));
    }
}

/// Follows the TLS record framing (RFC 8446 §5.1: type, version, 16-bit
/// length) of the server's stream to find the cut point.
struct Records {
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
    body_len: usize,
    done: usize,
    /// Body lengths of the complete records.
    sizes: Vec<usize>,
}

impl Records {
    fn new() -> Records {
        Records {
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            body_len: 0,
            done: 0,
            sizes: Vec::new(),
        }
    }

    fn complete(&mut self) {
        self.sizes.push(self.body_len);
        self.done += 1;
        self.header_len = 0;
    }

    /// Feeds `data`; returns the offset in it where the cut falls: half-way
    /// into the body of record number `target` (0-based), if inside `data`.
    fn feed(&mut self, data: &[u8], target: usize) -> Option<usize> {
        let mut i = 0;
        while i < data.len() {
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(data.len() - i);
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[i..i + take]);
                self.header_len += take;
                i += take;
                if self.header_len == 5 {
                    self.body_len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    self.body_left = self.body_len;
                    if self.done == target && self.body_len / 2 == 0 {
                        return Some(i);
                    }
                    if self.body_left == 0 {
                        self.complete();
                    }
                }
                continue;
            }
            let take = self.body_left.min(data.len() - i);
            if self.done == target {
                let seen = self.body_len - self.body_left;
                let half = self.body_len / 2;
                if seen + take >= half {
                    return Some(i + (half - seen));
                }
            }
            self.body_left -= take;
            i += take;
            if self.body_left == 0 {
                self.complete();
            }
        }
        None
    }
}

fn relay_connection(shared: Arc<Shared>, id: u64, agent: TcpStream) {
    let fault = *lock(&shared.fault);
    shared.note(format!("conn {id}: accepted, fault {fault:?}"));
    if fault == Fault::ResetAtStart {
        linger_zero(&agent);
        lock(&shared.stats).cuts += 1;
        shared.note(format!("conn {id}: reset at start"));
        return;
    }
    let server = match TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], shared.upstream_port)),
        UPSTREAM_CONNECT_TIMEOUT,
    ) {
        Ok(s) => s,
        Err(e) => {
            shared.note(format!("conn {id}: upstream connect failed: {e}"));
            return;
        }
    };
    for s in [&agent, &server] {
        let _ = s.set_nonblocking(true);
        let _ = s.set_nodelay(true);
    }
    let (delay, loss) = match fault {
        Fault::Latency { each_way } => (each_way, None),
        Fault::Loss { percent, rto } => (Duration::ZERO, Some((percent.min(100), rto))),
        _ => (Duration::ZERO, None),
    };
    let cut = match fault {
        Fault::ResetAfter { records } => Some((records, Cut::Reset)),
        Fault::CloseAfter { records } => Some((records, Cut::Close)),
        Fault::StallAfter { records } => Some((records, Cut::Stall)),
        _ => None,
    };
    // The delay a chunk read now suffers: latency, plus retransmissions.
    let due = |now: Instant| {
        let mut d = delay;
        if let Some((percent, rto)) = loss {
            let mut timeout = rto;
            let mut losses = 0;
            while losses < MAX_LOSSES_IN_A_ROW && shared.percent() < percent {
                d += timeout;
                timeout *= 2;
                losses += 1;
            }
        }
        now + d
    };

    let mut up = Pipe::new(); // agent → server
    let mut down = Pipe::new(); // server → agent
    let mut records = Records::new();
    let mut cut_reached = false;
    let mut buf = vec![0u8; 16 * 1024];
    let mut agent_write_shut = false;
    let mut server_write_shut = false;
    let end = |why: &str| shared.note(format!("conn {id}: {why}"));
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            end("relay stopped");
            return;
        }
        let now = Instant::now();
        let mut busy = false;

        // Read what each side sent.
        if !up.read_done {
            match (&agent).read(&mut buf) {
                Ok(0) => {
                    up.read_done = true;
                    up.push(now, Item::Eof);
                    busy = true;
                }
                Ok(n) => {
                    up.push(due(now), Item::Data(buf[..n].to_vec()));
                    busy = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    end(&format!("agent read error: {e}"));
                    return;
                }
            }
        }
        if !down.read_done && !cut_reached {
            match (&server).read(&mut buf) {
                Ok(0) => {
                    down.read_done = true;
                    down.push(now, Item::Eof);
                    busy = true;
                }
                Ok(n) => {
                    busy = true;
                    let at = due(now);
                    let target = cut.map_or(usize::MAX, |(t, _)| t);
                    let before = records.done;
                    let cut_at = records.feed(&buf[..n], target);
                    shared.note(format!(
                        "conn {id}: server sent {n} bytes, records {before}..{}",
                        records.done
                    ));
                    {
                        let mut all = lock(&shared.records);
                        let slot = usize::try_from(id).unwrap_or(usize::MAX);
                        if all.len() <= slot {
                            all.resize(slot + 1, Vec::new());
                        }
                        all[slot] = records.sizes.clone();
                    }
                    match cut.and_then(|(_, how)| cut_at.map(|off| (off, how))) {
                        Some((off, how)) => {
                            down.push(at, Item::Data(buf[..off].to_vec()));
                            down.push(at, Item::Cut(how));
                            cut_reached = true;
                        }
                        None => down.push(at, Item::Data(buf[..n].to_vec())),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    end(&format!("server read error: {e}"));
                    return;
                }
            }
        }

        // Deliver what is due.
        for (pipe, to, shut, label) in [
            (&mut up, &server, &mut server_write_shut, "agent→server"),
            (&mut down, &agent, &mut agent_write_shut, "server→agent"),
        ] {
            while let Some((at, _)) = pipe.queue.front() {
                if *at > now {
                    break;
                }
                let Some((at, item)) = pipe.queue.pop_front() else {
                    break;
                };
                match item {
                    Item::Data(mut data) => match (&*to).write(&data) {
                        Ok(n) => {
                            busy = true;
                            let mut st = lock(&shared.stats);
                            if label == "agent→server" {
                                st.bytes_up += n as u64;
                            } else {
                                st.bytes_down += n as u64;
                            }
                            drop(st);
                            shared.note(format!("conn {id}: {label} {n} bytes"));
                            if n < data.len() {
                                data.drain(..n);
                                pipe.queue.push_front((at, Item::Data(data)));
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            pipe.queue.push_front((at, Item::Data(data)));
                            break;
                        }
                        Err(e) => {
                            end(&format!("{label} write error: {e}"));
                            return;
                        }
                    },
                    Item::Eof => {
                        let _ = to.shutdown(Shutdown::Write);
                        *shut = true;
                        shared.note(format!("conn {id}: {label} end of stream"));
                    }
                    Item::Cut(how) => {
                        lock(&shared.stats).cuts += 1;
                        shared.note(format!(
                            "conn {id}: cut after {} server records and half of the next: {how:?}",
                            records.done
                        ));
                        match how {
                            Cut::Reset => {
                                linger_zero(&agent);
                                linger_zero(&server);
                            }
                            Cut::Close => {
                                let _ = agent.shutdown(Shutdown::Both);
                                let _ = server.shutdown(Shutdown::Both);
                            }
                            Cut::Stall => stall(&shared, id, &agent),
                        }
                        return;
                    }
                }
            }
        }

        // Both directions finished and delivered: done.
        if server_write_shut && agent_write_shut {
            end("closed by both sides");
            return;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Holds the connection open, forwarding nothing, until the agent closes it,
/// the relay stops, or [`STALL_LIMIT`].
fn stall(shared: &Shared, id: u64, agent: &TcpStream) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) && start.elapsed() < STALL_LIMIT {
        match (&*agent).read(&mut buf) {
            Ok(0) => {
                shared.note(format!(
                    "conn {id}: the agent closed the stalled connection after {:?}",
                    start.elapsed()
                ));
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xaa, len));
        r
    }

    #[test]
    fn records_find_the_middle_of_the_target() {
        let stream = [record(22, 10), record(23, 100), record(23, 40)].concat();
        // In one piece: record 1 starts at 15, its body at 20, half is 50.
        assert_eq!(Records::new().feed(&stream, 1), Some(70));
        assert_eq!(Records::new().feed(&stream, 0), Some(10));
        assert_eq!(Records::new().feed(&stream, 3), None);
        // Byte by byte: the same offset.
        let mut r = Records::new();
        let at = (0..stream.len()).find(|&i| r.feed(&stream[i..i + 1], 2).is_some());
        assert_eq!(at, Some(15 + 105 + 5 + 20 - 1));
    }
}
