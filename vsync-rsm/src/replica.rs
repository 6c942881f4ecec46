//! [`Replica`]: the handle, and the one task that owns the replica's state
//! (the [`ReplicaCore`], pending requests, transfers, the store) and talks
//! to the group. Handles send it requests over a channel; `read` closures
//! run on it.
//!
//! Each round the task takes what is ready (group events, requests),
//! multicasts the new commands as one batch, and carries out the core's
//! actions. In [`Durability::Logged`] mode the round's batches are appended
//! to the log and flushed once (group commit) before any of their commands
//! is acknowledged.
//!
//! When its side of a partition loses the merge (partitionable policy,
//! `Event::Diverged`), the task lets the core show the state machine what
//! is discarded and discard the state, waits for a checkpoint being
//! written, erases the checkpoint and the log (they hold the discarded
//! history: a restart must never load or replay them), adds the winner's
//! addresses to the seeds, and rejoins as a new incarnation, which takes
//! the winner's state by transfer.

use crate::config::{Durability, ReplicaConfig};
use crate::divergence::DivergenceInfo;
use crate::error::RsmError;
use crate::identity::{ClusterId, Identity, LastMember, LastView};
use crate::lifecycle::{Observed, RestartClock, RestartStep};
use crate::machine::StateMachine;
use crate::sansio::{Action, Phase, ReadFn, RecoveryRule, ReplicaCore};
use crate::startup::{OnDisk, StartPlan};
use crate::status::{Metrics, ReplicaEvent, ReplicaMetrics, ReplicaStatus, Role};
use crate::store::{Store, Written};
use crate::transfer::{self, ACK_EVERY, Finished, Outgoing, Plan};
use crate::wire::{Direct, Entry, decode_direct, encode_batch};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use vsync_core::{Pid, ViewId};
use vsync_net::{Event, Group, GroupHandle, GroupSender};

/// Requests queued for the task before `execute` waits.
const REQUEST_QUEUE: usize = 8192;
/// A joiner that hears nothing from its donor for this long asks again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A joiner asks at most this many times before it gives up and rejoins.
const MAX_ATTEMPTS: u32 = 8;

type Reply<T> = oneshot::Sender<Result<T, RsmError>>;

enum Request<S: StateMachine> {
    Execute { cmd: Bytes, reply: Reply<S::Output> },
    Read(ReadFn<S>),
    ReadOrdered(ReadFn<S>),
    Checkpoint(Reply<()>),
    Leave(Reply<()>),
    Evict { node: u64, reply: Reply<Pid> },
}

/// A replica of a state machine: a member of one group (one replicated
/// object; run several for several objects). Cheap to clone.
pub struct Replica<S: StateMachine> {
    tx: mpsc::Sender<Request<S>>,
    status: watch::Receiver<ReplicaStatus>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<ReplicaEvent>,
}

