//! Fault profiles: what can go wrong in one simulated run, drawn from the
//! seed (swarm testing: each seed picks its own mix of faults, so that rare
//! combinations get runs of their own instead of being drowned in noise).

use crate::delivery::Delivery;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The faults of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Initial group size.
    pub size: usize,
    /// Message loss probability per message (0 to 0.3).
    pub loss: f64,
    /// Duplication probability per message.
    pub dup: f64,
    /// Base one-way delay range, microseconds.
    pub delay: (u64, u64),
    /// Probability that a message gets a delay spike (reordering).
    pub spike: f64,
    /// Spike size, microseconds.
    pub spike_delay: u64,
    /// Suspicion timeout of every engine, microseconds.
    pub suspect_timeout: u64,
    /// Mean time between fault events during the chaos phase, microseconds.
    pub fault_interval: u64,
    /// Which kinds of fault happen.
    pub partitions: bool,
    /// One-way link cuts.
    pub one_way: bool,
    /// Processes paused (SIGSTOP-like).
    pub pauses: bool,
    /// Processes crashed (and later restarted as new incarnations).
    pub crashes: bool,
    /// New nodes join.
    pub joins: bool,
    /// Members leave cleanly.
    pub leaves: bool,
    /// Links that are cut and healed several times in a row.
    #[serde(default)]
    pub flapping: bool,
    /// Multicasts per member per second of virtual time.
    pub rate: u64,
    /// Length of the chaos phase, microseconds.
    pub chaos: u64,
    /// The delivery modes multicasts are drawn from (uniformly, per
    /// message): a quarter of the seeds use safe delivery only, the others
    /// a random mix of the four.
    pub modes: Vec<Delivery>,
}

impl Profile {
    /// Draws a profile from the seed's generator. `size` forces the initial
    /// group size when given.
    pub fn draw(rng: &mut ChaCha8Rng, size: Option<usize>) -> Profile {
        let size = size.unwrap_or_else(|| rng.random_range(1..=7));
        let lossy = rng.random_bool(0.6);
        let suspect_timeout = *[100_000u64, 200_000, 500_000]
            .get(rng.random_range(0..3))
            .unwrap_or(&200_000);
        let mut p = Profile {
            size,
            loss: if lossy {
                rng.random_range(0.0..0.3)
            } else {
                0.0
            },
            dup: if rng.random_bool(0.3) {
                rng.random_range(0.0..0.2)
            } else {
                0.0
            },
            delay: (50, rng.random_range(100..2_000)),
            spike: if rng.random_bool(0.4) {
                rng.random_range(0.0..0.1)
            } else {
                0.0
            },
            spike_delay: rng.random_range(1_000..suspect_timeout / 2),
            suspect_timeout,
            fault_interval: rng.random_range(suspect_timeout..8 * suspect_timeout),
            partitions: rng.random_bool(0.4),
            one_way: rng.random_bool(0.2),
            pauses: rng.random_bool(0.3),
            crashes: rng.random_bool(0.5),
            joins: rng.random_bool(0.5),
            leaves: rng.random_bool(0.3),
            flapping: false,
            rate: *[20u64, 200, 1000]
                .get(rng.random_range(0..3))
                .unwrap_or(&200),
            chaos: rng.random_range(10..40) * suspect_timeout,
            modes: if rng.random_bool(0.25) {
                vec![Delivery::Safe]
            } else {
                let m: Vec<Delivery> = Delivery::ALL
                    .into_iter()
                    .filter(|_| rng.random_bool(0.6))
                    .collect();
                if m.is_empty() {
                    Delivery::ALL.to_vec()
                } else {
                    m
                }
            },
        };
        // Drawn last, so that the draws above are those of earlier versions.
        p.flapping = rng.random_bool(0.25);
        p
    }
}
