//! Drawing: the laid-out run as an SVG document.
//!
//! Composes the picture with the `svg` crate (which escapes all text and
//! attribute values) from the [layout](super::layout) and the
//! [marks](super::summary). Every element a reader (or a test) may want to
//! find carries a class: `lane` (one group per incarnation, id
//! `lane-NODE-INC`), `view` (one group per view, id `view-EPOCH-NODE-INC`,
//! holding that view's `band` on every lane), `install`, `send`,
//! `deliver`, `bin`, `blocked`, `transfer`, `crash`, `removed`, `left`,
//! and `violation` (everything marked red because the checker named it).

use super::TimelineOptions;
use super::layout::{Fate, Model, Span};
use super::summary::{Kind, Mark, Marks};
use crate::checker::Violation;
use crate::id::{MsgId, Pid, ViewId};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use svg::Document;
use svg::node::element::{
    Circle, Definitions, Group, Line, Marker, Path, Pattern, Polygon, Rectangle, Text, Title,
};

/// Light fills for view bands (no red: red means a violation).
const VIEW_FILL: [&str; 8] = [
    "#aec7e8", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
];
/// Darker versions, for view labels.
const VIEW_INK: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
];
/// Sender colours (by node), saturated; no red.
const SENDER: [&str; 9] = [
    "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f",
];
/// Violations.
const RED: &str = "#d62728";
const INK: &str = "#222222";
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

/// Violations listed one by one in the legend.
const MAX_LISTED: usize = 8;

/// Where things go on the page, in pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub width: f64,
    pub left: f64,
    pub plot_w: f64,
    pub lanes_top: f64,
    pub lane_h: f64,
    from: u64,
    to: u64,
}

impl Geometry {
    /// The geometry for `lanes` lanes over `[from, to]` at `opts.width`.
    pub(crate) fn new(from: u64, to: u64, opts: &TimelineOptions) -> Geometry {
        let width = f64::from(opts.width.clamp(400, 20_000));
        let left = 84.0;
        let right = 36.0;
        Geometry {
            width,
            left,
            plot_w: width - left - right,
            lanes_top: 88.0,
            lane_h: 40.0,
            from,
            to,
        }
    }

    /// The x of time `t` (absolute microseconds).
    fn x(&self, t: u64) -> f64 {
        let span = (self.to - self.from).max(1) as f64;
        let f = (t.saturating_sub(self.from)) as f64 / span;
        r1(self.left + f.min(1.0) * self.plot_w)
    }

    /// The y of the centre line of lane `i`.
    fn y(&self, i: usize) -> f64 {
        self.lanes_top + self.lane_h * (i as f64 + 0.5)
    }

    fn lanes_bottom(&self, lanes: usize) -> f64 {
        self.lanes_top + self.lane_h * lanes as f64
    }
}

/// Rounds to a tenth of a pixel (smaller files, same picture).
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Milliseconds since the origin, for labels.
fn ms(model: &Model, t: u64) -> String {
    let v = t.saturating_sub(model.origin) as f64 / 1000.0;
    format!("{v:.3} ms")
}

/// An id-safe name of a pid: `NODE-INC`.
fn pid_key(p: Pid) -> String {
    format!("{}-{}", p.node.0, p.inc)
}

/// What the checker named, for quick look-up while drawing.
struct Flags {
    msgs: HashMap<MsgId, Vec<&'static str>>,
    views: HashMap<ViewId, Vec<&'static str>>,
    pids: HashMap<Pid, Vec<&'static str>>,
}

impl Flags {
    fn new(violations: &[Violation]) -> Flags {
        let mut f = Flags {
            msgs: HashMap::new(),
            views: HashMap::new(),
            pids: HashMap::new(),
        };
        for v in violations {
            let g = v.guarantee.name();
            let push = |list: &mut Vec<&'static str>| {
                if !list.contains(&g) {
                    list.push(g);
                }
            };
            if let Some(m) = v.msg {
                push(f.msgs.entry(m).or_default());
            } else if let Some(id) = v.view {
                push(f.views.entry(id).or_default());
            } else {
                for p in &v.pids {
                    push(f.pids.entry(*p).or_default());
                }
            }
        }
        f
    }
}

