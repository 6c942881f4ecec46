//! A replicated journal of unique ids: the test machine for "no
//! acknowledged command is lost". A client records an id; after crashes and
//! recovery, every id whose recording was acknowledged must be present.

use super::fnv1a;
use imbl::OrdSet;
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use vsync_rsm::{RestoreError, SnapshotImage, StateMachine};

/// Ids per snapshot chunk.
const CHUNK: usize = 8192;

/// The state: a set of ids.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    ids: OrdSet<u64>,
}

impl Journal {
    /// Whether `id` was recorded.
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id was recorded.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A digest of the set.
    pub fn digest(&self) -> u64 {
        self.ids.iter().fold(0, |h, id| fnv1a(h, &id.to_le_bytes()))
    }
}

/// The image: a clone of the set, walked in order.
#[derive(Clone, Debug)]
pub struct JournalImage {
    ids: OrdSet<u64>,
    after: Option<u64>,
    done: bool,
}

impl SnapshotImage for JournalImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let lower = self.after.map_or(Bound::Unbounded, Bound::Excluded);
        let part: Vec<u64> = self
            .ids
            .range((lower, Bound::Unbounded))
            .take(CHUNK)
            .copied()
            .collect();
        if part.len() < CHUNK {
            self.done = true;
        }
        self.after = part.last().copied().or(self.after);
        postcard::to_stdvec(&part).ok()
    }
}

/// Records an id; the output says whether it was new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record(pub u64);

impl StateMachine for Journal {
    type Command = Record;
    type Output = bool;
    type Image = JournalImage;

    fn apply(&mut self, cmd: Record) -> bool {
        self.ids.insert(cmd.0).is_none()
    }

    fn image(&self) -> JournalImage {
        JournalImage {
            ids: self.ids.clone(),
            after: None,
            done: false,
        }
    }

    fn restore_begin(&mut self) {
        self.ids = OrdSet::new();
    }

    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        let part: Vec<u64> = postcard::from_bytes(chunk).map_err(RestoreError::new)?;
        self.ids.extend(part);
        Ok(())
    }
}
