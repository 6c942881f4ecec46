//! Timelines: the picture of a run that virtual synchrony is explained with.
//!
//! One horizontal lane per process incarnation, time running right; view
//! installs as coloured bands (the same view has the same colour on every
//! lane, so the bands line up across lanes); deliveries as dots coloured by
//! their sender; sends as small triangles; joins with state transfer as an
//! arrow from the donor; blocked (minority) periods hatched; crashes,
//! removals and clean leaves at the end of a lane. When the checker finds a
//! violation, the messages, views or processes it names are marked in red
//! and the legend says which guarantee failed.
//!
//! Long runs are summarised: past [`TimelineOptions::max_marks`] sends and
//! deliveries in the window, deliveries are counted per lane and time slice
//! and drawn as small stacked columns (coloured by sender), so a
//! 100,000-message history renders quickly and stays readable. A window
//! ([`TimelineOptions::from_ms`], [`TimelineOptions::to_ms`]) zooms in.
//!
//! Guarantees: rendering never panics, whatever the histories hold (empty,
//! inconsistent, out of order); the output is well-formed SVG (composed with
//! the `svg` crate, which escapes every text and attribute), deterministic
//! for the same input. Times in the picture are milliseconds since the
//! earliest record of the run.
//!
//! The module is behind the `timeline` cargo feature (on by default), so the
//! sans-IO engine can be built without the SVG dependency.

pub mod cli;
mod draw;
mod html;
mod layout;
mod summary;

use crate::checker::{self, CheckOptions, Violation};
use crate::history::{self, Event, History, HistoryError, Record};
use crate::id::Pid;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

/// How to draw a timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineOptions {
    /// Start of the window, in milliseconds since the run's earliest record
    /// (default: the start of the run).
    pub from_ms: Option<f64>,
    /// End of the window, in milliseconds since the run's earliest record
    /// (default: the end of the run).
    pub to_ms: Option<f64>,
    /// Width of the picture in pixels (clamped to 400..=20000).
    pub width: u32,
    /// A title drawn above the lanes.
    pub title: Option<String>,
    /// Run the checker with these options and mark what it finds (`None`:
    /// do not check).
    pub check: Option<CheckOptions>,
    /// The most sends plus deliveries drawn one by one; above it, deliveries
    /// are binned per lane and time slice.
    pub max_marks: usize,
}

impl Default for TimelineOptions {
    /// The whole run, 1200 pixels wide, checked with the default checker
    /// options, up to 3000 individual marks.
    fn default() -> Self {
        TimelineOptions {
            from_ms: None,
            to_ms: None,
            width: 1200,
            title: None,
            check: Some(CheckOptions::default()),
            max_marks: 3000,
        }
    }
}

/// Why a timeline could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// A history file could not be opened or read.
    #[error("cannot read history file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A history file holds something that is not a history record.
    #[error("history file {path}: {source}")]
    History {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: HistoryError,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// There is nothing to draw.
    #[error("the histories hold no records: nothing to draw")]
    Empty,
    /// The window asked for is empty or lies outside the run.
    #[error(
        "the window {from_ms} ms to {to_ms} ms is empty or outside the run (which lasts {run_ms} ms)"
    )]
    Window {
        /// Start asked for, ms.
        from_ms: f64,
        /// End asked for, ms.
        to_ms: f64,
        /// The run's length, ms.
        run_ms: f64,
    },
    /// The command line was not understood (the message says how to call).
    #[error("{0}")]
    Usage(String),
}

/// A drawn timeline and what it shows.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// The SVG document.
    pub svg: String,
    /// Lanes drawn (one per process incarnation).
    pub lanes: usize,
    /// Distinct views drawn in the window.
    pub views: usize,
    /// Deliveries in the window.
    pub deliveries: usize,
    /// Whether deliveries were binned (summarised) rather than drawn one by
    /// one.
    pub binned: bool,
    /// The violations marked (empty when the checker found none or was not
    /// run).
    pub violations: Vec<Violation>,
}

/// Draws `histories` (one per process incarnation, as from
/// [`history::read_jsonl`]), checking them first when `opts.check` asks.
pub fn render(histories: &[History], opts: &TimelineOptions) -> Result<Timeline, TimelineError> {
    let violations = match &opts.check {
        Some(c) => checker::check_all(histories, c),
        None => Vec::new(),
    };
    render_with_violations(histories, &violations, opts)
}

