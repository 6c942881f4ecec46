//! TCP transport: the listener, one writer task per peer address, and the
//! readers that feed the engine task.
//!
//! Each process dials every peer it sends to (one outgoing connection per
//! peer, used only for sending) and accepts connections on which it only
//! receives. A connection starts with a [`Frame::Hello`] each way; from the
//! Hello the engine task learns the peer's pid and listen address.
//!
//! A writer task owns one outgoing connection. It drains everything queued
//! for its peer into one vectored write (coalescing): small frames are
//! copied together, while a large message body (encoded once for all peers)
//! is written from where it is, not copied for each peer ([`Parts`]). It
//! reconnects with exponential backoff; while it cannot connect, what is
//! queued for it is dropped (the engine retransmits). When a connection is
//! lost and the immediate reconnect is refused, or any connect is refused,
//! it reports the address unreachable and the engine task suspects the
//! processes there at once, instead of waiting for the heartbeat timeout.
//!
//! In a closed group ([`crate::Security::Key`]) every connection starts with
//! the Noise handshake of [`crate::secure`] and carries its frames sealed;
//! a process that fails it is refused with a warning on both sides before
//! any frame is read. Hostile input is bounded: at most
//! [`crate::Config::max_handshakes`] connections may be in their handshake
//! at once (each for at most [`HANDSHAKE_TIMEOUT`], its first frame at most
//! [`HELLO_MAX`] bytes) and at most [`crate::Config::max_inbound`] accepted
//! connections may be open; further ones are closed at once. A bad,
//! oversized or tampered frame closes its connection only.
//!
//! Each writer's queue is bounded in bytes ([`crate::Config::max_peer_queue`]);
//! when it stays full for the engine's suspicion timeout (the peer does not
//! take what is sent to it), the router reports the peer, and the engine
//! task suspects it, so that a slow member is removed instead of making
//! this process buffer without bound.

use crate::fault::Faults;
use crate::frame::{
    DIRECT_OVERHEAD, Frame, FrameError, decode_frame, encode_frame, put_direct_frame,
    put_direct_head, put_msg_frame, put_msg_head,
};
use crate::key::Key;
use crate::secure::{self, LinkError, Opener, Sealer};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;
use vsync_core::engine::PartitionPolicy;
use vsync_core::{Message, Pid};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new connection may take to complete its handshake (the
/// Noise handshake, if any, and the peer's Hello).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest first frame (the Hello) read from a connection not yet
/// identified: an outsider cannot make this process allocate more.
pub(crate) const HELLO_MAX: usize = 64 * 1024;
/// First reconnect delay; doubles on each failure.
const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The delay before a second reconnect when the one right after a lost
/// connection failed other than by a refusal: a process killed with
/// SIGKILL may still have its listener open for a moment after its
/// connections closed, so that reconnect gets in and is reset; the next one
/// is refused (the peer is reported unreachable within milliseconds, not
/// after [`MIN_BACKOFF`]).
const RETRY_AFTER_LOSS: Duration = Duration::from_millis(2);
/// A writer with nothing to send for this long closes and exits (the
/// engine task starts a new one when it next sends there).
const IDLE: Duration = Duration::from_secs(30);
/// A writer that cannot connect and has been given nothing for this long
/// exits.
const IDLE_FAILING: Duration = Duration::from_secs(5);
/// A write that does not complete within this long (the peer stopped reading,
/// e.g. it is paused) drops the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many bytes are coalesced into one write.
const MAX_COALESCE: usize = 1 << 20;
/// A message body or frame at least this large is written from its own
/// buffer (shared with the other peers' writers) instead of being copied.
const SHARE_MIN: usize = 2048;
/// Frames queued for one peer before further ones are dropped.
pub(crate) const WRITER_QUEUE: usize = 4096;

/// What the transport tells the engine task.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message for this process (its `to` was checked).
    Msg {
        /// The sender (from its connection's Hello).
        from: Pid,
        /// The message.
        msg: Message,
    },
    /// A peer introduced itself.
    Hello {
        /// The peer.
        pid: Pid,
        /// Where it listens.
        listen: SocketAddr,
    },
    /// A peer's address book.
    Book {
        /// Its entries.
        entries: Vec<(Pid, SocketAddr)>,
    },
    /// Connecting to `addr` was refused: nobody listens there now.
    Unreachable {
        /// The address.
        addr: SocketAddr,
    },
    /// A point-to-point payload for this process (its `to` was checked).
    Direct {
        /// The sender.
        from: Pid,
        /// The payload.
        payload: Bytes,
    },
}

