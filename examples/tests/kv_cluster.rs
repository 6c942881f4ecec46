//! Replication on real processes: writes reach every replica; kill -9 of a
//! replica during writes loses no acknowledged write and leaves equal
//! digests; a joiner catches up by state transfer; a replica restarts from
//! its checkpoint; a replica cut off in a minority refuses writes.

mod kv_common;

use kv_common::{Node, cluster, spawn, wait_members, wait_same_position, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `vsync-kv status` against `node`: its success and its output.
fn status_of(node: &Node) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vsync-kv"))
        .args(["status", "--resp", &node.resp.to_string()])
        .output()
        .expect("run vsync-kv status");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn get(node: &Node, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(&mut node.conn()).unwrap()
}

#[test]
fn replication_kill9_join_and_checkpoint_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3, &[]);

    // Writes through one replica reach every replica.
    let mut c2 = nodes[1].conn();
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("r:{i}"))
            .arg(i)
            .query::<()>(&mut c2)
            .unwrap();
    }
    for n in &nodes {
        wait_until(Duration::from_secs(10), "r:99 everywhere", || {
            get(n, "r:99").as_deref() == Some("99")
        });
    }

    // A writer on node 1 records every acknowledged write; node 3 is killed
    // with SIGKILL while it runs.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let addr = nodes[0].resp;
        std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
            let mut c = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut i = 0u64;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // A failed write is simply not counted as acknowledged.
                if redis::cmd("SET")
                    .arg(format!("w:{i}"))
                    .arg(i)
                    .query::<()>(&mut c)
                    .is_ok()
                {
                    acked.store(i + 1, Ordering::Relaxed);
                    i += 1;
                }
            }
        })
    };
    wait_until(Duration::from_secs(10), "300 acknowledged writes", || {
        acked.load(Ordering::Relaxed) >= 300
    });
    nodes[2].kill9();
    let at_kill = acked.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(15), "writes after the kill", || {
        acked.load(Ordering::Relaxed) >= at_kill + 300
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = acked.load(Ordering::Relaxed);
    wait_members(&nodes[0], 2);
    wait_members(&nodes[1], 2);
    wait_same_position(&[&nodes[0], &nodes[1]]);
    for n in &nodes[..2] {
        let keys: Vec<String> = (0..total).map(|i| format!("w:{i}")).collect();
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut n.conn()).unwrap();
        for (i, v) in vals.iter().enumerate() {
            assert_eq!(
                v.as_deref(),
                Some(i.to_string().as_str()),
                "node {} lost acknowledged write w:{i}",
                n.id
            );
        }
    }
    assert_eq!(nodes[0].digest(), nodes[1].digest());

    // A new replica joins and catches up by state transfer.
    let seed = nodes[0].listen;
    let joiner = spawn(4, dir.path().join("n4"), &[seed], &[]);
    wait_members(&joiner, 3);
    wait_same_position(&[&nodes[0], &nodes[1], &joiner]);
    assert_eq!(joiner.digest(), nodes[0].digest());
    assert_eq!(
        get(&joiner, &format!("w:{}", total - 1)),
        Some((total - 1).to_string())
    );
    let m = joiner.http_get("/metrics");
    let received: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("vsync_kv_state_transfer_received_bytes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // At least the keys and values themselves (w:i = i, 5+ bytes each).
    assert!(
        received >= total as f64 * 5.0,
        "the joiner received {received} bytes for {total} keys"
    );

    // Node 2 checkpoints, leaves on SIGTERM (a view change), and restarts
    // from its checkpoint.
    let saved_at = {
        let mut c = nodes[1].conn();
        assert_eq!(redis::cmd("SAVE").query::<String>(&mut c).unwrap(), "OK");
        nodes[1]
            .info("last_checkpoint")
            .and_then(|p| p.parse::<u64>().ok())
            .expect("a checkpoint position")
    };
    assert!(saved_at > 0);
    nodes[1].signal(libc::SIGTERM);
    assert_eq!(
        nodes[1].wait_exit(Duration::from_secs(15)),
        Some(true),
        "SIGTERM: clean exit"
    );
    wait_members(&nodes[0], 2);
    redis::cmd("SET")
        .arg("after-leave")
        .arg("1")
        .query::<()>(&mut nodes[0].conn())
        .unwrap();
    let data2 = nodes[1].data.clone();
    let restarted = spawn(2, data2, &[seed], &[]);
    let loaded = restarted
        .info("last_checkpoint")
        .and_then(|p| p.parse::<u64>().ok());
    assert!(
        loaded >= Some(saved_at),
        "restart loaded checkpoint {loaded:?}, saved {saved_at}"
    );
    wait_members(&restarted, 3);
    wait_same_position(&[&nodes[0], &joiner, &restarted]);
    assert_eq!(restarted.digest(), nodes[0].digest());
    assert_eq!(get(&restarted, "after-leave").as_deref(), Some("1"));
}