/// Draws the whole picture.
pub(crate) fn draw(
    model: &Model,
    marks: &Marks,
    violations: &[Violation],
    opts: &TimelineOptions,
) -> String {
    let g = Geometry::new(model.from, model.to, opts);
    let flags = Flags::new(violations);
    let n = model.lanes.len();
    let bottom = g.lanes_bottom(n);

    let mut body = Group::new()
        .set("font-family", FONT)
        .set("font-size", 11)
        .set("fill", INK);
    body = body.add(header(model, marks, &g, opts));
    body = body.add(axis(model, &g, bottom));
    body = body.add(view_labels(model, &g));
    body = body.add(bands(model, &g, &flags));
    body = body.add(blocked(model, &g));
    body = body.add(lanes(model, &g, &flags));
    body = body.add(match &marks.bins {
        None => detail(model, &marks.detail, &g),
        Some(_) => binned(model, marks, &g),
    });
    body = body.add(transfers(model, &g));
    body = body.add(flagged(model, &marks.flagged, &flags, &g));
    let (legend, legend_h) = legend(model, marks, violations, opts, &g, bottom + 46.0);
    body = body.add(legend);

    let height = r1(bottom + 46.0 + legend_h + 12.0);
    Document::new()
        .set("width", g.width)
        .set("height", height)
        .set("viewBox", (0, 0, g.width, height))
        .add(defs())
        .add(
            Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "#ffffff"),
        )
        .add(body)
        .to_string()
}

/// Reusable pieces: the arrowhead and the hatching of blocked periods.
fn defs() -> Definitions {
    let arrow = Marker::new()
        .set("id", "arrow")
        .set("viewBox", (0, 0, 10, 10))
        .set("refX", 9)
        .set("refY", 5)
        .set("markerWidth", 7)
        .set("markerHeight", 7)
        .set("orient", "auto")
        .add(
            Path::new()
                .set("d", "M0,0 L10,5 L0,10 z")
                .set("fill", "#444444"),
        );
    let hatch = Pattern::new()
        .set("id", "hatch")
        .set("patternUnits", "userSpaceOnUse")
        .set("width", 6)
        .set("height", 6)
        .set("patternTransform", "rotate(45)")
        .add(
            Line::new()
                .set("x1", 0)
                .set("y1", 0)
                .set("x2", 0)
                .set("y2", 6)
                .set("stroke", "#555555")
                .set("stroke-width", 2),
        );
    Definitions::new().add(arrow).add(hatch)
}

fn text(x: f64, y: f64, s: impl Into<String>) -> Text {
    Text::new(s).set("x", r1(x)).set("y", r1(y))
}

/// Title and a line saying what is shown.
fn header(model: &Model, marks: &Marks, g: &Geometry, opts: &TimelineOptions) -> Group {
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| "vsync run timeline".into());
    let mut what = format!(
        "{} incarnations, {} views, {} deliveries, {} sends; window {} to {}",
        model.lanes.len(),
        model.views_in_window(),
        marks.deliveries,
        marks.sends,
        ms(model, model.from),
        ms(model, model.to),
    );
    if let Some(b) = &marks.bins {
        let slice = (model.to - model.from) as f64 / 1000.0 / b.slices as f64;
        let _ = write!(
            what,
            "; deliveries summarised per {slice:.3} ms slice (column height = count, colour = sender; hover for numbers)"
        );
    }
    Group::new()
        .set("class", "header")
        .add(
            text(g.left, 22.0, title)
                .set("font-size", 16)
                .set("font-weight", "bold"),
        )
        .add(text(g.left, 40.0, what).set("fill", "#555555"))
}