/// What the engine task gives a writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// A message, encoded once ([`crate::frame::encode_msg_body`]); `to`
    /// `None` means whoever the connection's Hello named (a seed).
    Msg { to: Option<Pid>, body: Bytes },
    /// A whole frame, already encoded.
    Frame(Bytes),
    /// A point-to-point payload for `to`; `permit` holds its share of the
    /// sender's window until it is in the write buffer.
    Direct {
        to: Pid,
        payload: Bytes,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
}

impl Out {
    /// The bytes it will take on the wire, about: what the writer's queue
    /// bound counts.
    pub(crate) fn size(&self) -> usize {
        match self {
            Out::Msg { body, .. } => body.len() + 32,
            Out::Frame(b) => b.len(),
            Out::Direct { payload, .. } => payload.len() + DIRECT_OVERHEAD,
        }
    }
}

/// The transport's limits and protection (from [`crate::Config`]).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_frame: usize,
    pub(crate) key: Option<Key>,
    pub(crate) max_inbound: usize,
    pub(crate) max_handshakes: usize,
}

/// What every transport task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) group: String,
    /// Our partition policy (peers of another are refused).
    pub(crate) policy: PartitionPolicy,
    pub(crate) pid: Pid,
    /// The address peers dial to reach us.
    pub(crate) listen: SocketAddr,
    pub(crate) max_frame: usize,
    /// The cluster key (a closed group), or none (insecure).
    pub(crate) key: Option<Key>,
    pub(crate) faults: Faults,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    /// Our Hello, encoded.
    pub(crate) hello: Bytes,
    /// The process's span (node and incarnation), parent of connection
    /// spans.
    pub(crate) span: tracing::Span,
    /// Connections in their handshake.
    handshakes: Arc<Semaphore>,
    /// Accepted connections open.
    accepted: Arc<Semaphore>,
    /// Connections closed at once because a limit was reached.
    pub(crate) turned_away: AtomicUsize,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        group: String,
        policy: PartitionPolicy,
        pid: Pid,
        listen: SocketAddr,
        limits: Limits,
        faults: Faults,
        inbound: mpsc::Sender<Inbound>,
        span: tracing::Span,
    ) -> Result<Self, FrameError> {
        let hello = encode_frame(
            &Frame::Hello {
                group: group.clone(),
                pid,
                listen,
                policy,
            },
            limits.max_frame.min(HELLO_MAX),
        )?;
        Ok(Shared {
            group,
            policy,
            pid,
            listen,
            max_frame: limits.max_frame,
            key: limits.key,
            faults,
            inbound,
            hello,
            span,
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
            accepted: Arc::new(Semaphore::new(limits.max_inbound.max(1))),
            turned_away: AtomicUsize::new(0),
        })
    }

    fn mismatch(&self, pid: Pid, addr: SocketAddr, group: &str) -> String {
        format!(
            "peer {pid} at {addr} is in group '{group}', we are '{}'",
            self.group
        )
    }

    /// Why a peer of another partition policy is refused, from our side.
    fn policy_mismatch(&self, pid: Pid, addr: SocketAddr, theirs: PartitionPolicy) -> String {
        format!(
            "peer {pid} at {addr} runs the {} partition policy, this process runs {}: every member of a group must run the same policy (vsync-kv: --partition-policy)",
            policy_name(theirs),
            policy_name(self.policy)
        )
    }

    /// Handles a frame after the handshake. False: close the connection.
    async fn on_frame(&self, from: Pid, frame: Frame) -> bool {
        match frame {
            Frame::Msg { to, msg } => {
                if self.faults.drops_inbound(from.node) {
                    return true;
                }
                if to != self.pid {
                    tracing::trace!(%from, %to, kind = msg.kind(), "dropping a message for another incarnation");
                    return true;
                }
                self.inbound.send(Inbound::Msg { from, msg }).await.is_ok()
            }
            Frame::AddressBook { entries } => {
                if self.faults.drops_inbound(from.node) {
                    return true;
                }
                self.inbound.send(Inbound::Book { entries }).await.is_ok()
            }
            Frame::Direct { to, payload } => {
                if self.faults.drops_inbound(from.node) || to != self.pid {
                    return true;
                }
                self.inbound
                    .send(Inbound::Direct { from, payload })
                    .await
                    .is_ok()
            }
            Frame::Hello { .. } => true,
            Frame::Error { reason } => {
                tracing::warn!(peer = %from, %reason, "peer closed the connection with an error");
                false
            }
        }
    }

    /// Reads frames from `from` until the connection ends.
    async fn read_loop(&self, from: Pid, rd: &mut OwnedReadHalf, reader: &mut Reader) {
        loop {
            match reader.next(rd, self.max_frame).await {
                Ok(Some(frame)) => {
                    if !self.on_frame(from, frame).await {
                        return;
                    }
                }
                Ok(None) => {
                    tracing::debug!(peer = %from, "connection closed");
                    return;
                }
                Err(e) => {
                    log_frame_error(from, &e);
                    return;
                }
            }
        }
    }

    /// Counts a connection closed at once, and says so at most once a
    /// second.
    fn turn_away(&self, addr: SocketAddr, why: &str) {
        static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
        let n = self.turned_away.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(%addr, total = n, "{why}: closing the connection at once");
        }
    }
}

