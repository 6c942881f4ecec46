//! What a replica reports: [`ReplicaStatus`] (a snapshot of where it is),
//! [`ReplicaMetrics`] (counters) and [`ReplicaEvent`] (a stream of what
//! happened).

use crate::divergence::DivergenceInfo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use vsync_core::{Pid, View, ViewId};

/// What the replica is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    /// Asking to be admitted.
    #[default]
    Joining,
    /// Admitted, waiting for (or receiving) the state from a donor; in
    /// `Logged` mode also while the received state is written to disk as
    /// the base of the log (commands are refused with `NotMember` until then).
    ReceivingState,
    /// A member that serves commands.
    Member,
    /// A member that is the view's coordinator (its first member).
    Coordinator,
    /// A member streaming its state to a joiner (it keeps serving).
    Donor,
    /// A member of a group recovering from a total failure (commands are
    /// refused until the most recent state is chosen).
    Recovering,
    /// In a minority partition.
    Blocked,
    /// Removed; rejoining.
    Removed,
    /// Stopped (left, shut down, or failed).
    Stopped,
}

/// Where a replica is. Cheap to take ([`crate::Replica::status`]).
#[derive(Clone, Debug, Default)]
pub struct ReplicaStatus {
    /// This process (current incarnation).
    pub pid: Option<Pid>,
    /// The current view.
    pub view: Option<View>,
    /// The current view's members.
    pub members: Vec<Pid>,
    /// Commands applied since the group's genesis.
    pub position: u64,
    /// What the replica is doing.
    pub role: Role,
    /// In a minority partition.
    pub blocked: bool,
    /// The position of the last checkpoint written or loaded.
    pub last_checkpoint: Option<u64>,
    /// Why the local checkpoint was rejected at start, if it was.
    pub checkpoint_rejected: Option<String>,
    /// The last time this replica's side of a partition lost a merge
    /// (partitionable policy): where it diverged and how much it discarded.
    pub last_divergence: Option<DivergenceInfo>,
    /// The cluster this replica's state belongs to (`None` until a new
    /// member has received its first state).
    pub cluster: Option<crate::identity::ClusterId>,
    /// The current view's members' listen addresses, as far as known.
    pub addresses: Vec<(Pid, std::net::SocketAddr)>,
}

/// Counters ([`crate::Replica::metrics`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaMetrics {
    /// Commands applied.
    pub commands_applied: u64,
    /// Multicasts delivered.
    pub deliveries: u64,
    /// Views installed.
    pub view_changes: u64,
    /// State-transfer bytes sent as donor.
    pub transfer_bytes_sent: u64,
    /// State-transfer bytes received as joiner.
    pub transfer_bytes_received: u64,
    /// State transfers completed as joiner (catch-ups included).
    pub transfers_received: u64,
    /// Of those, catch-ups: only the missing commands were received.
    pub catch_ups_received: u64,
    /// Checkpoints written.
    pub checkpoints_written: u64,
    /// How long the last checkpoint took to write.
    pub last_checkpoint_duration: Duration,
    /// Batches appended to the log (Logged mode).
    pub log_appends: u64,
    /// Incarnations started after the first (rejoins).
    pub rejoins: u64,
    /// Times this replica's side of a partition lost a merge and its
    /// history since the split was discarded (partitionable policy).
    pub divergences: u64,
    /// Commands discarded by those divergences, summed
    /// ([`DivergenceInfo::discarded`]).
    pub discarded_commands: u64,
}

