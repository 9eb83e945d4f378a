//! Address detection: which IPv4 and IPv6 address the device publishes.
//!
//! [`detect`] reads the kernel's addresses (and, for [`Source::DefaultRoute`],
//! its routes) over rtnetlink and hands them to [`select`], which is pure and
//! holds all the rules:
//!
//! **Where addresses come from.**
//! - [`Source::DefaultRoute`]: for each family, the default route (prefix
//!   length 0, main table 254) with the lowest metric (ties: the lower output
//!   interface index). Its preferred source (`src`, `RTA_PREFSRC`) is used
//!   when that address is on the box and eligible; otherwise the eligible
//!   addresses of its output interface. The other default routes are not
//!   looked at: the device publishes what it would itself use to reach out.
//! - [`Source::Interface`]: the addresses of that interface.
//!
//! **Which addresses are eligible.** Scope universe (`RT_SCOPE_UNIVERSE`)
//! only: no link-local or host addresses. Never IPv6 temporary (privacy)
//! addresses, nor deprecated, tentative or DAD-failed ones: a name must not
//! point at an address that is about to go away or is not yet usable. IPv4
//! secondary addresses only when the interface has no primary one.
//!
//! **Exception for an explicitly configured interface.** When it has no
//! eligible universe-scope address of a family, its host-scope addresses are
//! accepted instead. This makes the loopback interface `lo` usable
//! (127.0.0.1 and ::1), which is how the tests run the agent; on a real
//! interface host-scope addresses do not occur.
//!
//! **One address per family, chosen stably.** IPv4: the route's preferred
//! source, else the numerically smallest primary address. IPv6: the route's
//! preferred source, else a global unicast address (`2000::/3`) before a
//! unique local one (`fc00::/7`) before anything else, then the numerically
//! smallest. The choice depends only on the set of eligible addresses, not on
//! the order the kernel lists them in nor on their lifetimes, so router
//! advertisements refreshing lifetimes never flip it. Callers compare
//! [`AddressSet`] values: only a changed set is a change.

use crate::error::Result;
use crate::netlink::{self, Family, IfAddr, Route};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `RT_SCOPE_UNIVERSE`: a global address.
const SCOPE_UNIVERSE: u8 = libc::RT_SCOPE_UNIVERSE;
/// `RT_SCOPE_HOST`: an address valid only inside this host (127.0.0.1, ::1).
const SCOPE_HOST: u8 = libc::RT_SCOPE_HOST;
/// The main routing table.
const TABLE_MAIN: u32 = libc::RT_TABLE_MAIN as u32;

/// IPv6 flags that make an address ineligible. `IFA_F_TEMPORARY` shares its
/// bit with `IFA_F_SECONDARY`, which means "secondary" for IPv4 and is
/// handled separately there.
const V6_EXCLUDED: u32 = libc::IFA_F_TEMPORARY | libc::IFA_F_DEPRECATED | libc::IFA_F_TENTATIVE | libc::IFA_F_DADFAILED;
/// IPv4 flags that make an address ineligible.
const V4_EXCLUDED: u32 = libc::IFA_F_DEPRECATED | libc::IFA_F_TENTATIVE | libc::IFA_F_DADFAILED;

/// The addresses the device publishes: sorted, without duplicates, and (as
/// [`select`] builds it) at most one of each family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    /// IPv4 addresses (A records).
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses (AAAA records).
    pub ipv6: Vec<Ipv6Addr>,
}

impl AddressSet {
    /// Whether there is no address at all.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_empty() && self.ipv6.is_empty()
    }

    /// The set as the protocol's JSON: `{"ipv4":["10.1.1.4"],"ipv6":["fd00::4"]}`
    /// (docs/protocol.md §7).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ipv4": self.ipv4.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ipv6": self.ipv6.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// Reads the form [`AddressSet::to_json`] writes. A missing list is
    /// empty; anything else that is not a list of addresses of the right
    /// family gives `None`. The result is sorted and deduplicated.
    pub fn from_json(v: &serde_json::Value) -> Option<AddressSet> {
        fn list<T: std::str::FromStr + Ord>(v: &serde_json::Value, key: &str) -> Option<Vec<T>> {
            let Some(items) = v.get(key) else {
                return Some(Vec::new());
            };
            let mut out = items
                .as_array()?
                .iter()
                .map(|s| s.as_str()?.parse().ok())
                .collect::<Option<Vec<T>>>()?;
            out.sort();
            out.dedup();
            Some(out)
        }
        v.as_object()?;
        Some(AddressSet {
            ipv4: list(v, "ipv4")?,
            ipv6: list(v, "ipv6")?,
        })
    }
}

