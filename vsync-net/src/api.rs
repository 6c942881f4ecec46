//! The public API: [`Config`], [`Group`], [`GroupHandle`], [`GroupSender`],
//! [`Event`] and [`NetError`].

use crate::fault::Faults;
use crate::frame::DEFAULT_MAX_FRAME;
use crate::runtime::{self, Backlog, Cmd, Mode, State};
use crate::secure::Security;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use vsync_core::{Delivery, MsgId, Pid, View, ViewId};

/// How to run one process of a group.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id, unique in the group.
    pub node: u64,
    /// This run's incarnation number. `None`: the wall clock in milliseconds
    /// since the Unix epoch, so that a restarted process gets a higher one
    /// (unless the clock went back). A process that rejoins in the same
    /// millisecond must pass a higher number itself.
    pub incarnation: Option<u64>,
    /// The address to listen on (port 0: the OS picks one; see
    /// [`GroupHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The address peers dial to reach this process. `None`: the bound
    /// address, which must then not be unspecified (`0.0.0.0`).
    pub advertise: Option<SocketAddr>,
    /// Addresses of members to ask for admission (a joiner's way in). A
    /// blocked or joining process also asks every address it has learned.
    pub seeds: Vec<SocketAddr>,
    /// The group's name; connections between different groups are refused.
    pub group: String,
    /// The engine's timeouts and partition policy.
    pub engine: vsync_core::Config,
    /// Where to append the history (JSON lines), if anywhere.
    pub history: Option<PathBuf>,
    /// The largest frame sent or accepted, in bytes.
    pub max_frame: usize,
    /// At most this many multicasts wait in the engine (not yet sent);
    /// [`GroupSender::multicast`] waits while there are more.
    pub max_queued: usize,
    /// [`GroupSender::multicast`] also waits while more than this many
    /// events wait for the application ([`GroupHandle::next_event`]): an
    /// application that falls behind slows its own multicasts instead of
    /// queueing events without bound. `usize::MAX` turns this off.
    pub max_pending_events: usize,
    /// How often the address book is sent to the view's members.
    pub gossip_interval: Duration,
    /// How long [`GroupHandle::leave`] waits for the view change.
    pub leave_timeout: Duration,
    /// The fault-injection switch (shared by clones: pass the same one to a
    /// new incarnation to keep its cuts).
    pub faults: Faults,
    /// Bytes of direct messages ([`GroupSender::send_to`]) that may wait to
    /// be written, over all peers; `send_to` waits while more do. Small
    /// enough that protocol traffic queued behind them (heartbeats) is not
    /// delayed much, large enough to keep a link busy.
    pub direct_window: usize,
    /// How links between members are protected: a cluster key (a closed
    /// group: authenticated, encrypted links; see [`crate::keygen`]), or
    /// explicitly none. Left [`Security::Unset`] (what [`Config::new`]
    /// gives), the process runs insecure and logs a warning saying so at
    /// start.
    pub security: Security,
    /// Bytes that may wait to be written to one peer. Beyond it, what is
    /// sent there is dropped (the engine retransmits); if the queue stays
    /// full for the engine's suspicion timeout
    /// ([`vsync_core::Config::suspect_timeout`]), the peer is suspected, so
    /// that a member that does not keep up is removed rather than
    /// buffered for without bound.
    pub max_peer_queue: usize,
    /// At most this many accepted connections may be open at once; further
    /// ones are closed at once (a member holds one to each other member).
    pub max_inbound: usize,
    /// At most this many accepted connections may be in their handshake
    /// (not yet identified, each for at most 2 s); further ones are closed
    /// at once, so that a flood of connections from outsiders costs little.
    pub max_handshakes: usize,
}

