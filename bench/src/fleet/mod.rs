//! The fleet simulation: many devices, each running the agent's own
//! scheduling code ([`device`]), against a model of the management server
//! ([`server`]), on a virtual clock with seeded randomness, through the
//! [`scenario`]s. Deterministic: the same seed gives the same figures.
//!
//! Events (a device waking, polling its order, changing address, losing
//! and regaining power) are processed in time order. Checks that would
//! send nothing are stepped through per device without the event queue
//! (they touch nothing shared), which is what makes 100,000 devices over
//! 180 days take seconds rather than hours.

pub mod device;
pub mod metrics;
pub mod scenario;
pub mod server;

use agent::renewal_window::Installed;
use agent::schedule::{Random, SeededRandom, Timetable};
use agent::state::RenewalPlan;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use device::{ari_window, certificate, wall, Counters, Device, Next, STARTUP_SPLAY};
use metrics::Metrics;
use scenario::{Scenario, BOOT_WINDOW, DAY, WARM_UP};
use server::ServerModel;

/// Knobs of a run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Devices in the fleet.
    pub devices: usize,
    /// Measured days (after a day of warm-up).
    pub days: u64,
    /// Seed of all randomness.
    pub seed: u64,
    /// The CA's time per order (ms).
    pub ca_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PowerOff,
    Boot,
    AddressChange,
    Poll,
    Wake,
}

/// A queued event: (time ms, kind, device, generation).
type Event = Reverse<(u64, Kind, u32, u32)>;

/// The counters as one device sees them.
struct Tally<'a> {
    metrics: &'a mut Metrics,
    device: usize,
    /// Recovery is recorded from this moment (the disruption's start).
    since: u64,
}

impl Counters for Tally<'_> {
    fn requests(&mut self, now: u64, n: u32) {
        self.metrics.requests(now, n);
    }
    fn refused(&mut self, now: u64) {
        self.metrics.refused(now);
    }
    fn validity_left(&mut self, left: i64) {
        let least = &mut self.metrics.least_left[self.device];
        *least = (*least).min(left);
    }
    fn published(&mut self, delay: u64) {
        self.metrics.publish_delays.push(delay);
    }
    fn current(&mut self, now: u64) {
        if now >= self.since {
            self.metrics.current_again[self.device] = Some(now);
        }
    }
}

/// A simulation run.
pub struct Simulation<'s> {
    scenario: &'s Scenario,
    devices: Vec<Device>,
    /// The next scenario event per device (ms), up to which its quiet
    /// checks may be stepped through ahead of the queue.
    next_external: Vec<u64>,
    /// When each device boots after the power cut (ms).
    boot_at: Vec<u64>,
    queue: BinaryHeap<Event>,
    server: ServerModel,
    metrics: Metrics,
    end: u64,
    since: u64,
}

