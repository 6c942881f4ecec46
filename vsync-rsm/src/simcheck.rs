//! Replicas in the deterministic simulator of [`vsync_core::sim`]: a
//! [`ReplicaCore`] per simulated process, driven by the engine's events
//! through the simulator's [`Observer`] hook, with state transfer done out
//! of band (the image taken at the donor's `SendState` is handed to the
//! joiner after it has buffered some deliveries). After every event it
//! checks that every replica at a given position holds the same state, and
//! at the end that the members of the final view agree.
//!
//! Use it on your own state machine with [`check_seed`]; the crate's tests
//! run it over hundreds of seeds, `cargo run -p vsync-rsm --release
//! --example sim -- --seeds N` over more.

use crate::machine::{SnapshotImage, StateMachine};
use crate::sansio::{Action, Phase, ReplicaCore};
use crate::wire::{Entry, encode_batch};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
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
}

struct Pending {
    donor: Pid,
    position: u64,
    chunks: Option<Vec<Vec<u8>>>,
}

struct Driver<S: StateMachine> {
    m: SimMachine<S>,
    cores: HashMap<Pid, ReplicaCore<S>>,
    dead: std::collections::HashSet<Pid>,
    transfers: HashMap<(Pid, ViewId), Pending>,
    age: HashMap<Pid, u32>,
    seen: BTreeMap<u64, (u64, Pid, u32)>,
    report: SeedReport,
    last_view: HashMap<Pid, vsync_core::View>,
}

impl<S: StateMachine> Driver<S> {
    fn core(&mut self, pid: Pid) -> &mut ReplicaCore<S> {
        let new = self.m.new;
        self.cores.entry(pid).or_insert_with(|| {
            let mut c = ReplicaCore::new(pid, new(), 0, None);
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
                    ..
                } => {
                    let chunks = image.map(|mut i| {
                        let mut v = Vec::new();
                        while let Some(c) = i.next_chunk() {
                            v.push(c);
                        }
                        v
                    });
                    self.transfers.insert(
                        (joiner, view),
                        Pending {
                            donor: pid,
                            position,
                            chunks,
                        },
                    );
                }
                Action::GiveUp { .. } => {
                    self.report.gave_up += 1;
                    self.dead.insert(pid);
                }
                Action::StateRestored { .. } => self.report.transfers += 1,
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
        let Some(p) = self.transfers.remove(&(joiner, view)) else {
            return;
        };
        if p.donor != donor {
            self.report.problems.push(format!(
                "{joiner}: state from {} but {donor} was named",
                p.donor
            ));
            return;
        }
        let core = self.core(joiner);
        match p.chunks {
            None => core.state_refused(donor, view),
            Some(chunks) => {
                core.state_begin(donor, view, p.position, None);
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
        self.check(joiner);
    }

    fn check(&mut self, pid: Pid) {
        if self.dead.contains(&pid) {
            return;
        }
        let Some(core) = self.cores.get(&pid) else {
            return;
        };
        if core.phase() != Phase::Member || !core.readable() {
            return;
        }
        let pos = core.position();
        let d = (self.m.digest)(core.machine());
        self.report.max_position = self.report.max_position.max(pos);
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
}

impl<S: StateMachine> Observer for Driver<S> {
    fn event(&mut self, _now: u64, pid: Pid, ev: &AppEvent) {
        if self.dead.contains(&pid) {
            return;
        }
        match ev {
            AppEvent::View { view, .. } => {
                self.last_view.insert(pid, view.clone());
                self.core(pid).on_view(view.clone());
            }
            AppEvent::Deliver { payload, .. } => self.core(pid).on_deliver(payload.clone()),
            AppEvent::SendState { joiner, view } => self.core(pid).on_send_state(*joiner, *view),
            AppEvent::AwaitState { donor, view } => {
                self.age.insert(pid, 0);
                self.core(pid).on_await_state(*donor, *view);
            }
            AppEvent::Removed { .. } | AppEvent::Left { .. } => {
                self.core(pid).on_removed();
                self.dead.insert(pid);
                self.last_view.remove(&pid);
            }
            _ => {}
        }
        if let Some(a) = self.age.get_mut(&pid) {
            *a += 1;
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
/// state equality (see the module documentation).
pub fn check_seed<S: StateMachine>(seed: u64, size: Option<usize>, m: SimMachine<S>) -> SeedReport {
    let driver = Arc::new(Mutex::new(Driver {
        m,
        cores: HashMap::new(),
        dead: Default::default(),
        transfers: HashMap::new(),
        age: HashMap::new(),
        seen: BTreeMap::new(),
        report: SeedReport {
            seed,
            ..SeedReport::default()
        },
        last_view: HashMap::new(),
    }));
    let handle: Arc<Mutex<dyn Observer>> = driver.clone();
    let opts = SimOptions {
        size,
        observer: Some(ObserverHandle(handle)),
        ..SimOptions::default()
    };
    let r = sim::run(seed, &opts);
    let mut d = match driver.lock() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let mut report = std::mem::take(&mut d.report);
    for v in &r.violations {
        report.problems.push(format!("engine: {v:?}"));
    }
    report.compared = d.seen.values().filter(|(_, _, n)| *n > 1).count() as u64;
    // The members of the final view (settled after the quiet phase) agree.
    let last = d.last_view.values().map(|v| v.id).max();
    let mut finals: Vec<(Pid, u64, u64)> = Vec::new();
    for (pid, core) in &d.cores {
        if d.dead.contains(pid)
            || core.phase() != Phase::Member
            || d.last_view.get(pid).map(|v| v.id) != last
        {
            continue;
        }
        finals.push((*pid, core.position(), (d.m.digest)(core.machine())));
    }
    finals.sort();
    if let Some(&(p0, pos0, d0)) = finals.first() {
        for &(p, pos, dg) in &finals[1..] {
            if pos != pos0 || dg != d0 {
                report.problems.push(format!(
                    "final states differ: {p0} at {pos0} ({d0:#x}), {p} at {pos} ({dg:#x})"
                ));
            }
        }
    }
    report
}