/// Time ticks along the bottom, with faint grid lines through the lanes.
fn axis(model: &Model, g: &Geometry, bottom: f64) -> Group {
    let from_ms = model.from.saturating_sub(model.origin) as f64 / 1000.0;
    let to_ms = model.to.saturating_sub(model.origin) as f64 / 1000.0;
    let span = (to_ms - from_ms).max(0.001);
    let step = nice_step(span / (g.plot_w / 110.0).max(1.0));
    let mut out = Group::new().set("class", "axis").add(
        Line::new()
            .set("x1", g.left)
            .set("y1", bottom + 4.0)
            .set("x2", r1(g.left + g.plot_w))
            .set("y2", bottom + 4.0)
            .set("stroke", "#888888"),
    );
    let mut v = (from_ms / step).ceil() * step;
    let mut ticks = 0;
    while v <= to_ms + step * 1e-9 && ticks < 400 {
        let x = r1(g.left + (v - from_ms) / span * g.plot_w);
        out = out
            .add(
                Line::new()
                    .set("x1", x)
                    .set("y1", g.lanes_top - 4.0)
                    .set("x2", x)
                    .set("y2", bottom + 8.0)
                    .set("stroke", "#e4e4e4"),
            )
            .add(
                text(x, bottom + 20.0, tick_label(v, step))
                    .set("text-anchor", "middle")
                    .set("fill", "#555555"),
            );
        v += step;
        ticks += 1;
    }
    out
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn tick_label(v_ms: f64, step_ms: f64) -> String {
    if step_ms >= 1000.0 {
        format!("{} s", trim(v_ms / 1000.0))
    } else {
        format!("{} ms", trim(v_ms))
    }
}

/// A number without needless decimals.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// View names above the lanes, at each view's first install, in the
/// view's colour; skipped where they would overlap.
fn view_labels(model: &Model, g: &Geometry) -> Group {
    let mut out = Group::new().set("class", "view-labels");
    let mut shown: Vec<(u64, usize)> = model
        .views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.shown)
        .map(|(i, v)| (v.first_install.max(model.from), i))
        .collect();
    shown.sort();
    // Two rows of labels: a label goes on the first row where it does not
    // overlap the previous one, and is left out (its bands keep their
    // tooltips) when both rows are taken.
    let mut last_x = [f64::NEG_INFINITY; 2];
    for (t, i) in shown {
        let x = g.x(t);
        let Some(row) = (0..2).find(|r| x - last_x[*r] >= 30.0) else {
            continue;
        };
        last_x[row] = x;
        let v = &model.views[i];
        out = out.add(
            text(
                x,
                g.lanes_top - 6.0 - 13.0 * row as f64,
                format!("v{}", v.view.id.epoch),
            )
            .set("fill", VIEW_INK[i % VIEW_INK.len()])
            .set("font-weight", "bold")
            .add(Title::new(v.view.to_string())),
        );
    }
    out
}

/// One group per view, holding its band on every lane; red outline when
/// the checker named the view.
fn bands(model: &Model, g: &Geometry, flags: &Flags) -> Group {
    let mut per_view: Vec<Vec<(usize, Span, bool)>> = vec![Vec::new(); model.views.len()];
    for (li, lane) in model.lanes.iter().enumerate() {
        for s in &lane.segments {
            if let Some(v) = per_view.get_mut(s.view) {
                v.push((li, s.span, s.install_shown));
            }
        }
    }
    let mut out = Group::new().set("class", "bands");
    for (vi, segs) in per_view.iter().enumerate() {
        if segs.is_empty() {
            continue;
        }
        let info = &model.views[vi];
        let id = info.view.id;
        let bad = flags.views.get(&id);
        let mut grp = Group::new()
            .set("id", format!("view-{}-{}", id.epoch, pid_key(id.installer)))
            .set(
                "class",
                if bad.is_some() {
                    "view violation"
                } else {
                    "view"
                },
            )
            .set("data-view", id.to_string())
            .add(Title::new(info.view.to_string()));
        if let Some(gs) = bad {
            grp = grp.set("data-guarantee", gs.join(" "));
        }
        for (li, span, install) in segs {
            let y = g.y(*li);
            let (x0, x1) = (g.x(span.from), g.x(span.to));
            let mut r = Rectangle::new()
                .set("class", "band")
                .set("x", x0)
                .set("y", r1(y - 13.0))
                .set("width", r1((x1 - x0).max(0.8)))
                .set("height", 26)
                .set("fill", VIEW_FILL[vi % VIEW_FILL.len()])
                .set("fill-opacity", 0.75);
            if bad.is_some() {
                r = r.set("stroke", RED).set("stroke-width", 2.5);
            }
            grp = grp.add(r);
            if *install {
                grp = grp.add(
                    Line::new()
                        .set("class", "install")
                        .set("x1", x0)
                        .set("y1", r1(y - 14.0))
                        .set("x2", x0)
                        .set("y2", r1(y + 14.0))
                        .set("stroke", if bad.is_some() { RED } else { "#333333" })
                        .set("stroke-width", 2),
                );
            }
        }
        out = out.add(grp);
    }
    out
}

