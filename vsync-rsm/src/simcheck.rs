//! Replicas in the deterministic simulator of [`vsync_core::sim`]: a
//! [`ReplicaCore`] per simulated process, driven by the engine's events
//! through the simulator's [`Observer`] hook, with state transfer done out
//! of band (the image taken at the donor's `SendState` is handed to the
//! joiner after it has buffered some deliveries). A removed process keeps
//! its core into its next incarnation, as the real replica does, so that
//! a stale or diverged state that is not replaced shows.
//!
//! What it checks, after every event and at the end:
//! - **the cut**: every member that starts a view with a state holds the
//!   same state (position and digest): the members carried over from the
//!   previous view at the install, and each joiner right after its restore
//!   (when no delivery was buffered meanwhile);
//! - **same history, same state**: replicas that installed the same view
//!   and then the same successor held the same state at every position
//!   they both passed in that view (per side, under the partitionable
//!   policy, where sides of a partition reuse positions for different
//!   histories); under the primary-component policy, more strictly, any
//!   two replicas at the same position ever;
//! - **after a merge, the winner's state**: a replica whose side lost a
//!   merge reports a consistent [`crate::Divergence`] (the discarded
//!   commands at consecutive positions ending at its last one), its state
//!   is discarded, and at the end every live member of the final view
//!   (winners and rejoined losers alike) holds the same state.
//!
//! Use it on your own state machine with [`check_seed`] or
//! [`check_seed_with`]; the crate's tests run it over hundreds of seeds,
//! `cargo run -p vsync-rsm --release --example rsm-sim -- --seeds N
//! [--policy partitionable]` over more. [`SimMutation`] breaks the
//! replica on purpose to show that the checks catch it.

use crate::machine::{SnapshotImage, StateMachine};
use crate::sansio::{Action, Phase, ReplicaCore};
use crate::wire::{Entry, encode_batch};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use vsync_core::engine::PartitionPolicy;
use vsync_core::sim::{self, Observer, ObserverHandle, SimOptions};
use vsync_core::{AppEvent, Pid, ViewId};

/// How to drive a state machine in the simulator.
pub struct SimMachine<S: StateMachine> {
    /// A fresh machine (genesis).
    pub new: fn() -> S,
    /// A digest of the state, equal for equal states.
    pub digest: fn(&S) -> u64,
    /// The command of `pid`'s `n`-th multicast.
    pub command: fn(Pid, u64) -> S::Command,
}

/// A deliberate bug in the replica, to show that the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimMutation {
    /// A replica whose side lost a merge rejoins with its own diverged
    /// state (as if it reloaded its own checkpoint or replayed its own log)
    /// instead of taking the winner's by transfer.
    KeepDivergedState,
}

/// How to run [`check_seed_with`].
#[derive(Clone, Debug)]
pub struct SimCheckOptions {
    /// Force the initial group size (otherwise drawn from the seed).
    pub size: Option<usize>,
    /// The partition policy every engine runs.
    pub policy: PartitionPolicy,
    /// A deliberate bug, if any.
    pub mutation: Option<SimMutation>,
    /// The discard journal's limit in commands (see
    /// [`crate::ReplicaConfig::discard_journal`]).
    pub journal: usize,
}

impl Default for SimCheckOptions {
    /// Size from the seed, primary component, no mutation, a journal of
    /// 10,000 commands.
    fn default() -> Self {
        SimCheckOptions {
            size: None,
            policy: PartitionPolicy::PrimaryComponent,
            mutation: None,
            journal: 10_000,
        }
    }
}

