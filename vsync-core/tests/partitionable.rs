//! The partitionable policy: both sides of a partition go on, the checker
//! holds every guarantee per side, and after the heal the sides merge into
//! one view by the documented rule, the losers told what they lose.

mod common;

use bytes::Bytes;
use common::Net;
use vsync_core::checker::{Guarantee, Policy};
use vsync_core::engine::Mutations;
use vsync_core::sim::{self, SimOptions};
use vsync_core::{AppEvent, Config, Message, Pid, View};

fn partitionable() -> Config {
    let mut c = Config::with_suspect_timeout(100_000);
    c.policy = Policy::Partitionable;
    c
}

fn views(evs: &[AppEvent]) -> Vec<View> {
    evs.iter()
        .filter_map(|e| match e {
            AppEvent::View { view, .. } => Some(view.clone()),
            _ => None,
        })
        .collect()
}

fn payloads_of(evs: &[AppEvent]) -> Vec<Bytes> {
    common::delivered(evs)
}

/// Five members split 2|3 by hand: both sides install their own views and
/// deliver their own multicasts; after the heal the 3-side wins, the
/// 2-side is told (with the view where the histories parted) and removed,
/// its new incarnations rejoin, and the group is one view of five again.
#[test]
fn a_split_group_goes_on_on_both_sides_then_merges_into_the_larger_side() {
    let mut net = Net::new();
    net.add_with(1, true, partitionable());
    for n in 2..=5 {
        net.add_with(n, false, partitionable());
        net.run(300_000);
    }
    let whole = net.engines[0].view().cloned().expect("a view");
    assert_eq!(whole.members.len(), 5, "{whole}");

    net.partition(&[1, 2], &[3, 4, 5]);
    net.run(600_000);
    let small = net.engines[0].view().cloned().expect("the 2-side's view");
    let big = net.engines[2].view().cloned().expect("the 3-side's view");
    assert_eq!(small.members, vec![Pid::new(1, 1), Pid::new(2, 1)]);
    assert_eq!(
        big.members,
        vec![Pid::new(3, 1), Pid::new(4, 1), Pid::new(5, 1)]
    );
    assert_ne!(
        small.id, big.id,
        "concurrent sides must install distinct views"
    );

    // Both sides accept and deliver writes during the split.
    net.engines[0]
        .multicast(net.now, Bytes::from_static(b"small-side write"))
        .expect("the 2-side accepts");
    net.engines[3]
        .multicast(net.now, Bytes::from_static(b"big-side write"))
        .expect("the 3-side accepts");
    net.run(300_000);
    assert!(payloads_of(&net.events[1]).contains(&Bytes::from_static(b"small-side write")));
    assert!(payloads_of(&net.events[4]).contains(&Bytes::from_static(b"big-side write")));
    assert!(!payloads_of(&net.events[4]).contains(&Bytes::from_static(b"small-side write")));

    // Heal: the probes find the other side; the smaller side loses.
    net.cut.clear();
    net.run(2_000_000);
    for i in [0, 1] {
        let d = net.events[i].iter().find_map(|e| match e {
            AppEvent::Diverged {
                view,
                split,
                winner,
            } => Some((*view, *split, winner.clone())),
            _ => None,
        });
        let (view, split, winner) = d.expect("the 2-side is told it lost the merge");
        assert_eq!(view, small.id);
        assert_eq!(
            split,
            Some(whole.id),
            "the histories part after the 5-member view"
        );
        assert_eq!(winner.members, big.members);
        assert!(
            matches!(net.events[i].last(), Some(AppEvent::Removed { .. })),
            "the loser is removed right after: {:?}",
            net.events[i].last()
        );
    }
    for i in 2..5 {
        assert!(
            !net.events[i]
                .iter()
                .any(|e| matches!(e, AppEvent::Diverged { .. } | AppEvent::Removed { .. })),
            "the winning side keeps its history"
        );
    }

    // The losers rejoin as new incarnations and the group is whole again.
    net.add_pid(Pid::new(1, 2), false, partitionable());
    net.add_pid(Pid::new(2, 2), false, partitionable());
    net.run(1_500_000);
    let last = views(&net.events[2]).pop().expect("a view");
    assert_eq!(last.members.len(), 5, "{last}");
    assert!(last.contains(Pid::new(1, 2)) && last.contains(Pid::new(2, 2)));
    assert_eq!(net.engines[5].view().map(|v| v.id), Some(last.id));
}

