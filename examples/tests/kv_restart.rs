//! Restarts on real processes, the way a supervisor does them: every
//! replica is started again with exactly the command line that started it
//! (fixed `--listen` ports, node 1 with no `--seed`, as in the README).
//!
//! - A rolling restart (SIGTERM, then kill -9, each replica in turn) under
//!   continuous writes loses no acknowledged write, leaves equal digests,
//!   and the replicas' histories show one lineage of views: never a second
//!   group (the founder used to found a new, empty cluster over its data).
//! - Every replica killed at once and started again, with no extra flag:
//!   Logged keeps every acknowledged write; Memory comes back at least at
//!   the newest checkpoint.
//! - A data directory of another cluster is refused and left intact.

mod kv_common;

use kv_common::{
    Node, free_addr, run_to_exit, spawn_on, wait_members, wait_same_position, wait_until,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vsync_core::checker::{CheckOptions, check_all};

/// A 3-replica cluster whose command lines never change.
struct Cluster {
    dir: PathBuf,
    listen: Vec<SocketAddr>,
    extra: Vec<String>,
    nodes: Vec<Option<Node>>,
    /// The RESP address of each live node, for the writer.
    resp: Arc<Mutex<Vec<Option<SocketAddr>>>>,
}

impl Cluster {
    fn new(dir: &Path, extra: &[&str]) -> Self {
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            listen: (0..3).map(|_| free_addr()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nodes: vec![None, None, None],
            resp: Arc::new(Mutex::new(vec![None; 3])),
        };
        c.start(0);
        wait_members(c.node(0), 1);
        c.start(1);
        c.start(2);
        for i in 0..3 {
            wait_members(c.node(i), 3);
        }
        c
    }

    /// The command line of node `i` (index from 0), always the same.
    fn start(&mut self, i: usize) {
        let seeds: Vec<SocketAddr> = if i == 0 { vec![] } else { vec![self.listen[0]] };
        let history = self.dir.join(format!("history-{}.jsonl", i + 1));
        let mut extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let h = history.to_string_lossy().into_owned();
        extra.extend(["--history", &h, "--restart-wait-ms", "2000"]);
        let n = spawn_on(
            i as u64 + 1,
            self.dir.join(format!("n{}", i + 1)),
            self.listen[i],
            &seeds,
            &extra,
        );
        self.resp.lock().unwrap()[i] = Some(n.resp);
        self.nodes[i] = Some(n);
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    fn all(&self) -> Vec<&Node> {
        self.nodes.iter().flatten().collect()
    }

    fn sigterm(&mut self, i: usize) {
        self.resp.lock().unwrap()[i] = None;
        let mut n = self.nodes[i].take().expect("running");
        n.signal(libc::SIGTERM);
        assert!(
            n.wait_exit(Duration::from_secs(25)).is_some(),
            "node {} did not exit after SIGTERM",
            i + 1
        );
    }

    fn kill9(&mut self, i: usize) {
        self.resp.lock().unwrap()[i] = None;
        self.nodes[i].take().expect("running").kill9();
    }

    /// Every node serving in a view of three.
    fn wait_serving(&self) {
        for n in self.all() {
            wait_members(n, 3);
        }
    }

    /// The checker finds no violation in the histories, and the number of
    /// groups ever founded (views of epoch 1) is in `groups`: one without
    /// an outage (then each epoch has one view id: a second group would
    /// install its own); after a whole-cluster outage, at least one more
    /// (recovering groups: two when the replicas' last views differ, of
    /// which only the one whose members' last views are all present
    /// decides; the other's founder rejoins it).
    fn check_histories(&self, groups: std::ops::RangeInclusive<usize>) {
        let mut all = Vec::new();
        for i in 1..=3 {
            let path = self.dir.join(format!("history-{i}.jsonl"));
            let f = std::fs::File::open(&path).expect("history file");
            all.extend(
                vsync_core::history::read_jsonl(std::io::BufReader::new(f)).expect("history"),
            );
        }
        let v = check_all(&all, &CheckOptions::default());
        assert!(v.is_empty(), "checker violations: {v:#?}");
        let mut by_epoch: std::collections::BTreeMap<u64, BTreeSet<String>> = Default::default();
        for h in &all {
            for r in &h.records {
                if let vsync_core::history::Event::Install { view, .. } = &r.event {
                    by_epoch
                        .entry(view.id.epoch)
                        .or_default()
                        .insert(view.id.to_string());
                }
            }
        }
        let founded = by_epoch.get(&1).map_or(0, BTreeSet::len);
        assert!(
            groups.contains(&founded),
            "groups founded: {:?}",
            by_epoch.get(&1)
        );
        if founded == 1 {
            for (epoch, ids) in &by_epoch {
                assert_eq!(
                    ids.len(),
                    1,
                    "two views of epoch {epoch}: {ids:?} (two groups formed)"
                );
            }
        }
        let views: usize = by_epoch.values().map(BTreeSet::len).sum();
        assert!(views > 3, "too few views recorded: {by_epoch:?}");
    }
}

/// Writes `w:<i>` continuously through whichever replica is up, and keeps
/// the acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<BTreeSet<u64>>>,
}

impl Writer {
    fn start(resp: Arc<Mutex<Vec<Option<SocketAddr>>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut acked = BTreeSet::new();
            let mut i = 0u64;
            let mut conns: Vec<Option<(SocketAddr, redis::Connection)>> = vec![None, None, None];
            let deadline = Instant::now() + Duration::from_secs(240);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let k = (i % 3) as usize;
                i += 1;
                let Some(addr) = resp.lock().unwrap()[k] else {
                    continue;
                };
                if conns[k].as_ref().is_none_or(|(a, _)| *a != addr) {
                    conns[k] = redis::Client::open(format!("redis://{addr}/"))
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                        .ok()
                        .map(|c| {
                            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                            (addr, c)
                        });
                }
                let Some((_, c)) = conns[k].as_mut() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                match redis::cmd("SET")
                    .arg(format!("w:{i}"))
                    .arg(i)
                    .query::<()>(c)
                {
                    Ok(()) => {
                        acked.insert(i);
                    }
                    Err(_) => {
                        // Outcome unknown: not counted. Reconnect next time.
                        conns[k] = None;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            acked
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> BTreeSet<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("once").join().expect("writer")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every key in `acked` is on every node, and the nodes are equal.
fn assert_all_present(c: &Cluster, acked: &BTreeSet<u64>) {
    let nodes = c.all();
    wait_same_position(&nodes);
    let digests: Vec<String> = nodes.iter().map(|n| n.digest()).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "digests differ: {digests:?}"
    );
    for n in &nodes {
        let keys: Vec<String> = redis::cmd("KEYS").arg("w:*").query(&mut n.conn()).unwrap();
        let have: BTreeSet<u64> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("w:")?.parse().ok())
            .collect();
        let lost: Vec<&u64> = acked.difference(&have).take(10).collect();
        assert!(
            lost.is_empty(),
            "node {}: {} acknowledged writes lost, e.g. {lost:?}",
            n.id,
            acked.difference(&have).count()
        );
    }
}

#[test]
fn a_rolling_restart_with_the_original_command_lines_loses_nothing_and_forms_no_second_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(dir.path(), &["--durability", "logged"]);
    let writer = Writer::start(c.resp.clone());
    std::thread::sleep(Duration::from_millis(500));
    let mut catch_ups = 0;
    for kill in [false, true] {
        for i in 0..3 {
            if kill {
                c.kill9(i);
            } else {
                c.sigterm(i);
            }
            c.start(i);
            c.wait_serving();
            // The restarted replica rejoined the running cluster: it never
            // founded a group of its own.
            let members = c.node(i).info("member_count");
            assert_eq!(
                members.as_deref(),
                Some("3"),
                "node {} after restart",
                i + 1
            );
            catch_ups += c
                .node(i)
                .info("catch_ups_received")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    // Restarted a few writes behind, a replica takes only those from a
    // donor that still holds them (a donor that restarted itself holds only
    // what it applied since, so not every restart can).
    assert!(
        catch_ups >= 1,
        "no restart caught up: each took the whole state"
    );
    std::thread::sleep(Duration::from_millis(500));
    let acked = writer.finish();
    assert!(
        acked.len() > 100,
        "too few writes acknowledged: {}",
        acked.len()
    );
    assert_all_present(&c, &acked);
    c.check_histories(1..=1);
}

/// Kills every replica at once while writes run, then starts each again
/// with its original command line.
fn whole_cluster_restart(durability: &str) -> (Cluster, BTreeSet<u64>, BTreeSet<u64>, u64) {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut c = Cluster::new(&dir, &["--durability", durability]);
    let writer = Writer::start(c.resp.clone());
    std::thread::sleep(Duration::from_millis(800));
    // What node 1 holds, then a checkpoint of it on every replica: what
    // Memory mode must come back to.
    let before_save: BTreeSet<u64> = {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("w:*")
            .query(&mut c.node(0).conn())
            .unwrap();
        keys.iter()
            .filter_map(|k| k.strip_prefix("w:")?.parse().ok())
            .collect()
    };
    let mut saved = 0;
    for n in c.all() {
        let _: () = redis::cmd("SAVE").query(&mut n.conn()).unwrap();
        let at: u64 = n
            .info("last_checkpoint")
            .and_then(|p| p.parse().ok())
            .expect("checkpoint");
        saved = saved.max(at);
    }
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..3 {
        c.kill9(i);
    }
    let acked = writer.finish();
    // Two of three back: they recover only once the third, which may hold
    // newer writes, is back too; meanwhile they say so.
    c.start(0);
    c.start(1);
    wait_until(Duration::from_secs(20), "node 1 recovering", || {
        c.node(0).info("role").as_deref() == Some("recovering")
    });
    let ready = c.node(0).http_get("/ready");
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains("recovering"),
        "{ready}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        c.node(1).info("role").as_deref(),
        Some("recovering"),
        "recovered without node 3"
    );
    c.start(2);
    let t = Instant::now();
    c.wait_serving();
    eprintln!(
        "{durability}: serving again {:?} after the restart",
        t.elapsed()
    );
    (c, acked, before_save, saved)
}

#[test]
fn logged_mode_keeps_every_acknowledged_write_when_every_replica_is_killed_and_restarted() {
    let (c, acked, _, _) = whole_cluster_restart("logged");
    assert!(
        acked.len() > 50,
        "too few writes acknowledged: {}",
        acked.len()
    );
    assert_all_present(&c, &acked);
    // The original group, and the recovering group(s) founded after the
    // outage.
    c.check_histories(2..=3);
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn memory_mode_comes_back_at_least_at_the_newest_checkpoint_after_a_whole_cluster_restart() {
    let (c, _, before_save, saved) = whole_cluster_restart("memory");
    assert!(!before_save.is_empty());
    assert_all_present(&c, &before_save);
    let pos = c.node(0).position();
    assert!(
        pos >= saved,
        "position {pos} went back past the checkpoint at {saved}"
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn a_data_directory_of_another_cluster_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    // Cluster A: node 1 alone. Cluster B: node 7 alone, same group name.
    let (la, lb) = (free_addr(), free_addr());
    let a = spawn_on(1, dir.path().join("a1"), la, &[], &[]);
    wait_members(&a, 1);
    let mut b = spawn_on(7, dir.path().join("b7"), lb, &[], &[]);
    wait_members(&b, 1);
    let mut cb = b.conn();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("b:{i}"))
            .arg(i)
            .query(&mut cb)
            .unwrap();
    }
    let _: () = redis::cmd("SAVE").query(&mut cb).unwrap();
    drop(cb);
    b.signal(libc::SIGTERM);
    assert!(b.wait_exit(Duration::from_secs(25)).is_some());
    drop(b);
    let b_data = dir.path().join("b7");

    // Another group name: refused at start, naming both.
    let (ok, err) = run_to_exit(
        7,
        &b_data,
        lb,
        &[],
        &["--group", "other"],
        Duration::from_secs(20),
    );
    assert_eq!(ok, Some(false), "not refused: {err}");
    assert!(
        err.contains("\"vsync-kv\"") && err.contains("\"other\""),
        "{err}"
    );

    // Pointed at cluster A: A's state is refused when it arrives.
    let (ok, err) = run_to_exit(7, &b_data, lb, &[la], &[], Duration::from_secs(30));
    assert_eq!(ok, Some(false), "not refused: {err}");
    assert!(err.contains("belongs to cluster"), "{err}");

    // B's data is intact: started again alone, it holds its 50 keys.
    let b = spawn_on(7, b_data, lb, &[], &[]);
    wait_until(Duration::from_secs(20), "B serving again", || {
        b.info("member_count").as_deref() == Some("1")
            && b.info("role").as_deref() != Some("recovering")
    });
    let n: u64 = redis::cmd("DBSIZE").query(&mut b.conn()).unwrap();
    assert_eq!(n, 50);
    // And A never took B's keys.
    let n: u64 = redis::cmd("DBSIZE").query(&mut a.conn()).unwrap();
    assert_eq!(n, 0);
}

/// Data written by the version before the identity file: without a seed,
/// the replica refuses to guess and says to use `--recover`; recovered once
/// with it, it records its cluster, and the next restart with the original
/// command line is automatic, with the data.
#[test]
fn data_from_before_the_identity_file_is_recovered_once_by_hand_then_restarts_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let data = dir.path().join("n1");
    let mut n = spawn_on(1, data.clone(), listen, &[], &[]);
    wait_members(&n, 1);
    let mut c = n.conn();
    for i in 0..30 {
        let _: () = redis::cmd("SET")
            .arg(format!("o:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    drop(c);
    n.signal(libc::SIGTERM);
    assert!(n.wait_exit(Duration::from_secs(25)).is_some());
    drop(n);
    // As an older version left it: a checkpoint, no identity.
    std::fs::remove_file(data.join(vsync_rsm::identity::IDENTITY_FILE)).unwrap();
    let (ok, err) = run_to_exit(1, &data, listen, &[], &[], Duration::from_secs(20));
    assert_eq!(ok, Some(false), "{err}");
    assert!(err.contains("--recover"), "{err}");
    let mut n = spawn_on(1, data.clone(), listen, &[], &["--recover", "1"]);
    wait_members(&n, 1);
    let keys: u64 = redis::cmd("DBSIZE").query(&mut n.conn()).unwrap();
    assert_eq!(keys, 30);
    wait_until(Duration::from_secs(10), "the identity recorded", || {
        data.join(vsync_rsm::identity::IDENTITY_FILE).exists()
    });
    n.signal(libc::SIGTERM);
    assert!(n.wait_exit(Duration::from_secs(25)).is_some());
    drop(n);
    let n = spawn_on(1, data, listen, &[], &[]);
    wait_members(&n, 1);
    let keys: u64 = redis::cmd("DBSIZE").query(&mut n.conn()).unwrap();
    assert_eq!(keys, 30);
}
