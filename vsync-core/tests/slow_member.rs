//! One member that cannot hear the others (a throttled process, a NIC that
//! drops what comes in) must not take the healthy majority down with it:
//! the majority removes it and goes on, under both policies, whatever the
//! order in which its suspicions come out.
//!
//! KNOWN LIVENESS BUG, reproduced here and not fixed yet (see
//! docs/PROTOCOL.md, "Known limitations"): suspicion is trusted, so the deaf
//! member's suspicion of one healthy member, forwarded to the other, makes
//! that one remove it, and the deaf member's flushes (it hears no answer)
//! pull the healthy ones into ballots they cannot finish. Both tests fail
//! today and are ignored so that CI stays meaningful; run them with
//! `cargo test -p vsync-core --test slow_member -- --ignored`.

mod common;

use bytes::Bytes;
use common::*;
use vsync_core::checker::Policy;
use vsync_core::{AppEvent, Config};

fn three(cfg: &Config) -> Net {
    let mut net = Net::new();
    net.add_with(1, true, cfg.clone());
    for n in 2..=3 {
        net.add_with(n, false, cfg.clone());
        net.run(300_000);
    }
    for e in &net.engines {
        assert_eq!(e.view().map(|v| v.members.len()), Some(3));
    }
    net
}

/// Node 3 stops hearing node `first`, then, `gap` µs later, the other one;
/// everything node 3 sends still arrives.
fn deafen_node_3(cfg: Config, first: u64, gap: u64) {
    let mut net = three(&cfg);
    let other = 3 - first;
    net.cut.push((first, 3));
    net.run(gap);
    net.cut.push((other, 3));
    net.run(2_000_000);
    for i in 0..2 {
        let e = &net.engines[i];
        let members: Vec<u64> = e
            .view()
            .map(|v| v.members.iter().map(|p| p.node.0).collect())
            .unwrap_or_default();
        assert!(
            !e.is_blocked() && members == vec![1, 2],
            "first={first} gap={gap}us: node {} is {} in view {members:?}; the healthy pair must go on without node 3",
            i + 1,
            if e.is_blocked() { "blocked" } else { "serving" },
        );
    }
    let msg = Bytes::from_static(b"after the deaf member");
    net.engines[0]
        .multicast(net.now, msg.clone())
        .expect("multicast");
    net.run(300_000);
    assert!(
        payloads_of(&net.events[1]).contains(&msg),
        "first={first} gap={gap}us: the pair does not deliver"
    );
    assert!(
        net.events[2]
            .iter()
            .any(|e| matches!(e, AppEvent::Removed { .. })),
        "first={first} gap={gap}us: node 3 is never told it was removed"
    );
}

fn payloads_of(evs: &[AppEvent]) -> Vec<Bytes> {
    delivered(evs)
}

#[test]
#[ignore = "known liveness bug: a deaf member's trusted suspicions stall the majority (docs/PROTOCOL.md, Known limitations)"]
fn a_deaf_member_is_removed_and_the_majority_goes_on() {
    let cfg = Config::with_suspect_timeout(100_000);
    for first in [1, 2] {
        for gap in [0, 1_000, 5_000, 20_000, 60_000] {
            deafen_node_3(cfg.clone(), first, gap);
        }
    }
}

#[test]
#[ignore = "known liveness bug: a deaf member's trusted suspicions stall the majority (docs/PROTOCOL.md, Known limitations)"]
fn a_deaf_member_is_removed_under_the_partitionable_policy_too() {
    let mut cfg = Config::with_suspect_timeout(100_000);
    cfg.policy = Policy::Partitionable;
    for first in [1, 2] {
        for gap in [0, 5_000, 60_000] {
            deafen_node_3(cfg.clone(), first, gap);
        }
    }
}