impl std::fmt::Display for AddressSet {
    /// `10.1.1.4 fd00::4`, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let all = self
            .ipv4
            .iter()
            .map(|a| a.to_string())
            .chain(self.ipv6.iter().map(|a| a.to_string()));
        f.write_str(&all.collect::<Vec<_>>().join(" "))
    }
}

/// Where the published addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The interfaces of the default routes (the configuration has no
    /// `interface`).
    DefaultRoute,
    /// The named interface.
    Interface(String),
}

/// Reads the kernel's addresses (and routes, for [`Source::DefaultRoute`])
/// and applies [`select`]. An interface that does not exist is an error
/// ("looking up network interface br-lan: No such device"), so a typo in the
/// configuration is not mistaken for "no address".
pub fn detect(source: &Source, ipv4: bool, ipv6: bool) -> Result<Detected> {
    let (routes, iface_index) = match source {
        Source::DefaultRoute => (netlink::dump_routes()?, None),
        Source::Interface(name) => (Vec::new(), Some(netlink::interface_index(name)?)),
    };
    let addrs = netlink::dump_addresses()?;
    let set = select(&routes, &addrs, source, iface_index, ipv4, ipv6);
    let awaiting = awaiting_dad(&routes, &addrs, source, iface_index, ipv4, ipv6, &set);
    Ok(Detected { set, awaiting })
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The addresses to publish.
    pub set: AddressSet,
    /// A wanted family has no eligible address, but a tentative one (IPv6
    /// duplicate address detection, 1–2 s) on the interface it would come
    /// from: the set is about to change again, and publishing it now would
    /// drop that family's record for those seconds (and resolvers could
    /// cache its absence for the zone's negative TTL).
    pub awaiting: bool,
}

/// Whether `current` differs from `published` only by a family that it
/// lacks and `published` has: publishing it would only remove a record.
/// Only then does a tentative address hold the update back (see
/// [`Detected::awaiting`]), so that a detection that never ends (a link
/// without carrier) cannot hold back a change of the other family.
pub fn only_drops_a_family(published: Option<&AddressSet>, current: &AddressSet) -> bool {
    let Some(p) = published else { return false };
    let v4_dropped = !p.ipv4.is_empty() && current.ipv4.is_empty();
    let v6_dropped = !p.ipv6.is_empty() && current.ipv6.is_empty();
    (v4_dropped && p.ipv6 == current.ipv6) || (v6_dropped && p.ipv4 == current.ipv4)
}

/// Whether a wanted family missing from `set` has a tentative address on
/// the interface it would be taken from (see [`Detected::awaiting`]).
pub fn awaiting_dad(
    routes: &[Route],
    addrs: &[IfAddr],
    source: &Source,
    iface_index: Option<u32>,
    ipv4: bool,
    ipv6: bool,
    set: &AddressSet,
) -> bool {
    let missing = [
        (Family::V4, ipv4 && set.ipv4.is_empty()),
        (Family::V6, ipv6 && set.ipv6.is_empty()),
    ];
    missing.into_iter().filter(|&(_, m)| m).any(|(family, _)| {
        let index = match source {
            Source::Interface(_) => iface_index,
            Source::DefaultRoute => best_default_route(routes, family).and_then(|r| r.oif),
        };
        index.is_some_and(|index| {
            addrs.iter().any(|a| {
                a.index == index
                    && a.family == family
                    && a.flags & libc::IFA_F_TENTATIVE != 0
                    && eligible_but_for(a, SCOPE_UNIVERSE, libc::IFA_F_TENTATIVE)
            })
        })
    })
}

