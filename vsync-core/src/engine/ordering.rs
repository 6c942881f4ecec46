//! Total order within a view: the coordinator's sequencer and every member's
//! copy of the order.
//!
//! The coordinator (the view's most senior member) appends to the order the
//! messages it has received without a gap, sender by sender in rank order,
//! and multicasts ordering records that name *runs* (`the next k messages of
//! sender r, from seq q`), so that ordering costs a few bytes per batch, not
//! per message. Every member applies records in position order (records that
//! arrive early wait), and knows for each position the sender and sequence
//! number. Because only one process per view ever writes the order, all
//! copies are prefixes of one sequence; this is what the flush relies on.

use super::log::SenderLog;
use crate::id::{MsgId, View};
use crate::message::{Run, Slot};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// A member's state for the current view: logs, order, acks, deliveries.
#[derive(Clone, Debug)]
pub(crate) struct ViewState {
    pub view: View,
    /// This process's rank.
    pub me: usize,
    /// One log per sender rank.
    pub logs: Vec<SenderLog>,
    /// Own multicasts assigned a sequence number so far.
    pub sent: u64,
    /// Own multicasts already transmitted (`sent` minus those waiting for
    /// the next batch).
    pub transmitted: u64,
    /// The known order: slot of position `order_base + 1 + i`.
    pub order: VecDeque<Slot>,
    pub order_base: u64,
    /// The most positions [`ViewState::on_order`] keeps in `order`.
    pub max_known: u64,
    /// Ordering records that arrived ahead of a gap, by first position.
    pub early_order: BTreeMap<u64, Vec<Run>>,
    /// Per sender, how many of its messages are in the known order.
    pub ordered_seq: Vec<u64>,
    /// Coordinator only: positions already announced in ordering records.
    pub order_announced: u64,
    /// Positions for which this member holds both order and data.
    pub have: u64,
    /// Positions delivered, and per sender how many were delivered.
    pub delivered: u64,
    pub delivered_seq: Vec<u64>,
    /// Latest acknowledgement from each member (own included).
    pub acks: Vec<AckState>,
    /// Once a flush has started: no more deliveries or acknowledgement
    /// progress in this view; only the flush's tail is delivered.
    pub frozen: bool,
    /// Sizes of own transmitted multicasts not yet known to be held by
    /// every member, `(seq, bytes)`, and their sum (the byte window).
    pub own_unstable: VecDeque<(u64, u64)>,
    pub own_unstable_bytes: u64,
    /// FIFO and causal delivery (see `unordered.rs`): per sender rank, every
    /// message up to this seq is either of an ordered kind or delivered.
    pub ucursor: Vec<u64>,
    /// Per sender rank, the seq of its last FIFO or causal message this
    /// member delivered: the vector timestamp of what it sends next.
    pub udelivered: Vec<u64>,
    /// The vector timestamp this member's last causal message carried (the
    /// base of the next one's delta).
    pub vt_sent: Vec<u64>,
    /// Per sender rank, the full vector timestamp of its last causal message
    /// delivered here (the base its next delta applies to).
    pub vt_of: Vec<Vec<u64>>,
}

/// What a member last acknowledged.
#[derive(Clone, Debug, Default)]
pub(crate) struct AckState {
    pub have: u64,
    pub order_len: u64,
    pub recv: Vec<u64>,
}

impl ViewState {
    /// Fresh state for `view`, where this process has rank `me`.
    pub fn new(view: View, me: usize) -> Self {
        let n = view.members.len();
        ViewState {
            view,
            me,
            logs: (0..n).map(|_| SenderLog::default()).collect(),
            sent: 0,
            transmitted: 0,
            order: VecDeque::new(),
            order_base: 0,
            max_known: u64::MAX,
            early_order: BTreeMap::new(),
            ordered_seq: vec![0; n],
            order_announced: 0,
            own_unstable: VecDeque::new(),
            own_unstable_bytes: 0,
            ucursor: vec![0; n],
            udelivered: vec![0; n],
            vt_sent: vec![0; n],
            vt_of: vec![vec![0; n]; n],
            have: 0,
            delivered: 0,
            delivered_seq: vec![0; n],
            acks: vec![
                AckState {
                    recv: vec![0; n],
                    ..AckState::default()
                };
                n
            ],
            frozen: false,
        }
    }

    /// Whether this member orders the view.
    pub fn is_sequencer(&self) -> bool {
        self.me == 0
    }

    /// Length of the known order.
    pub fn order_len(&self) -> u64 {
        self.order_base + self.order.len() as u64
    }

    /// The slot at `pos`, if known and not yet discarded.
    pub fn slot(&self, pos: u64) -> Option<Slot> {
        if pos <= self.order_base {
            return None;
        }
        self.order
            .get((pos - self.order_base - 1) as usize)
            .copied()
    }

