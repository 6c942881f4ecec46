//! Histories: what each process did, as the checker reads it.
//!
//! The simulator records a [`History`] per process; vsync-net writes the same
//! events as JSON lines (one [`Record`] per line, see docs/HISTORY.md), and
//! [`read_jsonl`] reads them back, so real runs are checked by the same code
//! as simulated ones.

use crate::delivery::Delivery;
use crate::id::{MsgId, Pid, View, ViewId};
use serde::{Deserialize, Serialize};
use std::io::BufRead;

/// One thing a process did or suffered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The process (this incarnation) started.
    Start,
    /// The process installed `view`. `joined` is true for the first view of a
    /// joiner (or the founder's first view).
    Install {
        /// The view installed.
        view: View,
        /// True when this is the process's first view.
        joined: bool,
        /// For a joiner whose application state is transferred: the member
        /// that sends it (the engine's `AppEvent::AwaitState` donor). Absent
        /// from files written before this field existed, and for installs
        /// without a transfer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        donor: Option<Pid>,
    },
    /// The process multicast `msg` (it was assigned its view and sequence).
    Send {
        /// The message.
        msg: MsgId,
        /// Its delivery mode (absent in the file: safe).
        #[serde(default, skip_serializing_if = "is_safe")]
        mode: Delivery,
    },
    /// The process delivered `msg` in `view` at total-order position `pos`
    /// (from 1 within the view; 0 for FIFO and causal messages).
    Deliver {
        /// The message delivered.
        msg: MsgId,
        /// The view it was delivered in.
        view: ViewId,
        /// Its position in the view's total order, from 1 (0: FIFO/causal).
        pos: u64,
        /// Its delivery mode (absent in the file: safe).
        #[serde(default, skip_serializing_if = "is_safe")]
        mode: Delivery,
    },
    /// The process stopped delivering because it is in a minority (it cannot
    /// reach a quorum of its last view).
    Blocked {
        /// The view it is blocked in.
        view: ViewId,
    },
    /// The process learned it was removed from the group (it was left out of
    /// the view after `view`).
    Removed {
        /// The last view it was a member of.
        view: ViewId,
    },
    /// The process left the group cleanly.
    Left {
        /// The last view it was a member of.
        view: ViewId,
    },
    /// Partitionable policy: the process's side lost the merge after a
    /// partition healed; its history since `split` is discarded and it
    /// rejoins the winner as a new incarnation (a `Removed` record follows).
    Diverged {
        /// Its last view (the losing side's).
        view: ViewId,
        /// The last view its history shares with the winner's, if both
        /// remember one: where the two histories part.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split: Option<ViewId>,
        /// The winning side's view.
        winner: ViewId,
    },
    /// The process crashed (recorded by the simulator or a test harness; a
    /// real process cannot record its own kill -9).
    Crash,
}

/// An event with the time it happened at (microseconds; virtual time in the
/// simulator, wall-clock since the Unix epoch in real runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When, in microseconds.
    pub t: u64,
    /// The process.
    pub pid: Pid,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// Everything one process incarnation did, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The process (one incarnation).
    pub pid: Option<Pid>,
    /// Its records, in the order they happened.
    pub records: Vec<Record>,
}

impl History {
    /// An empty history for `pid`.
    pub fn new(pid: Pid) -> Self {
        History {
            pid: Some(pid),
            records: Vec::new(),
        }
    }

    /// Appends an event at time `t` (ignored for a history without a pid).
    pub fn push(&mut self, t: u64, event: Event) {
        if let Some(pid) = self.pid {
            self.records.push(Record { t, pid, event });
        }
    }
}

/// Errors reading a JSON-lines history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("cannot read history: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a valid record.
    #[error("history line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        source: serde_json::Error,
    },
}

/// Reads JSON-lines records (as written by vsync-net) and groups them into
/// one [`History`] per process incarnation, keeping each process's order.
/// Blank lines are skipped; a truncated last line (a process killed while
/// writing) is ignored rather than reported.
pub fn read_jsonl<R: BufRead>(reader: R) -> Result<Vec<History>, HistoryError> {
    let mut records = Vec::new();
    let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
    let n = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(e) if i + 1 == n && e.is_eof() => break,
            Err(source) => {
                return Err(HistoryError::Parse {
                    line: i + 1,
                    source,
                });
            }
        }
    }
    Ok(group_records(records))
}

/// Groups records into per-process histories, in first-appearance order.
pub fn group_records(records: impl IntoIterator<Item = Record>) -> Vec<History> {
    let mut out: Vec<History> = Vec::new();
    for r in records {
        match out.iter_mut().find(|h| h.pid == Some(r.pid)) {
            Some(h) => h.records.push(r),
            None => out.push(History {
                pid: Some(r.pid),
                records: vec![r],
            }),
        }
    }
    out
}

/// Writes one record as a JSON line (no trailing newline).
pub fn to_json_line(r: &Record) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// Whether a mode is the default one (left out of the JSON).
fn is_safe(mode: &Delivery) -> bool {
    *mode == Delivery::Safe
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{MsgId, View, ViewId};

    #[test]
    fn json_lines_round_trip_and_a_torn_last_line_is_ignored() {
        let p = Pid::new(1, 1);
        let id = ViewId {
            epoch: 1,
            installer: p,
        };
        let msg = MsgId {
            view: id,
            sender: p,
            seq: 1,
        };
        let mut h = History::new(p);
        h.push(1, Event::Start);
        h.push(
            2,
            Event::Install {
                view: View {
                    id,
                    members: vec![p],
                },
                joined: true,
                donor: None,
            },
        );
        h.push(
            3,
            Event::Send {
                msg,
                mode: Delivery::Safe,
            },
        );
        h.push(
            4,
            Event::Deliver {
                msg,
                view: id,
                pos: 1,
                mode: Delivery::Safe,
            },
        );
        let mut text: String = h.records.iter().map(|r| to_json_line(r) + "\n").collect();
        // The documented shape (docs/HISTORY.md).
        assert!(text.starts_with(r#"{"t":1,"pid":{"node":1,"inc":1},"ev":"start"}"#));
        text.push_str(r#"{"t":5,"pid":{"node":1,"#); // killed mid-write
        let back = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(back, vec![h]);
        // A malformed line that is not the last is an error with its number.
        let bad = "not json\n{\"t\":1,\"pid\":{\"node\":1,\"inc\":1},\"ev\":\"start\"}\n";
        match read_jsonl(bad.as_bytes()) {
            Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 1),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}