/// Chooses the published addresses from the kernel's routes and addresses by
/// the rules in the module documentation. `iface_index` is the index of the
/// interface named by [`Source::Interface`] (without it the set is empty);
/// `ipv4` and `ipv6` say which families are wanted.
pub fn select(
    routes: &[Route],
    addrs: &[IfAddr],
    source: &Source,
    iface_index: Option<u32>,
    ipv4: bool,
    ipv6: bool,
) -> AddressSet {
    let pick = |family| match source {
        Source::DefaultRoute => pick_by_route(routes, addrs, family),
        Source::Interface(_) => iface_index.and_then(|index| pick_on_interface(addrs, family, index, true)),
    };
    let mut set = AddressSet::default();
    if ipv4 {
        if let Some(IpAddr::V4(a)) = pick(Family::V4) {
            set.ipv4.push(a);
        }
    }
    if ipv6 {
        if let Some(IpAddr::V6(a)) = pick(Family::V6) {
            set.ipv6.push(a);
        }
    }
    set
}

/// The main table's best default route of `family`: the lowest metric,
/// ties to the lower output interface index.
fn best_default_route(routes: &[Route], family: Family) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| r.family == family && r.dst_len == 0 && r.table == TABLE_MAIN)
        .min_by_key(|r| (r.priority, r.oif.unwrap_or(u32::MAX)))
}

/// The address of `family` by the main table's best default route.
fn pick_by_route(routes: &[Route], addrs: &[IfAddr], family: Family) -> Option<IpAddr> {
    let route = best_default_route(routes, family)?;
    if let Some(src) = route.prefsrc {
        if addrs
            .iter()
            .any(|a| a.family == family && a.addr == src && eligible(a, SCOPE_UNIVERSE))
        {
            return Some(src);
        }
    }
    pick_on_interface(addrs, family, route.oif?, false)
}

/// The best eligible address of `family` on interface `index`; with
/// `host_fallback`, host-scope addresses when there is no universe-scope one.
fn pick_on_interface(addrs: &[IfAddr], family: Family, index: u32, host_fallback: bool) -> Option<IpAddr> {
    let on_iface = |scope| {
        addrs
            .iter()
            .filter(move |a| a.index == index && a.family == family && eligible(a, scope))
            .collect::<Vec<_>>()
    };
    let mut candidates = on_iface(SCOPE_UNIVERSE);
    if candidates.is_empty() && host_fallback {
        candidates = on_iface(SCOPE_HOST);
    }
    if family == Family::V4 && candidates.iter().any(|a| a.flags & libc::IFA_F_SECONDARY == 0) {
        candidates.retain(|a| a.flags & libc::IFA_F_SECONDARY == 0);
    }
    candidates
        .into_iter()
        .map(|a| a.addr)
        .min_by_key(|addr| preference(*addr))
}

/// Whether `a` may be published, given the scope wanted.
fn eligible(a: &IfAddr, scope: u8) -> bool {
    eligible_but_for(a, scope, 0)
}