fn log_frame_error(peer: Pid, e: &FrameError) {
    match e {
        FrameError::Io(_) | FrameError::Truncated => {
            tracing::debug!(%peer, error = %e, "connection lost");
        }
        FrameError::Link(_) => {
            tracing::warn!(%peer, error = %e, "tampered data on the link: dropped it and closed the connection")
        }
        _ => tracing::warn!(%peer, error = %e, "bad frame: closing the connection"),
    }
}

/// Logs a refused connection: at most [`REFUSALS_PER_SEC`] lines a second
/// (an outsider's flood must not flood the log); the next line logged says
/// how many were left out.
fn refused(addr: SocketAddr, why: &str) {
    static WINDOW: std::sync::Mutex<(Option<std::time::Instant>, u32, u64)> =
        std::sync::Mutex::new((None, 0, 0));
    let mut w = WINDOW
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (start, lines, suppressed) = &mut *w;
    if start.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *start = Some(std::time::Instant::now());
        *lines = 0;
    }
    if *lines >= REFUSALS_PER_SEC {
        *suppressed += 1;
        return;
    }
    *lines += 1;
    let left_out = std::mem::take(suppressed);
    if left_out > 0 {
        tracing::warn!("refused connection from {addr}: {why} ({left_out} similar lines left out)");
    } else {
        tracing::warn!("refused connection from {addr}: {why}");
    }
}

/// Refusal lines logged per second at most.
const REFUSALS_PER_SEC: u32 = 10;

/// Reads frames from one connection: from the bytes as they come, or from
/// what the sealed chunks open to.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Frame bytes (plaintext).
    plain: BytesMut,
    /// The session's opener and the sealed bytes not yet opened.
    sealed: Option<(Opener, BytesMut)>,
}

impl Reader {
    /// A reader of plaintext frames.
    #[cfg(test)]
    pub(crate) fn new_plain() -> Self {
        Reader::new(None)
    }

