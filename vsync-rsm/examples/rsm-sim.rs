//! Runs replicas in the deterministic simulator over many seeds and checks
//! that their states agree (see `vsync_rsm::simcheck`).
//!
//! ```text
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 [--from 0]
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seed 42
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 --policy partitionable
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 300 --policy partitionable --mutation keep-diverged-state
//! ```
//!
//! With `--mutation`, the replica is broken on purpose: the run succeeds
//! (exit 0) only if some seed catches it.

use std::time::Instant;
use vsync_core::engine::PartitionPolicy;
use vsync_rsm::simcheck::{SimCheckOptions, SimMachine, SimMutation, check_seed_with};
use vsync_rsm::{RestoreError, SnapshotImage, StateMachine};

#[derive(Default)]
struct Chain {
    digest: u64,
    count: u64,
}

#[derive(Clone)]
struct Img(Option<[u8; 16]>);

impl SnapshotImage for Img {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        self.0.take().map(|b| b.to_vec())
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
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.digest.to_le_bytes());
        b[8..].copy_from_slice(&self.count.to_le_bytes());
        Img(Some(b))
    }
    fn restore_begin(&mut self) {
        *self = Chain::default();
    }
    fn restore_chunk(&mut self, c: &[u8]) -> Result<(), RestoreError> {
        if c.len() != 16 {
            return Err(RestoreError("expected 16 bytes".into()));
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&c[..8]);
        self.digest = u64::from_le_bytes(a);
        a.copy_from_slice(&c[8..]);
        self.count = u64::from_le_bytes(a);
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let word = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let (from, n) = match get("--seed") {
        Some(s) => (s, 1),
        None => (get("--from").unwrap_or(0), get("--seeds").unwrap_or(1000)),
    };
    let policy = match word("--policy") {
        None | Some("primary") | Some("primary-component") => PartitionPolicy::PrimaryComponent,
        Some("partitionable") => PartitionPolicy::Partitionable,
        Some(other) => {
            eprintln!("unknown --policy {other}: use primary or partitionable");
            std::process::exit(2);
        }
    };
    let mutation = match word("--mutation") {
        None => None,
        Some("keep-diverged-state") => Some(SimMutation::KeepDivergedState),
        Some(other) => {
            eprintln!("unknown --mutation {other}: use keep-diverged-state");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let (mut failed, mut transfers, mut compared, mut gave_up) = (0, 0, 0, 0);
    let (mut cuts, mut diverged, mut discarded, mut merged) = (0, 0, 0, 0);
    for seed in from..from + n {
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            policy,
            mutation,
            ..SimCheckOptions::default()
        };
        let r = check_seed_with(
            seed,
            &opts,
            SimMachine {
                new: Chain::default,
                digest: |c| c.digest ^ c.count.rotate_left(32),
                command: |pid, n| pid.node.0.wrapping_mul(1_000_003) ^ pid.inc.rotate_left(20) ^ n,
            },
        );
        transfers += r.transfers;
        compared += r.compared;
        gave_up += r.gave_up;
        cuts += r.cuts_compared;
        diverged += r.diverged;
        discarded += r.discarded;
        merged += r.merged_back;
        if !r.problems.is_empty() {
            failed += 1;
            if mutation.is_none() || failed <= 3 {
                let shown = &r.problems[..r.problems.len().min(8)];
                println!("seed {seed}: {shown:#?}");
                if r.problems.len() > shown.len() {
                    println!("  ... and {} more", r.problems.len() - shown.len());
                }
            }
        }
    }
    println!(
        "{n} seeds from {from} ({policy:?}): {failed} failed; {transfers} state transfers, {gave_up} joiners gave up (donor gone), {compared} positions and {cuts} view cuts compared; {diverged} replicas lost a merge ({discarded} commands discarded), {merged} of them back in the final view with the winner's state; {:.1?}",
        start.elapsed()
    );
    match mutation {
        None if failed > 0 => std::process::exit(1),
        Some(m) if failed == 0 => {
            println!("the mutation {m:?} was NOT caught");
            std::process::exit(1);
        }
        Some(m) => println!("the mutation {m:?} was caught on {failed} seeds"),
        None => {}
    }
}
