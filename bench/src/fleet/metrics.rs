//! What the simulation counts: requests per minute at the server, failed
//! connection attempts while it is down, address publication delays, when
//! devices are current again after a disruption, and how close any
//! certificate came to its expiry.

use super::scenario::{DAY, MINUTE, WARM_UP};

/// Counters of one run.
pub struct Metrics {
    /// Requests that reached the server, per minute from the end of warm-up.
    pub requests: Vec<u32>,
    /// Connection attempts while the server was down, per minute.
    pub refused: Vec<u32>,
    /// From an address change to the update reaching the server (ms).
    pub publish_delays: Vec<u64>,
    /// Per device: when it was last made current after the disruption
    /// (failures cleared, changed address published, first full check
    /// after boot), if it had to be.
    pub current_again: Vec<Option<u64>>,
    /// Per device: the least validity left on its certificate at any
    /// renewal or at the end (seconds).
    pub least_left: Vec<i64>,
    /// Orders the server received.
    pub orders: usize,
}

impl Metrics {
    /// Empty counters for `devices` over `days` measured days.
    pub fn new(devices: usize, days: u64) -> Metrics {
        let minutes = usize::try_from(days * DAY / MINUTE).unwrap_or(0);
        Metrics {
            requests: vec![0; minutes],
            refused: vec![0; minutes],
            publish_delays: Vec::new(),
            current_again: vec![None; devices],
            least_left: vec![i64::MAX; devices],
            orders: 0,
        }
    }

    fn minute(&self, now: u64) -> Option<usize> {
        let m = usize::try_from(now.checked_sub(WARM_UP)? / MINUTE).ok()?;
        (m < self.requests.len()).then_some(m)
    }

    /// `n` requests reached the server at `now`.
    pub fn requests(&mut self, now: u64, n: u32) {
        if let Some(m) = self.minute(now) {
            self.requests[m] += n;
        }
    }

    /// A connection attempt found the server down at `now`.
    pub fn refused(&mut self, now: u64) {
        if let Some(m) = self.minute(now) {
            self.refused[m] += 1;
        }
    }
}

/// Summary statistics of a per-minute series.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Mean requests per minute.
    pub mean: f64,
    /// 99th percentile.
    pub p99: u32,
    /// Highest minute.
    pub peak: u32,
    /// When the peak was (minutes from the end of warm-up).
    pub peak_minute: usize,
}

/// Mean, p99 and peak of `series`.
pub fn rates(series: &[u32]) -> Rates {
    let n = series.len().max(1);
    let mean = series.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let mut sorted = series.to_vec();
    sorted.sort_unstable();
    // Nearest rank: the smallest value with at least 99 % at or below it.
    let p99 = sorted.get((n * 99).div_ceil(100) - 1).copied().unwrap_or(0);
    let (peak_minute, peak) = series
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|&(i, v)| (v, std::cmp::Reverse(i)))
        .unwrap_or((0, 0));
    Rates {
        mean,
        p99,
        peak,
        peak_minute,
    }
}

/// The `q` quantile (0..=1) of `values` (sorted in place); 0 if empty.
pub fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quantiles() {
        let mut s = vec![1u32; 100];
        s[42] = 11;
        let r = rates(&s);
        assert_eq!((r.peak, r.peak_minute, r.p99), (11, 42, 1));
        assert!((r.mean - 1.1).abs() < 1e-9);
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&mut v, 0.5), 51);
        assert_eq!(quantile(&mut v, 1.0), 100);
        assert_eq!(quantile(&mut [], 0.5), 0);
    }

    #[test]
    fn warm_up_is_not_counted() {
        let mut m = Metrics::new(1, 1);
        m.requests(WARM_UP - 1, 5);
        m.requests(WARM_UP, 2);
        m.requests(WARM_UP + DAY, 7);
        assert_eq!(m.requests.iter().sum::<u32>(), 2);
    }
}