    fn new(opener: Option<Opener>) -> Self {
        Reader {
            plain: BytesMut::with_capacity(64 * 1024),
            sealed: opener.map(|o| (o, BytesMut::with_capacity(128 * 1024))),
        }
    }

    /// The next frame (at most `max` bytes); `Ok(None)` at a clean end of
    /// stream between frames.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        max: usize,
    ) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(f) = decode_frame(&mut self.plain, max)? {
                return Ok(Some(f));
            }
            let (n, empty) = match &mut self.sealed {
                None => {
                    if self.plain.capacity() - self.plain.len() < 4096 {
                        self.plain.reserve(64 * 1024);
                    }
                    (rd.read_buf(&mut self.plain).await?, self.plain.is_empty())
                }
                Some((opener, raw)) => {
                    if raw.capacity() - raw.len() < 4096 {
                        raw.reserve(64 * 1024);
                    }
                    let n = rd.read_buf(raw).await?;
                    opener.open(raw, &mut self.plain)?;
                    (n, raw.is_empty() && self.plain.is_empty())
                }
            };
            if n == 0 {
                return if empty {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }
}

/// Writes whole frames on a connection, sealed in a closed group.
async fn write_frame(
    wr: &mut OwnedWriteHalf,
    sealer: Option<&mut Sealer>,
    frame: &[u8],
) -> Result<(), FrameError> {
    match sealer {
        None => wr.write_all(frame).await?,
        Some(s) => {
            let mut out = BytesMut::new();
            s.seal(frame, &mut out)?;
            wr.write_all(&out).await?;
        }
    }
    Ok(())
}

