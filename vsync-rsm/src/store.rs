//! The local store in [`crate::ReplicaConfig::data_dir`]: checkpoints (a
//! sled database) and the durable command log ([`crate::wal`]).
//!
//! **Checkpoints** are complete or absent. A checkpoint is written into the
//! slot the current one does not use (trees `ckpt0`/`ckpt1`: one chunk per
//! key), flushed, and only then made current by one write of its metadata
//! (position, view, chunk count, byte count, CRC-32 over the chunks, and a
//! CRC-32 of the metadata itself), flushed again. A crash in the middle
//! leaves the previous checkpoint current. On load, both checksums and the
//! chunk sequence are verified while the chunks are restored; a torn or
//! corrupted checkpoint is reported in plain words and not used.
//!
//! **The log** (Logged mode, [`Wal`]) holds each delivered batch that
//! contains commands, with the position before it. It is flushed before
//! the batch's commands are acknowledged, and truncated after each
//! checkpoint (only batches wholly at or below the checkpoint's position
//! are removed; one straddling it is kept and replay skips what the
//! checkpoint already holds). A log left by an older version in the
//! database's `log` tree is moved into the [`Wal`] when the store opens.

use crate::error::{RestoreError, RsmError};
use crate::machine::SnapshotImage;
use crate::wal::Wal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vsync_core::ViewId;

const META_KEY: &[u8] = b"checkpoint";
/// The lineage hash of the current checkpoint ([`crate::tail`]): its
/// position and hash, written in the same atomic batch as the metadata (a
/// separate key, so that checkpoints written before it existed still load;
/// they have no hash and never serve a catch-up).
const CHAIN_KEY: &[u8] = b"checkpoint-chain";

/// A checkpoint's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Which slot tree holds the chunks (0 or 1).
    pub slot: u8,
    /// Commands applied since genesis in this state.
    pub position: u64,
    /// The view it was taken in.
    pub view: Option<ViewId>,
    /// Number of chunks.
    pub chunks: u64,
    /// Total bytes of the chunks.
    pub bytes: u64,
    /// CRC-32 over every chunk's bytes in order.
    pub crc: u32,
}

/// What writing a checkpoint measured.
#[derive(Clone, Debug)]
pub struct Written {
    /// The metadata now current.
    pub meta: CheckpointMeta,
    /// How long it took (serialising, writing, flushing).
    pub took: Duration,
}

/// The store of one replica (cheap to clone: shared handles).
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    wal: Wal,
    path: PathBuf,
}

