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
}

impl Net {
    pub fn new() -> Self {
        Net {
            engines: Vec::new(),
            inbox: VecDeque::new(),
            events: Vec::new(),
            now: 0,
        }
    }

    pub fn add(&mut self, node: u64, found: bool) -> usize {
        let mut e = Engine::new(Pid::new(node, 1), Config::with_suspect_timeout(100_000));
        if found {
            e.found(self.now)
        } else {
            e.join(self.now)
        }
        self.engines.push(e);
        self.events.push(Vec::new());
        self.drain();
        self.engines.len() - 1
    }

    pub fn drain(&mut self) {
        for i in 0..self.engines.len() {
            let from = self.engines[i].pid();
            while let Some(o) = self.engines[i].poll_output() {
                match o {
                    Output::Transmit { to, msg } => {
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

    /// Runs the network for `micros` of virtual time.
    pub fn run(&mut self, micros: u64) {
        let end = self.now + micros;
        while self.now < end {
            self.now += 100;
            while self.inbox.front().is_some_and(|m| m.0 <= self.now) {
                let Some((_, from, to, msg)) = self.inbox.pop_front() else {
                    break;
                };
                if let Some(e) = self.engines.iter_mut().find(|e| e.pid() == to) {
                    e.handle_message(self.now, from, msg);
                }
            }
            for e in &mut self.engines {
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
