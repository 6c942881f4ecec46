//! Runs replicas in the deterministic simulator over many seeds and checks
//! that their states agree (see `vsync_rsm::simcheck`).
//!
//! ```text
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 [--from 0]
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seed 42
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 --policy partitionable
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 300 --policy partitionable --mutation keep-diverged-state
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 10000 --lifecycle logged
//! cargo run -p vsync-rsm --release --example rsm-sim -- --seeds 300 --lifecycle logged --mutation founder-clears-store
//! ```
//!
//! `--lifecycle logged|memory` gives every node a simulated disk (lost
//! unsynced writes, torn records, failed syncs) that crashed replicas
//! restart from, whole-group outages, and undecodable commands.
//! With `--mutation`, the replica is broken on purpose: the run succeeds
//! (exit 0) only if some seed catches it.

use clap::{Parser, ValueEnum};
use std::time::Instant;
use vsync_core::engine::PartitionPolicy;
use vsync_rsm::simcheck::{SimCheckOptions, SimMachine, SimMutation, check_seed_with};
use vsync_rsm::{Durability, RestoreError, SnapshotImage, StateMachine};

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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Policy {
    Primary,
    Partitionable,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Lifecycle {
    Logged,
    Memory,
}

#[derive(Parser, Debug)]
#[command(about = "Replicas in the deterministic simulator, checked over many seeds")]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// How many seeds.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The partition policy.
    #[arg(long, value_enum, default_value = "primary")]
    policy: Policy,
    /// A disk per node under this durability, restarts from it, outages,
    /// undecodable commands.
    #[arg(long, value_enum)]
    lifecycle: Option<Lifecycle>,
    /// With --lifecycle: no whole-group outages.
    #[arg(long)]
    no_outages: bool,
    /// With --lifecycle: no undecodable commands.
    #[arg(long)]
    no_undecodable: bool,
    /// Break the replica on purpose (keep-diverged-state,
    /// founder-clears-store, skip-undecodable, catch-up-wrong-position).
    #[arg(long, value_parser = parse_mutation)]
    mutation: Option<SimMutation>,
    /// Print the simulator's trace of each seed that fails.
    #[arg(long)]
    trace: bool,
}

fn parse_mutation(s: &str) -> Result<SimMutation, String> {
    SimMutation::ALL
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = SimMutation::ALL.iter().map(|m| m.name()).collect();
            format!("unknown mutation {s}: use one of {}", names.join(", "))
        })
}

fn main() {
    let args = Args::parse();
    let (from, n) = match args.seed {
        Some(s) => (s, 1),
        None => (args.from, args.seeds),
    };
    let policy = match args.policy {
        Policy::Primary => PartitionPolicy::PrimaryComponent,
        Policy::Partitionable => PartitionPolicy::Partitionable,
    };
    let mutation = args.mutation;
    let start = Instant::now();
    let (mut failed, mut transfers, mut compared, mut gave_up) = (0, 0, 0, 0);
    let (mut cuts, mut diverged, mut discarded, mut merged) = (0, 0, 0, 0);
    let (mut restarts, mut catch_ups, mut outages, mut recoveries) = (0, 0, 0, 0);
    let (mut torn, mut halts, mut failed_syncs, mut acked) = (0, 0, 0, 0);
    for seed in from..from + n {
        let base = match args.lifecycle {
            None => SimCheckOptions::default(),
            Some(Lifecycle::Logged) => SimCheckOptions::lifecycle(policy, Durability::Logged),
            Some(Lifecycle::Memory) => SimCheckOptions::lifecycle(policy, Durability::Memory),
        };
        let opts = SimCheckOptions {
            size: Some((seed % 7) as usize + 1),
            policy,
            mutation,
            outages: base.outages && !args.no_outages,
            undecodable: base.undecodable && !args.no_undecodable,
            trace: args.trace,
            ..base
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
        restarts += r.restarts_from_disk;
        catch_ups += r.catch_ups;
        outages += r.outages;
        recoveries += r.recoveries;
        torn += r.torn;
        halts += r.halts;
        failed_syncs += r.failed_syncs;
        acked += r.acknowledged;
        if !r.problems.is_empty() {
            failed += 1;
            if args.trace {
                for l in &r.trace {
                    println!("{l}");
                }
            }
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
    if args.lifecycle.is_some() {
        println!(
            "lifecycle: {restarts} restarts from disk ({torn} with a torn or damaged log tail), {catch_ups} catch-ups, {outages} whole-group outages, {recoveries} recoveries, {halts} halts on undecodable commands, {failed_syncs} failed syncs, {acked} commands acknowledged"
        );
    }
    match mutation {
        None if failed > 0 => std::process::exit(1),
        Some(m) if failed == 0 => {
            println!("the mutation {} was NOT caught", m.name());
            std::process::exit(1);
        }
        Some(m) => println!("the mutation {} was caught on {failed} seeds", m.name()),
        None => {}
    }
}