/// The counters, shared between the replica task and its handles.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) commands_applied: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) view_changes: AtomicU64,
    pub(crate) transfer_bytes_sent: AtomicU64,
    pub(crate) transfer_bytes_received: AtomicU64,
    pub(crate) transfers_received: AtomicU64,
    pub(crate) catch_ups_received: AtomicU64,
    pub(crate) checkpoints_written: AtomicU64,
    pub(crate) last_checkpoint_micros: AtomicU64,
    pub(crate) log_appends: AtomicU64,
    pub(crate) rejoins: AtomicU64,
    pub(crate) divergences: AtomicU64,
    pub(crate) discarded_commands: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReplicaMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReplicaMetrics {
            commands_applied: g(&self.commands_applied),
            deliveries: g(&self.deliveries),
            view_changes: g(&self.view_changes),
            transfer_bytes_sent: g(&self.transfer_bytes_sent),
            transfer_bytes_received: g(&self.transfer_bytes_received),
            transfers_received: g(&self.transfers_received),
            catch_ups_received: g(&self.catch_ups_received),
            checkpoints_written: g(&self.checkpoints_written),
            last_checkpoint_duration: Duration::from_micros(g(&self.last_checkpoint_micros)),
            log_appends: g(&self.log_appends),
            rejoins: g(&self.rejoins),
            divergences: g(&self.divergences),
            discarded_commands: g(&self.discarded_commands),
        }
    }
}

/// Something that happened to a replica ([`crate::Replica::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaEvent {
    /// A view was installed.
    View {
        /// The view.
        view: View,
    },
    /// This replica started streaming its state to `joiner` (as donor) at
    /// `position`.
    StateTransferStarted {
        /// The joiner.
        joiner: Pid,
        /// The position of the state sent.
        position: u64,
    },
    /// This replica finished sending its state to `joiner`.
    StateTransferSent {
        /// The joiner.
        joiner: Pid,
        /// Bytes sent.
        bytes: u64,
    },
    /// A state transfer to `joiner` was cancelled (it left the view).
    StateTransferCancelled {
        /// The joiner.
        joiner: Pid,
    },
    /// This replica received and restored a state.
    StateTransferDone {
        /// The donor.
        donor: Pid,
        /// The position of the state received.
        position: u64,
        /// Bytes received.
        bytes: u64,
    },
    /// This replica gave up on a state transfer (donor gone, no progress, or
    /// bad data) and rejoins as a new incarnation.
    StateTransferFailed {
        /// Why, in plain words.
        reason: String,
    },
    /// A checkpoint was written.
    CheckpointWritten {
        /// Its position.
        position: u64,
    },
    /// A checkpoint was loaded at start.
    CheckpointLoaded {
        /// Its position.
        position: u64,
    },
    /// The local checkpoint is torn or corrupt and was not loaded: the
    /// replica takes the state by transfer instead.
    CheckpointRejected {
        /// Why, in plain words.
        reason: String,
    },
    /// A delivered command could not be decoded by this build: the replica
    /// stopped applying at `position` and leaves the group rather than
    /// diverge (see [`crate::StateMachine`], versions).
    Halted {
        /// The position of the command it could not decode.
        position: u64,
        /// Why.
        reason: String,
    },
    /// The group recovered from a total failure.
    Recovered {
        /// The position chosen (the highest among the members).
        position: u64,
        /// The member that held it.
        holder: Pid,
    },
    /// This replica is in a minority partition.
    Blocked {
        /// The view it is blocked in.
        view: ViewId,
    },
    /// Partitionable policy: this replica's side of a partition lost the
    /// merge after the heal. The state machine has seen what is discarded
    /// ([`crate::StateMachine::on_discard`]); the state is discarded, the
    /// local checkpoint and log are erased, and the replica rejoins the
    /// winner ([`ReplicaEvent::Removed`] and [`ReplicaEvent::Rejoined`]
    /// follow) to take the winner's state by transfer.
    Diverged(DivergenceInfo),
    /// This replica was removed from the group.
    Removed {
        /// Its last view.
        view: ViewId,
    },
    /// This replica rejoined as a new incarnation.
    Rejoined {
        /// The new incarnation.
        pid: Pid,
    },
    /// The replica stopped.
    Stopped {
        /// Why.
        reason: String,
    },
}
