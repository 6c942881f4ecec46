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

mod disk;

use crate::config::Durability;
use crate::disk::restore_local;
use crate::lifecycle::{Observed, RestartClock, RestartStep};
use crate::machine::{SnapshotImage, StateMachine};
use crate::sansio::{Action, Phase, RecoveryRule, ReplicaCore};
use crate::transfer::Plan;
use crate::wire::{Entry, decode_batch, encode_batch};
use bytes::Bytes;
use disk::{SimCheckpoint, SimDisk};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vsync_core::engine::PartitionPolicy;
use vsync_core::sim::{self, Directive, Observer, ObserverHandle, SimOptions};
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
    /// A replica restarting with state on its disk erases it and founds a
    /// group of its own (what `Start::Found` did before restarts were
    /// automatic). Needs a disk ([`SimCheckOptions::durability`]).
    FounderClearsStore,
    /// A replica skips a command it cannot decode and goes on (what the
    /// replica did before it halted instead). Needs
    /// [`SimCheckOptions::undecodable`].
    SkipUndecodable,
    /// A donor's catch-up starts one batch late, and without the lineage
    /// hash that would let the joiner notice. Needs a disk.
    CatchUpWrongPosition,
}

impl SimMutation {
    /// The mutation's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SimMutation::KeepDivergedState => "keep-diverged-state",
            SimMutation::FounderClearsStore => "founder-clears-store",
            SimMutation::SkipUndecodable => "skip-undecodable",
            SimMutation::CatchUpWrongPosition => "catch-up-wrong-position",
        }
    }

    /// Every mutation.
    pub const ALL: [SimMutation; 4] = [
        SimMutation::KeepDivergedState,
        SimMutation::FounderClearsStore,
        SimMutation::SkipUndecodable,
        SimMutation::CatchUpWrongPosition,
    ];
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
    /// Each node has a simulated disk (checkpoints; under Logged, the
    /// command log too) that survives its crashes, and a crashed replica
    /// restarts from it through the real restart path; `None`: no disk, a
    /// crashed replica comes back empty.
    pub durability: Option<Durability>,
    /// Whole-group outages ([`vsync_core::sim::SimOptions::outages`]);
    /// with a disk, the replicas recover on their own.
    pub outages: bool,
    /// Now and then a replica receives a command it cannot decode (damage,
    /// or another version's command): it must halt, not skip it.
    pub undecodable: bool,
    /// Keep the simulator's readable trace ([`SeedReport::trace`]).
    pub trace: bool,
}

impl Default for SimCheckOptions {
    /// Size from the seed, primary component, no mutation, a journal of
    /// 10,000 commands, no disk, no outages, no undecodable commands.
    fn default() -> Self {
        SimCheckOptions {
            size: None,
            policy: PartitionPolicy::PrimaryComponent,
            mutation: None,
            journal: 10_000,
            durability: None,
            outages: false,
            undecodable: false,
            trace: false,
        }
    }
}