/// What a seed showed.
#[derive(Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Problems found (empty when correct): state divergence, or the
    /// engine's own checker's violations.
    pub problems: Vec<String>,
    /// State transfers completed.
    pub transfers: u64,
    /// Joiners that gave up (their donor left first).
    pub gave_up: u64,
    /// Highest position reached.
    pub max_position: u64,
    /// Positions at which at least two replicas were compared.
    pub compared: u64,
    /// Views whose start (the cut) was compared between at least two
    /// replicas.
    pub cuts_compared: u64,
    /// Replicas whose side lost a merge (partitionable policy).
    pub diverged: u64,
    /// Commands those replicas discarded, summed.
    pub discarded: u64,
    /// Replicas that lost a merge and were, in a later incarnation,
    /// members of the final view with the winner's state.
    pub merged_back: u64,
}

struct Pending {
    donor: Pid,
    position: u64,
    chain: Option<u64>,
    chunks: Option<Vec<Vec<u8>>>,
}

/// Position -> (digest, the first replica seen there, how many were).
type Seen = BTreeMap<u64, (u64, Pid, u32)>;

/// A replica's observations in its current view.
struct InView {
    view: ViewId,
    seen: Vec<(u64, u64)>,
}

struct Driver<S: StateMachine> {
    m: SimMachine<S>,
    opts: SimCheckOptions,
    cores: HashMap<Pid, ReplicaCore<S>>,
    dead: HashSet<Pid>,
    /// Cores of removed processes, by node, for their next incarnation.
    carry: HashMap<u64, ReplicaCore<S>>,
    /// Processes in their first view whose state has not been checked to
    /// be the group's yet (not restored, not founders).
    fresh: HashSet<Pid>,
    transfers: HashMap<(Pid, ViewId), Pending>,
    age: HashMap<Pid, u32>,
    /// Primary component: position -> (digest, first pid, count).
    seen: Seen,
    /// View -> (position, digest, pid) at its start.
    starts: HashMap<ViewId, (u64, u64, Pid)>,
    cut_hits: HashSet<ViewId>,
    /// Per replica: what it held in its current view.
    in_view: HashMap<Pid, InView>,
    /// (view, successor) -> position -> (digest, pid, count).
    sides: HashMap<(ViewId, Option<ViewId>), Seen>,
    /// KeepDivergedState: the losing state kept by node.
    kept: HashMap<u64, (u64, Vec<Vec<u8>>)>,
    /// Nodes that lost a merge.
    losers: HashSet<u64>,
    report: SeedReport,
    last_view: HashMap<Pid, vsync_core::View>,
}

impl<S: StateMachine> Driver<S> {
    fn core(&mut self, pid: Pid) -> &mut ReplicaCore<S> {
        let new = self.m.new;
        let journal = self.opts.journal;
        let carried = if self.cores.contains_key(&pid) {
            None
        } else {
            self.fresh.insert(pid);
            self.carry.remove(&pid.node.0)
        };
        self.cores.entry(pid).or_insert_with(|| {
            let mut c = carried.unwrap_or_else(|| {
                let mut c = ReplicaCore::new(pid, new(), 0, None);
                c.set_journal(journal, usize::MAX);
                c
            });
            c.rejoin(pid);
            c
        })
    }

    fn drain(&mut self, pid: Pid) {
        let actions = self.core(pid).drain_actions();
        for a in actions {
            match a {
                Action::SendState {
                    joiner,
                    view,
                    position,
                    image,
                    chain,
                    ..
                } => {
                    let chunks = image.map(chunks_of);
                    self.transfers.insert(
                        (joiner, view),
                        Pending {
                            donor: pid,
                            position,
                            chain,
                            chunks,
                        },
                    );
                }
                Action::GiveUp { .. } => {
                    self.report.gave_up += 1;
                    self.dead.insert(pid);
                }
                Action::StateRestored { .. } => {
                    self.report.transfers += 1;
                    self.fresh.remove(&pid);
                }
                _ => {}
            }
        }
    }