impl Config {
    /// A configuration with default settings: default engine timeouts, no
    /// seeds, no history, 16 MiB frames, 64 MiB send queue per peer, 1024
    /// accepted connections, 64 handshakes at once, and
    /// [`Security::Unset`] (insecure, with a warning: set
    /// [`Config::security`]).
    pub fn new(node: u64, listen: SocketAddr, group: impl Into<String>) -> Self {
        Config {
            node,
            incarnation: None,
            listen,
            advertise: None,
            seeds: Vec::new(),
            group: group.into(),
            engine: vsync_core::Config::default(),
            history: None,
            max_frame: DEFAULT_MAX_FRAME,
            max_queued: 4096,
            max_pending_events: 16 * 1024,
            gossip_interval: Duration::from_secs(1),
            leave_timeout: Duration::from_secs(10),
            faults: Faults::new(),
            direct_window: 8 << 20,
            security: Security::Unset,
            max_peer_queue: 64 << 20,
            max_inbound: 1024,
            max_handshakes: 64,
        }
    }
}

/// What the application is told.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new view was installed; the deliveries that follow belong to it.
    View {
        /// The view.
        view: View,
        /// True for this process's first view.
        joined: bool,
    },
    /// A multicast, delivered as its mode says (safe: in the view's total
    /// order once every member holds it; see [`Delivery`]).
    Deliver {
        /// Its identity.
        msg: MsgId,
        /// Its position in the view's total order, from 1; 0 for FIFO and
        /// causal messages.
        pos: u64,
        /// The payload.
        payload: Bytes,
        /// How it was sent.
        mode: Delivery,
    },
    /// This process is in a minority of `view` and delivers nothing until it
    /// is back in the primary component (it is then removed and must rejoin).
    Blocked {
        /// The view it is blocked in.
        view: ViewId,
    },
    /// This process is the state donor for `joiner` in `view`.
    SendState {
        /// Who gets the state.
        joiner: Pid,
        /// The view that admits it.
        view: ViewId,
    },
    /// This process must receive the state from `donor` before applying the
    /// deliveries of `view`.
    AwaitState {
        /// Who sends it.
        donor: Pid,
        /// The view that admitted this process.
        view: ViewId,
    },
    /// Partitionable policy: this process's side of a partition lost the
    /// merge after the heal. Its history since `split` is discarded;
    /// [`Event::Removed`] follows, and the process should rejoin as a new
    /// incarnation through `winner_addrs` (added to its seeds) and take the
    /// winner's state by transfer. Look at the application state now if it
    /// must report or keep what is lost.
    Diverged {
        /// The losing side's view (this process's last view).
        view: ViewId,
        /// The last view this process's history shares with the winner's
        /// (where the histories part), if both still remember one.
        split: Option<ViewId>,
        /// The winning side's view.
        winner: View,
        /// The listen addresses of the winner's members that this process
        /// knows.
        winner_addrs: Vec<SocketAddr>,
    },
    /// This process was removed after `view`. The stream ends after it; run
    /// a new [`Group`] (a new incarnation) to rejoin.
    Removed {
        /// Its last view.
        view: ViewId,
    },
    /// This process left cleanly after `view`. The stream ends after it.
    Left {
        /// Its last view.
        view: ViewId,
    },
    /// A point-to-point payload sent to this process with
    /// [`GroupSender::send_to`]. Outside the view's order: it comes in FIFO
    /// order with the other direct messages from the same sender incarnation
    /// for as long as the connection lasts, but may be lost when the
    /// connection breaks (the application detects gaps itself).
    Direct {
        /// The sender.
        from: Pid,
        /// The payload.
        payload: Bytes,
    },
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The history file could not be opened.
    #[error("cannot open history file {path}: {source}")]
    History {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// This process was removed from the group.
    #[error("this process was removed from the group; rejoin as a new incarnation")]
    Removed,
    /// This process left the group.
    #[error("this process has left the group")]
    Left,
    /// The runtime stopped (shut down, or the handle was dropped).
    #[error("the group runtime has stopped")]
    Closed,
    /// The payload is larger than the engine's `max_payload`
    /// ([`vsync_core::Config::max_payload`], in [`Config::engine`]).
    #[error("payload of {len} bytes is larger than the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A clean leave did not complete in time.
    #[error("leaving did not complete within {0:?}")]
    LeaveTimeout(Duration),
}

