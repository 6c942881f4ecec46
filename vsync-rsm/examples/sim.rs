//! Runs replicas in the deterministic simulator over many seeds and checks
//! that their states agree (see `vsync_rsm::simcheck`).
//!
//! ```text
//! cargo run -p vsync-rsm --release --example sim -- --seeds 10000 [--from 0]
//! cargo run -p vsync-rsm --release --example sim -- --seed 42
//! ```

use std::time::Instant;
use vsync_rsm::simcheck::{SimMachine, check_seed};
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
    let (from, n) = match get("--seed") {
        Some(s) => (s, 1),
        None => (get("--from").unwrap_or(0), get("--seeds").unwrap_or(1000)),
    };
    let start = Instant::now();
    let (mut failed, mut transfers, mut compared, mut gave_up) = (0, 0, 0, 0);
    for seed in from..from + n {
        let r = check_seed(
            seed,
            Some((seed % 7) as usize + 1),
            SimMachine {
                new: Chain::default,
                digest: |c| c.digest ^ c.count.rotate_left(32),
                command: |pid, n| pid.node.0.wrapping_mul(1_000_003) ^ pid.inc.rotate_left(20) ^ n,
            },
        );
        transfers += r.transfers;
        compared += r.compared;
        gave_up += r.gave_up;
        if !r.problems.is_empty() {
            failed += 1;
            println!("seed {seed}: {:#?}", r.problems);
        }
    }
    println!(
        "{n} seeds from {from}: {failed} failed; {transfers} state transfers, {gave_up} joiners gave up (donor gone), {compared} positions compared; {:.1?}",
        start.elapsed()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