/// Under the primary-component policy the same split never diverges: the
/// 2-side blocks and delivers nothing of its own.
#[test]
fn the_same_split_under_the_primary_component_blocks_the_minority() {
    let mut net = Net::new();
    let cfg = Config::with_suspect_timeout(100_000);
    net.add_with(1, true, cfg.clone());
    for n in 2..=5 {
        net.add_with(n, false, cfg.clone());
        net.run(300_000);
    }
    net.partition(&[1, 2], &[3, 4, 5]);
    net.run(600_000);
    assert!(net.engines[0].is_blocked() && net.engines[1].is_blocked());
    let _ = net.engines[0].multicast(net.now, Bytes::from_static(b"minority write"));
    net.run(300_000);
    assert!(!payloads_of(&net.events[1]).contains(&Bytes::from_static(b"minority write")));
    net.cut.clear();
    net.run(2_000_000);
    assert!(
        !net.events[0]
            .iter()
            .any(|e| matches!(e, AppEvent::Diverged { .. })),
        "nothing to discard under the primary component"
    );
}

fn run_partitionable(seeds: std::ops::Range<u64>) -> (u64, u64) {
    let (mut forks, mut diverged) = (0, 0);
    for seed in seeds {
        let opts = SimOptions {
            size: Some((seed % 7) as usize + 1),
            policy: Some(Policy::Partitionable),
            ..SimOptions::default()
        };
        let r = sim::run(seed, &opts);
        assert!(
            r.violations.is_empty(),
            "seed {seed} violated: {}\nreplay: cargo run --release -p vsync-core --example sim -- --seed {seed} --size {} --policy partitionable --trace",
            r.violations[0],
            (seed % 7) + 1
        );
        forks += r.forks;
        diverged += r.diverged;
    }
    (forks, diverged)
}

/// Seeds with partitions of every shape (two and three sides, one-way and
/// flapping links): every guarantee per side, one view at the end.
#[test]
fn partitionable_seeds_0_to_150() {
    let (forks, diverged) = run_partitionable(0..150);
    // The runs must actually split and merge, or they prove nothing.
    assert!(
        forks > 10 && diverged > 10,
        "forks {forks}, diverged {diverged}"
    );
}

#[test]
fn partitionable_seeds_150_to_300() {
    let (forks, diverged) = run_partitionable(150..300);
    assert!(
        forks > 10 && diverged > 10,
        "forks {forks}, diverged {diverged}"
    );
}

/// Asserts that the checker reports one of `any_of` on some of the first
/// `max` partitionable seeds run with the mutation `m`.
fn assert_caught(m: Mutations, max: u64, any_of: &[Guarantee], what: &str) {
    let found = common::mutated_seeds(m, max, None, Some(Policy::Partitionable));
    assert!(
        found.iter().any(|g| any_of.contains(g)),
        "{what} went unnoticed under the partitionable policy: {found:?}"
    );
}

#[test]
fn checker_catches_sides_that_never_merge() {
    let m = Mutations {
        merge_never: true,
        ..Mutations::default()
    };
    assert_caught(m, 300, &[Guarantee::Liveness], "sides that never merge");
}

#[test]
fn checker_catches_a_split_guessed_from_the_members() {
    let m = Mutations {
        split_guessed_from_members: true,
        ..Mutations::default()
    };
    assert_caught(m, 2000, &[Guarantee::MergeReport], "a wrong split view");
}

#[test]
fn checker_catches_unstable_delivery_on_one_side() {
    let m = Mutations {
        deliver_unstable: true,
        ..Mutations::default()
    };
    let any_of = [
        Guarantee::SafeDelivery,
        Guarantee::SameSet,
        Guarantee::TotalOrder,
    ];
    assert_caught(m, 300, &any_of, "unstable delivery");
}

#[test]
fn checker_catches_a_side_whose_flush_forgets_messages() {
    let m = Mutations {
        flush_drops_unordered: true,
        ..Mutations::default()
    };
    let any_of = [
        Guarantee::Integrity,
        Guarantee::SameSet,
        Guarantee::SafeDelivery,
        Guarantee::Liveness,
    ];
    assert_caught(m, 300, &any_of, "a broken flush");
}

