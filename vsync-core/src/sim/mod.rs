//! The deterministic simulator: N engines on a virtual clock and a seeded,
//! hostile network.
//!
//! One seed fixes everything: the fault profile ([`Profile`]), every
//! message's fate (loss, duplication, delay, reordering), every fault's
//! timing and the workload. A run has a *chaos* phase (partitions, one-way
//! cuts, pauses, crashes and restarts, joins and leaves, all while members
//! multicast), then a *quiet* phase (links heal, paused processes resume, no
//! new faults, little loss) long enough for the group to settle. Every run's
//! histories go through the [checker](crate::checker), liveness included.
//!
//! Crashes are limited so that the primary component survives: a member is
//! crashed (or paused, or made to leave) only while the latest view is
//! settled and the remaining live members are a quorum of it. Partitions are
//! not limited: they heal.

mod observer;
mod profile;

pub use observer::{Directive, Observer, ObserverHandle};
pub use profile::Profile;

use crate::checker::{self, CheckOptions, Policy, Violation};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::engine::{AppEvent, Engine, Mutations, Output, Target};
use crate::history::{Event, History};
use crate::id::{Pid, ViewId};
use crate::message::Message;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

/// How to run a seed.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// Force the initial group size (otherwise drawn from the seed, 1 to 7).
    pub size: Option<usize>,
    /// Deliberate bugs, to show that the checker catches them.
    pub mutations: Mutations,
    /// Keep a readable trace of every event.
    pub trace: bool,
    /// The partition policy every engine runs.
    pub policy: Option<Policy>,
    /// Force the delivery modes multicasts are drawn from (otherwise drawn
    /// from the seed; see [`Profile::modes`]; safe only when an observer
    /// chooses the payloads).
    pub modes: Option<Vec<Delivery>>,
    /// A hook that sees every application event and may choose the
    /// workload's payloads ([`Observer`]).
    pub observer: Option<ObserverHandle>,
    /// Whole-group outages (only with an observer, which must found a
    /// group again: [`Observer::found`]; and only when the seed's profile
    /// crashes processes): up to twice in the chaos phase, every process
    /// crashes at once; all of them, or a majority, restart a little
    /// later, the others much later. Off, runs are exactly as before.
    pub outages: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct SimResult {
    /// The seed.
    pub seed: u64,
    /// The faults drawn from it.
    pub profile: Profile,
    /// Every process incarnation's history.
    pub histories: Vec<History>,
    /// What the checker found (empty when correct).
    pub violations: Vec<Violation>,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
    /// Messages the network carried.
    pub messages: u64,
    /// Deliveries, summed over processes.
    pub deliveries: u64,
    /// Views installed, summed over processes.
    pub installs: u64,
    /// Processes whose side lost a partition merge (partitionable policy).
    pub diverged: u64,
    /// Views that more than one successor followed (concurrent sides).
    pub forks: u64,
    /// Virtual time at the end, microseconds.
    pub end: u64,
    /// Whole-group outages ([`SimOptions::outages`]).
    pub outages: u64,
}

#[derive(Debug)]
enum Ev {
    Net { to: Pid, from: Pid, msg: Message },
    Timer { pid: Pid },
    Multicast { node: u64 },
    Fault,
    HealLinks { links: Vec<(u64, u64)> },
    CutLinks { links: Vec<(u64, u64)> },
    Resume { node: u64 },
    Restart { node: u64 },
    Join { node: u64 },
    CrashCoordinator { view: ViewId },
}

struct Proc {
    node: u64,
    inc: u64,
    engine: Option<Engine>,
    hist: usize,
    paused_until: u64,
    timer_at: Option<u64>,
    view: Option<ViewId>,
    sent: u64,
    restart_pending: bool,
}

struct Sim {
    rng: ChaCha8Rng,
    profile: Profile,
    opts: SimOptions,
    config: Config,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    procs: Vec<Proc>,
    histories: Vec<History>,
    blocked_links: BTreeSet<(u64, u64)>,
    trace: Vec<String>,
    messages: u64,
    next_node: u64,
    max_nodes: u64,
    outages: u64,
}

