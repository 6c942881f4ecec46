//! A five-replica vsync-kv cluster split 2|3 under write load, on real
//! processes, in both partition policies (the partition is made with
//! `DEBUG CUT`, which needs `--fault-injection`):
//!
//! - primary component: the 2-side refuses writes (MINORITY), no
//!   acknowledged write is lost, and after the heal every replica holds
//!   the same data;
//! - partitionable: both sides accept writes and their digests differ
//!   during the split; after the heal every replica's digest is the
//!   3-side's, its acknowledged writes are all there, the 2-side's writes
//!   of the split are gone, and the 2-side reports them (log and `INFO`).

mod kv_common;

use kv_common::{Node, spawn_logged, wait_same_position, wait_until};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Five nodes of one policy, each logging to `<dir>/n<id>.log`.
fn cluster(dir: &Path, policy: &str) -> Vec<Node> {
    let extra = ["--partition-policy", policy, "--fault-injection"];
    let log = |id: u64| dir.join(format!("n{id}.log"));
    let first = spawn_logged(1, dir.join("n1"), &[], &extra, Some(&log(1)));
    wait_serving(&first, 1);
    let seed = first.listen;
    let mut nodes = vec![first];
    for id in 2..=5 {
        nodes.push(spawn_logged(
            id,
            dir.join(format!("n{id}")),
            &[seed],
            &extra,
            Some(&log(id)),
        ));
    }
    for n in &nodes {
        wait_serving(n, 5);
    }
    nodes
}

/// Waits until `node` serves in a view of `n` members (either policy).
fn wait_serving(node: &Node, n: usize) {
    wait_until(
        Duration::from_secs(40),
        &format!("node {} serving in a view of {n}", node.id),
        || {
            node.info("member_count").as_deref() == Some(&n.to_string())
                && matches!(
                    node.info("partition").as_deref(),
                    Some("primary" | "serving")
                )
        },
    );
}

fn call(node: &Node, args: &[&str]) -> redis::RedisResult<String> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut node.conn())
}

/// Cuts nodes 1 and 2 off from nodes 3, 4 and 5 (both directions).
fn split(nodes: &[Node]) {
    for n in &nodes[..2] {
        call(n, &["DEBUG", "CUT", "3", "4", "5"]).expect("cut");
    }
    for n in &nodes[2..] {
        call(n, &["DEBUG", "CUT", "1", "2"]).expect("cut");
    }
}

fn heal(nodes: &[Node]) {
    for n in nodes {
        call(n, &["DEBUG", "HEAL"]).expect("heal");
    }
}

/// A thread writing `prefix:i = i` through one node until stopped; it
/// records every index whose write was acknowledged (a failed or timed
/// out write is not).
struct Writer {
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(node: &Node, prefix: &'static str) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = node.resp;
        let thread = {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
                let mut conn = None;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = client
                            .get_connection_with_timeout(Duration::from_secs(2))
                            .ok();
                        if let Some(c) = &conn {
                            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        }
                    }
                    let Some(c) = conn.as_mut() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    match redis::cmd("SET")
                        .arg(format!("{prefix}:{i}"))
                        .arg(i)
                        .query::<()>(c)
                    {
                        Ok(()) => acked.lock().expect("lock").push(i),
                        Err(e) => {
                            if e.is_io_error() || e.is_timeout() {
                                conn = None;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    i += 1;
                }
            })
        };
        Writer {
            acked,
            stop,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().expect("lock").clone()
    }

