//! The addresses request (protocol §7): parsing and the unicast rule.
//!
//! Loopback and private addresses are allowed on purpose: publishing LAN
//! addresses is the point of the zone, and tests run on loopback.

use std::net::{Ipv4Addr, Ipv6Addr};

use lancert_protocol::problem::ProblemType;
use lancert_protocol::MAX_ADDRESSES_PER_FAMILY;
use serde_json::Value;

use crate::problem::Problem;

/// The address lists of a request, deduplicated, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    /// A records.
    pub ipv4: Vec<Ipv4Addr>,
    /// AAAA records.
    pub ipv6: Vec<Ipv6Addr>,
}

fn rejected(detail: String) -> Problem {
    Problem::new(ProblemType::RejectedAddress, detail)
}

/// Parses `{"ipv4": [...], "ipv6": [...]}`; both lists are required.
pub fn parse(payload: &Value) -> Result<AddressSet, Problem> {
    let obj = payload
        .as_object()
        .ok_or_else(|| Problem::malformed("payload must be a JSON object"))?;
    let list = |field: &str| -> Result<Vec<&str>, Problem> {
        let items = obj
            .get(field)
            .and_then(Value::as_array)
            .ok_or_else(|| Problem::malformed(format!("`{field}` must be an array of strings")))?;
        if items.len() > MAX_ADDRESSES_PER_FAMILY {
            return Err(rejected(format!(
                "{} addresses in `{field}`; at most {MAX_ADDRESSES_PER_FAMILY} are allowed",
                items.len()
            )));
        }
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Problem::malformed(format!("`{field}` must be an array of strings")))
            })
            .collect()
    };
    let mut set = AddressSet::default();
    for text in list("ipv4")? {
        let addr: Ipv4Addr = text
            .parse()
            .map_err(|_| rejected(format!("{text:?} is not an IPv4 address")))?;
        check_v4(addr).map_err(|why| rejected(format!("{addr} is {why}")))?;
        if !set.ipv4.contains(&addr) {
            set.ipv4.push(addr);
        }
    }
    for text in list("ipv6")? {
        let addr: Ipv6Addr = text
            .parse()
            .map_err(|_| rejected(format!("{text:?} is not an IPv6 address")))?;
        check_v6(addr).map_err(|why| rejected(format!("{addr} is {why}")))?;
        if !set.ipv6.contains(&addr) {
            set.ipv6.push(addr);
        }
    }
    Ok(set)
}

/// Whether an IPv4 address can be a host's unicast address.
pub fn check_v4(addr: Ipv4Addr) -> Result<(), &'static str> {
    let first = addr.octets()[0];
    if addr.is_unspecified() || first == 0 {
        Err("not a host address (0.0.0.0/8)")
    } else if addr.is_multicast() {
        Err("a multicast address")
    } else if addr.is_broadcast() {
        Err("the broadcast address")
    } else if first >= 240 {
        Err("reserved (240.0.0.0/4)")
    } else {
        Ok(())
    }
}

/// Whether an IPv6 address can be a host's unicast address.
pub fn check_v6(addr: Ipv6Addr) -> Result<(), &'static str> {
    if addr.is_unspecified() {
        Err("the unspecified address")
    } else if addr.is_multicast() {
        Err("a multicast address")
    } else if addr.to_ipv4_mapped().is_some() {
        Err("an IPv4-mapped address (list it under ipv4)")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(v: Value) -> ProblemType {
        parse(&v).unwrap_err().kind
    }

    #[test]
    fn lan_loopback_and_private_addresses_are_accepted() {
        let set = parse(&json!({"ipv4": ["10.1.1.4", "127.0.0.1", "192.168.1.2", "10.1.1.4"],
                               "ipv6": ["fd00::4", "::1", "fe80::1", "2001:db8::1"]}))
        .unwrap();
        assert_eq!(set.ipv4.len(), 3, "duplicates dropped");
        assert_eq!(set.ipv4[0], Ipv4Addr::new(10, 1, 1, 4));
        assert_eq!(set.ipv6.len(), 4);
        assert_eq!(parse(&json!({"ipv4": [], "ipv6": []})).unwrap(), AddressSet::default());
    }

    #[test]
    fn non_unicast_addresses_are_rejected() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
        ] {
            assert_eq!(
                kind(json!({"ipv4": [bad], "ipv6": []})),
                ProblemType::RejectedAddress,
                "{bad}"
            );
        }
        for bad in ["::", "ff02::1", "::ffff:10.0.0.1"] {
            assert_eq!(
                kind(json!({"ipv4": [], "ipv6": [bad]})),
                ProblemType::RejectedAddress,
                "{bad}"
            );
        }
        assert_eq!(
            kind(json!({"ipv4": ["fd00::1"], "ipv6": []})),
            ProblemType::RejectedAddress
        );
        assert_eq!(
            kind(json!({"ipv4": ["10.0.0.01"], "ipv6": []})),
            ProblemType::RejectedAddress
        );
        assert_eq!(
            kind(json!({"ipv4": [], "ipv6": ["10.0.0.1"]})),
            ProblemType::RejectedAddress
        );
    }

    #[test]
    fn at_most_four_per_family() {
        let five = json!(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        assert_eq!(kind(json!({"ipv4": five, "ipv6": []})), ProblemType::RejectedAddress);
        let four = json!(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert!(parse(&json!({"ipv4": four, "ipv6": []})).is_ok());
    }

    #[test]
    fn shape_errors_are_malformed() {
        assert_eq!(kind(json!([])), ProblemType::Malformed);
        assert_eq!(kind(json!({"ipv4": []})), ProblemType::Malformed);
        assert_eq!(kind(json!({"ipv4": "10.0.0.1", "ipv6": []})), ProblemType::Malformed);
        assert_eq!(kind(json!({"ipv4": [1], "ipv6": []})), ProblemType::Malformed);
    }
}
