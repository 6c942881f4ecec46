//! Identities: processes, views and flush ballots.
//!
//! A *process* is a node id plus an incarnation number. A node that restarts,
//! or that learns it was removed from the group, comes back with a higher
//! incarnation and is, to the protocol, a different process.
//!
//! A *view id* is `(epoch, installer)`. The epoch grows by one at every view
//! change; the installer (the process that ran the flush that produced the
//! view) keeps the views of concurrent partition sides distinct, so that no
//! two sides ever install views a process could confuse.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable name of a node (a machine or a configured slot), chosen by the
/// operator. Unique within a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A process: a node id plus the incarnation number of this run of it.
///
/// Ordering is by node id, then incarnation; it is used only for
/// deterministic tie-breaks, never for seniority (seniority is the order of
/// members in a [`View`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid {
    /// The node this process runs on.
    pub node: NodeId,
    /// Incarnation number: higher on every restart or rejoin.
    pub inc: u64,
}

impl Pid {
    /// A process id from its parts.
    pub const fn new(node: u64, inc: u64) -> Self {
        Pid {
            node: NodeId(node),
            inc,
        }
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}.{}", self.node.0, self.inc)
    }
}

/// Identifies a view. Ordered by epoch first, then by installer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewId {
    /// Grows by one at every view change along one line of views.
    pub epoch: u64,
    /// The process that installed (ran the flush that produced) the view.
    pub installer: Pid,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}@{}", self.epoch, self.installer)
    }
}

/// A view: its id and its members, most senior first.
///
/// Seniority: members that survive a view change keep their relative order;
/// joiners are appended. The most senior member coordinates the view and
/// orders its multicasts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct View {
    /// The view's identity.
    pub id: ViewId,
    /// Members, most senior first.
    pub members: Vec<Pid>,
}

impl View {
    /// The rank (index in `members`) of `p`, if it is a member.
    pub fn rank(&self, p: Pid) -> Option<usize> {
        self.members.iter().position(|m| *m == p)
    }

    /// Whether `p` is a member.
    pub fn contains(&self, p: Pid) -> bool {
        self.members.contains(&p)
    }

    /// The coordinator: the most senior member.
    pub fn coordinator(&self) -> Pid {
        self.members[0]
    }

    /// Whether `present` (a subset of this view's members) is a quorum of
    /// this view under the primary-component rule: a strict majority, or
    /// exactly half including the most senior member.
    pub fn is_quorum(&self, present: &[Pid]) -> bool {
        let n = self.members.len();
        let k = self.members.iter().filter(|m| present.contains(m)).count();
        2 * k > n || (2 * k == n && present.contains(&self.members[0]))
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [", self.id)?;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            write!(f, "{m}")?;
        }
        write!(f, "]")
    }
}

/// Identifies one multicast: sent by `sender` in view `view` as the
/// `seq`-th message (from 1) of that sender in that view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The view the message was sent in.
    pub view: ViewId,
    /// Its sender.
    pub sender: Pid,
    /// Per-sender, per-view sequence number, from 1.
    pub seq: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}#{}", self.view, self.sender, self.seq)
    }
}
