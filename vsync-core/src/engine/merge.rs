//! Merging the sides of a healed partition (partitionable policy only).
//!
//! Under [`Policy::Partitionable`] every side of a partition installs its
//! own views and goes on delivering, so after the heal the group is several
//! groups that share a name. They find each other by *merge probes*: the
//! acting coordinator of each side periodically sends its current view to
//! the processes its side lost (members removed by suspicion, not those
//! that left) and to the seeds.
//!
//! **The rule.** Of two sides, the winner is the one whose view has more
//! members; on a tie, the one holding the lowest node id; then the lowest
//! process id; then the lower view id ([`beats`]). It is a strict total
//! order on views, so two processes comparing the same pair of views agree.
//!
//! **The exchange.** Each side speaks through its acting coordinator: a
//! member that is not the coordinator passes probes and notices on to it.
//! A coordinator that receives a probe from a side its own view beats
//! answers with `MergeAway` (its own view) to every member of the probing
//! side (again at most once per probe interval), and for a while
//! (`4 x flush_timeout`) refuses to lose a merge to any view that holds one
//! of the members it told. A coordinator that receives `MergeAway` checks
//! the rule again against its *current* view; if the sender's side still
//! wins (and it holds no refusal against that side), it relays the notice
//! to its view, tells the application that its history since the split is
//! discarded ([`AppEvent::Diverged`]; the split is the latest of its views
//! that the winner's coordinator also installed, found from the view ids
//! the notice carries), and leaves as if removed
//! ([`AppEvent::Removed`]): it rejoins the winner as a new incarnation and
//! gets the winner's state by transfer. The members do the same on their
//! coordinator's relay, so the side goes as one (seed 64937 of the replica
//! simulator showed a member that decided alone leave while its
//! coordinator, holding a refusal, installed a next view that still listed
//! it).
//!
//! The refusal is what keeps two sides from losing to each other when their
//! views change while notices are in flight: a member that told a side to
//! go away does not go away on that side's word for a while, so two crossing
//! notices cannot both be obeyed (unless a message is delayed longer than
//! the window, after which the probes simply run again with fresh views).
//! It binds only the pair: a third, larger side can still win over it.
//! Members of the winning side keep their state; nothing is rolled back.

use super::{AppEvent, Engine, Phase, Target};
use crate::checker::Policy;
use crate::id::{NodeId, Pid, View, ViewId};
use crate::message::Message;

/// How many lost processes a member keeps probing.
const MAX_LOST: usize = 64;
/// How many of its own recent views a process remembers, to name the view
/// where its side split from a winner.
const MAX_RECENT: usize = 64;

/// The merge state of one process.
#[derive(Clone, Debug, Default)]
pub(super) struct MergeState {
    /// Processes this process's side removed without their leaving, oldest
    /// first: probed until a process of the same node is a member again.
    lost: Vec<Pid>,
    /// This process's recent views, oldest first: id and members.
    recent: Vec<(ViewId, Vec<Pid>)>,
    /// When this process last sent a merge probe.
    last_probe: u64,
    /// The sides this process told to go away, and when: their view, and
    /// until when it refuses to lose a merge to a view holding any of their
    /// members.
    told: Vec<(View, u64)>,
}

/// Whether side `a` wins a merge against side `b` (see the module docs).
/// For two different views exactly one of `beats(a, b)` and `beats(b, a)`
/// holds.
pub fn beats(a: &View, b: &View) -> bool {
    merge_key(a) < merge_key(b)
}

/// The sort key of the merge rule: smaller wins.
fn merge_key(
    v: &View,
) -> (
    std::cmp::Reverse<usize>,
    Option<NodeId>,
    Option<Pid>,
    ViewId,
) {
    (
        std::cmp::Reverse(v.members.len()),
        v.members.iter().map(|p| p.node).min(),
        v.members.iter().min().copied(),
        v.id,
    )
}