/// Hatched spans where a process was blocked in a minority.
fn blocked(model: &Model, g: &Geometry) -> Group {
    let mut out = Group::new().set("class", "blocked-spans");
    for (li, lane) in model.lanes.iter().enumerate() {
        let y = g.y(li);
        for (span, view) in &lane.blocked {
            let (x0, x1) = (g.x(span.from), g.x(span.to));
            out = out.add(
                Rectangle::new()
                    .set("class", "blocked")
                    .set("x", x0)
                    .set("y", r1(y - 13.0))
                    .set("width", r1((x1 - x0).max(1.0)))
                    .set("height", 26)
                    .set("fill", "url(#hatch)")
                    .set("fill-opacity", 0.6)
                    .add(Title::new(format!(
                        "{} blocked in a minority of {view} from {} to {}",
                        lane.pid,
                        ms(model, span.from),
                        ms(model, span.to)
                    ))),
            );
        }
    }
    out
}

/// Lane lines, labels and fates.
fn lanes(model: &Model, g: &Geometry, flags: &Flags) -> Group {
    let mut out = Group::new().set("class", "lanes");
    for (li, lane) in model.lanes.iter().enumerate() {
        let y = g.y(li);
        let bad = flags.pids.get(&lane.pid);
        let mut grp = Group::new()
            .set("id", format!("lane-{}", pid_key(lane.pid)))
            .set(
                "class",
                if bad.is_some() {
                    "lane violation"
                } else {
                    "lane"
                },
            )
            .set("data-pid", lane.pid.to_string());
        if let Some(gs) = bad {
            grp = grp.set("data-guarantee", gs.join(" "));
        }
        let mut label = text(g.left - 8.0, y + 4.0, lane.pid.to_string())
            .set("text-anchor", "end")
            .set("font-size", 12)
            .set("font-weight", "bold");
        if let Some(gs) = bad {
            label = label
                .set("fill", RED)
                .add(Title::new(format!("violates {}", gs.join(", "))));
        }
        grp = grp.add(label).add(
            Line::new()
                .set("x1", g.x(lane.span.from))
                .set("y1", y)
                .set("x2", g.x(lane.span.to))
                .set("y2", y)
                .set("stroke", "#444444")
                .set("stroke-width", 1.2),
        );
        if let Some((t, fate)) = lane.fate {
            grp = grp.add(fate_mark(model, g.x(t), y, t, fate, lane.pid));
        }
        out = out.add(grp);
    }
    out
}

fn fate_mark(model: &Model, x: f64, y: f64, t: u64, fate: Fate, pid: Pid) -> Group {
    let (class, what) = match fate {
        Fate::Crash => ("crash", "crashed"),
        Fate::Removed => ("removed", "removed from the group"),
        Fate::Left => ("left", "left the group"),
        Fate::Diverged => (
            "removed diverged",
            "lost the partition merge (its history since the split is discarded) and was removed",
        ),
    };
    let mut grp = Group::new()
        .set("class", class)
        .add(Title::new(format!("{pid} {what} at {}", ms(model, t))));
    match fate {
        Fate::Crash => grp = cross(grp, x, y),
        Fate::Removed | Fate::Diverged => {
            let label = if fate == Fate::Diverged {
                "lost merge"
            } else {
                "removed"
            };
            grp = grp
                .add(
                    Rectangle::new()
                        .set("x", r1(x - 5.0))
                        .set("y", r1(y - 5.0))
                        .set("width", 10)
                        .set("height", 10)
                        .set("fill", "#000000"),
                )
                .add(text(x + 8.0, y - 8.0, label).set("font-size", 10));
        }
        Fate::Left => {
            grp = grp
                .add(
                    Path::new()
                        .set(
                            "d",
                            format!(
                                "M{} {} L{} {} M{} {} L{} {}",
                                r1(x),
                                r1(y - 8.0),
                                r1(x),
                                r1(y + 8.0),
                                r1(x + 4.0),
                                r1(y - 8.0),
                                r1(x + 4.0),
                                r1(y + 8.0)
                            ),
                        )
                        .set("stroke", "#000000")
                        .set("stroke-width", 2),
                )
                .add(text(x + 8.0, y - 8.0, "left").set("font-size", 10));
        }
    }
    grp
}

/// A cross (a crash) added to `grp`.
fn cross(mut grp: Group, x: f64, y: f64) -> Group {
    for (dx, dy) in [(7.0, 7.0), (7.0, -7.0)] {
        grp = grp.add(
            Line::new()
                .set("x1", r1(x - dx))
                .set("y1", r1(y - dy))
                .set("x2", r1(x + dx))
                .set("y2", r1(y + dy))
                .set("stroke", "#000000")
                .set("stroke-width", 3),
        );
    }
    grp
}

