//! Error types: [`RsmError`] for the replica's callers, [`RestoreError`] for
//! state machines that refuse a chunk.

use std::fmt;

/// Why a replica could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RsmError {
    /// This process is not (yet) a member of a view: it is joining, or
    /// waiting for a state transfer, and cannot serve the request.
    #[error("this replica is not a member of the group yet (joining or receiving state)")]
    NotMember,
    /// This process is in a minority partition: nothing is delivered until
    /// it is back in the primary component.
    #[error("this replica is blocked in a minority partition")]
    Blocked,
    /// This process was removed from the group while the request was under
    /// way (the replica rejoins by itself; a command in flight may or may
    /// not have been applied by the others).
    #[error(
        "this replica was removed from the group; the outcome of commands in flight is unknown"
    )]
    Removed,
    /// The group has not recovered from a total failure yet: commands are
    /// refused until the most recent state is found.
    #[error("the group is recovering from a total failure; retry later")]
    Recovering,
    /// The replica is stopping or stopped.
    #[error("the replica is shutting down")]
    ShuttingDown,
    /// The local checkpoint or log store failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A command, output or message could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// No member of the current view has this node id.
    #[error("no member of the current view is node {node}")]
    NotInView {
        /// The node id asked for.
        node: u64,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The network runtime failed.
    #[error(transparent)]
    Net(#[from] vsync_net::NetError),
    /// The data directory does not allow this start (another cluster's,
    /// or not empty where a new cluster was to be founded): see
    /// [`crate::startup`].
    #[error(transparent)]
    Start(#[from] crate::startup::StartError),
}

impl From<sled::Error> for RsmError {
    fn from(e: sled::Error) -> Self {
        RsmError::Storage(e.to_string())
    }
}

impl From<postcard::Error> for RsmError {
    fn from(e: postcard::Error) -> Self {
        RsmError::Codec(e.to_string())
    }
}

/// A state machine refused a chunk of a restore (malformed data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl RestoreError {
    /// Wraps any error's message.
    pub fn new(e: impl fmt::Display) -> Self {
        RestoreError(e.to_string())
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot restore the state: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}
