//! Transactions on a real 3-replica cluster with the `redis` crate: a
//! transactional pipeline (MULTI/EXEC) applies atomically on every replica
//! and its reads see its writes; WATCH aborts EXEC when another replica's
//! client changed a watched key first; check-and-set loops from two
//! replicas lose no increment; EXECABORT and DISCARD as in Redis.

mod kv_common;

use kv_common::{Node, cluster, wait_same_position};
use std::time::Duration;

fn get(n: &Node, k: &str) -> Option<String> {
    redis::cmd("GET").arg(k).query(&mut n.conn()).unwrap()
}

#[test]
fn transactions_are_atomic_on_every_replica_and_watch_conflicts_abort() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let (mut c1, mut c2) = (nodes[0].conn(), nodes[1].conn());

    // A transactional pipeline, as redis-py's pipeline() sends by default.
    let (ok, n, v): (String, i64, String) = redis::pipe()
        .atomic()
        .set("a", 1)
        .incr("a", 2)
        .get("a")
        .query(&mut c1)
        .unwrap();
    assert_eq!((ok.as_str(), n, v.as_str()), ("OK", 3, "3"));
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    for n in &nodes {
        assert_eq!(get(n, "a").as_deref(), Some("3"));
    }

    // WATCH on replica 1; replica 2's client changes the key; EXEC aborts
    // (nil), and the other client's write stands everywhere.
    let _: () = redis::cmd("SET").arg("k").arg("v0").query(&mut c1).unwrap();
    let _: () = redis::cmd("WATCH").arg("k").query(&mut c1).unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v1").query(&mut c2).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let q: String = redis::cmd("SET").arg("k").arg("v2").query(&mut c1).unwrap();
    assert_eq!(q, "QUEUED");
    let r: Option<Vec<String>> = redis::cmd("EXEC").query(&mut c1).unwrap();
    assert_eq!(r, None, "EXEC went through although a watched key changed");
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    for n in &nodes {
        assert_eq!(get(n, "k").as_deref(), Some("v1"));
    }
    // Unchanged since WATCH: EXEC goes through.
    let _: () = redis::cmd("WATCH").arg("k").query(&mut c1).unwrap();
    let r: Vec<String> = redis::pipe()
        .atomic()
        .set("k", "v3")
        .query(&mut c1)
        .unwrap();
    assert_eq!(r, vec!["OK"]);
    assert_eq!(get(&nodes[2], "k").as_deref().unwrap_or("v3"), "v3");

    // A command the transaction refuses: EXECABORT, nothing applied.
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: String = redis::cmd("SET").arg("x").arg("1").query(&mut c1).unwrap();
    assert!(redis::cmd("NOSUCHCOMMAND").query::<()>(&mut c1).is_err());
    let e = redis::cmd("EXEC")
        .query::<Vec<String>>(&mut c1)
        .unwrap_err();
    assert_eq!(e.kind(), redis::ErrorKind::ExecAbortError, "{e}");
    // DISCARD drops what was queued.
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: String = redis::cmd("SET").arg("x").arg("2").query(&mut c1).unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut c1).unwrap();
    assert_eq!(get(&nodes[0], "x"), None);

    // Check-and-set from clients on two replicas: no increment is lost.
    let threads: Vec<_> = [nodes[0].resp, nodes[2].resp]
        .into_iter()
        .map(|addr| {
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
                let mut c = client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .unwrap();
                for _ in 0..50 {
                    let _: () = redis::transaction(&mut c, &["counter"], |con, pipe| {
                        let v: Option<i64> = redis::cmd("GET").arg("counter").query(con)?;
                        pipe.set("counter", v.unwrap_or(0) + 1).ignore().query(con)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    for n in &nodes {
        assert_eq!(get(n, "counter").as_deref(), Some("100"), "node {}", n.id);
    }
    let d = nodes[0].digest();
    assert!(nodes.iter().all(|n| n.digest() == d));
}
