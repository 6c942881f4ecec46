//! Replicated state machines in real processes (`rsm-node`), killed with
//! SIGKILL: total failure and recovery in both durability modes with the
//! acknowledged-command check, and the ledger's invariant under kill -9,
//! restart and a partition.
//!
//! Run one at a time (timing sensitive); each takes a few seconds.
//! `RSM_TEST_VERBOSE=1` shows the nodes' lines.

mod rsm_common;

use rsm_common::*;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

/// Starts a 3-node group; returns the nodes and their addresses.
fn cluster(
    group: &str,
    dir: &std::path::Path,
    durability: &'static str,
    machine: &'static str,
    checkpoint_every: u64,
) -> (Vec<Node>, Vec<std::net::SocketAddr>) {
    let addrs: Vec<_> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..3u64 {
        let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        let mut s = spec(i + 1, group, dir, addrs[i as usize], seeds);
        s.durability = durability;
        s.machine = machine;
        s.checkpoint_every = checkpoint_every;
        s.start = if i == 0 {
            "found".into()
        } else {
            "join".into()
        };
        let n = Node::start(s);
        n.wait_serving(i as usize + 1, WAIT);
        nodes.push(n);
    }
    for n in &nodes {
        n.wait_serving(3, WAIT);
    }
    (nodes, addrs)
}

/// Restarts every node of a dead group in recovery mode (node 1 founds).
fn recover(old: &[Node], addrs: &[std::net::SocketAddr]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, o) in old.iter().enumerate() {
        let mut s = o.spec.clone();
        s.start = if i == 0 {
            "recover-found".into()
        } else {
            "recover".into()
        };
        s.expect = 3;
        s.seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        nodes.push(Node::start(s));
    }
    // Serving (not Recovering) in a view of three: recovered, either by
    // the claims or, for a member that was removed meanwhile, by an
    // ordinary transfer from the recovered group.
    for n in &nodes {
        n.wait_serving(3, WAIT);
    }
    nodes
}

fn write_ids(dir: &std::path::Path, ids: &BTreeSet<u64>) -> String {
    let p = dir.join("acked.txt");
    let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    std::fs::write(&p, s.join("\n")).expect("write ids");
    p.display().to_string()
}

/// Every member of the recovered group holds every id in `ids`, and the
/// members agree on the state.
fn check_recovered(nodes: &mut [Node], dir: &std::path::Path, ids: &BTreeSet<u64>) {
    let file = write_ids(dir, ids);
    let mut states = Vec::new();
    for n in nodes.iter_mut() {
        let missing = n.ask(&format!("verify {file}"), "MISSING", WAIT);
        assert_eq!(
            missing,
            "MISSING 0",
            "n{}: {} ids checked",
            n.spec.node,
            ids.len()
        );
        states.push(n.ask("ostate", "OSTATE", WAIT));
    }
    assert!(
        states.iter().all(|s| *s == states[0]),
        "states differ: {states:?}"
    );
}

#[test]
fn logged_mode_loses_no_acknowledged_command_when_every_member_is_killed() {
    let _s = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, addrs) = cluster("rsm-logged", dir.path(), "logged", "journal", 2_000);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.cmd(&format!("record {} 1000000", (i as u64 + 1) * 10_000_000));
    }
    for n in &nodes {
        n.wait_for("acknowledgements", WAIT, |l| {
            l.iter().filter(|x| x.starts_with("ACKED ")).count() >= 1500
        });
    }
    // kill -9 every member, mid-load.
    for n in nodes.iter_mut() {
        n.kill9();
    }
    let acked: BTreeSet<u64> = nodes.iter().flat_map(|n| n.acked()).collect();
    assert!(acked.len() >= 4500);
    let mut nodes = recover(&nodes, &addrs);
    check_recovered(&mut nodes, dir.path(), &acked);
    // The recovered group serves.
    let out = nodes[1].ask("record 1 10", "RECORDED", WAIT);
    assert_eq!(out, "RECORDED 10 0");
}