/// Accepts connections until aborted; aborting it closes every accepted
/// connection.
pub(crate) async fn run_listener(shared: Arc<Shared>, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let Ok(open) = shared.accepted.clone().try_acquire_owned() else {
                        shared.turn_away(addr, "too many connections open");
                        continue;
                    };
                    let Ok(hs) = shared.handshakes.clone().try_acquire_owned() else {
                        shared.turn_away(addr, "too many connections in their handshake");
                        continue;
                    };
                    let span = tracing::error_span!("inbound", from = %addr);
                    conns.spawn(serve_inbound(shared.clone(), stream, addr, hs, open).instrument(span));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_inbound(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    handshake: OwnedSemaphorePermit,
    _open: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let accepted = timeout(
        HANDSHAKE_TIMEOUT,
        accept_handshake(&shared, &mut rd, &mut wr, addr),
    )
    .await;
    drop(handshake);
    let (pid, listen, mut reader) = match accepted {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(_) => {
            tracing::info!(%addr, "no handshake within {HANDSHAKE_TIMEOUT:?}: closing the connection");
            return;
        }
    };
    if shared
        .inbound
        .send(Inbound::Hello { pid, listen })
        .await
        .is_err()
    {
        return;
    }
    shared.read_loop(pid, &mut rd, &mut reader).await;
    drop(wr);
}

/// The accepting side's handshake: the Noise handshake in a closed group,
/// then a Hello each way. `None`: refused (and logged) or lost.
async fn accept_handshake(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    addr: SocketAddr,
) -> Option<(Pid, SocketAddr, Reader)> {
    // No buffer is allocated for a connection before its handshake is
    // checked (in a closed group).
    let (mut sealer, mut reader) = match &shared.key {
        None => (None, Reader::new(None)),
        Some(key) => match secure::respond(rd, wr, key).await {
            Ok(link) => (Some(link.sealer), Reader::new(Some(link.opener))),
            Err(LinkError::Io(e)) => {
                tracing::debug!(%addr, error = %e, "connection lost in the handshake");
                return None;
            }
            Err(e) => {
                refused(addr, &e.to_string());
                return None;
            }
        },
    };
    let (group, pid, listen, policy) = match reader.next(rd, HELLO_MAX).await {
        Ok(Some(Frame::Hello {
            group,
            pid,
            listen,
            policy,
        })) => (group, pid, listen, policy),
        Ok(Some(other)) => {
            tracing::warn!(%addr, frame = ?std::mem::discriminant(&other), "expected a Hello: closing the connection");
            return None;
        }
        Ok(None) => return None,
        Err(FrameError::Link(_)) => {
            refused(
                addr,
                "wrong cluster key, a replayed handshake or not a vsync peer",
            );
            return None;
        }
        Err(FrameError::Io(e)) => {
            tracing::debug!(%addr, error = %e, "connection lost before its Hello");
            return None;
        }
        Err(e) => {
            if shared.key.is_none() && reader.plain.starts_with(&secure::PREAMBLE[..4]) {
                refused(
                    addr,
                    "the peer uses a cluster key and this node runs without one (--insecure)",
                );
            } else {
                refused(addr, &format!("not a vsync peer ({e})"));
            }
            return None;
        }
    };
    if write_frame(wr, sealer.as_mut(), &shared.hello)
        .await
        .is_err()
    {
        return None;
    }
    let refusal = if group != shared.group {
        let reason = shared.mismatch(pid, listen, &group);
        tracing::warn!("{reason}: refusing the connection");
        Some(format!(
            "we are in group '{}', you are in '{group}'",
            shared.group
        ))
    } else if policy != shared.policy {
        let reason = shared.policy_mismatch(pid, listen, policy);
        tracing::error!("{reason}: refusing the connection");
        Some(format!(
            "this group runs the {} partition policy and you run {}: every member of a group must run the same policy (vsync-kv: --partition-policy)",
            policy_name(shared.policy),
            policy_name(policy)
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        let err = Frame::Error { reason };
        if let Ok(b) = encode_frame(&err, HELLO_MAX) {
            let _ = write_frame(wr, sealer.as_mut(), &b).await;
        }
        let _ = wr.shutdown().await;
        return None;
    }
    if pid == shared.pid {
        return None;
    }
    Some((pid, listen, reader))
}

/// A policy as operators name it.
fn policy_name(p: PartitionPolicy) -> &'static str {
    match p {
        PartitionPolicy::PrimaryComponent => "primary-component",
        PartitionPolicy::Partitionable => "partitionable",
    }
}

/// A writer task's queue, with the bytes it holds counted (the router
/// bounds them).
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) tx: mpsc::Sender<Out>,
    pub(crate) task: JoinHandle<()>,
    /// Bytes queued (added by the router, taken off by the writer).
    pub(crate) queued: Arc<AtomicUsize>,
    /// Since when pushes have failed because the queue is full.
    pub(crate) full_since: Option<Instant>,
    /// The full queue was reported (once per episode).
    pub(crate) reported: bool,
}

/// The writer's end of its queue.
struct Queue {
    rx: mpsc::Receiver<Out>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn took(&self, item: Option<Out>) -> Option<Out> {
        if let Some(i) = &item {
            self.queued.fetch_sub(i.size(), Ordering::AcqRel);
        }
        item
    }

    async fn recv(&mut self) -> Option<Out> {
        let item = self.rx.recv().await;
        self.took(item)
    }

    fn try_recv(&mut self) -> Option<Out> {
        let item = self.rx.try_recv().ok();
        self.took(item)
    }
}

/// Starts the writer for `addr`.
pub(crate) fn spawn_writer(shared: Arc<Shared>, addr: SocketAddr) -> Writer {
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let span = tracing::error_span!(parent: &shared.span, "outbound", to = %addr);
    let q = Queue {
        rx,
        queued: queued.clone(),
    };
    let task = tokio::spawn(run_writer(shared, addr, q).instrument(span));
    Writer {
        tx,
        task,
        queued,
        full_since: None,
        reported: false,
    }
}

