//! Layout: what goes where in time, before any drawing.
//!
//! Turns histories into lanes (one per process incarnation, ordered by node
//! then incarnation), each with the spans of the views it had installed,
//! its blocked spans, its fate (crash, removal, clean leave) and the joins
//! with state transfer. Everything is in microseconds of the histories'
//! clock and clipped to the window; nothing here can fail on odd input
//! (records out of order, views installed twice, unknown donors) beyond the
//! two cases the caller must hear about: no records at all, and an empty
//! window.

use super::{TimelineError, TimelineOptions};
use crate::history::{Event, History};
use crate::id::{NodeId, Pid, View, ViewId};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How a lane ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// The process crashed.
    Crash,
    /// It learned it was removed.
    Removed,
    /// It left cleanly.
    Left,
    /// Its side lost a partition merge (partitionable policy): removed, its
    /// history since the split discarded.
    Diverged,
}

/// A span of time on one lane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub from: u64,
    pub to: u64,
}

/// A view installed by a lane, from its install to the next install or the
/// lane's end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    /// Index into [`Model::views`].
    pub view: usize,
    pub span: Span,
    /// Whether the install itself is inside the window.
    pub install_shown: bool,
}

/// One process incarnation.
#[derive(Clone, Debug)]
pub(crate) struct Lane {
    pub pid: Pid,
    /// The lane's extent (clipped to the window).
    pub span: Span,
    pub segments: Vec<Segment>,
    /// Blocked (minority) periods, with the view blocked in.
    pub blocked: Vec<(Span, ViewId)>,
    /// How and when it ended, if it did (and the time is in the window).
    pub fate: Option<(u64, Fate)>,
}

/// A view seen anywhere in the run.
#[derive(Clone, Debug)]
pub(crate) struct ViewInfo {
    pub view: View,
    /// Earliest install anywhere.
    pub first_install: u64,
    /// Whether any of its segments shows in the window.
    pub shown: bool,
}

/// A join with state transfer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub t: u64,
    pub joiner: usize,
    /// The donor's lane, when its history is present.
    pub donor: Option<usize>,
    pub donor_pid: Pid,
}

/// The laid-out run.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    /// The earliest record: time 0 of the picture.
    pub origin: u64,
    /// The window drawn, absolute microseconds (`from < to`).
    pub from: u64,
    pub to: u64,
    pub lanes: Vec<Lane>,
    pub lane_of: HashMap<Pid, usize>,
    /// Views in id order.
    pub views: Vec<ViewInfo>,
    pub transfers: Vec<Transfer>,
    /// Nodes in id order: a sender's colour is its node's index here.
    pub nodes: Vec<NodeId>,
}

impl Model {
    /// Lays out `histories` for the window in `opts`.
    pub(crate) fn build(
        histories: &[History],
        opts: &TimelineOptions,
    ) -> Result<Model, TimelineError> {
        let records = || histories.iter().flat_map(|h| &h.records);
        let (Some(origin), Some(end)) =
            (records().map(|r| r.t).min(), records().map(|r| r.t).max())
        else {
            return Err(TimelineError::Empty);
        };
        let (from, to) = window(origin, end, opts)?;

        // Views, in id order, with their first install.
        let mut views: BTreeMap<ViewId, ViewInfo> = BTreeMap::new();
        let mut nodes = BTreeSet::new();
        let mut pids = BTreeSet::new();
        for r in records() {
            pids.insert(r.pid);
            nodes.insert(r.pid.node);
            match &r.event {
                Event::Install { view, .. } => {
                    let e = views.entry(view.id).or_insert_with(|| ViewInfo {
                        view: view.clone(),
                        first_install: r.t,
                        shown: false,
                    });
                    e.first_install = e.first_install.min(r.t);
                    nodes.extend(view.members.iter().map(|m| m.node));
                }
                Event::Send { msg, .. } | Event::Deliver { msg, .. } => {
                    nodes.insert(msg.sender.node);
                }
                _ => {}
            }
        }
        let view_index: HashMap<ViewId, usize> =
            views.keys().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut views: Vec<ViewInfo> = views.into_values().collect();
        let lane_of: HashMap<Pid, usize> = pids.iter().enumerate().map(|(i, p)| (*p, i)).collect();

        // Each lane's records, in time order (a stable sort keeps the
        // recorded order of simultaneous events).
        let mut per_lane: Vec<Vec<&crate::history::Record>> = vec![Vec::new(); pids.len()];
        for r in records() {
            if let Some(&i) = lane_of.get(&r.pid) {
                per_lane[i].push(r);
            }
        }
        let mut lanes = Vec::with_capacity(pids.len());
        let mut transfers = Vec::new();
        for (i, (pid, recs)) in pids.iter().zip(per_lane.iter_mut()).enumerate() {
            recs.sort_by_key(|r| r.t);
            let start = recs.first().map_or(origin, |r| r.t);
            let fate = recs.iter().find_map(|r| match r.event {
                Event::Crash => Some((r.t, Fate::Crash)),
                Event::Removed { .. } => Some((r.t, Fate::Removed)),
                Event::Diverged { .. } => Some((r.t, Fate::Diverged)),
                Event::Left { .. } => Some((r.t, Fate::Left)),
                _ => None,
            });
            // A lane with no recorded end runs to the end of the run.
            let stop = fate.map_or(end, |(t, _)| t);
            let mut segments = Vec::new();
            let mut blocked = Vec::new();
            let mut current: Option<(usize, u64)> = None;
            let mut block: Option<(u64, ViewId)> = None;
            for r in recs.iter().filter(|r| r.t <= stop) {
                match &r.event {
                    Event::Install { view, donor, .. } => {
                        if let Some((v, t)) = current.take() {
                            segments.push((v, t, r.t));
                        }
                        if let Some((t, v)) = block.take() {
                            blocked.push((t, r.t, v));
                        }
                        if let Some(&v) = view_index.get(&view.id) {
                            current = Some((v, r.t));
                        }
                        if let Some(d) = donor {
                            transfers.push(Transfer {
                                t: r.t,
                                joiner: i,
                                donor: lane_of.get(d).copied(),
                                donor_pid: *d,
                            });
                        }
                    }
                    Event::Blocked { view } if block.is_none() => {
                        block = Some((r.t, *view));
                    }
                    _ => {}
                }
            }
            if let Some((v, t)) = current {
                segments.push((v, t, stop));
            }
            if let Some((t, v)) = block {
                blocked.push((t, stop, v));
            }
            let segments = segments
                .into_iter()
                .filter_map(|(v, a, b)| {
                    let span = clip(a, b, from, to)?;
                    if let Some(info) = views.get_mut(v) {
                        info.shown = true;
                    }
                    Some(Segment {
                        view: v,
                        span,
                        install_shown: a >= from && a <= to,
                    })
                })
                .collect();
            let blocked = blocked
                .into_iter()
                .filter_map(|(a, b, v)| Some((clip(a, b, from, to)?, v)))
                .collect();
            lanes.push(Lane {
                pid: *pid,
                span: clip(start, stop, from, to).unwrap_or(Span { from, to: from }),
                segments,
                blocked,
                fate: fate.filter(|(t, _)| *t >= from && *t <= to),
            });
        }
        transfers.retain(|t| t.t >= from && t.t <= to);
        Ok(Model {
            origin,
            from,
            to,
            lanes,
            lane_of,
            views,
            transfers,
            nodes: nodes.into_iter().collect(),
        })
    }