    /// Hands a ready transfer to its joiner once it has waited a little.
    fn try_transfer(&mut self, joiner: Pid) {
        let Some(core) = self.cores.get(&joiner) else {
            return;
        };
        let Phase::Awaiting { donor, view } = core.phase() else {
            return;
        };
        let age = self.age.get(&joiner).copied().unwrap_or(0);
        if core.buffered() == 0 && age < 3 {
            return;
        }
        let Some(mut p) = self.transfers.remove(&(joiner, view)) else {
            return;
        };
        if p.donor != donor {
            self.report.problems.push(format!(
                "{joiner}: state from {} but {donor} was named",
                p.donor
            ));
            return;
        }
        if let Some((pos, chunks)) = self.kept.remove(&joiner.node.0) {
            // The mutation: the loser's own state instead of the winner's.
            p.position = pos;
            p.chunks = Some(chunks);
        }
        let core = self.core(joiner);
        let unbuffered = core.buffered() == 0;
        match p.chunks {
            None => core.state_refused(donor, view),
            Some(chunks) => {
                core.state_begin(
                    donor,
                    view,
                    crate::sansio::Offer {
                        position: p.position,
                        chain: p.chain,
                        ..Default::default()
                    },
                );
                let n = chunks.len() as u64;
                let mut crc = crc32fast::Hasher::new();
                for (i, c) in chunks.iter().enumerate() {
                    crc.update(c);
                    core.state_piece(donor, view, i as u64, true, c);
                }
                core.state_end(donor, view, n, crc.finalize());
            }
        }
        self.drain(joiner);
        if unbuffered {
            // Nothing applied after the restore yet: the joiner's state is
            // the one it starts the view with.
            self.cut(joiner, view);
        }
        self.check(joiner);
    }

    /// The replica's state, if it has a checkable one.
    fn state(&self, pid: Pid) -> Option<(u64, u64)> {
        if self.dead.contains(&pid) || self.fresh.contains(&pid) {
            return None;
        }
        let core = self.cores.get(&pid)?;
        if core.phase() != Phase::Member || !core.readable() {
            return None;
        }
        Some((core.position(), (self.m.digest)(core.machine())))
    }

    fn check(&mut self, pid: Pid) {
        let Some((pos, d)) = self.state(pid) else {
            return;
        };
        self.report.max_position = self.report.max_position.max(pos);
        if let Some(iv) = self.in_view.get_mut(&pid) {
            if iv.seen.last().map(|x| x.0) != Some(pos) {
                iv.seen.push((pos, d));
            }
        }
        if self.opts.policy != PartitionPolicy::PrimaryComponent {
            return;
        }
        match self.seen.get_mut(&pos) {
            None => {
                self.seen.insert(pos, (d, pid, 1));
            }
            Some((d0, p0, n)) => {
                if *d0 != d {
                    self.report.problems.push(format!(
                        "state divergence at position {pos}: {pid} has {d:#x}, {p0} had {d0:#x}"
                    ));
                }
                *n += 1;
            }
        }
    }

    /// `pid` starts `view` holding its current state (the cut).
    fn cut(&mut self, pid: Pid, view: ViewId) {
        let Some((pos, d)) = self.state(pid) else {
            return;
        };
        match self.starts.get(&view) {
            None => {
                self.starts.insert(view, (pos, d, pid));
            }
            Some(&(p0, d0, first)) => {
                self.cut_hits.insert(view);
                if (p0, d0) != (pos, d) {
                    self.report.problems.push(format!(
                        "the cut of {view} differs: {pid} starts it at {pos} ({d:#x}), {first} at {p0} ({d0:#x})"
                    ));
                }
            }
        }
    }

    /// Files `pid`'s observations in its view under (view, successor).
    fn file(&mut self, pid: Pid, successor: Option<ViewId>) {
        let Some(iv) = self.in_view.remove(&pid) else {
            return;
        };
        let side = self.sides.entry((iv.view, successor)).or_default();
        for (pos, d) in iv.seen {
            match side.get_mut(&pos) {
                None => {
                    side.insert(pos, (d, pid, 1));
                }
                Some((d0, p0, n)) => {
                    *n += 1;
                    if *d0 != d {
                        self.report.problems.push(format!(
                            "state divergence in {} (then {}) at position {pos}: {pid} had {d:#x}, {p0} had {d0:#x}",
                            iv.view,
                            successor.map_or("the end".to_string(), |s| s.to_string())
                        ));
                    }
                }
            }
        }
    }

