//! The engine's wire messages.
//!
//! Every message names the view it belongs to, so that traffic of an old view
//! is recognised and ignored (or answered with a removal notice) and traffic
//! of a view not yet installed is recognised as such. Payloads are
//! [`bytes::Bytes`]: a multicast is never copied between the application, the
//! engine's buffers and the transport.

use crate::id::{Pid, View, ViewId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A flush ballot: the round number, then the proposer as a tie-break. A
/// member follows the highest ballot it has seen for a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows each time a proposer starts over.
    pub round: u64,
    /// Who proposes.
    pub proposer: Pid,
}

/// A run in an ordering record, `(rank, first_seq, count)`: the messages
/// `first_seq .. first_seq + count` of the sender of rank `rank` come next in
/// the total order.
pub type Run = (u32, u64, u32);

/// One slot of the total order: a sender's rank and its sequence number.
pub type Slot = (u32, u64);

/// What a member reports when it joins a flush (its frozen state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushReport {
    /// Positions delivered in the old view.
    pub delivered: u64,
    /// For each sender rank, how many of its messages were delivered.
    pub delivered_seq: Vec<u64>,
    /// The total order known beyond `order_from`: slots at positions
    /// `order_from + 1 ..`.
    pub order: Vec<Slot>,
    /// Where `order` starts: the lower of `delivered` and the stable point
    /// (total, FIFO and causal messages are passed before they are stable,
    /// and the others may not know their positions yet).
    pub order_from: u64,
    /// For each sender rank, the highest sequence number received without a
    /// gap.
    pub recv: Vec<u64>,
    /// Payloads held that are not yet known to be stable, or are unordered:
    /// `(rank, seq, payload)`.
    pub payloads: Vec<(u32, u64, Bytes)>,
    /// A proposal this member accepted in an earlier ballot, if any.
    pub accepted: Option<(Ballot, Proposal)>,
}

/// A proposed next view and the old view's final tail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The next view.
    pub view: View,
    /// The tail starts after this position of the old view.
    pub base: u64,
    /// For each old-view sender rank, how many of its messages were ordered
    /// at `base`.
    pub base_seq: Vec<u64>,
    /// The old view's final order after `base`.
    pub tail: Vec<Slot>,
    /// Members of the old view that leave cleanly with this change.
    pub leavers: Vec<Pid>,
    /// Joiners admitted by this change, each with the member that sends it
    /// the state (the cut is the start of the new view).
    pub transfers: Vec<(Pid, Pid)>,
}