impl Engine {
    /// Called at every install with the previous view (if any): remembers
    /// the view, and the processes removed without leaving.
    pub(super) fn merge_note_install(&mut self, prev: Option<&View>, leavers: &[Pid], new: &View) {
        let m = &mut self.merge;
        if let Some(prev) = prev {
            for p in &prev.members {
                if !new.contains(*p) && !leavers.contains(p) && *p != self.pid {
                    m.lost.retain(|q| q.node != p.node);
                    m.lost.push(*p);
                }
            }
        }
        m.lost
            .retain(|q| !new.members.iter().any(|p| p.node == q.node));
        if m.lost.len() > MAX_LOST {
            let extra = m.lost.len() - MAX_LOST;
            m.lost.drain(..extra);
        }
        m.recent.push((new.id, new.members.clone()));
        if m.recent.len() > MAX_RECENT {
            m.recent.remove(0);
        }
    }

    /// Periodic: the acting coordinator of a side probes for other sides.
    pub(super) fn merge_tick(&mut self) {
        if self.policy() != Policy::Partitionable
            || self.phase != Phase::Member
            || self.is_flushing()
            || !self.i_coordinate()
            || self.now < self.merge.last_probe + self.config.merge_interval
        {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        let view = vs.view.clone();
        self.merge.last_probe = self.now;
        let lost = self.merge.lost.clone();
        if !lost.is_empty() {
            self.send_many(lost, Message::MergeProbe { view: view.clone() });
        }
        self.out.push_back(super::Output::Transmit {
            to: Target::Seeds,
            msg: Message::MergeProbe { view },
        });
    }

    /// This process's current view, if `other` is a different side:
    /// another view, sharing no process with it.
    fn other_side(&self, other: &View) -> Option<View> {
        if self.policy() != Policy::Partitionable || self.phase != Phase::Member {
            return None;
        }
        let mine = &self.vs.as_ref()?.view;
        if other.id == mine.id
            || other.members.is_empty()
            || other.members.iter().any(|p| mine.contains(*p))
        {
            return None;
        }
        Some(mine.clone())
    }

    pub(super) fn on_merge_probe(&mut self, from: Pid, other: View) {
        // From the probing side, or passed on by a member of this side.
        let Some(mine) = self
            .other_side(&other)
            .filter(|mine| other.contains(from) || mine.contains(from))
        else {
            return;
        };
        if !self.i_coordinate() {
            // Only the acting coordinator answers for the side, so that the
            // refusal below is held where the side's decisions are made.
            if other.contains(from)
                && let Some(c) = self.acting_coordinator()
            {
                self.send(c, Message::MergeProbe { view: other });
            }
            return;
        }
        if !beats(&mine, &other) {
            // The prober's side wins: it tells us when it hears our probe.
            return;
        }
        let now = self.now;
        let hold = 4 * self.config.flush_timeout;
        self.merge.told.retain(|(_, until)| now < *until);
        // At most one notice per probe interval to the same side.
        let resend = self.config.merge_interval;
        if self
            .merge
            .told
            .iter()
            .any(|(v, until)| v.id == other.id && now + hold < until + resend)
        {
            return;
        }
        self.merge.told.push((other.clone(), now + hold));
        let history = self.recent_ids();
        self.send_many(
            other.members.clone(),
            Message::MergeAway {
                winner: mine,
                history,
            },
        );
    }

    /// From a member of the winning side, or relayed by a member of this
    /// process's own side.
    pub(super) fn on_merge_away(&mut self, from: Pid, winner: View, history: Vec<ViewId>) {
        let Some(mine) = self
            .other_side(&winner)
            .filter(|mine| winner.contains(from) || mine.contains(from))
        else {
            return;
        };
        // The side goes as one, on its acting coordinator's decision: a
        // member that decided alone could leave while its coordinator,
        // holding a refusal, stays and installs a view that still lists it.
        let coord = self.acting_coordinator();
        if coord != Some(self.pid) {
            if coord == Some(from) {
                if beats(&winner, &mine) && !self.mutations.merge_never {
                    self.lose_merge(&mine, winner, &history);
                }
            } else if let Some(c) = coord {
                self.send(c, Message::MergeAway { winner, history });
            }
            return;
        }
        // A side this process told to go away cannot make it go (their
        // notices may cross ours).
        let told_them =
            self.merge.told.iter().any(|(v, until)| {
                self.now < *until && v.members.iter().any(|p| winner.contains(*p))
            });
        if told_them || !beats(&winner, &mine) || self.mutations.merge_never {
            return;
        }
        // The notice goes to the rest of the side first, so that the side
        // goes as one.
        let others = self.others();
        self.send_many(
            others,
            Message::MergeAway {
                winner: winner.clone(),
                history: history.clone(),
            },
        );
        self.lose_merge(&mine, winner, &history);
    }

    /// This side lost to `winner`: report what is discarded, then leave as
    /// if removed (the application rejoins).
    fn lose_merge(&mut self, mine: &View, winner: View, history: &[ViewId]) {
        let split = if self.mutations.split_guessed_from_members {
            self.merge
                .recent
                .iter()
                .rev()
                .find(|(_, m)| {
                    m.iter()
                        .any(|q| winner.members.iter().any(|p| p.node == q.node))
                })
                .map(|(id, _)| *id)
        } else {
            self.split_from(history)
        };
        self.emit(AppEvent::Diverged {
            view: mine.id,
            split,
            winner,
        });
        self.become_removed();
    }

    /// Whether `p` was a member of one of this process's recent views: only
    /// such a process can have been left behind by this process's side.
    pub(super) fn was_member_with(&self, p: Pid) -> bool {
        self.merge
            .recent
            .iter()
            .any(|(_, members)| members.contains(&p))
    }

    /// This process's recent view ids, oldest first: sent with a
    /// `MergeAway` so that the losers can find the last view both sides
    /// installed.
    fn recent_ids(&self) -> Vec<ViewId> {
        self.merge.recent.iter().map(|(id, _)| *id).collect()
    }

    /// Where this side's history and the winner's part: the latest of this
    /// process's recent views that is also in the winner's (`history`, the
    /// recent views of the winner's coordinator). `None` if they share none
    /// that both remember (the coordinator joined its side after the split,
    /// or the split is older than the last 64 views). Not guessed from the
    /// members: a process listed in a view need not have installed it (a
    /// joiner that took another side's welcome).
    fn split_from(&self, history: &[ViewId]) -> Option<ViewId> {
        // A winner sends at most its last MAX_RECENT; more is not honest
        // and would only cost time.
        let history = &history[history.len().saturating_sub(MAX_RECENT)..];
        self.merge
            .recent
            .iter()
            .rev()
            .find(|(id, _)| history.contains(id))
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(epoch: u64, installer: u64, members: &[(u64, u64)]) -> View {
        View {
            id: ViewId {
                epoch,
                installer: Pid::new(installer, 1),
            },
            members: members.iter().map(|&(n, i)| Pid::new(n, i)).collect(),
        }
    }

    #[test]
    fn the_larger_side_wins_then_the_lowest_node() {
        let big = view(5, 3, &[(3, 1), (4, 1), (5, 1)]);
        let small = view(5, 1, &[(1, 1), (2, 1)]);
        assert!(beats(&big, &small) && !beats(&small, &big));
        let low = view(7, 2, &[(2, 1), (5, 1)]);
        let high = view(6, 3, &[(3, 1), (4, 1)]);
        assert!(beats(&low, &high) && !beats(&high, &low));
    }

    #[test]
    fn the_rule_is_antisymmetric_on_ties() {
        // Same size, same lowest node (two incarnations of node 1).
        let a = view(4, 1, &[(1, 1), (3, 1)]);
        let b = view(4, 1, &[(1, 2), (2, 1)]);
        assert!(beats(&a, &b) != beats(&b, &a));
        assert!(!beats(&a, &a));
    }
}
