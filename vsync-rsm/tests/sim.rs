//! Replicas driven by the deterministic simulator: over hundreds of seeds
//! (crashes, partitions, joins, leaves, message loss), every replica at a
//! given position holds the same state, state transfers land at the cut,
//! and the final view's members agree; under the partitionable policy the
//! same per side, and after every merge the winner's state everywhere.
//! More seeds:
//! `cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 [--policy partitionable]`.

use vsync_core::engine::PartitionPolicy;
use vsync_rsm::simcheck::{SimCheckOptions, SimMachine, SimMutation, check_seed, check_seed_with};

mod chain {
    use vsync_rsm::{RestoreError, SnapshotImage, StateMachine};

    /// A hash chain over every command: equal states iff equal histories.
    #[derive(Default)]
    pub struct Chain {
        pub digest: u64,
        pub count: u64,
    }

    #[derive(Clone)]
    pub struct Img(Vec<Vec<u8>>);

    impl SnapshotImage for Img {
        fn next_chunk(&mut self) -> Option<Vec<u8>> {
            if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            }
        }
    }

    impl StateMachine for Chain {
        type Command = u64;
        type Output = u64;
        type Image = Img;
        fn apply(&mut self, c: u64) -> u64 {
            self.digest = (self.digest ^ c)
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(17);
            self.count += 1;
            self.digest
        }
        fn image(&self) -> Img {
            // Two chunks, to exercise the chunked restore.
            Img(vec![
                self.digest.to_le_bytes().to_vec(),
                self.count.to_le_bytes().to_vec(),
            ])
        }
        fn restore_begin(&mut self) {
            *self = Chain::default();
        }
        fn restore_chunk(&mut self, c: &[u8]) -> Result<(), RestoreError> {
            let v = u64::from_le_bytes(c.try_into().map_err(RestoreError::new)?);
            if self.digest == 0 && self.count == 0 && c.len() == 8 && v != 0 {
                self.digest = v;
            } else {
                self.count = v;
            }
            Ok(())
        }
    }
}

fn machine() -> SimMachine<chain::Chain> {
    SimMachine {
        new: chain::Chain::default,
        digest: |c| c.digest ^ c.count.rotate_left(32),
        command: |pid, n| pid.node.0.wrapping_mul(1_000_003) ^ pid.inc.rotate_left(20) ^ n,
    }
}

#[test]
fn replicas_agree_across_simulated_seeds() {
    let mut transfers = 0;
    let mut compared = 0;
    for seed in 0..400u64 {
        let r = check_seed(seed, Some((seed % 7) as usize + 1), machine());
        assert!(
            r.problems.is_empty(),
            "seed {seed}: {:#?}\nreplay: cargo run -p vsync-rsm --release --example rsm-sim -- --seed {seed}",
            r.problems
        );
        transfers += r.transfers;
        compared += r.compared;
    }
    // The seeds did exercise state transfer and comparisons.
    assert!(transfers > 50, "only {transfers} transfers");
    assert!(compared > 1000, "only {compared} positions compared");
}

/// A machine whose restore loses part of the state (the count): the
/// driver must catch the divergence on some seed, or it checks nothing.
#[derive(Default)]
struct Lossy(chain::Chain);

impl vsync_rsm::StateMachine for Lossy {
    type Command = u64;
    type Output = u64;
    type Image = chain::Img;
    fn apply(&mut self, c: u64) -> u64 {
        self.0.apply(c)
    }
    fn image(&self) -> chain::Img {
        self.0.image()
    }
    fn restore_begin(&mut self) {
        self.0.restore_begin();
    }
    fn restore_chunk(&mut self, c: &[u8]) -> Result<(), vsync_rsm::RestoreError> {
        if self.0.digest == 0 {
            self.0.restore_chunk(c)
        } else {
            Ok(()) // the bug: the count is dropped
        }
    }
}

#[test]
fn a_lossy_restore_is_caught() {
    let caught = (0..300u64).any(|seed| {
        let m = SimMachine {
            new: Lossy::default,
            digest: |l: &Lossy| l.0.digest ^ l.0.count.rotate_left(32),
            command: |pid, n| pid.node.0 ^ n.rotate_left(7),
        };
        let r = check_seed(seed, Some(4), m);
        r.problems
            .iter()
            .any(|p| p.contains("divergence") || p.contains("differ"))
    });
    assert!(caught, "a restore that loses state went unnoticed");
}

fn partitionable(mutation: Option<SimMutation>) -> SimCheckOptions {
    SimCheckOptions {
        policy: PartitionPolicy::Partitionable,
        mutation,
        ..SimCheckOptions::default()
    }
}

/// Seed 64937 (found by the 100,000-seed run of 2026-11-25): a member of a
/// losing side obeyed the winner's notice alone while its coordinator, which
/// had itself told that side to go away, refused and installed a next view
/// still listing it (a false removal notice). A side now decides through its
/// acting coordinator.
#[test]
fn a_side_loses_a_merge_as_one_seed_64937() {
    let seed = 64937;
    let opts = SimCheckOptions {
        size: Some((seed % 7) as usize + 1),
        ..partitionable(None)
    };
    let r = check_seed_with(seed, &opts, machine());
    assert!(r.problems.is_empty(), "seed {seed}: {:#?}", r.problems);
    assert!(
        r.diverged > 0,
        "the seed no longer loses a merge: pick another"
    );
}

