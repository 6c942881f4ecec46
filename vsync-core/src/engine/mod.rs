//! The sans-IO engine: one process's protocol state machine.
//!
//! The driver (the simulator, or vsync-net's runtime) feeds it inputs, each
//! with the current time as a number of microseconds, and drains outputs:
//!
//! ```
//! use vsync_core::{Config, Engine, Output, Pid};
//! let mut e = Engine::new(Pid::new(1, 1), Config::default());
//! e.found(0);
//! e.multicast(0, bytes::Bytes::from_static(b"hello")).unwrap();
//! while let Some(out) = e.poll_output() {
//!     match out {
//!         Output::Transmit { .. } => { /* send it */ }
//!         Output::Event(ev) => println!("{ev:?}"),
//!     }
//! }
//! // Call e.handle_timeout(now) when now >= e.poll_timeout().
//! ```
//!
//! Inputs only mutate state and mark work as pending; [`Engine::poll_output`]
//! does the batched work (one data message for all queued multicasts, one
//! ordering record, one acknowledgement, all deliveries that became stable)
//! before handing out the results. A driver that feeds a burst of messages
//! and then drains gets batching for free.

mod flush;
mod log;
mod membership;
mod merge;
mod ordering;
mod stability;
mod unordered;

use crate::checker::Policy;
use crate::config::Config;
use crate::delivery::{self, Delivery, Header};
use crate::id::{MsgId, Pid, View, ViewId};
use crate::message::{Message, Run};
use bytes::Bytes;
use flush::{Participant, Proposer};
use ordering::ViewState;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One process.
    One(Pid),
    /// Several processes (the same message to each).
    Many(Vec<Pid>),
    /// The seed addresses the driver was configured with (used by a joiner,
    /// which knows no member yet).
    Seeds,
}

/// What the engine asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to `to`.
    Transmit {
        /// The destination.
        to: Target,
        /// The message.
        msg: Message,
    },
    /// Tell the application.
    Event(AppEvent),
}

/// What the application is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppEvent {
    /// A new view was installed. Every delivery that follows, until the next
    /// `View`, belongs to this view.
    View {
        /// The view.
        view: View,
        /// True for this process's first view (it founded or joined).
        joined: bool,
    },
    /// A multicast, delivered as its mode says (see [`Delivery`]).
    Deliver {
        /// The message's identity.
        msg: MsgId,
        /// Its position in the view's total order, from 1; 0 for FIFO and
        /// causal messages (delivered outside the total order).
        pos: u64,
        /// The payload.
        payload: Bytes,
        /// How it was sent.
        mode: Delivery,
    },
    /// A multicast of this process was assigned its identity and sent.
    Sent {
        /// The message's identity.
        msg: MsgId,
        /// How it was sent.
        mode: Delivery,
    },
    /// A view change started: new multicasts wait for the next view.
    Flushing {
        /// The view being ended.
        view: ViewId,
    },
    /// This process is in a minority of `view` (primary-component policy):
    /// it delivers nothing until it rejoins the primary component.
    Blocked {
        /// The view it cannot leave on its own.
        view: ViewId,
    },
    /// This process is the donor for `joiner`: snapshot the application
    /// state now (after every delivery of the old view, before any of the
    /// new one) and send it.
    SendState {
        /// Who gets the state.
        joiner: Pid,
        /// The view that admits the joiner; the cut is its start.
        view: ViewId,
    },
    /// This process joined `view` and must receive the state from `donor`
    /// before applying the view's deliveries.
    AwaitState {
        /// Who sends the state.
        donor: Pid,
        /// The view that admitted this process.
        view: ViewId,
    },
    /// This process was removed from the group after `view`; it may rejoin
    /// as a new incarnation.
    Removed {
        /// Its last view.
        view: ViewId,
    },
    /// Partitionable policy: this process's side of a partition lost the
    /// merge after the heal. Its history since `split` is discarded: it is
    /// removed ([`AppEvent::Removed`] follows at once) and must rejoin the
    /// `winner` as a new incarnation, taking the winner's state by transfer.
    /// An application that wants to keep or report what it is about to lose
    /// looks at its state now, before it rejoins.
    Diverged {
        /// The losing side's current view (this process's last view).
        view: ViewId,
        /// The last view this process's history shares with the winner's
        /// (the latest of its views that the winner's coordinator also
        /// installed): everything delivered after that view's start may
        /// differ from the winner's history. `None` if the two remember no
        /// common view (it is older than the last 64 views, or the winner's
        /// coordinator joined its side after the split).
        split: Option<ViewId>,
        /// The winning side's view, as the winner announced it.
        winner: View,
    },
    /// This process left the group cleanly after `view`.
    Left {
        /// Its last view.
        view: ViewId,
    },
}