    /// Stops and returns the acknowledged indices.
    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The values of `prefix:i` for `ids` on `node`.
fn values(node: &Node, prefix: &str, ids: &[u64]) -> Vec<Option<String>> {
    if ids.is_empty() {
        return Vec::new();
    }
    let keys: Vec<String> = ids.iter().map(|i| format!("{prefix}:{i}")).collect();
    redis::cmd("MGET")
        .arg(&keys)
        .query(&mut node.conn())
        .expect("MGET")
}

/// Every acknowledged `prefix:i` is on every node.
fn assert_all_present(nodes: &[Node], prefix: &str, ids: &[u64]) {
    for n in nodes {
        for (i, v) in ids.iter().zip(values(n, prefix, ids)) {
            assert_eq!(
                v.as_deref(),
                Some(i.to_string().as_str()),
                "node {} lost acknowledged write {prefix}:{i}",
                n.id
            );
        }
    }
}

fn all_refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

fn log_text(dir: &Path, id: u64) -> String {
    std::fs::read_to_string(dir.join(format!("n{id}.log"))).unwrap_or_default()
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let p = t.path().to_path_buf();
    (t, p)
}

#[test]
fn primary_component_split_2_3_the_minority_refuses_and_nothing_acknowledged_is_lost() {
    let (_tmp, dir) = tempdir();
    let nodes = cluster(&dir, "primary");
    let w2 = Writer::start(&nodes[0], "two");
    let w3 = Writer::start(&nodes[2], "three");
    wait_until(Duration::from_secs(10), "writes on both sides", || {
        w2.acked().len() >= 50 && w3.acked().len() >= 50
    });

    split(&nodes);
    for n in &nodes[..2] {
        wait_until(
            Duration::from_secs(20),
            &format!("node {} blocked in the minority", n.id),
            || n.info("partition").as_deref() == Some("minority"),
        );
    }
    wait_serving(&nodes[2], 3);
    let old_pid = nodes[0].info("pid");
    let acked_at_split = w2.acked().len();
    let three_at_split = w3.acked().len();
    wait_until(Duration::from_secs(10), "writes on the 3-side", || {
        w3.acked().len() >= three_at_split + 100
    });
    // The 2-side refuses writes; the 2-side writer got nothing through.
    for n in &nodes[..2] {
        let e = call(n, &["SET", "refused", "1"]).expect_err("a minority write");
        assert!(e.to_string().contains("MINORITY"), "{e}");
    }
    assert_eq!(
        w2.acked().len(),
        acked_at_split,
        "the minority acknowledged a write"
    );

    heal(&nodes);
    for n in &nodes {
        wait_serving(n, 5);
    }
    // Writes through the old minority go through again.
    wait_until(Duration::from_secs(20), "writes on node 1 again", || {
        w2.acked().len() > acked_at_split + 20
    });
    let two = w2.finish();
    let three = w3.finish();
    wait_same_position(&all_refs(&nodes));
    assert_all_present(&nodes, "two", &two);
    assert_all_present(&nodes, "three", &three);
    let d = nodes[2].digest();
    for n in &nodes {
        assert_eq!(n.digest(), d, "node {} differs after the heal", n.id);
        assert_eq!(n.info("divergences").as_deref(), Some("0"));
        assert_eq!(n.info("partition_policy").as_deref(), Some("primary"));
    }
    // The old minority was removed and rejoined as new incarnations.
    assert_ne!(nodes[0].info("pid"), old_pid);
}

#[test]
fn partitionable_split_2_3_both_sides_write_and_the_smaller_sides_writes_are_discarded() {
    let (_tmp, dir) = tempdir();
    let nodes = cluster(&dir, "partitionable");
    assert_eq!(
        nodes[0].info("partition_policy").as_deref(),
        Some("partitionable")
    );
    let w3 = Writer::start(&nodes[2], "three");
    let w1 = Writer::start(&nodes[0], "before");
    wait_until(Duration::from_secs(10), "writes before the split", || {
        w3.acked().len() >= 50 && w1.acked().len() >= 50
    });
    let before = w1.finish();
    // The 3-side has applied them all (the last one, in the total order).
    let last = before.last().copied().unwrap_or(0);
    for n in &nodes[2..] {
        wait_until(
            Duration::from_secs(10),
            "the early writes on the 3-side",
            || values(n, "before", &[last]) == vec![Some(last.to_string())],
        );
    }

    split(&nodes);
    wait_serving(&nodes[0], 2);
    wait_serving(&nodes[1], 2);
    for n in &nodes[2..] {
        wait_serving(n, 3);
    }
    // Both sides accept writes: a writer on the 2-side, while the 3-side's
    // writer goes on.
    let three_at_split = w3.acked().len();
    let w2 = Writer::start(&nodes[0], "minority");
    wait_until(Duration::from_secs(10), "writes on both sides", || {
        w3.acked().len() >= three_at_split + 100 && w2.acked().len() >= 40
    });
    let minority = w2.finish();
    // The sides' data differ; within a side it is the same.
    wait_same_position(&[&nodes[0], &nodes[1]]);
    let d2 = nodes[0].digest();
    assert_eq!(nodes[1].digest(), d2);
    assert_ne!(
        nodes[2].digest(),
        d2,
        "the sides' digests are equal during the split"
    );
    assert!(
        values(&nodes[2], "minority", &minority)
            .iter()
            .all(Option::is_none),
        "a 2-side write reached the 3-side"
    );
    let old_pid = nodes[0].info("pid");

    heal(&nodes);
    for n in &nodes {
        wait_serving(n, 5);
    }
    for n in &nodes[..2] {
        wait_until(
            Duration::from_secs(20),
            &format!("node {} reports the lost merge", n.id),
            || n.info("divergences").is_some_and(|d| d != "0"),
        );
    }
    assert_ne!(
        nodes[0].info("pid"),
        old_pid,
        "node 1 rejoined as a new incarnation"
    );
    let three = w3.finish();
    wait_same_position(&all_refs(&nodes));
    let winner = nodes[2].digest();
    for n in &nodes {
        assert_eq!(n.digest(), winner, "node {} is not the winner's", n.id);
    }
    // The 3-side's acknowledged writes are all there; the 2-side's split
    // writes are gone everywhere.
    assert_all_present(&nodes, "three", &three);
    for n in &nodes {
        assert!(
            values(n, "minority", &minority).iter().all(Option::is_none),
            "node {} kept a write of the losing side",
            n.id
        );
    }
    // The 2-side says what it discarded: INFO, status and its log.
    for n in &nodes[..2] {
        let discarded: u64 = n
            .info("discarded_writes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(
            discarded >= minority.len() as u64,
            "node {} reports {discarded} discarded writes",
            n.id
        );
        let last = n.info("last_divergence").unwrap_or_default();
        assert!(
            last.contains("winner=") && last.contains("position="),
            "{last}"
        );
    }
    for n in &nodes[2..] {
        assert_eq!(n.info("divergences").as_deref(), Some("0"));
    }
    let log = log_text(&dir, 1);
    assert!(
        log.contains("lost the merge") && log.contains("discarded write"),
        "node 1's log does not report the discarded writes"
    );
    // The first discarded writes are listed one per line.
    for i in &minority[..10] {
        assert!(
            log.contains(&format!("\"minority:{i}\"")),
            "node 1's log does not list minority:{i}"
        );
    }
    // What the 2-side had acknowledged before the split is kept.
    assert_all_present(&nodes, "before", &before);
}
