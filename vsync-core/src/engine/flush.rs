//! The flush: how a view ends and the next one is installed.
//!
//! Three phases, numbered by a ballot `(round, proposer)`:
//! 1. **Collect.** The acting coordinator sends `FlushStart`. A member that
//!    has not promised a higher ballot promises this one, freezes (no more
//!    deliveries or acknowledgement progress in the old view, new multicasts
//!    wait) and answers with its state: what it delivered, the order it
//!    knows, what it received, the payloads it holds that might be needed,
//!    and any proposal it accepted earlier. Members that stay silent for
//!    `flush_timeout` are left out.
//! 2. **Prepare.** Under the primary-component policy the responders must be
//!    a quorum of the old view, or the proposer blocks. If a responder
//!    accepted a proposal in an earlier ballot, the one with the highest
//!    ballot is proposed again unchanged (it may already be installed
//!    somewhere). Otherwise the proposer computes the old view's final tail:
//!    the known order, cut at the first message no responder holds, then the
//!    received but unordered messages, sender by sender in rank order. Each
//!    responder is sent the proposal and the tail payloads it lacks, and
//!    accepts it.
//! 3. **Commit.** Once every responder accepted, the proposer tells them to
//!    deliver the tail and install the view, and welcomes the joiners.
//!
//! Why it is safe: a proposal is committed only after every responder of its
//! ballot accepted it, and responders are a quorum; a later ballot's
//! responders are also a quorum, so they include a member that accepted it,
//! and the later proposer proposes it again (the Paxos argument). Every
//! survivor accepted the tail with its payloads before anyone delivers it,
//! and anything delivered before the flush was stable, hence held and
//! reported by every responder: all survivors deliver the same set, in the
//! same order. If the proposer fails, members notice by its silence, and the
//! next most senior member starts over with a higher ballot.

use super::{AppEvent, Engine, Phase};
use crate::checker::Policy;
use crate::delivery;
use crate::id::{Pid, View, ViewId};
use crate::message::{Ballot, FlushReport, Message, Proposal, Slot};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// This process's part in the current flush as a member.
#[derive(Clone, Debug, Default)]
pub(crate) struct Participant {
    /// Highest ballot promised for the current view.
    pub promised: Option<Ballot>,
    /// Proposal accepted, with its ballot.
    pub accepted: Option<(Ballot, Proposal)>,
    /// Last sign of progress from the proposer.
    pub since: u64,
    /// When this process froze.
    pub frozen_at: u64,
    /// Highest round seen in any ballot for the current view.
    pub max_round: u64,
}

/// A flush this process runs.
#[derive(Clone, Debug)]
pub(crate) struct Proposer {
    ballot: Ballot,
    started: u64,
    last_send: u64,
    stage: Stage,
}

#[derive(Clone, Debug)]
enum Stage {
    Collect {
        expected: BTreeSet<Pid>,
        reports: BTreeMap<Pid, FlushReport>,
    },
    Prepare {
        proposal: Proposal,
        targets: BTreeSet<Pid>,
        acked: BTreeSet<Pid>,
        msgs: BTreeMap<Pid, Message>,
        absent: Vec<Pid>,
    },
    Blocked {
        until: u64,
    },
}

/// A committed change, with the tail payloads, so that a member of the new
/// view that missed the commit can still install it.
#[derive(Clone, Debug)]
pub(crate) struct LastChange {
    old: ViewId,
    proposal: Proposal,
    payloads: Vec<(u32, u64, Bytes)>,
}

/// After a commit: resend `Commit`/`Welcome` until installed.
#[derive(Clone, Debug)]
pub(crate) struct Followup {
    old: ViewId,
    view: View,
    transfers: Vec<(Pid, Pid)>,
    joiners: BTreeSet<Pid>,
    absent: BTreeSet<Pid>,
    pending: BTreeSet<Pid>,
    last_send: u64,
    until: u64,
}