    fn on_diverged(
        &mut self,
        pid: Pid,
        view: ViewId,
        split: Option<ViewId>,
        winner: &vsync_core::View,
    ) {
        let keep = self.opts.mutation == Some(SimMutation::KeepDivergedState);
        let core = self.core(pid);
        let own =
            (keep && core.readable()).then(|| (core.position(), chunks_of(core.machine().image())));
        let d = core.on_diverged(view, split, winner.clone());
        let discarded_state = !core.readable() && core.position() == 0;
        let info = d.info();
        self.report.diverged += 1;
        self.report.discarded += info.discarded;
        self.losers.insert(pid.node.0);
        // The list: consecutive positions ending at the last one.
        let ps: Vec<u64> = d.discarded.iter().map(|x| x.position).collect();
        let consecutive = ps.windows(2).all(|w| w[0] + 1 == w[1]);
        let ends = ps.last().is_none_or(|l| *l == d.last);
        let flags = d
            .discarded
            .iter()
            .all(|x| x.in_split_view == d.position.is_some_and(|end| x.position <= end));
        let starts = match (d.split_start, ps.first()) {
            (Some(from), Some(first)) => *first == from + 1 + d.unlisted,
            (Some(from), None) => d.unlisted == d.last.saturating_sub(from),
            (None, _) => true,
        };
        if !(consecutive && ends && starts && flags) {
            self.report.problems.push(format!(
                "{pid}: inconsistent divergence: split view from {:?} to {:?}, last {}, unlisted {}, listed {ps:?}",
                d.split_start, d.position, d.last, d.unlisted
            ));
        }
        if !discarded_state {
            self.report
                .problems
                .push(format!("{pid}: the losing state was not discarded"));
        }
        if let Some(own) = own {
            self.kept.insert(pid.node.0, own);
        }
    }
}

fn chunks_of<I: SnapshotImage>(mut i: I) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(c) = i.next_chunk() {
        v.push(c);
    }
    v
}

impl<S: StateMachine> Observer for Driver<S> {
    fn event(&mut self, _now: u64, pid: Pid, ev: &AppEvent) {
        if self.dead.contains(&pid) {
            return;
        }
        match ev {
            AppEvent::View { view, joined } => {
                self.last_view.insert(pid, view.clone());
                self.file(pid, Some(view.id));
                self.core(pid).on_view(view.clone());
                if *joined && view.members.len() == 1 {
                    // A founder: genesis is the group's state.
                    self.fresh.remove(&pid);
                }
                if !*joined {
                    self.cut(pid, view.id);
                }
                self.in_view.insert(
                    pid,
                    InView {
                        view: view.id,
                        seen: Vec::new(),
                    },
                );
            }
            AppEvent::Deliver { payload, .. } => self.core(pid).on_deliver(payload.clone()),
            AppEvent::SendState { joiner, view } => self.core(pid).on_send_state(*joiner, *view),
            AppEvent::AwaitState { donor, view } => {
                self.age.insert(pid, 0);
                self.core(pid).on_await_state(*donor, *view);
            }
            AppEvent::Diverged {
                view,
                split,
                winner,
            } => self.on_diverged(pid, *view, *split, winner),
            AppEvent::Removed { .. } => {
                self.in_view.remove(&pid);
                self.last_view.remove(&pid);
                self.dead.insert(pid);
                if let Some(mut c) = self.cores.remove(&pid) {
                    // The real replica keeps its core into the next
                    // incarnation (the transfer replaces its state).
                    c.on_removed();
                    self.carry.insert(pid.node.0, c);
                }
            }
            AppEvent::Left { .. } => {
                self.core(pid).on_removed();
                self.dead.insert(pid);
                self.in_view.remove(&pid);
                self.last_view.remove(&pid);
            }
            _ => {}
        }
        if let Some(a) = self.age.get_mut(&pid) {
            *a += 1;
        }
        if self.dead.contains(&pid) {
            return;
        }
        self.drain(pid);
        self.check(pid);
        let joiners: Vec<Pid> = self.transfers.keys().map(|k| k.0).collect();
        for j in joiners {
            self.try_transfer(j);
        }
    }

