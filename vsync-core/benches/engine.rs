//! Throughput of the sans-IO engine: safe (totally ordered, stable) delivery
//! in a group of in-memory engines on one thread, every member multicasting
//! 64-byte payloads.
//!
//! The driver is a minimal in-memory router: one queue of `(from, message)`
//! per engine. The group is formed before measuring; each measured iteration
//! has every member multicast a batch and routes messages until every member
//! has delivered every message of the round. Criterion's `elem/s` is the
//! number of deliveries per second per member.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;
use vsync_core::{AppEvent, Config, Engine, Message, Output, Pid, Target};

/// Multicasts per member per iteration.
const BATCH: u64 = 1000;
/// Payload size in bytes.
const PAYLOAD: usize = 64;
/// Safety valve: rounds of clock advance allowed before giving up.
const MAX_TICKS: usize = 100_000;

/// `n` engines and the in-memory network between them. Engine `i` is process
/// `Pid::new(i + 1, 1)`.
struct Cluster {
    engines: Vec<Engine>,
    /// Messages in flight to each engine: `(from, message)`.
    inbox: Vec<VecDeque<(Pid, Message)>>,
    /// Deliver events seen per engine.
    delivered: Vec<u64>,
    /// Size of the last view each engine installed.
    view_size: Vec<usize>,
    /// The virtual clock, in microseconds.
    now: u64,
}

fn index(pid: Pid) -> usize {
    (pid.node.0 - 1) as usize
}

impl Cluster {
    fn new(n: usize) -> Self {
        Cluster {
            engines: (0..n)
                .map(|i| Engine::new(Pid::new(i as u64 + 1, 1), Config::default()))
                .collect(),
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            delivered: vec![0; n],
            view_size: vec![0; n],
            now: 0,
        }
    }

    /// Forms the group: engine 0 founds it, the others join; routes and
    /// advances the virtual clock until every engine is in one view with all
    /// members and no view change is under way.
    fn form(&mut self) {
        let n = self.engines.len();
        self.engines[0].found(self.now);
        for e in &mut self.engines[1..] {
            e.join(self.now);
        }
        for _ in 0..MAX_TICKS {
            self.pump();
            let first = self.engines[0].view().map(|v| v.id);
            let formed = first.is_some()
                && self.engines.iter().all(|e| {
                    e.view()
                        .is_some_and(|v| Some(v.id) == first && v.members.len() == n)
                        && !e.is_flushing()
                })
                && self.view_size.iter().all(|&s| s == n);
            if formed {
                return;
            }
            self.tick();
        }
        panic!("the group of {n} did not form");
    }

    /// Advances the virtual clock to the earliest timer and fires the timers
    /// that are due.
    fn tick(&mut self) {
        let next = self
            .engines
            .iter()
            .filter_map(Engine::poll_timeout)
            .min()
            .expect("no engine has a timer");
        self.now = self.now.max(next);
        for e in &mut self.engines {
            e.handle_timeout(self.now);
        }
    }

    /// Sends `msg` from `from` to engine `to` (never to itself).
    fn enqueue(&mut self, from: Pid, to: usize, msg: Message) {
        if to != index(from) {
            self.inbox[to].push_back((from, msg));
        }
    }

    /// Drains the outputs of engine `i`: transmits go to inboxes, events are
    /// counted. Returns whether there was any output.
    fn drain(&mut self, i: usize) -> bool {
        let from = self.engines[i].pid();
        let mut any = false;
        while let Some(out) = self.engines[i].poll_output() {
            any = true;
            match out {
                Output::Transmit { to, msg } => match to {
                    Target::One(p) => self.enqueue(from, index(p), msg),
                    Target::Many(mut ps) => {
                        // Clone for all but the last recipient, move to it.
                        if let Some(last) = ps.pop() {
                            for p in ps {
                                self.enqueue(from, index(p), msg.clone());
                            }
                            self.enqueue(from, index(last), msg);
                        }
                    }
                    Target::Seeds => {
                        // The existing members (those with a view).
                        for j in 0..self.engines.len() {
                            if j != i && self.engines[j].view().is_some() {
                                self.enqueue(from, j, msg.clone());
                            }
                        }
                    }
                },
                Output::Event(AppEvent::Deliver { payload, .. }) => {
                    black_box(&payload);
                    self.delivered[i] += 1;
                }
                Output::Event(AppEvent::View { view, .. }) => {
                    self.view_size[i] = view.members.len();
                }
                Output::Event(_) => {}
            }
        }
        any
    }

    /// Routes until quiet: every engine's outputs are drained and every
    /// queued message handled.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            let mut busy = false;
            for i in 0..self.engines.len() {
                busy |= self.drain(i);
            }
            for i in 0..self.engines.len() {
                while let Some((from, msg)) = self.inbox[i].pop_front() {
                    busy = true;
                    self.engines[i].handle_message(now, from, msg);
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// One measured round: every member multicasts `BATCH` copies of
    /// `payload`, then messages are routed until every member delivered all
    /// of them. The clock advances only if the engines stall without it.
    fn round(&mut self, payload: &Bytes) {
        let n = self.engines.len() as u64;
        let target: Vec<u64> = self.delivered.iter().map(|d| d + n * BATCH).collect();
        for e in &mut self.engines {
            for _ in 0..BATCH {
                e.multicast(self.now, payload.clone())
                    .expect("multicast refused");
            }
        }
        for _ in 0..MAX_TICKS {
            self.pump();
            if self.delivered.iter().zip(&target).all(|(d, t)| d >= t) {
                assert_eq!(self.delivered, target, "a member delivered too much");
                return;
            }
            self.tick();
        }
        panic!(
            "round stalled: delivered {:?}, expected {target:?}",
            self.delivered
        );
    }
}

fn safe_delivery(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xa5u8; PAYLOAD]);
    let mut group = c.benchmark_group("safe_delivery");
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    for n in [3usize, 5] {
        let mut cluster = Cluster::new(n);
        cluster.form();
        // One unmeasured round: checks that the setup delivers at all.
        cluster.round(&payload);
        group.throughput(Throughput::Elements(n as u64 * BATCH));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}_members")),
            &n,
            |b, _| b.iter(|| cluster.round(&payload)),
        );
        // Every member delivered every message of every round.
        let total = cluster.delivered[0];
        assert!(total > 0 && total % (n as u64 * BATCH) == 0);
        assert!(cluster.delivered.iter().all(|&d| d == total));
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    safe_delivery(&mut c);
    c.final_summary();
}
