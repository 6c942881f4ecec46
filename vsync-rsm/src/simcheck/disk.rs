//! The simulator's disk: one per node, surviving its crashes. Writes are
//! volatile until a sync; a crash loses what was not synced, may leave the
//! first unsynced log record torn (it then reads as damage, and replay
//! stops there, as the real log's reader does), and a sync may fail. It
//! implements [`crate::disk::Disk`], so that a simulated replica restarts
//! through the same [`crate::disk::restore_local`] as a real one.

use crate::disk::Disk;
use crate::error::RestoreError;
use rand::Rng;

/// A checkpoint: the state's chunks at a position.
#[derive(Clone, Debug)]
pub(crate) struct SimCheckpoint {
    pub(crate) position: u64,
    pub(crate) chain: Option<u64>,
    pub(crate) chunks: Vec<Vec<u8>>,
}

/// One node's disk.
#[derive(Debug, Default)]
pub(crate) struct SimDisk {
    checkpoint: Option<SimCheckpoint>,
    pending_checkpoint: Option<SimCheckpoint>,
    log: Vec<(u64, Vec<u8>)>,
    unsynced: Vec<(u64, Vec<u8>)>,
    torn: Option<(u64, Vec<u8>)>,
    /// The nodes of the last view recorded (the identity file: written
    /// atomically and synced at once, as the real one is).
    pub(crate) last_view: Option<Vec<u64>>,
    /// The cluster's id, recorded with the last view.
    pub(crate) cluster: Option<crate::identity::ClusterId>,
}

impl SimDisk {
    /// Whether anything of a replica is on it (a restart, not a first
    /// start).
    pub(crate) fn has_state(&self) -> bool {
        self.checkpoint.is_some() || !self.log.is_empty() || self.last_view.is_some()
    }

    /// Appends a log record (volatile until [`SimDisk::sync`]). The real
    /// log cuts a torn tail off when it opens: so does this one at its
    /// first append after a crash.
    pub(crate) fn append(&mut self, first: u64, payload: &[u8]) {
        self.torn = None;
        self.unsynced.push((first, payload.to_vec()));
    }

    /// Records unsynced so far: a sync covers them.
    pub(crate) fn written(&self) -> usize {
        self.log.len() + self.unsynced.len()
    }

    /// Records synced.
    pub(crate) fn synced(&self) -> usize {
        self.log.len()
    }

    /// Writes a checkpoint (volatile until the next sync; the previous one
    /// stays until then, as the real store's two slots keep it).
    pub(crate) fn write_checkpoint(&mut self, c: SimCheckpoint) {
        self.pending_checkpoint = Some(c);
    }

    /// The newest durable checkpoint's position.
    pub(crate) fn checkpoint_position(&self) -> Option<u64> {
        self.checkpoint.as_ref().map(|c| c.position)
    }

    /// Makes every write so far durable, unless the sync `fails` (then
    /// nothing more is durable, and the writes stay volatile).
    pub(crate) fn sync(&mut self, fails: bool) -> bool {
        if fails {
            return false;
        }
        self.log.append(&mut self.unsynced);
        if let Some(c) = self.pending_checkpoint.take() {
            self.checkpoint = Some(c);
        }
        true
    }

    /// A crash: volatile writes are lost; the first unsynced record may be
    /// left torn.
    pub(crate) fn crash(&mut self, rng: &mut impl Rng) {
        self.pending_checkpoint = None;
        if let Some((first, mut payload)) = self.unsynced.drain(..).next() {
            if rng.random_bool(0.5) && !payload.is_empty() {
                let keep = rng.random_range(0..payload.len());
                payload.truncate(keep);
                self.torn = Some((first, payload));
            }
        }
        self.unsynced.clear();
    }

    /// Erases everything (the mutation "a founder clears its store").
    pub(crate) fn clear(&mut self) {
        *self = SimDisk::default();
    }
}

impl Disk for SimDisk {
    fn load_checkpoint(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), RestoreError>,
    ) -> Result<Option<(u64, Option<u64>)>, String> {
        let Some(c) = &self.checkpoint else {
            return Ok(None);
        };
        for (i, chunk) in c.chunks.iter().enumerate() {
            sink(chunk).map_err(|e| format!("checkpoint chunk {i} is unreadable: {e}"))?;
        }
        Ok(Some((c.position, c.chain)))
    }

    fn log_batches(&self) -> Box<dyn Iterator<Item = Result<(u64, Vec<u8>), String>> + '_> {
        let torn = self.torn.as_ref().map(|(first, p)| {
            Err(format!(
                "a torn record after position {first} ({} bytes)",
                p.len()
            ))
        });
        Box::new(self.log.iter().cloned().map(Ok).chain(torn))
    }
}
