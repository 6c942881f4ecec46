//! Harnesses shared by the fuzz targets and the corpus generator.
//!
//! [`Group`] is a three-member group on a perfect in-memory network with a
//! fourth engine that has not joined. A fuzz input is a sequence of
//! postcard-encoded engine messages, each prefixed by one byte choosing the
//! receiver and the claimed sender (a member, the outsider, or an unknown
//! process); between injections the group runs normally. Whatever arrives,
//! no engine may panic, and each engine's own event stream must stay
//! well-formed (see [`Group::check`]). Injected messages first pass
//! `vsync_net::guard`, as in a running process.

/// The RESP parser of vsync-kv, compiled from its source file (the
/// examples crate itself pulls in sled, axum and redis, which the fuzzer
/// does not need).
#[path = "../../examples/src/kv/resp.rs"]
pub mod resp;

use bytes::Bytes;
use std::collections::{HashSet, VecDeque};
use vsync_core::{AppEvent, Config, Engine, Message, MsgId, Output, Pid, Target};

/// A small live group on a perfect network.
#[derive(Clone)]
pub struct Group {
    /// Members 1..=3 and the outsider 4.
    pub engines: Vec<Engine>,
    inbox: VecDeque<(u64, Pid, Pid, Message)>,
    now: u64,
    /// Every message transmitted, for the corpus generator.
    pub log: Vec<Message>,
    /// Per engine: last view epoch, last delivered position, message ids.
    seen: Vec<(u64, u64, HashSet<MsgId>)>,
}

impl Default for Group {
    fn default() -> Self {
        Self::new()
    }
}

impl Group {
    /// Founds a group of three and lets it settle; a fourth engine is
    /// started but never joins.
    pub fn new() -> Self {
        let mut g = Group {
            engines: Vec::new(),
            inbox: VecDeque::new(),
            now: 1,
            log: Vec::new(),
            seen: Vec::new(),
        };
        for n in 1..=4u64 {
            let mut e = Engine::new(Pid::new(n, 1), Config::with_suspect_timeout(100_000));
            if n == 1 {
                e.found(g.now);
            } else if n <= 3 {
                e.join(g.now);
            }
            g.engines.push(e);
            g.seen.push((0, 0, HashSet::new()));
            g.run(60_000);
        }
        for i in 0..3 {
            let _ = g.engines[i].multicast(g.now, Bytes::from(vec![i as u8; 8]));
        }
        g.run(20_000);
        g
    }

    /// Delivers `msg` to engine `to` (mod 4) as if sent by `from`, if it
    /// passes the guard that vsync-net's runtime applies to every peer
    /// message before its engine (`vsync_net::guard`): this is what reaches
    /// an engine in a running process.
    pub fn inject(&mut self, to: usize, from: Pid, msg: Message) {
        let i = to % self.engines.len();
        let e = &self.engines[i];
        let members = e.view().map_or(1, |v| v.members.len());
        if vsync_net::guard::check(&msg, members, e.config().window).is_err() {
            return;
        }
        self.engines[i].handle_message(self.now, from, msg);
        self.drain();
    }

    /// Lets `micros` of virtual time pass on the perfect network.
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

    fn drain(&mut self) {
        for i in 0..self.engines.len() {
            let from = self.engines[i].pid();
            while let Some(o) = self.engines[i].poll_output() {
                match o {
                    Output::Transmit { to, msg } => {
                        let to: Vec<Pid> = match to {
                            Target::One(p) => vec![p],
                            Target::Many(v) => v,
                            Target::Seeds => vec![Pid::new(1, 1)],
                        };
                        if self.log.len() < 10_000 {
                            self.log.push(msg.clone());
                        }
                        for t in to {
                            self.inbox.push_back((self.now + 100, from, t, msg.clone()));
                        }
                    }
                    Output::Event(ev) => Self::observe(&mut self.seen[i], &ev),
                }
            }
        }
    }

    /// The invariants of one engine's own event stream: view epochs only
    /// grow, totally ordered (total and safe) deliveries have increasing
    /// positions in each view (they pass over the positions of FIFO and
    /// causal messages, which are delivered at position 0), and no message
    /// is delivered twice. That no member skips a position another
    /// delivered is the checker's to say (across processes).
    fn observe(seen: &mut (u64, u64, HashSet<MsgId>), ev: &AppEvent) {
        match ev {
            AppEvent::View { view, .. } => {
                assert!(
                    view.id.epoch > seen.0 || seen.0 == 0,
                    "view epoch went from {} to {}",
                    seen.0,
                    view.id.epoch
                );
                seen.0 = view.id.epoch;
                seen.1 = 0;
            }
            AppEvent::Deliver { msg, pos, mode, .. } => {
                // Total and safe messages come in increasing positions.
                // Every message has a position, but FIFO and causal ones
                // are delivered outside the order, at 0: the ordered
                // deliveries pass over their positions.
                if mode.is_ordered() {
                    assert!(
                        *pos > seen.1,
                        "position {pos} delivered after {}",
                        seen.1
                    );
                    seen.1 = *pos;
                } else {
                    assert_eq!(*pos, 0, "an unordered delivery has a position");
                }
                assert!(seen.2.insert(*msg), "{msg:?} delivered twice");
            }
            _ => {}
        }
    }

    /// Runs a fuzz input: see the crate docs. Each input starts from a
    /// clone of one settled group.
    pub fn run_input(data: &[u8]) {
        static TEMPLATE: std::sync::OnceLock<Group> = std::sync::OnceLock::new();
        let mut g = TEMPLATE.get_or_init(Group::new).clone();
        let mut rest = data;
        let mut steps = 0;
        while let Some((&sel, tail)) = rest.split_first() {
            steps += 1;
            if steps > 64 {
                break;
            }
            let Ok((msg, tail)) = postcard::take_from_bytes::<Message>(tail) else {
                break;
            };
            rest = tail;
            let to = (sel & 3) as usize;
            let from = match (sel >> 2) & 7 {
                0..=2 => Pid::new(((sel >> 2) & 3) as u64 + 1, 1),
                3 => Pid::new(4, 1),
                4 => Pid::new(1, 2),
                _ => Pid::new(9, u64::from(sel >> 5)),
            };
            g.inject(to, from, msg);
            g.run(u64::from(sel >> 4) * 1_000);
        }
        g.run(150_000);
    }
}