fn sender_colour(model: &Model, msg: &MsgId) -> &'static str {
    SENDER[model.node_rank(msg.sender.node) % SENDER.len()]
}

/// A triangle (send) or a dot (delivery).
fn mark_shape(model: &Model, m: &Mark, g: &Geometry, fill: &str, scale: f64) -> Polygon {
    let x = g.x(m.t);
    let y = g.y(m.lane);
    match m.kind {
        Kind::Send => {
            let (top, base) = (y - 12.0 * scale, y - 4.0);
            let w = 4.0 * scale;
            Polygon::new().set(
                "points",
                format!(
                    "{},{} {},{} {},{}",
                    r1(x),
                    r1(top),
                    r1(x - w),
                    r1(base),
                    r1(x + w),
                    r1(base)
                ),
            )
        }
        Kind::Deliver => {
            // A diamond reads as a dot at this size and stays a polygon.
            let c = y + 6.0;
            let r = 3.2 * scale;
            Polygon::new().set(
                "points",
                format!(
                    "{},{} {},{} {},{} {},{}",
                    r1(x),
                    r1(c - r),
                    r1(x + r),
                    r1(c),
                    r1(x),
                    r1(c + r),
                    r1(x - r),
                    r1(c)
                ),
            )
        }
    }
    .set("fill", fill.to_string())
    .set("data-msg", m.msg.to_string())
    .set(
        "class",
        match m.kind {
            Kind::Send => "send",
            Kind::Deliver => "deliver",
        },
    )
    .add(Title::new(match m.kind {
        Kind::Send => format!(
            "{} sends {} at {}",
            model.lanes[m.lane].pid,
            m.msg,
            ms(model, m.t)
        ),
        Kind::Deliver => format!(
            "{} delivers {} (position {}) at {}",
            model.lanes[m.lane].pid,
            m.msg,
            m.pos,
            ms(model, m.t)
        ),
    }))
}

/// Every send and delivery, one by one.
fn detail(model: &Model, marks: &[Mark], g: &Geometry) -> Group {
    let mut out = Group::new().set("class", "marks");
    for m in marks {
        out = out.add(mark_shape(model, m, g, sender_colour(model, &m.msg), 1.0));
    }
    out
}

/// Deliveries per lane and slice, as columns stacked by sender.
fn binned(model: &Model, marks: &Marks, g: &Geometry) -> Group {
    let mut out = Group::new().set("class", "marks binned");
    let Some(b) = &marks.bins else { return out };
    if b.scale == 0 {
        return out;
    }
    let col_w = g.plot_w / b.slices as f64;
    let slice_us = (model.to - model.from) as f64 / b.slices as f64;
    for li in 0..model.lanes.len() {
        let base = g.y(li) + 12.0;
        for s in 0..b.slices {
            let cell = b.cell(li, s);
            let total: u32 = cell.iter().fold(0u32, |a, c| a.saturating_add(*c));
            if total == 0 {
                continue;
            }
            let sends = b.sends.get(li * b.slices + s).copied().unwrap_or(0);
            let t0 = model.from.saturating_add((slice_us * s as f64) as u64);
            let t1 = model
                .from
                .saturating_add((slice_us * (s + 1) as f64) as u64);
            let mut tip = format!(
                "{} from {} to {}: {total} deliveries (",
                model.lanes[li].pid,
                ms(model, t0),
                ms(model, t1)
            );
            let mut first = true;
            for (si, c) in cell.iter().enumerate() {
                if *c > 0 {
                    let node = model.nodes.get(si).map_or(0, |n| n.0);
                    let _ = write!(tip, "{}from n{node}: {c}", if first { "" } else { ", " });
                    first = false;
                }
            }
            let _ = write!(tip, "), {sends} sends");
            let h = (22.0 * (f64::from(total) / f64::from(b.scale)).min(1.0)).max(1.5);
            let x = r1(g.left + col_w * s as f64);
            let mut grp = Group::new().set("class", "bin").add(Title::new(tip));
            let mut y = base;
            for (si, c) in cell.iter().enumerate() {
                if *c == 0 {
                    continue;
                }
                let part = h * f64::from(*c) / f64::from(total);
                y -= part;
                grp = grp.add(
                    Rectangle::new()
                        .set("x", x)
                        .set("y", r1(y))
                        .set("width", r1((col_w - 0.6).max(0.6)))
                        .set("height", r1(part.max(0.3)))
                        .set("fill", SENDER[si % SENDER.len()]),
                );
            }
            out = out.add(grp);
        }
    }
    out
}