impl<S: StateMachine> Clone for Replica<S> {
    fn clone(&self) -> Self {
        Replica {
            tx: self.tx.clone(),
            status: self.status.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl<S: StateMachine> Replica<S> {
    /// Starts a replica of `machine` (see [`crate::Start`] for how it enters the
    /// group and what it loads from [`ReplicaConfig::data_dir`]). Returns
    /// once the network runtime is up; watch [`Replica::status`] or
    /// [`Replica::events`] for membership.
    pub async fn start(config: ReplicaConfig, machine: S) -> Result<Self, RsmError> {
        if config.durability == Durability::Logged && config.data_dir.is_none() {
            return Err(RsmError::Config(
                "Logged durability needs a data directory (data_dir)".into(),
            ));
        }
        let mut config = config;
        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let mut disk = OnDisk::default();
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| RsmError::Storage(format!("cannot create {}: {e}", dir.display())))?;
            disk = OnDisk::read(dir)?;
        }
        let dir_name = config.data_dir.clone().unwrap_or_default();
        let plan = crate::startup::plan(
            config.start,
            config.net.node,
            &config.net.group,
            &config.net.seeds,
            &disk,
            &dir_name,
        )?;
        if let (StartPlan::Found { move_aside: true }, Some(dir)) = (&plan, &config.data_dir) {
            let to = crate::startup::move_aside(dir, unix_ms())?;
            tracing::warn!(from = %dir.display(), to = %to.display(), "founding a new cluster: the old data directory was moved aside (not deleted)");
            disk = OnDisk::default();
        }
        let mut rejected = None;
        let founding = matches!(plan, StartPlan::Found { .. });
        // A founder opens its store once the group is up: a failed bind
        // then leaves the directory empty, so that a retry may found.
        let mut store = match &config.data_dir {
            Some(dir) if !founding => Some(open_store(dir, &mut rejected, &events)?),
            _ => None,
        };
        let recovering = match plan {
            StartPlan::Recover { expect, .. } => Some(RecoveryRule::Expect(expect.max(1))),
            _ => None,
        };
        let placeholder = Pid::new(config.net.node, 0);
        let mut core = ReplicaCore::new(placeholder, machine, 0, recovering);
        if config.net.engine.policy == vsync_core::engine::PartitionPolicy::Partitionable {
            core.set_journal(config.discard_journal, config.discard_journal_bytes);
        }
        core.set_tail_limits(config.catch_up_commands, config.catch_up_bytes);
        let mut identity = disk.identity.clone();
        // A group founded anew, or recovered by the operator from data that
        // records no cluster yet (written by an older version), gets a new
        // cluster id; recovery's joiners adopt it with the state.
        let new_cluster = match plan {
            StartPlan::Found { .. } => true,
            StartPlan::Recover { found: true, .. } => identity.is_none(),
            _ => false,
        };
        if new_cluster {
            let id = Identity::new(
                ClusterId(rand::random()),
                &config.net.group,
                config.net.node,
            );
            tracing::info!(cluster = %id.cluster, group = %id.group, "a new cluster id");
            identity = Some(id);
        }
        core.set_cluster(identity.as_ref().map(|i| i.cluster));
        if let Some(last) = identity.as_ref().and_then(|i| i.last_view.as_ref()) {
            core.set_last_view(last.nodes());
        }
        let mut last_checkpoint = None;
        if let Some(store) = &store {
            match load_local(store, &mut core, config.durability, &events) {
                Ok(pos) => last_checkpoint = pos,
                Err(reason) => rejected = Some(reason),
            }
        }
        let mut clock = RestartClock::new(config.restart_wait);
        let epoch = Instant::now();
        let mut founder_of_last = false;
        let mut group_joined = true;
        let group = match &plan {
            StartPlan::Found { .. } | StartPlan::Recover { found: true, .. } => {
                Group::found(config.net.clone()).await?
            }
            StartPlan::Restart {
                seeds,
                founder,
                last_view,
            } => {
                tracing::info!(
                    position = core.position(),
                    asking = ?seeds,
                    last_view = ?last_view,
                    "restarting with the state on disk: rejoining the cluster"
                );
                config.net.seeds.clone_from(seeds);
                if seeds.is_empty() && *founder {
                    // Alone in its last view: nobody to ask, recover now.
                    core.start_recovery(RecoveryRule::LastViews);
                    group_joined = false;
                    Group::found(config.net.clone()).await?
                } else {
                    founder_of_last = *founder;
                    clock.restarting(Duration::ZERO, *founder);
                    Group::join(config.net.clone()).await?
                }
            }
            StartPlan::Join | StartPlan::Recover { found: false, .. } => {
                Group::join(config.net.clone()).await?
            }
        };
        if let (StartPlan::Found { .. }, Some(id), Some(dir)) = (&plan, &identity, &config.data_dir)
        {
            let opened = open_store(dir, &mut rejected, &events).and_then(|s| {
                id.save(dir)
                    .map(|()| s)
                    .map_err(|e| RsmError::Storage(e.to_string()))
            });
            match opened {
                Ok(s) => store = Some(s),
                Err(e) => {
                    group.shutdown().await;
                    return Err(e);
                }
            }
        }
        core.rejoin(group.pid());
        let metrics = Arc::new(Metrics::default());
        let (status_tx, status_rx) = watch::channel(ReplicaStatus {
            pid: Some(group.pid()),
            position: core.position(),
            last_checkpoint,
            checkpoint_rejected: rejected,
            cluster: core.cluster(),
            ..ReplicaStatus::default()
        });
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let max_batch = config.net.engine.max_payload.saturating_sub(256).max(1024);
        let task = Task {
            sender: group.sender(),
            group: Some(group),
            core,
            store,
            rx,
            pending: HashMap::new(),
            next_req: 1,
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            max_batch,
            acks: Vec::new(),
            logged: false,
            flushing: VecDeque::new(),
            idle_flush_due: false,
            donors: HashMap::new(),
            request: None,
            received: transfer::Received::default(),
            asked: HashMap::new(),
            done_tx,
            done_rx,
            last_progress: Instant::now(),
            blocked: false,
            need_rejoin: None,
            ckpt: None,
            ckpt_waiters: Vec::new(),
            ckpt_force: false,
            last_ckpt_pos: last_checkpoint.unwrap_or(0),
            ckpt_known: last_checkpoint.is_some(),
            last_ckpt_at: Instant::now(),
            rejoin_seeds: BTreeSet::new(),
            last_divergence: None,
            needs_base: false,
            leaving: None,
            left: false,
            status: status_tx,
            metrics: metrics.clone(),
            events: events.clone(),
            stopped: None,
            identity,
            clock,
            epoch,
            founder_of_last,
            addresses: Vec::new(),
            joins_by_transfer: !matches!(
                plan,
                StartPlan::Found { .. } | StartPlan::Recover { found: true, .. }
            ) && group_joined,
            cfg: config,
        };
        tokio::spawn(task.run());
        Ok(Replica {
            tx,
            status: status_rx,
            metrics,
            events,
        })
    }

    /// Executes `cmd` through the total order and returns this replica's
    /// output once it is applied here (and, in [`Durability::Logged`] mode,
    /// logged durably). Fails at once if this replica cannot serve
    /// (joining, blocked, recovering, stopping); fails with
    /// [`RsmError::Removed`] if the replica is removed before the command
    /// is delivered (it may still have been applied by the others).
    pub async fn execute(&self, cmd: S::Command) -> Result<S::Output, RsmError> {
        let cmd = Bytes::from(postcard::to_stdvec(&cmd)?);
        self.ask(|reply| Request::Execute { cmd, reply }).await
    }

    /// Sends the task a request carrying a reply channel and waits for the
    /// answer (`ShuttingDown` if the task is gone).
    async fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request<S>) -> Result<T, RsmError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(request(reply))
            .await
            .map_err(|_| RsmError::ShuttingDown)?;
        rx.await.map_err(|_| RsmError::ShuttingDown)?
    }

    /// Reads this replica's state now (it may lag the others). Runs `f` on
    /// the replica's task: keep it short.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, RsmError> {
        let (tx, rx) = oneshot::channel();
        let g: ReadFn<S> = Box::new(move |s| {
            let _ = tx.send(s.map(f));
        });
        self.tx
            .send(Request::Read(g))
            .await
            .map_err(|_| RsmError::ShuttingDown)?;
        rx.await.map_err(|_| RsmError::ShuttingDown)?
    }

    /// Reads the state at a place in the total order: `f` sees every
    /// command ordered before the read (including every command
    /// acknowledged anywhere before the read was issued).
    pub async fn read_ordered<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, RsmError> {
        let (tx, rx) = oneshot::channel();
        let g: ReadFn<S> = Box::new(move |s| {
            let _ = tx.send(s.map(f));
        });
        self.tx
            .send(Request::ReadOrdered(g))
            .await
            .map_err(|_| RsmError::ShuttingDown)?;
        rx.await.map_err(|_| RsmError::ShuttingDown)?
    }

    /// Where the replica is.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f` (or the replica stops).
    pub async fn wait_for(&self, mut f: impl FnMut(&ReplicaStatus) -> bool) -> ReplicaStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(|s| f(s) || s.role == Role::Stopped).await {
            Ok(s) => s.clone(),
            Err(_) => self.status(),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> ReplicaMetrics {
        self.metrics.snapshot()
    }

    /// Writes a checkpoint now (needs a data directory); resolves once it
    /// is durable.
    pub async fn checkpoint(&self) -> Result<(), RsmError> {
        self.ask(Request::Checkpoint).await
    }

    /// Leaves the group cleanly once the commands in flight here are
    /// applied; new commands are refused meanwhile.
    pub async fn leave(&self) -> Result<(), RsmError> {
        self.ask(Request::Leave).await
    }

    /// Removes the member of node `node` from the group through a view
    /// change (it is suspected, as if it had failed). If that process is
    /// alive it learns it was removed and, as any removed replica, rejoins
    /// as a new incarnation. Returns the process removed. Refused for this
    /// replica's own node (stop it instead: it leaves cleanly) and for a
    /// node not in the view.
    pub async fn evict(&self, node: u64) -> Result<Pid, RsmError> {
        self.ask(|reply| Request::Evict { node, reply }).await
    }

    /// A stream of what happens to the replica (views, transfers,
    /// checkpoints, removal, rejoin, ...).
    pub fn events(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.events.subscribe()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Opens the store; a store sled cannot open is moved aside (reported) and
/// a fresh one created.
fn open_store(
    dir: &std::path::Path,
    rejected: &mut Option<String>,
    events: &broadcast::Sender<ReplicaEvent>,
) -> Result<Store, RsmError> {
    match Store::open(dir) {
        Ok(s) => Ok(s),
        Err(e) => {
            let ms = unix_ms();
            let aside = dir.with_extension(format!("unreadable-{ms}"));
            let reason = format!(
                "the data directory {} cannot be opened ({e}); moved to {} and starting without a checkpoint",
                dir.display(),
                aside.display()
            );
            tracing::warn!("{reason}");
            let _ = events.send(ReplicaEvent::CheckpointRejected {
                reason: reason.clone(),
            });
            *rejected = Some(reason);
            std::fs::rename(dir, &aside)
                .map_err(|e| RsmError::Storage(format!("cannot move {}: {e}", dir.display())))?;
            Store::open(dir)
        }
    }
}

/// Loads the checkpoint (and replays the log in Logged mode) through
/// [`crate::disk::restore_local`], the path the simulator runs too, and
/// reports it. Returns the checkpoint's position, or why it was rejected.
fn load_local<S: StateMachine>(
    store: &Store,
    core: &mut ReplicaCore<S>,
    durability: Durability,
    events: &broadcast::Sender<ReplicaEvent>,
) -> Result<Option<u64>, String> {
    let r = crate::disk::restore_local(store, core, durability == Durability::Logged);
    if let Some(position) = r.checkpoint {
        tracing::info!(position, "checkpoint loaded");
        let _ = events.send(ReplicaEvent::CheckpointLoaded { position });
    }
    if let Some(reason) = &r.rejected {
        tracing::warn!(
            "checkpoint rejected: {reason}; falling back to state transfer from the group"
        );
        let _ = events.send(ReplicaEvent::CheckpointRejected {
            reason: reason.clone(),
        });
    }
    if let Some(why) = &r.stopped {
        tracing::warn!("log replay stopped: {why}");
    }
    if r.replayed > 0 {
        tracing::info!(
            batches = r.replayed,
            position = core.position(),
            "log replayed"
        );
    }
    match r.rejected {
        Some(reason) => Err(reason),
        None => Ok(r.checkpoint),
    }
}

struct Task<S: StateMachine> {
    cfg: ReplicaConfig,
    core: ReplicaCore<S>,
    /// The current incarnation (`None` only while rejoining).
    group: Option<GroupHandle>,
    sender: GroupSender,
    store: Option<Store>,
    rx: mpsc::Receiver<Request<S>>,
    pending: HashMap<u64, Reply<S::Output>>,
    next_req: u64,
    outgoing: Vec<(Entry, Option<Reply<S::Output>>)>,
    outgoing_bytes: usize,
    max_batch: usize,
    /// Replies of applied commands not yet covered by a log flush (sent
    /// at the end of the round in Memory mode).
    acks: Vec<(Reply<S::Output>, S::Output)>,
    /// Whether the log was appended to since the last flush started.
    logged: bool,
    /// A tick passed: flush what was logged even if nothing waits for it.
    idle_flush_due: bool,
    /// The log flushes under way (at most [`FLUSHES_IN_FLIGHT`], oldest
    /// first), each with the replies it makes durable.
    flushing: VecDeque<Flushing<S::Output>>,
    /// Images prepared for joiners (at their cut), and their streams.
    donors: HashMap<Pid, Prepared<S::Image>>,
    /// As joiner: the donor and view asked, the attempt, and when the donor
    /// was last heard.
    request: Option<(Pid, ViewId, u32, Instant)>,
    /// State bytes received in the transfer under way (against
    /// `max_transfer`).
    received: transfer::Received,
    /// Requests that came before this replica reached the joiner's cut.
    asked: HashMap<Pid, Asked>,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    last_progress: Instant,
    blocked: bool,
    /// Why the replica must rejoin as a new incarnation.
    need_rejoin: Option<String>,
    ckpt: Option<JoinHandle<Result<Written, RsmError>>>,
    ckpt_waiters: Vec<Reply<()>>,
    ckpt_force: bool,
    last_ckpt_pos: u64,
    /// Whether a checkpoint (at `last_ckpt_pos`) is on disk.
    ckpt_known: bool,
    last_ckpt_at: Instant,
    /// Addresses added to the seeds of every rejoin (the winners of lost
    /// merges).
    rejoin_seeds: BTreeSet<SocketAddr>,
    /// The last lost merge.
    last_divergence: Option<DivergenceInfo>,
    /// Logged mode after a state transfer: commands wait for a checkpoint
    /// of the received state (the log alone cannot rebuild it).
    needs_base: bool,
    leaving: Option<Reply<()>>,
    /// A leave was started: new requests are refused.
    left: bool,
    status: watch::Sender<ReplicaStatus>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<ReplicaEvent>,
    stopped: Option<String>,
    /// The data directory's identity as last written (`None`: not known
    /// yet, a new member before its first state).
    identity: Option<Identity>,
    /// When to found a recovering group, or give up on one.
    clock: RestartClock,
    /// The origin of the clock's time.
    epoch: Instant,
    /// This replica founds the recovering group of its last view.
    founder_of_last: bool,
    /// The current view's members' listen addresses (for the status).
    addresses: Vec<(Pid, SocketAddr)>,
    /// The current incarnation entered by joining (not founding): its
    /// first view is recorded only after its state arrived.
    joins_by_transfer: bool,
}

/// A joiner's request for its state that came before this replica
/// reached the joiner's cut (answered when it does).
struct Asked {
    view: ViewId,
    attempt: u32,
    /// Where the joiner's own state is (for a catch-up).
    have: Option<(u64, u64)>,
}

/// A state prepared for a joiner at its cut, and the stream sending it.
struct Prepared<I> {
    plan: Plan<I>,
    running: Option<Outgoing>,
}

enum Wake<S: StateMachine> {
    Event(Option<Event>),
    Request(Option<Request<S>>),
    Done(Finished),
    Checkpoint(Result<Result<Written, RsmError>, tokio::task::JoinError>),
    Flushed(Result<Result<(), RsmError>, tokio::task::JoinError>),
    Tick,
}

impl<S: StateMachine> Task<S> {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.stopped.is_none() {
            let wake = tokio::select! {
                biased;
                // First: a finished flush releases acknowledgements, and
                // under load the group's events are never all taken, so a
                // flush polled after them would wait for a lull.
                Some(r) = flush_done(&mut self.flushing) => Wake::Flushed(r),
                ev = next_event(&mut self.group) => Wake::Event(ev),
                Some(d) = self.done_rx.recv() => Wake::Done(d),
                Some(r) = ckpt_done(&mut self.ckpt) => Wake::Checkpoint(r),
                req = self.rx.recv() => Wake::Request(req),
                _ = tick.tick() => Wake::Tick,
            };
            match wake {
                Wake::Event(Some(ev)) => {
                    self.on_event(ev).await;
                    self.take_ready().await;
                }
                Wake::Event(None) => {
                    if self.need_rejoin.is_none() && self.leaving.is_none() {
                        self.need_rejoin = Some("the network runtime stopped".into());
                    }
                }
                Wake::Request(None) => {
                    // Every handle is gone: stop (like a crash for the others).
                    self.stop("every handle was dropped".into());
                }
                Wake::Request(Some(r)) => {
                    self.on_request(r);
                    self.take_ready().await;
                }
                Wake::Done(f) => self.on_transfer_done(f),
                Wake::Checkpoint(r) => self.on_checkpoint_done(r),
                Wake::Flushed(r) => self.on_flushed(r),
                Wake::Tick => {
                    self.on_tick();
                    self.restart_tick().await;
                }
            }
            self.actions().await;
            self.ask_for_state().await;
            self.actions().await;
            self.send_outgoing().await;
            self.finish_round();
            self.maybe_checkpoint();
            if let Some(reason) = self.need_rejoin.take() {
                self.rejoin(reason).await;
            }
            self.maybe_leave();
            self.publish();
        }
        // A flush under way still answers the commands it makes durable.
        while !self.flushing.is_empty() {
            if let Some(r) = flush_done(&mut self.flushing).await {
                self.on_flushed(r);
            }
        }
        self.publish();
    }

    /// Takes the group events and requests already waiting (up to 4,096
    /// of each), so that the round multicasts one batch for all the
    /// requests and acknowledges all the deliveries at once.
    async fn take_ready(&mut self) {
        for _ in 0..4096 {
            if self.group.as_ref().is_none_or(|g| g.pending_events() == 0) {
                break;
            }
            match next_event(&mut self.group).await {
                Some(ev) => self.on_event(ev).await,
                None => break,
            }
        }
        for _ in 0..4096 {
            if self.stopped.is_some() {
                break;
            }
            match self.rx.try_recv() {
                Ok(r) => self.on_request(r),
                Err(_) => break,
            }
        }
    }

    async fn multicast(&mut self, b: Bytes) -> Result<(), RsmError> {
        match &self.group {
            Some(g) => g.multicast(b).await.map_err(RsmError::from),
            None => Err(RsmError::Removed),
        }
    }

    fn emit(&self, ev: ReplicaEvent) {
        let _ = self.events.send(ev);
    }

    fn stop(&mut self, reason: String) {
        tracing::info!(%reason, "replica stopped");
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(RsmError::ShuttingDown));
        }
        self.core.fail_reads(|| RsmError::ShuttingDown);
        self.donors.clear();
        self.emit(ReplicaEvent::Stopped {
            reason: reason.clone(),
        });
        self.stopped = Some(reason);
    }

    /// The error for a command or read this replica cannot serve now.
    fn refusal(&self) -> Option<RsmError> {
        if self.stopped.is_some() || self.leaving.is_some() || self.left {
            Some(RsmError::ShuttingDown)
        } else if self.blocked {
            Some(RsmError::Blocked)
        } else if matches!(self.core.phase(), Phase::Removed) {
            Some(RsmError::Removed)
        } else if self.core.phase() != Phase::Member
            || self.needs_base
            || !self.core.readable()
            || !self.core.admitted()
        {
            Some(RsmError::NotMember)
        } else if self.core.recovering() {
            Some(RsmError::Recovering)
        } else {
            None
        }
    }

    fn on_request(&mut self, r: Request<S>) {
        match r {
            Request::Execute { cmd, reply } => {
                if let Some(e) = self.refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let req = self.next_req;
                self.next_req += 1;
                let e = Entry::Cmd {
                    origin: self.core.pid(),
                    req,
                    cmd,
                };
                self.push_outgoing(e, Some(reply));
            }
            Request::Read(f) => {
                if self.core.readable() {
                    f(Ok(self.core.machine()));
                } else {
                    f(Err(RsmError::NotMember));
                }
            }
            Request::ReadOrdered(f) => {
                if let Some(e) = self.refusal() {
                    f(Err(e));
                    return;
                }
                let req = self.next_req;
                self.next_req += 1;
                self.core.register_read(req, f);
                let e = Entry::Read {
                    origin: self.core.pid(),
                    req,
                };
                self.push_outgoing(e, None);
            }
            Request::Checkpoint(reply) => {
                if self.store.is_none() {
                    let _ = reply.send(Err(RsmError::Config(
                        "checkpoints need a data directory (data_dir)".into(),
                    )));
                    return;
                }
                self.ckpt_waiters.push(reply);
                self.ckpt_force = true;
            }
            Request::Evict { node, reply } => {
                let member = self
                    .core
                    .view()
                    .and_then(|v| v.members.iter().copied().find(|p| p.node.0 == node));
                let r = match member {
                    None => Err(RsmError::NotInView { node }),
                    Some(p) if p == self.core.pid() => Err(RsmError::Config(
                        "a replica does not evict itself: stop it instead (SIGTERM: it leaves cleanly)"
                            .into(),
                    )),
                    Some(p) => {
                        tracing::warn!(evicted = %p, "evicting a member on the operator's request");
                        self.sender.suspect(p).map(|()| p).map_err(RsmError::from)
                    }
                };
                let _ = reply.send(r);
            }
            Request::Leave(reply) => {
                if self.leaving.is_some() {
                    let _ = reply.send(Err(RsmError::ShuttingDown));
                    return;
                }
                self.leaving = Some(reply);
            }
        }
    }

    fn push_outgoing(&mut self, e: Entry, reply: Option<Reply<S::Output>>) {
        let size = match &e {
            Entry::Cmd { cmd, .. } => cmd.len() + 32,
            _ => 32,
        };
        if size > self.max_batch {
            if let Some(r) = reply {
                let _ = r.send(Err(RsmError::Codec(format!(
                    "the command is {size} bytes; the group's limit is {} (engine max_payload)",
                    self.max_batch
                ))));
            }
            return;
        }
        self.outgoing_bytes += size;
        self.outgoing.push((e, reply));
    }

    /// Multicasts the queued entries, in batches below the payload limit.
    async fn send_outgoing(&mut self) {
        while !self.outgoing.is_empty() {
            let mut size = 0;
            let mut n = 0;
            for (e, _) in &self.outgoing {
                let s = match e {
                    Entry::Cmd { cmd, .. } => cmd.len() + 32,
                    _ => 32,
                };
                if n > 0 && size + s > self.max_batch {
                    break;
                }
                size += s;
                n += 1;
            }
            let part: Vec<_> = self.outgoing.drain(..n).collect();
            self.outgoing_bytes = self.outgoing_bytes.saturating_sub(size);
            let entries: Vec<Entry> = part.iter().map(|(e, _)| e.clone()).collect();
            let res = match encode_batch(&entries) {
                Ok(b) => self.multicast(b).await,
                Err(e) => Err(RsmError::from(e)),
            };
            match res {
                Ok(()) => {
                    for (e, reply) in part {
                        if let (Entry::Cmd { req, .. }, Some(r)) = (e, reply) {
                            self.pending.insert(req, r);
                        }
                    }
                }
                Err(err) => {
                    let msg = err.to_string();
                    for (_, reply) in part {
                        if let Some(r) = reply {
                            let _ = r.send(Err(RsmError::Codec(msg.clone())));
                        }
                    }
                    if matches!(err, RsmError::Net(_)) {
                        // Removed or stopped: the event stream says which.
                        self.core.fail_reads(|| RsmError::Removed);
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::View { view, joined } => {
                Metrics::add(&self.metrics.view_changes, 1);
                self.blocked = false;
                let gone: Vec<Pid> = self
                    .donors
                    .keys()
                    .copied()
                    .filter(|j| !view.contains(*j))
                    .collect();
                // (A view change that removes a joiner cancels its stream.)
                for j in gone {
                    self.donors.remove(&j);
                    tracing::info!(joiner = %j, "the joiner left the view: state transfer cancelled");
                    self.emit(ReplicaEvent::StateTransferCancelled { joiner: j });
                }
                self.clock.admitted();
                self.addresses = self.view_addresses(&view);
                self.core.on_view(view.clone());
                if joined && self.joins_by_transfer {
                    // A joiner's first view: the group's cluster is known
                    // only once its donor's state arrives (a group of
                    // another cluster must leave no trace on disk).
                } else {
                    self.persist_identity();
                }
                self.emit(ReplicaEvent::View { view });
            }
            Event::Deliver { payload, .. } => {
                Metrics::add(&self.metrics.deliveries, 1);
                self.core.on_deliver(payload);
            }
            Event::Blocked { view } => {
                self.blocked = true;
                self.emit(ReplicaEvent::Blocked { view });
            }
            Event::SendState { joiner, view } => self.core.on_send_state(joiner, view),
            Event::AwaitState { donor, view } => {
                tracing::info!(%donor, %view, "waiting for the state");
                self.core.on_await_state(donor, view);
                self.last_progress = Instant::now();
            }
            Event::Diverged {
                view,
                split,
                winner,
                winner_addrs,
            } => self.on_diverged(view, split, winner, winner_addrs).await,
            Event::Removed { view } => {
                self.emit(ReplicaEvent::Removed { view });
                self.need_rejoin = Some(format!("removed from the group after view {view}"));
            }
            Event::Left { .. } => {
                self.stop("left the group".into());
            }
            Event::Direct { from, payload } => match decode_direct(&payload) {
                Ok((m, data)) => self.on_direct(from, m, data).await,
                Err(e) => tracing::warn!(%from, error = %e, "undecodable direct message: ignored"),
            },
            _ => {}
        }
    }

    /// This replica's side lost a partition merge (see the module docs).
    async fn on_diverged(
        &mut self,
        view: ViewId,
        split: Option<ViewId>,
        winner: vsync_core::View,
        winner_addrs: Vec<SocketAddr>,
    ) {
        let info = self.core.on_diverged(view, split, winner).info();
        tracing::warn!(
            %view,
            split = %split.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            winner = %info.winner,
            position = ?info.position,
            discarded = info.discarded,
            listed = info.listed,
            "this replica's side lost the partition merge: its history since the split is discarded; rejoining the winner to take its state"
        );
        Metrics::add(&self.metrics.divergences, 1);
        Metrics::add(&self.metrics.discarded_commands, info.discarded);
        self.rejoin_seeds.extend(winner_addrs);
        self.last_divergence = Some(info.clone());
        self.discard_local_store().await;
        self.emit(ReplicaEvent::Diverged(info));
    }

    /// Erases the checkpoint and the log after a lost merge: they hold the
    /// discarded history, which a restart must never load or replay. A
    /// checkpoint being written (of the losing state) is let finish first,
    /// then erased with the rest. If the store cannot be erased the replica
    /// stops rather than keep it.
    async fn discard_local_store(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if let Some(h) = self.ckpt.take() {
            let _ = h.await;
            for r in self.ckpt_waiters.drain(..) {
                let _ = r.send(Err(RsmError::Storage(
                    "the checkpoint was discarded: this replica's side lost a partition merge"
                        .into(),
                )));
            }
        }
        let path = store.path().to_path_buf();
        let r = tokio::task::spawn_blocking(move || store.clear()).await;
        let err = blocking_error(r);
        match err {
            None => {
                tracing::info!(dir = %path.display(), "local checkpoint and log of the discarded history erased");
                self.ckpt_known = false;
                self.last_ckpt_pos = 0;
                self.status.send_modify(|s| s.last_checkpoint = None);
            }
            Some(e) => {
                tracing::error!(error = %e, "cannot erase the local checkpoint and log of the discarded history: stopping");
                self.stop(format!(
                    "cannot erase the checkpoint and log of the discarded history in {} ({e}); delete that directory before restarting this replica",
                    path.display()
                ));
            }
        }
    }

    async fn on_direct(&mut self, from: Pid, m: Direct, data: Bytes) {
        match m {
            Direct::Request {
                view,
                attempt,
                have,
            } => {
                self.on_request_state(from, view, attempt, have);
                return;
            }
            Direct::Ack {
                view,
                attempt,
                next,
            } => {
                if let Some(p) = self.donors.get(&from) {
                    if p.plan.view == view {
                        if next == u64::MAX {
                            // Restored: the image can go.
                            self.donors.remove(&from);
                        } else if let Some(o) = p.running.as_ref().filter(|o| o.attempt == attempt)
                        {
                            o.acked.send_replace(next);
                        }
                    }
                }
                return;
            }
            _ => {}
        }
        // Joiner side: only the donor asked, in the view and attempt asked.
        let Some((donor, view, attempt, _)) = self.request else {
            return;
        };
        if from != donor
            || m.view() != view
            || (m.attempt() != attempt && !matches!(m, Direct::Refuse { .. }))
        {
            return;
        }
        self.last_progress = Instant::now();
        if let Some(r) = &mut self.request {
            r.3 = Instant::now();
        }
        match m {
            Direct::Begin { view, offer, .. } => self.core.state_begin(from, view, offer),
            Direct::Piece {
                view, seq, last, ..
            } => {
                Metrics::add(&self.metrics.transfer_bytes_received, data.len() as u64);
                let max = self.cfg.max_transfer;
                if let Err(e) = self.received.add(from, view, attempt, data.len(), max) {
                    tracing::error!("{e}");
                    self.stop(e.to_string());
                    return;
                }
                if let Some(next) = self.core.state_piece(from, view, seq, last, &data) {
                    if next % ACK_EVERY == 0 {
                        self.send_direct(
                            from,
                            &Direct::Ack {
                                view,
                                attempt,
                                next,
                            },
                        )
                        .await;
                    }
                }
            }
            Direct::End {
                view, pieces, crc, ..
            } => {
                self.core.state_end(from, view, pieces, crc);
                if self.core.phase() == Phase::Member {
                    let done = Direct::Ack {
                        view,
                        attempt,
                        next: u64::MAX,
                    };
                    self.send_direct(from, &done).await;
                }
            }
            Direct::Refuse { view } => self.core.state_refused(from, view),
            Direct::Request { .. } | Direct::Ack { .. } => {}
        }
    }

    fn send_direct(&self, to: Pid, m: &Direct) -> impl std::future::Future<Output = ()> + Send {
        let sender = self.sender.clone();
        let encoded = postcard::to_stdvec(m);
        async move { send_direct(sender, to, encoded).await }
    }

    /// A joiner asks for its state (again): (re)start the stream from a
    /// clone of the image taken at its cut.
    fn on_request_state(
        &mut self,
        joiner: Pid,
        view: ViewId,
        attempt: u32,
        have: Option<(u64, u64)>,
    ) {
        let Some(p) = self.donors.get_mut(&joiner) else {
            // Asked before this replica reached the cut: answered then.
            tracing::debug!(%joiner, %view, "state asked for before the cut");
            self.asked.insert(
                joiner,
                Asked {
                    view,
                    attempt,
                    have,
                },
            );
            return;
        };
        if p.plan.view != view || p.running.as_ref().is_some_and(|o| o.attempt >= attempt) {
            return;
        }
        if attempt == 1 && p.plan.image.is_some() {
            tracing::info!(%joiner, position = p.plan.position, "sending the state");
            let _ = self.events.send(ReplicaEvent::StateTransferStarted {
                joiner,
                position: p.plan.position,
            });
        } else if p.plan.image.is_some() {
            tracing::info!(%joiner, attempt, "the joiner asked again: restarting the state transfer");
        }
        let mut plan = p.plan.clone();
        plan.attempt = attempt;
        plan.catch_up = plan.catch_up_from(have);
        if let Some((from, batches)) = &plan.catch_up {
            tracing::info!(%joiner, from, to = plan.position, batches = batches.len(), "the joiner is on this history: sending only the commands it lacks (catch-up)");
        }
        // Dropping the previous stream aborts it.
        p.running = Some(transfer::spawn(
            self.sender.clone(),
            plan,
            self.metrics.clone(),
            self.done_tx.clone(),
        ));
    }

    /// As joiner: ask the donor for the state when a transfer is awaited
    /// and not yet asked for, or again when the donor went quiet.
    async fn ask_for_state(&mut self) {
        let Phase::Awaiting { donor, view } = self.core.phase() else {
            self.request = None;
            return;
        };
        let attempt = match self.request {
            Some((d, v, a, heard)) if d == donor && v == view => {
                if heard.elapsed() < RETRY_AFTER {
                    return;
                }
                if a >= MAX_ATTEMPTS {
                    self.core.give_up(format!(
                        "the donor {donor} did not answer {a} requests for the state"
                    ));
                    return;
                }
                a + 1
            }
            _ => 1,
        };
        self.request = Some((donor, view, attempt, Instant::now()));
        let have = self.core.catch_up_point();
        self.send_direct(
            donor,
            &Direct::Request {
                view,
                attempt,
                have,
            },
        )
        .await;
    }

    /// Carries out the core's actions.
    async fn actions(&mut self) {
        loop {
            let actions = self.core.drain_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                self.action(a).await;
            }
        }
    }

    async fn action(&mut self, a: Action<S>) {
        match a {
            Action::Applied { req, output } => {
                Metrics::add(&self.metrics.commands_applied, 1);
                if let Some(r) = self.pending.remove(&req) {
                    self.acks.push((r, output));
                }
            }
            Action::Halt { position, reason } => {
                let msg = format!(
                    "halted before position {position}: {reason}; this replica leaves the group rather than diverge (run a build that understands the group's commands, see docs/OPERATIONS.md, upgrades)"
                );
                tracing::error!("{msg}");
                self.emit(ReplicaEvent::Halted {
                    position,
                    reason: reason.clone(),
                });
                let sender = self.sender.clone();
                let _ = tokio::time::timeout(self.cfg.net.leave_timeout, sender.leave()).await;
                self.stop(msg);
            }
            Action::ForeignCluster { ours, theirs } => {
                let msg = format!(
                    "the group this replica reached is cluster {theirs}, but the data directory {} belongs to cluster {ours}: refused, nothing was changed (check --seed and the data directory)",
                    self.cfg
                        .data_dir
                        .as_deref()
                        .unwrap_or(std::path::Path::new("(none)"))
                        .display()
                );
                tracing::error!("{msg}");
                self.stop(msg);
            }
            Action::Multicast(b) => {
                if let Err(e) = self.multicast(b).await {
                    tracing::debug!(error = %e, "recovery claim not sent");
                }
            }
            Action::SendState(state) => {
                let (joiner, view) = (state.joiner, state.view);
                // Kept until the joiner asks (and asks again if pieces
                // are lost), has restored it, or leaves the view.
                self.donors.insert(
                    joiner,
                    Prepared {
                        plan: Plan::new(state, 0),
                        running: None,
                    },
                );
                if let Some(a) = self.asked.remove(&joiner) {
                    if a.view == view {
                        self.on_request_state(joiner, view, a.attempt, a.have);
                    }
                }
            }
            Action::Retry { reason } => {
                tracing::info!(%reason, "state transfer interrupted: asking again");
                if let Some(r) = &mut self.request {
                    // Ask at the next round.
                    r.3 = Instant::now() - RETRY_AFTER;
                }
            }
            Action::Log { first, payload } => {
                if self.cfg.durability == Durability::Logged {
                    if let Some(store) = &self.store {
                        match store.append(first, &payload) {
                            Ok(()) => {
                                self.logged = true;
                                Metrics::add(&self.metrics.log_appends, 1);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot append to the log: stopping");
                                self.stop(format!("the log cannot be written: {e}"));
                            }
                        }
                    }
                }
            }
            Action::StateRestored {
                donor,
                position,
                bytes,
                caught_up,
            } => {
                if caught_up {
                    tracing::info!(%donor, position, bytes, "caught up: received only the commands this replica lacked");
                    Metrics::add(&self.metrics.catch_ups_received, 1);
                } else {
                    tracing::info!(%donor, position, bytes, "state received");
                }
                Metrics::add(&self.metrics.transfers_received, 1);
                self.emit(ReplicaEvent::StateTransferDone {
                    donor,
                    position,
                    bytes,
                });
                // A catch-up was logged batch by batch onto the local
                // state: the checkpoint and log on disk still rebuild it.
                if self.store.is_some() && !caught_up {
                    // The received state is the new base of the log.
                    self.needs_base = self.cfg.durability == Durability::Logged;
                    self.ckpt_force = true;
                }
                self.persist_identity();
            }
            Action::GiveUp { reason } => {
                tracing::warn!(%reason, "state transfer failed: rejoining as a new incarnation");
                self.emit(ReplicaEvent::StateTransferFailed {
                    reason: reason.clone(),
                });
                self.need_rejoin = Some(reason);
            }
            Action::Recovered { position, holder } => {
                self.clock.recovered();
                self.persist_identity();
                self.emit(ReplicaEvent::Recovered { position, holder });
            }
        }
    }

    /// Ends a round. Memory mode: the acknowledgements go now. Logged
    /// mode: they wait for a flush of the log that started after their
    /// commands were appended (group commit). The flush runs on a blocking
    /// thread while this task goes on delivering, applying and appending;
    /// what is appended meanwhile is covered by the next flush. So a slow
    /// disk makes the batches larger, not the replica idle.
    ///
    /// A flush starts when acknowledgements wait for it. Commands this
    /// replica only applies (others' clients) wait for no flush here: they
    /// are acknowledged by their origin once its own log has them, so this
    /// replica's log is flushed at the next tick (200 ms) instead of at
    /// every round. On one disk shared by several replicas (a test
    /// cluster) that keeps the others' flushes from queueing behind it.
    fn finish_round(&mut self) {
        let logged_mode = self.cfg.durability == Durability::Logged && self.store.is_some();
        if !logged_mode {
            for (r, out) in self.acks.drain(..) {
                let _ = r.send(Ok(out));
            }
            return;
        }
        let idle_due = std::mem::take(&mut self.idle_flush_due) && self.logged;
        if self.flushing.len() >= FLUSHES_IN_FLIGHT || (self.acks.is_empty() && !idle_due) {
            return;
        }
        let Some(store) = self.store.clone() else {
            return;
        };
        self.logged = false;
        self.flushing.push_back(Flushing {
            task: tokio::task::spawn_blocking(move || store.flush()),
            acks: std::mem::take(&mut self.acks),
        });
    }

    /// A log flush ended: its replies go (or fail, and the replica stops:
    /// a log that cannot be made durable cannot acknowledge anything).
    fn on_flushed(&mut self, r: Result<Result<(), RsmError>, tokio::task::JoinError>) {
        let Some(f) = self.flushing.pop_front() else {
            return;
        };
        let err = blocking_error(r);
        match err {
            None => {
                for (r, out) in f.acks {
                    let _ = r.send(Ok(out));
                }
            }
            Some(e) => {
                tracing::error!(error = %e, "cannot flush the log: stopping");
                for (r, _) in f.acks.into_iter().chain(self.acks.drain(..)) {
                    let _ = r.send(Err(RsmError::Storage(e.clone())));
                }
                self.stop(format!("the log cannot be flushed: {e}"));
            }
        }
    }

    fn on_transfer_done(&mut self, f: Finished) {
        if let Some(p) = self.donors.get_mut(&f.joiner) {
            if p.running.as_ref().is_some_and(|o| o.attempt == f.attempt) {
                p.running = None;
            }
        }
        match f.result {
            Ok(bytes) => {
                if bytes > 0 {
                    tracing::info!(joiner = %f.joiner, bytes, "state sent");
                    self.emit(ReplicaEvent::StateTransferSent {
                        joiner: f.joiner,
                        bytes,
                    });
                }
            }
            Err(e) => tracing::info!(joiner = %f.joiner, error = %e, "state transfer stopped"),
        }
    }

    /// Records the cluster and the current view in the data directory
    /// ([`crate::identity`]), so that a restart knows whom to ask and
    /// whose claims recovery waits for. Not while recovering (the last
    /// view before the outage must stay what recovery waits for), nor
    /// while awaiting a state (the group's cluster is not confirmed yet).
    /// In Logged mode the log is flushed first: a member that records a
    /// view without a departed member holds, durably, everything that
    /// member could have acknowledged before it. Blocking, but views
    /// change rarely.
    fn persist_identity(&mut self) {
        let Some(dir) = self.cfg.data_dir.clone() else {
            return;
        };
        let (Some(cluster), Some(view)) = (self.core.cluster(), self.core.view()) else {
            return;
        };
        if self.core.recovering() || self.core.phase() != Phase::Member || !self.core.readable() {
            return;
        }
        let addrs: HashMap<Pid, SocketAddr> = self
            .group
            .as_ref()
            .map(|g| g.known_peers().into_iter().collect())
            .unwrap_or_default();
        let own = self.group.as_ref().map(|g| (g.pid(), g.local_addr()));
        let last = LastView {
            id: view.id,
            members: view
                .members
                .iter()
                .map(|p| LastMember {
                    pid: *p,
                    addr: match own {
                        Some((me, a)) if me == *p => Some(self.cfg.net.advertise.unwrap_or(a)),
                        _ => addrs.get(p).copied(),
                    },
                })
                .collect(),
        };
        let mut id = self
            .identity
            .clone()
            .unwrap_or_else(|| Identity::new(cluster, &self.cfg.net.group, self.cfg.net.node));
        if id.cluster == cluster && id.last_view.as_ref() == Some(&last) {
            return;
        }
        id.cluster = cluster;
        id.last_view = Some(last);
        if self.cfg.durability == Durability::Logged {
            if let Some(store) = &self.store {
                if let Err(e) = store.flush() {
                    tracing::error!(error = %e, "cannot flush the log: stopping");
                    self.stop(format!("the log cannot be flushed: {e}"));
                    return;
                }
            }
        }
        match id.save(&dir) {
            Ok(()) => self.identity = Some(id),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the view in the data directory: stopping");
                self.stop(format!("cannot record the view in the data directory: {e}"));
            }
        }
    }

    /// The listen addresses of `view`'s members, as far as known.
    fn view_addresses(&self, view: &vsync_core::View) -> Vec<(Pid, SocketAddr)> {
        let Some(g) = &self.group else {
            return Vec::new();
        };
        let known: HashMap<Pid, SocketAddr> = g.known_peers().into_iter().collect();
        view.members
            .iter()
            .filter_map(|p| {
                let own = (*p == g.pid()).then(|| self.cfg.net.advertise.unwrap_or(g.local_addr()));
                own.or_else(|| known.get(p).copied()).map(|a| (*p, a))
            })
            .collect()
    }

    /// The restart's clock: a restarting founder that no group admitted
    /// in time founds a recovering group; one left alone in a recovering
    /// group for as long tries to join again (a running group may exist
    /// that it could not reach).
    async fn restart_tick(&mut self) {
        let now = self.epoch.elapsed();
        let members = self.core.view().map_or(0, |v| v.members.len());
        let step = self.clock.poll(
            now,
            Observed {
                phase: self.core.phase(),
                recovering: self.core.recovering(),
                members,
                can_ask: !self.cfg.net.seeds.is_empty(),
                blocked: self.blocked,
            },
        );
        match step {
            RestartStep::Wait => {}
            RestartStep::FoundRecovering => self.found_recovering().await,
            RestartStep::AskAgain => {
                let why = if self.blocked {
                    "the group has been blocked too long (its view lost its majority)"
                } else {
                    "the recovering group did not complete"
                };
                tracing::warn!(members, "{why}: asking the last view's members again");
                self.need_rejoin = Some(why.into());
                let founder = self.founder_of_last || members <= 1;
                self.clock.restarting(now, founder);
            }
        }
    }

    /// Founds a recovering group as a new incarnation (the whole cluster
    /// is down: see [`crate::Start::Auto`]).
    async fn found_recovering(&mut self) {
        tracing::warn!(
            waited = ?self.cfg.restart_wait,
            position = self.core.position(),
            "no group admitted this replica: the whole cluster seems down; founding a recovering group, which waits for every node of its members' last views"
        );
        let old = self.core.pid();
        if let Some(g) = self.group.take() {
            g.shutdown().await;
        }
        let mut net = self.cfg.net.clone();
        net.incarnation = Some((unix_ms() as u64).max(old.inc + 1));
        if self.core.cluster().is_none() {
            // Data that records no cluster (an older version's): the
            // recovered group gets an id now.
            self.core.set_cluster(Some(ClusterId(rand::random())));
        }
        match Group::found(net).await {
            Ok(group) => {
                let pid = group.pid();
                self.sender = group.sender();
                self.group = Some(group);
                self.joins_by_transfer = false;
                self.core.rejoin(pid);
                self.core.start_recovery(RecoveryRule::LastViews);
            }
            Err(e) => self.stop(format!("cannot found the recovering group: {e}")),
        }
    }

    fn on_tick(&mut self) {
        self.idle_flush_due = true;
        if matches!(self.core.phase(), Phase::Awaiting { .. })
            && self.last_progress.elapsed() > self.cfg.transfer_timeout
        {
            self.core.give_up(format!(
                "no progress of the state transfer for {:?}",
                self.cfg.transfer_timeout
            ));
        }
    }

    fn maybe_checkpoint(&mut self) {
        let Some(store) = &self.store else { return };
        if self.ckpt.is_some() || self.core.phase() != Phase::Member || !self.core.readable() {
            return;
        }
        let pos = self.core.position();
        let due = self.ckpt_force
            || (self.cfg.checkpoint_every > 0
                && pos >= self.last_ckpt_pos + self.cfg.checkpoint_every)
            || (!self.cfg.checkpoint_interval.is_zero()
                && pos > self.last_ckpt_pos
                && self.last_ckpt_at.elapsed() >= self.cfg.checkpoint_interval);
        if !due {
            return;
        }
        self.ckpt_force = false;
        self.last_ckpt_at = Instant::now();
        let image = self.core.machine().image();
        let view = self.core.view().map(|v| v.id);
        let chain = self.core.chain();
        let store = store.clone();
        self.ckpt = Some(tokio::task::spawn_blocking(move || {
            store.write_checkpoint(pos, view, chain, image)
        }));
    }

    fn on_checkpoint_done(&mut self, r: Result<Result<Written, RsmError>, tokio::task::JoinError>) {
        self.ckpt = None;
        let r = match r {
            Ok(r) => r,
            Err(e) => Err(RsmError::Storage(format!(
                "the checkpoint task failed: {e}"
            ))),
        };
        match r {
            Ok(w) => {
                self.last_ckpt_pos = w.meta.position;
                self.ckpt_known = true;
                self.needs_base = false;
                Metrics::add(&self.metrics.checkpoints_written, 1);
                self.metrics.last_checkpoint_micros.store(
                    w.took.as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                tracing::info!(position = w.meta.position, bytes = w.meta.bytes, took = ?w.took, "checkpoint written");
                self.emit(ReplicaEvent::CheckpointWritten {
                    position: w.meta.position,
                });
                self.publish();
                for r in self.ckpt_waiters.drain(..) {
                    let _ = r.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint failed");
                let msg = e.to_string();
                for r in self.ckpt_waiters.drain(..) {
                    let _ = r.send(Err(RsmError::Storage(msg.clone())));
                }
            }
        }
    }

    fn maybe_leave(&mut self) {
        if self.leaving.is_none() || !self.pending.is_empty() || !self.outgoing.is_empty() {
            return;
        }
        if let Some(reply) = self.leaving.take() {
            let sender = self.sender.clone();
            tokio::spawn(async move {
                let r = sender.leave().await.map_err(RsmError::from);
                let _ = reply.send(r);
            });
            // Refuse further requests until Left ends the task.
            self.leaving = None;
            self.blocked = false;
            self.need_rejoin = None;
            self.stopped_soon();
        }
    }

    /// After a leave was requested: refuse new work (the Left event stops
    /// the task).
    fn stopped_soon(&mut self) {
        self.cfg.auto_rejoin = false;
        self.left = true;
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(RsmError::ShuttingDown));
        }
    }

    async fn rejoin(&mut self, reason: String) {
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(RsmError::Removed));
        }
        for (e, r) in self.outgoing.drain(..) {
            drop(e);
            if let Some(r) = r {
                let _ = r.send(Err(RsmError::Removed));
            }
        }
        self.outgoing_bytes = 0;
        self.donors.clear();
        self.asked.clear();
        self.request = None;
        self.core.on_removed();
        self.blocked = false;
        if !self.cfg.auto_rejoin {
            self.stop(reason);
            return;
        }
        let old = self.core.pid();
        let mut seeds: BTreeSet<SocketAddr> = self.cfg.net.seeds.iter().copied().collect();
        seeds.extend(self.rejoin_seeds.iter().copied());
        if let Some(g) = &self.group {
            seeds.extend(g.known_peers().into_iter().map(|(_, a)| a));
        }
        let mut net = self.cfg.net.clone();
        net.seeds = seeds.into_iter().collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        net.incarnation = Some(now.max(old.inc + 1));
        tracing::info!(%reason, "rejoining as a new incarnation");
        // Stop the old incarnation first (its listener may hold the port).
        if let Some(g) = self.group.take() {
            g.shutdown().await;
        }
        let mut delay = Duration::from_millis(50);
        let group = loop {
            match Group::join(net.clone()).await {
                Ok(g) => break g,
                Err(e) if delay < Duration::from_secs(5) => {
                    tracing::debug!(error = %e, "rejoin: retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    self.stop(format!("cannot rejoin: {e}"));
                    return;
                }
            }
        };
        let pid = group.pid();
        self.sender = group.sender();
        self.group = Some(group);
        self.joins_by_transfer = true;
        self.core.rejoin(pid);
        Metrics::add(&self.metrics.rejoins, 1);
        self.emit(ReplicaEvent::Rejoined { pid });
    }

    fn publish(&self) {
        let view = self.core.view().cloned();
        let pid = self.core.pid();
        let role = if self.stopped.is_some() {
            Role::Stopped
        } else {
            match self.core.phase() {
                Phase::Removed => Role::Removed,
                _ if self.blocked => Role::Blocked,
                Phase::Joining => Role::Joining,
                Phase::Awaiting { .. } => Role::ReceivingState,
                // Restored, but a Logged joiner serves only once the received
                // state is on disk as the log's base (`refusal` says
                // NotMember until then): say so rather than `Member`.
                Phase::Member
                    if self.needs_base || !self.core.readable() || !self.core.admitted() =>
                {
                    Role::ReceivingState
                }
                Phase::Member if self.core.recovering() => Role::Recovering,
                Phase::Member if self.donors.values().any(|p| p.running.is_some()) => Role::Donor,
                Phase::Member => {
                    if view.as_ref().and_then(|v| v.members.first()) == Some(&pid) {
                        Role::Coordinator
                    } else {
                        Role::Member
                    }
                }
            }
        };
        self.status.send_modify(|s| {
            s.pid = Some(pid);
            s.members = view.as_ref().map_or_else(Vec::new, |v| v.members.clone());
            s.view = view;
            s.position = self.core.position();
            s.role = role;
            s.blocked = self.blocked;
            s.last_checkpoint = self.ckpt_known.then_some(self.last_ckpt_pos);
            s.last_divergence.clone_from(&self.last_divergence);
            s.cluster = self.core.cluster();
            if s.addresses != self.addresses {
                s.addresses.clone_from(&self.addresses);
            }
        });
    }
}

