//! The checker of the virtual synchrony guarantees.
//!
//! The checker reads the [`History`] of every process incarnation of a run
//! (simulated or real) and reports every [`Violation`] of the guarantees the
//! protocol promises: view agreement, same set, sender in view, forced
//! removal, total order, safe (uniform) delivery, integrity, and, when asked
//! for, liveness and the primary-component rule.
//!
//! Terms used below. A process's *installed views* are its `Install` events
//! in order; "p installs V and a successor of V" means p has an `Install` of
//! V followed later by another `Install` (its successor of V). A process is
//! *live at the end* if it has no `Crash`, `Removed` or `Left` event. A
//! delivery is *in* the view named by its `Deliver::view` field.
//!
//! The checker never panics, whatever the histories hold, and each check
//! reports at most [`MAX_VIOLATIONS_PER_CHECK`] violations, so that a badly
//! broken run does not produce megabytes of output. Its output is
//! deterministic: the same histories always give the same violations, in the
//! same order.

use crate::delivery::Delivery;
use crate::history::{Event, History};
use crate::id::{MsgId, Pid, View, ViewId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, non-cryptographic hasher (the "Fx" hash of rustc) for the
/// checker's internal maps: keys are ids from the histories, hashing them
/// with SipHash dominated the checker's run time.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            for (d, s) in buf.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.add(u64::from_le_bytes(buf));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<FxHasher>>;

/// The most violations any single check function reports.
pub const MAX_VIOLATIONS_PER_CHECK: usize = 20;

/// Which membership policy the run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Only a component holding a quorum of the previous view may install
    /// the next view: views form a single line, with no forks.
    PrimaryComponent,
    /// Concurrent partitions may each install their own views: a view may
    /// have several successors.
    Partitionable,
}

/// What [`check_all`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// The membership policy of the run.
    pub policy: Policy,
    /// Whether to check liveness (and the strict form of forced removal).
    /// Only meaningful when the run ended with a quiet, healed period.
    pub liveness: bool,
}

impl Default for CheckOptions {
    /// Primary-component policy, no liveness.
    fn default() -> Self {
        CheckOptions {
            policy: Policy::PrimaryComponent,
            liveness: false,
        }
    }
}

/// A guarantee of virtual synchrony that a run may violate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// All processes agree on each view's members and on the order of views
    /// (and, under the primary-component policy, on each view's successor).
    ViewAgreement,
    /// Processes that install a view and a successor of it delivered the
    /// same set of messages in the view.
    SameSet,
    /// A message is delivered only in the view it was sent in, and only if
    /// its sender is a member of that view.
    SenderInView,
    /// A process is told it was removed exactly when it was left out of a
    /// successor of its last view.
    ForcedRemoval,
    /// Total and safe deliveries in a view follow one total order, the same
    /// at every process (crashed ones included), and no process skips a
    /// position at which another delivered one.
    TotalOrder,
    /// A safe message delivered by any process in a view (even one that
    /// crashed) is delivered by every process that installs the view and a
    /// successor.
    SafeDelivery,
    /// A sender's FIFO and causal messages are delivered in the order sent,
    /// without gaps, at every process.
    FifoOrder,
    /// A causal message is delivered only after every FIFO or causal
    /// message its sender had delivered in the view before sending it.
    CausalOrder,
    /// No duplicate or invented deliveries; a correct sender delivers its
    /// own messages; deliveries and sends happen in the installed view.
    Integrity,
    /// After a quiet, healed period, the live processes share one final
    /// view, deliver everything sent in it, and are not blocked.
    Liveness,
    /// Every view (after a process's first) holds a quorum of the previous
    /// view.
    PrimaryComponent,
    /// Partitionable policy: a process whose side lost a merge names as the
    /// split a view it installed that a process of the winning view also
    /// installed, and none of its later views was installed by one.
    MergeReport,
}

impl Guarantee {
    /// A short, stable, `snake_case` name (the same as its serde name).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::ViewAgreement => "view_agreement",
            Guarantee::SameSet => "same_set",
            Guarantee::SenderInView => "sender_in_view",
            Guarantee::ForcedRemoval => "forced_removal",
            Guarantee::TotalOrder => "total_order",
            Guarantee::SafeDelivery => "safe_delivery",
            Guarantee::FifoOrder => "fifo_order",
            Guarantee::CausalOrder => "causal_order",
            Guarantee::Integrity => "integrity",
            Guarantee::Liveness => "liveness",
            Guarantee::PrimaryComponent => "primary_component",
            Guarantee::MergeReport => "merge_report",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One violation of a guarantee found in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The guarantee violated.
    pub guarantee: Guarantee,
    /// A human-readable account of what went wrong.
    pub detail: String,
    /// The processes involved.
    pub pids: Vec<Pid>,
    /// The view involved, if one.
    pub view: Option<ViewId>,
    /// The message involved, if one.
    pub msg: Option<MsgId>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.guarantee, self.detail)
    }
}

/// Runs every check that `opts` asks for and returns all violations found.
///
/// Liveness is checked only if `opts.liveness` (which also makes the forced
/// removal check strict); the primary-component rule only under
/// [`Policy::PrimaryComponent`].
#[must_use]
pub fn check_all(histories: &[History], opts: &CheckOptions) -> Vec<Violation> {
    let a = Analysis::new(histories);
    let mut out = Vec::new();
    out.extend(view_agreement(&a, opts.policy));
    out.extend(same_set(&a, opts.policy));
    out.extend(sender_in_view(&a));
    out.extend(forced_removal(&a, opts.liveness));
    out.extend(total_order(&a, opts.policy));
    out.extend(safe_delivery(&a, opts.policy));
    out.extend(fifo_and_causal_order(&a));
    out.extend(integrity(&a));
    if opts.liveness {
        out.extend(liveness(&a));
    }
    match opts.policy {
        Policy::PrimaryComponent => out.extend(primary_component(&a)),
        Policy::Partitionable => out.extend(merge_report(&a)),
    }
    out
}

/// View agreement: every install of a view has the same members everywhere;
/// any two processes install their common views in the same relative order;
/// no process installs a view it is not a member of, or the same view twice,
/// and epochs strictly increase along each process's installs. Under
/// [`Policy::PrimaryComponent`] also: all processes that installed a
/// successor of a view installed the same successor (no fork).
#[must_use]
pub fn check_view_agreement(h: &[History], policy: Policy) -> Vec<Violation> {
    view_agreement(&Analysis::new(h), policy)
}

/// FIFO and causal order: every process delivers each sender's FIFO and
/// causal messages of a view in the order sent, without skipping one the
/// sender sent before; and delivers a causal message only after each
/// FIFO/causal message its sender had delivered in the view before sending
/// it (happened-before, read from the sender's history).
#[must_use]
pub fn check_fifo_and_causal_order(h: &[History]) -> Vec<Violation> {
    fifo_and_causal_order(&Analysis::new(h))
}

/// Same set: for each view, the processes that installed it and a successor
/// of it delivered the same set of messages in it. ([`check_all`] under
/// [`Policy::Partitionable`] asks it per side: of the processes that
/// installed the same successor.)
#[must_use]
pub fn check_same_set(h: &[History]) -> Vec<Violation> {
    same_set(&Analysis::new(h), Policy::PrimaryComponent)
}

/// Sender in view: every message delivered in view V was sent in V
/// (`msg.view == V`) by a member of V.
#[must_use]
pub fn check_sender_in_view(h: &[History]) -> Vec<Violation> {
    sender_in_view(&Analysis::new(h))
}

/// Forced removal: a `Removed { view }` event names the last view the
/// process installed, and is not a false notice (when some process
/// installed a successor of `view`, at least one such successor leaves the
/// process out).
///
/// When `strict` (use it only after a quiet, healed end of run, as for
/// liveness), also: a process live at the end whose last view has a
/// successor (installed by anyone) that leaves it out must have learned it
/// was removed.
#[must_use]
pub fn check_forced_removal(h: &[History], strict: bool) -> Vec<Violation> {
    forced_removal(&Analysis::new(h), strict)
}

/// Total order: in each view, each process delivers positions 1, 2, 3, ...
/// without gaps; the same position holds the same message at every process
/// (crashed ones included), and a message never appears at two positions.
/// ([`check_all`] under [`Policy::Partitionable`] asks it per side: each
/// side's flush may order the end of the view its own way.)
#[must_use]
pub fn check_total_order(h: &[History]) -> Vec<Violation> {
    total_order(&Analysis::new(h), Policy::PrimaryComponent)
}

/// Safe (uniform) delivery: a message delivered in view V by any process,
/// even one that later crashed or was removed, is delivered in V by every
/// process that installed V and a successor of V. ([`check_all`] under
/// [`Policy::Partitionable`] asks it per side: of the processes that
/// installed the same successor.)
#[must_use]
pub fn check_safe_delivery(h: &[History]) -> Vec<Violation> {
    safe_delivery(&Analysis::new(h), Policy::PrimaryComponent)
}

/// Integrity: no process delivers a message twice; every delivered message
/// was sent (when its sender's history is present); a sender that installed
/// a successor of the view it sent in delivered its own message; deliveries
/// and sends happen in the view most recently installed, and a process only
/// records sends of its own messages.
#[must_use]
pub fn check_integrity(h: &[History]) -> Vec<Violation> {
    integrity(&Analysis::new(h))
}

/// Liveness (only meaningful after a quiet, healed end of run): all
/// processes live at the end share the same last view, whose members are
/// exactly the live processes; every message sent in that view is delivered
/// by every live process; no live process is blocked after its last install.
#[must_use]
pub fn check_liveness(h: &[History]) -> Vec<Violation> {
    liveness(&Analysis::new(h))
}

/// Merge report (partitionable policy): a `Diverged { view, split, winner }`
/// event names the process's last view; and a split it names is a view the
/// process installed that some process that installed the winning view
/// also installed (their histories really share it), while none of the
/// process's views after the split was installed by such a process (it is
/// the last one they share). A split of `None` (not known) passes; a loss
/// to a view some of whose members' histories are missing is not judged.
#[must_use]
pub fn check_merge_report(h: &[History]) -> Vec<Violation> {
    merge_report(&Analysis::new(h))
}

