//! The [`StateMachine`] trait users implement, and the [`SnapshotImage`]
//! through which its state leaves the process (state transfer, checkpoints).
//!
//! Why an *image*: state transfer and checkpoints must not stop the group.
//! [`StateMachine::image`] is called on the replica's task at an exact
//! position (the cut) and must be cheap: it hands out a consistent,
//! immutable view of the state (a persistent data structure such as
//! `imbl::OrdMap`, or `Arc`-shared chunks) which is then serialised chunk
//! by chunk on another thread while commands keep being applied. The
//! receiver restores chunk by chunk as they arrive, so a state of several
//! GiB never sits in memory twice (once as the live state, once as the
//! chunk being restored).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use vsync_rsm::{RestoreError, SnapshotImage, StateMachine};
//!
//! /// A register holding a list of numbers, shared as one `Arc`.
//! #[derive(Default)]
//! struct Numbers(Arc<Vec<u64>>);
//!
//! /// The image: the same `Arc` (taking it is O(1)), serialised 1024
//! /// numbers per chunk.
//! #[derive(Clone)]
//! struct NumbersImage { v: Arc<Vec<u64>>, next: usize }
//!
//! impl SnapshotImage for NumbersImage {
//!     fn next_chunk(&mut self) -> Option<Vec<u8>> {
//!         if self.next >= self.v.len() { return None; }
//!         let end = (self.next + 1024).min(self.v.len());
//!         let chunk = postcard::to_stdvec(&self.v[self.next..end]).ok()?;
//!         self.next = end;
//!         Some(chunk)
//!     }
//! }
//!
//! impl StateMachine for Numbers {
//!     type Command = u64;
//!     type Output = usize;
//!     type Image = NumbersImage;
//!     fn apply(&mut self, cmd: u64) -> usize {
//!         Arc::make_mut(&mut self.0).push(cmd); // copies only if an image holds it
//!         self.0.len()
//!     }
//!     fn image(&self) -> NumbersImage { NumbersImage { v: self.0.clone(), next: 0 } }
//!     fn restore_begin(&mut self) { self.0 = Arc::new(Vec::new()); }
//!     fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
//!         let part: Vec<u64> = postcard::from_bytes(chunk).map_err(RestoreError::new)?;
//!         Arc::make_mut(&mut self.0).extend(part);
//!         Ok(())
//!     }
//! }
//! ```

use crate::divergence::Divergence;
use crate::error::RestoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A deterministic state machine replicated by a [`crate::Replica`].
///
/// Every replica applies the same commands in the same order; `apply` must
/// therefore be deterministic (no clocks, no randomness, no iteration over
/// hash maps with per-process seeds). It must not panic on any command: a
/// command is data from a client, so reject bad ones in the output.
pub trait StateMachine: Send + 'static {
    /// A command: what [`crate::Replica::execute`] takes.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// A consistent image of the whole state, serialised chunk by chunk off
    /// the apply path (see the module documentation).
    type Image: SnapshotImage;

    /// The version of the commands this build sends: the encoding of
    /// [`StateMachine::Command`] and the meaning [`StateMachine::apply`]
    /// gives it. Bump it in a build whose commands an older build cannot
    /// decode, or would apply differently.
    const VERSION: u32 = 1;

    /// The command versions this build decodes and applies exactly as the
    /// builds that send them do, `(oldest, newest)`; it must contain
    /// [`StateMachine::VERSION`].
    ///
    /// A group admits a replica only if every member reads its `VERSION`
    /// and it reads every member's (checked through the total order, before
    /// the newcomer serves anything; an incompatible one halts with a
    /// message naming both). Upgrading to commands of version 2 therefore
    /// takes two rolling restarts: first a build that still sends version 1
    /// but reads `(1, 2)`, then, once every replica runs it, the build that
    /// sends version 2 (reading `(1, 2)` or `(2, 2)`). See docs/PROTOCOL.md,
    /// "Versions and upgrades".
    const READS: (u32, u32) = (Self::VERSION, Self::VERSION);

    /// Applies one command and returns its output.
    fn apply(&mut self, cmd: Self::Command) -> Self::Output;

    /// Takes an image of the current state. Called on the replica's task at
    /// an exact position, so it must be cheap (O(1) or close): share
    /// structure rather than copy it.
    fn image(&self) -> Self::Image;

    /// Starts a restore: discard the current state (chunks follow).
    fn restore_begin(&mut self);

    /// Restores one chunk, as produced by [`SnapshotImage::next_chunk`] on
    /// another replica (the bytes come from the network or disk: fail with
    /// a [`RestoreError`] on anything malformed, never panic).
    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError>;

    /// Ends a restore after the last chunk.
    fn restore_end(&mut self) -> Result<(), RestoreError> {
        Ok(())
    }

    /// Partitionable policy: this replica's side of a partition lost the
    /// merge after the heal, and `divergence` is what it is about to
    /// discard (its history since the split, as far as its journal kept
    /// it). Called once, on the replica's task, with the state as it is;
    /// right after it the state is discarded ([`StateMachine::restore_begin`])
    /// and the replica rejoins the winning side, taking the winner's state
    /// by transfer. Report, log or keep what is lost here (the default
    /// does nothing). Keep it short: the replica serves nothing meanwhile.
    fn on_discard(&mut self, divergence: &Divergence<Self::Command>) {
        let _ = divergence;
    }
}

/// A consistent image of a state machine's state, serialised in chunks.
///
/// Runs on a blocking thread while the machine goes on applying commands.
/// Cloning must be cheap (share, do not copy): the donor keeps the untouched
/// image taken at the cut and streams a clone of it, so that it can start
/// again if the link to the joiner breaks.
pub trait SnapshotImage: Clone + Send + 'static {
    /// The next chunk of the serialised state, `None` after the last.
    /// Keep chunks between a few KiB and a few MiB: each is a unit of
    /// transfer and of restore (chunks over 1 MiB are split in transit and
    /// put back together).
    fn next_chunk(&mut self) -> Option<Vec<u8>>;
}
