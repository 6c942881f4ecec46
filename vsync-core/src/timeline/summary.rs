//! Summarising: sends and deliveries, one by one or binned.
//!
//! A short run (at most `max_marks` sends plus deliveries in the window) is
//! drawn mark by mark. A longer one is summarised: the window is cut into
//! time slices a few pixels wide and each lane's deliveries are counted per
//! slice and sender (sends per slice too), so the drawing's size depends on
//! the picture's width and the number of lanes and senders, not on the
//! length of the run. Messages named by a violation are always kept one by
//! one (up to a bound), so that they can be marked in red whatever the
//! length of the run.

use super::layout::Model;
use crate::checker::Violation;
use crate::history::{Event, History};
use crate::id::MsgId;
use std::collections::HashSet;

/// The most marks of violating messages drawn (a badly broken run may name
/// many; the legend still lists the violations).
const MAX_FLAGGED: usize = 2000;

/// Whether a mark is a send or a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Send,
    Deliver,
}

/// One send or delivery.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    pub lane: usize,
    pub t: u64,
    pub kind: Kind,
    pub msg: MsgId,
    /// Total-order position, for deliveries.
    pub pos: u64,
}

/// Deliveries counted per lane, time slice and sender.
#[derive(Clone, Debug)]
pub(crate) struct Bins {
    pub slices: usize,
    /// Number of sender colours (nodes).
    pub senders: usize,
    /// `counts[(lane * slices + slice) * senders + sender]`.
    pub counts: Vec<u32>,
    /// `sends[lane * slices + slice]`.
    pub sends: Vec<u32>,
    /// The delivery count drawn at full height: the 95th percentile of
    /// the non-empty (lane, slice) counts, so that a burst (a flush
    /// re-delivering a backlog) does not flatten every other column;
    /// larger counts are drawn at full height too.
    pub scale: u32,
}

impl Bins {
    /// Deliveries of one (lane, slice), per sender.
    pub(crate) fn cell(&self, lane: usize, slice: usize) -> &[u32] {
        let at = (lane * self.slices + slice) * self.senders;
        self.counts.get(at..at + self.senders).unwrap_or(&[])
    }
}

/// What the drawing shows of sends and deliveries.
#[derive(Clone, Debug)]
pub(crate) struct Marks {
    /// Every send and delivery in the window, when not binned.
    pub detail: Vec<Mark>,
    /// The binned summary, for long runs.
    pub bins: Option<Bins>,
    /// Sends and deliveries of messages named by a violation.
    pub flagged: Vec<Mark>,
    /// Deliveries in the window.
    pub deliveries: usize,
    /// Sends in the window.
    pub sends: usize,
}

impl Marks {
    /// Collects the marks of `histories` for `model`'s window; bins them
    /// into `slices` columns when there are more than `max_marks`.
    pub(crate) fn collect(
        histories: &[History],
        model: &Model,
        violations: &[Violation],
        max_marks: usize,
        slices: usize,
    ) -> Marks {
        let flagged_msgs: HashSet<MsgId> = violations.iter().filter_map(|v| v.msg).collect();
        let in_window = |t: u64| t >= model.from && t <= model.to;
        let all = || {
            histories.iter().flat_map(|h| &h.records).filter_map(|r| {
                if !in_window(r.t) {
                    return None;
                }
                let lane = *model.lane_of.get(&r.pid)?;
                match r.event {
                    Event::Send { msg, .. } => Some(Mark {
                        lane,
                        t: r.t,
                        kind: Kind::Send,
                        msg,
                        pos: 0,
                    }),
                    Event::Deliver { msg, pos, .. } => Some(Mark {
                        lane,
                        t: r.t,
                        kind: Kind::Deliver,
                        msg,
                        pos,
                    }),
                    _ => None,
                }
            })
        };
        let (mut sends, mut deliveries) = (0, 0);
        for m in all() {
            match m.kind {
                Kind::Send => sends += 1,
                Kind::Deliver => deliveries += 1,
            }
        }
        let flagged: Vec<Mark> = if flagged_msgs.is_empty() {
            Vec::new()
        } else {
            all()
                .filter(|m| flagged_msgs.contains(&m.msg))
                .take(MAX_FLAGGED)
                .collect()
        };
        if sends + deliveries <= max_marks {
            return Marks {
                detail: all().collect(),
                bins: None,
                flagged,
                deliveries,
                sends,
            };
        }
        let slices = slices.max(1);
        let senders = model.nodes.len().max(1);
        let lanes = model.lanes.len();
        let mut bins = Bins {
            slices,
            senders,
            counts: vec![0; lanes * slices * senders],
            sends: vec![0; lanes * slices],
            scale: 0,
        };
        let span = (model.to - model.from).max(1) as f64;
        for m in all() {
            let slice = (((m.t - model.from) as f64 / span) * slices as f64) as usize;
            let slice = slice.min(slices - 1);
            let cell = m.lane * slices + slice;
            match m.kind {
                Kind::Send => {
                    if let Some(c) = bins.sends.get_mut(cell) {
                        *c = c.saturating_add(1);
                    }
                }
                Kind::Deliver => {
                    let at = cell * senders + model.node_rank(m.msg.sender.node).min(senders - 1);
                    if let Some(c) = bins.counts.get_mut(at) {
                        *c = c.saturating_add(1);
                    }
                }
            }
        }
        let mut totals: Vec<u32> = (0..lanes * slices)
            .map(|cell| {
                bins.counts[cell * senders..(cell + 1) * senders]
                    .iter()
                    .fold(0u32, |a, c| a.saturating_add(*c))
            })
            .filter(|t| *t > 0)
            .collect();
        totals.sort_unstable();
        bins.scale = totals
            .get(totals.len().saturating_sub(1) * 95 / 100)
            .copied()
            .unwrap_or(0);
        Marks {
            detail: Vec::new(),
            bins: Some(bins),
            flagged,
            deliveries,
            sends,
        }
    }
}

/// Width of one time slice, in pixels.
pub(crate) const SLICE_PX: f64 = 4.0;