impl Engine {
    /// Starts a flush if this process coordinates and there is a reason.
    pub(super) fn maybe_start_flush(&mut self) {
        if self.phase != Phase::Member || !self.i_coordinate() {
            return;
        }
        if let Some(p) = &self.prop
            && !matches!(p.stage, Stage::Blocked { .. })
        {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        // Following another proposer that is not suspected: let it finish
        // (if it stalls, the participant timeout suspects it).
        if vs.frozen
            && self
                .part
                .promised
                .is_some_and(|b| b.proposer != self.pid && !self.suspects.contains(&b.proposer))
        {
            return;
        }
        let proposer_lost = vs.frozen
            && self.part.promised.is_some_and(|b| b.proposer != self.pid)
            && self
                .part
                .promised
                .is_some_and(|b| self.suspects.contains(&b.proposer));
        let reason = self.suspects.iter().any(|s| vs.view.contains(*s))
            || !self.pending_joins.is_empty()
            || !self.pending_leaves.is_empty()
            || proposer_lost
            || (vs.frozen && self.part.promised.is_none());
        if reason && self.prop.is_none() {
            self.start_flush();
        }
    }

    fn start_flush(&mut self) {
        let round = self
            .part
            .max_round
            .max(self.part.promised.map_or(0, |b| b.round))
            .saturating_add(1);
        let ballot = Ballot {
            round,
            proposer: self.pid,
        };
        self.part.max_round = round;
        self.freeze();
        self.part.promised = Some(ballot);
        self.part.since = self.now;
        let Some(vs) = self.vs.as_ref() else { return };
        let old = vs.view.id;
        let expected: BTreeSet<Pid> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|m| *m == self.pid || !self.suspects.contains(m))
            .collect();
        let mut reports = BTreeMap::new();
        reports.insert(self.pid, self.report());
        let others: Vec<Pid> = expected
            .iter()
            .copied()
            .filter(|p| *p != self.pid)
            .collect();
        self.stats.flushes_proposed += 1;
        self.prop = Some(Proposer {
            ballot,
            started: self.now,
            last_send: self.now,
            stage: Stage::Collect { expected, reports },
        });
        self.send_many(others, Message::FlushStart { old, ballot });
        self.check_collect(false);
    }

    /// Stops delivery and acknowledgement progress in the current view.
    fn freeze(&mut self) {
        let Some(vs) = self.vs.as_mut() else { return };
        if !vs.frozen {
            vs.frozen = true;
            self.part.frozen_at = self.now;
            let id = vs.view.id;
            self.emit(AppEvent::Flushing { view: id });
        }
    }

    /// This member's frozen state, for the proposer.
    fn report(&self) -> FlushReport {
        let Some(vs) = self.vs.as_ref() else {
            return FlushReport {
                delivered: 0,
                delivered_seq: Vec::new(),
                order: Vec::new(),
                order_from: 0,
                recv: Vec::new(),
                payloads: Vec::new(),
                accepted: None,
            };
        };
        // Everything not known to be held by every member: total and FIFO
        // or causal messages may have been delivered before they were.
        let mut payloads = Vec::new();
        for (rank, log) in vs.logs.iter().enumerate() {
            let after = vs.delivered_seq[rank].min(vs.held_by_all(rank));
            for (seq, p) in log.held_after(after) {
                payloads.push((rank as u32, seq, p.clone()));
            }
        }
        let order_from = vs.delivered.min(vs.stable()).max(vs.order_base);
        FlushReport {
            delivered: vs.delivered,
            delivered_seq: vs.delivered_seq.clone(),
            order: vs.order_after(order_from),
            order_from,
            recv: vs.logs.iter().map(|l| l.contiguous()).collect(),
            payloads,
            accepted: self.part.accepted.clone(),
        }
    }

    pub(super) fn on_flush_start(&mut self, from: Pid, old: ViewId, ballot: Ballot) {
        if ballot.proposer != from {
            self.stats.malformed += 1;
            return;
        }
        if self.phase == Phase::Member && self.current_view_id() == Some(old) {
            let Some(vs) = self.vs.as_ref() else { return };
            if !vs.view.contains(from) {
                return;
            }
            self.part.max_round = self.part.max_round.max(ballot.round);
            // Evidently reachable, even if its ballot is too low: a stale
            // suspicion of a more senior member would make this process
            // compete with it for ever.
            self.suspects.remove(&from);
            if self.part.promised.is_some_and(|p| ballot < p) {
                let promised = self.part.promised.unwrap_or(ballot);
                self.send(from, Message::FlushReject { old, promised });
                return;
            }
            if self.prop.as_ref().is_some_and(|p| p.ballot < ballot) {
                self.prop = None;
            }
            self.freeze();
            self.part.promised = Some(ballot);
            self.part.since = self.now;
            // Evidently reachable: a flush it runs is one to follow.
            self.suspects.remove(&from);
            let report = Box::new(self.report());
            self.send(
                from,
                Message::FlushState {
                    old,
                    ballot,
                    report,
                },
            );
            return;
        }
        self.answer_stale(from, old);
    }

