//! A perfect in-memory network for engine-level tests.
#![allow(dead_code)]

use bytes::Bytes;
use std::collections::VecDeque;
use vsync_core::{AppEvent, Config, Engine, Message, Output, Pid, Target};

/// A perfect network: every message arrives, in order, after 100 µs.
pub struct Net {
    pub engines: Vec<Engine>,
    pub inbox: VecDeque<(u64, Pid, Pid, Message)>,
    pub events: Vec<Vec<AppEvent>>,
    pub now: u64,
    /// Crashed engines: they neither receive nor act.
    pub dead: Vec<bool>,
    /// The largest message sent so far, postcard-encoded, in bytes.
    pub max_msg_bytes: usize,
    /// Cut links, as (from node, to node): their messages are dropped.
    pub cut: Vec<(u64, u64)>,
}

impl Net {
    pub fn new() -> Self {
        Net {
            engines: Vec::new(),
            inbox: VecDeque::new(),
            events: Vec::new(),
            now: 0,
            dead: Vec::new(),
            max_msg_bytes: 0,
            cut: Vec::new(),
        }
    }

    pub fn add(&mut self, node: u64, found: bool) -> usize {
        self.add_with(node, found, Config::with_suspect_timeout(100_000))
    }

    pub fn add_with(&mut self, node: u64, found: bool, config: Config) -> usize {
        self.add_pid(Pid::new(node, 1), found, config)
    }

    /// Adds a process (any incarnation) that founds a group or joins.
    pub fn add_pid(&mut self, pid: Pid, found: bool, config: Config) -> usize {
        let mut e = Engine::new(pid, config);
        if found {
            e.found(self.now)
        } else {
            e.join(self.now)
        }
        self.engines.push(e);
        self.events.push(Vec::new());
        self.dead.push(false);
        self.drain();
        self.engines.len() - 1
    }

    pub fn drain(&mut self) {
        for i in 0..self.engines.len() {
            let from = self.engines[i].pid();
            while let Some(o) = self.engines[i].poll_output() {
                if self.dead[i] {
                    continue;
                }
                match o {
                    Output::Transmit { to, msg } => {
                        let size = postcard::to_allocvec(&msg).map_or(0, |v| v.len());
                        self.max_msg_bytes = self.max_msg_bytes.max(size);
                        let to: Vec<Pid> = match to {
                            Target::One(p) => vec![p],
                            Target::Many(v) => v,
                            Target::Seeds => self
                                .engines
                                .iter()
                                .map(|e| e.pid())
                                .filter(|p| *p != from)
                                .collect(),
                        };
                        for t in to {
                            self.inbox.push_back((self.now + 100, from, t, msg.clone()));
                        }
                    }
                    Output::Event(ev) => self.events[i].push(ev),
                }
            }
        }
    }

    /// Cuts every link between the nodes of `a` and those of `b`, both
    /// ways.
    pub fn partition(&mut self, a: &[u64], b: &[u64]) {
        for x in a {
            for y in b {
                self.cut.push((*x, *y));
                self.cut.push((*y, *x));
            }
        }
    }

    /// Runs the network for `micros` of virtual time.
    pub fn run(&mut self, micros: u64) {
        let end = self.now + micros;
        while self.now < end {
            self.now += 100;
            while self.inbox.front().is_some_and(|m| m.0 <= self.now) {
                let Some((_, from, to, msg)) = self.inbox.pop_front() else {
                    break;
                };
                if self.cut.contains(&(from.node.0, to.node.0)) {
                    continue;
                }
                if let Some(i) = self.engines.iter().position(|e| e.pid() == to)
                    && !self.dead[i]
                {
                    self.engines[i].handle_message(self.now, from, msg);
                }
            }
            for (i, e) in self.engines.iter_mut().enumerate() {
                if self.dead[i] {
                    continue;
                }
                if e.poll_timeout().is_some_and(|t| t <= self.now) {
                    e.handle_timeout(self.now);
                }
            }
            self.drain();
        }
    }
}

/// The payloads delivered in `evs`.
pub fn delivered(evs: &[AppEvent]) -> Vec<Bytes> {
    evs.iter()
        .filter_map(|e| match e {
            AppEvent::Deliver { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

/// Runs up to `max` simulator seeds (group sizes 3 to 7) with the mutation
/// `m`, the delivery modes and policy given (defaults otherwise), and
/// returns the guarantees the first failing seed violated (empty if none
/// did): the mutation tests' common loop.
pub fn mutated_seeds(
    m: vsync_core::engine::Mutations,
    max: u64,
    modes: Option<Vec<vsync_core::Delivery>>,
    policy: Option<vsync_core::checker::Policy>,
) -> Vec<vsync_core::checker::Guarantee> {
    for seed in 0..max {
        let opts = vsync_core::sim::SimOptions {
            size: Some(3 + (seed % 5) as usize),
            mutations: m.clone(),
            modes: modes.clone(),
            policy,
            ..vsync_core::sim::SimOptions::default()
        };
        let r = vsync_core::sim::run(seed, &opts);
        if !r.violations.is_empty() {
            return r.violations.iter().map(|v| v.guarantee).collect();
        }
    }
    Vec::new()
}