/// Errors returned to the application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The process was removed from the group.
    #[error("this process was removed from the group; rejoin as a new incarnation")]
    Removed,
    /// The process left the group.
    #[error("this process has left the group")]
    Left,
    /// The process has not founded or joined a group.
    #[error("this process is not in a group: call found() or join() first")]
    NotStarted,
    /// The payload is larger than [`Config::max_payload`].
    #[error("payload of {len} bytes is larger than the limit of {max} bytes (Config::max_payload)")]
    PayloadTooLarge {
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Joining,
    Member,
    Removed,
    Left,
}

/// Test-only switches that break the protocol on purpose, to show that the
/// checker catches the resulting violations (mutation testing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// The flush proposer forgets the unordered messages in the tail.
    pub flush_drops_unordered: bool,
    /// Members deliver as soon as the order is known, without waiting for
    /// stability (breaks safe delivery).
    pub deliver_unstable: bool,
    /// A flush proposer skips the quorum check (breaks the primary component).
    pub ignore_quorum: bool,
    /// Causal messages are delivered without waiting for their
    /// dependencies (breaks causal order).
    pub causal_ignores_deps: bool,
    /// The losing side of a partition merge ignores the winner's notice
    /// (breaks liveness under the partitionable policy: the sides never
    /// become one view again).
    pub merge_never: bool,
    /// The losing side of a merge names as the split its latest view that
    /// listed a node of the winning side, instead of the latest view both
    /// histories hold (breaks the merge report: a listed process need not
    /// have installed the view, and a new incarnation of a node is another
    /// process).
    pub split_guessed_from_members: bool,
}

/// The protocol state machine of one process. See the module docs.
#[derive(Clone, Debug)]
pub struct Engine {
    pid: Pid,
    config: Config,
    /// Deliberate bugs for the checker's mutation tests; all off by default.
    pub mutations: Mutations,
    now: u64,
    phase: Phase,
    next_tick: u64,
    vs: Option<ViewState>,
    /// The last view change this process committed, kept to answer members
    /// that missed it.
    last_change: Option<flush::LastChange>,
    /// Application multicasts not yet assigned a sequence number.
    queue: VecDeque<(Delivery, Bytes)>,
    out: VecDeque<Output>,
    dirty: bool,
    ack_due: bool,
    // failure detection and membership
    last_heard: HashMap<Pid, u64>,
    suspects: BTreeSet<Pid>,
    last_heartbeat: u64,
    pending_joins: BTreeSet<Pid>,
    pending_leaves: BTreeSet<Pid>,
    leave_requested: bool,
    last_request: u64,
    last_forward: u64,
    last_probe: u64,
    install_sent: HashMap<Pid, u64>,
    view_transfers: Vec<(Pid, Pid)>,
    nack_at: HashMap<(u32, u64), u64>,
    order_nack_at: u64,
    blocked: bool,
    // flush
    part: Participant,
    prop: Option<Proposer>,
    followup: Option<flush::Followup>,
    merge: merge::MergeState,
    stats: Stats,
}

/// Counters an operator wants to see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered.
    pub delivered: u64,
    /// Views installed.
    pub views: u64,
    /// Data messages sent again on request.
    pub retransmits: u64,
    /// Flushes this process proposed.
    pub flushes_proposed: u64,
    /// Messages ignored because they were malformed or inconsistent.
    pub malformed: u64,
}