    /// Answers a flush message about a view this process already left.
    fn answer_stale(&mut self, from: Pid, old: ViewId) {
        if let Some(lc) = &self.last_change
            && lc.old == old
        {
            let p = &lc.proposal;
            if p.view.contains(from) || p.leavers.contains(&from) {
                let msg = Message::Install {
                    old,
                    proposal: Box::new(p.clone()),
                    payloads: lc.payloads.clone(),
                };
                self.send(from, msg);
            } else {
                let view = p.view.id;
                self.tell_not_member(from, view);
            }
            return;
        }
        if let Some(vs) = self.vs.as_ref()
            && self.phase == Phase::Member
            && old.epoch < vs.view.id.epoch
            && !vs.view.contains(from)
        {
            let view = vs.view.id;
            self.tell_not_member(from, view);
        }
    }

    pub(super) fn on_flush_state(
        &mut self,
        from: Pid,
        old: ViewId,
        ballot: Ballot,
        report: FlushReport,
    ) {
        if self.current_view_id() != Some(old) {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if !plausible(vs, &report) {
            self.stats.malformed += 1;
            return;
        }
        let Some(p) = self.prop.as_mut() else { return };
        if p.ballot != ballot {
            return;
        }
        if let Stage::Collect { expected, reports } = &mut p.stage
            && expected.contains(&from)
        {
            reports.insert(from, report);
            self.check_collect(false);
        }
    }

    pub(super) fn on_flush_reject(&mut self, old: ViewId, promised: Ballot) {
        if self.current_view_id() != Some(old) {
            return;
        }
        self.part.max_round = self.part.max_round.max(promised.round);
        if self.prop.as_ref().is_some_and(|p| p.ballot < promised) {
            self.prop = None;
            self.part.since = self.now;
        }
    }

    /// Collect phase: proceed once everyone expected answered (or, when
    /// `force`, with whoever did).
    fn check_collect(&mut self, force: bool) {
        let Some(p) = self.prop.as_ref() else { return };
        let Stage::Collect { expected, reports } = &p.stage else {
            return;
        };
        if !force && reports.len() < expected.len() {
            return;
        }
        let ballot = p.ballot;
        let silent: Vec<Pid> = expected
            .iter()
            .copied()
            .filter(|e| !reports.contains_key(e))
            .collect();
        let responders: Vec<Pid> = reports.keys().copied().collect();
        for s in silent {
            self.suspects.insert(s);
        }
        let Some(vs) = self.vs.as_ref() else { return };
        let quorum = vs.view.is_quorum(&responders);
        if self.policy() == Policy::PrimaryComponent && !quorum && !self.mutations.ignore_quorum {
            let until = self.now + self.config.flush_timeout;
            if let Some(p) = self.prop.as_mut() {
                p.stage = Stage::Blocked { until };
            }
            self.set_blocked();
            return;
        }
        let Some(Proposer {
            stage: Stage::Collect { reports, .. },
            ..
        }) = self.prop.take()
        else {
            return;
        };
        let proposal = self.build_proposal(&reports);
        self.begin_prepare(ballot, proposal, reports);
    }

    fn set_blocked(&mut self) {
        if !self.blocked {
            self.blocked = true;
            if let Some(id) = self.current_view_id() {
                self.emit(AppEvent::Blocked { view: id });
            }
        }
    }

    /// The proposal: an accepted one from an earlier ballot, or a fresh one.
    fn build_proposal(&self, reports: &BTreeMap<Pid, FlushReport>) -> Proposal {
        if let Some((_, p)) = reports
            .values()
            .filter_map(|r| r.accepted.as_ref())
            .max_by_key(|(b, _)| *b)
        {
            return p.clone();
        }
        let Some(vs) = self.vs.as_ref() else {
            return empty_proposal();
        };
        let old = &vs.view;
        let n = old.members.len();
        // The tail: merged order from the lowest delivered position.
        let mut sorted: Vec<&FlushReport> = reports.values().collect();
        sorted.sort_by_key(|r| r.delivered);
        let base = sorted.first().map_or(0, |r| r.delivered);
        let base_seq = sorted
            .first()
            .map_or_else(|| vec![0; n], |r| r.delivered_seq.clone());
        // Every report's order covers positions `order_from + 1 ..`; chain
        // them from the base (all are prefixes of the one sequencer's order).
        let mut tail: Vec<Slot> = Vec::new();
        let mut extended = true;
        while extended {
            extended = false;
            for r in &sorted {
                let end = base + tail.len() as u64;
                let start = r.order_from;
                if start <= end && start + r.order.len() as u64 > end {
                    tail.extend(r.order.iter().skip((end - start) as usize).copied());
                    extended = true;
                }
            }
        }
        let mut avail = vec![0u64; n];
        for r in reports.values() {
            for (a, x) in avail.iter_mut().zip(&r.recv) {
                *a = (*a).max(*x);
            }
        }
        // Cut the order at the first message no responder holds.
        let mut count = base_seq.clone();
        let mut cut = tail.len();
        for (i, &(rank, seq)) in tail.iter().enumerate() {
            let r = rank as usize;
            if r >= n || seq > avail[r] || seq != count[r] + 1 {
                cut = i;
                break;
            }
            count[r] = seq;
        }
        tail.truncate(cut);
        // Then the received but unordered messages, by sender rank.
        if !self.mutations.flush_drops_unordered {
            for (r, c) in count.iter().enumerate() {
                for seq in c + 1..=avail[r] {
                    tail.push((r as u32, seq));
                }
            }
        }
        let leavers: Vec<Pid> = old
            .members
            .iter()
            .copied()
            .filter(|m| reports.contains_key(m) && self.pending_leaves.contains(m))
            .collect();
        let survivors: Vec<Pid> = old
            .members
            .iter()
            .copied()
            .filter(|m| reports.contains_key(m) && !leavers.contains(m))
            .collect();
        let mut members = survivors.clone();
        let mut transfers = Vec::new();
        if !survivors.is_empty() {
            for (i, j) in self.pending_joins.iter().enumerate() {
                if !old.contains(*j) {
                    members.push(*j);
                    transfers.push((*j, survivors[(i + 1) % survivors.len()]));
                }
            }
        }
        Proposal {
            view: View {
                id: ViewId {
                    epoch: old.id.epoch + 1,
                    installer: self.pid,
                },
                members,
            },
            base,
            base_seq,
            tail,
            leavers,
            transfers,
        }
    }

    fn begin_prepare(
        &mut self,
        ballot: Ballot,
        proposal: Proposal,
        reports: BTreeMap<Pid, FlushReport>,
    ) {
        let Some(vs) = self.vs.as_ref() else { return };
        let old = vs.view.id;
        // Every payload anyone reported, and this member's own.
        let mut pool: BTreeMap<(u32, u64), Bytes> = BTreeMap::new();
        for r in reports.values() {
            for (rank, seq, p) in &r.payloads {
                pool.entry((*rank, *seq)).or_insert_with(|| p.clone());
            }
        }
        // Every responder accepts, also one the proposal leaves out (possible
        // when an earlier ballot's proposal is proposed again): a commit must
        // be known to a quorum, so that any later ballot adopts it.
        let targets: BTreeSet<Pid> = reports.keys().copied().collect();
        // Members of the new view that did not respond get the whole change
        // once it is committed.
        let absent: Vec<Pid> = proposal
            .view
            .members
            .iter()
            .copied()
            .filter(|m| !targets.contains(m) && !proposal.transfers.iter().any(|(j, _)| j == m))
            .collect();
        let mut msgs = BTreeMap::new();
        for t in &targets {
            let Some(r) = reports.get(t) else { continue };
            let mut payloads = Vec::new();
            for (i, &(rank, seq)) in proposal.tail.iter().enumerate() {
                let pos = proposal.base.saturating_add(1 + i as u64);
                let lacks = r.recv.get(rank as usize).is_none_or(|got| seq > *got);
                if pos > r.delivered
                    && lacks
                    && let Some(p) = pool.get(&(rank, seq))
                {
                    payloads.push((rank, seq, p.clone()));
                }
            }
            let msg = Message::Prepare {
                old,
                ballot,
                proposal: Box::new(proposal.clone()),
                payloads,
            };
            msgs.insert(*t, msg);
        }
        // Accept locally.
        let mut acked = BTreeSet::new();
        if let Some(Message::Prepare { payloads, .. }) = msgs.remove(&self.pid) {
            self.accept(ballot, proposal.clone(), payloads);
            acked.insert(self.pid);
        }
        for (to, m) in &msgs {
            self.send(*to, m.clone());
        }
        self.prop = Some(Proposer {
            ballot,
            started: self.now,
            last_send: self.now,
            stage: Stage::Prepare {
                proposal,
                targets,
                acked,
                msgs,
                absent,
            },
        });
        self.check_prepare();
    }

    fn accept(&mut self, ballot: Ballot, proposal: Proposal, payloads: Vec<(u32, u64, Bytes)>) {
        if let Some(vs) = self.vs.as_mut() {
            for (rank, seq, p) in payloads {
                if let Some(log) = vs.logs.get_mut(rank as usize) {
                    log.insert(seq, p);
                }
            }
        }
        self.part.promised = Some(ballot);
        self.part.accepted = Some((ballot, proposal));
        self.part.since = self.now;
    }

    pub(super) fn on_prepare(
        &mut self,
        from: Pid,
        old: ViewId,
        ballot: Ballot,
        proposal: Proposal,
        payloads: Vec<(u32, u64, Bytes)>,
    ) {
        if ballot.proposer != from {
            self.stats.malformed += 1;
            return;
        }
        if self.phase == Phase::Member && self.current_view_id() == Some(old) {
            self.part.max_round = self.part.max_round.max(ballot.round);
            if self.part.promised.is_some_and(|p| ballot < p) {
                let promised = self.part.promised.unwrap_or(ballot);
                self.send(from, Message::FlushReject { old, promised });
                return;
            }
            if proposal.view.id.epoch != old.epoch + 1 {
                self.stats.malformed += 1;
                return;
            }
            self.freeze();
            self.suspects.remove(&from);
            self.accept(ballot, proposal, payloads);
            self.send(from, Message::PrepareAck { old, ballot });
            return;
        }
        if let Some(lc) = &self.last_change
            && lc.old == old
            && lc.proposal.view.id == proposal.view.id
        {
            self.send(from, Message::PrepareAck { old, ballot });
            return;
        }
        self.answer_stale(from, old);
    }

    pub(super) fn on_prepare_ack(&mut self, from: Pid, old: ViewId, ballot: Ballot) {
        if self.current_view_id() != Some(old) {
            return;
        }
        let Some(p) = self.prop.as_mut() else { return };
        if p.ballot != ballot {
            return;
        }
        if let Stage::Prepare { acked, targets, .. } = &mut p.stage
            && targets.contains(&from)
        {
            acked.insert(from);
            self.check_prepare();
        }
    }

    fn check_prepare(&mut self) {
        let Some(p) = self.prop.as_ref() else { return };
        let Stage::Prepare { targets, acked, .. } = &p.stage else {
            return;
        };
        if acked.len() < targets.len() {
            return;
        }
        let Some(Proposer {
            stage:
                Stage::Prepare {
                    proposal,
                    targets,
                    absent,
                    ..
                },
            ..
        }) = self.prop.take()
        else {
            return;
        };
        let Some(old) = self.current_view_id() else {
            return;
        };
        let new = proposal.view.id;
        let others: Vec<Pid> = targets.iter().copied().filter(|t| *t != self.pid).collect();
        self.send_many(others.clone(), Message::Commit { old, new });
        let joiners: BTreeSet<Pid> = proposal.transfers.iter().map(|(j, _)| *j).collect();
        for j in &joiners {
            let msg = Message::Welcome {
                view: proposal.view.clone(),
                transfers: proposal.transfers.clone(),
            };
            self.send(*j, msg);
        }
        let mut pending: BTreeSet<Pid> = others.into_iter().collect();
        pending.extend(joiners.iter().copied());
        pending.extend(absent.iter().copied());
        self.followup = Some(Followup {
            old,
            view: proposal.view.clone(),
            transfers: proposal.transfers.clone(),
            joiners,
            absent: absent.into_iter().collect(),
            pending,
            last_send: self.now,
            until: self.now + 4 * self.config.flush_timeout,
        });
        self.commit(proposal);
        self.send_installs_to_absent();
    }

    /// Sends the committed change to members of the new view that did not
    /// take part in the flush.
    fn send_installs_to_absent(&mut self) {
        let (Some(f), Some(lc)) = (self.followup.as_ref(), self.last_change.as_ref()) else {
            return;
        };
        let to: Vec<Pid> = f
            .absent
            .iter()
            .copied()
            .filter(|p| f.pending.contains(p))
            .collect();
        let msg = Message::Install {
            old: lc.old,
            proposal: Box::new(lc.proposal.clone()),
            payloads: lc.payloads.clone(),
        };
        self.send_many(to, msg);
    }

    /// A member of the current view still talks in the view before: it
    /// missed the commit (its proposer failed). Sends it the whole change,
    /// at most once per resend interval.
    pub(super) fn send_install_to_laggard(&mut self, to: Pid, its_view: ViewId) {
        let Some(lc) = self.last_change.as_ref() else {
            return;
        };
        if lc.old != its_view {
            return;
        }
        let now = self.now;
        if self
            .install_sent
            .get(&to)
            .is_some_and(|t| now < t + self.config.resend_interval)
        {
            return;
        }
        self.install_sent.insert(to, now);
        let msg = Message::Install {
            old: lc.old,
            proposal: Box::new(lc.proposal.clone()),
            payloads: lc.payloads.clone(),
        };
        self.send(to, msg);
    }

    pub(super) fn on_install(
        &mut self,
        from: Pid,
        old: ViewId,
        proposal: Proposal,
        payloads: Vec<(u32, u64, Bytes)>,
    ) {
        let new = proposal.view.id;
        let concerned = proposal.view.contains(self.pid) || proposal.leavers.contains(&self.pid);
        if self.phase == Phase::Member
            && self.current_view_id() == Some(old)
            && concerned
            && new.epoch == old.epoch + 1
        {
            if let Some(vs) = self.vs.as_mut() {
                for (rank, seq, p) in payloads {
                    if let Some(log) = vs.logs.get_mut(rank as usize) {
                        log.insert(seq, p);
                    }
                }
            }
            self.commit(proposal);
        }
        if self.current_view_id() == Some(new) {
            self.send(from, Message::InstallAck { new });
        }
    }

    pub(super) fn on_commit(&mut self, from: Pid, old: ViewId, new: ViewId) {
        if self.phase == Phase::Member && self.current_view_id() == Some(old) {
            let proposal = match &self.part.accepted {
                Some((_, p)) if p.view.id == new => p.clone(),
                _ => return,
            };
            self.commit(proposal);
        }
        if self.current_view_id() == Some(new)
            || self
                .last_change
                .as_ref()
                .is_some_and(|lc| lc.proposal.view.id == new)
        {
            self.send(from, Message::InstallAck { new });
        }
    }

    /// Delivers the old view's tail and installs the proposal's view (or
    /// leaves, or learns it was removed).
    fn commit(&mut self, proposal: Proposal) {
        let Some(vs) = self.vs.as_mut() else { return };
        let old = vs.view.id;
        let payloads: Vec<(u32, u64, Bytes)> = proposal
            .tail
            .iter()
            .filter_map(|&(r, q)| {
                vs.logs
                    .get(r as usize)
                    .and_then(|l| l.get(q))
                    .map(|p| (r, q, p.clone()))
            })
            .collect();
        let mut out = Vec::new();
        vs.frozen = false;
        vs.deliver_through(proposal.base, &mut |m, p, b, d| out.push((m, p, b, d)));
        vs.frozen = true;
        // The view's final set: per sender, everything up to here.
        let mut limit = proposal.base_seq.clone();
        limit.resize(vs.logs.len(), 0);
        for (i, &(rank, seq)) in proposal.tail.iter().enumerate() {
            if let Some(l) = limit.get_mut(rank as usize) {
                *l = (*l).max(seq);
            }
            let pos = proposal.base.saturating_add(1 + i as u64);
            if pos <= vs.delivered {
                continue;
            }
            let Some(wire) = vs.logs.get(rank as usize).and_then(|l| l.get(seq)) else {
                self.stats.malformed += 1;
                break;
            };
            let (header, payload, _) = delivery::decode(wire);
            vs.delivered = pos;
            let mut again = false;
            if let Some(d) = vs.delivered_seq.get_mut(rank as usize) {
                // A process the proposal leaves out, which went on
                // delivering total messages in an order the proposer never
                // learned, may meet some of them again here.
                again = seq <= *d;
                *d = (*d).max(seq);
            }
            // FIFO and causal messages: below, in their own order.
            if header.mode().is_ordered() && !again {
                out.push((vs.msg_id((rank, seq)), pos, payload, header.mode()));
            }
        }
        let ignore = self.mutations.causal_ignores_deps;
        vs.deliver_unordered(Some(&limit), ignore, &mut |m, b, d| out.push((m, 0, b, d)));
        self.stats.delivered += out.len() as u64;
        for (msg, pos, payload, mode) in out {
            self.emit(AppEvent::Deliver {
                msg,
                pos,
                payload,
                mode,
            });
        }
        self.last_change = Some(LastChange {
            old,
            proposal: proposal.clone(),
            payloads,
        });
        if proposal.view.contains(self.pid) {
            self.view_transfers = proposal.transfers.clone();
            let prev = self.vs.as_ref().map(|v| v.view.clone());
            self.merge_note_install(prev.as_ref(), &proposal.leavers, &proposal.view);
            self.install(proposal.view, false, &proposal.transfers);
        } else if proposal.leavers.contains(&self.pid) {
            self.phase = Phase::Left;
            self.prop = None;
            self.queue.clear();
            self.emit(AppEvent::Left { view: old });
        } else {
            self.become_removed();
        }
    }

    pub(super) fn on_welcome(&mut self, from: Pid, view: View, transfers: Vec<(Pid, Pid)>) {
        if self.phase == Phase::Joining && view.contains(self.pid) {
            let id = view.id;
            self.view_transfers = transfers.clone();
            self.merge_note_install(None, &[], &view);
            self.install(view, true, &transfers);
            self.send(from, Message::InstallAck { new: id });
        } else if self.current_view_id() == Some(view.id) {
            self.send(from, Message::InstallAck { new: view.id });
        } else if self.phase == Phase::Member
            && view.contains(self.pid)
            && self.vs.as_ref().is_some_and(|v| v.view.contains(from))
            && self
                .current_view_id()
                .is_some_and(|v| v.epoch < view.id.epoch)
        {
            // Admitted again as a joiner by a member of our own view (a
            // stale join request of ours arrived late): the group went on
            // without us in between, so this incarnation was removed; rejoin
            // as a new one. Not believed from anyone else.
            self.become_removed();
        } else if self.phase == Phase::Member
            && view.contains(self.pid)
            && self.vs.as_ref().is_some_and(|v| !v.view.contains(from))
        {
            // Admitted by another side too (our join request reached
            // both): we took the other welcome. Ask this side to let us go,
            // rather than have it wait to suspect us.
            self.send(from, Message::LeaveRequest { view: view.id });
        }
    }

    pub(super) fn on_install_ack(&mut self, from: Pid, new: ViewId) {
        if let Some(f) = self.followup.as_mut()
            && f.view.id == new
        {
            f.pending.remove(&from);
            if f.pending.is_empty() {
                self.followup = None;
            }
        }
    }

    /// Periodic flush work: resends, timeouts, blocked retries.
    pub(super) fn flush_tick(&mut self) {
        let now = self.now;
        let resend = self.config.resend_interval;
        let timeout = self.config.flush_timeout;
        // As a participant: a proposer that stalls is suspected.
        if self.is_flushing() && self.prop.is_none() && now > self.part.since + 3 * timeout {
            self.part.since = now;
            match self.part.promised {
                Some(b) if b.proposer != self.pid => self.add_suspect(b.proposer),
                _ => self.maybe_start_flush(),
            }
            if self.prop.is_none() {
                self.maybe_start_flush();
            }
        }
        if self.is_flushing() && !self.blocked && now > self.part.frozen_at + 2 * timeout {
            self.check_minority();
        }
        let Some(p) = self.prop.as_mut() else { return };
        let old = match self.vs.as_ref() {
            Some(vs) => vs.view.id,
            None => return,
        };
        let ballot = p.ballot;
        let due = now >= p.last_send + resend;
        match &mut p.stage {
            Stage::Collect { expected, reports } => {
                if now > p.started + timeout {
                    self.check_collect(true);
                } else if due {
                    p.last_send = now;
                    let missing: Vec<Pid> = expected
                        .iter()
                        .copied()
                        .filter(|e| !reports.contains_key(e))
                        .collect();
                    self.send_many(missing, Message::FlushStart { old, ballot });
                }
            }
            Stage::Prepare {
                targets,
                acked,
                msgs,
                ..
            } => {
                if now > p.started + timeout {
                    let silent: Vec<Pid> = targets
                        .iter()
                        .copied()
                        .filter(|t| !acked.contains(t))
                        .collect();
                    self.suspects.extend(silent);
                    self.prop = None;
                    self.start_flush();
                } else if due {
                    p.last_send = now;
                    let resends: Vec<(Pid, Message)> = msgs
                        .iter()
                        .filter(|(t, _)| !acked.contains(t))
                        .map(|(t, m)| (*t, m.clone()))
                        .collect();
                    for (t, m) in resends {
                        self.send(t, m);
                    }
                }
            }
            Stage::Blocked { until } => {
                if now >= *until {
                    // Probe everyone again: the partition may have healed.
                    self.prop = None;
                    self.suspects.clear();
                    self.start_flush();
                }
            }
        }
    }

    /// Says so when this member cannot hear a quorum of its view.
    fn check_minority(&mut self) {
        let Some(vs) = self.vs.as_ref() else { return };
        if self.policy() != Policy::PrimaryComponent {
            return;
        }
        let horizon = self.config.suspect_timeout;
        let heard: Vec<Pid> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|m| {
                *m == self.pid
                    || self
                        .last_heard
                        .get(m)
                        .is_some_and(|t| self.now <= t + horizon)
            })
            .collect();
        if !vs.view.is_quorum(&heard) {
            self.set_blocked();
        }
    }

