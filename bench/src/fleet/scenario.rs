//! The scenarios: a mature fleet in steady state, and the same fleet
//! through a regional power cut (boot storm), a server outage and a day of
//! address changes.

/// One second, one minute, one hour, one day in milliseconds.
pub const SECOND: u64 = 1_000;
/// One minute (ms).
pub const MINUTE: u64 = 60 * SECOND;
/// One hour (ms).
pub const HOUR: u64 = 60 * MINUTE;
/// One day (ms).
pub const DAY: u64 = 24 * HOUR;

/// The first day is warm-up: every device's daemon starts at a random
/// moment in it, so phases are those of a fleet running for a long time.
/// Figures are taken from its end on.
pub const WARM_UP: u64 = DAY;
/// When the disruptive events start: 30 days into the measured period.
pub const EVENT_AT: u64 = WARM_UP + 30 * DAY;

/// What happens to the fleet.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name (file names, tables).
    pub name: &'static str,
    /// What it shows.
    pub title: &'static str,
    /// Certificate lifetime (days).
    pub lifetime_days: u64,
    /// The server is down over this period (ms).
    pub outage: Option<(u64, u64)>,
    /// Every device is off from the first moment and boots within
    /// [`BOOT_WINDOW`] after the second (ms).
    pub power_cut: Option<(u64, u64)>,
    /// This share of the fleet changes address at a uniformly random
    /// moment in the period (ms).
    pub address_changes: Option<(u64, u64, f64)>,
}

/// Every device powers on within these 60 seconds after a power cut.
pub const BOOT_WINDOW: u64 = 60 * SECOND;

impl Scenario {
    /// The moment the disruption ends (recovery is measured from it), if any.
    pub fn disruption_end(&self) -> Option<u64> {
        self.outage
            .map(|(_, end)| end)
            .or(self.power_cut.map(|(_, on)| on))
            .or(self.address_changes.map(|(start, _, _)| start))
    }
}

/// All scenarios, in report order.
pub fn all() -> Vec<Scenario> {
    let steady = |name, title, lifetime_days| Scenario {
        name,
        title,
        lifetime_days,
        outage: None,
        power_cut: None,
        address_changes: None,
    };
    vec![
        steady("steady-90d", "steady state, 90-day certificates", 90),
        steady(
            "steady-64d",
            "steady state, 64-day certificates (Let's Encrypt from 2027-02)",
            64,
        ),
        steady(
            "steady-45d",
            "steady state, 45-day certificates (Let's Encrypt from 2028-02)",
            45,
        ),
        Scenario {
            power_cut: Some((EVENT_AT, EVENT_AT + HOUR)),
            ..steady(
                "boot-storm",
                "boot storm: a 1-hour regional power cut, every device boots within 60 s",
                90,
            )
        },
        Scenario {
            outage: Some((EVENT_AT, EVENT_AT + 6 * HOUR)),
            ..steady("outage-6h", "a 6-hour server outage", 90)
        },
        Scenario {
            address_changes: Some((EVENT_AT, EVENT_AT + DAY, 1.0 / 3.0)),
            ..steady("address-day", "a day on which a third of the fleet changes address", 90)
        },
    ]
}
