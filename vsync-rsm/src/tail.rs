//! The catch-up tail: the last delivered batches a replica applied, with
//! the position and lineage hash before each, so that a donor can send a
//! restarting replica only the commands it lacks instead of the whole
//! state.
//!
//! Why a lineage hash: two replicas at the same position need not hold the
//! same history (sides of a partition under the partitionable policy, a
//! replica left out of a lossy recovery). Each replica folds every applied
//! command into a 64-bit chain ([`fold`]); a joiner says where it is as
//! `(position, chain)`, and the donor sends a catch-up only if its tail
//! holds a batch starting exactly there with the same chain. Otherwise the
//! joiner gets the full state, as before.
//!
//! Bounded by commands and bytes ([`crate::ReplicaConfig::catch_up_commands`],
//! [`crate::ReplicaConfig::catch_up_bytes`]); the oldest batches go first.
//! Contiguous by construction: a restore or discard of the state clears it.

use bytes::Bytes;
use std::collections::VecDeque;

/// The chain after applying the command `cmd` (its encoded bytes) to a
/// state whose chain was `chain`.
pub fn fold(chain: u64, cmd: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(cmd, chain)
}

/// One applied batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailBatch {
    /// The position before it.
    pub first: u64,
    /// The chain before it.
    pub chain: u64,
    /// Commands it applied.
    pub commands: u64,
    /// The batch as delivered.
    pub payload: Bytes,
}

/// The tail (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Tail {
    batches: VecDeque<TailBatch>,
    commands: u64,
    bytes: usize,
    max_commands: u64,
    max_bytes: usize,
}

impl Tail {
    /// Keeps at most `commands` commands in at most `bytes` bytes (0: none).
    pub fn set_limits(&mut self, commands: u64, bytes: usize) {
        self.max_commands = commands;
        self.max_bytes = bytes;
        self.evict();
    }

    /// Records a batch applied from `first` (chain `chain` before it).
    /// A batch that does not follow the last one restarts the tail.
    pub fn push(&mut self, b: TailBatch) {
        if self.max_commands == 0 || self.max_bytes == 0 {
            return;
        }
        if let Some(last) = self.batches.back() {
            if last.first + last.commands != b.first {
                self.clear();
            }
        }
        self.commands += b.commands;
        self.bytes += b.payload.len();
        self.batches.push_back(b);
        self.evict();
    }

    fn evict(&mut self) {
        while self.commands > self.max_commands || self.bytes > self.max_bytes {
            let Some(b) = self.batches.pop_front() else {
                break;
            };
            self.commands -= b.commands;
            self.bytes -= b.payload.len();
        }
    }

    /// Forgets everything (the state was replaced or discarded).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.commands = 0;
        self.bytes = 0;
    }

    /// The batches that take a replica at `(position, chain)` to the end
    /// of the tail, if the tail holds them (an empty list: it is there
    /// already, when `end` says so). `None`: not from here (older than the
    /// tail, or another history).
    pub fn since(&self, position: u64, chain: u64, end: (u64, u64)) -> Option<Vec<Bytes>> {
        if (position, chain) == end {
            return Some(Vec::new());
        }
        let i = self.batches.iter().position(|b| b.first == position)?;
        if self.batches[i].chain != chain {
            return None;
        }
        Some(
            self.batches
                .iter()
                .skip(i)
                .map(|b| b.payload.clone())
                .collect(),
        )
    }

    /// Batches held.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, commands: u64) -> TailBatch {
        TailBatch {
            first,
            chain: first * 1000,
            commands,
            payload: Bytes::from(vec![first as u8; 10]),
        }
    }

    #[test]
    fn a_replica_on_the_same_history_gets_the_batches_it_lacks_and_no_other() {
        let mut t = Tail::default();
        t.set_limits(100, 1 << 20);
        for (f, n) in [(0, 3), (3, 2), (5, 4)] {
            t.push(batch(f, n));
        }
        let end = (9, 9_999);
        assert_eq!(t.since(3, 3000, end).unwrap().len(), 2);
        assert_eq!(t.since(0, 0, end).unwrap().len(), 3);
        assert_eq!(t.since(9, 9_999, end).unwrap().len(), 0);
        // Same position, another history: no.
        assert!(t.since(3, 1, end).is_none());
        // Mid-batch or beyond the tail: no.
        assert!(t.since(4, 4000, end).is_none());
        assert!(t.since(20, 0, end).is_none());
    }

    #[test]
    fn the_tail_is_bounded_and_stays_contiguous() {
        let mut t = Tail::default();
        t.set_limits(5, 1 << 20);
        for (f, n) in [(0, 3), (3, 2), (5, 4)] {
            t.push(batch(f, n));
        }
        // 9 commands > 5: the oldest went.
        assert!(t.since(0, 0, (9, 0)).is_none());
        assert_eq!(t.since(5, 5000, (9, 0)).unwrap().len(), 1);
        // A gap restarts it.
        t.push(batch(20, 1));
        assert_eq!(t.len(), 1);
        t.set_limits(0, 0);
        assert!(t.is_empty());
        t.push(batch(21, 1));
        assert!(t.is_empty(), "a tail of size 0 keeps nothing");
    }
}