/// An established outgoing connection.
struct Conn {
    wr: OwnedWriteHalf,
    /// Seals what is written, in a closed group.
    sealer: Option<Sealer>,
    remote: Pid,
    closed: oneshot::Receiver<()>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Secure(LinkError),
    #[error(
        "the peer closed the connection before its Hello: it may require a cluster key (this node runs without one)"
    )]
    NoHello,
    #[error("the peer is in another group")]
    GroupMismatch,
    #[error("the peer refused the connection: {0}")]
    PeerError(String),
    #[error("the peer did not start with a Hello")]
    Protocol,
    #[error("connected to ourselves")]
    SelfConnect,
}

async fn connect(shared: &Arc<Shared>, addr: SocketAddr) -> Result<Conn, ConnectError> {
    let stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused);
        }
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let hs = async {
        let (mut sealer, mut reader) = match &shared.key {
            Some(key) => match secure::initiate(&mut rd, &mut wr, key).await {
                Ok(link) => (Some(link.sealer), Reader::new(Some(link.opener))),
                Err(LinkError::Io(e)) => return Err(ConnectError::Io(e)),
                Err(e) => return Err(ConnectError::Secure(e)),
            },
            None => (None, Reader::new(None)),
        };
        write_frame(&mut wr, sealer.as_mut(), &shared.hello).await?;
        let first = match reader.next(&mut rd, HELLO_MAX).await {
            Ok(f) => f,
            Err(FrameError::Link(e)) => return Err(ConnectError::Secure(e)),
            Err(FrameError::Io(e))
                if shared.key.is_none() && e.kind() == io::ErrorKind::ConnectionReset =>
            {
                return Err(ConnectError::NoHello);
            }
            Err(e) => return Err(e.into()),
        };
        Ok((sealer, reader, first))
    };
    let (sealer, mut reader, first) = timeout(HANDSHAKE_TIMEOUT, hs)
        .await
        .map_err(|_| ConnectError::Timeout)??;
    let (group, pid, listen, policy) = match first {
        Some(Frame::Hello {
            group,
            pid,
            listen,
            policy,
        }) => (group, pid, listen, policy),
        Some(Frame::Error { reason }) => return Err(ConnectError::PeerError(reason)),
        Some(_) => return Err(ConnectError::Protocol),
        None if shared.key.is_none() => return Err(ConnectError::NoHello),
        None => return Err(ConnectError::Io(io::ErrorKind::UnexpectedEof.into())),
    };
    if group != shared.group {
        tracing::warn!("{}: not connecting", shared.mismatch(pid, addr, &group));
        return Err(ConnectError::GroupMismatch);
    }
    if policy != shared.policy {
        tracing::error!(
            "{}: not connecting",
            shared.policy_mismatch(pid, addr, policy)
        );
        return Err(ConnectError::GroupMismatch);
    }
    if pid == shared.pid {
        return Err(ConnectError::SelfConnect);
    }
    let _ = shared.inbound.send(Inbound::Hello { pid, listen }).await;
    let (closed_tx, closed) = oneshot::channel();
    let sh = shared.clone();
    let reader = tokio::spawn(
        async move {
            sh.read_loop(pid, &mut rd, &mut reader).await;
            let _ = closed_tx.send(());
        }
        .in_current_span(),
    );
    Ok(Conn {
        wr,
        sealer,
        remote: pid,
        closed,
        reader,
    })
}

enum SessionEnd {
    /// The connection was lost: reconnect.
    Lost,
    /// The queue closed (shutdown) or nothing was sent for a long time.
    Done,
}