fn slot_name(slot: u8) -> String {
    format!("ckpt{slot}")
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, RsmError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let wal = Wal::open(dir)?;
        // A log written by an older version (a tree of the database):
        // moved into the WAL, in order, made durable, then dropped.
        let old = db.open_tree("log")?;
        if !old.is_empty() {
            for kv in old.iter() {
                let (k, v) = kv?;
                let key: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| RsmError::Storage("a log key is not 8 bytes".into()))?;
                wal.append(u64::from_be_bytes(key), &v)?;
            }
            wal.flush()?;
            old.clear()?;
            db.flush()?;
        }
        Ok(Store {
            db,
            wal,
            path: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current checkpoint's metadata, verified. `Ok(None)`: none;
    /// `Err(reason)`: present but torn or corrupt.
    pub fn meta(&self) -> Result<Option<CheckpointMeta>, String> {
        let raw = match self.db.get(META_KEY) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(format!("cannot read the checkpoint metadata: {e}")),
        };
        if raw.len() < 4 {
            return Err("the checkpoint metadata is truncated".into());
        }
        let (body, sum) = raw.split_at(raw.len() - 4);
        let want = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
        if crc32fast::hash(body) != want {
            return Err("the checkpoint metadata fails its checksum (corrupted)".into());
        }
        postcard::from_bytes(body)
            .map(Some)
            .map_err(|e| format!("the checkpoint metadata is undecodable: {e}"))
    }

    /// Writes a checkpoint of `image` at `position` (blocking: run it off
    /// the async threads). Complete or absent; see the module docs.
    pub fn write_checkpoint(
        &self,
        position: u64,
        view: Option<ViewId>,
        chain: Option<u64>,
        mut image: impl SnapshotImage,
    ) -> Result<Written, RsmError> {
        let start = Instant::now();
        let slot = match self.meta() {
            Ok(Some(m)) => 1 - m.slot.min(1),
            _ => 0,
        };
        let tree = self.db.open_tree(slot_name(slot))?;
        tree.clear()?;
        let mut crc = crc32fast::Hasher::new();
        let mut chunks = 0u64;
        let mut bytes = 0u64;
        let mut batch = sled::Batch::default();
        let mut batch_bytes = 0usize;
        while let Some(c) = image.next_chunk() {
            crc.update(&c);
            bytes += c.len() as u64;
            batch_bytes += c.len();
            batch.insert(&chunks.to_be_bytes(), c);
            chunks += 1;
            if batch_bytes > 8 << 20 {
                tree.apply_batch(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        tree.apply_batch(batch)?;
        tree.flush()?;
        let meta = CheckpointMeta {
            slot,
            position,
            view,
            chunks,
            bytes,
            crc: crc.finalize(),
        };
        let mut raw = postcard::to_stdvec(&meta)?;
        let sum = crc32fast::hash(&raw);
        raw.extend_from_slice(&sum.to_le_bytes());
        let mut b = sled::Batch::default();
        b.insert(META_KEY, raw);
        match chain {
            Some(c) => {
                let mut v = position.to_le_bytes().to_vec();
                v.extend_from_slice(&c.to_le_bytes());
                b.insert(CHAIN_KEY, v);
            }
            None => b.remove(CHAIN_KEY),
        }
        self.db.apply_batch(b)?;
        self.db.flush()?;
        self.truncate_log(position)?;
        Ok(Written {
            meta,
            took: start.elapsed(),
        })
    }

    /// The lineage hash of the checkpoint `meta`, if it was recorded.
    pub fn checkpoint_chain(&self, meta: &CheckpointMeta) -> Option<u64> {
        let v = self.db.get(CHAIN_KEY).ok()??;
        let pos = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
        let chain = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
        (pos == meta.position).then_some(chain)
    }

    /// Feeds the current checkpoint's chunks to `restore`, verifying them.
    /// `Ok(None)`: no checkpoint. `Err(reason)`: torn or corrupt (the
    /// receiver of the chunks must then discard what it restored).
    pub fn load_checkpoint(
        &self,
        mut restore: impl FnMut(&[u8]) -> Result<(), RestoreError>,
    ) -> Result<Option<CheckpointMeta>, String> {
        let Some(meta) = self.meta()? else {
            return Ok(None);
        };
        let tree = self
            .db
            .open_tree(slot_name(meta.slot.min(1)))
            .map_err(|e| format!("cannot open the checkpoint: {e}"))?;
        let mut crc = crc32fast::Hasher::new();
        let mut n = 0u64;
        let mut bytes = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv.map_err(|e| format!("cannot read the checkpoint: {e}"))?;
            if k.as_ref() != n.to_be_bytes() {
                return Err(format!("checkpoint chunk {n} is missing (torn checkpoint)"));
            }
            crc.update(&v);
            bytes += v.len() as u64;
            restore(&v).map_err(|e| format!("checkpoint chunk {n} is unreadable: {e}"))?;
            n += 1;
        }
        if n != meta.chunks || bytes != meta.bytes {
            return Err(format!(
                "the checkpoint has {n} chunks ({bytes} bytes), its metadata says {} ({} bytes): torn checkpoint",
                meta.chunks, meta.bytes
            ));
        }
        if crc.finalize() != meta.crc {
            return Err("the checkpoint's chunks fail their checksum (corrupted)".into());
        }
        Ok(Some(meta))
    }

    /// Appends a delivered batch whose first command follows `first`
    /// (not yet durable: see [`Store::flush`]).
    pub fn append(&self, first: u64, payload: &[u8]) -> Result<(), RsmError> {
        self.wal.append(first, payload)
    }

    /// Makes every log record appended so far durable (blocking).
    pub fn flush(&self) -> Result<(), RsmError> {
        self.wal.flush()
    }

    /// The logged batches in order: (position before the batch, payload).
    pub fn log_entries(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), RsmError>> + '_ {
        self.wal.entries()
    }

    /// Drops the log batches wholly at or below `position`.
    fn truncate_log(&self, position: u64) -> Result<(), RsmError> {
        self.wal.truncate(position)
    }

    /// Removes the checkpoint and the log (a new genesis).
    pub fn clear(&self) -> Result<(), RsmError> {
        self.db.remove(META_KEY)?;
        self.db.remove(CHAIN_KEY)?;
        self.wal.clear()?;
        for s in 0..2 {
            self.db.open_tree(slot_name(s))?.clear()?;
        }
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Chunks(Vec<Vec<u8>>);

    impl SnapshotImage for Chunks {
        fn next_chunk(&mut self) -> Option<Vec<u8>> {
            if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            }
        }
    }

    fn image() -> Chunks {
        Chunks((0..5u8).map(|i| vec![i; 1000]).collect())
    }

    type Loaded = Option<(CheckpointMeta, Vec<Vec<u8>>)>;

    fn load(s: &Store) -> Result<Loaded, String> {
        let mut got = Vec::new();
        let m = s.load_checkpoint(|c| {
            got.push(c.to_vec());
            Ok(())
        })?;
        Ok(m.map(|m| (m, got)))
    }

    #[test]
    fn checkpoints_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(load(&s).unwrap().is_none());
        s.write_checkpoint(7, None, None, image()).unwrap();
        let w = s.write_checkpoint(9, None, Some(99), image()).unwrap();
        assert_eq!(w.meta.position, 9);
        let (m, got) = load(&s).unwrap().unwrap();
        assert_eq!((m.position, m.chunks, got), (9, 5, image().0));
        assert_eq!(s.checkpoint_chain(&m), Some(99));
        let slot = s.db.open_tree(slot_name(m.slot)).unwrap();
        // A flipped byte: the chunks' checksum.
        let mut c = slot.get(2u64.to_be_bytes()).unwrap().unwrap().to_vec();
        c[10] ^= 1;
        slot.insert(2u64.to_be_bytes(), c).unwrap();
        let e = load(&s).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        // A missing chunk: torn.
        slot.remove(2u64.to_be_bytes()).unwrap();
        let e = load(&s).unwrap_err();
        assert!(e.contains("torn"), "{e}");
        // Damaged metadata.
        let mut raw = s.db.get(META_KEY).unwrap().unwrap().to_vec();
        raw[0] ^= 0xff;
        s.db.insert(META_KEY, raw).unwrap();
        let e = load(&s).unwrap_err();
        assert!(e.contains("metadata"), "{e}");
        // A new checkpoint replaces the damaged one.
        s.write_checkpoint(11, None, None, image()).unwrap();
        let m = load(&s).unwrap().unwrap().0;
        assert_eq!(m.position, 11);
        assert_eq!(s.checkpoint_chain(&m), None, "a stale hash was kept");
    }

    #[test]
    fn a_log_left_in_the_database_by_an_older_version_is_moved_to_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree("log").unwrap();
            old.insert(10u64.to_be_bytes(), &b"b"[..]).unwrap();
            old.insert(0u64.to_be_bytes(), &b"a"[..]).unwrap();
            db.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let got: Vec<(u64, Vec<u8>)> = s.log_entries().map(|e| e.unwrap()).collect();
        assert_eq!(got, vec![(0, b"a".to_vec()), (10, b"b".to_vec())]);
        assert!(s.db.open_tree("log").unwrap().is_empty());
        drop(s);
        // Opened again: moved once, not twice.
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.log_entries().count(), 2);
    }

    #[test]
    fn the_log_is_truncated_at_checkpoints_keeping_the_straddling_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for first in [0u64, 10, 20, 30] {
            s.append(first, &[first as u8]).unwrap();
        }
        s.flush().unwrap();
        s.write_checkpoint(25, None, None, image()).unwrap();
        let keys = |s: &Store| s.log_entries().map(|e| e.unwrap().0).collect::<Vec<u64>>();
        // The log goes by whole segments: the one holding 20 (straddling
        // 25) and 30 stays; the next checkpoint starts a new one.
        assert_eq!(keys(&s), vec![0, 10, 20, 30]);
        s.append(40, &[40]).unwrap();
        s.write_checkpoint(45, None, None, image()).unwrap();
        assert_eq!(keys(&s), vec![40]);
        s.clear().unwrap();
        assert!(load(&s).unwrap().is_none());
        assert_eq!(s.log_entries().count(), 0);
    }
}