impl Engine {
    /// A new engine for process `pid`. It does nothing until
    /// [`Engine::found`] or [`Engine::join`].
    pub fn new(pid: Pid, config: Config) -> Self {
        Engine {
            pid,
            config,
            mutations: Mutations::default(),
            now: 0,
            phase: Phase::Idle,
            next_tick: 0,
            vs: None,
            last_change: None,
            queue: VecDeque::new(),
            out: VecDeque::new(),
            dirty: false,
            ack_due: false,
            last_heard: HashMap::new(),
            suspects: BTreeSet::new(),
            last_heartbeat: 0,
            pending_joins: BTreeSet::new(),
            pending_leaves: BTreeSet::new(),
            leave_requested: false,
            last_request: 0,
            last_forward: 0,
            last_probe: 0,
            install_sent: HashMap::new(),
            view_transfers: Vec::new(),
            nack_at: HashMap::new(),
            order_nack_at: 0,
            blocked: false,
            part: Participant::default(),
            prop: None,
            followup: None,
            merge: merge::MergeState::default(),
            stats: Stats::default(),
        }
    }

    /// This process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current view, once a member.
    pub fn view(&self) -> Option<&View> {
        match self.phase {
            Phase::Member => self.vs.as_ref().map(|v| &v.view),
            _ => None,
        }
    }

    /// Whether a flush is under way (multicasts wait for the next view).
    pub fn is_flushing(&self) -> bool {
        self.vs.as_ref().is_some_and(|v| v.frozen)
    }

