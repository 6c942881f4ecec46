//! Real processes over TCP on 127.0.0.1: crashes (kill -9), pauses
//! (SIGSTOP), joins, clean leaves and partitions, each run checked by the
//! same checker as the simulator's runs.
//!
//! The tests run one at a time (they are timing sensitive); each takes a
//! few seconds.

mod common;

use common::{Cluster, count, serial};
use std::time::Duration;
use vsync_core::history::Event;

const SUSPECT_MS: u64 = 300;
const WAIT: Duration = Duration::from_secs(45);

fn delivered_in(lines: &[String]) -> u64 {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("DELIVERED "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn has(prefix: &'static str) -> impl Fn(&[String]) -> bool {
    move |lines| lines.iter().any(|l| l.starts_with(prefix))
}

fn incarnations(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.starts_with("PID ")).count()
}

/// Everyone multicasts; one member is killed with SIGKILL mid-stream.
fn kill_one_mid_stream(n: u64, victim: u64, per_sender: u64) {
    let _serial = serial();
    let mut c = Cluster::start(n, SUSPECT_MS);
    c.log(&format!("{n} members up; all multicast {per_sender}"));
    for node in 1..=n {
        c.node_mut(node).cmd(&format!("send {per_sender}"));
    }
    let survivor = if victim == 1 { 2 } else { 1 };
    let threshold = per_sender * n / 5;
    c.node(survivor)
        .wait_for("deliveries before the kill", WAIT, |l| {
            delivered_in(l) >= threshold
        });
    c.log(&format!("killing n{victim} (kill -9)"));
    c.node_mut(victim).kill9();
    let rest: Vec<u64> = (1..=n).filter(|x| *x != victim).collect();
    let v = c.wait_converged(&rest, WAIT);
    assert_eq!(v.members.len(), rest.len());
    // The survivors' streams complete in the new view.
    for node in &rest {
        c.node(*node).wait_for("SENT", WAIT, has("SENT "));
    }
    let h = c.check();
    assert!(count(&h, |e| matches!(e, Event::Deliver { .. })) > 0);
}

#[test]
fn kill_one_of_three_mid_stream() {
    kill_one_mid_stream(3, 3, 20_000);
}

/// Five members; the coordinator (the sequencer) is the one killed.
#[test]
fn kill_the_coordinator_of_five_mid_stream() {
    kill_one_mid_stream(5, 1, 8_000);
}

/// A member stopped past the suspicion timeout is removed; when it resumes
/// it learns so and rejoins as a new incarnation.
#[test]
fn paused_member_is_removed_and_rejoins() {
    let _serial = serial();
    let mut c = Cluster::start(3, SUSPECT_MS);
    for node in 1..=3 {
        c.node_mut(node).cmd("send 3000");
    }
    let old = c.node(3).pid();
    c.log("SIGSTOP n3");
    c.node(3).signal(libc::SIGSTOP);
    c.wait_converged(&[1, 2], WAIT);
    std::thread::sleep(Duration::from_millis(3 * SUSPECT_MS));
    c.log("SIGCONT n3");
    c.node(3).signal(libc::SIGCONT);
    c.node(3).wait_for("REMOVED", WAIT, has("REMOVED "));
    c.node(3)
        .wait_for("a new incarnation", WAIT, |l| incarnations(l) >= 2);
    let new = c.node(3).pid();
    assert!(new.inc > old.inc, "{new:?} is not newer than {old:?}");
    let v = c.wait_converged(&[1, 2, 3], WAIT);
    assert!(v.members.contains(&new));
    c.node_mut(3).cmd("send 1000");
    c.node(3).wait_for("SENT", WAIT, has("SENT "));
    let h = c.check();
    assert_eq!(count(&h, |e| matches!(e, Event::Removed { .. })), 1);
}

/// A process joins and a member leaves cleanly while the others multicast.
#[test]
fn join_and_clean_leave_under_load() {
    let _serial = serial();
    let mut c = Cluster::start(3, SUSPECT_MS);
    for node in 1..=3 {
        c.node_mut(node).cmd("send 20000");
    }
    c.node(1)
        .wait_for("deliveries", WAIT, |l| delivered_in(l) >= 5_000);
    c.log("n4 joins");
    c.join(4);
    c.wait_converged(&[1, 2, 3, 4], WAIT);
    c.node_mut(4).cmd("send 3000");
    c.log("n2 leaves");
    c.node_mut(2).cmd("leave");
    c.node(2).wait_for("LEFT", WAIT, has("LEFT "));
    c.node(2).wait_for("LEAVE ok", WAIT, has("LEAVE ok"));
    c.wait_converged(&[1, 3, 4], WAIT);
    for node in [1, 3, 4] {
        c.node(node).wait_for("SENT", WAIT, has("SENT "));
    }
    let h = c.check();
    assert_eq!(count(&h, |e| matches!(e, Event::Left { .. })), 1);
    assert_eq!(count(&h, |e| matches!(e, Event::Removed { .. })), 0);
}

/// Partition 2 | 3 with the fault hook: the minority blocks, the majority
/// goes on; after healing, the minority rejoins as new incarnations.
#[test]
fn partition_minority_blocks_then_rejoins() {
    let _serial = serial();
    let mut c = Cluster::start(5, SUSPECT_MS);
    for node in 1..=5 {
        c.node_mut(node).cmd("send 3000");
    }
    let (major, minor) = ([1u64, 2, 3], [4u64, 5]);
    c.log("partition {1,2,3} | {4,5}");
    for a in major {
        for b in minor {
            c.node_mut(a).cmd(&format!("cut {b}"));
            c.node_mut(b).cmd(&format!("cut {a}"));
        }
    }
    c.wait_converged(&major, WAIT);
    for b in minor {
        c.node(b).wait_for("BLOCKED", WAIT, has("BLOCKED "));
    }
    c.log("heal");
    for a in major {
        for b in minor {
            c.node_mut(a).cmd(&format!("heal {b}"));
            c.node_mut(b).cmd(&format!("heal {a}"));
        }
    }
    for b in minor {
        c.node(b).wait_for("REMOVED", WAIT, has("REMOVED "));
        c.node(b)
            .wait_for("a new incarnation", WAIT, |l| incarnations(l) >= 2);
    }
    c.wait_converged(&[1, 2, 3, 4, 5], WAIT);
    let h = c.check();
    assert!(count(&h, |e| matches!(e, Event::Blocked { .. })) >= 2);
}

/// A crash under a load of 8 KiB multicasts from every member: the flush
/// messages carry every unstable payload, and the engine's byte window keeps
/// them under the 16 MiB frame limit (before it did, they were dropped and
/// the survivors blocked).
#[test]
fn crash_under_load_with_large_payloads() {
    let _serial = serial();
    let mut c = Cluster::start(3, SUSPECT_MS);
    for node in 1..=3 {
        c.node_mut(node).cmd("send 20000 8192");
    }
    c.node(1)
        .wait_for("deliveries", WAIT, |l| delivered_in(l) >= 10_000);
    c.node_mut(3).kill9();
    c.wait_converged(&[1, 2], WAIT);
    for node in [1, 2] {
        c.node(node).wait_for("SENT", WAIT, has("SENT "));
    }
    c.check();
}