/// Draws `histories` marking `violations` (for callers that already ran
/// the checker, such as the simulator); `opts.check` is ignored.
pub fn render_with_violations(
    histories: &[History],
    violations: &[Violation],
    opts: &TimelineOptions,
) -> Result<Timeline, TimelineError> {
    let model = layout::Model::build(histories, opts)?;
    let geometry = draw::Geometry::new(model.from, model.to, opts);
    let slices = (geometry.plot_w / summary::SLICE_PX) as usize;
    let marks = summary::Marks::collect(histories, &model, violations, opts.max_marks, slices);
    let svg = draw::draw(&model, &marks, violations, opts);
    Ok(Timeline {
        svg,
        lanes: model.lanes.len(),
        views: model.views_in_window(),
        deliveries: marks.deliveries,
        binned: marks.bins.is_some(),
        violations: violations.to_vec(),
    })
}

/// The SVG of `histories` (see [`render`]).
pub fn render_svg(histories: &[History], opts: &TimelineOptions) -> Result<String, TimelineError> {
    render(histories, opts).map(|t| t.svg)
}

/// A self-contained HTML page embedding the SVG of `histories`, with a
/// plain-text list of the violations found (see [`render`]).
pub fn render_html(histories: &[History], opts: &TimelineOptions) -> Result<String, TimelineError> {
    let t = render(histories, opts)?;
    Ok(html::page(&t, opts))
}

/// Wraps an already drawn timeline in a self-contained HTML page.
#[must_use]
pub fn to_html(timeline: &Timeline, opts: &TimelineOptions) -> String {
    html::page(timeline, opts)
}

/// Reads JSON-lines history files (as written by vsync-net) and groups
/// their records per process incarnation. Several files may hold records
/// of the same incarnation; a truncated last line is ignored.
pub fn read_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<History>, TimelineError> {
    let mut records = Vec::new();
    for p in paths {
        let path = p.as_ref();
        let file = File::open(path).map_err(|source| TimelineError::Read {
            path: path.to_owned(),
            source,
        })?;
        let hs = history::read_jsonl(BufReader::new(file)).map_err(|source| match source {
            HistoryError::Io(source) => TimelineError::Read {
                path: path.to_owned(),
                source,
            },
            source => TimelineError::History {
                path: path.to_owned(),
                source,
            },
        })?;
        records.extend(hs.into_iter().flat_map(|h| h.records));
    }
    Ok(history::group_records(records))
}

/// Reads the history files `inputs`, draws them and writes the picture to
/// `output`: an HTML page when `output` ends in `.html` or `.htm`, SVG
/// otherwise. This is what `vsync-kv timeline` and `vsync-kv demo` call.
pub fn write_timeline<P: AsRef<Path>>(
    inputs: &[P],
    output: &Path,
    opts: &TimelineOptions,
) -> Result<Timeline, TimelineError> {
    let histories = read_files(inputs)?;
    let t = render(&histories, opts)?;
    let html = output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let text = if html {
        html::page(&t, opts)
    } else {
        t.svg.clone()
    };
    std::fs::write(output, text).map_err(|source| TimelineError::Write {
        path: output.to_owned(),
        source,
    })?;
    Ok(t)
}

/// Appends a `crash` record to a history file whose process a harness
/// killed (a process cannot record its own kill -9), so that its lane ends
/// with a cross. The record is for the incarnation of the file's last
/// record, at `t_micros` or just after that record if it is later.
/// Returns that incarnation, or `None` for a file with no record (nothing
/// is appended then).
pub fn append_crash(path: &Path, t_micros: u64) -> Result<Option<Pid>, TimelineError> {
    let histories = read_files(&[path])?;
    let Some(last) = histories
        .iter()
        .flat_map(|h| h.records.last())
        .max_by_key(|r| r.t)
    else {
        return Ok(None);
    };
    let record = Record {
        t: t_micros.max(last.t.saturating_add(1)),
        pid: last.pid,
        event: Event::Crash,
    };
    let write = |source| TimelineError::Write {
        path: path.to_owned(),
        source,
    };
    // A process killed mid-line leaves a torn last line: cut it off, or it
    // would no longer be the last line and would make the file unreadable.
    let bytes = std::fs::read(path).map_err(|source| TimelineError::Read {
        path: path.to_owned(),
        source,
    })?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new().write(true).open(path).map_err(write)?;
    f.set_len(keep as u64).map_err(write)?;
    drop(f);
    let mut f = OpenOptions::new().append(true).open(path).map_err(write)?;
    writeln!(f, "{}", history::to_json_line(&record)).map_err(write)?;
    Ok(Some(last.pid))
}