#[test]
fn memory_mode_recovers_the_newest_checkpoint_when_every_member_is_killed() {
    let _s = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, addrs) = cluster("rsm-memory", dir.path(), "memory", "journal", 1_000_000);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.cmd(&format!("record {} 1000000", (i as u64 + 1) * 10_000_000));
    }
    for n in &nodes {
        n.wait_for("acknowledgements", WAIT, |l| {
            l.iter().filter(|x| x.starts_with("ACKED ")).count() >= 500
        });
    }
    // Checkpoints at each member; what was acknowledged before the first
    // checkpoint began is in all of them.
    let before: BTreeSet<u64> = nodes.iter().flat_map(|n| n.acked()).collect();
    for n in nodes.iter_mut() {
        let r = n.ask("checkpoint", "CHECKPOINTED", WAIT);
        assert!(r.starts_with("CHECKPOINTED"), "{r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    for n in nodes.iter_mut() {
        n.kill9();
    }
    let all: BTreeSet<u64> = nodes.iter().flat_map(|n| n.acked()).collect();
    let mut nodes = recover(&nodes, &addrs);
    check_recovered(&mut nodes, dir.path(), &before);
    // What Memory mode loses: commands after the newest checkpoint (the
    // test only reports how many).
    let file = write_ids(dir.path(), &all);
    let lost = nodes[0].ask(&format!("verify {file}"), "MISSING", WAIT);
    eprintln!(
        "memory mode: of {} acknowledged ids, {lost} after the newest checkpoint",
        all.len()
    );
}

#[test]
fn the_ledger_total_holds_under_kill_restart_and_partition() {
    let _s = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, addrs) = cluster("rsm-ledger", dir.path(), "memory", "ledger", 1_000);
    let r = nodes[0].ask("init 200 1000", "INIT", WAIT);
    assert_eq!(r, "INIT Ok");
    nodes[0].cmd("transfer 4000 200");
    nodes[1].cmd("transfer 4000 200");
    nodes[0].wait_for("a checkpoint", WAIT, |l| {
        l.iter().any(|x| x.contains("CheckpointWritten"))
    });
    // kill -9 node 3 mid-load, restart it from its data directory.
    nodes[2].kill9();
    nodes[0].wait_serving(2, WAIT);
    let s3 = nodes[2].spec.clone();
    nodes[2] = Node::start(s3);
    nodes[2].wait_serving(3, WAIT);
    // Partition node 3 away, then heal: it is removed and rejoins by itself.
    nodes[2].cmd("cut 1");
    nodes[2].cmd("cut 2");
    nodes[0].cmd("cut 3");
    nodes[1].cmd("cut 3");
    nodes[0].wait_serving(2, WAIT);
    nodes[2].cmd("transfer 50 200"); // refused while blocked
    std::thread::sleep(Duration::from_millis(500));
    for n in nodes.iter_mut() {
        n.cmd("heal");
    }
    nodes[2].wait_for("a new incarnation", WAIT, |l| {
        l.iter().filter(|x| x.starts_with("PID ")).count() >= 2
    });
    nodes[2].wait_serving(3, WAIT);
    for n in &nodes[..2] {
        n.wait_for("the load", Duration::from_secs(90), |l| {
            l.iter().any(|x| x.starts_with("TRANSFERRED"))
        });
    }
    let _ = addrs;
    let mut states = Vec::new();
    for n in nodes.iter_mut() {
        let s = n.ask("ostate", "OSTATE", WAIT);
        let total = s.split_whitespace().nth(3).unwrap_or("");
        assert_eq!(total, "200000", "n{}: {s}", n.spec.node);
        states.push(n.ask("state", "STATE", WAIT));
    }
    // Same position, same digest once quiet.
    std::thread::sleep(Duration::from_millis(300));
    let st: Vec<String> = nodes
        .iter_mut()
        .map(|n| n.ask("state", "STATE", WAIT))
        .collect();
    assert!(st.iter().all(|s| *s == st[0]), "states differ: {st:?}");
}