/// Starts a process of a group.
#[derive(Debug)]
pub struct Group;

impl Group {
    /// Founds a new group with this process as its only member. Returns once
    /// the listener is bound; the first view arrives as an [`Event::View`].
    pub async fn found(config: Config) -> Result<GroupHandle, NetError> {
        runtime::start(config, Mode::Found).await
    }

    /// Joins an existing group through `config.seeds`. Returns once the
    /// listener is bound; admission arrives as an [`Event::View`] with
    /// `joined` set (the engine keeps asking until some view admits it).
    pub async fn join(config: Config) -> Result<GroupHandle, NetError> {
        runtime::start(config, Mode::Join).await
    }
}

/// Sends to a group; cheap to clone, for use from other tasks.
#[derive(Clone, Debug)]
pub struct GroupSender {
    pub(crate) cmd: mpsc::UnboundedSender<Cmd>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) state: Arc<State>,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) leave_timeout: Duration,
    pub(crate) max_payload: usize,
    pub(crate) direct_window: Arc<Semaphore>,
    pub(crate) direct_window_size: usize,
    pub(crate) max_direct: usize,
}

impl GroupSender {
    /// Multicasts `payload` to the group (in the current view, or the next
    /// one if a view change is under way). Waits while
    /// [`Config::max_queued`] multicasts are waiting in the engine, or
    /// [`Config::max_pending_events`] events wait for the application
    /// (backpressure). Fails once this process is removed, has left, or the
    /// runtime stopped.
    ///
    /// Do not await it in the task that reads the events: it may wait for
    /// that task to take them (use [`GroupHandle::multicast`] there).
    ///
    /// `Ok` means the runtime took the payload: like a write to a socket, a
    /// multicast not yet sent when the process is removed is dropped.
    pub async fn multicast(&self, payload: Bytes) -> Result<(), NetError> {
        self.multicast_with(payload, Delivery::Safe).await
    }

    /// Like [`GroupSender::multicast`] (which sends [`Delivery::Safe`]),
    /// with the delivery mode chosen: FIFO and causal messages are
    /// delivered one hop after they are sent, total ones once ordered, safe
    /// ones once every member holds them (see [`Delivery`]).
    pub async fn multicast_with(&self, payload: Bytes, mode: Delivery) -> Result<(), NetError> {
        self.state.check()?;
        self.backlog.wait(&self.state).await;
        self.enqueue(payload, mode).await
    }