async fn run_writer(shared: Arc<Shared>, addr: SocketAddr, mut rx: Queue) {
    let mut backoff = MIN_BACKOFF;
    let mut last_item = Instant::now();
    // The connection was just lost: a failed reconnect is retried at once.
    let mut lost = false;
    // A refusal was logged as a warning (repeats are debug lines until a
    // connection succeeds).
    let mut warned = false;
    loop {
        match connect(&shared, addr).await {
            Ok(conn) => {
                tracing::debug!(peer = %conn.remote, "connected");
                backoff = MIN_BACKOFF;
                warned = false;
                match session(&shared, conn, &mut rx).await {
                    SessionEnd::Done => return,
                    SessionEnd::Lost => {
                        last_item = Instant::now();
                        lost = true;
                        continue;
                    }
                }
            }
            Err(ConnectError::Refused) => {
                tracing::debug!("connection refused");
                lost = false;
                let _ = shared.inbound.send(Inbound::Unreachable { addr }).await;
            }
            Err(e @ (ConnectError::Secure(_) | ConnectError::NoHello)) => {
                if std::mem::replace(&mut warned, true) {
                    tracing::debug!("connection to {addr} refused: {e}");
                } else {
                    tracing::warn!("connection to {addr} refused: {e}");
                }
                backoff = MAX_BACKOFF;
            }
            Err(ConnectError::PeerError(reason)) => {
                // The peer refused us and said why (another group, another
                // partition policy): say it here too, once.
                if std::mem::replace(&mut warned, true) {
                    tracing::debug!("connection to {addr} refused by the peer: {reason}");
                } else {
                    tracing::error!("connection to {addr} refused by the peer: {reason}");
                }
                backoff = MAX_BACKOFF;
            }
            Err(ConnectError::GroupMismatch) => {
                backoff = MAX_BACKOFF;
            }
            Err(ConnectError::SelfConnect) => return,
            Err(e) => tracing::debug!(error = %e, "cannot connect"),
        }
        // Wait before trying again, dropping what is queued meanwhile.
        let deadline = if std::mem::take(&mut lost) {
            Instant::now() + RETRY_AFTER_LOSS
        } else {
            let d = Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            d
        };
        loop {
            tokio::select! {
                () = sleep_until(deadline) => break,
                item = rx.recv() => match item {
                    None => return,
                    Some(_) => last_item = Instant::now(),
                },
            }
        }
        if last_item.elapsed() > IDLE_FAILING {
            return;
        }
    }
}

async fn session(shared: &Shared, mut conn: Conn, rx: &mut Queue) -> SessionEnd {
    let mut buf = Parts::default();
    let mut sealed = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut conn.closed => return SessionEnd::Lost,
            item = timeout(IDLE, rx.recv()) => match item {
                Err(_) => {
                    tracing::debug!("idle: closing");
                    return SessionEnd::Done;
                }
                Ok(None) => {
                    let _ = conn.wr.shutdown().await;
                    return SessionEnd::Done;
                }
                Ok(Some(item)) => item,
            },
        };
        let cut = shared.faults.drops_outbound(conn.remote.node);
        append(shared, &mut buf, conn.remote, first, cut);
        let mut yielded = false;
        while buf.len() < MAX_COALESCE {
            match rx.try_recv() {
                Some(item) => append(shared, &mut buf, conn.remote, item, cut),
                // Once, let the tasks that are ready run first (the engine
                // may be about to queue more for this peer): under load
                // one write carries more; idle, nothing else is ready and
                // this costs one poll.
                None if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                None => break,
            }
        }
        buf.seal();
        if buf.remaining() == 0 {
            continue;
        }
        let written = match conn.sealer.as_mut() {
            None => timeout(WRITE_TIMEOUT, conn.wr.write_all_buf(&mut buf)).await,
            Some(s) => {
                if let Err(e) = s.seal_buf(&mut buf, &mut sealed) {
                    tracing::error!(error = %e, "cannot seal: dropping the connection");
                    return SessionEnd::Lost;
                }
                let w = timeout(WRITE_TIMEOUT, conn.wr.write_all_buf(&mut sealed)).await;
                if sealed.capacity() > 4 * MAX_COALESCE {
                    sealed = BytesMut::new();
                }
                w
            }
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                return SessionEnd::Lost;
            }
            Err(_) => {
                tracing::info!("peer stopped reading: dropping the connection");
                return SessionEnd::Lost;
            }
        }
    }
}