/// Primary component: whenever a process installs V right after P, V holds
/// a quorum of P (counting as present the members of P that are in V and
/// those that left the group cleanly from P).
#[must_use]
pub fn check_primary_component(h: &[History]) -> Vec<Violation> {
    primary_component(&Analysis::new(h))
}

// ---------------------------------------------------------------------------
// Analysis: one pass over the histories, shared by all checks.

/// A delivery (borrowed from its record), with the view installed most
/// recently before it.
#[derive(Clone, Copy)]
struct Deliv<'a> {
    t: u64,
    msg: &'a MsgId,
    pos: u64,
    mode: Delivery,
    /// Index in [`Proc::installs`] of the view installed most recently
    /// before the delivery.
    cur: Option<usize>,
}

/// A process's deliveries in one view (by `Deliver::view`), in order.
struct Group<'a> {
    view: ViewId,
    ds: Vec<Deliv<'a>>,
}

impl Group<'_> {
    /// The messages, sorted and deduplicated.
    fn sorted(&self) -> Vec<MsgId> {
        let mut v: Vec<MsgId> = self.ds.iter().map(|d| *d.msg).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether `self`'s message sequence is a prefix of `other`'s.
    fn is_prefix_of(&self, other: &Group<'_>) -> bool {
        self.ds.len() <= other.ds.len()
            && self.ds.iter().zip(&other.ds).all(|(a, b)| a.msg == b.msg)
    }

    fn contains(&self, m: &MsgId) -> bool {
        self.ds.iter().any(|d| d.msg == m)
    }
}

/// A send (borrowed from its record), with the view installed most
/// recently before it.
struct SendRec<'a> {
    t: u64,
    msg: &'a MsgId,
    current: Option<ViewId>,
    mode: Delivery,
    /// For a causal send: per sender, the highest seq of its FIFO or
    /// causal messages this process had delivered in the send's view
    /// before sending (its vector timestamp).
    vt: Vec<(Pid, u64)>,
}

/// What one process incarnation did, digested.
struct Proc<'a> {
    pid: Pid,
    /// Installed views, in order (duplicates kept).
    installs: Vec<&'a View>,
    /// Index in `installs` of the first install of each view.
    install_index: HashMap<ViewId, usize>,
    /// Deliveries grouped by `Deliver::view`, groups in order of first
    /// delivery.
    groups: Vec<Group<'a>>,
    /// Index in `groups` of each view's group.
    group_index: HashMap<ViewId, usize>,
    sends: Vec<SendRec<'a>>,
    /// `Removed` events: time and view.
    removed: Vec<(u64, ViewId)>,
    /// Views named by `Left` events.
    left: Vec<ViewId>,
    /// When the process left or was removed (record times).
    ended_at: Vec<u64>,
    /// `Diverged` events: its view, the split it named, the winner.
    diverged: Vec<(ViewId, Option<ViewId>, ViewId)>,
    crashed: bool,
    /// A `Blocked` event after the last `Install` (or with no install): its
    /// time and view.
    blocked_at_end: Option<(u64, ViewId)>,
}

impl<'a> Proc<'a> {
    fn new(pid: Pid, h: &'a History) -> Self {
        let mut p = Proc {
            pid,
            installs: Vec::new(),
            install_index: HashMap::default(),
            groups: Vec::new(),
            group_index: HashMap::default(),
            sends: Vec::new(),
            removed: Vec::new(),
            left: Vec::new(),
            ended_at: Vec::new(),
            diverged: Vec::new(),
            crashed: false,
            blocked_at_end: None,
        };
        let mut cur: Option<usize> = None;
        // FIFO/causal deliveries so far, per view and sender (for the
        // vector timestamps of causal sends).
        let mut vt: HashMap<ViewId, BTreeMap<Pid, u64>> = HashMap::default();
        // The group of the last delivery: consecutive deliveries are almost
        // always in the same view.
        let mut last_group: Option<usize> = None;
        for r in &h.records {
            match &r.event {
                Event::Start => {}
                Event::Install { view, .. } => {
                    let i = p.installs.len();
                    p.install_index.entry(view.id).or_insert(i);
                    p.installs.push(view);
                    cur = Some(i);
                    p.blocked_at_end = None;
                }
                Event::Send { msg, mode } => {
                    let current = cur.and_then(|i| p.installs.get(i)).map(|v| v.id);
                    let vt = match mode {
                        Delivery::Causal => vt
                            .get(&msg.view)
                            .map(|m| m.iter().map(|(k, q)| (*k, *q)).collect())
                            .unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    p.sends.push(SendRec {
                        t: r.t,
                        msg,
                        current,
                        mode: *mode,
                        vt,
                    });
                }
                Event::Deliver {
                    msg,
                    view,
                    pos,
                    mode,
                } => {
                    if !mode.is_ordered() && msg.sender != pid {
                        let e = vt.entry(*view).or_default().entry(msg.sender).or_insert(0);
                        *e = (*e).max(msg.seq);
                    }
                    let d = Deliv {
                        t: r.t,
                        msg,
                        pos: *pos,
                        mode: *mode,
                        cur,
                    };
                    let gi = match last_group {
                        Some(gi) if p.groups.get(gi).is_some_and(|g| g.view == *view) => gi,
                        _ => {
                            let n = p.groups.len();
                            let gi = *p.group_index.entry(*view).or_insert(n);
                            if gi == n {
                                p.groups.push(Group {
                                    view: *view,
                                    ds: Vec::new(),
                                });
                            }
                            gi
                        }
                    };
                    if let Some(g) = p.groups.get_mut(gi) {
                        g.ds.push(d);
                    }
                    last_group = Some(gi);
                }
                Event::Blocked { view } => p.blocked_at_end = Some((r.t, *view)),
                Event::Removed { view } => {
                    p.removed.push((r.t, *view));
                    p.ended_at.push(r.t);
                }
                Event::Left { view } => {
                    p.left.push(*view);
                    p.ended_at.push(r.t);
                }
                Event::Crash => p.crashed = true,
                // A `Removed` record follows.
                Event::Diverged {
                    view,
                    split,
                    winner,
                } => p.diverged.push((*view, *split, *winner)),
            }
        }
        p
    }

    /// No `Crash`, `Removed` or `Left` event.
    fn live(&self) -> bool {
        !self.crashed && self.removed.is_empty() && self.left.is_empty()
    }

    /// The view this process installed right after (its first install of)
    /// `v`, if it installed `v` and a later view.
    fn succ(&self, v: ViewId) -> Option<&'a View> {
        let i = *self.install_index.get(&v)?;
        self.installs.get(i.checked_add(1)?).copied()
    }

    fn last_view(&self) -> Option<&'a View> {
        self.installs.last().copied()
    }

    /// Its deliveries in view `v`, if any.
    fn group(&self, v: ViewId) -> Option<&Group<'a>> {
        self.groups.get(*self.group_index.get(&v)?)
    }
}

/// A view and, under the partitionable policy, the successor a process
/// installed after it (`None`: no successor, or the primary-component
/// policy, under which a view has one successor at most).
type Side = (ViewId, Option<ViewId>);

/// The side of `p` in view `v`: under [`Policy::Partitionable`] the
/// guarantees of a view bind the processes that go on to the same next
/// view (each side of a partition ends the view on its own).
fn side_of(p: &Proc<'_>, v: ViewId, policy: Policy) -> Option<ViewId> {
    match policy {
        Policy::Partitionable => p.succ(v).map(|w| w.id),
        Policy::PrimaryComponent => None,
    }
}

struct Analysis<'a> {
    procs: Vec<Proc<'a>>,
    /// Each installed view as first seen (in history order), with the
    /// process that installed it.
    views: BTreeMap<ViewId, (&'a View, Pid)>,
}

impl<'a> Analysis<'a> {
    fn new(histories: &'a [History]) -> Self {
        let mut procs = Vec::with_capacity(histories.len());
        let mut views: BTreeMap<ViewId, (&'a View, Pid)> = BTreeMap::new();
        for h in histories {
            let Some(pid) = h.pid.or_else(|| h.records.first().map(|r| r.pid)) else {
                continue;
            };
            let p = Proc::new(pid, h);
            for v in &p.installs {
                views.entry(v.id).or_insert((*v, pid));
            }
            procs.push(p);
        }
        Analysis { procs, views }
    }

    /// For each view and side ([`side_of`]), the processes that installed
    /// the view and a successor of it, in history order.
    fn survivors(&self, policy: Policy) -> BTreeMap<Side, Vec<&Proc<'a>>> {
        let mut m: BTreeMap<Side, Vec<&Proc<'a>>> = BTreeMap::new();
        for p in &self.procs {
            // Each process pushes at most once per view, and processes are
            // visited in order: each list is in history order.
            for (&v, &i) in &p.install_index {
                if i.checked_add(1).is_some_and(|j| j < p.installs.len()) {
                    m.entry((v, side_of(p, v, policy))).or_default().push(p);
                }
            }
        }
        m
    }

    /// For each view, the distinct views any process installed right after
    /// it, in first-seen order.
    fn successors(&self) -> BTreeMap<ViewId, Vec<&'a View>> {
        let mut m: BTreeMap<ViewId, Vec<&'a View>> = BTreeMap::new();
        for p in &self.procs {
            for w in p.installs.windows(2) {
                if let [prev, next] = w {
                    let e = m.entry(prev.id).or_default();
                    if !e.iter().any(|s| s.id == next.id) {
                        e.push(next);
                    }
                }
            }
        }
        m
    }
}

/// Collects violations of one guarantee, up to the cap.
struct Out {
    g: Guarantee,
    v: Vec<Violation>,
}

impl Out {
    fn new(g: Guarantee) -> Self {
        Out { g, v: Vec::new() }
    }

    fn full(&self) -> bool {
        self.v.len() >= MAX_VIOLATIONS_PER_CHECK
    }

    fn push(&mut self, detail: String, pids: Vec<Pid>, view: Option<ViewId>, msg: Option<MsgId>) {
        if !self.full() {
            self.v.push(Violation {
                guarantee: self.g,
                detail,
                pids,
                view,
                msg,
            });
        }
    }
}

