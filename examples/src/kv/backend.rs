//! What the RESP server needs from the replicated data set: ordered writes,
//! local or ordered reads, and the node's status. [`Backend`] is that
//! contract; the replicated implementation wraps a `vsync_rsm::Replica`
//! ([`crate::kv::replica`]), and [`Standalone`] is an unreplicated one for
//! tests and for measuring the server alone.
//!
//! Guarantee expected of every implementation: `execute` resolves only
//! once the command has been applied at this node (so a read issued after
//! it on the same node sees it), and an `Err` means the command was not
//! acknowledged.

use crate::kv::machine::{KvCommand, KvStore, WriteResult};
use serde::Serialize;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Why a backend did not run a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// This replica is in a minority partition (blocked): writes are refused.
    #[error(
        "MINORITY this replica is in a minority partition and is not serving writes; retry on a replica of the primary component"
    )]
    Minority,
    /// This replica is not (or no longer) a member of the group.
    #[error("NOTMEMBER this replica is not a member of the group ({0}); retry on another replica")]
    NotMember(String),
    /// The replica is shutting down.
    #[error("SHUTDOWN this replica is shutting down; retry on another replica")]
    ShuttingDown,
    /// Anything else, with the reason.
    #[error("ERR replication failed: {0}")]
    Other(String),
}

/// A snapshot of this node's place in the group (for `INFO`, `/status`
/// and `vsync-kv status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// This node's id.
    pub node: u64,
    /// This process (`node.incarnation`).
    pub pid: String,
    /// The current view id, if a member.
    pub view: Option<String>,
    /// The view's members, most senior first.
    pub members: Vec<String>,
    /// How many replicated commands this replica has applied.
    pub position: u64,
    /// This replica's role (e.g. `coordinator`, `member`, `joining`).
    pub role: String,
    /// Primary-component policy: `primary` (a serving member of the
    /// primary component), `minority` (blocked) or `none` (joining,
    /// receiving the state, or stopped). Partitionable policy: `serving`
    /// (a serving member of its side: every side serves) or `none`.
    pub partition: String,
    /// The partition policy: `primary` (primary component) or
    /// `partitionable`.
    pub partition_policy: String,
    /// Times this replica's side of a partition lost a merge (its history
    /// since the split was discarded).
    pub divergences: u64,
    /// Writes those lost merges certainly discarded (at least this many:
    /// a replicated command not kept in the discard journal counts as
    /// one).
    pub discarded_writes: u64,
    /// The last lost merge, in plain words (`view=... split=...
    /// position=... winner=... discarded=...`), if any.
    pub last_divergence: Option<String>,
    /// Keys stored (expired-but-not-purged included).
    pub keys: u64,
    /// The position of the last checkpoint written or loaded, if any.
    pub last_checkpoint: Option<u64>,
    /// One line per member of the view: process, listen address (`-` if
    /// unknown), role (`VSYNC MEMBERS`, `vsync-kv members`).
    #[serde(default)]
    pub member_lines: Vec<String>,
}

impl NodeStatus {
    /// Whether this replica serves writes now (`/ready`, `vsync-kv
    /// status`): `Err` says why not, in a few words an operator can act
    /// on.
    pub fn readiness(&self) -> Result<(), String> {
        if self.partition == "minority" {
            return Err("minority: cut off from the primary component; writes are refused".into());
        }
        match self.role.as_str() {
            "member" | "coordinator" | "donor" | "standalone" => Ok(()),
            "joining" => Err("joining: not yet admitted to a view".into()),
            "receivingstate" => Err("receiving state: taking the group's state".into()),
            "recovering" => Err(
                "recovering: the whole cluster restarted; waiting for every replica of the last view"
                    .into(),
            ),
            "blocked" => Err("minority: cut off from the primary component".into()),
            "removed" => Err("removed: rejoining as a new incarnation".into()),
            "stopped" => Err("stopped".into()),
            other => Err(format!("not serving ({other})")),
        }
    }
}

