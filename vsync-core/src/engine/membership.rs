//! Membership: failure detection, join and leave requests, removal notices.
//!
//! Failure detection is by silence: every message from a member counts as a
//! heartbeat, and members send their acknowledgement at least every
//! `heartbeat_interval`. A member silent for `suspect_timeout` is suspected;
//! the transport may also report a member as unreachable at once
//! ([`Engine::suspect`]). Suspicions, join and leave requests are reasons
//! for a view change; they go to the *acting coordinator* (the most senior
//! member this process does not suspect), which runs the flush. A member
//! that suspects every member senior to it acts as coordinator itself.
//! Suspicion is trusted: a member that another member cannot hear is
//! removed, so that a one-way link never stalls the group.

use super::{AppEvent, Engine, Phase};
use crate::id::{Pid, ViewId};
use crate::message::Message;

impl Engine {
    /// The most senior member of the current view this process does not
    /// suspect.
    pub(super) fn acting_coordinator(&self) -> Option<Pid> {
        let vs = self.vs.as_ref()?;
        vs.view
            .members
            .iter()
            .copied()
            .find(|m| *m == self.pid || !self.suspects.contains(m))
    }

    pub(super) fn i_coordinate(&self) -> bool {
        self.acting_coordinator() == Some(self.pid)
    }

    /// Suspects `pid` (a member of the current view) and acts on it.
    pub(super) fn add_suspect(&mut self, pid: Pid) {
        if self.phase != Phase::Member || pid == self.pid {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if !vs.view.contains(pid) || !self.suspects.insert(pid) {
            return;
        }
        self.membership_changed();
    }

    /// There is a reason for a view change: run it, or tell whoever runs it.
    pub(super) fn membership_changed(&mut self) {
        if self.phase != Phase::Member {
            return;
        }
        if self.i_coordinate() {
            self.maybe_start_flush();
        } else {
            self.forward_suspicions();
        }
    }

    fn forward_suspicions(&mut self) {
        let (Some(coord), Some(view)) = (self.acting_coordinator(), self.current_view_id()) else {
            return;
        };
        if coord == self.pid || self.suspects.is_empty() {
            return;
        }
        self.last_forward = self.now;
        let pids = self.suspects.iter().copied().collect();
        self.send(coord, Message::Suspect { view, pids });
    }

    /// Periodic: suspect silent members, repeat forwarded suspicions.
    pub(super) fn detect_failures(&mut self) {
        let Some(vs) = self.vs.as_ref() else { return };
        let now = self.now;
        let timeout = self.config.suspect_timeout;
        let silent: Vec<Pid> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.pid && !self.suspects.contains(m))
            .filter(|m| now > self.last_heard.get(m).copied().unwrap_or(0) + timeout)
            .collect();
        for p in silent {
            self.add_suspect(p);
        }
        if !self.i_coordinate()
            && !self.suspects.is_empty()
            && now >= self.last_forward + self.config.resend_interval
        {
            self.forward_suspicions();
        }
    }