/// The engine's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Multicasts `first_seq, first_seq + 1, ...` of the sender in `view`.
    Data {
        /// The view they were sent in.
        view: ViewId,
        /// Sequence number of the first payload.
        first_seq: u64,
        /// The payloads.
        payloads: Vec<Bytes>,
    },
    /// An ordering record from the view's coordinator: positions
    /// `first_pos ..` are the runs in order.
    Order {
        /// The view.
        view: ViewId,
        /// Position of the first slot the runs describe.
        first_pos: u64,
        /// The runs, in order. Each names its first sequence number so that
        /// a receiver can check it continues the sender's order.
        runs: Vec<Run>,
    },
    /// Acknowledgement and heartbeat: how far the sender has everything.
    Ack {
        /// The view.
        view: ViewId,
        /// Positions for which the sender has both the order and the data.
        have: u64,
        /// Positions of the order the sender knows.
        order_len: u64,
        /// For each sender rank, the highest sequence received without gap.
        recv: Vec<u64>,
    },
    /// A request to resend: data ranges `(rank, lo, hi)` (inclusive) and an
    /// order range (inclusive).
    Nack {
        /// The view.
        view: ViewId,
        /// Missing data.
        data: Vec<(u32, u64, u64)>,
        /// Missing order positions.
        order: Option<(u64, u64)>,
    },
    /// A process asks to join (sent to seeds, forwarded to the coordinator).
    JoinRequest {
        /// The process that wants to join.
        joiner: Pid,
    },
    /// A member asks to leave the group after `view`.
    LeaveRequest {
        /// The view it leaves.
        view: ViewId,
    },
    /// A member tells the flush proposer whom it suspects.
    Suspect {
        /// The view.
        view: ViewId,
        /// The suspected members.
        pids: Vec<Pid>,
    },
    /// Phase 1 of a flush: stop sending in `old` and report your state.
    FlushStart {
        /// The view being ended.
        old: ViewId,
        /// The ballot.
        ballot: Ballot,
    },
    /// A member's answer to `FlushStart`.
    FlushState {
        /// The view being ended.
        old: ViewId,
        /// The ballot answered.
        ballot: Ballot,
        /// The frozen state.
        report: Box<FlushReport>,
    },
    /// A member has promised a higher ballot than the one it was sent.
    FlushReject {
        /// The view being ended.
        old: ViewId,
        /// The higher ballot it follows.
        promised: Ballot,
    },
    /// Phase 2: accept this proposal; `payloads` are the tail messages the
    /// receiver lacked.
    Prepare {
        /// The view being ended.
        old: ViewId,
        /// The ballot.
        ballot: Ballot,
        /// The proposal.
        proposal: Box<Proposal>,
        /// Tail payloads the receiver lacked: `(rank, seq, payload)`.
        payloads: Vec<(u32, u64, Bytes)>,
    },
    /// The receiver accepted the proposal of `ballot`.
    PrepareAck {
        /// The view being ended.
        old: ViewId,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// Phase 3: every responder accepted; deliver the tail and install.
    Commit {
        /// The view being ended.
        old: ViewId,
        /// The new view's id (the receiver must have accepted a proposal of
        /// this view).
        new: ViewId,
    },
    /// A committed change, self-contained: sent to a member of the new view
    /// that never accepted its proposal (it was cut off during the flush).
    Install {
        /// The view ended.
        old: ViewId,
        /// The committed proposal.
        proposal: Box<Proposal>,
        /// Every tail payload: `(rank, seq, payload)`.
        payloads: Vec<(u32, u64, Bytes)>,
    },
    /// The new view, sent to a joiner (who has no old-view state).
    Welcome {
        /// The view that admits the joiner.
        view: View,
        /// Who sends state to whom.
        transfers: Vec<(Pid, Pid)>,
    },
    /// The receiver installed `new`.
    InstallAck {
        /// The view installed.
        new: ViewId,
    },
    /// A blocked process asks the seeds whether the group went on without
    /// it (answered with `NotMember` by a member of a later view).
    Probe {
        /// The view the prober is blocked in.
        view: ViewId,
    },
    /// The receiver is not a member of the sender's view `view`, which
    /// succeeds a view the receiver was in: it was removed.
    NotMember {
        /// The sender's current view.
        view: ViewId,
    },
    /// Partitionable policy: the acting coordinator of one side looks for
    /// other sides of a healed partition (sent to the processes its side
    /// lost and to the seeds).
    MergeProbe {
        /// The sender's current view.
        view: View,
    },
    /// Partitionable policy: the receiver's side lost the merge to the
    /// sender's side (see the merge rule in the engine's `merge` module);
    /// relayed by the losers to the rest of their side.
    MergeAway {
        /// The winning side's view.
        winner: View,
        /// The recent view ids of the winner's coordinator, oldest first:
        /// the losers name the last of their views that is among them as
        /// the view where the histories part.
        history: Vec<ViewId>,
    },
}

impl Message {
    /// The message's kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Data { .. } => "data",
            Message::Order { .. } => "order",
            Message::Ack { .. } => "ack",
            Message::Nack { .. } => "nack",
            Message::JoinRequest { .. } => "join",
            Message::LeaveRequest { .. } => "leave",
            Message::Suspect { .. } => "suspect",
            Message::FlushStart { .. } => "flush-start",
            Message::FlushState { .. } => "flush-state",
            Message::FlushReject { .. } => "flush-reject",
            Message::Prepare { .. } => "prepare",
            Message::PrepareAck { .. } => "prepare-ack",
            Message::Commit { .. } => "commit",
            Message::Install { .. } => "install",
            Message::Welcome { .. } => "welcome",
            Message::InstallAck { .. } => "install-ack",
            Message::Probe { .. } => "probe",
            Message::NotMember { .. } => "not-member",
            Message::MergeProbe { .. } => "merge-probe",
            Message::MergeAway { .. } => "merge-away",
        }
    }
}
