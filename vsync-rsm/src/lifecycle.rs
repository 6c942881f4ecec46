//! The restart's clock, sans-IO (time passed in as a value): when a
//! restarting replica that no group admits founds a recovering group, and
//! when a member of a recovering group that does not complete gives up on
//! it and asks the cluster again. The tokio replica and the simulator
//! ([`crate::simcheck`]) both decide through it.
//!
//! The rule ([`crate::Start::Auto`]): a replica restarting with state asks
//! the members of its last view (and the seeds). If none admits it within
//! `wait`, the whole cluster is presumed down, and the lowest node id of
//! its last view (the *founder*) founds a recovering group; the others
//! keep asking and so join it. Recovery completes only once every node of
//! the claimed last views is present, so a recovering group founded while
//! the real group lives out of reach never serves; a recovering group that
//! has not completed after `wait` (alone) or three times `wait` (with
//! others) is left, and its members ask again, so that once the network
//! heals they reach the group that lives.
//!
//! The same way out serves a member blocked for three times `wait` (its
//! view lost its majority: under the primary-component policy the group
//! can then never change views again, since a restarted member is a new
//! incarnation that counts for no old view's majority). It restarts from
//! its disk and asks again; if the others did the same, the recovering
//! group they found brings every node of the last view back together
//! with the most recent state.

use crate::sansio::Phase;
use std::time::Duration;

/// What the clock says to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartStep {
    /// Nothing.
    Wait,
    /// Found a recovering group as a new incarnation.
    FoundRecovering,
    /// Leave the recovering group and ask the cluster again.
    AskAgain,
}

/// The restart's clock of one replica.
#[derive(Clone, Debug)]
pub struct RestartClock {
    wait: Duration,
    /// Restarting since, and whether this replica is the founder.
    restarting: Option<(Duration, bool)>,
    /// In a recovering group that has not completed, since.
    stuck_since: Option<Duration>,
    /// Blocked (a view change that does not complete), since.
    blocked_since: Option<Duration>,
}

/// What the clock reads of the replica at each poll.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    /// The core's phase.
    pub phase: Phase,
    /// The group is recovering and has not completed.
    pub recovering: bool,
    /// Members of the current view (0 when none).
    pub members: usize,
    /// There is someone to ask (seeds or the last view's other members).
    pub can_ask: bool,
    /// The group is blocked (a view change in progress).
    pub blocked: bool,
}

impl RestartClock {
    /// A clock that waits `wait` (see the module documentation).
    pub fn new(wait: Duration) -> Self {
        RestartClock {
            wait,
            restarting: None,
            stuck_since: None,
            blocked_since: None,
        }
    }

    /// The replica (re)starts asking the cluster at `now`; `founder`: it
    /// founds the recovering group if nobody admits it.
    pub fn restarting(&mut self, now: Duration, founder: bool) {
        self.restarting = Some((now, founder));
        self.stuck_since = None;
        self.blocked_since = None;
    }

    /// Whether the replica is asking the cluster and not yet admitted.
    pub fn is_restarting(&self) -> bool {
        self.restarting.is_some()
    }

    /// A view was installed: the replica was admitted somewhere.
    pub fn admitted(&mut self) {
        self.restarting = None;
    }

    /// Recovery completed.
    pub fn recovered(&mut self) {
        self.stuck_since = None;
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Duration, r: Observed) -> RestartStep {
        if let Some((since, founder)) = self.restarting {
            if founder && r.phase == Phase::Joining && now.saturating_sub(since) >= self.wait {
                self.restarting = None;
                return RestartStep::FoundRecovering;
            }
            return RestartStep::Wait;
        }
        if r.blocked && r.phase == Phase::Member {
            let since = *self.blocked_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.wait * 3 && r.can_ask {
                self.blocked_since = None;
                return RestartStep::AskAgain;
            }
        } else {
            self.blocked_since = None;
        }
        if !(r.recovering && r.phase == Phase::Member) {
            self.stuck_since = None;
            return RestartStep::Wait;
        }
        let since = *self.stuck_since.get_or_insert(now);
        let patience = if r.members <= 1 {
            self.wait
        } else {
            self.wait * 3
        };
        if now.saturating_sub(since) >= patience && r.can_ask {
            self.stuck_since = None;
            return RestartStep::AskAgain;
        }
        RestartStep::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(phase: Phase, recovering: bool, members: usize) -> Observed {
        Observed {
            phase,
            recovering,
            members,
            can_ask: true,
            blocked: false,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_founder_that_nobody_admits_founds_after_the_wait_and_others_keep_asking() {
        let mut founder = RestartClock::new(3 * S);
        let mut other = RestartClock::new(3 * S);
        founder.restarting(S, true);
        other.restarting(S, false);
        let joining = obs(Phase::Joining, false, 0);
        assert_eq!(founder.poll(3 * S, joining), RestartStep::Wait);
        assert_eq!(founder.poll(4 * S, joining), RestartStep::FoundRecovering);
        assert!(!founder.is_restarting());
        assert_eq!(other.poll(100 * S, joining), RestartStep::Wait);
    }

    #[test]
    fn an_admitted_replica_never_founds() {
        let mut c = RestartClock::new(3 * S);
        c.restarting(S, true);
        c.admitted();
        assert_eq!(
            c.poll(10 * S, obs(Phase::Member, false, 3)),
            RestartStep::Wait
        );
    }

    #[test]
    fn a_recovering_group_that_does_not_complete_is_left() {
        let mut c = RestartClock::new(3 * S);
        // Alone: after the wait.
        assert_eq!(c.poll(S, obs(Phase::Member, true, 1)), RestartStep::Wait);
        assert_eq!(
            c.poll(4 * S, obs(Phase::Member, true, 1)),
            RestartStep::AskAgain
        );
        // With others: after three times the wait.
        assert_eq!(
            c.poll(5 * S, obs(Phase::Member, true, 2)),
            RestartStep::Wait
        );
        assert_eq!(
            c.poll(13 * S, obs(Phase::Member, true, 2)),
            RestartStep::Wait
        );
        assert_eq!(
            c.poll(14 * S, obs(Phase::Member, true, 2)),
            RestartStep::AskAgain
        );
        // Completed recovery resets it; nobody to ask: stay.
        assert_eq!(
            c.poll(15 * S, obs(Phase::Member, false, 2)),
            RestartStep::Wait
        );
        // Blocked for three waits: ask again.
        let mut b = RestartClock::new(3 * S);
        let mut o = obs(Phase::Member, false, 3);
        o.blocked = true;
        assert_eq!(b.poll(S, o), RestartStep::Wait);
        assert_eq!(b.poll(9 * S, o), RestartStep::Wait);
        o.blocked = false;
        assert_eq!(b.poll(10 * S, o), RestartStep::Wait);
        o.blocked = true;
        assert_eq!(b.poll(11 * S, o), RestartStep::Wait);
        assert_eq!(b.poll(20 * S, o), RestartStep::AskAgain);
        let mut lone = RestartClock::new(3 * S);
        let mut o = obs(Phase::Member, true, 1);
        o.can_ask = false;
        assert_eq!(lone.poll(S, o), RestartStep::Wait);
        assert_eq!(lone.poll(100 * S, o), RestartStep::Wait);
    }
}
