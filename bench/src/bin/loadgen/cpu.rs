//! CPU time and TCP counters from /proc, sampled at the start and the end of
//! the measurement window.

use crate::Res;

/// Clock ticks per second of /proc's CPU times: USER_HZ, 100 on every
/// Linux architecture this runs on.
const TICKS_PER_SEC: u64 = 100;

/// One sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// The server's user + system time, ms (0 without a server pid).
    pub server_ms: u64,
    /// This process's user + system time, ms.
    pub loadgen_ms: u64,
    /// All CPUs' busy time (not idle, not iowait), ms.
    pub busy_ms: u64,
    /// All CPUs' interrupt and softirq time, ms: mostly the loopback
    /// traffic's packet processing, charged to no process.
    pub irq_ms: u64,
    /// Netns-wide TCP counters (/proc/net/snmp, /proc/net/netstat): other
    /// processes' connections count too.
    pub tcp_active_opens: u64,
    /// Connections accepted (passive opens).
    pub tcp_passive_opens: u64,
    /// SYNs dropped because a listen queue was full.
    pub listen_overflows: u64,
    /// SYNs dropped at a listening socket for any reason.
    pub listen_drops: u64,
}

impl Sample {
    /// Takes a sample; `server_pid` is read if given.
    pub fn take(server_pid: Option<u32>) -> Res<Sample> {
        let server_ms = match server_pid {
            Some(pid) => process_cpu_ms(&format!("/proc/{pid}/stat"))?,
            None => 0,
        };
        let snmp = read("/proc/net/snmp")?;
        let netstat = read("/proc/net/netstat")?;
        let (busy_ms, irq_ms) = busy_ms()?;
        Ok(Sample {
            server_ms,
            loadgen_ms: process_cpu_ms("/proc/self/stat")?,
            busy_ms,
            irq_ms,
            tcp_active_opens: counter(&snmp, "Tcp:", "ActiveOpens")?,
            tcp_passive_opens: counter(&snmp, "Tcp:", "PassiveOpens")?,
            listen_overflows: counter(&netstat, "TcpExt:", "ListenOverflows")?,
            listen_drops: counter(&netstat, "TcpExt:", "ListenDrops")?,
        })
    }
}

fn read(path: &str) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

fn ticks_to_ms(ticks: u64) -> u64 {
    ticks * 1000 / TICKS_PER_SEC
}

/// utime + stime (fields 14 and 15 of proc_pid_stat(5)), all threads.
fn process_cpu_ms(path: &str) -> Res<u64> {
    let text = read(path)?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields proper start after its last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Res<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: field {n} is not a number"))
    };
    Ok(ticks_to_ms(field(14)? + field(15)?))
}

/// Busy time, and of it the interrupt and softirq time, of all CPUs from
/// the `cpu` line of /proc/stat.
fn busy_ms() -> Res<(u64, u64)> {
    let text = read("/proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat: no cpu line")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if v.len() < 8 {
        return Err("/proc/stat: short cpu line".into());
    }
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v[..8].iter().sum();
    Ok((ticks_to_ms(total - v[3] - v[4]), ticks_to_ms(v[5] + v[6])))
}

/// The number of CPUs of the machine (cpuN lines of /proc/stat), whatever
/// this process's affinity.
pub fn cpus() -> Res<u32> {
    let text = read("/proc/stat")?;
    let n = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "/proc/stat: no cpuN line".to_string())
}

/// A counter of /proc/net/snmp or /proc/net/netstat: a header line and a
/// value line, both starting with `prefix`.
fn counter(text: &str, prefix: &str, name: &str) -> Res<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == name) {
            return values
                .split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{prefix} {name}: not a number"));
        }
    }
    Err(format!("{prefix} {name}: not found"))
}