/// Replication counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendMetrics {
    /// Commands delivered and applied.
    pub deliveries: u64,
    /// Views installed.
    pub view_changes: u64,
    /// Bytes sent as a state-transfer donor.
    pub state_transfer_bytes_sent: u64,
    /// Bytes received as a joiner.
    pub state_transfer_bytes_received: u64,
    /// Transfers received as a joiner (catch-ups included).
    pub state_transfers_received: u64,
    /// Of those, catch-ups: only the commands the replica lacked.
    pub catch_ups_received: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Total time spent taking checkpoints, in seconds.
    pub checkpoint_seconds_total: f64,
    /// Duration of the last checkpoint, in seconds.
    pub last_checkpoint_seconds: f64,
}

/// The replicated data set as the server sees it.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Replicates and applies `cmd`; resolves with its results once it was
    /// applied at this node.
    fn execute(
        &self,
        cmd: KvCommand,
    ) -> impl Future<Output = Result<Vec<WriteResult>, BackendError>> + Send;

    /// Runs `f` on the data set: locally (`ordered == false`, may lag the
    /// group by the commands in flight) or at a position in the group's
    /// order (`ordered == true`: sees every write acknowledged before it).
    fn read<R: Send + 'static>(
        &self,
        ordered: bool,
        f: impl FnOnce(&KvStore) -> R + Send + 'static,
    ) -> impl Future<Output = Result<R, BackendError>> + Send;

    /// This node's status.
    fn status(&self) -> NodeStatus;

    /// Replication counters.
    fn metrics(&self) -> BackendMetrics;

    /// Takes a checkpoint now (`SAVE`).
    fn checkpoint(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Leaves the group cleanly (a view change, not a failure).
    fn leave(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The address the replicas' traffic is served on, if any.
    fn group_addr(&self) -> Option<std::net::SocketAddr>;

    /// The fault-injection switch (`DEBUG CUT` / `DEBUG HEAL`), if this
    /// node allows it (`--fault-injection`). None by default.
    fn faults(&self) -> Option<vsync_net::Faults> {
        None
    }

    /// Removes the member of node `node` from the group (`VSYNC EVICT`);
    /// returns the process removed, or why not in plain words.
    fn evict(&self, node: u64) -> impl Future<Output = Result<String, String>> + Send {
        let _ = node;
        async { Err("not a replicated node".to_string()) }
    }
}

/// An unreplicated, in-process data set.
#[derive(Clone, Debug, Default)]
pub struct Standalone {
    store: Arc<Mutex<(KvStore, u64)>>,
}

impl Standalone {
    /// An empty data set.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for Standalone {
    async fn execute(&self, cmd: KvCommand) -> Result<Vec<WriteResult>, BackendError> {
        let mut g = self
            .store
            .lock()
            .map_err(|_| BackendError::Other("poisoned".into()))?;
        g.1 += 1;
        Ok(g.0.apply(cmd))
    }

    async fn read<R: Send + 'static>(
        &self,
        _ordered: bool,
        f: impl FnOnce(&KvStore) -> R + Send + 'static,
    ) -> Result<R, BackendError> {
        let g = self
            .store
            .lock()
            .map_err(|_| BackendError::Other("poisoned".into()))?;
        Ok(f(&g.0))
    }

    fn status(&self) -> NodeStatus {
        let (keys, position) = self
            .store
            .lock()
            .map(|g| (g.0.len() as u64, g.1))
            .unwrap_or_default();
        NodeStatus {
            node: 0,
            pid: "standalone".into(),
            view: None,
            members: vec![],
            position,
            role: "standalone".into(),
            partition: "none".into(),
            partition_policy: "none".into(),
            keys,
            last_checkpoint: None,
            ..NodeStatus::default()
        }
    }

    fn metrics(&self) -> BackendMetrics {
        BackendMetrics::default()
    }

    async fn checkpoint(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn leave(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn group_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}