/// [`eligible`], but for the flags in `ignored`: what an address will be
/// once they clear (a tentative one, once duplicate address detection
/// ends).
fn eligible_but_for(a: &IfAddr, scope: u8, ignored: u32) -> bool {
    let excluded = match a.family {
        Family::V4 => V4_EXCLUDED,
        Family::V6 => V6_EXCLUDED,
    } & !ignored;
    let family_matches = matches!(
        (a.family, a.addr),
        (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
    );
    family_matches && a.scope == scope && a.flags & excluded == 0
}

/// Sort key among eligible addresses of one family: lower is better. IPv6
/// global unicast before unique local before the rest, then numerically.
fn preference(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (0, u128::from(u32::from(a))),
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let first = a.segments()[0];
            let class = if first & 0xe000 == 0x2000 {
                0 // 2000::/3, global unicast
            } else if first & 0xfe00 == 0xfc00 {
                1 // fc00::/7, unique local
            } else {
                2
            };
            (class, bits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPORARY: u32 = libc::IFA_F_TEMPORARY;
    const SECONDARY: u32 = libc::IFA_F_SECONDARY;
    const DEPRECATED: u32 = libc::IFA_F_DEPRECATED;
    const TENTATIVE: u32 = libc::IFA_F_TENTATIVE;
    const DADFAILED: u32 = libc::IFA_F_DADFAILED;
    const PERMANENT: u32 = libc::IFA_F_PERMANENT;
    const MANAGETEMPADDR: u32 = libc::IFA_F_MANAGETEMPADDR;

    fn addr(index: u32, s: &str, scope: u8, flags: u32) -> IfAddr {
        let addr: IpAddr = s.parse().unwrap();
        let family = if addr.is_ipv4() { Family::V4 } else { Family::V6 };
        IfAddr {
            index,
            family,
            addr,
            prefix_len: if addr.is_ipv4() { 24 } else { 64 },
            scope,
            flags,
        }
    }

    fn default_route(family: Family, oif: u32, priority: u32, prefsrc: Option<&str>) -> Route {
        Route {
            family,
            dst_len: 0,
            table: 254,
            oif: Some(oif),
            prefsrc: prefsrc.map(|s| s.parse().unwrap()),
            gateway: None,
            priority,
        }
    }

    fn set(v4: &[&str], v6: &[&str]) -> AddressSet {
        AddressSet {
            ipv4: v4.iter().map(|s| s.parse().unwrap()).collect(),
            ipv6: v6.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    /// A typical router: lo (1), wan (2) with a public v4 and GUA, lan (3)
    /// with private v4, ULA, GUA, privacy and link-local addresses.
    fn typical() -> (Vec<Route>, Vec<IfAddr>) {
        let routes = vec![
            default_route(Family::V4, 2, 0, None),
            default_route(Family::V6, 2, 1024, None),
            Route {
                dst_len: 24,
                ..default_route(Family::V4, 3, 0, Some("192.168.1.1"))
            },
        ];
        let addrs = vec![
            addr(1, "127.0.0.1", 254, PERMANENT),
            addr(1, "::1", 254, PERMANENT),
            addr(2, "203.0.113.7", 0, 0),
            addr(2, "2001:db8:ffff::7", 0, MANAGETEMPADDR),
            addr(2, "fe80::7", 253, PERMANENT),
            addr(3, "192.168.1.1", 0, PERMANENT),
            addr(3, "fd12:3456::1", 0, PERMANENT),
            addr(3, "2001:db8:1::1", 0, PERMANENT),
            addr(3, "2001:db8:1::99", 0, TEMPORARY),
            addr(3, "fe80::1", 253, PERMANENT),
        ];
        (routes, addrs)
    }

    #[test]
    fn default_route_uses_its_interface() {
        let (routes, addrs) = typical();
        let got = select(&routes, &addrs, &Source::DefaultRoute, None, true, true);
        assert_eq!(got, set(&["203.0.113.7"], &["2001:db8:ffff::7"]));
    }

    #[test]
    fn interface_source() {
        let (routes, addrs) = typical();
        let lan = Source::Interface("br-lan".into());
        let got = select(&routes, &addrs, &lan, Some(3), true, true);
        assert_eq!(got, set(&["192.168.1.1"], &["2001:db8:1::1"]));
        assert_eq!(select(&routes, &addrs, &lan, None, true, true), AddressSet::default());
        assert_eq!(
            select(&routes, &addrs, &lan, Some(9), true, true),
            AddressSet::default()
        );
    }

    #[test]
    fn families_can_be_turned_off() {
        let (routes, addrs) = typical();
        let lan = Source::Interface("br-lan".into());
        assert_eq!(
            select(&routes, &addrs, &lan, Some(3), true, false),
            set(&["192.168.1.1"], &[])
        );
        assert_eq!(
            select(&routes, &addrs, &lan, Some(3), false, true),
            set(&[], &["2001:db8:1::1"])
        );
        assert!(select(&routes, &addrs, &lan, Some(3), false, false).is_empty());
    }

    #[test]
    fn ineligible_ipv6_addresses_are_never_chosen() {
        for flags in [TEMPORARY, DEPRECATED, TENTATIVE, DADFAILED, TEMPORARY | DEPRECATED] {
            let addrs = vec![
                addr(3, "2001:db8::1", 0, flags),
                addr(3, "2001:db8::2", 0, flags | PERMANENT),
            ];
            let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
            assert!(got.is_empty(), "flags {flags:#x}: {got:?}");
        }
        // With a good one present, the good one wins even if it sorts last.
        let addrs = vec![
            addr(3, "2001:db8::1", 0, TEMPORARY),
            addr(3, "2001:db8::2", 0, DEPRECATED),
            addr(3, "2001:db8::3", 0, TENTATIVE),
            addr(3, "2001:db8::4", 0, DADFAILED),
            addr(3, "2001:db8::5", 0, 0),
        ];
        let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
        assert_eq!(got, set(&[], &["2001:db8::5"]));
    }

    #[test]
    fn link_and_host_scope_are_not_published_on_a_real_interface() {
        let addrs = vec![addr(3, "fe80::1", 253, 0), addr(3, "169.254.3.3", 253, 0)];
        let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
        assert!(got.is_empty(), "{got:?}");
        // Host scope only through the configured-interface fallback, never
        // through the default route.
        let addrs = vec![addr(1, "127.0.0.1", 254, 0), addr(1, "::1", 254, 0)];
        let routes = vec![
            default_route(Family::V4, 1, 0, None),
            default_route(Family::V6, 1, 0, None),
        ];
        assert!(select(&routes, &addrs, &Source::DefaultRoute, None, true, true).is_empty());
    }

    #[test]
    fn loopback_falls_back_to_host_scope() {
        let (routes, addrs) = typical();
        let lo = Source::Interface("lo".into());
        assert_eq!(
            select(&routes, &addrs, &lo, Some(1), true, true),
            set(&["127.0.0.1"], &["::1"])
        );
        // A universe-scope address on lo wins over the host-scope ones.
        let mut addrs = addrs;
        addrs.push(addr(1, "10.9.9.9", 0, 0));
        assert_eq!(
            select(&routes, &addrs, &lo, Some(1), true, true),
            set(&["10.9.9.9"], &["::1"])
        );
    }

    #[test]
    fn ipv4_secondary_only_without_a_primary() {
        let addrs = vec![addr(3, "10.0.0.1", 0, SECONDARY), addr(3, "10.0.0.9", 0, 0)];
        let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
        assert_eq!(got, set(&["10.0.0.9"], &[]));
        let addrs = vec![addr(3, "10.0.0.5", 0, SECONDARY), addr(3, "10.0.0.3", 0, SECONDARY)];
        let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
        assert_eq!(got, set(&["10.0.0.3"], &[]));
        // The secondary bit is the temporary bit: on IPv4 it does not exclude.
        let addrs = vec![addr(3, "10.0.0.5", 0, SECONDARY)];
        let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
        assert_eq!(got, set(&["10.0.0.5"], &[]));
    }

    #[test]
    fn ipv4_deprecated_or_tentative_is_skipped() {
        let addrs = vec![
            addr(3, "10.0.0.1", 0, TENTATIVE),
            addr(3, "10.0.0.2", 0, DEPRECATED),
            addr(3, "10.0.0.3", 0, 0),
        ];
        let got = select(&[], &addrs, &Source::Interface("x".into()), Some(3), true, true);
        assert_eq!(got, set(&["10.0.0.3"], &[]));
    }

    #[test]
    fn a_tentative_address_of_a_missing_family_is_awaited() {
        let src = Source::Interface("x".into());
        let addrs = vec![addr(3, "10.0.0.3", 0, 0), addr(3, "2a00::9", 0, TENTATIVE)];
        let got = select(&[], &addrs, &src, Some(3), true, true);
        assert_eq!(got, set(&["10.0.0.3"], &[]));
        assert!(awaiting_dad(&[], &addrs, &src, Some(3), true, true, &got));
        // Not when IPv6 is not wanted, nor for another interface.
        assert!(!awaiting_dad(&[], &addrs, &src, Some(3), true, false, &got));
        assert!(!awaiting_dad(&[], &addrs, &src, Some(4), true, true, &got));
        // A failed detection is not coming, nor is a temporary address.
        for flags in [TENTATIVE | DADFAILED, TENTATIVE | TEMPORARY] {
            let addrs = vec![addr(3, "10.0.0.3", 0, 0), addr(3, "2a00::9", 0, flags)];
            assert!(
                !awaiting_dad(&[], &addrs, &src, Some(3), true, true, &got),
                "{flags:#x}"
            );
        }
        // Present in the set: nothing is awaited even if another is tentative.
        let both = vec![
            addr(3, "10.0.0.3", 0, 0),
            addr(3, "2a00::1", 0, 0),
            addr(3, "2a00::9", 0, TENTATIVE),
        ];
        let got = select(&[], &both, &src, Some(3), true, true);
        assert!(!awaiting_dad(&[], &both, &src, Some(3), true, true, &got));
    }

    #[test]
    fn only_a_dropped_family_waits() {
        let both = set(&["10.0.0.3"], &["2a00::1"]);
        assert!(only_drops_a_family(Some(&both), &set(&["10.0.0.3"], &[])));
        assert!(only_drops_a_family(Some(&both), &set(&[], &["2a00::1"])));
        assert!(
            !only_drops_a_family(Some(&both), &set(&["10.0.0.4"], &[])),
            "IPv4 changed too"
        );
        assert!(!only_drops_a_family(Some(&both), &both));
        assert!(!only_drops_a_family(None, &set(&["10.0.0.3"], &[])));
        let v4 = set(&["10.0.0.3"], &[]);
        assert!(!only_drops_a_family(Some(&v4), &set(&["10.0.0.4"], &[])));
    }

    #[test]
    fn global_unicast_beats_unique_local_beats_the_rest() {
        let addrs = vec![
            addr(3, "fc00::1", 0, 0),
            addr(3, "fd00::1", 0, 0),
            addr(3, "3fff::1", 0, 0),
            addr(3, "2a00::1", 0, 0),
            addr(3, "64:ff9b::1", 0, 0),
        ];
        let src = Source::Interface("x".into());
        assert_eq!(select(&[], &addrs, &src, Some(3), false, true), set(&[], &["2a00::1"]));
        let ula_only = vec![
            addr(3, "fd00::1", 0, 0),
            addr(3, "fc00::2", 0, 0),
            addr(3, "64:ff9b::1", 0, 0),
        ];
        assert_eq!(
            select(&[], &ula_only, &src, Some(3), false, true),
            set(&[], &["fc00::2"])
        );
        let other = vec![addr(3, "64:ff9b::2", 0, 0), addr(3, "64:ff9b::1", 0, 0)];
        assert_eq!(
            select(&[], &other, &src, Some(3), false, true),
            set(&[], &["64:ff9b::1"])
        );
    }

    #[test]
    fn prefsrc_wins_when_present_and_eligible() {
        let addrs = vec![
            addr(2, "10.0.0.1", 0, 0),
            addr(2, "10.0.0.50", 0, 0),
            addr(2, "2001:db8::1", 0, 0),
            addr(2, "2001:db8::50", 0, 0),
            addr(2, "2001:db8::60", 0, DEPRECATED),
        ];
        let routes = vec![
            default_route(Family::V4, 2, 0, Some("10.0.0.50")),
            default_route(Family::V6, 2, 0, Some("2001:db8::50")),
        ];
        let got = select(&routes, &addrs, &Source::DefaultRoute, None, true, true);
        assert_eq!(got, set(&["10.0.0.50"], &["2001:db8::50"]));

        // Not on the box, or not eligible: fall back to the oif.
        let routes = vec![
            default_route(Family::V4, 2, 0, Some("10.9.9.9")),
            default_route(Family::V6, 2, 0, Some("2001:db8::60")),
        ];
        let got = select(&routes, &addrs, &Source::DefaultRoute, None, true, true);
        assert_eq!(got, set(&["10.0.0.1"], &["2001:db8::1"]));

        // A prefsrc on another interface is still "on the box".
        let mut addrs = addrs;
        addrs.push(addr(5, "172.16.0.1", 0, 0));
        let routes = vec![default_route(Family::V4, 2, 0, Some("172.16.0.1"))];
        let got = select(&routes, &addrs, &Source::DefaultRoute, None, true, true);
        assert_eq!(got, set(&["172.16.0.1"], &[]));
    }

    #[test]
    fn lowest_metric_default_route_of_the_main_table_wins() {
        let addrs = vec![
            addr(2, "10.0.2.1", 0, 0),
            addr(3, "10.0.3.1", 0, 0),
            addr(4, "10.0.4.1", 0, 0),
        ];
        let routes = vec![
            default_route(Family::V4, 2, 20, None),
            default_route(Family::V4, 3, 10, None),
            Route {
                table: 100,
                ..default_route(Family::V4, 4, 0, None)
            },
            Route {
                dst_len: 8,
                ..default_route(Family::V4, 4, 0, None)
            },
            default_route(Family::V6, 4, 0, None),
        ];
        let got = select(&routes, &addrs, &Source::DefaultRoute, None, true, true);
        assert_eq!(got, set(&["10.0.3.1"], &[]));
        // Ties go to the lower interface index, whatever the order.
        let mut routes = vec![
            default_route(Family::V4, 3, 5, None),
            default_route(Family::V4, 2, 5, None),
        ];
        assert_eq!(
            select(&routes, &addrs, &Source::DefaultRoute, None, true, true),
            set(&["10.0.2.1"], &[])
        );
        routes.reverse();
        assert_eq!(
            select(&routes, &addrs, &Source::DefaultRoute, None, true, true),
            set(&["10.0.2.1"], &[])
        );
    }

    #[test]
    fn no_default_route_or_no_oif_gives_nothing() {
        let (_, addrs) = typical();
        assert!(select(&[], &addrs, &Source::DefaultRoute, None, true, true).is_empty());
        let routes = vec![Route {
            oif: None,
            ..default_route(Family::V4, 0, 0, None)
        }];
        assert!(select(&routes, &addrs, &Source::DefaultRoute, None, true, true).is_empty());
    }

    #[test]
    fn choice_is_stable_under_reordering_and_flag_noise() {
        let (routes, addrs) = typical();
        let expected = select(&routes, &addrs, &Source::DefaultRoute, None, true, true);
        let lan = Source::Interface("lan".into());
        let expected_lan = select(&routes, &addrs, &lan, Some(3), true, true);
        // Every rotation and the reverse of the address list.
        let mut shuffled = addrs.clone();
        for _ in 0..shuffled.len() {
            shuffled.rotate_left(1);
            assert_eq!(
                select(&routes, &shuffled, &Source::DefaultRoute, None, true, true),
                expected
            );
            assert_eq!(select(&routes, &shuffled, &lan, Some(3), true, true), expected_lan);
            let mut reversed = shuffled.clone();
            reversed.reverse();
            assert_eq!(select(&routes, &reversed, &lan, Some(3), true, true), expected_lan);
        }
        // A router advertisement adds a new privacy address and refreshes
        // lifetimes (flags like PERMANENT/NOPREFIXROUTE may differ): no change.
        let mut after_ra = addrs.clone();
        after_ra.push(addr(3, "2001:db8:1::5", 0, TEMPORARY));
        after_ra.push(addr(3, "2001:db8:1::", 0, TEMPORARY));
        for a in &mut after_ra {
            a.flags |= libc::IFA_F_NOPREFIXROUTE;
        }
        assert_eq!(select(&routes, &after_ra, &lan, Some(3), true, true), expected_lan);
        // A second, larger stable address appears: still no change.
        after_ra.push(addr(3, "2001:db8:1::2", 0, 0));
        assert_eq!(select(&routes, &after_ra, &lan, Some(3), true, true), expected_lan);
    }

    #[test]
    fn family_mismatch_is_ignored() {
        // A (malformed) IfAddr claiming V6 with a v4 address is not used.
        let mut a = addr(3, "10.0.0.1", 0, 0);
        a.family = Family::V6;
        let got = select(&[], &[a], &Source::Interface("x".into()), Some(3), true, true);
        assert!(got.is_empty());
    }

    #[test]
    fn json_round_trip() {
        let s = set(&["10.1.1.4"], &["fd00::4"]);
        let j = s.to_json();
        assert_eq!(j, serde_json::json!({"ipv4": ["10.1.1.4"], "ipv6": ["fd00::4"]}));
        assert_eq!(AddressSet::from_json(&j), Some(s));
        let empty = AddressSet::default();
        assert_eq!(empty.to_json(), serde_json::json!({"ipv4": [], "ipv6": []}));
        assert_eq!(AddressSet::from_json(&empty.to_json()), Some(empty));
    }

    #[test]
    fn from_json_normalises_and_refuses_garbage() {
        let v = serde_json::json!({"ipv4": ["10.0.0.2", "10.0.0.1", "10.0.0.2"]});
        assert_eq!(AddressSet::from_json(&v), Some(set(&["10.0.0.1", "10.0.0.2"], &[])));
        for bad in [
            serde_json::json!([]),
            serde_json::json!("10.0.0.1"),
            serde_json::json!({"ipv4": "10.0.0.1"}),
            serde_json::json!({"ipv4": [1]}),
            serde_json::json!({"ipv4": ["fd00::1"]}),
            serde_json::json!({"ipv6": ["10.0.0.1"]}),
            serde_json::json!({"ipv6": ["nonsense"]}),
        ] {
            assert_eq!(AddressSet::from_json(&bad), None, "{bad}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(AddressSet::default().to_string(), "none");
        assert_eq!(set(&["10.1.1.4"], &["fd00::4"]).to_string(), "10.1.1.4 fd00::4");
    }

    #[test]
    fn real_detection_on_loopback() {
        let got = detect(&Source::Interface("lo".into()), true, true).unwrap().set;
        assert_eq!(got.ipv4, vec![Ipv4Addr::LOCALHOST]);
        // ::1 exists unless IPv6 is disabled on this machine.
        assert!(got.ipv6.is_empty() || got.ipv6 == vec![Ipv6Addr::LOCALHOST], "{got:?}");
        assert!(detect(&Source::Interface("no-such-if0".into()), true, true).is_err());
        // The default route may or may not exist here; it must not fail.
        detect(&Source::DefaultRoute, true, true).unwrap();
    }

    /// End to end in a private network namespace: addresses and default
    /// routes set up with `ip` on lo, then detected. Skipped when not root.
    #[test]
    fn real_detection_in_a_namespace() {
        let result = netlink::test_netns::run(|ip| {
            ip(&["link", "set", "lo", "up"]);
            ip(&["addr", "add", "10.9.9.9/24", "dev", "lo"]);
            ip(&["addr", "add", "10.9.9.3/24", "dev", "lo"]); // secondary
            ip(&["route", "add", "default", "dev", "lo", "src", "10.9.9.9"]);
            ip(&["-6", "addr", "add", "fd00::9/64", "dev", "lo"]);
            ip(&["-6", "addr", "add", "2001:db8::9/64", "dev", "lo"]);
            ip(&["-6", "addr", "add", "2001:db8::1/64", "dev", "lo", "preferred_lft", "0"]); // deprecated
            ip(&["-6", "route", "add", "default", "dev", "lo"]);
            let by_route = detect(&Source::DefaultRoute, true, true).unwrap();
            let by_iface = detect(&Source::Interface("lo".into()), true, true).unwrap();
            // A new address under duplicate address detection is awaited.
            ip(&["-6", "addr", "del", "2001:db8::9/64", "dev", "lo"]);
            ip(&["-6", "addr", "del", "fd00::9/64", "dev", "lo"]);
            ip(&[
                "link",
                "add",
                "lancert-d0",
                "type",
                "veth",
                "peer",
                "name",
                "lancert-d1",
            ]);
            ip(&["link", "set", "lancert-d0", "up"]);
            ip(&["link", "set", "lancert-d1", "up"]);
            ip(&["addr", "add", "10.9.8.1/24", "dev", "lancert-d0"]);
            ip(&["-6", "addr", "add", "2001:db8:8::1/64", "dev", "lancert-d0"]);
            let tentative = detect(&Source::Interface("lancert-d0".into()), true, true).unwrap();
            (by_route, by_iface, tentative)
        });
        let Some((by_route, by_iface, tentative)) = result else {
            return;
        };
        assert_eq!(by_route.set, set(&["10.9.9.9"], &["2001:db8::9"]));
        assert_eq!(by_iface.set, set(&["10.9.9.9"], &["2001:db8::9"]));
        assert!(!by_route.awaiting && !by_iface.awaiting);
        assert_eq!(tentative.set, set(&["10.9.8.1"], &[]), "{tentative:?}");
        assert!(tentative.awaiting, "{tentative:?}");
    }
}