/// The next event of the current incarnation (never, while there is none).
async fn next_event(g: &mut Option<GroupHandle>) -> Option<Event> {
    match g {
        Some(g) => g.next_event().await,
        None => std::future::pending().await,
    }
}

type CheckpointTask = JoinHandle<Result<Written, RsmError>>;

/// Why a blocking store operation failed, if it did (its own error or
/// the thread's).
fn blocking_error(r: Result<Result<(), RsmError>, tokio::task::JoinError>) -> Option<String> {
    match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// A log flush on a blocking thread and the replies it makes durable.
struct Flushing<O> {
    task: JoinHandle<Result<(), RsmError>>,
    acks: Vec<(Reply<O>, O)>,
}

/// The oldest running log flush's result (never, while none runs).
async fn flush_done<O>(
    f: &mut VecDeque<Flushing<O>>,
) -> Option<Result<Result<(), RsmError>, tokio::task::JoinError>> {
    match f.front_mut() {
        Some(f) => Some((&mut f.task).await),
        None => std::future::pending().await,
    }
}

/// Log flushes that may run at once. A second flush starts for what was
/// appended while the first runs, instead of waiting for it: a command
/// then waits about one flush, not one and a half.
const FLUSHES_IN_FLIGHT: usize = 2;

/// The running checkpoint's result (never, while none runs).
async fn ckpt_done(
    c: &mut Option<CheckpointTask>,
) -> Option<Result<Result<Written, RsmError>, tokio::task::JoinError>> {
    match c {
        Some(h) => Some(h.await),
        None => std::future::pending().await,
    }
}

async fn send_direct(sender: GroupSender, to: Pid, encoded: Result<Vec<u8>, postcard::Error>) {
    match encoded {
        Ok(b) => {
            if let Err(e) = sender.send_to(to, Bytes::from(b)).await {
                tracing::debug!(error = %e, "direct message not sent");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a direct message"),
    }
}
