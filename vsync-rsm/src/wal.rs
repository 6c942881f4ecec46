//! The command log of [`crate::Durability::Logged`]: append-only segment
//! files of checksummed records, made durable by `fdatasync`.
//!
//! Why not a tree in the checkpoint database: a log is only ever appended,
//! read once at start and dropped wholesale after checkpoints. A database
//! flush cost ~18 futex calls and ~14 context switches per group commit
//! (its I/O thread pool); here an append is a copy into a buffer, and a
//! group commit one `write` of the buffer and one `fdatasync`, on a thread
//! of its own so that the replica goes on applying meanwhile
//! (docs/BENCHMARKS.md). A replica that flushes only every 200 ms (one
//! whose clients wait for nothing) so makes one `write` per 200 ms, not one
//! per delivered batch.
//!
//! Layout: `<dir>/wal/<seq>.wal`, segments in `seq` order. A record is
//! `len: u32 LE | crc: u32 LE | first: u64 LE | payload[len]`, the CRC-32
//! covering `first` and the payload; `first` is the position before the
//! batch. A segment is zero-filled ahead of its records ([`PREALLOC`] at a
//! time): an `fdatasync` of a write that does not grow the file need not
//! write the inode, which made a flush ~35 % faster here (docs/BENCHMARKS.md).
//! An all-zero header ends a segment (no record has one: its CRC would
//! have to be that of eight zero bytes, which is not zero). Guarantees:
//! - [`Wal::flush`] returns once every record appended before it was called
//!   is on disk (the segments it covers are `fdatasync`ed; a new segment's
//!   directory entry is synced when the segment is created).
//! - Records not yet flushed are in memory (at most `MAX_PENDING` bytes;
//!   beyond that an append writes them out): a crash of the process loses
//!   them, as a power failure loses unflushed page-cache writes. Nothing
//!   acknowledged is among them (acknowledgements wait for a flush).
//!   Dropping the last handle writes them out.
//! - A crash can leave a torn record only at the tail of the last segment;
//!   [`Wal::open`] cuts it off (it was never acknowledged). A damaged record
//!   anywhere else is reported by [`Wal::entries`] as an error at that
//!   record: replay stops there, never applies garbage, never panics.
//! - [`Wal::truncate`] after a checkpoint at position `p` deletes only
//!   segments followed by a segment whose first batch starts at or below
//!   `p` (so every batch they hold ends at or below `p`).

use crate::error::RsmError;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes before a record's payload.
const HEADER: usize = 16;
/// A record longer than this is damage, not data (the group's payloads are
/// far smaller).
const MAX_RECORD: usize = 1 << 30;
/// Appended bytes kept in memory before an append writes them out.
const MAX_PENDING: usize = 1 << 20;
/// How far ahead of its records a segment is zero-filled.
pub const PREALLOC: u64 = 4 << 20;
/// Past a zeroed or implausible record header, bytes within this distance
/// may be the rest of a torn write; data further on is damage.
const TORN_SLACK: u64 = 4096;

/// The log (cheap to clone: a shared handle).
#[derive(Clone, Debug)]
pub struct Wal {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

/// Bytes of a file from `from` on, or false if not all zero (or unreadable).
fn zero_from(path: &Path, from: u64) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut r = BufReader::new(f);
    if std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if buf[..n].iter().any(|&b| b != 0) {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// Closed segments, oldest first.
    sealed: Vec<Segment>,
    /// The segment appended to.
    current: Segment,
    /// Closed segments not yet synced (the next flush syncs them).
    unsynced: Vec<Arc<File>>,
    /// Records appended to `current` and not yet written to it.
    pending: Vec<u8>,
    /// How far ahead of its records a segment is zero-filled (0: not).
    prealloc: u64,
}

impl Inner {
    /// Writes the pending records to the current segment. On an error the
    /// segment is cut back to its last whole record and they are dropped
    /// (nothing waits for them that is not told of the error).
    fn write_pending(&mut self) -> Result<(), RsmError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let seg = &mut self.current;
        let end = seg.len + self.pending.len() as u64;
        if self.prealloc > 0 && end > seg.allocated {
            // Zeros first, then the records over them. A failure here only
            // costs speed: the records still go.
            let to = end.div_ceil(self.prealloc) * self.prealloc;
            match zero_fill(&seg.file, seg.allocated, to) {
                Ok(()) => seg.allocated = to,
                Err(e) => {
                    tracing::warn!(error = %e, segment = %seg.path.display(), "cannot zero-fill the log ahead")
                }
            }
        }
        let r = std::os::unix::fs::FileExt::write_all_at(&*seg.file, &self.pending, seg.len);
        if let Err(e) = r {
            let _ = seg.file.set_len(seg.len);
            self.pending.clear();
            return Err(io("append to", &seg.path, e));
        }
        seg.len = end;
        seg.allocated = seg.allocated.max(end);
        self.pending.clear();
        Ok(())
    }
}