/// Runs one seed and checks it.
pub fn run(seed: u64, opts: &SimOptions) -> SimResult {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut profile = Profile::draw(&mut rng, opts.size);
    if let Some(m) = opts.modes.as_ref().filter(|m| !m.is_empty()) {
        profile.modes = m.clone();
    } else if opts.observer.is_some() {
        // Replicated state machines need the total order.
        profile.modes = vec![Delivery::Safe];
    }
    let mut config = Config::with_suspect_timeout(profile.suspect_timeout);
    config.policy = opts.policy.unwrap_or(Policy::PrimaryComponent);
    let mut sim = Sim {
        rng,
        profile: profile.clone(),
        opts: opts.clone(),
        config,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: HashMap::new(),
        procs: Vec::new(),
        histories: Vec::new(),
        blocked_links: BTreeSet::new(),
        trace: Vec::new(),
        messages: 0,
        next_node: profile.size as u64 + 1,
        max_nodes: profile.size as u64 + 3,
        outages: 0,
    };
    sim.start();
    let end = sim.run_to_end();
    let policy = sim.config.policy;
    let mut violations = checker::check_all(
        &sim.histories,
        &CheckOptions {
            policy,
            liveness: true,
        },
    );
    if end == u64::MAX {
        violations.push(Violation {
            guarantee: checker::Guarantee::Liveness,
            detail: "the simulation did not settle within its event budget".into(),
            pids: Vec::new(),
            view: None,
            msg: None,
        });
    }
    let deliveries = count(&sim.histories, |e| matches!(e, Event::Deliver { .. }));
    let installs = count(&sim.histories, |e| matches!(e, Event::Install { .. }));
    let diverged = count(&sim.histories, |e| matches!(e, Event::Diverged { .. }));
    let forks = count_forks(&sim.histories);
    SimResult {
        seed,
        profile,
        histories: sim.histories,
        violations,
        trace: sim.trace,
        messages: sim.messages,
        deliveries,
        installs,
        diverged,
        forks,
        end: sim.now,
        outages: sim.outages,
    }
}

/// Views with more than one distinct successor across the histories.
fn count_forks(h: &[History]) -> u64 {
    let mut succ: HashMap<ViewId, BTreeSet<ViewId>> = HashMap::new();
    for hist in h {
        let mut prev: Option<ViewId> = None;
        for r in &hist.records {
            if let Event::Install { view, .. } = &r.event {
                if let Some(p) = prev {
                    succ.entry(p).or_default().insert(view.id);
                }
                prev = Some(view.id);
            }
        }
    }
    succ.values().filter(|s| s.len() > 1).count() as u64
}

fn count(h: &[History], f: impl Fn(&Event) -> bool) -> u64 {
    h.iter()
        .flat_map(|h| &h.records)
        .filter(|r| f(&r.event))
        .count() as u64
}

impl Sim {
    fn quiet_start(&self) -> u64 {
        self.profile.chaos
    }

    fn end_time(&self) -> u64 {
        self.profile.chaos + 25 * self.profile.suspect_timeout
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.opts.trace {
            let l = line();
            self.trace.push(format!("{:>10} {}", self.now, l));
        }
    }

    fn start(&mut self) {
        if let Some(o) = &self.opts.observer {
            o.begin(&self.profile);
        }
        for node in 1..=self.profile.size as u64 {
            self.spawn(node, 1, node == 1);
            let idx = self.procs.len() - 1;
            if node == 1 {
                self.with_engine(idx, |e, now| e.found(now));
            } else {
                self.with_engine(idx, |e, now| e.join(now));
            }
            let first = self.rng.random_range(0..10_000);
            self.schedule(first, Ev::Multicast { node });
        }
        let first_fault = self.profile.fault_interval;
        self.schedule(first_fault, Ev::Fault);
    }

    fn spawn(&mut self, node: u64, inc: u64, founds: bool) {
        let pid = Pid::new(node, inc);
        let mut engine = Engine::new(pid, self.config.clone());
        engine.mutations = self.opts.mutations.clone();
        let mut h = History::new(pid);
        h.push(self.now, Event::Start);
        self.histories.push(h);
        let hist = self.histories.len() - 1;
        if let Some(p) = self.procs.iter_mut().find(|p| p.node == node) {
            p.inc = inc;
            p.engine = Some(engine);
            p.hist = hist;
            p.paused_until = 0;
            p.timer_at = None;
            p.view = None;
            p.restart_pending = false;
        } else {
            self.procs.push(Proc {
                node,
                inc,
                engine: Some(engine),
                hist,
                paused_until: 0,
                timer_at: None,
                view: None,
                sent: 0,
                restart_pending: false,
            });
        }
        self.log(|| format!("{pid} starts"));
        if let Some(o) = &self.opts.observer {
            o.started(self.now, pid, founds);
        }
    }

