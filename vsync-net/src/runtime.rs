//! The engine task: owns the [`Engine`], feeds it the transport's messages,
//! the application's commands and its timer, and hands its outputs to the
//! writer tasks, the history file and the application.
//!
//! Time is microseconds since the task's process started (a monotonic
//! clock). Inputs are taken in bursts (up to [`BATCH`] at a time) and the
//! outputs drained once per burst: that is where the engine batches (one
//! data message for all queued multicasts, one acknowledgement, ...).

use crate::api::{Config, Event, GroupHandle, GroupSender, NetError};
use crate::history::Recorder;
use crate::router::Router;
use crate::secure::Security;
use crate::transport::{Inbound, Limits, Shared, run_listener};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use vsync_core::history::Event as HistEvent;
use vsync_core::{AppEvent, Engine, Output, Pid, View};

/// Inputs handled before the outputs are drained.
const BATCH: usize = 256;
/// Messages the transport may queue for the engine task.
const INBOUND_QUEUE: usize = 4096;

/// What the application asks of the engine task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Multicast(Bytes, vsync_core::Delivery),
    Leave(oneshot::Sender<Result<(), NetError>>),
    Suspect(Pid),
    Direct {
        to: Pid,
        payload: Bytes,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
}

/// What woke the engine task.
enum Wake {
    Stop,
    Cmd(Cmd),
    Inbound(Inbound),
    Timer,
    Gossip,
}

/// Whether a message kind is worth a debug log line (not the steady
/// stream of data, ordering, acknowledgements and repairs).
fn is_control(msg: &vsync_core::Message) -> bool {
    !matches!(msg.kind(), "data" | "order" | "ack" | "nack")
}

