//! The simulator over many seeds, with the checker: every guarantee, on
//! every run, liveness included. Also the mutation checks: each deliberate
//! bug must be caught, so that a passing run means something.

mod common;

use vsync_core::Delivery;
use vsync_core::checker::Guarantee;
use vsync_core::engine::Mutations;
use vsync_core::sim::{self, SimOptions};

/// Runs `seeds` and fails with the first violation and its replay command.
fn run_seeds(seeds: std::ops::Range<u64>) {
    for seed in seeds {
        // Cover every group size from 1 to 7 evenly.
        let opts = SimOptions {
            size: Some((seed % 7) as usize + 1),
            ..SimOptions::default()
        };
        let r = sim::run(seed, &opts);
        assert!(
            r.violations.is_empty(),
            "seed {seed} violated: {}\nreplay: cargo run --release -p vsync-core --example sim -- --seed {seed} --size {} --trace",
            r.violations[0],
            (seed % 7) + 1
        );
        assert!(r.installs > 0, "seed {seed}: no view was installed");
    }
}

// 500 seeds, in four tests so that the test harness spreads them over cores.
#[test]
fn seeds_0_to_125() {
    run_seeds(0..125);
}
#[test]
fn seeds_125_to_250() {
    run_seeds(125..250);
}
#[test]
fn seeds_250_to_375() {
    run_seeds(250..375);
}
#[test]
fn seeds_375_to_500() {
    run_seeds(375..500);
}

#[test]
fn a_seed_replays_exactly() {
    let opts = SimOptions {
        size: Some(5),
        ..SimOptions::default()
    };
    let a = sim::run(42, &opts);
    let b = sim::run(42, &opts);
    assert_eq!(a.histories, b.histories);
    assert_eq!(a.messages, b.messages);
    assert!(a.deliveries > 0);
}

/// All four delivery modes mixed in every seed (the seeds above draw a mix
/// per seed, a quarter of them safe only).
#[test]
fn every_mode_mixed_seeds_500_to_650() {
    for seed in 500..650 {
        let opts = SimOptions {
            size: Some((seed % 7) as usize + 1),
            modes: Some(Delivery::ALL.to_vec()),
            ..SimOptions::default()
        };
        let r = sim::run(seed, &opts);
        assert!(
            r.violations.is_empty(),
            "seed {seed} violated: {}\nreplay: cargo run --release -p vsync-core --example sim -- --seed {seed} --size {} --modes fifo,causal,total,safe --trace",
            r.violations[0],
            (seed % 7) + 1
        );
    }
}

/// Runs up to `max` seeds with a mutation; returns the guarantees violated.
fn mutated(m: Mutations, max: u64) -> Vec<Guarantee> {
    mutated_with(m, max, None)
}

/// Like [`mutated`], with the delivery modes forced.
fn mutated_with(m: Mutations, max: u64, modes: Option<Vec<Delivery>>) -> Vec<Guarantee> {
    common::mutated_seeds(m, max, modes, None)
}

#[test]
fn checker_catches_a_flush_that_forgets_unordered_messages() {
    let found = mutated(
        Mutations {
            flush_drops_unordered: true,
            ..Mutations::default()
        },
        300,
    );
    assert!(
        found.iter().any(|g| matches!(
            g,
            Guarantee::Integrity
                | Guarantee::SameSet
                | Guarantee::SafeDelivery
                | Guarantee::Liveness
        )),
        "the broken flush went unnoticed: {found:?}"
    );
}

#[test]
fn checker_catches_delivery_before_stability() {
    let found = mutated(
        Mutations {
            deliver_unstable: true,
            ..Mutations::default()
        },
        300,
    );
    assert!(
        found.iter().any(|g| matches!(
            g,
            Guarantee::SafeDelivery | Guarantee::SameSet | Guarantee::TotalOrder
        )),
        "unstable delivery went unnoticed: {found:?}"
    );
}

#[test]
fn checker_catches_a_minority_that_goes_on() {
    let found = mutated(
        Mutations {
            ignore_quorum: true,
            ..Mutations::default()
        },
        300,
    );
    assert!(
        found
            .iter()
            .any(|g| matches!(g, Guarantee::PrimaryComponent | Guarantee::ViewAgreement)),
        "a minority view went unnoticed: {found:?}"
    );
}

#[test]
fn checker_catches_causal_delivery_before_its_dependencies() {
    let found = mutated_with(
        Mutations {
            causal_ignores_deps: true,
            ..Mutations::default()
        },
        300,
        Some(vec![Delivery::Causal]),
    );
    assert!(
        found.contains(&Guarantee::CausalOrder),
        "causal delivery out of order went unnoticed: {found:?}"
    );
}
