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

use crate::fault::Faults;
use crate::frame::{
    Frame, FrameError, encode_frame, put_direct_frame, put_direct_head, put_msg_frame,
    put_msg_head, read_frame,
};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;
use vsync_core::{Message, Pid};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the peer's Hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
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

/// What every transport task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) group: String,
    pub(crate) pid: Pid,
    /// The address peers dial to reach us.
    pub(crate) listen: SocketAddr,
    pub(crate) max_frame: usize,
    pub(crate) faults: Faults,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    /// Our Hello, encoded.
    pub(crate) hello: Bytes,
    /// The process's span (node and incarnation), parent of connection
    /// spans.
    pub(crate) span: tracing::Span,
}

impl Shared {
    pub(crate) fn new(
        group: String,
        pid: Pid,
        listen: SocketAddr,
        max_frame: usize,
        faults: Faults,
        inbound: mpsc::Sender<Inbound>,
        span: tracing::Span,
    ) -> Result<Self, FrameError> {
        let hello = encode_frame(
            &Frame::Hello {
                group: group.clone(),
                pid,
                listen,
            },
            max_frame,
        )?;
        Ok(Shared {
            group,
            pid,
            listen,
            max_frame,
            faults,
            inbound,
            hello,
            span,
        })
    }

    fn mismatch(&self, pid: Pid, addr: SocketAddr, group: &str) -> String {
        format!(
            "peer {pid} at {addr} is in group '{group}', we are '{}'",
            self.group
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
    async fn read_loop(&self, from: Pid, rd: &mut OwnedReadHalf, buf: &mut BytesMut) {
        loop {
            match read_frame(rd, buf, self.max_frame).await {
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
}

fn log_frame_error(peer: Pid, e: &FrameError) {
    match e {
        FrameError::Io(_) | FrameError::Truncated => {
            tracing::debug!(%peer, error = %e, "connection lost");
        }
        _ => tracing::warn!(%peer, error = %e, "bad frame: closing the connection"),
    }
}

/// Accepts connections until aborted; aborting it closes every accepted
/// connection.
pub(crate) async fn run_listener(shared: Arc<Shared>, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let span = tracing::error_span!("inbound", from = %addr);
                    conns.spawn(serve_inbound(shared.clone(), stream, addr).instrument(span));
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

async fn serve_inbound(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (group, pid, listen) = match timeout(
        HANDSHAKE_TIMEOUT,
        read_frame(&mut rd, &mut buf, shared.max_frame),
    )
    .await
    {
        Ok(Ok(Some(Frame::Hello { group, pid, listen }))) => (group, pid, listen),
        Ok(Ok(Some(other))) => {
            tracing::warn!(%addr, frame = ?std::mem::discriminant(&other), "expected a Hello: closing the connection");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(%addr, error = %e, "bad first frame: closing the connection");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "no Hello in time: closing the connection");
            return;
        }
    };
    if wr.write_all(&shared.hello).await.is_err() {
        return;
    }
    if group != shared.group {
        let reason = shared.mismatch(pid, listen, &group);
        tracing::warn!("{reason}: refusing the connection");
        let err = Frame::Error {
            reason: format!("we are in group '{}', you are in '{group}'", shared.group),
        };
        if let Ok(b) = encode_frame(&err, shared.max_frame) {
            let _ = wr.write_all(&b).await;
        }
        let _ = wr.shutdown().await;
        return;
    }
    if pid == shared.pid {
        return;
    }
    if shared
        .inbound
        .send(Inbound::Hello { pid, listen })
        .await
        .is_err()
    {
        return;
    }
    shared.read_loop(pid, &mut rd, &mut buf).await;
    drop(wr);
}

/// A writer task and its queue.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) tx: mpsc::Sender<Out>,
    pub(crate) task: JoinHandle<()>,
}

/// Starts the writer for `addr`.
pub(crate) fn spawn_writer(shared: Arc<Shared>, addr: SocketAddr) -> Writer {
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let span = tracing::error_span!(parent: &shared.span, "outbound", to = %addr);
    let task = tokio::spawn(run_writer(shared, addr, rx).instrument(span));
    Writer { tx, task }
}

/// An established outgoing connection.
struct Conn {
    wr: OwnedWriteHalf,
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
    wr.write_all(&shared.hello).await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let first = timeout(
        HANDSHAKE_TIMEOUT,
        read_frame(&mut rd, &mut buf, shared.max_frame),
    )
    .await
    .map_err(|_| ConnectError::Timeout)??;
    let (group, pid, listen) = match first {
        Some(Frame::Hello { group, pid, listen }) => (group, pid, listen),
        Some(Frame::Error { reason }) => return Err(ConnectError::PeerError(reason)),
        Some(_) => return Err(ConnectError::Protocol),
        None => return Err(ConnectError::Io(io::ErrorKind::UnexpectedEof.into())),
    };
    if group != shared.group {
        tracing::warn!("{}: not connecting", shared.mismatch(pid, addr, &group));
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
            sh.read_loop(pid, &mut rd, &mut buf).await;
            let _ = closed_tx.send(());
        }
        .in_current_span(),
    );
    Ok(Conn {
        wr,
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

async fn run_writer(shared: Arc<Shared>, addr: SocketAddr, mut rx: mpsc::Receiver<Out>) {
    let mut backoff = MIN_BACKOFF;
    let mut last_item = Instant::now();
    // The connection was just lost: a failed reconnect is retried at once.
    let mut lost = false;
    loop {
        match connect(&shared, addr).await {
            Ok(conn) => {
                tracing::debug!(peer = %conn.remote, "connected");
                backoff = MIN_BACKOFF;
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
            Err(ConnectError::GroupMismatch) | Err(ConnectError::PeerError(_)) => {
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

async fn session(shared: &Shared, mut conn: Conn, rx: &mut mpsc::Receiver<Out>) -> SessionEnd {
    let mut buf = Parts::default();
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
        while buf.len() < MAX_COALESCE {
            match rx.try_recv() {
                Ok(item) => append(shared, &mut buf, conn.remote, item, cut),
                Err(_) => break,
            }
        }
        buf.seal();
        if buf.remaining() == 0 {
            continue;
        }
        match timeout(WRITE_TIMEOUT, conn.wr.write_all_buf(&mut buf)).await {
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