    /// Resends `Commit`/`Welcome` for the last change until acknowledged.
    pub(super) fn followup_tick(&mut self) {
        let now = self.now;
        let Some(f) = self.followup.as_mut() else {
            return;
        };
        if now > f.until {
            self.followup = None;
            return;
        }
        if now < f.last_send + self.config.resend_interval {
            return;
        }
        f.last_send = now;
        let (old, new) = (f.old, f.view.id);
        let mut msgs = Vec::new();
        let resend_installs = f.pending.iter().any(|p| f.absent.contains(p));
        for p in &f.pending {
            if f.absent.contains(p) {
                continue;
            }
            if f.joiners.contains(p) {
                let view = f.view.clone();
                msgs.push((
                    *p,
                    Message::Welcome {
                        view,
                        transfers: f.transfers.clone(),
                    },
                ));
            } else {
                msgs.push((*p, Message::Commit { old, new }));
            }
        }
        for (p, m) in msgs {
            self.send(p, m);
        }
        if resend_installs {
            self.send_installs_to_absent();
        }
    }
}

/// Whether a flush report is consistent with this member's own state (an
/// honest member is never further ahead than flow control allows): guards
/// the proposer's arithmetic against corrupt input.
fn plausible(vs: &super::ordering::ViewState, r: &FlushReport) -> bool {
    use super::log::MAX_AHEAD;
    let n = vs.view.members.len();
    r.recv.len() == n
        && r.delivered_seq.len() == n
        && r.delivered <= vs.order_len().saturating_add(MAX_AHEAD)
        && r.order.len() as u64 <= MAX_AHEAD
        && r.order_from <= r.delivered
        && r.order.iter().all(|(rank, _)| (*rank as usize) < n)
        && (0..n).all(|i| {
            r.delivered_seq[i] <= r.recv[i]
                && r.recv[i] <= vs.logs[i].contiguous().saturating_add(MAX_AHEAD)
        })
}

fn empty_proposal() -> Proposal {
    Proposal {
        view: View {
            id: ViewId {
                epoch: 0,
                installer: Pid::new(0, 0),
            },
            members: Vec::new(),
        },
        base: 0,
        base_seq: Vec::new(),
        tail: Vec::new(),
        leavers: Vec::new(),
        transfers: Vec::new(),
    }
}