    fn payload(&mut self, pid: Pid, n: u64) -> Option<Bytes> {
        let cmd = postcard::to_stdvec(&(self.m.command)(pid, n)).ok()?;
        encode_batch(&[Entry::Cmd {
            origin: pid,
            req: n,
            cmd: Bytes::from(cmd),
        }])
        .ok()
    }
}

/// Runs one seed of the simulator with a replica per process and checks
/// state equality (see the module documentation), under the
/// primary-component policy.
pub fn check_seed<S: StateMachine>(seed: u64, size: Option<usize>, m: SimMachine<S>) -> SeedReport {
    check_seed_with(
        seed,
        &SimCheckOptions {
            size,
            ..SimCheckOptions::default()
        },
        m,
    )
}

/// Runs one seed with the given options (policy, mutation) and checks
/// what the module documentation lists.
pub fn check_seed_with<S: StateMachine>(
    seed: u64,
    opts: &SimCheckOptions,
    m: SimMachine<S>,
) -> SeedReport {
    let driver = Arc::new(Mutex::new(Driver {
        m,
        opts: opts.clone(),
        cores: HashMap::new(),
        dead: HashSet::new(),
        carry: HashMap::new(),
        fresh: HashSet::new(),
        transfers: HashMap::new(),
        age: HashMap::new(),
        seen: BTreeMap::new(),
        starts: HashMap::new(),
        cut_hits: HashSet::new(),
        in_view: HashMap::new(),
        sides: HashMap::new(),
        kept: HashMap::new(),
        losers: HashSet::new(),
        report: SeedReport {
            seed,
            ..SeedReport::default()
        },
        last_view: HashMap::new(),
    }));
    let handle: Arc<Mutex<dyn Observer>> = driver.clone();
    let sim_opts = SimOptions {
        size: opts.size,
        policy: Some(opts.policy),
        observer: Some(ObserverHandle(handle)),
        ..SimOptions::default()
    };
    let r = sim::run(seed, &sim_opts);
    let mut d = match driver.lock() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    // The members of the final view (settled after the quiet phase) agree:
    // losers that rejoined hold the winner's state.
    let last = d.last_view.values().map(|v| v.id).max();
    let mut finals: Vec<(Pid, u64, u64)> = Vec::new();
    let pids: Vec<Pid> = d.cores.keys().copied().collect();
    for pid in pids {
        if d.last_view.get(&pid).map(|v| v.id) != last {
            continue;
        }
        let Some((pos, dg)) = d.state(pid) else {
            continue;
        };
        d.file(pid, None);
        finals.push((pid, pos, dg));
    }
    finals.sort();
    let mut report = std::mem::take(&mut d.report);
    for v in &r.violations {
        report.problems.push(format!("engine: {v:?}"));
    }
    if let Some(&(p0, pos0, d0)) = finals.first() {
        for &(p, pos, dg) in &finals[1..] {
            if pos != pos0 || dg != d0 {
                report.problems.push(format!(
                    "final states differ: {p0} at {pos0} ({d0:#x}), {p} at {pos} ({dg:#x})"
                ));
            }
        }
    }
    report.merged_back = finals
        .iter()
        .filter(|(p, _, _)| d.losers.contains(&p.node.0))
        .count() as u64;
    report.compared = d.seen.values().filter(|(_, _, n)| *n > 1).count() as u64
        + d.sides
            .values()
            .map(|s| s.values().filter(|(_, _, n)| *n > 1).count() as u64)
            .sum::<u64>();
    report.cuts_compared = d.cut_hits.len() as u64;
    report
}