#[test]
fn minority_replica_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    redis::cmd("SET")
        .arg("k")
        .arg("before")
        .query::<()>(&mut nodes[0].conn())
        .unwrap();
    // Pause the two others: node 1 is alone, a minority of its view.
    nodes[1].signal(libc::SIGSTOP);
    nodes[2].signal(libc::SIGSTOP);
    let mut refusal = String::new();
    wait_until(Duration::from_secs(30), "a MINORITY refusal", || {
        let client = redis::Client::open(format!("redis://{}/", nodes[0].resp)).unwrap();
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return false;
        };
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        match redis::cmd("SET").arg("k").arg("during").query::<()>(&mut c) {
            Err(e) if e.to_string().contains("MINORITY") => {
                refusal = e.to_string();
                true
            }
            _ => false,
        }
    });
    assert!(refusal.contains("minority"), "{refusal}");
    assert_eq!(nodes[0].info("partition").as_deref(), Some("minority"));
    // Health and readiness: up, but not ready, and saying why; `vsync-kv
    // status` exits non-zero so that a script or supervisor can tell.
    assert!(nodes[0].http_get("/health").starts_with("HTTP/1.1 200"));
    let ready = nodes[0].http_get("/ready");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("not ready: minority"), "{ready}");
    let (ok, out) = status_of(&nodes[0]);
    assert!(!ok, "status says ready: {out}");
    assert!(out.contains("not ready: minority"), "{out}");
    // A local read never shows a write that was refused: it answers the old
    // value, or an error while the replica is out of the group.
    match redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut nodes[0].conn())
    {
        Ok(v) => assert_eq!(v.as_deref(), Some("before")),
        Err(e) => assert!(
            e.to_string().contains("MINORITY") || e.to_string().contains("NOTMEMBER"),
            "{e}"
        ),
    }
    nodes[1].signal(libc::SIGCONT);
    nodes[2].signal(libc::SIGCONT);
    // The majority side goes on; node 1 comes back and serves writes again.
    wait_until(
        Duration::from_secs(40),
        "writes accepted again on node 1",
        || {
            redis::cmd("SET")
                .arg("k")
                .arg("after")
                .query::<()>(&mut nodes[0].conn())
                .is_ok()
        },
    );
    wait_members(&nodes[0], 3);
    assert!(nodes[0].http_get("/ready").starts_with("HTTP/1.1 200"));
    let (ok, out) = status_of(&nodes[0]);
    assert!(ok, "status says not ready: {out}");
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    let d = nodes[0].digest();
    assert_eq!(nodes[1].digest(), d);
    assert_eq!(nodes[2].digest(), d);
    assert_eq!(get(&nodes[2], "k").as_deref(), Some("after"));
}

/// A replica may listen on every interface (`0.0.0.0`) and tell the others
/// where to dial it with `--advertise`; without `--advertise` that is
/// refused with a message saying so.
#[test]
fn a_replica_bound_to_every_interface_is_reached_at_its_advertised_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = kv_common::free_addr().port();
    let (ok, err) = kv_common::run_to_exit(
        1,
        &dir.path().join("x"),
        format!("0.0.0.0:{port}").parse().unwrap(),
        &[],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(ok, Some(false), "{err}");
    assert!(err.contains("--advertise"), "{err}");
    let advertised = format!("127.0.0.1:{port}");
    let mut cmd_args = vec!["--advertise", advertised.as_str()];
    cmd_args.extend(["--restart-wait-ms", "1000"]);
    let n1 = kv_common::spawn_on(
        1,
        dir.path().join("n1"),
        format!("0.0.0.0:{port}").parse().unwrap(),
        &[],
        &cmd_args,
    );
    assert_eq!(
        n1.listen.to_string(),
        advertised,
        "the ready line shows the advertised address"
    );
    wait_members(&n1, 1);
    let n2 = spawn(2, dir.path().join("n2"), &[n1.listen], &[]);
    wait_members(&n2, 2);
    let out: String = redis::cmd("VSYNC")
        .arg("MEMBERS")
        .query(&mut n2.conn())
        .unwrap();
    assert!(out.contains(&advertised), "{out}");
}
