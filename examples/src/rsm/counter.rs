//! A replicated counter: the smallest useful state machine. Its state also
//! keeps a digest of every command applied, in order, so that two replicas
//! at the same position can be compared exactly.

use super::fnv1a;
use serde::{Deserialize, Serialize};
use vsync_rsm::{RestoreError, SnapshotImage, StateMachine};

/// A command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterCmd {
    /// Adds to the value (wrapping).
    Add(i64),
}

/// The state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The value.
    pub value: i64,
    /// Commands applied.
    pub ops: u64,
    /// Digest of every command applied, in order.
    pub digest: u64,
}

/// The image: the whole (tiny) state.
#[derive(Clone, Debug)]
pub struct CounterImage(Option<Counter>);

impl SnapshotImage for CounterImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        self.0.take().and_then(|c| postcard::to_stdvec(&c).ok())
    }
}

impl StateMachine for Counter {
    type Command = CounterCmd;
    type Output = i64;
    type Image = CounterImage;

    fn apply(&mut self, cmd: CounterCmd) -> i64 {
        let CounterCmd::Add(n) = cmd;
        self.value = self.value.wrapping_add(n);
        self.ops += 1;
        self.digest = fnv1a(self.digest, &n.to_le_bytes());
        self.value
    }

    fn image(&self) -> CounterImage {
        CounterImage(Some(*self))
    }

    fn restore_begin(&mut self) {
        *self = Counter::default();
    }

    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        *self = postcard::from_bytes(chunk).map_err(RestoreError::new)?;
        Ok(())
    }
}
