//! What a replica loses when its side of a partition loses the merge
//! (partitionable policy, [`vsync_core::engine::PartitionPolicy`]): the
//! [`Divergence`] handed to [`crate::StateMachine::on_discard`] before the
//! state is replaced, its summary [`DivergenceInfo`] (in the status and the
//! event stream), and the bounded journal of recently applied commands the
//! list is taken from.
//!
//! Why a journal: the engine tells a losing replica *where* its history
//! parted from the winner's (the split view), but the commands applied
//! since then are gone from the state machine as individual commands. The
//! replica therefore keeps the last commands it applied (at most
//! [`crate::ReplicaConfig::discard_journal`] commands and
//! [`crate::ReplicaConfig::discard_journal_bytes`] bytes, only under the
//! partitionable policy) with their positions, and where each recent view
//! began.
//!
//! Where the histories part. The split view is the last view this replica's
//! history shares with the winner's (one the winner's coordinator also
//! installed). Everything this replica applied
//! after the split view ended ([`Divergence::position`]) is certainly not in
//! the winner's history. What it applied in the split view itself is
//! uncertain: the commands delivered there before the partition are in the
//! winner's history too, but those its side delivered while ending the
//! split view on its own (the flush's tail) may not be, and a replica
//! cannot tell the two apart. Both are listed, the uncertain ones flagged
//! ([`Discarded::in_split_view`]).
//!
//! Guarantees: the listed commands are exactly the commands this replica
//! applied after [`Divergence::split_start`], oldest first, at consecutive
//! positions ending at [`Divergence::last`], except the oldest
//! [`Divergence::unlisted`] of them when the journal's limits dropped
//! them (the newest, certainly discarded ones are dropped last). The
//! journal never holds more than its limits.

use bytes::Bytes;
use std::collections::VecDeque;
use vsync_core::{View, ViewId};

/// How many recent views the journal remembers the start of (the engine
/// names a split view among its last 64).
const MAX_VIEWS: usize = 128;

/// What a replica whose side lost a partition merge discards: its history
/// since the split, as far as it kept it. Handed to
/// [`crate::StateMachine::on_discard`] before the state is replaced by the
/// winner's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence<C> {
    /// This replica's last view (the losing side's).
    pub view: ViewId,
    /// The last view of this replica that also held a node of the winning
    /// side (the split view), if the engine still remembered it.
    pub split: Option<ViewId>,
    /// The winning side's view, as the winner announced it.
    pub winner: View,
    /// Where it diverged: this replica's position at the end of the split
    /// view (the start of the first view after it). Every command applied
    /// after it is certainly not in the winner's history. `None` if
    /// unknown (the split view is older than the views this replica
    /// remembers, or this replica joined its side after the split, so that
    /// its whole state came from the losing side).
    pub position: Option<u64>,
    /// This replica's position when the split view began: up to it, its
    /// history is the winner's (the split view is the last one it shared
    /// with a node of the winning side). The commands between it and
    /// [`Divergence::position`] were applied in the split view itself and
    /// may or may not be in the winner's history (see the module
    /// documentation). `None` if unknown.
    pub split_start: Option<u64>,
    /// This replica's position when it learned it lost (the last command
    /// discarded).
    pub last: u64,
    /// The commands this replica discards, as far as its journal kept them,
    /// oldest first: every command it applied after `split_start` (or, if
    /// that is unknown, every one it remembers), less the `unlisted`
    /// oldest. Those after `position` are certainly lost; those in the
    /// split view are flagged [`Discarded::in_split_view`].
    pub discarded: Vec<Discarded<C>>,
    /// Commands applied after `split_start` that are not listed because the
    /// journal's limits had already dropped them. When `split_start` is
    /// unknown, how many commands before the oldest listed one were lost is
    /// unknown too, and not counted here.
    pub unlisted: u64,
}

/// One discarded command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discarded<C> {
    /// Its position (commands applied since genesis, itself included).
    pub position: u64,
    /// The view it was delivered in.
    pub view: ViewId,
    /// Applied in the split view itself: it may also be in the winner's
    /// history (see [`Divergence::split_start`]). `false`: certainly not in
    /// the winner's history.
    pub in_split_view: bool,
    /// The command.
    pub command: C,
}

impl<C> Divergence<C> {
    /// The listed commands that are certainly lost (applied after the
    /// split view).
    pub fn certain(&self) -> impl Iterator<Item = &Discarded<C>> {
        self.discarded.iter().filter(|d| !d.in_split_view)
    }