    /// The message id of a slot.
    pub fn msg_id(&self, (rank, seq): Slot) -> MsgId {
        MsgId {
            view: self.view.id,
            sender: self.view.members[rank as usize],
            seq,
        }
    }

    /// Stores a data message. Returns whether anything new arrived.
    pub fn on_data(&mut self, rank: usize, first_seq: u64, payloads: Vec<Bytes>) -> bool {
        let Some(log) = self.logs.get_mut(rank) else {
            return false;
        };
        let mut new = false;
        for (i, p) in payloads.into_iter().enumerate() {
            let Some(seq) = first_seq.checked_add(i as u64) else {
                break;
            };
            new |= log.insert(seq, p);
        }
        new
    }

    /// Sequencer: appends every newly contiguous message to the order and
    /// returns the runs to announce (empty when nothing is new).
    pub fn sequence(&mut self) -> Vec<Run> {
        let mut runs = Vec::new();
        if !self.is_sequencer() || self.frozen {
            return runs;
        }
        for rank in 0..self.logs.len() {
            let upto = self.logs[rank].contiguous();
            let from = self.ordered_seq[rank];
            if upto > from {
                for seq in from + 1..=upto {
                    self.order.push_back((rank as u32, seq));
                }
                runs.push((rank as u32, from + 1, (upto - from) as u32));
                self.ordered_seq[rank] = upto;
            }
        }
        runs
    }

    /// Applies an ordering record. Records are applied in position order;
    /// one that arrives ahead of a gap waits. Returns whether the order grew.
    ///
    /// `max_known` bounds the order this member keeps (positions not yet
    /// collected): a sequencer orders only what it received, and each
    /// sender has at most a window of messages not held by every member, so
    /// a record that would grow the order past it is corrupt or forged (one
    /// such record of 2^32 positions once made the engine allocate
    /// gigabytes); it is applied only up to the bound.
    pub fn on_order(&mut self, first_pos: u64, runs: Vec<Run>, max_known: u64) -> bool {
        if self.is_sequencer() || first_pos == 0 {
            return false;
        }
        self.max_known = max_known;
        if first_pos > self.order_len() + 1 {
            if (self.early_order.len() as u64) < max_known {
                self.early_order.entry(first_pos).or_insert(runs);
            }
            return false;
        }
        let mut grew = self.apply_runs(first_pos, &runs);
        while let Some((&pos, _)) = self.early_order.first_key_value() {
            if pos > self.order_len() + 1 {
                break;
            }
            let Some(runs) = self.early_order.remove(&pos) else {
                break;
            };
            grew |= self.apply_runs(pos, &runs);
        }
        grew
    }

    fn apply_runs(&mut self, first_pos: u64, runs: &[Run]) -> bool {
        let mut pos = first_pos;
        let mut grew = false;
        for &(rank, first_seq, count) in runs {
            let r = rank as usize;
            if r >= self.ordered_seq.len() {
                return grew;
            }
            let count = u64::from(count);
            // Skip the part of the run that is already known.
            let known = (self.order_len() + 1).saturating_sub(pos).min(count);
            pos = pos.saturating_add(known);
            for i in known..count {
                let Some(seq) = first_seq.checked_add(i) else {
                    return grew;
                };
                if seq != self.ordered_seq[r] + 1 || self.order.len() as u64 >= self.max_known {
                    // Not the sender's next message, or more than can be
                    // unstable: a corrupt record.
                    return grew;
                }
                self.order.push_back((rank, seq));
                self.ordered_seq[r] = seq;
                grew = true;
                pos += 1;
            }
        }
        grew
    }

    /// The ordering runs for positions `lo ..= hi` still held (for a
    /// retransmission), starting at the returned first position.
    pub fn runs_between(&self, lo: u64, hi: u64) -> Option<(u64, Vec<Run>)> {
        let lo = lo.max(self.order_base + 1);
        let hi = hi.min(self.order_len());
        if lo > hi {
            return None;
        }
        let mut runs: Vec<Run> = Vec::new();
        for pos in lo..=hi {
            let (rank, seq) = self.slot(pos)?;
            match runs.last_mut() {
                Some((r, s, c)) if *r == rank && *s + u64::from(*c) == seq => *c += 1,
                _ => runs.push((rank, seq, 1)),
            }
        }
        Some((lo, runs))
    }

    /// Advances `have`: positions whose order and data are both held.
    pub fn advance_have(&mut self) -> bool {
        if self.frozen {
            return false;
        }
        let start = self.have;
        while let Some((rank, seq)) = self.slot(self.have + 1) {
            if self.logs[rank as usize].contiguous() < seq {
                break;
            }
            self.have += 1;
        }
        self.have > start
    }

    /// Order slots after `after` that are known: for flush reports.
    pub fn order_after(&self, after: u64) -> Vec<Slot> {
        let from = after.max(self.order_base);
        self.order
            .iter()
            .skip((from - self.order_base) as usize)
            .copied()
            .collect()
    }
}