/// Writes zeros over `from..to` of `file`.
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        std::os::unix::fs::FileExt::write_all_at(file, &zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Drop for Inner {
    /// The last handle is gone: what was appended goes to the page cache.
    fn drop(&mut self) {
        if let Err(e) = self.write_pending() {
            tracing::warn!(error = %e, "cannot write the log's last records");
        }
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// `first` of its first record (written or pending), if any.
    first: Option<u64>,
    /// Bytes of records written to the file.
    len: u64,
    /// The file's length (zeros after `len`).
    allocated: u64,
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
    /// An all-zero header: the zero-filled space after the last record.
    Zeros,
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
    if h == [0u8; HEADER] {
        return Read1::Zeros;
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
    /// checksum, or a zeroed or implausible header with nothing but zeros
    /// (or the end of the file) from [`TORN_SLACK`] after it.
    torn_tail: bool,
    /// Whether the intact prefix is followed by zeros only (a clean end).
    zero_tail: bool,
}

/// Scans a segment's records.
fn scan(path: &Path) -> Result<Scanned, RsmError> {
    let f = File::open(path).map_err(|e| io("open", path, e))?;
    let len = f.metadata().map_err(|e| io("stat", path, e))?.len();
    let mut r = BufReader::new(f);
    let mut first = None;
    let mut good = 0u64;
    let quiet_after = |at: u64| at >= len || zero_from(path, at);
    let (torn_tail, zero_tail) = loop {
        match read_record(&mut r) {
            Read1::Record(f, p) => {
                first.get_or_insert(f);
                good += (HEADER + p.len()) as u64;
            }
            Read1::End => break (false, true),
            Read1::Torn => break (true, false),
            Read1::Zeros if quiet_after(good) => break (false, true),
            Read1::Zeros => break (quiet_after(good + TORN_SLACK), false),
            Read1::Damaged(_, Some(claimed)) => {
                break (quiet_after(good + claimed), false);
            }
            Read1::Damaged(_, None) => break (quiet_after(good + TORN_SLACK), false),
        }
    };
    Ok(Scanned {
        first,
        good,
        len,
        torn_tail,
        zero_tail,
    })
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn create_segment(dir: &Path, seq: u64) -> Result<Segment, RsmError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| io("create", &path, e))?;
    sync_dir(dir)?;
    Ok(Segment {
        seq,
        path,
        file: Arc::new(file),
        first: None,
        len: 0,
        allocated: 0,
    })
}

impl Wal {
    /// Opens (or creates) the log in `dir/wal`. A torn record at the tail
    /// of the last segment is cut off.
    pub fn open(dir: &Path) -> Result<Self, RsmError> {
        Self::open_with(dir, PREALLOC)
    }

    /// [`Wal::open`], zero-filling segments `prealloc` bytes at a time (0:
    /// not at all; a segment then grows with every write).
    pub fn open_with(dir: &Path, prealloc: u64) -> Result<Self, RsmError> {
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
                .write(true)
                .open(&path)
                .map_err(|e| io("open", &path, e))?;
            let mut len = found.len;
            let mut allocated = found.len;
            if found.zero_tail {
                len = found.good;
            } else if found.good < found.len {
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
                    allocated = found.good;
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
                allocated,
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
                pending: Vec::new(),
                prealloc,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written record
        // in memory (records are written whole); go on with the data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch whose first command follows position `first` (in
    /// memory: durable after the next [`Wal::flush`]).
    pub fn append(&self, first: u64, payload: &[u8]) -> Result<(), RsmError> {
        if payload.len() > MAX_RECORD {
            return Err(RsmError::Storage(format!(
                "a log record of {} bytes is over the limit",
                payload.len()
            )));
        }
        let mut sum = crc32fast::Hasher::new();
        sum.update(&first.to_le_bytes());
        sum.update(payload);
        let mut g = self.lock();
        let rec = &mut g.pending;
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&sum.finalize().to_le_bytes());
        rec.extend_from_slice(&first.to_le_bytes());
        rec.extend_from_slice(payload);
        g.current.first.get_or_insert(first);
        if g.pending.len() >= MAX_PENDING {
            g.write_pending()?;
        }
        Ok(())
    }

    /// Makes every record appended so far durable (blocking: run it off the
    /// async threads). Appends may go on meanwhile; they are covered by
    /// the next flush.
    pub fn flush(&self) -> Result<(), RsmError> {
        let (current, older) = {
            let mut g = self.lock();
            // Under the lock, so that two flushes write in append order.
            g.write_pending()?;
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
        let paths: Result<Vec<(PathBuf, u64)>, RsmError> = {
            let mut g = self.lock();
            g.write_pending().map(|()| {
                g.sealed
                    .iter()
                    .chain(std::iter::once(&g.current))
                    .map(|s| (s.path.clone(), s.len))
                    .collect()
            })
        };
        let (paths, mut error) = match paths {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut segs = paths.into_iter();
        let mut reader: Option<(std::io::Take<BufReader<File>>, PathBuf)> = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            if let Some(e) = error.take() {
                failed = true;
                return Some(Err(e));
            }
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
                    // Within a segment's records: a zeroed header with data
                    // after it (a clean end is not read this far).
                    Read1::Zeros => {
                        failed = true;
                        return Some(Err(RsmError::Storage(format!(
                            "the log segment {} is damaged: a zeroed record header with records after it",
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
        g.write_pending()?;
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
        g.pending.clear();
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
        g.pending.is_empty() && g.current.len == 0 && g.sealed.iter().all(|s| s.len == 0)
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
        let w = Wal::open_with(dir.path(), 0).unwrap();
        assert!(w.is_empty());
        w.append(0, b"a").unwrap();
        w.append(1, b"bb").unwrap();
        w.flush().unwrap();
        drop(w);
        let w = Wal::open_with(dir.path(), 0).unwrap();
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
    fn appends_are_written_at_a_flush_or_when_the_log_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment_path(&dir.path().join("wal"), 0);
        let size = || std::fs::metadata(&seg).unwrap().len();
        let w = Wal::open_with(dir.path(), 0).unwrap();
        w.append(0, b"a").unwrap();
        w.append(1, b"b").unwrap();
        assert_eq!(size(), 0, "an append is not a write");
        assert!(!w.is_empty());
        w.flush().unwrap();
        assert_eq!(size(), 2 * (HEADER as u64 + 1), "one flush wrote both");
        w.append(2, b"c").unwrap();
        drop(w);
        assert_eq!(size(), 3 * (HEADER as u64 + 1), "dropped: written");
        let w = Wal::open_with(dir.path(), 0).unwrap();
        assert_eq!(all(&w).len(), 3);
        // Past the memory bound an append writes out by itself.
        w.append(3, &vec![7; MAX_PENDING]).unwrap();
        assert!(size() > MAX_PENDING as u64);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open_with(dir.path(), 0).unwrap();
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
        let w = Wal::open_with(dir.path(), 0).unwrap();
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
        let w = Wal::open_with(dir.path(), 0).unwrap();
        assert_eq!(all(&w).len(), 2);
        drop(w);
        // A flipped bit in the first record, with intact records after it,
        // is damage, not a torn write: nothing is cut, and replay stops
        // with an error at that record (nothing unverified is applied).
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[HEADER + 5] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let w = Wal::open_with(dir.path(), 0).unwrap();
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
    fn a_zero_filled_segment_ends_at_its_last_record_and_tears_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment_path(&dir.path().join("wal"), 0);
        let size = || std::fs::metadata(&seg).unwrap().len();
        let open = || Wal::open_with(dir.path(), 4096).unwrap();
        let firsts = |w: &Wal| all(w).into_iter().map(|e| e.0).collect::<Vec<_>>();
        let w = open();
        w.append(0, &[1; 100]).unwrap();
        w.append(1, &[2; 100]).unwrap();
        w.flush().unwrap();
        assert_eq!(size(), 4096, "zero-filled ahead of the records");
        w.append(2, &[3; 5000]).unwrap();
        w.flush().unwrap();
        assert_eq!(size(), 2 * 4096, "filled further as the records grow");
        drop(w);
        let w = open();
        assert_eq!(firsts(&w), vec![0, 1, 2], "the zeros end the segment");
        w.append(3, b"more").unwrap();
        w.flush().unwrap();
        drop(w);
        assert_eq!(size(), 2 * 4096);
        assert_eq!(firsts(&open()), vec![0, 1, 2, 3]);
        // A torn last record, zeros after it: cut off; appends go on.
        let end = 4 * HEADER + 100 + 100 + 5000 + 4;
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[end - 1] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let w = open();
        assert_eq!(firsts(&w), vec![0, 1, 2]);
        w.append(3, b"again").unwrap();
        w.flush().unwrap();
        drop(w);
        assert_eq!(all(&open())[3], (3, b"again".to_vec()));
        // A zeroed header with records after it is damage, not the end.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[HEADER + 100..2 * HEADER + 100].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let got: Vec<_> = open().entries().collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        let e = got[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("zeroed"), "{e}");
    }

    #[test]
    fn damage_in_an_older_segment_is_an_error_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open_with(dir.path(), 0).unwrap();
        w.append(0, &[1; 50]).unwrap();
        w.truncate(0).unwrap();
        w.append(5, &[2; 50]).unwrap();
        w.flush().unwrap();
        drop(w);
        let seg0 = segment_path(&dir.path().join("wal"), 0);
        let mut bytes = std::fs::read(&seg0).unwrap();
        bytes[HEADER + 1] ^= 0xff;
        std::fs::write(&seg0, &bytes).unwrap();
        let w = Wal::open_with(dir.path(), 0).unwrap();
        let got: Vec<_> = w.entries().collect();
        assert_eq!(got.len(), 1);
        let e = got[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("checksum") || e.contains("middle"), "{e}");
    }

    #[test]
    fn truncation_drops_only_segments_wholly_below_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open_with(dir.path(), 0).unwrap();
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
        let w = Wal::open_with(dir.path(), 0).unwrap();
        assert_eq!(firsts(&w), vec![20, 30, 40]);
        w.clear().unwrap();
        assert!(w.is_empty());
        drop(w);
        assert!(Wal::open_with(dir.path(), 0).unwrap().is_empty());
    }
}