impl<'s> Simulation<'s> {
    /// A mature fleet at the start of warm-up: certificates of every age
    /// (issued uniformly over the renewal period before the start), daemons
    /// starting at random moments of the first day, signs of life last
    /// given at random moments of the day before.
    pub fn new(scenario: &'s Scenario, params: Params) -> Simulation<'s> {
        let mut rng = SeededRandom(params.seed);
        let life = i64::try_from(scenario.lifetime_days * 86_400).unwrap_or(0);
        let mut devices = Vec::with_capacity(params.devices);
        for i in 0..params.devices {
            let mut own = SeededRandom(params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let age = i64::try_from(rng.below(u64::try_from(life / 3 * 2).unwrap_or(1))).unwrap_or(0);
            let cert = certificate(1, wall(0) - age, scenario.lifetime_days);
            let plan = RenewalPlan::draw(&cert.serial_hex, ari_window(&cert), &mut own);
            let boot = rng.below(DAY);
            let day_before = |r: &mut SeededRandom| Some(wall(boot) - i64::try_from(r.below(86_400)).unwrap_or(0));
            let table = Timetable::start(STARTUP_SPLAY, &mut own);
            let addresses_reported_at = day_before(&mut rng);
            let last_report_at = day_before(&mut rng);
            devices.push(Device {
                boot,
                generation: 0,
                powered: true,
                table,
                rng: own,
                next_wake: 0,
                failures: 0,
                address: 0,
                published: 0,
                changed_at: None,
                addresses_reported_at,
                report_dirty: false,
                last_error: false,
                reported_error: false,
                last_report_at,
                installed: Installed::Present {
                    cert,
                    key_matches: true,
                    fullchain_matches: true,
                },
                plan: Some(plan),
                pending: None,
                check: None,
                event_during_check: false,
                owing: false,
                needs_full_check: false,
                issued: 1,
                lifetime_days: scenario.lifetime_days,
            });
        }
        let end = WARM_UP + params.days * DAY;
        let mut sim = Simulation {
            scenario,
            next_external: vec![u64::MAX; devices.len()],
            boot_at: vec![0; devices.len()],
            devices,
            queue: BinaryHeap::new(),
            server: ServerModel::new(scenario.outage.into_iter().collect(), params.ca_ms),
            metrics: Metrics::new(params.devices, params.days),
            end,
            since: scenario.outage.map_or(u64::MAX, |o| o.0).min(
                scenario
                    .power_cut
                    .map_or(u64::MAX, |p| p.0)
                    .min(scenario.address_changes.map_or(u64::MAX, |a| a.0)),
            ),
        };
        sim.plan_events(&mut rng);
        for d in 0..sim.devices.len() {
            sim.schedule_wake(d);
        }
        sim
    }

    fn push(&mut self, at: u64, kind: Kind, device: usize) {
        if at < self.end {
            let generation = self.devices[device].generation;
            self.queue.push(Reverse((at, kind, device as u32, generation)));
        }
    }

    /// Queues the scenario's events.
    fn plan_events(&mut self, rng: &mut SeededRandom) {
        if let Some((off, on)) = self.scenario.power_cut {
            for d in 0..self.devices.len() {
                self.push(off, Kind::PowerOff, d);
                self.next_external[d] = off;
                // Queued at power-off, with the generation of the new life.
                self.boot_at[d] = on + rng.below(BOOT_WINDOW);
            }
        }
        if let Some((from, to, share)) = self.scenario.address_changes {
            for d in 0..self.devices.len() {
                if (rng.below(1_000_000) as f64) < share * 1_000_000.0 {
                    let at = from + rng.below(to - from);
                    self.push(at, Kind::AddressChange, d);
                    self.next_external[d] = self.next_external[d].min(at);
                }
            }
        }
    }

    /// Queues the device's next wake-up, stepping through the quiet checks
    /// before it (up to its next scenario event).
    fn schedule_wake(&mut self, d: usize) {
        let limit = self.next_external[d].min(self.end);
        let dev = &mut self.devices[d];
        loop {
            if let Some(until) = dev.quiet_until() {
                dev.skip_quiet_address_checks(until.min(limit));
            }
            let at = dev.wake_at();
            if at >= limit || !dev.try_quiet_check(at) {
                dev.next_wake = at;
                break;
            }
        }
        let at = self.devices[d].next_wake;
        self.push(at, Kind::Wake, d);
    }

    /// Runs to the end and returns the counters.
    pub fn run(mut self) -> Metrics {
        while let Some(Reverse((now, kind, d, generation))) = self.queue.pop() {
            let d = d as usize;
            if generation != self.devices[d].generation {
                continue;
            }
            let mut tally = Tally {
                metrics: &mut self.metrics,
                device: d,
                since: self.since,
            };
            let dev = &mut self.devices[d];
            let next = match kind {
                Kind::Wake => {
                    if !dev.powered || now != dev.next_wake || dev.check.is_some() {
                        continue;
                    }
                    dev.begin_check(now, &mut self.server, &mut tally)
                }
                Kind::Poll => dev.poll(now, &mut self.server, &mut tally),
                Kind::AddressChange => {
                    self.next_external[d] = u64::MAX;
                    dev.address += 1;
                    dev.changed_at = Some(now);
                    dev.owing = true;
                    if !dev.powered {
                        continue;
                    }
                    if dev.check.is_some() {
                        dev.event_during_check = true;
                        continue;
                    }
                    dev.table.address_event(Duration::from_millis(now - dev.boot));
                    Next::Done
                }
                Kind::PowerOff => {
                    dev.generation += 1;
                    dev.powered = false;
                    dev.check = None;
                    self.next_external[d] = u64::MAX;
                    self.push(self.boot_at[d], Kind::Boot, d);
                    continue;
                }
                Kind::Boot => {
                    dev.powered = true;
                    dev.boot = now;
                    dev.owing = true;
                    dev.needs_full_check = true;
                    dev.table = Timetable::start(STARTUP_SPLAY, &mut dev.rng);
                    Next::Done
                }
            };
            match next {
                Next::PollAt(at) => self.push(at, Kind::Poll, d),
                Next::Done => self.schedule_wake(d),
            }
        }
        let end_wall = wall(self.end);
        for (d, dev) in self.devices.iter().enumerate() {
            if let Installed::Present { cert, .. } = &dev.installed {
                let least = &mut self.metrics.least_left[d];
                *least = (*least).min(cert.not_after - end_wall);
            }
        }
        self.metrics.orders = self.server.orders();
        self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(name: &str) -> Metrics {
        let s = scenario::all().into_iter().find(|s| s.name == name).unwrap();
        let params = Params {
            devices: 300,
            days: 40,
            seed: 7,
            ca_ms: 10_000,
        };
        Simulation::new(&s, params).run()
    }

    #[test]
    fn runs_are_deterministic_and_keep_certificates_far_from_expiry() {
        let a = small("steady-45d");
        let b = small("steady-45d");
        assert_eq!(a.requests, b.requests);
        assert!(a.requests.iter().any(|&r| r > 0));
        // 300 devices renewing every 30 days over 40 days.
        assert!((300..=700).contains(&a.orders), "{}", a.orders);
        assert!(a.least_left.iter().all(|&l| l > 7 * 86_400));
    }

    #[test]
    fn an_outage_refuses_connections_and_the_fleet_recovers() {
        let m = small("outage-6h");
        assert!(m.refused.iter().sum::<u32>() > 0);
        let outage = ((scenario::EVENT_AT - WARM_UP) / scenario::MINUTE) as usize;
        assert!(m.requests[outage + 1..outage + 359].iter().all(|&r| r == 0));
        assert!(m.current_again.iter().flatten().count() > 0);
    }

    #[test]
    fn address_changes_reach_the_server_after_the_settle_time() {
        let m = small("address-day");
        assert!(m.publish_delays.len() > 50, "{}", m.publish_delays.len());
        let settle = agent::schedule::ADDRESS_SETTLE.as_millis() as u64;
        assert!(
            m.publish_delays.iter().all(|&d| d == settle),
            "{:?}",
            &m.publish_delays[..5]
        );
    }
}