/// Arrows from each donor to the joiner it sent the state to.
fn transfers(model: &Model, g: &Geometry) -> Group {
    let mut out = Group::new().set("class", "transfers");
    for t in &model.transfers {
        let x = g.x(t.t);
        let yj = g.y(t.joiner);
        let joiner = model.lanes[t.joiner].pid;
        let tip = Title::new(format!(
            "{joiner} joins; state transferred from {} at {}",
            t.donor_pid,
            ms(model, t.t)
        ));
        let path = match t.donor {
            Some(d) => {
                let yd = g.y(d);
                let (ys, ye) = if yd < yj {
                    (yd + 4.0, yj - 14.0)
                } else {
                    (yd - 4.0, yj + 14.0)
                };
                format!(
                    "M{} {} Q{} {} {} {}",
                    r1(x),
                    r1(ys),
                    r1(x + 24.0),
                    r1((ys + ye) / 2.0),
                    r1(x + 2.0),
                    r1(ye)
                )
            }
            // The donor's history is missing: an arrow from above, named.
            None => format!(
                "M{} {} L{} {}",
                r1(x + 14.0),
                r1(yj - 20.0),
                r1(x + 2.0),
                r1(yj - 14.0)
            ),
        };
        let mut grp = Group::new().set("class", "transfer").add(tip).add(
            Path::new()
                .set("d", path)
                .set("fill", "none")
                .set("stroke", "#444444")
                .set("stroke-width", 1.5)
                .set("marker-end", "url(#arrow)"),
        );
        if t.donor.is_none() {
            grp = grp.add(
                text(x + 16.0, yj - 20.0, format!("from {}", t.donor_pid)).set("font-size", 9),
            );
        }
        out = out.add(grp);
    }
    out
}

/// Red rings on the sends and deliveries of messages the checker named.
fn flagged(model: &Model, marks: &[Mark], flags: &Flags, g: &Geometry) -> Group {
    let mut out = Group::new().set("class", "violations");
    let mut seen = HashSet::new();
    for m in marks {
        if !seen.insert((m.lane, m.t, m.msg, m.kind == Kind::Send)) {
            continue;
        }
        let gs = flags
            .msgs
            .get(&m.msg)
            .map(|g| g.join(" "))
            .unwrap_or_default();
        let y = g.y(m.lane) + if m.kind == Kind::Send { -8.0 } else { 6.0 };
        out = out.add(
            Group::new()
                .set("class", "violation")
                .set("data-guarantee", gs.clone())
                .set("data-msg", m.msg.to_string())
                .add(mark_shape(model, m, g, RED, 1.3))
                .add(
                    Circle::new()
                        .set("cx", g.x(m.t))
                        .set("cy", r1(y))
                        .set("r", 7)
                        .set("fill", "none")
                        .set("stroke", RED)
                        .set("stroke-width", 2)
                        .add(Title::new(format!("{}: violates {gs}", m.msg))),
                ),
        );
    }
    out
}