    /// Whether this process is blocked in a minority.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the process has left or was removed and has nothing more to
    /// send (a leaving coordinator finishes its last view change first).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Removed | Phase::Left) && self.followup.is_none()
    }

    /// Multicasts waiting to be sent (not yet assigned a sequence number):
    /// the application's backpressure signal.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Position delivered in the current view.
    pub fn delivered(&self) -> u64 {
        self.vs.as_ref().map_or(0, |v| v.delivered)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// When the engine next wants [`Engine::handle_timeout`], in microseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Idle => None,
            Phase::Removed | Phase::Left if self.followup.is_none() => None,
            _ => Some(self.next_tick),
        }
    }

    /// Starts a new group with this process as its only member.
    pub fn found(&mut self, now: u64) {
        self.now = now;
        if self.phase != Phase::Idle {
            return;
        }
        let view = View {
            id: ViewId {
                epoch: 1,
                installer: self.pid,
            },
            members: vec![self.pid],
        };
        self.merge_note_install(None, &[], &view);
        self.install(view, true, &[]);
        self.next_tick = now + self.config.tick;
    }

    /// Asks the seeds to admit this process. It retries until a view admits
    /// it.
    pub fn join(&mut self, now: u64) {
        self.now = now;
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Joining;
        self.send_join_request();
        self.next_tick = now + self.config.tick;
    }

    /// Queues a safe multicast ([`Delivery::Safe`]). It is sent in the
    /// current view, or in the next one if a view change is under way.
    pub fn multicast(&mut self, now: u64, payload: Bytes) -> Result<(), EngineError> {
        self.multicast_with(now, payload, Delivery::Safe)
    }

    /// Queues a multicast with the given delivery mode. It is sent in the
    /// current view, or in the next one if a view change is under way.
    pub fn multicast_with(
        &mut self,
        now: u64,
        payload: Bytes,
        mode: Delivery,
    ) -> Result<(), EngineError> {
        self.now = now;
        match self.phase {
            Phase::Idle => return Err(EngineError::NotStarted),
            Phase::Removed => return Err(EngineError::Removed),
            Phase::Left => return Err(EngineError::Left),
            Phase::Joining | Phase::Member => {}
        }
        if self.leave_requested {
            return Err(EngineError::Left);
        }
        if payload.len() > self.config.max_payload {
            return Err(EngineError::PayloadTooLarge {
                len: payload.len(),
                max: self.config.max_payload,
            });
        }
        self.queue.push_back((mode, payload));
        self.dirty = true;
        Ok(())
    }

    /// Leaves the group cleanly: a view change without this process. The
    /// engine reports [`AppEvent::Left`] once it is done.
    pub fn leave(&mut self, now: u64) {
        self.now = now;
        match self.phase {
            Phase::Member => {}
            Phase::Idle | Phase::Joining => {
                self.phase = Phase::Left;
                return;
            }
            Phase::Removed | Phase::Left => return,
        }
        self.leave_requested = true;
        self.request_leave();
    }

    /// A hint from the transport that `pid` is unreachable (for example its
    /// connection closed and a reconnect was refused). It is suspected at
    /// once instead of after the heartbeat timeout.
    pub fn suspect(&mut self, now: u64, pid: Pid) {
        self.now = now;
        self.add_suspect(pid);
    }

    /// Handles the timer.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.config.tick;
        self.tick();
    }

    /// Handles a message from `from`.
    pub fn handle_message(&mut self, now: u64, from: Pid, msg: Message) {
        self.now = now;
        if from == self.pid {
            return;
        }
        self.last_heard.insert(from, now);
        match msg {
            Message::Data {
                view,
                first_seq,
                payloads,
            } => self.on_data(from, view, first_seq, payloads),
            Message::Order {
                view,
                first_pos,
                runs,
            } => self.on_order(from, view, first_pos, runs),
            Message::Ack {
                view,
                have,
                order_len,
                recv,
            } => self.on_ack(from, view, have, order_len, recv),
            Message::Nack { view, data, order } => self.on_nack(from, view, data, order),
            Message::JoinRequest { joiner } => self.on_join_request(joiner),
            Message::LeaveRequest { view } => self.on_leave_request(from, view),
            Message::Suspect { view, pids } => self.on_suspect(from, view, pids),
            Message::FlushStart { old, ballot } => self.on_flush_start(from, old, ballot),
            Message::FlushState {
                old,
                ballot,
                report,
            } => self.on_flush_state(from, old, ballot, *report),
            Message::FlushReject { old, promised } => self.on_flush_reject(old, promised),
            Message::Prepare {
                old,
                ballot,
                proposal,
                payloads,
            } => self.on_prepare(from, old, ballot, *proposal, payloads),
            Message::PrepareAck { old, ballot } => self.on_prepare_ack(from, old, ballot),
            Message::Commit { old, new } => self.on_commit(from, old, new),
            Message::Install {
                old,
                proposal,
                payloads,
            } => self.on_install(from, old, *proposal, payloads),
            Message::Welcome { view, transfers } => self.on_welcome(from, view, transfers),
            Message::InstallAck { new } => self.on_install_ack(from, new),
            Message::Probe { view } => self.on_probe(from, view),
            Message::NotMember { view } => self.on_not_member(from, view),
            Message::MergeProbe { view } => self.on_merge_probe(from, view),
            Message::MergeAway { winner, history } => self.on_merge_away(from, winner, history),
        }
    }

    /// The next output, after doing any pending batched work.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.dirty {
            self.dirty = false;
            self.step();
        }
        self.out.pop_front()
    }

    /// All pending outputs.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        if self.dirty {
            self.dirty = false;
            self.step();
        }
        self.out.drain(..).collect()
    }

    // ---- helpers shared by the submodules ----

    fn emit(&mut self, ev: AppEvent) {
        self.out.push_back(Output::Event(ev));
    }

    fn send(&mut self, to: Pid, msg: Message) {
        self.out.push_back(Output::Transmit {
            to: Target::One(to),
            msg,
        });
    }

    fn send_many(&mut self, to: Vec<Pid>, msg: Message) {
        match to.len() {
            0 => {}
            1 => self.send(to[0], msg),
            _ => self.out.push_back(Output::Transmit {
                to: Target::Many(to),
                msg,
            }),
        }
    }

    /// Members of the current view other than this process.
    fn others(&self) -> Vec<Pid> {
        self.vs.as_ref().map_or_else(Vec::new, |v| {
            v.view
                .members
                .iter()
                .copied()
                .filter(|p| *p != self.pid)
                .collect()
        })
    }

    fn current_view_id(&self) -> Option<ViewId> {
        self.vs.as_ref().map(|v| v.view.id)
    }

    fn policy(&self) -> Policy {
        self.config.policy
    }

    // ---- normal case ----

    /// The batched work: transmit queued multicasts, sequence, acknowledge,
    /// deliver, collect garbage.
    fn step(&mut self) {
        if self.phase != Phase::Member {
            return;
        }
        let Some(vs) = self.vs.as_mut() else { return };
        if vs.frozen {
            return;
        }
        let view = vs.view.id;
        let me = vs.me;
        // 1. Own multicasts, in batches, within the window.
        let mut batches = Vec::new();
        let mut sent_ids = Vec::new();
        let byte_window = self.config.byte_window(vs.view.members.len());
        while !self.queue.is_empty()
            && vs.unstable_own() < self.config.window
            && vs.unstable_own_bytes() < byte_window
        {
            let room = (self.config.window - vs.unstable_own()) as usize;
            let mut byte_room = byte_window - vs.unstable_own_bytes();
            let mut n = 0;
            // Within the count and the byte window, but at least one.
            for p in self
                .queue
                .iter()
                .take(self.config.max_batch.min(room.max(1)))
            {
                let len = p.1.len() as u64;
                if n > 0 && len > byte_room {
                    break;
                }
                byte_room = byte_room.saturating_sub(len);
                n += 1;
            }
            let first_seq = vs.sent + 1;
            let mut payloads: Vec<Bytes> = Vec::with_capacity(n);
            for (i, (mode, p)) in self.queue.drain(..n).enumerate() {
                let header = match mode {
                    Delivery::Safe => Header::Safe,
                    Delivery::Total => Header::Total,
                    Delivery::Fifo => Header::Fifo,
                    Delivery::Causal => vs.causal_header(),
                };
                let wire = delivery::encode(&header, &p);
                vs.note_own_sent(first_seq + i as u64, wire.len() as u64);
                vs.logs[me].insert(first_seq + i as u64, wire.clone());
                payloads.push(wire);
                sent_ids.push((
                    MsgId {
                        view,
                        sender: self.pid,
                        seq: first_seq + i as u64,
                    },
                    mode,
                ));
            }
            vs.sent += n as u64;
            vs.transmitted = vs.sent;
            batches.push(Message::Data {
                view,
                first_seq,
                payloads,
            });
        }
        // 2. Sequencer: order what arrived.
        let runs = vs.sequence();
        let first_pos = vs.order_announced + 1;
        if !runs.is_empty() {
            vs.order_announced = vs.order_len();
        }
        // 3. Acknowledge if anything moved.
        let moved = vs.advance_have();
        vs.self_ack();
        let others: Vec<Pid> = vs
            .view
            .members
            .iter()
            .copied()
            .filter(|p| *p != self.pid)
            .collect();
        for (id, mode) in sent_ids {
            self.out
                .push_back(Output::Event(AppEvent::Sent { msg: id, mode }));
        }
        for b in batches {
            self.send_many(others.clone(), b);
        }
        if !runs.is_empty() {
            self.send_many(
                others.clone(),
                Message::Order {
                    view,
                    first_pos,
                    runs,
                },
            );
        }
        if moved || self.ack_due {
            self.ack_due = false;
            self.send_ack(others);
        }
        // 4. Deliver.
        self.deliver_ready();
    }

    fn send_ack(&mut self, to: Vec<Pid>) {
        let Some(vs) = self.vs.as_ref() else { return };
        let msg = Message::Ack {
            view: vs.view.id,
            have: vs.have,
            order_len: vs.order_len(),
            recv: vs.acks[vs.me].recv.clone(),
        };
        self.last_heartbeat = self.now;
        self.send_many(to, msg);
    }

    fn deliver_ready(&mut self) {
        let Some(vs) = self.vs.as_mut() else { return };
        let mut out = Vec::new();
        if self.mutations.deliver_unstable && !vs.frozen {
            let upto = vs.have;
            vs.deliver_through(upto, &mut |m, p, b, d| out.push((m, p, b, d)));
        } else {
            vs.deliver_ordered(&mut |m, p, b, d| out.push((m, p, b, d)));
        }
        if !vs.frozen {
            let ignore = self.mutations.causal_ignores_deps;
            vs.deliver_unordered(None, ignore, &mut |m, b, d| out.push((m, 0, b, d)));
        }
        vs.collect_garbage();
        self.stats.delivered += out.len() as u64;
        for (msg, pos, payload, mode) in out {
            self.out.push_back(Output::Event(AppEvent::Deliver {
                msg,
                pos,
                payload,
                mode,
            }));
        }
    }

    /// Classifies a message's view: `Some(rank)` of the sender when it is for
    /// the current view (and the sender is a member). Otherwise handles the
    /// stale cases and returns `None`.
    fn admit(&mut self, from: Pid, view: ViewId) -> Option<usize> {
        let vs = self.vs.as_ref()?;
        if self.phase != Phase::Member {
            return None;
        }
        if view == vs.view.id {
            return vs.view.rank(from);
        }
        if view.epoch < vs.view.id.epoch {
            if vs.view.contains(from) {
                // A member that missed the commit of this view: send it.
                self.send_install_to_laggard(from, view);
            } else {
                // Traffic from a process left out of a later view: tell it.
                let id = vs.view.id;
                self.tell_not_member(from, id);
            }
        }
        None
    }

    fn on_data(&mut self, from: Pid, view: ViewId, first_seq: u64, payloads: Vec<Bytes>) {
        let Some(rank) = self.admit(from, view) else {
            return;
        };
        let Some(vs) = self.vs.as_mut() else { return };
        let before = vs.logs[rank].contiguous();
        let gap = first_seq > before + 1;
        if vs.on_data(rank, first_seq, payloads) {
            self.dirty = true;
        }
        if gap {
            self.nack_data(from, rank, first_seq.saturating_sub(1));
        }
    }

    fn on_order(&mut self, from: Pid, view: ViewId, first_pos: u64, runs: Vec<Run>) {
        let Some(rank) = self.admit(from, view) else {
            return;
        };
        if rank != 0 {
            self.stats.malformed += 1;
            return;
        }
        let Some(vs) = self.vs.as_mut() else { return };
        let gap = first_pos > vs.order_len() + 1;
        // Twice what can be unstable, plus room for collection lag.
        let max_known = (vs.view.members.len() as u64)
            .saturating_mul(self.config.window)
            .saturating_mul(2)
            .saturating_add(1024);
        if vs.on_order(first_pos, runs, max_known) {
            self.dirty = true;
        }
        if gap {
            self.nack_order(first_pos - 1);
        }
    }

    fn on_ack(&mut self, from: Pid, view: ViewId, have: u64, order_len: u64, recv: Vec<u64>) {
        let Some(rank) = self.admit(from, view) else {
            return;
        };
        let Some(vs) = self.vs.as_mut() else { return };
        if recv.len() != vs.view.members.len() {
            self.stats.malformed += 1;
            return;
        }
        vs.on_ack(rank, have, order_len, &recv);
        self.dirty = true;
        // Repair: what the sender holds of its own messages or of the order
        // that this member lacks.
        let their_own = recv[rank];
        if vs.logs[rank].contiguous() < their_own {
            self.nack_data(from, rank, their_own);
        }
        let order_behind = rank == 0 && order_len > self.vs.as_ref().map_or(0, |v| v.order_len());
        if order_behind {
            self.nack_order(order_len);
        }
    }

    fn nack_data(&mut self, from: Pid, rank: usize, upto: u64) {
        let Some(vs) = self.vs.as_ref() else { return };
        let key = (rank as u32, vs.logs[rank].contiguous());
        let now = self.now;
        if let Some(t) = self.nack_at.get(&key)
            && now < t + self.config.resend_interval
        {
            return;
        }
        let ranges = vs.logs[rank].missing(upto, 16);
        if ranges.is_empty() {
            return;
        }
        self.nack_at.insert(key, now);
        let view = vs.view.id;
        let data = ranges
            .into_iter()
            .map(|(lo, hi)| (rank as u32, lo, hi))
            .collect();
        self.send(
            from,
            Message::Nack {
                view,
                data,
                order: None,
            },
        );
    }

    fn nack_order(&mut self, upto: u64) {
        let Some(vs) = self.vs.as_ref() else { return };
        if self.now < self.order_nack_at + self.config.resend_interval && self.order_nack_at != 0 {
            return;
        }
        let lo = vs.order_len() + 1;
        if upto < lo {
            return;
        }
        self.order_nack_at = self.now;
        let view = vs.view.id;
        let coord = vs.view.members[0];
        self.send(
            coord,
            Message::Nack {
                view,
                data: Vec::new(),
                order: Some((lo, upto)),
            },
        );
    }

    fn on_nack(
        &mut self,
        from: Pid,
        view: ViewId,
        data: Vec<(u32, u64, u64)>,
        order: Option<(u64, u64)>,
    ) {
        if self.admit(from, view).is_none() {
            return;
        }
        let Some(vs) = self.vs.as_ref() else { return };
        let mut msgs = Vec::new();
        for (rank, lo, hi) in data.into_iter().take(64) {
            let Some(log) = vs.logs.get(rank as usize) else {
                continue;
            };
            if rank as usize != vs.me {
                continue;
            }
            // Only what this member sent, and a bounded amount per request.
            let hi = hi
                .min(vs.sent)
                .min(lo.saturating_add(4 * self.config.max_batch as u64));
            let byte_window = self.config.byte_window(vs.view.members.len());
            let mut batch: Vec<Bytes> = Vec::new();
            let mut batch_bytes = 0u64;
            let mut first = lo;
            for seq in lo..=hi {
                match log.get(seq) {
                    Some(p)
                        if batch.is_empty()
                            || (batch.len() < self.config.max_batch
                                && batch_bytes + p.len() as u64 <= byte_window) =>
                    {
                        batch_bytes += p.len() as u64;
                        batch.push(p.clone());
                    }
                    Some(p) => {
                        msgs.push(Message::Data {
                            view,
                            first_seq: first,
                            payloads: batch,
                        });
                        batch = vec![p.clone()];
                        batch_bytes = p.len() as u64;
                        first = seq;
                    }
                    None => {
                        if !batch.is_empty() {
                            msgs.push(Message::Data {
                                view,
                                first_seq: first,
                                payloads: batch,
                            });
                            batch = Vec::new();
                            batch_bytes = 0;
                        }
                        first = seq.saturating_add(1);
                    }
                }
            }
            if !batch.is_empty() {
                msgs.push(Message::Data {
                    view,
                    first_seq: first,
                    payloads: batch,
                });
            }
        }
        if let Some((lo, hi)) = order
            && vs.is_sequencer()
            && let Some((first_pos, runs)) = vs.runs_between(lo, hi)
        {
            msgs.push(Message::Order {
                view,
                first_pos,
                runs,
            });
        }
        self.stats.retransmits += msgs.len() as u64;
        for m in msgs {
            self.send(from, m);
        }
    }

    /// Periodic work: heartbeats, suspicion, resends, flush timeouts.
    fn tick(&mut self) {
        match self.phase {
            Phase::Idle => {}
            Phase::Joining => {
                if self.now >= self.last_request + 2 * self.config.resend_interval {
                    self.send_join_request();
                }
            }
            Phase::Member => {
                if self.now >= self.last_heartbeat + self.config.heartbeat_interval {
                    let others = self.others();
                    self.send_ack(others);
                }
                self.detect_failures();
                if self.leave_requested
                    && self.now >= self.last_request + 2 * self.config.resend_interval
                {
                    self.request_leave();
                }
                self.flush_tick();
                self.probe_if_blocked();
                self.merge_tick();
                if !self.is_flushing() {
                    // Requests that arrived during the last flush.
                    self.maybe_start_flush();
                }
            }
            Phase::Removed | Phase::Left => {}
        }
        self.followup_tick();
        self.dirty = true;
    }

    /// Installs `view`: the new normal-case state, queued multicasts carried
    /// over, the application told.
    fn install(&mut self, view: View, joined: bool, transfers: &[(Pid, Pid)]) {
        let Some(me) = view.rank(self.pid) else {
            return;
        };
        self.phase = Phase::Member;
        self.blocked = false;
        self.part = Participant::default();
        self.prop = None;
        // The new view was agreed with its members: suspicion starts afresh.
        self.suspects.clear();
        self.pending_joins.retain(|p| !view.contains(*p));
        self.pending_leaves.retain(|p| view.contains(*p));
        self.nack_at.clear();
        self.install_sent.clear();
        self.order_nack_at = 0;
        for m in &view.members {
            self.last_heard.insert(*m, self.now);
        }
        self.last_heard.retain(|p, _| view.contains(*p));
        self.stats.views += 1;
        let id = view.id;
        self.vs = Some(ViewState::new(view.clone(), me));
        self.emit(AppEvent::View { view, joined });
        for &(joiner, donor) in transfers {
            if donor == self.pid {
                self.emit(AppEvent::SendState { joiner, view: id });
            }
            if joiner == self.pid {
                self.emit(AppEvent::AwaitState { donor, view: id });
            }
        }
        self.ack_due = true;
        self.dirty = true;
        if self.leave_requested {
            self.request_leave();
        }
    }
}

/// The partition policies, re-exported for convenience.
pub use crate::checker::Policy as PartitionPolicy;
pub use merge::beats as merge_beats;