    /// Crashes a process: it emits nothing more; its history ends with a
    /// crash.
    fn crash(&mut self, idx: usize) {
        let Some(pid) = self.procs[idx].engine.as_ref().map(|e| e.pid()) else {
            return;
        };
        let hist = self.procs[idx].hist;
        self.histories[hist].push(self.now, Event::Crash);
        self.procs[idx].engine = None;
        self.procs[idx].timer_at = None;
        if let Some(o) = &self.opts.observer {
            o.crashed(self.now, pid);
        }
    }

    /// A whole-group outage: every process crashes; all of them, or a
    /// majority, restart after one to three suspicion timeouts, the others
    /// after eight to twelve.
    fn outage(&mut self) {
        let st = self.profile.suspect_timeout;
        let up: Vec<usize> = (0..self.procs.len())
            .filter(|i| self.procs[*i].engine.is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        self.outages += 1;
        self.log(|| "outage: every process crashes".to_string());
        for &i in &up {
            self.crash(i);
            self.procs[i].restart_pending = true;
        }
        let all = self.rng.random_bool(0.5);
        let soon = if all { up.len() } else { up.len() / 2 + 1 };
        let mut order = up;
        for i in (1..order.len()).rev() {
            let j = self.rng.random_range(0..=i);
            order.swap(i, j);
        }
        for (k, i) in order.into_iter().enumerate() {
            let delay = if k < soon {
                self.rng.random_range(st..3 * st)
            } else {
                self.rng.random_range(8 * st..12 * st)
            };
            let node = self.procs[i].node;
            self.schedule(self.now + delay, Ev::Restart { node });
        }
    }

    fn idx_of(&self, node: u64) -> Option<usize> {
        self.procs.iter().position(|p| p.node == node)
    }

    /// Runs `f` on a process's engine, then routes its outputs and re-arms
    /// its timer.
    fn with_engine(&mut self, idx: usize, f: impl FnOnce(&mut Engine, u64)) {
        let now = self.now;
        let Some(engine) = self.procs[idx].engine.as_mut() else {
            return;
        };
        f(engine, now);
        let outputs = engine.drain_outputs();
        let timeout = engine.poll_timeout();
        let pid = engine.pid();
        for o in outputs {
            self.output(idx, pid, o);
        }
        let p = &mut self.procs[idx];
        let timeout = timeout.map(|t| t.max(now));
        if p.engine.as_ref().map(|e| e.pid()) == Some(pid) && timeout != p.timer_at {
            p.timer_at = timeout;
            if let Some(t) = timeout {
                self.schedule(t, Ev::Timer { pid });
            }
        }
    }

    fn output(&mut self, idx: usize, pid: Pid, o: Output) {
        match o {
            Output::Transmit { to, msg } => {
                let dests: Vec<Pid> = match to {
                    Target::One(p) => vec![p],
                    Target::Many(v) => v,
                    Target::Seeds => self
                        .procs
                        .iter()
                        .filter(|p| p.node != pid.node.0)
                        .filter_map(|p| p.engine.as_ref().map(|e| e.pid()))
                        .collect(),
                };
                for d in dests {
                    self.transmit(pid, d, msg.clone());
                }
            }
            Output::Event(ev) => self.app_event(idx, pid, ev),
        }
    }

    fn app_event(&mut self, idx: usize, pid: Pid, ev: AppEvent) {
        let now = self.now;
        let hist = self.procs[idx].hist;
        if let Some(o) = &self.opts.observer {
            o.event(now, pid, &ev);
        }
        let rec = match ev {
            AppEvent::View { view, joined } => {
                self.procs[idx].view = Some(view.id);
                self.log(|| format!("{pid} installs {view}"));
                Some(Event::Install {
                    view,
                    joined,
                    donor: None,
                })
            }
            AppEvent::Deliver { msg, pos, mode, .. } => {
                let view = self.procs[idx].view.unwrap_or(msg.view);
                self.log(|| format!("{pid} delivers {msg} at {pos} ({mode:?})"));
                Some(Event::Deliver {
                    msg,
                    view,
                    pos,
                    mode,
                })
            }
            AppEvent::Sent { msg, mode } => Some(Event::Send { msg, mode }),
            AppEvent::Blocked { view } => {
                self.log(|| format!("{pid} blocked in {view}"));
                Some(Event::Blocked { view })
            }
            AppEvent::Diverged {
                view,
                split,
                winner,
            } => {
                self.log(|| {
                    format!(
                        "{pid} lost the merge: {view} gives way to {winner}, split at {}",
                        split.map_or("?".into(), |s| s.to_string())
                    )
                });
                Some(Event::Diverged {
                    view,
                    split,
                    winner: winner.id,
                })
            }
            AppEvent::Removed { view } => {
                self.log(|| format!("{pid} removed after {view}"));
                self.schedule_restart(idx);
                Some(Event::Removed { view })
            }
            AppEvent::Left { view } => {
                self.log(|| format!("{pid} left after {view}"));
                if self.now < self.quiet_start() && self.rng.random_bool(0.5) {
                    self.schedule_restart(idx);
                }
                Some(Event::Left { view })
            }
            AppEvent::Flushing { view } => {
                // Sometimes crash the coordinator in the middle of the flush,
                // so that another member must take over.
                if self.profile.crashes
                    && self.now < self.quiet_start()
                    && self.rng.random_bool(0.2)
                {
                    let at = self.now + self.rng.random_range(0..5_000);
                    self.schedule(at, Ev::CrashCoordinator { view });
                }
                None
            }
            AppEvent::AwaitState { donor, view } => {
                // The engine names the donor right after the install: note it
                // on that install's record (for the timeline's arrow).
                let install = self.histories[hist].records.iter_mut().rev().find_map(|r| {
                    match &mut r.event {
                        Event::Install {
                            view: v, donor: d, ..
                        } if v.id == view => Some(d),
                        _ => None,
                    }
                });
                if let Some(d) = install {
                    *d = Some(donor);
                }
                None
            }
            AppEvent::SendState { .. } => None,
        };
        if let Some(e) = rec {
            self.histories[hist].push(now, e);
        }
    }

    fn schedule_restart(&mut self, idx: usize) {
        if self.procs[idx].restart_pending {
            return;
        }
        self.procs[idx].restart_pending = true;
        let delay = self.rng.random_range(1..5) * self.profile.suspect_timeout;
        let node = self.procs[idx].node;
        self.schedule(self.now + delay, Ev::Restart { node });
    }

    fn transmit(&mut self, from: Pid, to: Pid, msg: Message) {
        if self.blocked_links.contains(&(from.node.0, to.node.0)) {
            self.log(|| format!("{from} -> {to} {} cut", msg.kind()));
            return;
        }
        let quiet = self.now >= self.quiet_start();
        let loss = if quiet {
            self.profile.loss.min(0.02)
        } else {
            self.profile.loss
        };
        if self.rng.random_bool(loss) {
            self.log(|| format!("{from} -> {to} {} lost", msg.kind()));
            return;
        }
        let copies = if !quiet && self.rng.random_bool(self.profile.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.profile.delay;
            let mut d = self.rng.random_range(lo..=hi);
            if !quiet && self.rng.random_bool(self.profile.spike) {
                d += self.rng.random_range(0..self.profile.spike_delay);
            }
            self.messages += 1;
            self.schedule(
                self.now + d,
                Ev::Net {
                    to,
                    from,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn live(&self, idx: usize) -> bool {
        self.procs[idx].engine.is_some() && self.procs[idx].paused_until <= self.now
    }

    /// Whether crashing, pausing or removing `victim` leaves the primary
    /// component able to go on.
    fn safe_to_fault(&self, victim: u64) -> bool {
        let latest = self
            .procs
            .iter()
            .filter_map(|p| p.engine.as_ref().and_then(|e| e.view()))
            .max_by_key(|v| v.id)
            .cloned();
        let Some(latest) = latest else { return false };
        let mut present = Vec::new();
        for m in &latest.members {
            let Some(idx) = self.idx_of(m.node.0) else {
                return false;
            };
            let p = &self.procs[idx];
            let Some(e) = p.engine.as_ref() else { continue };
            if e.pid() != *m {
                continue;
            }
            if !self.live(idx) {
                continue;
            }
            if e.view().map(|v| v.id) != Some(latest.id) || e.is_flushing() {
                return false;
            }
            if m.node.0 != victim {
                present.push(*m);
            }
        }
        latest.members.len() > 1 && latest.is_quorum(&present)
    }

    fn run_to_end(&mut self) -> u64 {
        let end = self.end_time();
        let mut budget: u64 = 20_000_000;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > end {
                self.now = end;
                return end;
            }
            budget -= 1;
            if budget == 0 {
                return u64::MAX;
            }
            self.now = t;
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.handle(ev);
        }
        end
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Net { to, from, msg } => {
                let Some(idx) = self.idx_of(to.node.0) else {
                    return;
                };
                let p = &self.procs[idx];
                if p.engine.as_ref().map(|e| e.pid()) != Some(to) {
                    return;
                }
                if p.paused_until > self.now {
                    let at = p.paused_until + self.rng.random_range(0..100);
                    self.schedule(at, Ev::Net { to, from, msg });
                    return;
                }
                self.log(|| match &msg {
                    Message::Suspect { .. }
                    | Message::NotMember { .. }
                    | Message::Commit { .. } => {
                        format!("{from} -> {to} {msg:?}")
                    }
                    _ => format!("{from} -> {to} {}", msg.kind()),
                });
                self.with_engine(idx, |e, now| e.handle_message(now, from, msg));
            }
            Ev::Timer { pid } => {
                let Some(idx) = self.idx_of(pid.node.0) else {
                    return;
                };
                let p = &mut self.procs[idx];
                if p.engine.as_ref().map(|e| e.pid()) != Some(pid) || p.timer_at != Some(self.now) {
                    return;
                }
                p.timer_at = None;
                if p.paused_until > self.now {
                    let at = p.paused_until;
                    p.timer_at = Some(at);
                    self.schedule(at, Ev::Timer { pid });
                    return;
                }
                self.with_engine(idx, |e, now| e.handle_timeout(now));
                self.poll_observer(idx, pid);
            }
            Ev::Multicast { node } => self.multicast(node),
            Ev::CrashCoordinator { view } => self.crash_coordinator(view),
            Ev::Fault => self.fault(),
            Ev::HealLinks { links } => {
                for l in links {
                    self.blocked_links.remove(&l);
                }
                self.log(|| "links healed".to_string());
            }
            Ev::CutLinks { links } => {
                // A flapping link: never into the quiet phase.
                if self.now < self.quiet_start() {
                    self.log(|| format!("links cut again: {links:?}"));
                    self.blocked_links.extend(links);
                }
            }
            Ev::Resume { node } => {
                self.log(|| format!("n{node} resumes"));
            }
            Ev::Restart { node } => {
                let Some(idx) = self.idx_of(node) else { return };
                let inc = self.procs[idx].inc + 1;
                if self.procs[idx].engine.is_some() {
                    let e = self.procs[idx].engine.as_ref();
                    if !e.is_some_and(|e| e.is_finished()) {
                        return;
                    }
                }
                self.spawn(node, inc, false);
                self.with_engine(idx, |e, now| e.join(now));
            }
            Ev::Join { node } => {
                self.spawn(node, 1, false);
                if let Some(idx) = self.idx_of(node) {
                    self.with_engine(idx, |e, now| e.join(now));
                }
                let at = self.now + self.rng.random_range(0..10_000);
                self.schedule(at, Ev::Multicast { node });
            }
        }
    }

    /// Carries out what the observer decided for a process
    /// ([`Observer::poll`]).
    fn poll_observer(&mut self, idx: usize, pid: Pid) {
        let Some(o) = self.opts.observer.clone() else {
            return;
        };
        if self.procs[idx].engine.as_ref().map(|e| e.pid()) != Some(pid) {
            return;
        }
        let mut found = false;
        for d in o.poll(self.now, pid) {
            match d {
                Directive::Multicast(b) => self.with_engine(idx, |e, now| {
                    let _ = e.multicast_with(now, b, Delivery::Safe);
                }),
                Directive::Crash => {
                    self.crash(idx);
                    self.log(|| format!("{pid} stops (its replica asked)"));
                    self.schedule_restart(idx);
                    return;
                }
                Directive::Found => found = true,
            }
        }
        let joining = self.procs[idx]
            .engine
            .as_ref()
            .is_some_and(|e| e.view().is_none() && !e.is_finished());
        if !(found && joining) {
            return;
        }
        // The joining incarnation stops (as the real replica shuts its
        // group down) and a new one founds.
        let hist = self.procs[idx].hist;
        self.histories[hist].push(self.now, Event::Crash);
        self.procs[idx].engine = None;
        self.log(|| format!("{pid} gives up joining and founds a group"));
        self.spawn(pid.node.0, pid.inc + 1, true);
        self.with_engine(idx, |e, now| e.found(now));
    }

    /// Crashes the coordinator of `view` during its flush, if the group
    /// keeps a primary component whatever the flush decides: the view has
    /// at least five members and the others that are live and have
    /// installed it form a quorum.
    fn crash_coordinator(&mut self, view: ViewId) {
        let v = self
            .procs
            .iter()
            .filter_map(|p| p.engine.as_ref().and_then(|e| e.view()))
            .find(|v| v.id == view)
            .cloned();
        let Some(v) = v else { return };
        let coord = v.members[0];
        let Some(idx) = self.idx_of(coord.node.0) else {
            return;
        };
        if self.procs[idx].engine.as_ref().map(|e| e.pid()) != Some(coord) || v.members.len() < 5 {
            return;
        }
        let present: Vec<Pid> = v
            .members
            .iter()
            .copied()
            .filter(|m| *m != coord)
            .filter(|m| {
                self.idx_of(m.node.0).is_some_and(|i| {
                    let e = self.procs[i].engine.as_ref();
                    self.live(i)
                        && e.map(|e| e.pid()) == Some(*m)
                        && e.and_then(|e| e.view()).map(|v| v.id) == Some(view)
                })
            })
            .collect();
        if !v.is_quorum(&present) || present.len() < 4 {
            return;
        }
        self.crash(idx);
        self.log(|| format!("{coord} (coordinator of {view}) crashes during the flush"));
        self.schedule_restart(idx);
    }

    fn multicast(&mut self, node: u64) {
        if self.now >= self.quiet_start() {
            return;
        }
        let gap = 1_000_000 / self.profile.rate.max(1);
        let next = self.now + self.rng.random_range(gap / 2..=gap * 3 / 2);
        self.schedule(next, Ev::Multicast { node });
        let Some(idx) = self.idx_of(node) else { return };
        if !self.live(idx) || self.procs[idx].sent >= 300 {
            return;
        }
        let Some(e) = self.procs[idx].engine.as_ref() else {
            return;
        };
        if e.queued() > 64 || e.is_finished() {
            return;
        }
        self.procs[idx].sent += 1;
        let n = self.procs[idx].sent;
        let custom = match &self.opts.observer {
            Some(o) => o.payload(Pid::new(node, self.procs[idx].inc), n),
            None => None,
        };
        let payload = custom.unwrap_or_else(|| Bytes::from(format!("n{node}:{n}")));
        let k = self.profile.modes.len();
        let mode = match k {
            0 | 1 => self.profile.modes.first().copied().unwrap_or_default(),
            _ => self.profile.modes[self.rng.random_range(0..k)],
        };
        self.with_engine(idx, |e, now| {
            let _ = e.multicast_with(now, payload, mode);
        });
    }

    fn fault(&mut self) {
        let now = self.now;
        if now >= self.quiet_start() {
            // Heal everything for the quiet phase.
            self.blocked_links.clear();
            for p in &mut self.procs {
                p.paused_until = p.paused_until.min(now);
            }
            self.log(|| "quiet phase: network healed".to_string());
            return;
        }
        let next = now
            + self.rng.random_range(
                self.profile.fault_interval / 2..=self.profile.fault_interval * 3 / 2,
            );
        self.schedule(next, Ev::Fault);
        let st = self.profile.suspect_timeout;
        let mut kinds = Vec::new();
        let pr = &self.profile;
        for (on, k) in [
            (pr.partitions, 0),
            (pr.one_way, 1),
            (pr.pauses, 2),
            (pr.crashes, 3),
            (pr.joins, 4),
            (pr.leaves, 5),
            (pr.flapping, 6),
        ] {
            if on {
                kinds.push(k);
            }
        }
        if self.opts.outages && self.opts.observer.is_some() && pr.crashes && self.outages < 2 {
            kinds.push(7);
        }
        if kinds.is_empty() {
            return;
        }
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        if kind == 7 {
            self.outage();
            return;
        }
        let nodes: Vec<u64> = self
            .procs
            .iter()
            .filter(|p| p.engine.is_some())
            .map(|p| p.node)
            .collect();
        if nodes.is_empty() {
            return;
        }
        let pick = nodes[self.rng.random_range(0..nodes.len())];
        let heal_at = now + self.rng.random_range(st / 2..6 * st);
        match kind {
            0 => {
                // Two or three sides (any of them may be empty).
                let k = self.rng.random_range(2..=3u64);
                let side_of: Vec<(u64, u64)> = nodes
                    .iter()
                    .map(|n| (*n, self.rng.random_range(0..k)))
                    .collect();
                let mut links = Vec::new();
                for (a, sa) in &side_of {
                    for (b, sb) in &side_of {
                        if sa != sb {
                            links.push((*a, *b));
                        }
                    }
                }
                self.log(|| format!("partition into {k} sides: {side_of:?}"));
                self.blocked_links.extend(links.iter().copied());
                self.schedule(heal_at, Ev::HealLinks { links });
            }
            1 => {
                let other = nodes[self.rng.random_range(0..nodes.len())];
                if other != pick {
                    self.log(|| format!("one-way cut n{pick} -> n{other}"));
                    self.blocked_links.insert((pick, other));
                    self.schedule(
                        heal_at,
                        Ev::HealLinks {
                            links: vec![(pick, other)],
                        },
                    );
                }
            }
            2 => {
                if self.safe_to_fault(pick)
                    && let Some(idx) = self.idx_of(pick)
                {
                    let until = now + self.rng.random_range(st / 4..3 * st);
                    self.procs[idx].paused_until = until;
                    self.log(|| format!("n{pick} paused until {until}"));
                    self.schedule(until, Ev::Resume { node: pick });
                }
            }
            3 => {
                if self.safe_to_fault(pick)
                    && let Some(idx) = self.idx_of(pick)
                {
                    self.crash(idx);
                    self.log(|| format!("n{pick} crashes"));
                    self.schedule_restart(idx);
                }
            }
            6 => {
                // A flapping link (or a flapping one-node partition): cut
                // and healed several times, at intervals around the
                // suspicion timeout.
                let other = nodes[self.rng.random_range(0..nodes.len())];
                let links: Vec<(u64, u64)> = if other != pick {
                    vec![(pick, other), (other, pick)]
                } else {
                    nodes
                        .iter()
                        .filter(|n| **n != pick)
                        .flat_map(|n| [(pick, *n), (*n, pick)])
                        .collect()
                };
                self.log(|| format!("flapping links {links:?}"));
                self.blocked_links.extend(links.iter().copied());
                let mut t = now;
                for _ in 0..self.rng.random_range(2..6) {
                    t += self.rng.random_range(st / 4..2 * st);
                    self.schedule(
                        t,
                        Ev::HealLinks {
                            links: links.clone(),
                        },
                    );
                    t += self.rng.random_range(st / 4..2 * st);
                    self.schedule(
                        t,
                        Ev::CutLinks {
                            links: links.clone(),
                        },
                    );
                }
                t += self.rng.random_range(st / 4..2 * st);
                self.schedule(t, Ev::HealLinks { links });
            }
            4 => {
                if self.next_node <= self.max_nodes {
                    let node = self.next_node;
                    self.next_node += 1;
                    self.schedule(now, Ev::Join { node });
                }
            }
            _ => {
                if self.safe_to_fault(pick)
                    && let Some(idx) = self.idx_of(pick)
                    && self.procs[idx]
                        .engine
                        .as_ref()
                        .is_some_and(|e| e.view().is_some())
                {
                    self.log(|| format!("n{pick} leaves"));
                    self.with_engine(idx, |e, now| e.leave(now));
                }
            }
        }
    }
}
