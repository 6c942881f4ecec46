//! Expiry on a real 3-replica cluster with the `redis` crate: EXPIRE and
//! its family, TTL/PTTL/EXPIRETIME, PERSIST, SETEX/PSETEX. Deadlines travel
//! in the replicated command (the issuing replica's clock), so every
//! replica holds the same deadline and, once it passes, the same data.

mod kv_common;

use kv_common::{Node, cluster, wait_same_position, wait_until};
use std::time::Duration;

fn int(n: &Node, args: &[&str]) -> i64 {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut n.conn()).unwrap()
}

#[test]
fn deadlines_are_the_same_on_every_replica_and_keys_go_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let n1 = &nodes[0];
    let mut c = n1.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    assert_eq!(int(n1, &["TTL", "k"]), -1);
    assert_eq!(int(n1, &["TTL", "missing"]), -2);
    assert_eq!(int(n1, &["EXPIRE", "missing", "10"]), 0);
    assert_eq!(int(n1, &["EXPIRE", "k", "100"]), 1);
    // NX fails (it has a deadline), XX and GT apply, LT with a later one fails.
    assert_eq!(int(n1, &["EXPIRE", "k", "200", "NX"]), 0);
    assert_eq!(int(n1, &["EXPIRE", "k", "200", "XX"]), 1);
    assert_eq!(int(n1, &["EXPIRE", "k", "300", "LT"]), 0);
    assert_eq!(int(n1, &["EXPIRE", "k", "300", "GT"]), 1);
    let ttl = int(n1, &["TTL", "k"]);
    assert!((299..=300).contains(&ttl), "{ttl}");
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    // The same absolute deadline on every replica.
    let at: Vec<i64> = nodes
        .iter()
        .map(|n| int(n, &["PEXPIRETIME", "k"]))
        .collect();
    assert!(at.iter().all(|a| *a == at[0] && *a > 0), "{at:?}");
    assert_eq!(int(n1, &["PERSIST", "k"]), 1);
    assert_eq!(int(n1, &["PERSIST", "k"]), 0);
    assert_eq!(int(n1, &["EXPIRETIME", "k"]), -1);
    // A past deadline removes the key.
    assert_eq!(int(n1, &["PEXPIREAT", "k", "1"]), 1);
    assert_eq!(int(n1, &["EXISTS", "k"]), 0);

    // SETEX / PSETEX, then the keys expire on every replica alike.
    let _: () = redis::cmd("SETEX")
        .arg("s")
        .arg("1")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("PSETEX")
        .arg("p")
        .arg("600")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let pttl = int(n1, &["PTTL", "p"]);
    assert!((0..=600).contains(&pttl), "{pttl}");
    assert!(
        redis::cmd("SETEX")
            .arg("bad")
            .arg("0")
            .arg("x")
            .query::<()>(&mut c)
            .is_err()
    );
    for n in &nodes {
        wait_until(Duration::from_secs(10), "the keys to expire", || {
            int(n, &["EXISTS", "s", "p"]) == 0
        });
    }
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    let d = n1.digest();
    assert!(nodes.iter().all(|n| n.digest() == d));
}
