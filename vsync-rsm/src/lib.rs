//! vsync-rsm: replicated state machines on vsync.
//!
//! Implement [`StateMachine`] for a deterministic object, start a
//! [`Replica`] of it in each process, and [`Replica::execute`] commands:
//! each goes through the group's totally ordered safe multicast and every
//! replica applies it at the same position. New members get the state by
//! transfer from a member named by the engine, taken at the exact cut;
//! checkpoints and (in [`Durability::Logged`] mode) a command log on disk
//! let a group recover after every member crashed.
//!
//! ```no_run
//! # use vsync_rsm::*;
//! # async fn demo<S: StateMachine>(machine: S, cmd: S::Command) -> Result<(), RsmError> {
//! let net = vsync_net::Config::new(1, "127.0.0.1:7000".parse().unwrap(), "counter");
//! let mut cfg = ReplicaConfig::new(net);
//! cfg.start = Start::Found;
//! let replica = Replica::start(cfg, machine).await?;
//! replica.wait_for(|s| s.role != Role::Joining).await;
//! let _output = replica.execute(cmd).await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! - **Position**: the number of commands applied since the group's
//!   genesis. It is carried in state transfers and checkpoints, so states
//!   of one group are comparable across views and restarts: two replicas at
//!   the same position hold the same state.
//! - **One task per replica** (module `replica`) owns the state machine (inside
//!   the sans-IO [`sansio::ReplicaCore`]), the pending requests and the
//!   transfers; handles talk to it over a channel; `read` closures run on it.
//!   Commands from many callers are multicast in batches.
//! - **State transfer** ([`transfer`]): at `SendState` (right after the
//!   donor's last delivery of the old view) the donor takes a cheap image of
//!   its state ([`StateMachine::image`]) and streams it chunk by chunk with
//!   point-to-point messages while it keeps serving; the joiner buffers the
//!   new view's deliveries and applies them after restoring. A joiner whose
//!   donor leaves, or whose transfer stalls, rejoins as a new incarnation;
//!   a view change that removes a joiner cancels its stream.
//! - **Checkpoints and log** ([`store`]): complete-or-absent checkpoints with
//!   checksums in sled, every N commands or T seconds; in Logged mode every
//!   delivered batch is appended and flushed before acknowledgement.
//! - **Restarts** ([`Start::Auto`], [`startup`], [`identity`]): the data
//!   directory records its cluster and the last view; a replica with state
//!   is never founded over: it rejoins its last view's members and takes
//!   only the commands it missed when a donor still holds them (a
//!   catch-up, [`tail`]), the whole state otherwise.
//! - **Total-failure recovery**: when no group admits a restarting
//!   replica, the lowest node id of its last view founds a recovering group
//!   (or the operator says how many to wait for, [`Start::Recover`]);
//!   members load their checkpoint and log and multicast their position and
//!   last view; once every node named in those views is present, at the
//!   delivery of the deciding claim (the same point at every member) they
//!   take the state of the highest, by the same snapshot-at-cut transfer.
//! - **Versions** ([`StateMachine::VERSION`], [`StateMachine::READS`]): a
//!   replica serves only once the group found its build compatible with
//!   every member's; a command it cannot decode halts it rather than be
//!   skipped.
//! - **Partitions** ([`divergence`]): under the partitionable policy a
//!   replica whose side loses the merge after a heal shows the state
//!   machine what it discards ([`StateMachine::on_discard`], from a bounded
//!   journal), discards its state, erases its checkpoint and log, and
//!   rejoins the winner (whose addresses join its seeds), taking the
//!   winner's state by transfer; never its own checkpoint or log, which
//!   hold the discarded history.
//!
//! The procedure and what each durability mode keeps are in
//! docs/PROTOCOL.md, "Replicated state machines".
#![forbid(unsafe_code)]

mod config;
pub mod disk;
pub mod divergence;
mod error;
pub mod identity;
pub mod lifecycle;
mod machine;
mod replica;
pub mod sansio;
pub mod simcheck;
pub mod startup;
mod status;
pub mod store;
pub mod tail;
pub mod transfer;
pub mod wal;
pub mod wire;

pub use config::{Durability, ReplicaConfig, Start};
pub use divergence::{Discarded, Divergence, DivergenceInfo};
pub use error::{RestoreError, RsmError};
pub use machine::{SnapshotImage, StateMachine};
pub use replica::Replica;
pub use status::{ReplicaEvent, ReplicaMetrics, ReplicaStatus, Role};
