//! DNS queries the way an operator makes them: `dig` (Debian's
//! bind9-dnsutils) against one server, without recursion.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Where `dig` lives.
pub const DIG: &str = "/usr/bin/dig";

/// The values `server` answers for `name`/`rtype` (`dig +short`), TXT
/// values without their quotes. Panics if dig fails to run or times out.
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let out = crate::run(
        Path::new(DIG),
        &[
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+short",
            "+norecurse",
            "+time=2",
            "+tries=2",
            name,
            rtype,
        ],
        Duration::from_secs(15),
    );
    assert_eq!(out.code, Some(0), "dig {name} {rtype} @{server} failed\n{out}");
    out.stdout
        .lines()
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}