    pub(super) fn on_suspect(&mut self, from: Pid, view: ViewId, pids: Vec<Pid>) {
        if self.phase != Phase::Member {
            return;
        }
        if self.current_view_id() != Some(view) {
            // Perhaps a member that missed the last commit.
            self.admit(from, view);
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if !vs.view.contains(from) {
            return;
        }
        let mut changed = false;
        for p in pids.into_iter().take(vs.view.members.len()) {
            if p != self.pid && vs.view.contains(p) {
                changed |= self.suspects.insert(p);
            }
        }
        if changed {
            self.membership_changed();
        }
    }

    pub(super) fn send_join_request(&mut self) {
        self.last_request = self.now;
        self.out.push_back(super::Output::Transmit {
            to: super::Target::Seeds,
            msg: Message::JoinRequest { joiner: self.pid },
        });
    }

    pub(super) fn on_join_request(&mut self, joiner: Pid) {
        if self.phase != Phase::Member || joiner == self.pid {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if vs.view.contains(joiner) {
            // Its welcome was lost (and the proposer may be gone): any member
            // sends it again; the view is committed, so that is safe.
            let view = vs.view.clone();
            let transfers = self.view_transfers.clone();
            self.send(joiner, Message::Welcome { view, transfers });
            return;
        }
        // A new incarnation proves the old one is gone.
        let stale: Vec<Pid> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|m| m.node == joiner.node && m.inc < joiner.inc)
            .collect();
        if vs
            .view
            .members
            .iter()
            .any(|m| m.node == joiner.node && m.inc > joiner.inc)
        {
            return; // an older incarnation than a member: ignore
        }
        for s in stale {
            self.add_suspect(s);
        }
        if self.i_coordinate() {
            self.pending_joins.insert(joiner);
            self.maybe_start_flush();
        } else if let Some(c) = self.acting_coordinator() {
            self.send(c, Message::JoinRequest { joiner });
        }
    }

    pub(super) fn request_leave(&mut self) {
        self.last_request = self.now;
        if self.phase != Phase::Member {
            return;
        }
        if self.i_coordinate() {
            self.pending_leaves.insert(self.pid);
            self.maybe_start_flush();
        } else if let (Some(c), Some(view)) = (self.acting_coordinator(), self.current_view_id()) {
            self.send(c, Message::LeaveRequest { view });
        }
    }

    pub(super) fn on_leave_request(&mut self, from: Pid, view: ViewId) {
        if self.current_view_id() != Some(view) || self.phase != Phase::Member {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if !vs.view.contains(from) {
            return;
        }
        if self.pending_leaves.insert(from) && self.i_coordinate() {
            self.maybe_start_flush();
        }
    }

    /// A member of a later view says this process is not in it: removed.
    /// Believed from a member of this process's view, or from anyone while
    /// this process is blocked in a minority (the primary went on).
    pub(super) fn on_not_member(&mut self, from: Pid, view: ViewId) {
        if self.phase != Phase::Member {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if view.epoch <= vs.view.id.epoch || !(vs.view.contains(from) || self.blocked) {
            return;
        }
        self.become_removed();
    }

    /// Tells `to`, which sent traffic for an older view, that this
    /// process's current view `view` does not hold it, so that it leaves as
    /// removed. Only said to a process that was a member of one of this
    /// process's recent views, i.e. one this side went on without. Any
    /// other process is on another side (the partitionable merge's
    /// business), or was listed as a joiner by another side and took this
    /// side's welcome instead: told "not a member" by it, that side's
    /// members (whose view lists it) would leave their own group.
    pub(super) fn tell_not_member(&mut self, to: Pid, view: ViewId) {
        if self.was_member_with(to) {
            self.send(to, Message::NotMember { view });
        }
    }

    /// Blocked: ask the seeds whether the group went on without us.
    pub(super) fn probe_if_blocked(&mut self) {
        if !self.blocked || self.now < self.last_probe + self.config.flush_timeout {
            return;
        }
        let Some(view) = self.current_view_id() else {
            return;
        };
        self.last_probe = self.now;
        self.out.push_back(super::Output::Transmit {
            to: super::Target::Seeds,
            msg: Message::Probe { view },
        });
    }

    pub(super) fn on_probe(&mut self, from: Pid, view: ViewId) {
        if self.phase != Phase::Member {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        if vs.view.id.epoch > view.epoch {
            if vs.view.contains(from) {
                self.send_install_to_laggard(from, view);
            } else {
                let id = vs.view.id;
                self.send(from, Message::NotMember { view: id });
            }
        }
    }

    /// Out of the group. A process that asked to leave has left, however it
    /// learns that it is out (the commit may arrive after a `NotMember`).
    pub(super) fn become_removed(&mut self) {
        let Some(vs) = self.vs.as_mut() else { return };
        vs.frozen = true;
        let id = vs.view.id;
        self.prop = None;
        self.queue.clear();
        if self.leave_requested {
            self.phase = Phase::Left;
            self.emit(AppEvent::Left { view: id });
        } else {
            self.phase = Phase::Removed;
            self.emit(AppEvent::Removed { view: id });
        }
    }
}
