//! The server's RFC 2136 backend against a real BIND9: records it publishes
//! are what BIND serves, changes replace the old records, and a wrong key,
//! an unknown key or a dead server give errors that say so and leave the
//! server's own record of the zone unchanged.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use lancert_server::config::TsigKey;
use lancert_server::dns::rfc2136::Rfc2136Zone;
use lancert_server::dns::store::SqliteZone;
use lancert_server::dns::{DnsBackend, DnsError, Record};
use lancert_server::store::Store;
use lancert_tests::{Bind, TestEnv};

const ZONE: &str = "d.example.test";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The key BIND has, with `change` applied.
fn key(bind: &Bind, change: impl FnOnce(&mut TsigKey)) -> TsigKey {
    let mut key = TsigKey {
        name: bind.key_name().to_string(),
        algorithm: bind.key_algorithm().to_string(),
        secret: bind.key_secret().to_vec(),
    };
    change(&mut key);
    key
}

fn backend(server: SocketAddr, key: &TsigKey) -> Rfc2136Zone {
    let local = SqliteZone::new(Arc::new(Store::open_in_memory().unwrap()));
    Rfc2136Zone::new(local, server, ZONE, key, 60).unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn values(records: &[Record]) -> Vec<(&str, &str, &str)> {
    records
        .iter()
        .map(|r| (r.name.as_str(), r.rtype.as_str(), r.value.as_str()))
        .collect()
}

#[test]
fn addresses_and_txt_reach_bind_and_replace_the_old_ones() {
    let env = TestEnv::new("rfc2136-publish");
    let bind = Bind::start(&env, ZONE);
    let zone = backend(bind.addr(), &key(&bind, |_| {}));
    let host = format!("h1.{ZONE}");
    let challenge = format!("_acme-challenge.{host}");
    rt().block_on(async {
        zone.check().await.expect("check with the right key");

        let v4: [Ipv4Addr; 2] = ["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()];
        let v6: [Ipv6Addr; 1] = ["fd00::10".parse().unwrap()];
        zone.set_addresses(&host, &v4, &v6).await.unwrap();
        assert_eq!(sorted(bind.query(&host, "A")), ["192.0.2.10", "192.0.2.11"]);
        assert_eq!(bind.query(&host, "AAAA"), ["fd00::10"]);
        assert_eq!(
            values(&zone.records(Some(&host)).await.unwrap()),
            [
                (host.as_str(), "A", "192.0.2.10"),
                (host.as_str(), "A", "192.0.2.11"),
                (host.as_str(), "AAAA", "fd00::10")
            ]
        );

        // A change replaces both types in one update: the old ones are gone.
        zone.set_addresses(&host, &["192.0.2.12".parse().unwrap()], &[])
            .await
            .unwrap();
        assert_eq!(bind.query(&host, "A"), ["192.0.2.12"]);
        assert!(bind.query(&host, "AAAA").is_empty());
        assert_eq!(
            values(&zone.records(Some(&host)).await.unwrap()),
            [(host.as_str(), "A", "192.0.2.12")]
        );

        let token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0".to_string();
        zone.set_txt(&challenge, std::slice::from_ref(&token)).await.unwrap();
        assert_eq!(bind.query(&challenge, "TXT"), std::slice::from_ref(&token));
        zone.set_txt(&challenge, &[token.clone(), "second".into()])
            .await
            .unwrap();
        assert_eq!(
            sorted(bind.query(&challenge, "TXT")),
            sorted(vec![token, "second".into()])
        );
        zone.set_txt(&challenge, &[]).await.unwrap();
        assert!(bind.query(&challenge, "TXT").is_empty());
        assert!(zone.records(Some(&challenge)).await.unwrap().is_empty());

        // The addresses were not touched by the TXT changes.
        assert_eq!(bind.query(&host, "A"), ["192.0.2.12"]);
    });
    assert!(
        bind.log().contains(&format!("updating zone '{ZONE}/IN'")),
        "BIND logged the updates\n{}",
        bind.log()
    );
}

/// Asserts that `result` failed with a message containing every needle.
#[track_caller]
fn assert_fails(result: Result<(), DnsError>, needles: &[&str]) -> String {
    let e = result.expect_err("expected an error").to_string();
    for n in needles {
        assert!(e.contains(n), "expected {n:?} in: {e}");
    }
    e
}

#[test]
fn wrong_secret_is_badsig_and_changes_nothing() {
    let env = TestEnv::new("rfc2136-badsig");
    let bind = Bind::start(&env, ZONE);
    let host = format!("h2.{ZONE}");
    let challenge = format!("_acme-challenge.{host}");
    let good = backend(bind.addr(), &key(&bind, |_| {}));
    let wrong = backend(bind.addr(), &key(&bind, |k| k.secret[0] ^= 1));
    rt().block_on(async {
        let e = assert_fails(
            wrong.check().await,
            &[&format!("RFC 2136 check of zone {ZONE} at {}", bind.addr()), "BADSIG"],
        );
        println!("check with a wrong secret: {e}");

        // The right key publishes a record; the wrong one cannot touch it.
        good.set_txt(&challenge, &["kept".into()]).await.unwrap();
        let e = assert_fails(
            wrong.set_txt(&challenge, &["replaced".into()]).await,
            &[&format!("RFC 2136 update of {challenge} at {}", bind.addr()), "BADSIG"],
        );
        println!("set_txt with a wrong secret: {e}");
        assert_eq!(bind.query(&challenge, "TXT"), ["kept"]);
        assert!(
            wrong.records(None).await.unwrap().is_empty(),
            "the failed update is not recorded locally"
        );
        let e = assert_fails(
            wrong.set_addresses(&host, &["192.0.2.20".parse().unwrap()], &[]).await,
            &["BADSIG"],
        );
        println!("set_addresses with a wrong secret: {e}");
        assert!(bind.query(&host, "A").is_empty());
        assert!(wrong.records(None).await.unwrap().is_empty());
    });
}

#[test]
fn unknown_key_name_is_badkey() {
    let env = TestEnv::new("rfc2136-badkey");
    let bind = Bind::start(&env, ZONE);
    let unknown = backend(bind.addr(), &key(&bind, |k| k.name = "no-such-key".into()));
    let other_algorithm = backend(bind.addr(), &key(&bind, |k| k.algorithm = "hmac-sha512".into()));
    rt().block_on(async {
        let e = assert_fails(unknown.check().await, &["BADKEY", "does not know key no-such-key"]);
        println!("check with an unknown key name: {e}");
        let e = assert_fails(
            unknown
                .set_addresses(&format!("h3.{ZONE}"), &["192.0.2.30".parse().unwrap()], &[])
                .await,
            &["BADKEY"],
        );
        println!("set_addresses with an unknown key name: {e}");
        assert!(unknown.records(None).await.unwrap().is_empty());
        assert!(bind.query(&format!("h3.{ZONE}"), "A").is_empty());

        let e = assert_fails(
            other_algorithm.check().await,
            &["BADKEY", "uses another algorithm than hmac-sha512"],
        );
        println!("check with another algorithm: {e}");
    });
}

#[test]
fn zone_bind_is_not_primary_for_is_notauth() {
    let env = TestEnv::new("rfc2136-otherzone");
    let bind = Bind::start(&env, ZONE);
    let local = SqliteZone::new(Arc::new(Store::open_in_memory().unwrap()));
    let elsewhere = Rfc2136Zone::new(local, bind.addr(), "other.test", &key(&bind, |_| {}), 60).unwrap();
    rt().block_on(async {
        let e = elsewhere
            .check()
            .await
            .expect_err("BIND has no zone other.test")
            .to_string();
        println!("check of a zone BIND does not serve: {e}");
        assert!(e.contains("RFC 2136 check of zone other.test"), "{e}");
        // BIND 9.18 answers NOTAUTH (RFC 2136 §3.1.1: not authoritative).
        assert!(
            e.contains("NOTAUTH (the server is not authoritative for zone other.test"),
            "{e}"
        );
    });
}

#[test]
fn nothing_listening_names_the_address() {
    // A port that was free a moment ago and that nothing listens on now.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let zone = backend(
        addr,
        &TsigKey {
            name: "lancert-test".into(),
            algorithm: "hmac-sha256".into(),
            secret: vec![7; 32],
        },
    );
    rt().block_on(async {
        let e = assert_fails(zone.check().await, &[&addr.to_string(), "refused"]);
        println!("check with nothing listening: {e}");
        let host = format!("h4.{ZONE}");
        let e = assert_fails(
            zone.set_addresses(&host, &["192.0.2.40".parse().unwrap()], &[]).await,
            &[&format!("RFC 2136 update of {host} at {addr}"), "refused"],
        );
        println!("set_addresses with nothing listening: {e}");
        assert!(zone.records(None).await.unwrap().is_empty());
    });
}

#[test]
fn key_the_policy_does_not_grant_is_refused() {
    let env = TestEnv::new("rfc2136-refused");
    let bind = Bind::start(&env, ZONE);
    let ungranted = backend(bind.addr(), &key(&bind, |k| k.name = bind.ungranted_key_name().into()));
    let host = format!("h5.{ZONE}");
    rt().block_on(async {
        // An update with no changes gives update-policy nothing to refuse:
        // check() cannot find this misconfiguration, the first change does.
        ungranted
            .check()
            .await
            .expect("BIND accepts a change-less update from a known key");
        let e = assert_fails(
            ungranted
                .set_addresses(&host, &["192.0.2.50".parse().unwrap()], &[])
                .await,
            &[
                &format!("RFC 2136 update of {host} at {}: REFUSED", bind.addr()),
                "update-policy",
            ],
        );
        println!("set_addresses with a key the policy does not grant: {e}");
        assert!(bind.query(&host, "A").is_empty());
        assert!(ungranted.records(None).await.unwrap().is_empty());
    });
}
