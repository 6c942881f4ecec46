//! Stability and safe delivery.
//!
//! Every member tells every other member how far it holds both the order and
//! the data (`have`), piggybacked on its acknowledgement/heartbeat. A position
//! is *stable* once every member of the view has acknowledged it; safe
//! delivery delivers the ordered prefix up to the stable point. Because a
//! member stops acknowledging when a flush starts, anything delivered
//! anywhere was held by every member before the flush froze it, so every
//! survivor reports it and the flush delivers it everywhere (uniform
//! agreement).
//!
//! Stability also bounds memory: a message that is delivered here and held
//! by every member is discarded.

use super::ordering::ViewState;
use crate::delivery::{self, Delivery};
use crate::id::MsgId;
use bytes::Bytes;

impl ViewState {
    /// Records a member's acknowledgement (values only grow).
    pub fn on_ack(&mut self, rank: usize, have: u64, order_len: u64, recv: &[u64]) {
        let Some(a) = self.acks.get_mut(rank) else {
            return;
        };
        a.have = a.have.max(have);
        a.order_len = a.order_len.max(order_len);
        for (mine, theirs) in a.recv.iter_mut().zip(recv) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// Updates this member's own entry in the acknowledgement table.
    pub fn self_ack(&mut self) {
        let me = self.me;
        let have = self.have;
        let order_len = self.order_len();
        let recv: Vec<u64> = self.logs.iter().map(|l| l.contiguous()).collect();
        let a = &mut self.acks[me];
        a.have = have;
        a.order_len = order_len;
        a.recv = recv;
    }

    /// The stable point: the lowest `have` acknowledged by any member.
    pub fn stable(&self) -> u64 {
        self.acks.iter().map(|a| a.have).min().unwrap_or(0)
    }

    /// For each sender rank, how many of its messages every member holds.
    pub fn held_by_all(&self, rank: usize) -> u64 {
        self.acks
            .iter()
            .map(|a| a.recv.get(rank).copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    /// Own multicasts not yet held by every member (the flow-control window).
    pub fn unstable_own(&self) -> u64 {
        self.transmitted.saturating_sub(self.held_by_all(self.me))
    }

    /// Records an own multicast of `bytes` bytes as transmitted.
    pub fn note_own_sent(&mut self, seq: u64, bytes: u64) {
        self.own_unstable.push_back((seq, bytes));
        self.own_unstable_bytes += bytes;
    }

    /// Bytes of own multicasts not yet held by every member (the byte
    /// window); forgets those that are.
    pub fn unstable_own_bytes(&mut self) -> u64 {
        let held = self.held_by_all(self.me);
        while let Some(&(seq, bytes)) = self.own_unstable.front() {
            if seq > held {
                break;
            }
            self.own_unstable.pop_front();
            self.own_unstable_bytes -= bytes;
        }
        self.own_unstable_bytes
    }

    /// Delivers, in total order, every position whose message is held and
    /// either total (delivered once ordered) or safe and stable; calls
    /// `deliver` for each. FIFO and causal messages keep their position but
    /// are delivered by `deliver_unordered`. A safe message that is not yet
    /// stable holds back the total ones after it.
    pub fn deliver_ordered(&mut self, deliver: &mut impl FnMut(MsgId, u64, Bytes, Delivery)) {
        if self.frozen {
            return;
        }
        let stable = self.stable();
        while self.delivered < self.have {
            let pos = self.delivered + 1;
            let Some((rank, seq)) = self.slot(pos) else {
                break;
            };
            let Some(wire) = self.logs.get(rank as usize).and_then(|l| l.get(seq)) else {
                break;
            };
            if delivery::mode_of(wire) == Delivery::Safe && pos > stable {
                break;
            }
            self.deliver_through(pos, deliver);
        }
    }

    /// Delivers positions up to `upto` regardless of stability (the flush's
    /// tail, and positions every survivor is known to hold). FIFO and causal
    /// messages are passed over (see `deliver_unordered`).
    pub fn deliver_through(
        &mut self,
        upto: u64,
        deliver: &mut impl FnMut(MsgId, u64, Bytes, Delivery),
    ) {
        while self.delivered < upto {
            let pos = self.delivered + 1;
            let Some(slot) = self.slot(pos) else { break };
            let (rank, seq) = slot;
            let Some(wire) = self.logs[rank as usize].get(seq) else {
                break;
            };
            let (header, payload, _) = delivery::decode(wire);
            self.delivered = pos;
            self.delivered_seq[rank as usize] = seq;
            let mode = header.mode();
            if mode.is_ordered() {
                deliver(self.msg_id(slot), pos, payload, mode);
            }
        }
    }

    /// Discards what every member holds and this member delivered.
    pub fn collect_garbage(&mut self) {
        let stable = self.stable().min(self.delivered);
        while self.order_base < stable && !self.order.is_empty() {
            self.order.pop_front();
            self.order_base += 1;
        }
        for rank in 0..self.logs.len() {
            let upto = self
                .held_by_all(rank)
                .min(self.delivered_seq[rank])
                .min(self.ucursor[rank]);
            self.logs[rank].discard_through(upto);
        }
    }
}
