//! The command log of [`crate::Durability::Logged`]: append-only segment
//! files of checksummed records, made durable by `fdatasync`.
//!
//! Why not a tree in the checkpoint database: a log is only ever appended,
//! read once at start and dropped wholesale after checkpoints. A database
//! flush cost ~18 futex calls and ~14 context switches per group commit
//! (its I/O thread pool); here an append is one `write` into the page cache
//! and a group commit one `fdatasync`, on a thread of its own so that the
//! replica goes on applying meanwhile (docs/BENCHMARKS.md).
//!
//! Layout: `<dir>/wal/<seq>.wal`, segments in `seq` order. A record is
//! `len: u32 LE | crc: u32 LE | first: u64 LE | payload[len]`, the CRC-32
//! covering `first` and the payload; `first` is the position before the
//! batch. Guarantees:
//! - [`Wal::flush`] returns once every record appended before it was called
//!   is on disk (the segments it covers are `fdatasync`ed; a new segment's
//!   directory entry is synced when the segment is created).
//! - A crash can leave a torn record only at the tail of the last segment;
//!   [`Wal::open`] cuts it off (it was never acknowledged). A damaged record
//!   anywhere else is reported by [`Wal::entries`] as an error at that
//!   record: replay stops there, never applies garbage, never panics.
//! - [`Wal::truncate`] after a checkpoint at position `p` deletes only
//!   segments followed by a segment whose first batch starts at or below
//!   `p` (so every batch they hold ends at or below `p`).

use crate::error::RsmError;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes before a record's payload.
const HEADER: usize = 16;
/// A record longer than this is damage, not data (the group's payloads are
/// far smaller).
const MAX_RECORD: usize = 1 << 30;

/// The log (cheap to clone: a shared handle).
#[derive(Clone, Debug)]
pub struct Wal {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Closed segments, oldest first.
    sealed: Vec<Segment>,
    /// The segment appended to.
    current: Segment,
    /// Closed segments not yet synced (the next flush syncs them).
    unsynced: Vec<Arc<File>>,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// `first` of its first record, if any.
    first: Option<u64>,
    /// Bytes written.
    len: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> RsmError {
    RsmError::Storage(format!("cannot {what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), RsmError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory", dir, e))
}

/// One record read back, or why there is none.
enum Read1 {
    Record(u64, Vec<u8>),
    End,
    /// A record cut short (a torn write at the tail).
    Torn,
    /// A record that fails its checksum or bounds; the bytes it claims
    /// (header included), if its length is plausible.
    Damaged(String, Option<u64>),
}

fn read_record(r: &mut impl Read) -> Read1 {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Read1::End,
            Ok(0) => return Read1::Torn,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Read1::Damaged(format!("read error: {e}"), None),
        }
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let first = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    if len > MAX_RECORD {
        return Read1::Damaged(format!("a record claims {len} bytes"), None);
    }
    let mut payload = vec![0u8; len];
    if let Err(e) = r.read_exact(&mut payload) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Read1::Torn,
            _ => Read1::Damaged(format!("read error: {e}"), None),
        };
    }
    let mut sum = crc32fast::Hasher::new();
    sum.update(&h[8..16]);
    sum.update(&payload);
    if sum.finalize() != crc {
        return Read1::Damaged(
            "a record fails its checksum".into(),
            Some((HEADER + len) as u64),
        );
    }
    Read1::Record(first, payload)
}

/// What a scan of a segment found.
struct Scanned {
    /// `first` of its first record.
    first: Option<u64>,
    /// The length of its intact prefix.
    good: u64,
    /// Its length on disk.
    len: u64,
    /// Whether what follows the intact prefix is only the last record,
    /// torn by a crash: a record cut short, a last record failing its
    /// checksum, or less than a page of garbage.
    torn_tail: bool,
}

/// Scans a segment's records.
fn scan(path: &Path) -> Result<Scanned, RsmError> {
    let f = File::open(path).map_err(|e| io("open", path, e))?;
    let len = f.metadata().map_err(|e| io("stat", path, e))?.len();
    let mut r = BufReader::new(f);
    let mut first = None;
    let mut good = 0u64;
    let torn_tail = loop {
        match read_record(&mut r) {
            Read1::Record(f, p) => {
                first.get_or_insert(f);
                good += (HEADER + p.len()) as u64;
            }
            Read1::End | Read1::Torn => break true,
            Read1::Damaged(_, Some(claimed)) => break good + claimed >= len,
            Read1::Damaged(_, None) => break len - good <= 4096,
        }
    };
    Ok(Scanned {
        first,
        good,
        len,
        torn_tail,
    })
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn create_segment(dir: &Path, seq: u64) -> Result<Segment, RsmError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io("create", &path, e))?;
    sync_dir(dir)?;
    Ok(Segment {
        seq,
        path,
        file: Arc::new(file),
        first: None,
        len: 0,
    })
}