/// The first `Diverged` event in `evs`: (view, split).
fn diverged(evs: &[AppEvent]) -> Option<(vsync_core::ViewId, Option<vsync_core::ViewId>)> {
    evs.iter().find_map(|e| match e {
        AppEvent::Diverged { view, split, .. } => Some((*view, *split)),
        _ => None,
    })
}

/// A loser's new incarnation can be admitted by both sides at once: its
/// join request goes to every seed, and a member of its old side that did
/// not hear the loss (the relay was lost) still runs a side of its own. It
/// takes the first welcome; the other side lists it as a member until it
/// goes. Seen with real processes (`kv_partition`, one event loop per
/// node), both ways round:
/// - it took the old side's welcome, then told the winning side's members
///   that they were not in its (unrelated, higher-numbered) view, and the
///   whole winning side left as if removed;
/// - it took the winner's welcome, and when the old side lost the merge it
///   named the view that had listed the new incarnation as the split, so
///   it reported none of its writes as discarded.
///
/// `winner_first`: node 2's welcome is lost, so the new incarnation joins
/// the winner.
fn rejoiner_admitted_by_both_sides(winner_first: bool) {
    let mut net = Net::new();
    net.add_with(1, true, partitionable());
    for n in 2..=5 {
        net.add_with(n, false, partitionable());
        net.run(300_000);
    }
    let whole = net.engines[0].view().cloned().expect("a view");
    assert_eq!(whole.members.len(), 5, "{whole}");
    net.partition(&[1, 2], &[3, 4, 5]);
    net.run(600_000);
    net.engines[1]
        .multicast(net.now, Bytes::from_static(b"2-side write"))
        .expect("the 2-side accepts");
    net.run(100_000);

    // Node 1 hears the 3-side, node 2 hears nobody: node 1 loses the merge
    // and its relay to node 2 is lost.
    net.cut.clear();
    net.partition(&[2], &[1, 3, 4, 5]);
    net.run(2_500_000);
    assert!(diverged(&net.events[0]).is_some(), "node 1 lost the merge");
    assert!(diverged(&net.events[1]).is_none(), "node 2 did not hear it");
    let alone = net.engines[1].view().cloned().expect("node 2's view");
    assert_eq!(alone.members, vec![Pid::new(2, 1)], "{alone}");

    // Node 1's new incarnation can reach both sides; both admit it.
    net.cut.clear();
    net.partition(&[2], &[3, 4, 5]);
    let rejoiner = Pid::new(1, 2);
    net.add_pid(rejoiner, false, partitionable());
    for _ in 0..1000 {
        if winner_first {
            net.inbox.retain(|(_, from, to, m)| {
                !(from.node.0 == 2 && *to == rejoiner && matches!(m, Message::Welcome { .. }))
            });
        }
        net.run(100);
    }
    let admitted: Vec<View> = [1, 2]
        .iter()
        .filter_map(|&i| net.engines[i].view().cloned())
        .collect();
    assert!(
        admitted.iter().all(|v| v.contains(rejoiner)),
        "both sides admitted the new incarnation: {admitted:?}"
    );
    net.run(900_000);
    // Then everything heals.
    net.cut.clear();
    net.run(4_000_000);

    for i in 2..5 {
        assert!(
            !net.events[i]
                .iter()
                .any(|e| matches!(e, AppEvent::Diverged { .. } | AppEvent::Removed { .. })),
            "node {} of the winning side was removed: {:?}",
            i + 1,
            views(&net.events[i])
        );
    }
    let (_, split) = diverged(&net.events[1]).expect("node 2 lost the merge");
    assert_eq!(
        split,
        Some(whole.id),
        "node 2's history parts from the winner's after the 5-member view"
    );
}

#[test]
fn a_rejoiner_that_takes_the_old_sides_welcome_does_not_remove_the_winners() {
    rejoiner_admitted_by_both_sides(false);
}

#[test]
fn a_rejoiner_that_takes_the_winners_welcome_does_not_move_the_split() {
    rejoiner_admitted_by_both_sides(true);
}