/// The legend: symbols, senders' colours and the checker's verdict.
fn legend(
    model: &Model,
    marks: &Marks,
    violations: &[Violation],
    opts: &TimelineOptions,
    g: &Geometry,
    top: f64,
) -> (Group, f64) {
    let mut out = Group::new().set("class", "legend");
    let x0 = g.left;
    let mut y = top;
    // Symbols.
    let mut x = x0;
    let sym = |x: f64, label: &str| text(x + 14.0, y + 4.0, label.to_string());
    out = out.add(
        Polygon::new()
            .set(
                "points",
                format!(
                    "{},{} {},{} {},{}",
                    x + 4.0,
                    y - 6.0,
                    x,
                    y + 2.0,
                    x + 8.0,
                    y + 2.0
                ),
            )
            .set("fill", "#555555"),
    );
    out = out.add(sym(x, "send"));
    x += 70.0;
    out = out.add(
        Polygon::new()
            .set(
                "points",
                format!(
                    "{},{} {},{} {},{} {},{}",
                    x + 4.0,
                    y - 4.0,
                    x + 8.0,
                    y,
                    x + 4.0,
                    y + 4.0,
                    x,
                    y
                ),
            )
            .set("fill", "#555555"),
    );
    out = out.add(sym(
        x,
        if marks.bins.is_some() {
            "delivery (binned: columns)"
        } else {
            "delivery"
        },
    ));
    x += if marks.bins.is_some() { 190.0 } else { 90.0 };
    out = out
        .add(
            Rectangle::new()
                .set("x", x)
                .set("y", y - 7.0)
                .set("width", 10)
                .set("height", 14)
                .set("fill", VIEW_FILL[0]),
        )
        .add(
            Line::new()
                .set("x1", x)
                .set("y1", y - 8.0)
                .set("x2", x)
                .set("y2", y + 8.0)
                .set("stroke", "#333333")
                .set("stroke-width", 2),
        )
        .add(sym(x, "view installed (colour = view)"));
    x += 220.0;
    out = out
        .add(
            Rectangle::new()
                .set("x", x)
                .set("y", y - 7.0)
                .set("width", 10)
                .set("height", 14)
                .set("fill", "url(#hatch)"),
        )
        .add(sym(x, "blocked (minority)"));
    x += 140.0;
    out = out
        .add(cross(Group::new(), x + 5.0, y))
        .add(sym(x + 4.0, "crash"));
    x += 66.0;
    out = out
        .add(
            Path::new()
                .set(
                    "d",
                    format!(
                        "M{} {} Q{} {} {} {}",
                        x,
                        y - 8.0,
                        x + 14.0,
                        y,
                        x + 2.0,
                        y + 8.0
                    ),
                )
                .set("fill", "none")
                .set("stroke", "#444444")
                .set("stroke-width", 1.5)
                .set("marker-end", "url(#arrow)"),
        )
        .add(sym(x + 4.0, "state transfer (donor to joiner)"));
    let _ = x;
    // Senders.
    y += 22.0;
    let mut x = x0;
    out = out.add(text(x, y + 4.0, "sender:"));
    x += 52.0;
    for (i, node) in model.nodes.iter().enumerate().take(40) {
        out = out
            .add(
                Rectangle::new()
                    .set("x", x)
                    .set("y", y - 5.0)
                    .set("width", 10)
                    .set("height", 10)
                    .set("fill", SENDER[i % SENDER.len()]),
            )
            .add(text(x + 13.0, y + 4.0, format!("n{}", node.0)));
        x += 50.0;
        if x > g.width - 60.0 {
            break;
        }
    }
    // The checker's verdict.
    y += 24.0;
    match (&opts.check, violations.is_empty()) {
        (None, true) => {
            out = out.add(text(x0, y + 4.0, "not checked").set("fill", "#555555"));
        }
        (_, true) => {
            out = out.add(
                text(
                    x0,
                    y + 4.0,
                    "checker: no violation of the virtual synchrony guarantees",
                )
                .set("fill", "#2ca02c")
                .set("font-weight", "bold"),
            );
        }
        (_, false) => {
            let mut names: Vec<&str> = violations.iter().map(|v| v.guarantee.name()).collect();
            names.dedup();
            let mut uniq: Vec<&str> = Vec::new();
            for n in names {
                if !uniq.contains(&n) {
                    uniq.push(n);
                }
            }
            out = out.add(
                text(
                    x0,
                    y + 4.0,
                    format!(
                        "checker: {} violation(s), guarantee(s) failed: {} (marked in red)",
                        violations.len(),
                        uniq.join(", ")
                    ),
                )
                .set("class", "verdict")
                .set("fill", RED)
                .set("font-weight", "bold"),
            );
            for v in violations.iter().take(MAX_LISTED) {
                y += 16.0;
                let mut line = format!("{}: {}", v.guarantee.name(), v.detail);
                if line.chars().count() > 170 {
                    line = line.chars().take(167).collect::<String>() + "...";
                }
                out = out.add(
                    text(x0 + 10.0, y + 4.0, line)
                        .set("fill", RED)
                        .set("font-size", 10),
                );
            }
            if violations.len() > MAX_LISTED {
                y += 16.0;
                out = out.add(
                    text(
                        x0 + 10.0,
                        y + 4.0,
                        format!("and {} more", violations.len() - MAX_LISTED),
                    )
                    .set("fill", RED)
                    .set("font-size", 10),
                );
            }
        }
    }
    (out, y + 8.0 - top)
}