/// Partitionable policy: every side goes on, the sides merge after the
/// heal, and the losers take the winner's state. Over these seeds: every
/// view starts from one state (the cut), replicas that share a view and
/// its successor agree at every position, every divergence lists its
/// discarded commands consistently, and the final view's members (rejoined
/// losers included) hold one state. More seeds:
/// `cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 --policy partitionable`.
#[test]
fn partitionable_sides_merge_into_the_winners_state() {
    let (mut diverged, mut discarded, mut merged, mut cuts) = (0, 0, 0, 0);
    for seed in 0..200u64 {
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            ..partitionable(None)
        };
        let r = check_seed_with(seed, &opts, machine());
        assert!(
            r.problems.is_empty(),
            "seed {seed}: {:#?}\nreplay: cargo run -p vsync-rsm --release --example rsm-sim -- --seed {seed} --policy partitionable",
            r.problems
        );
        diverged += r.diverged;
        discarded += r.discarded;
        merged += r.merged_back;
        cuts += r.cuts_compared;
    }
    // The seeds did exercise lost merges with discarded commands, losers
    // that came back, and cut comparisons.
    assert!(diverged > 20, "only {diverged} lost merges");
    assert!(discarded > 1000, "only {discarded} discarded commands");
    assert!(merged > 5, "only {merged} losers back in the final view");
    assert!(cuts > 500, "only {cuts} view cuts compared");
}

/// A replica that keeps its diverged state after losing a merge (as if it
/// reloaded its own checkpoint or log instead of taking the winner's state)
/// is caught.
#[test]
fn a_replica_that_keeps_its_diverged_state_is_caught() {
    let caught = (0..300u64).find(|&seed| {
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            ..partitionable(Some(SimMutation::KeepDivergedState))
        };
        let r = check_seed_with(seed, &opts, machine());
        r.problems
            .iter()
            .any(|p| p.contains("divergence") || p.contains("differ"))
    });
    assert!(
        caught.is_some(),
        "a replica keeping its diverged state went unnoticed"
    );
}

/// The restart lifecycle with a simulated disk per node: restarts restore
/// from the disk's checkpoint and log (torn or damaged tails included),
/// catch up from a live member, and a group whose every member restarted
/// recovers from the last views' claims; no acknowledged command is lost.
/// Whole-group outages and undecodable commands are off here: under them
/// some seeds still fail (see the issue notes), and
/// `rsm-sim --lifecycle logged` reproduces them.
fn lifecycle(durability: vsync_rsm::Durability) -> SimCheckOptions {
    SimCheckOptions {
        outages: false,
        undecodable: false,
        ..SimCheckOptions::lifecycle(PartitionPolicy::PrimaryComponent, durability)
    }
}

#[test]
fn restarts_from_a_logged_disk_lose_nothing_acknowledged() {
    let (mut restarts, mut torn, mut catch_ups, mut recoveries, mut acked, mut failed) =
        (0, 0, 0, 0, 0, 0);
    for seed in 0..60u64 {
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            ..lifecycle(vsync_rsm::Durability::Logged)
        };
        let r = check_seed_with(seed, &opts, machine());
        assert!(
            r.problems.is_empty(),
            "seed {seed}: {:#?}\nreplay: cargo run -p vsync-rsm --release --example rsm-sim -- --seed {seed} --lifecycle logged --no-outages --no-undecodable",
            r.problems
        );
        restarts += r.restarts_from_disk;
        torn += r.torn;
        catch_ups += r.catch_ups;
        recoveries += r.recoveries;
        acked += r.acknowledged;
        failed += r.failed_syncs;
    }
    // The seeds did exercise every part of the lifecycle.
    assert!(restarts > 50, "only {restarts} restarts from disk");
    assert!(torn > 5, "only {torn} torn or damaged log tails");
    assert!(catch_ups > 50, "only {catch_ups} catch-ups");
    assert!(recoveries > 5, "only {recoveries} recoveries");
    assert!(failed > 5, "only {failed} failed syncs");
    assert!(acked > 10_000, "only {acked} commands acknowledged");
}

#[test]
fn restarts_from_checkpoints_in_memory_mode_agree() {
    let mut restarts = 0;
    for seed in 0..40u64 {
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            ..lifecycle(vsync_rsm::Durability::Memory)
        };
        let r = check_seed_with(seed, &opts, machine());
        assert!(
            r.problems.is_empty(),
            "seed {seed}: {:#?}\nreplay: cargo run -p vsync-rsm --release --example rsm-sim -- --seed {seed} --lifecycle memory --no-outages --no-undecodable",
            r.problems
        );
        restarts += r.restarts_from_disk;
    }
    assert!(restarts > 30, "only {restarts} restarts from disk");
}

/// A founder that clears its store (as if it re-created the group empty
/// instead of restoring it) is caught: acknowledged commands go missing.
#[test]
fn a_founder_that_clears_its_store_is_caught() {
    let caught = (0..40u64).find(|&seed| {
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            mutation: Some(SimMutation::FounderClearsStore),
            ..lifecycle(vsync_rsm::Durability::Logged)
        };
        !check_seed_with(seed, &opts, machine()).problems.is_empty()
    });
    assert!(
        caught.is_some(),
        "a founder clearing its store went unnoticed"
    );
}