fn fmt_opt_view(v: Option<ViewId>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn fmt_pids(ps: &[Pid]) -> String {
    let s: Vec<String> = ps.iter().map(ToString::to_string).collect();
    format!("[{}]", s.join(" "))
}

// ---------------------------------------------------------------------------
// The checks.

fn view_agreement(a: &Analysis<'_>, policy: Policy) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::ViewAgreement);

    // (a) Same members everywhere.
    for p in &a.procs {
        for v in &p.installs {
            if let Some((def, q)) = a.views.get(&v.id)
                && def.members != v.members
            {
                out.push(
                    format!(
                        "{} installed {} but {} installed it with members {}",
                        p.pid,
                        v,
                        q,
                        fmt_pids(&def.members)
                    ),
                    vec![p.pid, *q],
                    Some(v.id),
                    None,
                );
            }
        }
    }

    // (d) Membership, no duplicates, increasing epochs.
    let mut non_monotone = vec![false; a.procs.len()];
    for (p, flag) in a.procs.iter().zip(non_monotone.iter_mut()) {
        let mut seen: HashSet<ViewId> = HashSet::default();
        let mut prev: Option<ViewId> = None;
        for v in &p.installs {
            if !v.contains(p.pid) {
                out.push(
                    format!("{} installed {} which does not contain it", p.pid, v),
                    vec![p.pid],
                    Some(v.id),
                    None,
                );
            }
            if !seen.insert(v.id) {
                *flag = true;
                out.push(
                    format!("{} installed {} twice", p.pid, v.id),
                    vec![p.pid],
                    Some(v.id),
                    None,
                );
            } else if let Some(pv) = prev
                && v.id.epoch <= pv.epoch
            {
                *flag = true;
                out.push(
                    format!(
                        "{} installed {} after {}: epoch did not increase",
                        p.pid, v.id, pv
                    ),
                    vec![p.pid],
                    Some(v.id),
                    None,
                );
            }
            prev = Some(v.id);
        }
    }

    // (b) Same relative order of common views. When both processes install
    // views with strictly increasing epochs, their common views are in epoch
    // order at both, so only pairs involving a non-monotone process need the
    // (quadratic) comparison.
    if non_monotone.iter().any(|&b| b) {
        for (i, (p, &pm)) in a.procs.iter().zip(non_monotone.iter()).enumerate() {
            for (q, &qm) in a
                .procs
                .iter()
                .zip(non_monotone.iter())
                .skip(i.saturating_add(1))
            {
                if !(pm || qm) || out.full() {
                    continue;
                }
                let mut last: Option<(usize, ViewId)> = None;
                for (k, v) in p.installs.iter().enumerate() {
                    // Only the first install of each view at p.
                    if p.install_index.get(&v.id) != Some(&k) {
                        continue;
                    }
                    let Some(&j) = q.install_index.get(&v.id) else {
                        continue;
                    };
                    if let Some((lj, lv)) = last
                        && j < lj
                    {
                        out.push(
                            format!(
                                "{} installed {} before {}, but {} installed them in the other order",
                                p.pid, lv, v.id, q.pid
                            ),
                            vec![p.pid, q.pid],
                            Some(v.id),
                            None,
                        );
                        break;
                    }
                    last = Some((j, v.id));
                }
            }
        }
    }

    // (c) No fork under the primary-component policy.
    if policy == Policy::PrimaryComponent {
        let mut first_succ: HashMap<ViewId, (ViewId, Pid)> = HashMap::default();
        let mut reported: HashSet<ViewId> = HashSet::default();
        for p in &a.procs {
            for w in p.installs.windows(2) {
                let [prev, next] = w else { continue };
                match first_succ.get(&prev.id) {
                    None => {
                        first_succ.insert(prev.id, (next.id, p.pid));
                    }
                    Some(&(s, q)) if s != next.id && reported.insert(prev.id) => {
                        out.push(
                            format!(
                                "fork after {}: {} installed {} but {} installed {}",
                                prev.id, q, s, p.pid, next.id
                            ),
                            vec![q, p.pid],
                            Some(prev.id),
                            None,
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    out.v
}

/// The smallest message in exactly one of two sorted, deduplicated lists,
/// and whether it is in `a`.
fn first_difference(a: &[MsgId], b: &[MsgId]) -> Option<(MsgId, bool)> {
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Equal => {
                    i = i.saturating_add(1);
                    j = j.saturating_add(1);
                }
                std::cmp::Ordering::Less => return Some((*x, true)),
                std::cmp::Ordering::Greater => return Some((*y, false)),
            },
            (Some(x), None) => return Some((*x, true)),
            (None, Some(y)) => return Some((*y, false)),
            (None, None) => return None,
        }
    }
}

/// The messages of sorted, deduplicated `a` that are not in sorted `b`.
fn sorted_minus<'x>(a: &'x [MsgId], b: &'x [MsgId]) -> impl Iterator<Item = &'x MsgId> {
    a.iter().filter(move |m| b.binary_search(m).is_err())
}

fn same_set(a: &Analysis<'_>, policy: Policy) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::SameSet);
    let empty = Group {
        view: ViewId {
            epoch: 0,
            installer: Pid::new(0, 0),
        },
        ds: Vec::new(),
    };
    for ((v, side), procs) in a.survivors(policy) {
        let Some((first, rest)) = procs.split_first() else {
            continue;
        };
        let ref_group = first.group(v).unwrap_or(&empty);
        let mut ref_sorted: Option<Vec<MsgId>> = None;
        for p in rest {
            if out.full() {
                return out.v;
            }
            let g = p.group(v).unwrap_or(&empty);
            // Fast path: the same sequence (the normal case, by total order).
            if g.ds.len() == ref_group.ds.len() && g.is_prefix_of(ref_group) {
                continue;
            }
            let rs = ref_sorted.get_or_insert_with(|| ref_group.sorted());
            if let Some((m, in_ref)) = first_difference(rs, &g.sorted()) {
                let (has, lacks) = if in_ref {
                    (first.pid, p.pid)
                } else {
                    (p.pid, first.pid)
                };
                let next = side.map_or_else(|| "a successor".to_string(), |s| format!("then {s}"));
                out.push(
                    format!("{has} delivered {m} in {v} but {lacks} did not; both installed {v} and {next}"),
                    vec![has, lacks],
                    Some(v),
                    Some(m),
                );
            }
        }
    }
    out.v
}

fn sender_in_view(a: &Analysis<'_>) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::SenderInView);
    for p in &a.procs {
        for g in &p.groups {
            let def = a.views.get(&g.view).map(|(v, _)| *v);
            for d in &g.ds {
                if out.full() {
                    return out.v;
                }
                if d.msg.view != g.view {
                    out.push(
                        format!(
                            "{} delivered {} (sent in {}) in view {} at t={}",
                            p.pid, d.msg, d.msg.view, g.view, d.t
                        ),
                        vec![p.pid, d.msg.sender],
                        Some(g.view),
                        Some(*d.msg),
                    );
                } else if let Some(def) = def
                    && !def.contains(d.msg.sender)
                {
                    out.push(
                        format!(
                            "{} delivered {} in {} whose sender {} is not a member of it",
                            p.pid, d.msg, def, d.msg.sender
                        ),
                        vec![p.pid, d.msg.sender],
                        Some(g.view),
                        Some(*d.msg),
                    );
                }
            }
        }
    }
    out.v
}

fn forced_removal(a: &Analysis<'_>, strict: bool) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::ForcedRemoval);
    let successors = a.successors();
    for p in &a.procs {
        for &(t, rv) in &p.removed {
            let last = p.last_view().map(|v| v.id);
            if last != Some(rv) {
                out.push(
                    format!(
                        "{} was told at t={} it was removed after {} but its last installed view is {}",
                        p.pid,
                        t,
                        rv,
                        fmt_opt_view(last)
                    ),
                    vec![p.pid],
                    Some(rv),
                    None,
                );
            }
            // A process may miss the install of the next view (cut off after
            // accepting it) and be removed from the one after: the notice is
            // false only if every later view anyone installed contains it.
            let later: Vec<&View> = a
                .procs
                .iter()
                .flat_map(|q| q.installs.iter().copied())
                .filter(|w| w.id.epoch > rv.epoch)
                .collect();
            if !later.is_empty() && later.iter().all(|w| w.contains(p.pid)) {
                let mut ids: Vec<String> = later.iter().map(|w| w.id.to_string()).collect();
                ids.sort();
                ids.dedup();
                out.push(
                    format!(
                        "{} was told at t={} it was removed after {}, but every later view ({}) contains it",
                        p.pid,
                        t,
                        rv,
                        ids.join(", ")
                    ),
                    vec![p.pid],
                    Some(rv),
                    None,
                );
            }
        }
        if strict && p.live() {
            let Some(last) = p.last_view() else { continue };
            if let Some(w) = successors
                .get(&last.id)
                .and_then(|s| s.iter().find(|w| !w.contains(p.pid)))
            {
                out.push(
                    format!(
                        "{} is live at the end in {}, was left out of its successor {}, and never learned it was removed",
                        p.pid, last.id, w.id
                    ),
                    vec![p.pid, w.id.installer],
                    Some(last.id),
                    None,
                );
            }
        }
    }
    out.v
}

/// A delivery at some position of a view, as first seen.
#[derive(Clone, Copy)]
struct PosEntry {
    msg: MsgId,
    pid: Pid,
    /// A total (not safe) delivery by a process that did not live through
    /// the view: it may have delivered its last total messages in an order
    /// the survivors never learned.
    excused: bool,
}

/// The total order of one view as first seen: position to message, and
/// message to position.
#[derive(Default)]
struct PosTable {
    /// Positions `1..=dense.len()`.
    dense: Vec<PosEntry>,
    /// Any other position (after a gap, or 0). Never holds a position in
    /// `1..=dense.len()`.
    sparse: HashMap<u64, PosEntry>,
    /// The position of each message in the table, with the process that
    /// delivered it there first (index and pid).
    pos_of: HashMap<MsgId, (u64, usize, Pid)>,
}

impl PosTable {
    fn get(&self, pos: u64) -> Option<&PosEntry> {
        pos.checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.dense.get(i))
            .or_else(|| self.sparse.get(&pos))
    }

    /// Records `e` at `pos`, which must not be in the table yet.
    fn insert(&mut self, pos: u64, e: PosEntry) {
        if usize::try_from(pos).is_ok_and(|p| p == self.dense.len().saturating_add(1)) {
            self.dense.push(e);
        } else {
            self.sparse.insert(pos, e);
        }
    }
}

/// Whether `p` lives through view `v`: it installs a successor, or `v` is
/// its last view and it neither crashed, nor was removed, nor left.
fn lives_through(p: &Proc<'_>, v: ViewId) -> bool {
    p.succ(v).is_some() || (p.live() && p.last_view().is_some_and(|l| l.id == v))
}

fn total_order(a: &Analysis<'_>, policy: Policy) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::TotalOrder);
    let mut tables: HashMap<Side, PosTable> = HashMap::default();
    // Processes that live through each view first, so that the tables hold
    // their order wherever they delivered.
    let mut order: Vec<(usize, &Proc<'_>, &Group<'_>, bool, Option<ViewId>)> = Vec::new();
    for (pi, p) in a.procs.iter().enumerate() {
        for g in &p.groups {
            let side = side_of(p, g.view, policy);
            order.push((pi, p, g, lives_through(p, g.view), side));
        }
    }
    order.sort_by_key(|(_, _, _, lives, _)| !*lives);
    for &(pi, p, g, lives, side) in &order {
        {
            let table = tables.entry((g.view, side)).or_default();
            let mut prev = 0u64;
            let mut gap_reported = false;
            // Total and safe messages only: FIFO and causal ones have no
            // position (their positions are the gaps between these).
            for d in g.ds.iter().filter(|d| d.mode.is_ordered()) {
                if out.full() {
                    return out.v;
                }
                if d.pos <= prev && !gap_reported {
                    gap_reported = true;
                    out.push(
                        format!(
                            "{} delivered {} at position {} of {} (t={}), after position {}",
                            p.pid, d.msg, d.pos, g.view, d.t, prev
                        ),
                        vec![p.pid],
                        Some(g.view),
                        Some(*d.msg),
                    );
                }
                prev = prev.max(d.pos);

                // Under the partitionable policy a process that does not
                // live through the view may have delivered the tail of a
                // flush on a side no one else went on with (a lone member
                // that left, say): its order binds no one.
                let excused =
                    !lives && (d.mode == Delivery::Total || policy == Policy::Partitionable);
                if let Some(e) = table.get(d.pos) {
                    if e.msg != *d.msg && !e.excused && !excused {
                        out.push(
                            format!(
                                "position {} of {}: {} delivered {} but {} delivered {}",
                                d.pos, g.view, e.pid, e.msg, p.pid, d.msg
                            ),
                            vec![e.pid, p.pid],
                            Some(g.view),
                            Some(*d.msg),
                        );
                    }
                    continue;
                }
                // A new position of the view. (Only new positions need the
                // message-to-position check: a process that delivers a
                // message at a known position either agrees with the table
                // or is reported above.)
                let e = PosEntry {
                    msg: *d.msg,
                    pid: p.pid,
                    excused,
                };
                table.insert(d.pos, e);
                match table.pos_of.get(d.msg) {
                    None => {
                        table.pos_of.insert(*d.msg, (d.pos, pi, p.pid));
                    }
                    Some(_) if excused => {}
                    // The same process delivering a message twice is an
                    // integrity violation; here only disagreements between
                    // processes.
                    Some(&(k, qi, q)) if qi != pi => {
                        out.push(
                            format!(
                                "{} in {}: {} delivered it at position {} but {} at position {}",
                                d.msg, g.view, q, k, p.pid, d.pos
                            ),
                            vec![q, p.pid],
                            Some(g.view),
                            Some(*d.msg),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }
    // No process that lives through a view skips a position at which
    // another delivered a total or safe message (before its own last
    // ordered delivery).
    for p in &a.procs {
        for g in &p.groups {
            if !lives_through(p, g.view) {
                continue;
            }
            let Some(table) = tables.get(&(g.view, side_of(p, g.view, policy))) else {
                continue;
            };
            let mut prev = 0u64;
            for d in g.ds.iter().filter(|d| d.mode.is_ordered()) {
                if out.full() {
                    return out.v;
                }
                let skipped = (prev.saturating_add(1)..d.pos)
                    .take(1 << 16)
                    .find_map(|q| table.get(q).filter(|e| !e.excused).map(|e| (q, e)));
                if let Some((q, e)) = skipped {
                    out.push(
                        format!(
                            "{} skipped position {} of {} ({} delivered {} there) before delivering {} at {}",
                            p.pid, q, g.view, e.pid, e.msg, d.msg, d.pos
                        ),
                        vec![p.pid, e.pid],
                        Some(g.view),
                        Some(e.msg),
                    );
                    break;
                }
                prev = prev.max(d.pos);
            }
        }
    }
    out.v
}

fn safe_delivery(a: &Analysis<'_>, policy: Policy) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::SafeDelivery);
    // Under the partitionable policy, the safe deliveries of processes with
    // no successor of the view bind every side, except those made in the
    // step that ended the process (the tail of a flush on a side that no
    // one went on with, like a lone member that left): a message delivered
    // before that was stable, held by every member of the view, so every
    // side's flush delivers it.
    let mut unsided: Vec<(Pid, Group<'_>)> = Vec::new();
    if policy == Policy::Partitionable {
        for p in &a.procs {
            for g in &p.groups {
                if p.succ(g.view).is_some() {
                    continue;
                }
                let ds: Vec<Deliv<'_>> =
                    g.ds.iter()
                        .filter(|d| d.mode == Delivery::Safe && !p.ended_at.contains(&d.t))
                        .copied()
                        .collect();
                if !ds.is_empty() {
                    unsided.push((p.pid, Group { view: g.view, ds }));
                }
            }
        }
    }
    let mut unsided_of: HashMap<ViewId, Vec<(Pid, &Group<'_>)>> = HashMap::default();
    for (pid, g) in &unsided {
        unsided_of.entry(g.view).or_default().push((*pid, g));
    }
    // Every process's deliveries in each view (and side).
    let mut deliverers: HashMap<Side, Vec<(Pid, &Group<'_>)>> = HashMap::default();
    for p in &a.procs {
        for g in &p.groups {
            deliverers
                .entry((g.view, side_of(p, g.view, policy)))
                .or_default()
                .push((p.pid, g));
        }
    }
    let survivors = a.survivors(policy);
    for (v, side) in survivors.keys() {
        if side.is_some()
            && let Some(extra) = unsided_of.get(v)
        {
            deliverers
                .entry((*v, *side))
                .or_default()
                .extend(extra.iter().copied());
        }
    }
    for ((v, side), survivors) in survivors {
        let Some(dl) = deliverers.get(&(v, side)) else {
            continue;
        };
        let Some(longest) = dl
            .iter()
            .map(|(_, g)| *g)
            .reduce(|x, y| if y.ds.len() > x.ds.len() { y } else { x })
        else {
            continue;
        };
        // Fast path (the normal case, by total order): every deliverer's
        // sequence is a prefix of the longest, so a survivor whose sequence
        // is as long as the longest has delivered everything.
        // Only safe messages must reach every survivor of the view: total,
        // FIFO and causal ones may die with a deliverer that crashed.
        let all_safe = dl
            .iter()
            .all(|(_, g)| g.ds.iter().all(|d| d.mode == Delivery::Safe));
        let all_prefixes = all_safe && dl.iter().all(|(_, g)| g.is_prefix_of(longest));
        let mut union: Option<Vec<MsgId>> = None;
        for s in survivors {
            if out.full() {
                return out.v;
            }
            let sg = s.group(v);
            if all_prefixes && sg.map_or(0, |g| g.ds.len()) == longest.ds.len() {
                continue;
            }
            let union = union.get_or_insert_with(|| {
                let mut u: Vec<MsgId> = dl
                    .iter()
                    .flat_map(|(_, g)| {
                        g.ds.iter()
                            .filter(|d| d.mode == Delivery::Safe)
                            .map(|d| *d.msg)
                    })
                    .collect();
                u.sort_unstable();
                u.dedup();
                u
            });
            let s_sorted = sg.map(Group::sorted).unwrap_or_default();
            let mut missing = sorted_minus(union, &s_sorted);
            if let Some(m) = missing.next() {
                let more = missing.count();
                let by = dl
                    .iter()
                    .find(|(_, g)| g.contains(m))
                    .map_or(s.pid, |(q, _)| *q);
                let tail = if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                };
                out.push(
                    format!(
                        "{} delivered {} in {} but {}, which installed {} and a successor, did not{}",
                        by, m, v, s.pid, v, tail
                    ),
                    vec![by, s.pid],
                    Some(v),
                    Some(*m),
                );
            }
        }
    }
    out.v
}

/// Seqs below this are kept in bitmaps by [`MsgSet`]; larger ones (only in
/// odd histories) in a hash set.
const DENSE_SEQ_LIMIT: u64 = 1 << 16;

/// Per sender, a bitmap of seqs (bit `seq % 64` of word `seq / 64`).
type SenderBits = Vec<(Pid, Vec<u64>)>;

/// A set of message ids, fast for their usual shape: per view, a few
/// senders, each with small consecutive seqs (a bitmap per view and
/// sender). Hashing whole [`MsgId`]s per delivery dominated the checker's
/// run time.
#[derive(Default)]
struct MsgSet {
    /// Per view, per sender, a bitmap of seqs.
    views: Vec<(ViewId, SenderBits)>,
    view_index: HashMap<ViewId, usize>,
    /// The view of the last operation (consecutive operations are almost
    /// always about the same view).
    last_view: std::cell::Cell<Option<usize>>,
    /// Messages with seqs from [`DENSE_SEQ_LIMIT`] on.
    other: HashSet<MsgId>,
}

impl MsgSet {
    /// The word index and bit mask of `seq`, if it is kept in a bitmap.
    fn bit(seq: u64) -> Option<(usize, u64)> {
        if seq >= DENSE_SEQ_LIMIT {
            return None;
        }
        Some((usize::try_from(seq / 64).ok()?, 1u64 << (seq % 64)))
    }

    fn find_view(&self, v: ViewId) -> Option<usize> {
        if let Some(i) = self.last_view.get()
            && self.views.get(i).is_some_and(|(id, _)| *id == v)
        {
            return Some(i);
        }
        let i = *self.view_index.get(&v)?;
        self.last_view.set(Some(i));
        Some(i)
    }

    /// Adds `m`; returns whether it was not yet in the set.
    fn insert(&mut self, m: &MsgId) -> bool {
        let Some((word, mask)) = Self::bit(m.seq) else {
            return self.other.insert(*m);
        };
        let vi = match self.find_view(m.view) {
            Some(i) => i,
            None => {
                let i = self.views.len();
                self.views.push((m.view, Vec::new()));
                self.view_index.insert(m.view, i);
                self.last_view.set(Some(i));
                i
            }
        };
        let Some((_, senders)) = self.views.get_mut(vi) else {
            return self.other.insert(*m);
        };
        let si = match senders.iter().position(|(s, _)| *s == m.sender) {
            Some(si) => si,
            None => {
                senders.push((m.sender, Vec::new()));
                senders.len().saturating_sub(1)
            }
        };
        let Some((_, bits)) = senders.get_mut(si) else {
            return self.other.insert(*m);
        };
        if bits.len() <= word {
            bits.resize(word.saturating_add(1), 0);
        }
        match bits.get_mut(word) {
            Some(w) => {
                let new = *w & mask == 0;
                *w |= mask;
                new
            }
            None => self.other.insert(*m),
        }
    }

    fn contains(&self, m: &MsgId) -> bool {
        let Some((word, mask)) = Self::bit(m.seq) else {
            return self.other.contains(m);
        };
        self.find_view(m.view)
            .and_then(|vi| self.views.get(vi))
            .and_then(|(_, senders)| senders.iter().find(|(s, _)| *s == m.sender))
            .and_then(|(_, bits)| bits.get(word))
            .is_some_and(|w| w & mask != 0)
    }
}

fn fifo_and_causal_order(a: &Analysis<'_>) -> Vec<Violation> {
    let mut fifo = Out::new(Guarantee::FifoOrder);
    let mut causal = Out::new(Guarantee::CausalOrder);
    // Per (view, sender): its FIFO/causal sends' seqs, in order; and the
    // vector timestamp of each causal send.
    let mut sent: HashMap<(ViewId, Pid), Vec<u64>> = HashMap::default();
    let mut vts: HashMap<MsgId, &[(Pid, u64)]> = HashMap::default();
    for p in &a.procs {
        for sr in &p.sends {
            if !sr.mode.is_ordered() {
                sent.entry((sr.msg.view, sr.msg.sender))
                    .or_default()
                    .push(sr.msg.seq);
            }
            if sr.mode == Delivery::Causal {
                vts.insert(*sr.msg, &sr.vt);
            }
        }
    }
    for p in &a.procs {
        for g in &p.groups {
            // Index of each FIFO/causal delivery in this view.
            let mut at: HashMap<MsgId, usize> = HashMap::default();
            // Per sender: how many of its FIFO/causal sends were delivered.
            let mut next: HashMap<Pid, usize> = HashMap::default();
            for (i, d) in g.ds.iter().enumerate() {
                if d.mode.is_ordered() {
                    continue;
                }
                at.insert(*d.msg, i);
                let k = next.entry(d.msg.sender).or_insert(0);
                if let Some(seqs) = sent.get(&(g.view, d.msg.sender)) {
                    match seqs.get(*k) {
                        Some(&exp) if exp == d.msg.seq => *k += 1,
                        exp => {
                            let exp = exp.map_or("none".to_string(), |e| format!("seq {e}"));
                            fifo.push(
                                format!(
                                    "{} delivered {} in {} (t={}) but the sender's next FIFO/causal message was {}",
                                    p.pid, d.msg, g.view, d.t, exp
                                ),
                                vec![p.pid, d.msg.sender],
                                Some(g.view),
                                Some(*d.msg),
                            );
                            // Resynchronise after the reported message.
                            *k = seqs
                                .iter()
                                .position(|&q| q == d.msg.seq)
                                .map_or(*k, |x| x + 1);
                        }
                    }
                }
                if d.mode != Delivery::Causal {
                    continue;
                }
                let Some(vt) = vts.get(d.msg) else { continue };
                for &(sender, seq) in vt.iter() {
                    let dep = MsgId {
                        view: g.view,
                        sender,
                        seq,
                    };
                    if at.get(&dep).is_none_or(|&j| j >= i) {
                        causal.push(
                            format!(
                                "{} delivered {} in {} (t={}) before {}, which its sender had delivered before sending it",
                                p.pid, d.msg, g.view, d.t, dep
                            ),
                            vec![p.pid, d.msg.sender],
                            Some(g.view),
                            Some(*d.msg),
                        );
                        break;
                    }
                }
            }
        }
    }
    let mut out = fifo.v;
    out.extend(causal.v);
    out
}

fn integrity(a: &Analysis<'_>) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::Integrity);
    // Every message some process recorded sending as its own.
    let mut sent = MsgSet::default();
    let mut present: HashSet<Pid> = HashSet::default();
    for p in &a.procs {
        present.insert(p.pid);
        for s in p.sends.iter().filter(|s| s.msg.sender == p.pid) {
            sent.insert(s.msg);
        }
    }
    for p in &a.procs {
        let mut proper = MsgSet::default();
        let mut foreign: HashSet<MsgId> = HashSet::default();
        for g in &p.groups {
            for d in &g.ds {
                if out.full() {
                    return out.v;
                }
                let dup = if d.msg.view == g.view {
                    !proper.insert(d.msg) || (!foreign.is_empty() && foreign.contains(d.msg))
                } else {
                    !foreign.insert(*d.msg) || proper.contains(d.msg)
                };
                if dup {
                    out.push(
                        format!(
                            "{} delivered {} twice (again at t={} in {})",
                            p.pid, d.msg, d.t, g.view
                        ),
                        vec![p.pid],
                        Some(g.view),
                        Some(*d.msg),
                    );
                }
                if !sent.contains(d.msg) && present.contains(&d.msg.sender) {
                    out.push(
                        format!(
                            "{} delivered {} at t={} but its sender {} never sent it",
                            p.pid, d.msg, d.t, d.msg.sender
                        ),
                        vec![p.pid, d.msg.sender],
                        Some(g.view),
                        Some(*d.msg),
                    );
                }
                let current = d.cur.and_then(|i| p.installs.get(i)).map(|v| v.id);
                if current != Some(g.view) {
                    out.push(
                        format!(
                            "{} delivered {} at t={} in {}, a view it had not installed (current view {})",
                            p.pid,
                            d.msg,
                            d.t,
                            g.view,
                            fmt_opt_view(current)
                        ),
                        vec![p.pid],
                        Some(g.view),
                        Some(*d.msg),
                    );
                }
            }
        }
        for s in &p.sends {
            if out.full() {
                return out.v;
            }
            if s.msg.sender != p.pid {
                out.push(
                    format!(
                        "{} recorded sending {} whose sender is {}",
                        p.pid, s.msg, s.msg.sender
                    ),
                    vec![p.pid, s.msg.sender],
                    Some(s.msg.view),
                    Some(*s.msg),
                );
            }
            if s.current != Some(s.msg.view) {
                out.push(
                    format!(
                        "{} sent {} at t={} in {}, a view it had not installed (current view {})",
                        p.pid,
                        s.msg,
                        s.t,
                        s.msg.view,
                        fmt_opt_view(s.current)
                    ),
                    vec![p.pid],
                    Some(s.msg.view),
                    Some(*s.msg),
                );
            }
            if let Some(w) = p.succ(s.msg.view)
                && !proper.contains(s.msg)
            {
                out.push(
                    format!(
                        "{} sent {} in {} and installed its successor {}, but never delivered its own message",
                        p.pid, s.msg, s.msg.view, w.id
                    ),
                    vec![p.pid],
                    Some(s.msg.view),
                    Some(*s.msg),
                );
            }
        }
    }
    out.v
}

fn liveness(a: &Analysis<'_>) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::Liveness);
    let live: Vec<&Proc<'_>> = a.procs.iter().filter(|p| p.live()).collect();
    if live.is_empty() {
        return out.v;
    }

    // The common final view: the most common last view among live
    // processes (ties: the highest view id).
    let mut counts: BTreeMap<ViewId, (usize, &View)> = BTreeMap::new();
    for p in &live {
        if let Some(v) = p.last_view() {
            let e = counts.entry(v.id).or_insert((0, v));
            e.0 = e.0.saturating_add(1);
        }
    }
    let final_view: Option<&View> = counts
        .values()
        .fold(None::<(usize, &View)>, |best, &(n, v)| match best {
            Some((bn, _)) if bn > n => best,
            _ => Some((n, v)),
        })
        .map(|(_, v)| v);

    for p in &live {
        let last = p.last_view();
        if last.map(|v| v.id) != final_view.map(|v| v.id) {
            out.push(
                format!(
                    "{} is live at the end in view {} but the common final view is {}",
                    p.pid,
                    fmt_opt_view(last.map(|v| v.id)),
                    fmt_opt_view(final_view.map(|v| v.id))
                ),
                vec![p.pid],
                last.map(|v| v.id),
                None,
            );
        }
    }

    if let Some(fv) = final_view {
        let live_pids: HashSet<Pid> = live.iter().map(|p| p.pid).collect();
        for p in &live {
            if !fv.contains(p.pid) {
                out.push(
                    format!(
                        "{} is live at the end but not a member of the final view {}",
                        p.pid, fv
                    ),
                    vec![p.pid],
                    Some(fv.id),
                    None,
                );
            }
        }
        for m in &fv.members {
            if !live_pids.contains(m) {
                out.push(
                    format!(
                        "{m} is a member of the final view {fv} but is not live at the end (crashed, removed, left or no history)"
                    ),
                    vec![*m],
                    Some(fv.id),
                    None,
                );
            }
        }
        // Every message sent in the final view, by anyone.
        let mut sent: Vec<MsgId> = a
            .procs
            .iter()
            .flat_map(|p| p.sends.iter().map(|s| *s.msg))
            .filter(|m| m.view == fv.id)
            .collect();
        sent.sort_unstable();
        sent.dedup();
        for p in &live {
            if out.full() {
                return out.v;
            }
            if p.last_view().map(|v| v.id) != Some(fv.id) {
                continue; // already reported
            }
            let delivered = p.group(fv.id).map(Group::sorted).unwrap_or_default();
            let mut missing = sorted_minus(&sent, &delivered);
            if let Some(m) = missing.next() {
                let more = missing.count();
                let tail = if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                };
                out.push(
                    format!(
                        "{} never delivered {} sent in the final view {}{}",
                        p.pid, m, fv.id, tail
                    ),
                    vec![p.pid, m.sender],
                    Some(fv.id),
                    Some(*m),
                );
            }
        }
    }

    for p in &live {
        if let Some((t, bv)) = p.blocked_at_end {
            out.push(
                format!(
                    "{} is live at the end but blocked in {} since t={}",
                    p.pid, bv, t
                ),
                vec![p.pid],
                Some(bv),
                None,
            );
        }
    }
    out.v
}

fn merge_report(a: &Analysis<'_>) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::MergeReport);
    let by_pid: HashMap<Pid, &Proc<'_>> = a.procs.iter().map(|p| (p.pid, p)).collect();
    for p in &a.procs {
        for &(view, split, winner) in &p.diverged {
            if out.full() {
                return out.v;
            }
            if let Some((detail, v)) = misreported_merge(a, &by_pid, p, view, split, winner) {
                out.push(format!("{} {detail}", p.pid), vec![p.pid], Some(v), None);
            }
        }
    }
    out.v
}

/// What is wrong with one `Diverged { view, split, winner }` record of `p`,
/// if anything: the detail (after the pid) and the view concerned.
fn misreported_merge(
    a: &Analysis<'_>,
    by_pid: &HashMap<Pid, &Proc<'_>>,
    p: &Proc<'_>,
    view: ViewId,
    split: Option<ViewId>,
    winner: ViewId,
) -> Option<(String, ViewId)> {
    let Some(&end) = p.install_index.get(&view) else {
        let detail = format!("reports losing a merge in {view}, a view it never installed");
        return Some((detail, view));
    };
    let (Some(split), Some(&(w, _))) = (split, a.views.get(&winner)) else {
        return None;
    };
    // Judged only with every listed winner's history; of them, those that
    // installed the winning view (a listed joiner may have taken another
    // side's welcome instead).
    let listed: Option<Vec<&Proc<'_>>> = w.members.iter().map(|m| by_pid.get(m).copied()).collect();
    let winners: Vec<&Proc<'_>> = listed?
        .into_iter()
        .filter(|q| q.install_index.contains_key(&winner))
        .collect();
    let shared = |v: ViewId| winners.iter().any(|q| q.install_index.contains_key(&v));
    let lost = format!("lost a merge to {winner} naming {split} as the split");
    let Some(&start) = p.install_index.get(&split) else {
        return Some((format!("{lost}, a view it never installed"), split));
    };
    if !shared(split) {
        let detail = format!("{lost}, but no process that installed {winner} installed {split}");
        return Some((detail, split));
    }
    let later = p
        .installs
        .get(start + 1..=end)
        .unwrap_or_default()
        .iter()
        .find(|v| shared(v.id))?;
    let detail = format!(
        "{lost}, but a process that installed {winner} also installed its later view {}",
        later.id
    );
    Some((detail, split))
}

fn primary_component(a: &Analysis<'_>) -> Vec<Violation> {
    let mut out = Out::new(Guarantee::PrimaryComponent);
    let mut left: HashMap<ViewId, HashSet<Pid>> = HashMap::default();
    for p in &a.procs {
        for v in &p.left {
            left.entry(*v).or_default().insert(p.pid);
        }
    }
    for p in &a.procs {
        for w in p.installs.windows(2) {
            if out.full() {
                return out.v;
            }
            let [prev, next] = w else { continue };
            if prev.members.is_empty() {
                // Not a view anyone can be a member of; reported by view
                // agreement. (`is_quorum` needs a coordinator.)
                continue;
            }
            let left_prev = left.get(&prev.id);
            let present: Vec<Pid> = prev
                .members
                .iter()
                .copied()
                .filter(|m| next.contains(*m) || left_prev.is_some_and(|l| l.contains(m)))
                .collect();
            if !prev.is_quorum(&present) {
                out.push(
                    format!(
                        "{} installed {} after {}, but only {} of its {} members are present ({}): not a quorum",
                        p.pid,
                        next,
                        prev,
                        present.len(),
                        prev.members.len(),
                        fmt_pids(&present)
                    ),
                    vec![p.pid],
                    Some(next.id),
                    None,
                );
            }
        }
    }
    out.v
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u64) -> Pid {
        Pid::new(n, 1)
    }

    fn view(epoch: u64, installer: u64, members: &[u64]) -> View {
        View {
            id: ViewId {
                epoch,
                installer: pid(installer),
            },
            members: members.iter().map(|&n| pid(n)).collect(),
        }
    }

    fn msg(v: &View, sender: u64, seq: u64) -> MsgId {
        MsgId {
            view: v.id,
            sender: pid(sender),
            seq,
        }
    }

    fn install(v: &View, joined: bool) -> Event {
        Event::Install {
            view: v.clone(),
            joined,
            donor: None,
        }
    }

    fn send(m: MsgId) -> Event {
        send_as(m, Delivery::Safe)
    }

    fn send_as(m: MsgId, mode: Delivery) -> Event {
        Event::Send { msg: m, mode }
    }

    fn deliver(m: MsgId, v: &View, pos: u64) -> Event {
        deliver_as(m, v, pos, Delivery::Safe)
    }

    fn deliver_as(m: MsgId, v: &View, pos: u64, mode: Delivery) -> Event {
        Event::Deliver {
            msg: m,
            view: v.id,
            pos,
            mode,
        }
    }

    fn hist(n: u64, events: Vec<Event>) -> History {
        let mut h = History::new(pid(n));
        for (i, e) in events.into_iter().enumerate() {
            h.push(10 * (i as u64 + 1), e);
        }
        h
    }

    fn strict() -> CheckOptions {
        CheckOptions {
            policy: Policy::PrimaryComponent,
            liveness: true,
        }
    }

    fn has(vs: &[Violation], g: Guarantee) -> bool {
        vs.iter().any(|v| v.guarantee == g)
    }

    /// The views of the passing run.
    struct Run {
        v1: View,
        v2: View,
        v3: View,
    }

    fn views() -> Run {
        Run {
            v1: view(1, 1, &[1, 2, 3]),
            v2: view(2, 1, &[1, 2]),
            v3: view(3, 1, &[1, 2, 4]),
        }
    }

    /// Three processes in V1; p3 crashes having delivered a prefix (and
    /// having sent a message nobody delivered); V2 = {p1, p2}; p4 joins in
    /// V3.
    fn good_events() -> Vec<(u64, Vec<Event>)> {
        let Run { v1, v2, v3 } = views();
        let a = msg(&v1, 1, 1);
        let b = msg(&v1, 2, 1);
        let c = msg(&v1, 3, 1);
        let d = msg(&v2, 2, 1);
        let e = msg(&v3, 4, 1);
        let f = msg(&v3, 1, 1);
        vec![
            (
                1,
                vec![
                    Event::Start,
                    install(&v1, true),
                    send(a),
                    deliver(a, &v1, 1),
                    deliver(b, &v1, 2),
                    install(&v2, false),
                    deliver(d, &v2, 1),
                    install(&v3, false),
                    deliver(e, &v3, 1),
                    send(f),
                    deliver(f, &v3, 2),
                ],
            ),
            (
                2,
                vec![
                    Event::Start,
                    install(&v1, true),
                    deliver(a, &v1, 1),
                    send(b),
                    deliver(b, &v1, 2),
                    install(&v2, false),
                    send(d),
                    deliver(d, &v2, 1),
                    install(&v3, false),
                    deliver(e, &v3, 1),
                    deliver(f, &v3, 2),
                ],
            ),
            (
                3,
                vec![
                    Event::Start,
                    install(&v1, true),
                    deliver(a, &v1, 1),
                    send(c),
                    Event::Crash,
                ],
            ),
            (
                4,
                vec![
                    Event::Start,
                    install(&v3, true),
                    send(e),
                    deliver(e, &v3, 1),
                    deliver(f, &v3, 2),
                ],
            ),
        ]
    }

    fn build(evs: Vec<(u64, Vec<Event>)>) -> Vec<History> {
        evs.into_iter().map(|(n, e)| hist(n, e)).collect()
    }

    fn good() -> Vec<History> {
        build(good_events())
    }

    /// Applies `f` to the events of process `n` of the passing run.
    fn mutate(n: u64, f: impl FnOnce(&mut Vec<Event>)) -> Vec<History> {
        let mut evs = good_events();
        if let Some((_, e)) = evs.iter_mut().find(|(m, _)| *m == n) {
            f(e);
        }
        build(evs)
    }

    #[test]
    fn passing_run_has_no_violations() {
        let h = good();
        let vs = check_all(&h, &strict());
        assert!(vs.is_empty(), "{vs:#?}");
        let vs = check_all(
            &h,
            &CheckOptions {
                policy: Policy::Partitionable,
                liveness: true,
            },
        );
        assert!(vs.is_empty(), "{vs:#?}");
        assert!(check_all(&h, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn removed_instead_of_crash_passes() {
        let Run { v1, .. } = views();
        let h = mutate(3, |e| {
            if let Some(last) = e.last_mut() {
                *last = Event::Removed { view: v1.id };
            }
        });
        let vs = check_all(&h, &strict());
        assert!(vs.is_empty(), "{vs:#?}");
    }

    #[test]
    fn different_members_is_view_agreement() {
        let Run { v2, .. } = views();
        let h = mutate(2, |e| {
            let mut bad = v2.clone();
            bad.members.push(pid(3));
            e[5] = install(&bad, false);
        });
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::ViewAgreement), "{vs:#?}");
    }

    #[test]
    fn fifo_out_of_order_and_causal_before_dependency_are_caught() {
        let v = view(1, 1, &[1, 2, 3]);
        let a1 = msg(&v, 1, 1);
        let a2 = msg(&v, 1, 2);
        let b1 = msg(&v, 2, 1);
        let fifo = Delivery::Fifo;
        let causal = Delivery::Causal;
        // 1 sends a1, a2 (FIFO); 2 delivers a1, then sends b1 (causal).
        let p1 = vec![
            install(&v, true),
            send_as(a1, fifo),
            send_as(a2, fifo),
            deliver_as(a1, &v, 0, fifo),
            deliver_as(a2, &v, 0, fifo),
            deliver_as(b1, &v, 0, causal),
        ];
        let p2 = vec![
            install(&v, true),
            deliver_as(a1, &v, 0, fifo),
            send_as(b1, causal),
            deliver_as(b1, &v, 0, causal),
            deliver_as(a2, &v, 0, fifo),
        ];
        let good = build(vec![
            (1, p1.clone()),
            (2, p2.clone()),
            (
                3,
                vec![
                    install(&v, true),
                    deliver_as(a1, &v, 0, fifo),
                    deliver_as(b1, &v, 0, causal),
                    deliver_as(a2, &v, 0, fifo),
                ],
            ),
        ]);
        assert!(check_fifo_and_causal_order(&good).is_empty());
        // 3 delivers b1 before a1, which 2 had delivered before sending b1.
        let bad_causal = build(vec![
            (1, p1.clone()),
            (2, p2.clone()),
            (
                3,
                vec![
                    install(&v, true),
                    deliver_as(b1, &v, 0, causal),
                    deliver_as(a1, &v, 0, fifo),
                    deliver_as(a2, &v, 0, fifo),
                ],
            ),
        ]);
        let vs = check_fifo_and_causal_order(&bad_causal);
        assert!(has(&vs, Guarantee::CausalOrder), "{vs:#?}");
        assert!(!has(&vs, Guarantee::FifoOrder), "{vs:#?}");
        // 3 delivers a2 before a1.
        let bad_fifo = build(vec![
            (1, p1),
            (2, p2),
            (
                3,
                vec![
                    install(&v, true),
                    deliver_as(a2, &v, 0, fifo),
                    deliver_as(a1, &v, 0, fifo),
                ],
            ),
        ]);
        let vs = check_fifo_and_causal_order(&bad_fifo);
        assert!(has(&vs, Guarantee::FifoOrder), "{vs:#?}");
    }

    #[test]
    fn a_total_delivery_by_a_process_that_fails_may_differ_but_safe_may_not() {
        let v1 = view(1, 1, &[1, 2, 3]);
        let v2 = view(2, 2, &[2, 3]);
        let m = msg(&v1, 1, 1);
        let n = msg(&v1, 2, 1);
        // 1 (the sequencer) delivered m at 1 and is removed; the survivors
        // ordered n at 1.
        let run = |mode: Delivery| {
            build(vec![
                (
                    1,
                    vec![
                        install(&v1, true),
                        send_as(m, mode),
                        deliver_as(m, &v1, 1, mode),
                        Event::Removed { view: v1.id },
                    ],
                ),
                (
                    2,
                    vec![
                        install(&v1, true),
                        send_as(n, mode),
                        deliver_as(n, &v1, 1, mode),
                        install(&v2, false),
                    ],
                ),
                (
                    3,
                    vec![
                        install(&v1, true),
                        deliver_as(n, &v1, 1, mode),
                        install(&v2, false),
                    ],
                ),
            ])
        };
        assert!(check_total_order(&run(Delivery::Total)).is_empty());
        let vs = check_total_order(&run(Delivery::Safe));
        assert!(has(&vs, Guarantee::TotalOrder), "{vs:#?}");
    }

    #[test]
    fn fork_is_view_agreement_only_under_primary_component() {
        let v1 = view(1, 1, &[1, 2, 3, 4]);
        let va = view(2, 1, &[1, 2]);
        let vb = view(2, 3, &[3, 4]);
        let h = build(vec![
            (1, vec![install(&v1, true), install(&va, false)]),
            (2, vec![install(&v1, true), install(&va, false)]),
            (3, vec![install(&v1, true), install(&vb, false)]),
            (4, vec![install(&v1, true), install(&vb, false)]),
        ]);
        let vs = check_view_agreement(&h, Policy::PrimaryComponent);
        assert!(has(&vs, Guarantee::ViewAgreement), "{vs:#?}");
        assert_eq!(vs.len(), 1, "a fork is reported once: {vs:#?}");
        assert!(check_view_agreement(&h, Policy::Partitionable).is_empty());
    }

    #[test]
    fn install_without_membership_twice_or_backwards_is_view_agreement() {
        let v1 = view(1, 1, &[1, 2]);
        let v2 = view(2, 1, &[1, 2]);
        let other = view(3, 2, &[2]);
        let h = build(vec![(1, vec![install(&v1, true), install(&other, false)])]);
        assert!(has(
            &check_view_agreement(&h, Policy::Partitionable),
            Guarantee::ViewAgreement
        ));
        let h = build(vec![(
            1,
            vec![install(&v1, true), install(&v2, false), install(&v1, false)],
        )]);
        assert!(has(
            &check_view_agreement(&h, Policy::Partitionable),
            Guarantee::ViewAgreement
        ));
        // Relative order: p1 installs v1 then v2, p2 v2 then v1.
        let h = build(vec![
            (1, vec![install(&v1, true), install(&v2, false)]),
            (2, vec![install(&v2, true), install(&v1, false)]),
        ]);
        let vs = check_view_agreement(&h, Policy::Partitionable);
        assert!(vs.iter().any(|v| v.pids.len() == 2), "{vs:#?}");
    }

    #[test]
    fn missing_delivery_at_survivor_is_same_set() {
        // p1 does not deliver b (position 2 of V1).
        let h = mutate(1, |e| {
            e.remove(4);
        });
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::SameSet), "{vs:#?}");
        assert!(has(&vs, Guarantee::SafeDelivery), "{vs:#?}");
    }

    #[test]
    fn non_member_message_is_sender_in_view() {
        let Run { v1, v2, .. } = views();
        // p3 is not in V2; and a V1 message delivered in V2.
        let x = msg(&v2, 3, 1);
        let h = mutate(1, |e| e.insert(7, deliver(x, &v2, 2)));
        let vs = check_sender_in_view(&h);
        assert!(has(&vs, Guarantee::SenderInView), "{vs:#?}");
        let y = msg(&v1, 2, 9);
        let h = mutate(1, |e| e.insert(7, deliver(y, &v2, 2)));
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::SenderInView), "{vs:#?}");
    }

    #[test]
    fn different_messages_at_same_position_is_total_order() {
        let Run { v1, .. } = views();
        let a = msg(&v1, 1, 1);
        let b = msg(&v1, 2, 1);
        let h = mutate(2, |e| {
            e[2] = deliver(b, &v1, 1);
            e[4] = deliver(a, &v1, 2);
        });
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::TotalOrder), "{vs:#?}");
    }

    #[test]
    fn position_gap_is_total_order() {
        let Run { v2, .. } = views();
        let d = msg(&v2, 2, 1);
        let h = mutate(1, |e| e[6] = deliver(d, &v2, 2));
        let vs = check_total_order(&h);
        assert!(has(&vs, Guarantee::TotalOrder), "{vs:#?}");
    }

    #[test]
    fn crashed_process_delivery_missing_at_survivor_is_safe_delivery() {
        let Run { v1, .. } = views();
        let b = msg(&v1, 2, 1);
        let c = msg(&v1, 3, 1);
        let h = mutate(3, |e| {
            e.insert(4, deliver(b, &v1, 2));
            e.insert(5, deliver(c, &v1, 3));
        });
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::SafeDelivery), "{vs:#?}");
        assert!(!has(&vs, Guarantee::SameSet), "{vs:#?}");
        assert!(!has(&vs, Guarantee::TotalOrder), "{vs:#?}");
    }

    #[test]
    fn duplicate_delivery_is_integrity() {
        let Run { v2, .. } = views();
        let d = msg(&v2, 2, 1);
        let h = mutate(1, |e| e.insert(7, deliver(d, &v2, 2)));
        let vs = check_integrity(&h);
        assert!(has(&vs, Guarantee::Integrity), "{vs:#?}");
    }

    #[test]
    fn delivery_without_send_is_integrity() {
        // p2 never records sending d.
        let h = mutate(2, |e| {
            e.remove(6);
        });
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::Integrity), "{vs:#?}");
    }

    #[test]
    fn surviving_sender_not_delivering_own_message_is_integrity() {
        let Run { v2, .. } = views();
        let g = msg(&v2, 2, 2);
        let h = mutate(2, |e| e.insert(7, send(g)));
        let vs = check_integrity(&h);
        assert!(has(&vs, Guarantee::Integrity), "{vs:#?}");
        assert_eq!(vs.len(), 1, "{vs:#?}");
    }

    #[test]
    fn delivery_in_uninstalled_view_is_integrity() {
        let Run { v1, v2, .. } = views();
        // p3 delivers a V2 message while in V1.
        let d = msg(&v2, 2, 1);
        let h = mutate(3, |e| e.insert(3, deliver(d, &v2, 1)));
        let vs = check_integrity(&h);
        assert!(
            vs.iter().any(|v| v.detail.contains("had not installed")),
            "{vs:#?}"
        );
        // And a delivery before any install.
        let a = msg(&v1, 1, 1);
        let h = mutate(4, |e| e.insert(1, deliver(a, &v1, 1)));
        assert!(has(&check_integrity(&h), Guarantee::Integrity));
    }

    #[test]
    fn live_process_outside_final_view_is_liveness() {
        // p3 does not crash: it stays live in V1.
        let h = mutate(3, |e| {
            e.pop();
        });
        let vs = check_all(&h, &strict());
        assert!(has(&vs, Guarantee::Liveness), "{vs:#?}");
        assert!(
            vs.iter().any(|v| v.guarantee == Guarantee::ForcedRemoval),
            "{vs:#?}"
        );
        // Without liveness, neither is reported.
        let vs = check_all(&h, &CheckOptions::default());
        assert!(vs.is_empty(), "{vs:#?}");
    }

    #[test]
    fn undelivered_final_message_and_blocked_are_liveness() {
        let Run { v3, .. } = views();
        let z = msg(&v3, 4, 2);
        let h = mutate(4, |e| e.push(send(z)));
        assert!(has(&check_liveness(&h), Guarantee::Liveness));
        let h = mutate(4, |e| e.push(Event::Blocked { view: v3.id }));
        assert!(has(&check_liveness(&h), Guarantee::Liveness));
    }

    #[test]
    fn lost_majority_is_primary_component() {
        let v1 = view(1, 1, &[1, 2, 3]);
        let v2 = view(2, 1, &[1]);
        let h = build(vec![
            (1, vec![install(&v1, true), install(&v2, false)]),
            (2, vec![install(&v1, true), Event::Crash]),
            (3, vec![install(&v1, true), Event::Crash]),
        ]);
        let vs = check_all(&h, &CheckOptions::default());
        assert!(has(&vs, Guarantee::PrimaryComponent), "{vs:#?}");
        let vs = check_all(
            &h,
            &CheckOptions {
                policy: Policy::Partitionable,
                liveness: false,
            },
        );
        assert!(!has(&vs, Guarantee::PrimaryComponent), "{vs:#?}");
        // Members that left cleanly count as present.
        let h = build(vec![
            (1, vec![install(&v1, true), install(&v2, false)]),
            (2, vec![install(&v1, true), Event::Left { view: v1.id }]),
            (3, vec![install(&v1, true), Event::Left { view: v1.id }]),
        ]);
        assert!(check_primary_component(&h).is_empty());
    }

    #[test]
    fn false_removal_is_forced_removal() {
        let v1 = view(1, 1, &[1, 2, 3]);
        let v2 = view(2, 1, &[1, 2, 3]);
        let h = build(vec![
            (1, vec![install(&v1, true), install(&v2, false)]),
            (2, vec![install(&v1, true), install(&v2, false)]),
            (3, vec![install(&v1, true), Event::Removed { view: v1.id }]),
        ]);
        let vs = check_forced_removal(&h, false);
        assert!(has(&vs, Guarantee::ForcedRemoval), "{vs:#?}");
        // Removed naming a view that is not its last.
        let v0 = view(0, 1, &[1, 2, 3]);
        let h = build(vec![(
            3,
            vec![
                install(&v0, true),
                install(&v1, false),
                Event::Removed { view: v0.id },
            ],
        )]);
        assert!(has(
            &check_forced_removal(&h, false),
            Guarantee::ForcedRemoval
        ));
    }

    #[test]
    fn weird_histories_do_not_panic() {
        let empty = View {
            id: ViewId {
                epoch: 0,
                installer: pid(9),
            },
            members: vec![],
        };
        let v1 = view(1, 1, &[1]);
        let m = msg(&v1, 7, 1);
        let h = vec![
            History::default(),
            History {
                pid: None,
                records: vec![],
            },
            hist(5, vec![]),
            hist(
                1,
                vec![
                    deliver(m, &v1, 0),
                    deliver(m, &v1, u64::MAX),
                    install(&empty, true),
                    install(&empty, false),
                    install(&v1, false),
                    Event::Blocked { view: v1.id },
                    Event::Removed { view: empty.id },
                    Event::Left { view: v1.id },
                    send(m),
                    Event::Crash,
                    Event::Crash,
                ],
            ),
            hist(1, vec![install(&v1, true), install(&empty, false)]),
        ];
        for policy in [Policy::PrimaryComponent, Policy::Partitionable] {
            for liveness in [false, true] {
                let vs = check_all(&h, &CheckOptions { policy, liveness });
                assert!(!vs.is_empty());
                for v in &vs {
                    let _ = v.to_string();
                }
            }
        }
        let _ = check_all(&[], &strict());
    }

    #[test]
    fn output_is_capped() {
        let v1 = view(1, 1, &[1, 2]);
        let v2 = view(2, 1, &[1, 2]);
        let mut e1 = vec![install(&v1, true)];
        for s in 1..=200 {
            e1.push(deliver(msg(&v1, 2, s), &v1, s));
        }
        e1.push(install(&v2, false));
        let h = build(vec![
            (1, e1),
            (2, vec![install(&v1, true), install(&v2, false)]),
        ]);
        let vs = check_integrity(&h);
        assert_eq!(vs.len(), MAX_VIOLATIONS_PER_CHECK);
        let vs = check_safe_delivery(&h);
        assert_eq!(vs.len(), 1);
        assert!(vs[0].detail.contains("199 more"), "{}", vs[0]);
    }

    #[test]
    fn display_and_serde() {
        let v = Violation {
            guarantee: Guarantee::SafeDelivery,
            detail: "x".into(),
            pids: vec![pid(1)],
            view: None,
            msg: None,
        };
        assert_eq!(v.to_string(), "[safe_delivery] x");
        let json = serde_json::to_string(&v).unwrap_or_default();
        assert!(json.contains("\"safe_delivery\""), "{json}");
        let back: Violation = serde_json::from_str(&json).unwrap_or_else(|_| v.clone());
        assert_eq!(back, v);
        assert_eq!(
            serde_json::to_string(&Policy::Partitionable).unwrap_or_default(),
            "\"partitionable\""
        );
    }

    #[test]
    fn msg_set_edge_cases() {
        let v1 = view(1, 1, &[1, 2]);
        let v2 = view(2, 1, &[1, 2]);
        let mut s = MsgSet::default();
        let ms = [
            msg(&v1, 1, 0),
            msg(&v1, 1, 63),
            msg(&v1, 1, 64),
            msg(&v1, 2, 1),
            msg(&v2, 1, 1),
            msg(&v1, 1, DENSE_SEQ_LIMIT),
            msg(&v1, 1, u64::MAX),
        ];
        for m in &ms {
            assert!(!s.contains(m));
            assert!(s.insert(m));
        }
        for m in &ms {
            assert!(s.contains(m));
            assert!(!s.insert(m));
        }
        assert!(!s.contains(&msg(&v1, 1, 1)));
        assert!(!s.contains(&msg(&v2, 2, 1)));
        assert!(!s.contains(&msg(&view(3, 1, &[1]), 1, 1)));
    }

    #[test]
    fn total_order_with_gaps_and_sparse_positions() {
        let v1 = view(1, 1, &[1, 2, 3]);
        let v2 = view(2, 1, &[1, 2, 3]);
        let (m1, m2, x, y) = (
            msg(&v1, 1, 1),
            msg(&v1, 1, 2),
            msg(&v1, 2, 1),
            msg(&v1, 3, 1),
        );
        let p = |n: u64, ds: Vec<Event>| {
            let mut e = vec![install(&v1, true)];
            e.extend(ds);
            e.push(install(&v2, false));
            (n, e)
        };
        // p1 skips position 2; p2 delivers something else at 3; p3 fills 2
        // then agrees with p1 at 3.
        let h = build(vec![
            p(1, vec![deliver(m1, &v1, 1), deliver(m2, &v1, 3)]),
            p(2, vec![deliver(m1, &v1, 1), deliver(y, &v1, 3)]),
            p(
                3,
                vec![deliver(m1, &v1, 1), deliver(x, &v1, 2), deliver(m2, &v1, 3)],
            ),
        ]);
        let vs = check_total_order(&h);
        let gaps = vs
            .iter()
            .filter(|v| v.detail.contains("skipped position"))
            .count();
        let conflicts = vs
            .iter()
            .filter(|v| v.detail.starts_with("position 3"))
            .count();
        assert_eq!((gaps, conflicts), (2, 1), "{vs:#?}");
        // The same message at two positions at two processes.
        let h = build(vec![
            p(1, vec![deliver(m1, &v1, 1), deliver(m2, &v1, 2)]),
            p(
                2,
                vec![deliver(m1, &v1, 1), deliver(x, &v1, 2), deliver(m2, &v1, 3)],
            ),
        ]);
        let vs = check_total_order(&h);
        assert!(
            vs.iter().any(|v| v.detail.contains("at position 2 but")),
            "{vs:#?}"
        );
    }

    #[test]
    fn same_set_in_another_order_is_total_order_only() {
        let Run { v1, .. } = views();
        let a = msg(&v1, 1, 1);
        let b = msg(&v1, 2, 1);
        let h = mutate(2, |e| {
            e[2] = deliver(b, &v1, 1);
            e[4] = deliver(a, &v1, 2);
        });
        assert!(check_same_set(&h).is_empty());
        assert!(check_safe_delivery(&h).is_empty());
        assert!(has(&check_total_order(&h), Guarantee::TotalOrder));
    }

    #[test]
    fn safe_delivery_union_of_non_prefix_sequences() {
        let v1 = view(1, 1, &[1, 2, 3]);
        let v2 = view(2, 1, &[1, 2]);
        let (a, b, c) = (msg(&v1, 1, 1), msg(&v1, 2, 1), msg(&v1, 3, 1));
        let h = build(vec![
            (
                1,
                vec![
                    install(&v1, true),
                    deliver(a, &v1, 1),
                    deliver(b, &v1, 2),
                    install(&v2, false),
                ],
            ),
            (
                2,
                vec![
                    install(&v1, true),
                    deliver(a, &v1, 1),
                    deliver(b, &v1, 2),
                    install(&v2, false),
                ],
            ),
            (
                3,
                vec![install(&v1, true), deliver(c, &v1, 1), Event::Crash],
            ),
        ]);
        let vs = check_safe_delivery(&h);
        assert_eq!(vs.len(), 2, "{vs:#?}");
        assert!(
            vs.iter()
                .all(|v| v.msg == Some(c) && v.pids.first() == Some(&pid(3)))
        );
    }
}