/// A message's debug form, cut short.
fn brief(msg: &vsync_core::Message) -> String {
    let mut s = format!("{msg:?}");
    if s.len() > 240 {
        let mut end = 240;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// How a process starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Found,
    Join,
}

const RUNNING: u8 = 0;
const REMOVED: u8 = 1;
const LEFT: u8 = 2;
const CLOSED: u8 = 3;

/// The process's state as the application's handles see it.
#[derive(Debug, Default)]
pub(crate) struct State(AtomicU8);

impl State {
    fn set(&self, s: u8) {
        let _ = self
            .0
            .compare_exchange(RUNNING, s, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the process left the group cleanly.
    fn left(&self) -> bool {
        self.0.load(Ordering::Acquire) == LEFT
    }

    pub(crate) fn check(&self) -> Result<(), NetError> {
        if self.0.load(Ordering::Acquire) == RUNNING {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    pub(crate) fn error(&self) -> NetError {
        match self.0.load(Ordering::Acquire) {
            REMOVED => NetError::Removed,
            LEFT => NetError::Left,
            _ => NetError::Closed,
        }
    }
}

/// Events sent to the application and not yet taken: the application's
/// backpressure on its own multicasts.
#[derive(Debug)]
pub(crate) struct Backlog {
    pending: AtomicUsize,
    /// Notified when the backlog falls back to `high`, and at shutdown.
    drained: Notify,
    high: usize,
}

impl Backlog {
    fn new(high: usize) -> Self {
        Backlog {
            pending: AtomicUsize::new(0),
            drained: Notify::new(),
            high: high.max(2),
        }
    }

    fn added(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// The application took one event.
    pub(crate) fn taken(&self) {
        let before = self.pending.fetch_sub(1, Ordering::AcqRel);
        if before.checked_sub(1) == Some(self.high) {
            self.drained.notify_waiters();
        }
    }

    /// Waits while more than `high` events wait for the application (or
    /// until the runtime stops: `state` not running).
    pub(crate) async fn wait(&self, state: &State) {
        // The common case, without registering a waiter.
        if self.pending.load(Ordering::Acquire) <= self.high {
            return;
        }
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Ordering::Acquire) <= self.high || state.check().is_err() {
                return;
            }
            notified.await;
        }
    }
}

/// The process's clock origin.
fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_micros() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// Binds the listener and starts the tasks.
pub(crate) async fn start(config: Config, mode: Mode) -> Result<GroupHandle, NetError> {
    let _ = epoch();
    if config.group.is_empty() {
        return Err(NetError::Config("the group name is empty".into()));
    }
    if config.max_frame < 1024 {
        return Err(NetError::Config(format!(
            "max_frame {} is below 1024 bytes",
            config.max_frame
        )));
    }
    if config.max_peer_queue == 0 || config.max_inbound == 0 || config.max_handshakes == 0 {
        return Err(NetError::Config(
            "max_peer_queue, max_inbound and max_handshakes must be above 0".into(),
        ));
    }
    if config.max_queued == 0 {
        return Err(NetError::Config("max_queued is 0".into()));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NetError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| NetError::Bind {
        addr: config.listen,
        source,
    })?;
    let advertise = config.advertise.unwrap_or(local_addr);
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        return Err(NetError::Config(format!(
            "peers cannot dial {advertise}: set `advertise`"
        )));
    }
    let inc = config.incarnation.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64)
    });
    let pid = Pid::new(config.node, inc);
    let recorder = match &config.history {
        Some(path) => Some(
            Recorder::open(path, pid).map_err(|source| NetError::History {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    // Context spans are at error level so that they are enabled whenever
    // any event is (a warning under a `warn` filter still names its node).
    let span = tracing::error_span!("vsync", node = config.node, inc);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    match &config.security {
        Security::Unset => tracing::warn!(
            parent: &span,
            "no cluster key configured (Config::security unset): links between members are NOT authenticated or encrypted, and anyone who can reach {local_addr} can join the group; set Config::security to Security::Key (see vsync_net::keygen), or to Security::Insecure to choose this explicitly"
        ),
        Security::Insecure => tracing::warn!(
            parent: &span,
            "running insecure: links between members are not authenticated or encrypted; anyone who can reach {local_addr} can join the group"
        ),
        Security::Key(_) => {
            tracing::info!(parent: &span, "closed group: links are authenticated and encrypted with the cluster key")
        }
    }
    let shared = Arc::new(
        Shared::new(
            config.group.clone(),
            config.engine.policy,
            pid,
            advertise,
            Limits {
                max_frame: config.max_frame,
                key: config.security.key().cloned(),
                max_inbound: config.max_inbound,
                max_handshakes: config.max_handshakes,
            },
            config.faults.clone(),
            in_tx,
            span.clone(),
        )
        .map_err(|e| NetError::Config(e.to_string()))?,
    );
    let listener_task =
        tokio::spawn(run_listener(shared.clone(), listener).instrument(span.clone()));
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(None);
    let (book_tx, book_rx) = watch::channel(Vec::new());
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let permits = Arc::new(Semaphore::new(config.max_queued));
    let direct_window = Arc::new(Semaphore::new(config.direct_window.max(1)));
    let state = Arc::new(State::default());
    let backlog = Arc::new(Backlog::new(config.max_pending_events));
    let seeds = config
        .seeds
        .iter()
        .copied()
        .filter(|s| *s != advertise && *s != local_addr)
        .collect();
    let rt = Runtime {
        engine: Engine::new(pid, config.engine.clone()),
        router: Router::new(
            shared.clone(),
            seeds,
            book_tx,
            config.max_peer_queue,
            Duration::from_micros(config.engine.suspect_timeout),
        ),
        shared,
        recorder,
        events: ev_tx,
        cmds: cmd_rx,
        inbound: in_rx,
        permits: permits.clone(),
        direct_window: direct_window.clone(),
        in_engine: 0,
        state: state.clone(),
        backlog: backlog.clone(),
        leave_waiters: Vec::new(),
        view: None,
        view_tx,
        view_span: tracing::Span::none(),
        root_span: span.clone(),
        reported: HashSet::new(),
        listener: listener_task,
        gossip_interval: config.gossip_interval,
        refused: 0,
    };
    tracing::info!(parent: &span, %pid, listen = %local_addr, %advertise, group = %config.group, ?mode, "starting");
    let task = tokio::spawn(rt.run(mode, shutdown_rx).instrument(span));
    Ok(GroupHandle {
        pid,
        local_addr,
        sender: GroupSender {
            cmd: cmd_tx,
            permits,
            state,
            backlog: backlog.clone(),
            leave_timeout: config.leave_timeout,
            max_payload: config.engine.max_payload,
            direct_window,
            direct_window_size: config.direct_window.max(1),
            max_direct: config
                .max_frame
                .saturating_sub(crate::frame::DIRECT_OVERHEAD),
        },
        backlog,
        events: ev_rx,
        faults: config.faults,
        view: view_rx,
        peers: book_rx,
        shutdown: Some(shutdown_tx),
        task: Some(task),
    })
}

struct Runtime {
    engine: Engine,
    shared: Arc<Shared>,
    router: Router,
    recorder: Option<Recorder>,
    events: mpsc::UnboundedSender<Event>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    inbound: mpsc::Receiver<Inbound>,
    permits: Arc<Semaphore>,
    /// The window of direct messages (closed at the end).
    direct_window: Arc<Semaphore>,
    /// Multicasts handed to the engine whose permits are not yet returned.
    in_engine: usize,
    state: Arc<State>,
    backlog: Arc<Backlog>,
    leave_waiters: Vec<oneshot::Sender<Result<(), NetError>>>,
    /// The view installed most recently.
    view: Option<View>,
    view_tx: watch::Sender<Option<View>>,
    /// A span naming the current view, entered while handling inputs.
    view_span: tracing::Span,
    /// Members reported unreachable in the current view (logged once).
    reported: HashSet<Pid>,
    /// The process's span (node and incarnation).
    root_span: tracing::Span,
    listener: JoinHandle<()>,
    gossip_interval: Duration,
    /// Messages refused by [`crate::guard`].
    refused: u64,
}

impl Runtime {
    async fn run(mut self, mode: Mode, mut shutdown: oneshot::Receiver<()>) {
        if let Some(r) = &mut self.recorder {
            r.push(HistEvent::Start);
        }
        match mode {
            Mode::Found => self.engine.found(now_micros()),
            Mode::Join => self.engine.join(now_micros()),
        }
        self.flush();
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut gossip = tokio::time::interval(self.gossip_interval);
        gossip.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut graceful = true;
        // The application dropped its handle after a clean leave: the
        // engine still resends the change that removes this process until
        // the others acknowledge it (bounded); stopping at once would lose
        // it and leave them waiting for a commit that never comes (a
        // 2-member group then blocked for good).
        let mut finishing_leave = false;
        loop {
            let deadline = self
                .engine
                .poll_timeout()
                .map(|t| epoch() + Duration::from_micros(t));
            if let Some(d) = deadline {
                sleep.as_mut().reset(d.into());
            }
            let wake = tokio::select! {
                _ = &mut shutdown, if !finishing_leave => Wake::Stop,
                cmd = self.cmds.recv(), if !finishing_leave => cmd.map_or(Wake::Stop, Wake::Cmd),
                Some(inb) = self.inbound.recv() => Wake::Inbound(inb),
                () = &mut sleep, if deadline.is_some() => Wake::Timer,
                _ = gossip.tick() => Wake::Gossip,
            };
            let span = self.view_span.clone();
            let _entered = span.enter();
            match wake {
                Wake::Stop if self.state.left() && !self.engine.is_finished() => {
                    tracing::debug!("handle dropped after a clean leave: finishing the leave");
                    finishing_leave = true;
                }
                Wake::Stop => {
                    graceful = false;
                    break;
                }
                Wake::Cmd(cmd) => {
                    self.on_cmd(cmd);
                    self.take_ready();
                }
                Wake::Inbound(inb) => {
                    self.on_inbound(inb);
                    self.take_ready();
                }
                Wake::Timer => self.engine.handle_timeout(now_micros()),
                Wake::Gossip => {
                    let members = self.members();
                    self.router.gossip(&members);
                }
            }
            self.flush();
            if self.engine.is_finished() {
                break;
            }
        }
        self.finish(graceful);
    }

    /// Takes the commands and messages already waiting (up to [`BATCH`]
    /// inputs in all, which the backlog bounds count on), so that one
    /// engine step answers all of them: one data message for many
    /// multicasts, one acknowledgement for many messages.
    fn take_ready(&mut self) {
        let mut budget = BATCH - 1;
        while budget > 0 {
            match self.cmds.try_recv() {
                Ok(cmd) => self.on_cmd(cmd),
                Err(_) => break,
            }
            budget -= 1;
        }
        while budget > 0 {
            match self.inbound.try_recv() {
                Ok(inb) => self.on_inbound(inb),
                Err(_) => break,
            }
            budget -= 1;
        }
    }

    fn members(&self) -> Vec<Pid> {
        self.view
            .as_ref()
            .map_or_else(Vec::new, |v| v.members.clone())
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let now = now_micros();
        match cmd {
            Cmd::Multicast(payload, mode) => match self.engine.multicast_with(now, payload, mode) {
                Ok(()) => self.in_engine += 1,
                Err(e) => {
                    self.permits.add_permits(1);
                    tracing::debug!(error = %e, "multicast refused");
                }
            },
            Cmd::Leave(tx) => {
                if self.engine.is_finished() {
                    let _ = tx.send(self.state.check().or_else(|e| match e {
                        NetError::Left => Ok(()),
                        e => Err(e),
                    }));
                    return;
                }
                tracing::info!("leaving");
                self.engine.leave(now);
                self.leave_waiters.push(tx);
                if self.engine.is_finished() {
                    // Left before it was ever admitted: the engine reports
                    // nothing.
                    self.state.set(LEFT);
                }
            }
            Cmd::Suspect(pid) => self.engine.suspect(now, pid),
            Cmd::Direct {
                to,
                payload,
                permit,
            } => self.router.send_direct(to, payload, permit),
        }
    }

    fn on_inbound(&mut self, inb: Inbound) {
        match inb {
            Inbound::Msg { from, msg } => {
                if is_control(&msg) {
                    tracing::debug!(%from, msg = %brief(&msg), "received");
                }
                let members = self.view.as_ref().map_or(1, |v| v.members.len());
                if let Err(e) = crate::guard::check(&msg, members, self.engine.config().window) {
                    self.refused += 1;
                    if self.refused.is_power_of_two() {
                        tracing::warn!(%from, refused = self.refused, "dropped a message before the engine: {e}");
                    }
                    return;
                }
                self.engine.handle_message(now_micros(), from, msg);
            }
            Inbound::Hello { pid, listen } => {
                // A new connection: the peer gets our address book. If the
                // peer is news, the members get it too, so that whoever
                // coordinates can reach it.
                let mut to = vec![pid];
                if self.router.learn(pid, listen) {
                    to.extend(self.members());
                }
                self.router.gossip(&to);
            }
            Inbound::Direct { from, payload } => {
                self.emit(Event::Direct { from, payload });
            }
            Inbound::Book { entries } => {
                for (pid, addr) in entries {
                    self.router.learn(pid, addr);
                }
            }
            Inbound::Unreachable { addr } => {
                let now = now_micros();
                let members = self.members();
                for pid in self.router.pids_at(addr) {
                    if members.contains(&pid) {
                        if self.reported.insert(pid) {
                            tracing::info!(peer = %pid, %addr, "connection refused: suspecting");
                        }
                        self.engine.suspect(now, pid);
                    }
                }
            }
        }
    }

    /// Drains the engine's outputs: records them, then sends them; then
    /// suspects the peers whose send queue stayed full too long (and sends
    /// what that produced).
    fn flush(&mut self) {
        self.flush_once();
        loop {
            let stuck = self.router.take_stuck();
            if stuck.is_empty() {
                return;
            }
            let now = now_micros();
            let members = self.members();
            for addr in stuck {
                for pid in self.router.pids_at(addr) {
                    if members.contains(&pid) {
                        tracing::warn!(peer = %pid, %addr, "the peer does not take what is sent to it (its send queue stayed full): suspecting it");
                        self.engine.suspect(now, pid);
                    }
                }
            }
            self.flush_once();
        }
    }

    fn flush_once(&mut self) {
        let outs = self.engine.drain_outputs();
        if !outs.is_empty() {
            // 1. The history, written before anything of this batch leaves.
            let mut view = self.view.as_ref().map(|v| v.id);
            for o in &outs {
                let Output::Event(ev) = o else { continue };
                let rec = match ev {
                    AppEvent::View { view: v, joined } => {
                        view = Some(v.id);
                        // The engine names a joiner's state donor right after
                        // the install, in the same batch.
                        let donor = outs.iter().find_map(|o| match o {
                            Output::Event(AppEvent::AwaitState { donor, view: w })
                                if *w == v.id =>
                            {
                                Some(*donor)
                            }
                            _ => None,
                        });
                        Some(HistEvent::Install {
                            view: v.clone(),
                            joined: *joined,
                            donor,
                        })
                    }
                    AppEvent::Deliver { msg, pos, mode, .. } => Some(HistEvent::Deliver {
                        msg: *msg,
                        view: view.unwrap_or(msg.view),
                        pos: *pos,
                        mode: *mode,
                    }),
                    AppEvent::Sent { msg, mode } => Some(HistEvent::Send {
                        msg: *msg,
                        mode: *mode,
                    }),
                    AppEvent::Blocked { view } => Some(HistEvent::Blocked { view: *view }),
                    AppEvent::Removed { view } => Some(HistEvent::Removed { view: *view }),
                    AppEvent::Diverged {
                        view,
                        split,
                        winner,
                    } => Some(HistEvent::Diverged {
                        view: *view,
                        split: *split,
                        winner: winner.id,
                    }),
                    AppEvent::Left { view } => Some(HistEvent::Left { view: *view }),
                    AppEvent::Flushing { .. }
                    | AppEvent::SendState { .. }
                    | AppEvent::AwaitState { .. } => None,
                };
                if let (Some(r), Some(e)) = (self.recorder.as_mut(), rec) {
                    r.push(e);
                }
            }
            if let Some(r) = &mut self.recorder {
                r.write();
            }
            // 2. Messages and events, in the engine's order.
            for o in outs {
                match o {
                    Output::Transmit { to, msg } => {
                        if is_control(&msg) {
                            tracing::debug!(?to, msg = %brief(&msg), "sending");
                        }
                        self.router.send(to, &msg);
                    }
                    Output::Event(ev) => self.on_event(ev),
                }
            }
        }
        // 3. Backpressure: return the permits of multicasts that left the
        // engine's queue.
        let queued = self.engine.queued();
        if self.in_engine > queued {
            self.permits.add_permits(self.in_engine - queued);
            self.in_engine = queued;
        }
    }

    fn on_event(&mut self, ev: AppEvent) {
        let event = match ev {
            AppEvent::View { view, joined } => {
                self.view_span =
                    tracing::error_span!(parent: &self.root_span, "view", view = %view.id);
                tracing::info!(%view, joined, "installed view");
                self.view = Some(view.clone());
                self.reported.clear();
                self.view_tx.send_replace(Some(view.clone()));
                Event::View { view, joined }
            }
            AppEvent::Deliver {
                msg,
                pos,
                payload,
                mode,
            } => Event::Deliver {
                msg,
                pos,
                payload,
                mode,
            },
            AppEvent::Sent { .. } => return,
            AppEvent::Flushing { view } => {
                tracing::debug!(%view, "view change started");
                return;
            }
            AppEvent::Blocked { view } => {
                tracing::warn!(%view, "blocked in a minority");
                Event::Blocked { view }
            }
            AppEvent::SendState { joiner, view } => Event::SendState { joiner, view },
            AppEvent::AwaitState { donor, view } => Event::AwaitState { donor, view },
            AppEvent::Diverged {
                view,
                split,
                winner,
            } => {
                let winner_addrs: Vec<std::net::SocketAddr> = winner
                    .members
                    .iter()
                    .filter_map(|p| self.router.addr_of(*p))
                    .collect();
                tracing::warn!(
                    %view,
                    split = %split.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                    %winner,
                    "this side of the partition lost the merge: its history since the split is discarded; rejoining the winner"
                );
                Event::Diverged {
                    view,
                    split,
                    winner,
                    winner_addrs,
                }
            }
            AppEvent::Removed { view } => {
                tracing::warn!(%view, "removed from the group");
                self.state.set(REMOVED);
                self.view_tx.send_replace(None);
                self.resolve_leaves();
                Event::Removed { view }
            }
            AppEvent::Left { view } => {
                tracing::info!(%view, "left the group");
                self.state.set(LEFT);
                self.view_tx.send_replace(None);
                // `leave()` resolves at `finish`, once the others have the
                // change (or the engine gave up resending it).
                Event::Left { view }
            }
        };
        self.emit(event);
    }

    /// Hands an event to the application.
    fn emit(&mut self, event: Event) {
        self.backlog.added();
        if self.events.send(event).is_err() {
            self.backlog.taken();
        }
    }

    fn resolve_leaves(&mut self) {
        for tx in self.leave_waiters.drain(..) {
            let r = match self.state.error() {
                NetError::Left => Ok(()),
                e => Err(e),
            };
            let _ = tx.send(r);
        }
    }

    fn finish(mut self, graceful: bool) {
        self.state.set(CLOSED);
        self.permits.close();
        self.direct_window.close();
        self.backlog.drained.notify_waiters();
        self.resolve_leaves();
        self.listener.abort();
        self.router.shutdown(graceful);
        tracing::info!(
            graceful,
            dropped = self.router.dropped,
            unroutable = self.router.unroutable,
            oversized = self.router.oversized,
            direct_dropped = self.router.direct_dropped,
            turned_away = self.shared.turned_away.load(Ordering::Relaxed),
            refused = self.refused,
            pid = %self.shared.pid,
            "stopped"
        );
    }
}