    /// The summary, without the commands.
    pub fn info(&self) -> DivergenceInfo {
        let listed = self.discarded.len() as u64;
        let (discarded, uncertain) = match (self.split_start, self.position) {
            (Some(start), Some(end)) => (self.last.saturating_sub(end), end.saturating_sub(start)),
            _ => (listed, 0),
        };
        DivergenceInfo {
            view: self.view,
            split: self.split,
            winner: self.winner.id,
            position: self.position,
            split_start: self.split_start,
            last: self.last,
            discarded,
            uncertain,
            listed,
        }
    }
}

/// The summary of a [`Divergence`] (in [`crate::ReplicaStatus`] and
/// [`crate::ReplicaEvent::Diverged`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DivergenceInfo {
    /// The losing side's view (this replica's last view).
    pub view: ViewId,
    /// The split view, if known ([`Divergence::split`]).
    pub split: Option<ViewId>,
    /// The winning side's view.
    pub winner: ViewId,
    /// Where it diverged: its position at the end of the split view
    /// ([`Divergence::position`]).
    pub position: Option<u64>,
    /// Its position when the split view began
    /// ([`Divergence::split_start`]).
    pub split_start: Option<u64>,
    /// This replica's position when it lost.
    pub last: u64,
    /// Commands certainly discarded: those applied after `position`
    /// (listed or not); when `position` is unknown, the listed ones.
    pub discarded: u64,
    /// Commands applied in the split view, which may or may not be in the
    /// winner's history (0 when unknown).
    pub uncertain: u64,
    /// How many commands the state machine's hook was shown (of both
    /// kinds).
    pub listed: u64,
}

/// The bounded journal of recently applied commands and of where recent
/// views began (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// At most this many commands (0: the journal is off).
    max_cmds: usize,
    /// At most this many bytes of commands.
    max_bytes: usize,
    /// (position, view, encoded command), oldest first, consecutive.
    cmds: VecDeque<(u64, ViewId, Bytes)>,
    bytes: usize,
    /// (view, this replica's position when it began), oldest first.
    views: VecDeque<(ViewId, u64)>,
}

impl Journal {
    /// Sets the limits (0 commands: keep none, remember views only).
    pub(crate) fn set_limits(&mut self, max_cmds: usize, max_bytes: usize) {
        self.max_cmds = max_cmds;
        self.max_bytes = max_bytes;
        self.trim();
    }

    /// Forgets everything (the state was replaced).
    pub(crate) fn clear(&mut self) {
        self.cmds.clear();
        self.bytes = 0;
        self.views.clear();
    }

    /// `view` began with this replica at `position`.
    pub(crate) fn view_began(&mut self, view: ViewId, position: u64) {
        if self.views.back().is_some_and(|(v, _)| *v == view) {
            return;
        }
        self.views.push_back((view, position));
        if self.views.len() > MAX_VIEWS {
            self.views.pop_front();
        }
    }

    /// The command at `position` was applied in `view`.
    pub(crate) fn applied(&mut self, position: u64, view: ViewId, cmd: &Bytes) {
        if self.max_cmds == 0 {
            return;
        }
        if self
            .cmds
            .back()
            .is_some_and(|(p, _, _)| p.checked_add(1) != Some(position))
        {
            // Not consecutive (cannot happen while the state is intact):
            // start again rather than list a gap.
            self.cmds.clear();
            self.bytes = 0;
        }
        self.bytes += cmd.len();
        self.cmds.push_back((position, view, cmd.clone()));
        self.trim();
    }

    fn trim(&mut self) {
        while self.cmds.len() > self.max_cmds
            || (self.bytes > self.max_bytes && !self.cmds.is_empty())
        {
            if let Some((_, _, c)) = self.cmds.pop_front() {
                self.bytes = self.bytes.saturating_sub(c.len());
            }
        }
    }