impl SimCheckOptions {
    /// The replica's whole lifecycle: a disk under `durability`, outages,
    /// undecodable commands.
    pub fn lifecycle(policy: PartitionPolicy, durability: Durability) -> Self {
        SimCheckOptions {
            policy,
            durability: Some(durability),
            outages: true,
            undecodable: true,
            ..SimCheckOptions::default()
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
    /// Replicas restarted from their disk.
    pub restarts_from_disk: u64,
    /// Log batches those restarts replayed.
    pub replayed: u64,
    /// Restarts whose log replay stopped at a torn or damaged record.
    pub torn: u64,
    /// Transfers that were catch-ups (only the missing commands).
    pub catch_ups: u64,
    /// Whole-group outages.
    pub outages: u64,
    /// Recoveries completed (a recovering group chose a state).
    pub recoveries: u64,
    /// Replicas that halted on an undecodable command.
    pub halts: u64,
    /// Syncs that failed (the replica stopped).
    pub failed_syncs: u64,
    /// Commands acknowledged after their log record was synced (Logged).
    pub acknowledged: u64,
    /// The simulator's trace, with [`SimCheckOptions::trace`].
    pub trace: Vec<String>,
}

/// The donors' catch-up tail, in commands (the replica's default is
/// larger; a short one here makes both catch-ups and full transfers after
/// a restart common).
const TAIL_COMMANDS: u64 = 200;

/// Position -> (digest, the first replica seen there, how many were).
type Seen = BTreeMap<u64, (u64, Pid, u32)>;

/// A replica's observations in its current view.
struct InView {
    view: ViewId,
    seen: Vec<(u64, u64)>,
}

/// A transfer in flight to a joiner: its sender and the plan it streams.
type Transfer<S> = (Pid, Plan<<S as StateMachine>::Image>);

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
    /// (joiner, view) -> (donor, what it sends).
    transfers: HashMap<(Pid, ViewId), Transfer<S>>,
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
    /// Per node: its disk (with [`SimCheckOptions::durability`]).
    disks: HashMap<u64, SimDisk>,
    /// Per node: the restart's clock, and whether the node founds its last
    /// view's recovering group.
    clocks: HashMap<u64, (RestartClock, bool)>,
    /// Nodes whose next incarnation founds a recovering group, with the
    /// incarnation that asked (its core carries over).
    recover_next: HashMap<u64, Pid>,
    /// The restart's wait (three suspicion timeouts).
    wait: Duration,
    /// Nodes whose next incarnation founds a fresh group (the mutation
    /// [`SimMutation::FounderClearsStore`]).
    found_next: HashSet<u64>,
    /// Per node: the position of its last checkpoint written.
    last_ckpt: HashMap<u64, u64>,
    /// Multicasts the cores asked for, sent at their process's next poll.
    outbox: HashMap<Pid, Vec<Bytes>>,
    /// Replicas that must stop (halted, or their log cannot be synced).
    stopping: HashSet<Pid>,
    /// Per replica, its own applied commands awaiting their log's sync:
    /// (records that must be synced, position, digest there).
    unacked: HashMap<Pid, Vec<(usize, u64, u64)>>,
    /// Acknowledged commands: position -> (digest there, origin).
    acked: BTreeMap<u64, (u64, Pid)>,
    /// View -> the founding view of its lineage (its group).
    roots: HashMap<ViewId, ViewId>,
    /// Lineages seen serving writes at once (each pair reported once).
    forks: BTreeSet<(ViewId, ViewId)>,
    /// The driver's own random stream (disk faults, damage), seeded from
    /// the seed; the simulator's stream is untouched.
    rng: ChaCha8Rng,
    /// Positions between checkpoints.
    ckpt_every: u64,
    /// The cluster's id (made by the first founder).
    cluster: crate::identity::ClusterId,
    /// Replicas whose group is blocked (a view change in progress).
    blocked: HashSet<Pid>,
    /// When the chaos phase ends: disk faults and damage only before.
    quiet: u64,
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
                c.set_tail_limits(TAIL_COMMANDS, usize::MAX);
                c
            });
            c.rejoin(pid);
            c
        })
    }

    fn drain(&mut self, pid: Pid) {
        let actions = self.core(pid).drain_actions();
        let mut own = 0;
        for a in actions {
            match a {
                Action::SendState(state) => {
                    let (joiner, view) = (state.joiner, state.view);
                    self.age.entry(joiner).or_insert(0);
                    let plan = Plan::new(state, 1);
                    self.transfers.insert((joiner, view), (pid, plan));
                }
                Action::GiveUp { .. } => {
                    self.report.gave_up += 1;
                    self.dead.insert(pid);
                }
                Action::StateRestored { caught_up, .. } => {
                    self.report.transfers += 1;
                    if caught_up {
                        self.report.catch_ups += 1;
                    }
                    self.fresh.remove(&pid);
                    self.record_last_view(pid);
                }
                Action::Log { first, payload } => {
                    if self.opts.durability == Some(Durability::Logged) {
                        self.disks
                            .entry(pid.node.0)
                            .or_default()
                            .append(first, &payload);
                    }
                }
                Action::Applied { .. } => own += 1,
                Action::Multicast(b) => self.outbox.entry(pid).or_default().push(b),
                Action::Halt { .. } => {
                    self.report.halts += 1;
                    self.stopping.insert(pid);
                }
                Action::ForeignCluster { ours, theirs } => self.report.problems.push(format!(
                    "{pid}: refused a donor of another cluster ({theirs}, ours {ours}) in a one-cluster run"
                )),
                Action::Recovered { position, .. } => {
                    self.report.recoveries += 1;
                    if let Some((clock, _)) = self.clocks.get_mut(&pid.node.0) {
                        clock.recovered();
                    }
                    self.check_recovered(pid, position);
                    // The recovered group goes on from `position`: states
                    // past it that no disk kept (never acknowledged) are
                    // forgotten, and the positions reused. What was
                    // acknowledged stays in `acked`, checked as they pass.
                    let _ = self.seen.split_off(&(position + 1));
                    self.record_last_view(pid);
                }
                Action::Retry { .. } => {}
            }
        }
        // One command applied by this drain (a live delivery, one command
        // per multicast): its position and state are known; it is
        // acknowledged once the log holding it is synced.
        if own == 1 && self.opts.durability == Some(Durability::Logged) {
            if let Some((pos, d)) = self.state(pid) {
                let records = self.disks.get(&pid.node.0).map_or(0, SimDisk::written);
                self.unacked.entry(pid).or_default().push((records, pos, d));
            }
        }
    }

    /// Under Memory durability, recovery must not go back past a
    /// checkpoint that a member of the recovering group holds.
    fn check_recovered(&mut self, pid: Pid, position: u64) {
        let Some(view) = self.cores.get(&pid).and_then(|c| c.view()).cloned() else {
            return;
        };
        for m in &view.members {
            let held = self
                .disks
                .get(&m.node.0)
                .and_then(SimDisk::checkpoint_position);
            if let Some(c) = held.filter(|c| *c > position) {
                self.report.problems.push(format!(
                    "{pid}: recovery chose position {position}, but {m} holds a checkpoint at {c}"
                ));
            }
        }
    }

    /// The identity's last view, written once the replica holds the
    /// group's state in it (never while recovering or awaiting it).
    fn record_last_view(&mut self, pid: Pid) {
        if self.opts.durability.is_none() {
            return;
        }
        let Some(core) = self.cores.get(&pid) else {
            return;
        };
        if core.recovering() || core.phase() != Phase::Member || !core.readable() {
            return;
        }
        let Some(v) = core.view() else { return };
        let nodes: Vec<u64> = v.members.iter().map(|m| m.node.0).collect();
        let cluster = core.cluster();
        let disk = self.disks.entry(pid.node.0).or_default();
        disk.last_view = Some(nodes);
        disk.cluster = cluster;
    }

    /// Hands a ready transfer to its joiner once it has waited a little:
    /// what the donor's stream would carry ([`Plan::opening`],
    /// [`Plan::into_chunks`], a catch-up when the joiner's position allows).
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
        let have = core.catch_up_point();
        let Some((from, mut plan)) = self.transfers.remove(&(joiner, view)) else {
            return;
        };
        if from != donor {
            self.report
                .problems
                .push(format!("{joiner}: state from {from} but {donor} was named"));
            return;
        }
        plan.catch_up = plan.catch_up_from(have);
        let mut offer = plan.opening();
        let mut chunks: Option<Vec<Bytes>> = plan.into_chunks().map(|c| c.collect());
        if self.opts.mutation == Some(SimMutation::CatchUpWrongPosition)
            && let (Some(o), Some(c)) = (offer.as_mut(), chunks.as_mut())
            && o.catch_up.is_some()
            && !c.is_empty()
        {
            c.remove(0);
            o.chain = None;
        }
        if let Some((pos, kept)) = self.kept.remove(&joiner.node.0) {
            // The mutation: the loser's own state instead of the winner's.
            if let Some(o) = offer.as_mut() {
                o.position = pos;
                o.chain = None;
                o.catch_up = None;
            }
            chunks = Some(kept.into_iter().map(Bytes::from).collect());
        }
        let core = self.core(joiner);
        let unbuffered = core.buffered() == 0;
        match offer {
            None => core.state_refused(donor, view),
            Some(offer) => {
                core.state_begin(donor, view, offer);
                if let Some(chunks) = chunks {
                    let n = chunks.len() as u64;
                    let mut crc = crc32fast::Hasher::new();
                    for (i, c) in chunks.iter().enumerate() {
                        crc.update(c);
                        core.state_piece(donor, view, i as u64, true, c);
                    }
                    core.state_end(donor, view, n, crc.finalize());
                }
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
        // A recovering group's members hold their own disks' states until
        // recovery chooses one: not the group's state yet.
        if core.phase() != Phase::Member || !core.readable() || core.recovering() {
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
        if let Some(&(d0, origin)) = self.acked.get(&pos)
            && d0 != d
        {
            self.report.problems.push(format!(
                "an acknowledged command is lost: {origin} acknowledged position {pos} with state {d0:#x}, {pid} holds {d:#x} there"
            ));
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

impl<S: StateMachine> Driver<S> {
    /// A replica restarts: from its disk (through the real restart path,
    /// [`restore_local`]), asking the cluster, with the restart's clock
    /// running; or, founding, as the recovering group's founder (its core
    /// carried over from the incarnation that asked).
    fn on_started(&mut self, now: u64, pid: Pid, founds: bool) {
        let node = pid.node.0;
        if self.opts.durability.is_none() || self.carry.contains_key(&node) {
            return;
        }
        if founds {
            if let Some(old) = self.recover_next.remove(&node)
                && let Some(mut c) = self.cores.remove(&old)
            {
                self.in_view.remove(&old);
                self.last_view.remove(&old);
                c.rejoin(pid);
                c.start_recovery(RecoveryRule::LastViews);
                self.fresh.insert(pid);
                self.cores.insert(pid, c);
            }
            return;
        }
        self.recover_next.remove(&node);
        let disk = self.disks.entry(node).or_default();
        if !disk.has_state() {
            return;
        }
        if self.opts.mutation == Some(SimMutation::FounderClearsStore) {
            disk.clear();
            self.found_next.insert(node);
            return;
        }
        let mut c = ReplicaCore::new(pid, (self.m.new)(), 0, None);
        c.set_journal(self.opts.journal, usize::MAX);
        c.set_tail_limits(TAIL_COMMANDS, usize::MAX);
        let last = disk.last_view.clone().unwrap_or_default();
        c.set_last_view(last.clone());
        c.set_cluster(disk.cluster);
        let logged = self.opts.durability == Some(Durability::Logged);
        let r = restore_local(&*disk, &mut c, logged);
        self.report.restarts_from_disk += 1;
        self.report.replayed += r.replayed;
        if r.stopped.is_some() {
            self.report.torn += 1;
        }
        if let Some(why) = r.rejected {
            self.report
                .problems
                .push(format!("{pid}: its checkpoint was rejected: {why}"));
        }
        c.rejoin(pid);
        let founder = last.iter().min() == Some(&node);
        let wait = self.wait;
        let clock = self
            .clocks
            .entry(node)
            .or_insert_with(|| (RestartClock::new(wait), false));
        clock.0.restarting(Duration::from_micros(now), founder);
        clock.1 = founder;
        if founder && last.len() <= 1 {
            // Alone in its last view: nobody to ask; recover at once.
            self.found_next.insert(node);
            self.recover_next.insert(node, pid);
        }
        self.fresh.insert(pid);
        self.cores.insert(pid, c);
    }

    /// A crash: the disk loses what was not synced; memory is gone.
    fn on_crashed(&mut self, pid: Pid) {
        let node = pid.node.0;
        if let Some(d) = self.disks.get_mut(&node) {
            d.crash(&mut self.rng);
        }
        self.cores.remove(&pid);
        self.carry.remove(&node);
        self.dead.insert(pid);
        self.in_view.remove(&pid);
        self.last_view.remove(&pid);
        self.unacked.remove(&pid);
        self.outbox.remove(&pid);
        self.stopping.remove(&pid);
        self.blocked.remove(&pid);
    }

    /// What the replica's runtime does between events: send what the core
    /// asked to multicast, sync the disk (acknowledging what it covers),
    /// checkpoint, stop when it must, and run the restart's clock.
    fn on_poll(&mut self, now: u64, pid: Pid) -> Vec<Directive> {
        let node = pid.node.0;
        let mut out: Vec<Directive> = self
            .outbox
            .remove(&pid)
            .unwrap_or_default()
            .into_iter()
            .map(Directive::Multicast)
            .collect();
        if self.found_next.remove(&node) {
            out.push(Directive::Found);
            return out;
        }
        if self.dead.contains(&pid) {
            return out;
        }
        if self.stopping.remove(&pid) {
            out.push(Directive::Crash);
            return out;
        }
        if self.opts.durability.is_some() && !self.storage(now, pid) {
            out.push(Directive::Crash);
            return out;
        }
        let Some(core) = self.cores.get(&pid) else {
            return out;
        };
        let wait = self.wait;
        let (clock, _) = self
            .clocks
            .entry(node)
            .or_insert_with(|| (RestartClock::new(wait), false));
        let seen = Observed {
            phase: core.phase(),
            recovering: core.recovering(),
            members: core.view().map_or(0, |v| v.members.len()),
            can_ask: true,
            blocked: self.blocked.contains(&pid),
        };
        match clock.poll(Duration::from_micros(now), seen) {
            RestartStep::Wait => {}
            RestartStep::FoundRecovering => {
                self.recover_next.insert(node, pid);
                out.push(Directive::Found);
            }
            // Asking again is a new incarnation that restarts from disk.
            RestartStep::AskAgain => out.push(Directive::Crash),
        }
        out
    }

    /// Sometimes syncs the disk (a sync may fail: under Logged the replica
    /// then stops, returning `false`), and checkpoints every so often.
    fn storage(&mut self, now: u64, pid: Pid) -> bool {
        let node = pid.node.0;
        if self.rng.random_bool(0.2) {
            let fails = now < self.quiet && self.rng.random_bool(0.002);
            let disk = self.disks.entry(node).or_default();
            if !disk.sync(fails) {
                self.report.failed_syncs += 1;
                if self.opts.durability == Some(Durability::Logged) {
                    self.unacked.remove(&pid);
                    return false;
                }
            }
            let synced = disk.synced();
            let list = self.unacked.remove(&pid).unwrap_or_default();
            let (done, rest): (Vec<_>, Vec<_>) = list.into_iter().partition(|x| x.0 <= synced);
            if !rest.is_empty() {
                self.unacked.insert(pid, rest);
            }
            for (_, pos, d) in done {
                self.acknowledge(pid, pos, d);
            }
        }
        let Some(core) = self.cores.get(&pid) else {
            return true;
        };
        if core.phase() != Phase::Member || !core.readable() || core.recovering() {
            return true;
        }
        let last = self.last_ckpt.get(&node).copied().unwrap_or(0);
        if core.position() >= last + self.ckpt_every {
            let c = SimCheckpoint {
                position: core.position(),
                chain: core.chain(),
                chunks: chunks_of(core.machine().image()),
            };
            self.last_ckpt.insert(node, c.position);
            self.disks.entry(node).or_default().write_checkpoint(c);
        }
        true
    }

    fn acknowledge(&mut self, pid: Pid, pos: u64, d: u64) {
        self.report.acknowledged += 1;
        if self.opts.policy != PartitionPolicy::PrimaryComponent {
            return;
        }
        match self.acked.get(&pos) {
            Some(&(d0, o)) if d0 != d => self.report.problems.push(format!(
                "two states acknowledged at position {pos}: {o} with {d0:#x}, {pid} with {d:#x}"
            )),
            Some(_) => {}
            None => {
                self.acked.insert(pos, (d, pid));
            }
        }
    }

    /// Now and then, a delivered command this replica cannot decode
    /// (damage, or another version's command). Under the mutation
    /// [`SimMutation::SkipUndecodable`] the replica skips it instead.
    fn damage(&mut self, now: u64, payload: Bytes) -> Bytes {
        if !self.opts.undecodable || now >= self.quiet || !self.rng.random_bool(0.0005) {
            return payload;
        }
        let Ok(mut entries) = decode_batch(&payload) else {
            return payload;
        };
        let Some(i) = entries.iter().position(|e| matches!(e, Entry::Cmd { .. })) else {
            return payload;
        };
        if self.opts.mutation == Some(SimMutation::SkipUndecodable) {
            entries.remove(i);
        } else if let Entry::Cmd { cmd, .. } = &mut entries[i] {
            // Not a postcard u64: eleven continuation bytes.
            *cmd = Bytes::from_static(&[0xff; 11]);
        }
        encode_batch(&entries).unwrap_or(payload)
    }

    /// Every serving replica belongs to one group: the views they serve in
    /// descend from one founding view.
    fn check_groups(&mut self) {
        let mut serving: BTreeMap<ViewId, Pid> = BTreeMap::new();
        for (pid, core) in &self.cores {
            if self.dead.contains(pid) || !core.serving() {
                continue;
            }
            if let Some(root) = core.view().and_then(|v| self.roots.get(&v.id)) {
                serving.entry(*root).or_insert(*pid);
            }
        }
        let groups: Vec<(ViewId, Pid)> = serving.into_iter().collect();
        for w in groups.windows(2) {
            let ((a, pa), (b, pb)) = (w[0], w[1]);
            if self.forks.insert((a, b)) {
                self.report.problems.push(format!(
                    "two groups serve writes at once: {pa} in the group founded at {a}, {pb} in the one founded at {b}"
                ));
            }
        }
    }

    /// Files `view`'s founding view: its own if it is a founding (one
    /// member, just joined), its predecessor's for a member carried over.
    fn root_view(&mut self, pid: Pid, view: &vsync_core::View, joined: bool) {
        let root = if joined && view.members.len() == 1 {
            Some(view.id)
        } else if !joined {
            self.last_view
                .get(&pid)
                .and_then(|v| self.roots.get(&v.id))
                .copied()
        } else {
            None
        };
        if let Some(r) = root {
            self.roots.entry(view.id).or_insert(r);
        }
    }
}

impl<S: StateMachine> Observer for Driver<S> {
    fn event(&mut self, now: u64, pid: Pid, ev: &AppEvent) {
        if self.dead.contains(&pid) {
            return;
        }
        match ev {
            AppEvent::View { view, joined } => {
                self.blocked.remove(&pid);
                if let Some((clock, _)) = self.clocks.get_mut(&pid.node.0) {
                    clock.admitted();
                }
                self.root_view(pid, view, *joined);
                self.last_view.insert(pid, view.clone());
                self.file(pid, Some(view.id));
                let cluster = self.cluster;
                let core = self.core(pid);
                if *joined && view.members.len() == 1 && core.cluster().is_none() {
                    // A founder makes the cluster's id.
                    core.set_cluster(Some(cluster));
                }
                core.on_view(view.clone());
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
                self.record_last_view(pid);
            }
            AppEvent::Blocked { .. } => {
                self.blocked.insert(pid);
            }
            AppEvent::Deliver { payload, .. } => {
                let payload = self.damage(now, payload.clone());
                self.core(pid).on_deliver(payload);
            }
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
        self.check_groups();
    }

    fn begin(&mut self, profile: &vsync_core::sim::Profile) {
        self.wait = Duration::from_micros(3 * profile.suspect_timeout);
        self.quiet = profile.chaos;
    }

    fn started(&mut self, now: u64, pid: Pid, founds: bool) {
        self.on_started(now, pid, founds);
    }

    fn crashed(&mut self, _now: u64, pid: Pid) {
        self.on_crashed(pid);
    }

    fn poll(&mut self, now: u64, pid: Pid) -> Vec<Directive> {
        let out = self.on_poll(now, pid);
        if self.cores.contains_key(&pid) && !self.dead.contains(&pid) {
            self.drain(pid);
            self.check(pid);
        }
        self.check_groups();
        out
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
        disks: HashMap::new(),
        clocks: HashMap::new(),
        recover_next: HashMap::new(),
        wait: Duration::from_secs(1),
        found_next: HashSet::new(),
        last_ckpt: HashMap::new(),
        outbox: HashMap::new(),
        stopping: HashSet::new(),
        unacked: HashMap::new(),
        acked: BTreeMap::new(),
        roots: HashMap::new(),
        forks: BTreeSet::new(),
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_d15c),
        ckpt_every: 5 + seed % 40,
        cluster: crate::identity::ClusterId(u128::from(seed) + 1),
        blocked: HashSet::new(),
        quiet: u64::MAX,
    }));
    let handle: Arc<Mutex<dyn Observer>> = driver.clone();
    let sim_opts = SimOptions {
        size: opts.size,
        policy: Some(opts.policy),
        observer: Some(ObserverHandle(handle)),
        outages: opts.outages,
        trace: opts.trace,
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
    report.outages = r.outages;
    report.trace = r.trace;
    // Nothing acknowledged is lost: the final view reaches the newest
    // acknowledged position (its states there are compared as they pass).
    if let Some((&pos, &(_, origin))) = d.acked.last_key_value() {
        for &(p, at, _) in &finals {
            if at < pos {
                report.problems.push(format!(
                    "an acknowledged command is lost: {origin} acknowledged position {pos}, {p} ends at {at}"
                ));
            }
        }
    }
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