    /// Multicasts without waiting for the application's backlog.
    async fn enqueue(&self, payload: Bytes, mode: Delivery) -> Result<(), NetError> {
        self.state.check()?;
        if payload.len() > self.max_payload {
            return Err(NetError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        match self.permits.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(self.state.error()),
        }
        self.cmd
            .send(Cmd::Multicast(payload, mode))
            .map_err(|_| self.state.error())
    }

    /// Leaves the group cleanly: resolves once the view change that removes
    /// this process is done ([`Event::Left`]) and the other members have
    /// acknowledged it (so that the process may exit at once), or fails
    /// after [`Config::leave_timeout`]. A handle dropped after
    /// [`Event::Left`] lets the runtime finish that acknowledgement first.
    pub async fn leave(&self) -> Result<(), NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Leave(tx))
            .map_err(|_| self.state.error())?;
        match tokio::time::timeout(self.leave_timeout, rx).await {
            Err(_) => Err(NetError::LeaveTimeout(self.leave_timeout)),
            Ok(Err(_)) => Err(self.state.error()),
            Ok(Ok(r)) => r,
        }
    }

    /// Sends `payload` to process `to` alone, outside the view's order
    /// (arrives as [`Event::Direct`]). FIFO per sender and receiver on the
    /// same TCP link as the protocol's own traffic; waits while
    /// [`Config::direct_window`] bytes of direct messages wait to be written
    /// (backpressure). Fails if the payload does not fit in a frame
    /// ([`GroupSender::max_direct`]) or the process stopped.
    ///
    /// `Ok` means the runtime took the payload. It is lost if `to`'s address
    /// is unknown, its send queue is full or the connection breaks: number
    /// the messages and detect gaps. Large transfers do not hold up the
    /// engine: each payload costs the engine task one queue push.
    pub async fn send_to(&self, to: Pid, payload: Bytes) -> Result<(), NetError> {
        self.state.check()?;
        if payload.len() > self.max_direct {
            return Err(NetError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_direct,
            });
        }
        let n = payload.len().clamp(1, self.direct_window_size) as u32;
        let permit = self
            .direct_window
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| self.state.error())?;
        self.cmd
            .send(Cmd::Direct {
                to,
                payload,
                permit: Some(permit),
            })
            .map_err(|_| self.state.error())
    }

    /// The largest payload [`GroupSender::send_to`] takes: the frame limit
    /// ([`Config::max_frame`]) less the frame's own header.
    pub fn max_direct(&self) -> usize {
        self.max_direct
    }

    /// Tells the engine that `pid` is unreachable (it is suspected at once).
    pub fn suspect(&self, pid: Pid) -> Result<(), NetError> {
        self.cmd
            .send(Cmd::Suspect(pid))
            .map_err(|_| self.state.error())
    }
}

/// A running process of a group. Dropping it stops the process at once
/// (without leaving: the others see it crash); see [`GroupHandle::leave`].
#[derive(Debug)]
pub struct GroupHandle {
    pub(crate) pid: Pid,
    pub(crate) local_addr: SocketAddr,
    pub(crate) sender: GroupSender,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) faults: Faults,
    pub(crate) view: watch::Receiver<Option<View>>,
    pub(crate) peers: watch::Receiver<Vec<(Pid, SocketAddr)>>,
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<()>>,
}

impl GroupHandle {
    /// This process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A sender for other tasks.
    pub fn sender(&self) -> GroupSender {
        self.sender.clone()
    }

    /// Like [`GroupSender::multicast`], but without waiting for the
    /// events to be taken (this handle is what takes them): only for the
    /// engine's queue ([`Config::max_queued`]).
    pub async fn multicast(&self, payload: Bytes) -> Result<(), NetError> {
        self.sender.enqueue(payload, Delivery::Safe).await
    }

    /// [`GroupHandle::multicast`] with the delivery mode chosen (see
    /// [`GroupSender::multicast_with`]).
    pub async fn multicast_with(&self, payload: Bytes, mode: Delivery) -> Result<(), NetError> {
        self.sender.enqueue(payload, mode).await
    }

    /// See [`GroupSender::leave`].
    pub async fn leave(&self) -> Result<(), NetError> {
        self.sender.leave().await
    }

    /// The next event; `None` once the process has left, was removed, or
    /// the runtime stopped, and every event before that was taken.
    ///
    /// Keep reading events: while more than [`Config::max_pending_events`]
    /// wait, [`GroupSender::multicast`] waits too.
    pub async fn next_event(&mut self) -> Option<Event> {
        let ev = self.events.recv().await;
        if ev.is_some() {
            self.backlog.taken();
        }
        ev
    }

    /// Events waiting to be taken with [`GroupHandle::next_event`]: how far
    /// the application is behind.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The fault-injection switch of this process.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The current view, if this process is a member.
    pub fn view(&self) -> Option<View> {
        self.view.borrow().clone()
    }

    /// The processes this one knows the address of (the newest incarnation
    /// of each node). Still readable after the runtime stopped, e.g. to
    /// pick seeds for a new incarnation.
    pub fn known_peers(&self) -> Vec<(Pid, SocketAddr)> {
        self.peers.borrow().clone()
    }

    /// Stops the process at once (no leave) and waits for its tasks.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}