    /// The divergence after losing to `winner`, with the commands decoded
    /// by `decode` (an undecodable one is counted as unlisted; commands
    /// were decoded once already when applied, so this does not happen).
    pub(crate) fn divergence<C>(
        &self,
        view: ViewId,
        split: Option<ViewId>,
        winner: View,
        last: u64,
        decode: impl Fn(&[u8]) -> Option<C>,
    ) -> Divergence<C> {
        let at = split.and_then(|s| self.views.iter().position(|(v, _)| *v == s));
        let split_start = at.and_then(|i| self.views.get(i)).map(|(_, p)| *p);
        let position = at.map(|i| self.views.get(i + 1).map_or(last, |(_, p)| *p));
        let mut discarded = Vec::new();
        let mut skipped = 0u64;
        for (p, v, c) in &self.cmds {
            if split_start.is_some_and(|from| *p <= from) {
                continue;
            }
            match decode(c) {
                Some(command) => discarded.push(Discarded {
                    position: *p,
                    view: *v,
                    in_split_view: position.is_some_and(|end| *p <= end),
                    command,
                }),
                None => skipped += 1,
            }
        }
        let unlisted = match split_start {
            Some(from) => last
                .saturating_sub(from)
                .saturating_sub(discarded.len() as u64),
            None => skipped,
        };
        Divergence {
            view,
            split,
            winner,
            position,
            split_start,
            last,
            discarded,
            unlisted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsync_core::Pid;

    fn vid(e: u64) -> ViewId {
        ViewId {
            epoch: e,
            installer: Pid::new(1, 1),
        }
    }

    fn winner() -> View {
        View {
            id: vid(9),
            members: vec![Pid::new(3, 1)],
        }
    }

    fn journal(max: usize) -> Journal {
        let mut j = Journal::default();
        j.set_limits(max, 1 << 20);
        // View 1 from 0 to 10, view 2 (the split view) from 10 to 14,
        // view 3 (this side alone) from 14 to 20.
        let mut pos = 0;
        for (v, n) in [(1, 10), (2, 4), (3, 6)] {
            j.view_began(vid(v), pos);
            for _ in 0..n {
                pos += 1;
                j.applied(pos, vid(v), &Bytes::from(pos.to_le_bytes().to_vec()));
            }
        }
        j
    }

    fn decode(b: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    #[test]
    fn lists_every_command_after_the_split_view_began() {
        let j = journal(100);
        let d = j.divergence(vid(3), Some(vid(2)), winner(), 20, decode);
        assert_eq!(
            (d.split_start, d.position, d.unlisted),
            (Some(10), Some(14), 0)
        );
        let ps: Vec<u64> = d.discarded.iter().map(|x| x.position).collect();
        assert_eq!(ps, (11..=20).collect::<Vec<_>>());
        assert!(d.discarded.iter().all(|x| x.command == x.position));
        let in_split: Vec<u64> = d
            .discarded
            .iter()
            .filter(|x| x.in_split_view)
            .map(|x| x.position)
            .collect();
        assert_eq!(in_split, vec![11, 12, 13, 14]);
        let certain: Vec<u64> = d.certain().map(|x| x.position).collect();
        assert_eq!(certain, (15..=20).collect::<Vec<_>>());
        let i = d.info();
        assert_eq!((i.discarded, i.uncertain, i.listed), (6, 4, 10));
    }

    #[test]
    fn the_limit_drops_the_oldest_and_counts_them() {
        let j = journal(4);
        let d = j.divergence(vid(3), Some(vid(2)), winner(), 20, decode);
        let ps: Vec<u64> = d.discarded.iter().map(|x| x.position).collect();
        assert_eq!(ps, vec![17, 18, 19, 20]);
        assert_eq!(d.unlisted, 6);
        assert_eq!((d.info().discarded, d.info().uncertain), (6, 4));
        // A byte limit: 8 bytes per command, 24 bytes keep three.
        let mut j = journal(100);
        j.set_limits(100, 24);
        let d = j.divergence(vid(3), Some(vid(2)), winner(), 20, decode);
        assert_eq!((d.discarded.len(), d.unlisted), (3, 7));
    }

    #[test]
    fn an_unknown_split_lists_what_is_remembered() {
        let j = journal(5);
        let d = j.divergence(vid(3), None, winner(), 20, decode);
        assert_eq!((d.split_start, d.position, d.unlisted), (None, None, 0));
        assert_eq!(d.discarded.len(), 5);
        assert!(d.discarded.iter().all(|x| !x.in_split_view));
        assert_eq!((d.info().discarded, d.info().uncertain), (5, 0));
        // The split view is the current one: all of it is uncertain.
        let d = j.divergence(vid(3), Some(vid(3)), winner(), 20, decode);
        assert_eq!((d.split_start, d.position), (Some(14), Some(20)));
        assert_eq!((d.discarded.len(), d.unlisted), (5, 1));
        assert_eq!((d.info().discarded, d.info().uncertain), (0, 6));
    }

    #[test]
    fn a_gap_restarts_the_journal() {
        let mut j = journal(100);
        j.applied(30, vid(3), &Bytes::from_static(&[0; 8]));
        assert_eq!(j.cmds.len(), 1);
    }
}