fn append(shared: &Shared, buf: &mut Parts, remote: Pid, item: Out, cut: bool) {
    if cut {
        return;
    }
    match item {
        Out::Msg { to, body } => {
            let to = to.unwrap_or(remote);
            let r = if body.len() >= SHARE_MIN {
                put_msg_head(buf, to, body.len(), shared.max_frame).map(|()| buf.push_shared(body))
            } else {
                put_msg_frame(buf, to, &body, shared.max_frame)
            };
            if let Err(e) = r {
                tracing::error!(peer = %remote, error = %e, "cannot send a message");
            }
        }
        Out::Frame(b) if b.len() >= SHARE_MIN => buf.push_shared(b),
        Out::Frame(b) => buf.extend_from_slice(&b),
        Out::Direct {
            to,
            payload,
            permit,
        } => {
            let r = if payload.len() >= SHARE_MIN {
                put_direct_head(buf, to, payload.len(), shared.max_frame)
                    .map(|()| buf.push_shared(payload))
            } else {
                put_direct_frame(buf, to, &payload, shared.max_frame)
            };
            if let Err(e) = r {
                tracing::error!(peer = %remote, error = %e, "cannot send a direct message");
            }
            drop(permit);
        }
    }
}

/// The bytes of one write, in order: runs of small frames copied into one
/// buffer, and large bodies by reference. It is a [`Buf`] whose chunks go
/// to the socket in one vectored write (`write_all_buf`), so a body shared
/// by several peers' writers is never copied in user space.
#[derive(Debug, Default)]
struct Parts {
    /// Sealed parts, not yet written.
    parts: VecDeque<Bytes>,
    /// Bytes in `parts`.
    len: usize,
    /// Small frames being gathered (sealed into `parts` before the write).
    /// Writing into it is writing into the batch, after what is sealed.
    small: BytesMut,
}

impl Parts {
    /// Moves the gathered small frames to the end of the parts.
    fn seal(&mut self) {
        if !self.small.is_empty() {
            let b = self.small.split().freeze();
            self.len += b.len();
            self.parts.push_back(b);
        }
    }

    /// Appends `b` without copying it.
    fn push_shared(&mut self, b: Bytes) {
        self.seal();
        self.len += b.len();
        self.parts.push_back(b);
    }

    /// Bytes gathered, sealed or not.
    fn len(&self) -> usize {
        self.len + self.small.len()
    }
}

impl std::ops::Deref for Parts {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.small
    }
}

impl std::ops::DerefMut for Parts {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.small
    }
}

impl Buf for Parts {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            let n = cnt.min(front.len());
            front.advance(n);
            self.len -= n;
            cnt -= n;
            if front.is_empty() {
                self.parts.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = io::IoSlice::new(b);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small frames and shared bodies come out in the order they were
    /// appended, through partial writes of any size.
    #[test]
    fn parts_keep_order_across_partial_writes() {
        let big = Bytes::from(vec![7u8; SHARE_MIN + 5]);
        let mut p = Parts::default();
        let mut want = Vec::new();
        for i in 0..4u8 {
            p.extend_from_slice(&[i; 3]);
            want.extend_from_slice(&[i; 3]);
            if i % 2 == 1 {
                p.push_shared(big.clone());
                want.extend_from_slice(&big);
            }
        }
        p.extend_from_slice(b"tail");
        want.extend_from_slice(b"tail");
        p.seal();
        assert_eq!(p.remaining(), want.len());
        let mut slices = [io::IoSlice::new(&[]); 16];
        assert_eq!(p.chunks_vectored(&mut slices), 5);
        let mut got = Vec::new();
        let mut step = 1;
        while p.has_remaining() {
            let n = step.min(p.chunk().len());
            got.extend_from_slice(&p.chunk()[..n]);
            p.advance(n);
            step = step * 3 + 1;
        }
        assert_eq!(got, want);
        assert_eq!(p.len(), 0);
    }
}