    /// Distinct views with a segment in the window.
    pub(crate) fn views_in_window(&self) -> usize {
        self.views.iter().filter(|v| v.shown).count()
    }

    /// The colour index of a sender's node.
    pub(crate) fn node_rank(&self, node: NodeId) -> usize {
        self.nodes.binary_search(&node).unwrap_or(0)
    }
}

/// `[a, b]` clipped to `[from, to]`, if they overlap.
fn clip(a: u64, b: u64, from: u64, to: u64) -> Option<Span> {
    let (a, b) = (a.max(from), b.min(to));
    (a <= b).then_some(Span { from: a, to: b })
}

/// The window in absolute microseconds, from the options (milliseconds
/// since `origin`).
fn window(origin: u64, end: u64, opts: &TimelineOptions) -> Result<(u64, u64), TimelineError> {
    let run_ms = (end - origin) as f64 / 1000.0;
    let from_ms = opts.from_ms.unwrap_or(0.0);
    let to_ms = opts.to_ms.unwrap_or(run_ms);
    let bad = || TimelineError::Window {
        from_ms,
        to_ms,
        run_ms,
    };
    if !from_ms.is_finite() || !to_ms.is_finite() || from_ms < 0.0 || to_ms < from_ms {
        return Err(bad());
    }
    if opts.to_ms.is_some() && to_ms <= from_ms {
        return Err(bad());
    }
    if from_ms > run_ms {
        return Err(bad());
    }
    // f64 to u64 casts saturate; the values are finite and non-negative.
    let from = origin.saturating_add((from_ms * 1000.0) as u64);
    let mut to = origin.saturating_add((to_ms * 1000.0).ceil() as u64);
    if to <= from {
        // A run of one instant, or a window narrower than a microsecond.
        to = from.saturating_add(1);
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_overlaps_only() {
        assert!(clip(0, 5, 10, 20).is_none());
        assert!(clip(25, 30, 10, 20).is_none());
        let s = clip(5, 15, 10, 20).unwrap();
        assert_eq!((s.from, s.to), (10, 15));
        let s = clip(12, 12, 10, 20).unwrap();
        assert_eq!((s.from, s.to), (12, 12));
    }

    #[test]
    fn a_window_outside_the_run_is_refused() {
        let o = |f, t| TimelineOptions {
            from_ms: f,
            to_ms: t,
            ..TimelineOptions::default()
        };
        assert!(window(1000, 11_000, &o(Some(20.0), None)).is_err());
        assert!(window(1000, 11_000, &o(Some(5.0), Some(5.0))).is_err());
        assert!(window(1000, 11_000, &o(Some(f64::NAN), None)).is_err());
        assert_eq!(
            window(1000, 11_000, &o(Some(2.0), Some(4.0))).unwrap(),
            (3000, 5000)
        );
        assert_eq!(window(1000, 1000, &o(None, None)).unwrap(), (1000, 1001));
    }
}
