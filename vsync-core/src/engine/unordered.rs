//! FIFO and causal delivery within a view.
//!
//! FIFO and causal messages travel, are repaired and are flushed exactly
//! like the others (they also get a total-order position, which the ordered
//! delivery path skips), but they are delivered on arrival: a cursor per
//! sender walks its messages in sequence order, passes over the totally
//! ordered kinds (delivered by the ordered path), delivers a FIFO message at
//! once, and a causal message once every message in its vector timestamp
//! has been delivered here. A message is delivered only after every earlier
//! message of its sender has *arrived*: so whatever a member delivered lies
//! inside the received prefix it reports in a flush, and therefore inside
//! the flush's tail. The flush delivers the rest with the same walk, bounded
//! by the tail; a causal message whose dependencies are not in the view's
//! final set (their senders and every holder crashed) is delivered by no
//! one, and neither are the later FIFO/causal messages of its sender.

use super::ordering::ViewState;
use crate::delivery::{self, Delivery, Header};
use crate::id::MsgId;
use bytes::Bytes;

impl ViewState {
    /// Delivers every FIFO or causal message whose turn has come, calling
    /// `deliver` for each; `limit[rank]` bounds the walk (the flush's final
    /// set), `None` walks the received prefix. `ignore_deps` is a mutation
    /// for the checker's tests. Returns how many were delivered.
    pub fn deliver_unordered(
        &mut self,
        limit: Option<&[u64]>,
        ignore_deps: bool,
        deliver: &mut impl FnMut(MsgId, Bytes, Delivery),
    ) -> usize {
        let n = self.logs.len();
        let mut count = 0;
        loop {
            let mut progress = false;
            for r in 0..n {
                let bound = limit.map_or(u64::MAX, |l| l.get(r).copied().unwrap_or(0));
                let end = self.logs[r].contiguous().min(bound);
                while self.ucursor[r] < end {
                    let s = self.ucursor[r] + 1;
                    let Some(wire) = self.logs[r].get(s) else {
                        break;
                    };
                    let mode = delivery::mode_of(wire);
                    if mode.is_ordered() {
                        self.ucursor[r] = s;
                        continue;
                    }
                    let (header, payload, _) = delivery::decode(wire);
                    if let Header::Causal(deps) = header {
                        let mut vt = self.vt_of[r].clone();
                        for (k, q) in deps {
                            if let Some(e) = vt.get_mut(k as usize) {
                                *e = (*e).max(q);
                            }
                        }
                        let ready = ignore_deps
                            || vt
                                .iter()
                                .enumerate()
                                .all(|(k, &q)| k == r || self.ucursor[k] >= q);
                        if !ready {
                            break;
                        }
                        self.vt_of[r] = vt;
                    }
                    self.ucursor[r] = s;
                    self.udelivered[r] = s;
                    deliver(self.msg_id((r as u32, s)), payload, mode);
                    count += 1;
                    progress = true;
                }
            }
            if !progress {
                return count;
            }
        }
    }

    /// The header of this member's next causal message: the FIFO/causal
    /// deliveries of other senders since its previous one.
    pub fn causal_header(&mut self) -> Header {
        let mut deps = Vec::new();
        for k in 0..self.udelivered.len() {
            if k != self.me && self.udelivered[k] > self.vt_sent[k] {
                deps.push((k as u32, self.udelivered[k]));
                self.vt_sent[k] = self.udelivered[k];
            }
        }
        Header::Causal(deps)
    }
}
