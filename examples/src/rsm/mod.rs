//! Replicated state machines for the `counter` and `ledger` examples, the
//! `rsm-node` test binary and the tests: a [`counter::Counter`], a [`journal::Journal`] of ids, and a bank
//! [`ledger::Ledger`] whose total balance is an invariant.

pub mod counter;
pub mod journal;
pub mod ledger;

/// FNV-1a over bytes: a small, stable digest for comparing states.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    if h == 0 {
        h = 0xcbf2_9ce4_8422_2325;
    }
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
