//! Per-sender message logs: what a member holds of each sender's multicasts
//! in the current view, with gap tracking for retransmission requests.

use bytes::Bytes;
use std::collections::VecDeque;

/// How far beyond its received prefix a member accepts a sender's messages.
pub(crate) const MAX_AHEAD: u64 = 1 << 20;

/// The multicasts of one sender in one view, by sequence number (from 1).
///
/// Sequence numbers up to `base` were discarded (delivered here and held by
/// every member); `contiguous` is the highest sequence number received
/// without a gap.
#[derive(Clone, Debug, Default)]
pub(crate) struct SenderLog {
    base: u64,
    msgs: VecDeque<Option<Bytes>>,
    contiguous: u64,
}

impl SenderLog {
    /// Stores `payload` as message `seq`. Returns false for a duplicate, a
    /// message already discarded, or one implausibly far ahead (flow control
    /// keeps an honest sender within its window of every member).
    pub fn insert(&mut self, seq: u64, payload: Bytes) -> bool {
        if seq <= self.base || seq == 0 || seq.saturating_sub(self.contiguous) > MAX_AHEAD {
            return false;
        }
        let idx = (seq - self.base - 1) as usize;
        if idx >= self.msgs.len() {
            self.msgs.resize(idx + 1, None);
        }
        if self.msgs[idx].is_some() {
            return false;
        }
        self.msgs[idx] = Some(payload);
        if seq == self.contiguous + 1 {
            let mut c = seq;
            while let Some(Some(_)) = self.msgs.get((c - self.base) as usize) {
                c += 1;
            }
            self.contiguous = c;
        }
        true
    }

    /// The payload of `seq`, if held.
    pub fn get(&self, seq: u64) -> Option<&Bytes> {
        if seq <= self.base {
            return None;
        }
        self.msgs.get((seq - self.base - 1) as usize)?.as_ref()
    }

    /// Highest sequence number received without a gap.
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// Discards messages up to and including `upto` (never past `contiguous`).
    pub fn discard_through(&mut self, upto: u64) {
        let upto = upto.min(self.contiguous);
        while self.base < upto {
            self.msgs.pop_front();
            self.base += 1;
        }
    }

    /// Missing sequence numbers in `contiguous + 1 ..= upto`, as inclusive
    /// ranges, at most `limit` ranges.
    pub fn missing(&self, upto: u64, limit: usize) -> Vec<(u64, u64)> {
        let upto = upto.min(self.contiguous.saturating_add(MAX_AHEAD));
        let mut out = Vec::new();
        let mut seq = self.contiguous + 1;
        while seq <= upto && out.len() < limit {
            if self.get(seq).is_some() {
                seq += 1;
                continue;
            }
            let lo = seq;
            while seq <= upto && self.get(seq).is_none() {
                seq += 1;
            }
            out.push((lo, seq - 1));
        }
        out
    }

    /// Messages held with sequence number above `after`: `(seq, payload)`.
    pub fn held_after(&self, after: u64) -> impl Iterator<Item = (u64, &Bytes)> + '_ {
        let base = self.base;
        self.msgs
            .iter()
            .enumerate()
            .filter_map(move |(i, m)| m.as_ref().map(|p| (base + 1 + i as u64, p)))
            .filter(move |(s, _)| *s > after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_contiguity_and_discard() {
        let mut l = SenderLog::default();
        assert!(l.insert(1, Bytes::from_static(b"a")));
        assert!(l.insert(3, Bytes::from_static(b"c")));
        assert!(!l.insert(3, Bytes::from_static(b"c")));
        assert_eq!(l.contiguous(), 1);
        assert_eq!(l.missing(5, 10), vec![(2, 2), (4, 5)]);
        assert!(l.insert(2, Bytes::from_static(b"b")));
        assert_eq!(l.contiguous(), 3);
        l.discard_through(2);
        assert!(l.get(2).is_none());
        assert_eq!(l.get(3).map(|b| &b[..]), Some(&b"c"[..]));
        assert!(!l.insert(1, Bytes::new()));
        assert_eq!(l.held_after(0).count(), 1);
    }
}
