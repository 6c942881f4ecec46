//! The history recorder: one JSON line per event (docs/HISTORY.md), for the
//! checker to read back with `vsync_core::history::read_jsonl`.
//!
//! The engine task records the events of one batch of outputs and writes
//! them with one `write(2)` before any message or event of that batch leaves
//! the task. So the file is always ahead of what anyone else could observe
//! (a `send` record is on disk before the data message is on the wire), and
//! a kill -9 loses at most records whose effects nobody saw, the last of them
//! perhaps torn (which `read_jsonl` ignores). Nothing is buffered in user
//! space between batches.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use vsync_core::Pid;
use vsync_core::history::{Event, Record, to_json_line};

/// Microseconds since the Unix epoch, by the wall clock.
pub(crate) fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Appends records of one process incarnation to a file.
#[derive(Debug)]
pub(crate) struct Recorder {
    path: PathBuf,
    file: File,
    pid: Pid,
    buf: Vec<u8>,
    failed: bool,
}

impl Recorder {
    /// Opens (creating, appending to) `path`.
    pub(crate) fn open(path: &Path, pid: Pid) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Recorder {
            path: path.to_owned(),
            file,
            pid,
            buf: Vec::with_capacity(4096),
            failed: false,
        })
    }

    /// Records `event` now (written at the next [`Recorder::write`]).
    pub(crate) fn push(&mut self, event: Event) {
        let r = Record {
            t: wall_micros(),
            pid: self.pid,
            event,
        };
        self.buf.extend_from_slice(to_json_line(&r).as_bytes());
        self.buf.push(b'\n');
    }

    /// Writes what was recorded since the last call.
    pub(crate) fn write(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            if !self.failed {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write history");
            }
            self.failed = true;
        }
        self.buf.clear();
    }
}
