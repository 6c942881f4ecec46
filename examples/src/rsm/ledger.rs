//! A replicated bank ledger: accounts with balances and transfers between
//! them. Transfers move money, never create it, so the total balance is an
//! invariant that tests check under crashes and partitions.
//!
//! The accounts are an `imbl::OrdMap` (a persistent B-tree): an image is a
//! clone of the map (O(1), sharing every node) that is serialised 4096
//! accounts per chunk while the live map goes on changing.

use super::fnv1a;
use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use vsync_rsm::{RestoreError, SnapshotImage, StateMachine};

/// Accounts per snapshot chunk.
const CHUNK: usize = 4096;

/// A command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerCmd {
    /// Opens accounts `0..accounts` with `balance` each, if the ledger is
    /// empty (so that every client may send it).
    Init {
        /// How many accounts.
        accounts: u32,
        /// The opening balance of each.
        balance: i64,
    },
    /// Moves `amount` from one account to another.
    Transfer {
        /// The debited account.
        from: u32,
        /// The credited account.
        to: u32,
        /// How much (positive).
        amount: i64,
    },
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerOutput {
    /// Done.
    Ok,
    /// The ledger was already open.
    AlreadyOpen,
    /// The transfer was refused (unknown account, bad amount, no funds).
    Refused(String),
}

/// The state.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    accounts: OrdMap<u32, i64>,
    ops: u64,
}

impl Ledger {
    /// The sum of all balances.
    pub fn total(&self) -> i64 {
        self.accounts
            .values()
            .copied()
            .fold(0i64, i64::wrapping_add)
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// A balance.
    pub fn balance(&self, account: u32) -> Option<i64> {
        self.accounts.get(&account).copied()
    }

    /// Commands applied (including refused ones).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// A digest of every balance.
    pub fn digest(&self) -> u64 {
        let mut h = fnv1a(0, &self.ops.to_le_bytes());
        for (k, v) in &self.accounts {
            h = fnv1a(h, &k.to_le_bytes());
            h = fnv1a(h, &v.to_le_bytes());
        }
        h
    }
}

#[derive(Serialize, Deserialize)]
struct Chunk {
    ops: u64,
    entries: Vec<(u32, i64)>,
}

/// The image: a clone of the map, walked in key order.
#[derive(Clone, Debug)]
pub struct LedgerImage {
    accounts: OrdMap<u32, i64>,
    ops: u64,
    after: Option<u32>,
    done: bool,
}

impl SnapshotImage for LedgerImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let lower = match self.after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let entries: Vec<(u32, i64)> = self
            .accounts
            .range((lower, Bound::Unbounded))
            .take(CHUNK)
            .map(|(k, v)| (*k, *v))
            .collect();
        if entries.len() < CHUNK {
            self.done = true;
        }
        self.after = entries.last().map(|e| e.0).or(self.after);
        postcard::to_stdvec(&Chunk {
            ops: self.ops,
            entries,
        })
        .ok()
    }
}

impl StateMachine for Ledger {
    type Command = LedgerCmd;
    type Output = LedgerOutput;
    type Image = LedgerImage;

    fn apply(&mut self, cmd: LedgerCmd) -> LedgerOutput {
        self.ops += 1;
        match cmd {
            LedgerCmd::Init { accounts, balance } => {
                if !self.accounts.is_empty() {
                    return LedgerOutput::AlreadyOpen;
                }
                if balance < 0 {
                    return LedgerOutput::Refused("negative opening balance".into());
                }
                for a in 0..accounts {
                    self.accounts.insert(a, balance);
                }
                LedgerOutput::Ok
            }
            LedgerCmd::Transfer { from, to, amount } => {
                if amount <= 0 {
                    return LedgerOutput::Refused("the amount must be positive".into());
                }
                if from == to {
                    return LedgerOutput::Refused("same account".into());
                }
                let (Some(a), Some(b)) = (self.balance(from), self.balance(to)) else {
                    return LedgerOutput::Refused("no such account".into());
                };
                if a < amount {
                    return LedgerOutput::Refused("insufficient funds".into());
                }
                let Some(nb) = b.checked_add(amount) else {
                    return LedgerOutput::Refused("balance overflow".into());
                };
                self.accounts.insert(from, a - amount);
                self.accounts.insert(to, nb);
                LedgerOutput::Ok
            }
        }
    }

    fn image(&self) -> LedgerImage {
        LedgerImage {
            accounts: self.accounts.clone(),
            ops: self.ops,
            after: None,
            done: false,
        }
    }

    fn restore_begin(&mut self) {
        *self = Ledger::default();
    }

    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        let c: Chunk = postcard::from_bytes(chunk).map_err(RestoreError::new)?;
        self.ops = c.ops;
        for (k, v) in c.entries {
            self.accounts.insert(k, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_keep_the_total_and_images_round_trip() {
        let mut l = Ledger::default();
        assert_eq!(
            l.apply(LedgerCmd::Init {
                accounts: 10_000,
                balance: 100
            }),
            LedgerOutput::Ok
        );
        let img = l.image();
        for i in 0..5000u32 {
            l.apply(LedgerCmd::Transfer {
                from: i % 10_000,
                to: (i * 7 + 1) % 10_000,
                amount: i64::from(i % 150),
            });
        }
        assert_eq!(l.total(), 1_000_000);
        // The image taken before the transfers still reads the old state.
        let mut back = Ledger::default();
        let mut img = img;
        back.restore_begin();
        while let Some(c) = img.next_chunk() {
            back.restore_chunk(&c).unwrap();
        }
        assert_eq!(back.len(), 10_000);
        assert_eq!(back.balance(5), Some(100));
        assert_eq!(back.ops(), 1);
        assert!(back.restore_chunk(b"garbage").is_err());
    }
}