impl Wal {
    /// Opens (or creates) the log in `dir/wal`. A torn record at the tail
    /// of the last segment is cut off.
    pub fn open(dir: &Path) -> Result<Self, RsmError> {
        let dir = dir.join("wal");
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| io("list", &dir, e))? {
            let e = e.map_err(|e| io("list", &dir, e))?;
            let name = e.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let mut sealed = Vec::new();
        let last = seqs.last().copied();
        for &seq in &seqs {
            let path = segment_path(&dir, seq);
            let found = scan(&path)?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io("open", &path, e))?;
            let mut len = found.len;
            if found.good < found.len {
                if Some(seq) == last && found.torn_tail {
                    tracing::warn!(
                        segment = %path.display(),
                        cut = found.len - found.good,
                        "the log ends with a torn record (a crash during a write): cut off"
                    );
                    file.set_len(found.good)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io("truncate", &path, e))?;
                    len = found.good;
                } else {
                    tracing::warn!(
                        segment = %path.display(),
                        at = found.good,
                        "the log is damaged: replay will stop there and the replica takes the rest from the group"
                    );
                }
            }
            sealed.push(Segment {
                seq,
                path,
                file: Arc::new(file),
                first: found.first,
                len,
            });
        }
        let current = match sealed.pop() {
            Some(last) => last,
            None => create_segment(&dir, 0)?,
        };
        Ok(Wal {
            dir,
            inner: Arc::new(Mutex::new(Inner {
                sealed,
                current,
                unsynced: Vec::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written record
        // in memory (records are written whole); go on with the data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch whose first command follows position `first` (in
    /// the page cache: durable after the next [`Wal::flush`]).
    pub fn append(&self, first: u64, payload: &[u8]) -> Result<(), RsmError> {
        if payload.len() > MAX_RECORD {
            return Err(RsmError::Storage(format!(
                "a log record of {} bytes is over the limit",
                payload.len()
            )));
        }
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut sum = crc32fast::Hasher::new();
        sum.update(&first.to_le_bytes());
        sum.update(payload);
        rec.extend_from_slice(&sum.finalize().to_le_bytes());
        rec.extend_from_slice(&first.to_le_bytes());
        rec.extend_from_slice(payload);
        let mut g = self.lock();
        let seg = &mut g.current;
        if let Err(e) = (&*seg.file).write_all(&rec) {
            // Do not leave part of a record for the next append to follow.
            let _ = seg.file.set_len(seg.len);
            return Err(io("append to", &seg.path, e));
        }
        seg.len += rec.len() as u64;
        seg.first.get_or_insert(first);
        Ok(())
    }

    /// Makes every record appended so far durable (blocking: run it off the
    /// async threads). Appends may go on meanwhile; they are covered by
    /// the next flush.
    pub fn flush(&self) -> Result<(), RsmError> {
        let (current, older) = {
            let mut g = self.lock();
            (
                (g.current.file.clone(), g.current.path.clone()),
                std::mem::take(&mut g.unsynced),
            )
        };
        for f in &older {
            f.sync_data().map_err(|e| io("sync", &self.dir, e))?;
        }
        current.0.sync_data().map_err(|e| io("sync", &current.1, e))
    }

    /// The logged batches in order: (position before the batch, payload).
    /// An unreadable or damaged record ends the sequence with an error.
    pub fn entries(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), RsmError>> {
        let paths: Vec<(PathBuf, u64)> = {
            let g = self.lock();
            g.sealed
                .iter()
                .chain(std::iter::once(&g.current))
                .map(|s| (s.path.clone(), s.len))
                .collect()
        };
        let mut segs = paths.into_iter();
        let mut reader: Option<(std::io::Take<BufReader<File>>, PathBuf)> = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            loop {
                if failed {
                    return None;
                }
                if reader.is_none() {
                    let (path, len) = segs.next()?;
                    match File::open(&path) {
                        Ok(f) => reader = Some((BufReader::new(f).take(len), path)),
                        Err(e) => {
                            failed = true;
                            return Some(Err(io("open", &path, e)));
                        }
                    }
                }
                let (r, path) = reader.as_mut()?;
                match read_record(r) {
                    Read1::Record(first, payload) => return Some(Ok((first, payload))),
                    Read1::End => reader = None,
                    Read1::Torn => {
                        failed = true;
                        return Some(Err(RsmError::Storage(format!(
                            "the log segment {} ends in the middle of a record",
                            path.display()
                        ))));
                    }
                    Read1::Damaged(why, _) => {
                        failed = true;
                        return Some(Err(RsmError::Storage(format!(
                            "the log segment {} is damaged: {why}",
                            path.display()
                        ))));
                    }
                }
            }
        })
    }

    /// After a checkpoint at `position`: starts a new segment and deletes
    /// the segments every batch of which ends at or below `position` (see
    /// the module documentation).
    pub fn truncate(&self, position: u64) -> Result<(), RsmError> {
        let mut g = self.lock();
        if g.current.len > 0 {
            let next = create_segment(&self.dir, g.current.seq + 1)?;
            let old = std::mem::replace(&mut g.current, next);
            g.unsynced.push(old.file.clone());
            g.sealed.push(old);
        }
        // Segment i may go if segment i+1 starts at or below `position`.
        let starts: Vec<Option<u64>> = g
            .sealed
            .iter()
            .map(|s| s.first)
            .chain(std::iter::once(g.current.first))
            .collect();
        let mut keep_from = 0;
        for i in 0..g.sealed.len() {
            if starts[i + 1].is_some_and(|f| f <= position) {
                keep_from = i + 1;
            }
        }
        let gone: Vec<Segment> = g.sealed.drain(..keep_from).collect();
        drop(g);
        for s in gone {
            std::fs::remove_file(&s.path).map_err(|e| io("remove", &s.path, e))?;
        }
        Ok(())
    }

    /// Removes every record (a new genesis), durably.
    pub fn clear(&self) -> Result<(), RsmError> {
        let mut g = self.lock();
        let next = create_segment(&self.dir, g.current.seq + 1)?;
        let old = std::mem::replace(&mut g.current, next);
        let gone: Vec<Segment> = g.sealed.drain(..).chain(std::iter::once(old)).collect();
        g.unsynced.clear();
        drop(g);
        for s in gone {
            std::fs::remove_file(&s.path).map_err(|e| io("remove", &s.path, e))?;
        }
        sync_dir(&self.dir)
    }

    /// True if no record is logged.
    pub fn is_empty(&self) -> bool {
        let g = self.lock();
        g.current.len == 0 && g.sealed.iter().all(|s| s.len == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(w: &Wal) -> Vec<(u64, Vec<u8>)> {
        w.entries().map(|e| e.unwrap()).collect()
    }

    #[test]
    fn records_survive_reopening_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        assert!(w.is_empty());
        w.append(0, b"a").unwrap();
        w.append(1, b"bb").unwrap();
        w.flush().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        w.append(3, b"ccc").unwrap();
        assert_eq!(
            all(&w),
            vec![
                (0, b"a".to_vec()),
                (1, b"bb".to_vec()),
                (3, b"ccc".to_vec())
            ]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        for i in 0..3u64 {
            w.append(i * 10, &[i as u8; 100]).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let seg = segment_path(&dir.path().join("wal"), 0);
        let full = std::fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the last record.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 30).unwrap();
        drop(f);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(all(&w).len(), 2);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            2 * (HEADER as u64 + 100)
        );
        w.append(20, b"again").unwrap();
        assert_eq!(all(&w)[2], (20, b"again".to_vec()));
        drop(w);
        // The last record failing its checksum is a torn write: cut.
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(all(&w).len(), 2);
        drop(w);
        // A flipped bit in the first record, with intact records after it,
        // is damage, not a torn write: nothing is cut, and replay stops
        // with an error at that record (nothing unverified is applied).
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[HEADER + 5] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64);
        let got: Vec<_> = w.entries().collect();
        assert_eq!(got.len(), 1);
        assert!(
            got[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
    }

    #[test]
    fn damage_in_an_older_segment_is_an_error_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        w.append(0, &[1; 50]).unwrap();
        w.truncate(0).unwrap();
        w.append(5, &[2; 50]).unwrap();
        w.flush().unwrap();
        drop(w);
        let seg0 = segment_path(&dir.path().join("wal"), 0);
        let mut bytes = std::fs::read(&seg0).unwrap();
        bytes[HEADER + 1] ^= 0xff;
        std::fs::write(&seg0, &bytes).unwrap();
        let w = Wal::open(dir.path()).unwrap();
        let got: Vec<_> = w.entries().collect();
        assert_eq!(got.len(), 1);
        let e = got[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("checksum") || e.contains("middle"), "{e}");
    }

    #[test]
    fn truncation_drops_only_segments_wholly_below_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        w.append(0, b"x").unwrap();
        w.append(10, b"x").unwrap();
        w.truncate(5).unwrap(); // seg0 [0,10] sealed; nothing after it yet
        w.append(20, b"x").unwrap();
        w.append(30, b"x").unwrap();
        let firsts = |w: &Wal| all(w).into_iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(firsts(&w), vec![0, 10, 20, 30]);
        // seg1 starts at 20 > 15: seg0 holds the batch straddling 15: kept.
        w.truncate(15).unwrap();
        assert_eq!(firsts(&w), vec![0, 10, 20, 30]);
        w.append(40, b"x").unwrap();
        // seg1 [20,30] starts at or below 35: seg0 goes; seg1 holds the
        // straddling batch (30): kept.
        w.truncate(35).unwrap();
        assert_eq!(firsts(&w), vec![20, 30, 40]);
        w.flush().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(firsts(&w), vec![20, 30, 40]);
        w.clear().unwrap();
        assert!(w.is_empty());
        drop(w);
        assert!(Wal::open(dir.path()).unwrap().is_empty());
    }
}
