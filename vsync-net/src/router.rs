//! The address book and routing of the engine's transmits to writer tasks.
//!
//! The engine names peers by pid only. The router maps each node to the
//! newest incarnation it heard of and that incarnation's listen address,
//! learned from Hellos and from peers' address books, and gossips the book
//! to the current view's members (when it learns a new entry, and
//! periodically) so that, for example, a coordinator learns the address of a
//! joiner that only a seed saw.

use crate::frame::{Frame, encode_frame, encode_msg_body};
use crate::transport::{Out, Shared, Writer, spawn_writer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::watch;
use tokio::time::Instant;
use vsync_core::{Message, NodeId, Pid, Target};

/// The routing state, owned by the engine task.
#[derive(Debug)]
pub(crate) struct Router {
    shared: Arc<Shared>,
    seeds: Vec<SocketAddr>,
    book: HashMap<NodeId, (Pid, SocketAddr)>,
    writers: HashMap<SocketAddr, Writer>,
    book_tx: watch::Sender<Vec<(Pid, SocketAddr)>>,
    /// Frames dropped because a peer's queue was full.
    pub(crate) dropped: u64,
    /// Messages dropped because the destination's address is unknown.
    pub(crate) unroutable: u64,
    /// Messages dropped because they do not fit in a frame.
    pub(crate) oversized: u64,
    /// Direct messages dropped (destination unknown or its queue full).
    pub(crate) direct_dropped: u64,
    /// Bytes a peer's queue may hold.
    max_queue: usize,
    /// A queue full for this long is reported ([`Router::take_stuck`]).
    stuck_after: Duration,
    /// Addresses whose queue stayed full, not yet taken.
    stuck: Vec<SocketAddr>,
}

impl Router {
    pub(crate) fn new(
        shared: Arc<Shared>,
        seeds: Vec<SocketAddr>,
        book_tx: watch::Sender<Vec<(Pid, SocketAddr)>>,
        max_queue: usize,
        stuck_after: Duration,
    ) -> Self {
        Router {
            shared,
            seeds,
            book: HashMap::new(),
            writers: HashMap::new(),
            book_tx,
            dropped: 0,
            unroutable: 0,
            oversized: 0,
            direct_dropped: 0,
            max_queue,
            stuck_after,
            stuck: Vec::new(),
        }
    }

    /// The addresses whose send queue has stayed full for the suspicion
    /// timeout since the last call (each reported once until its queue
    /// takes a message again).
    pub(crate) fn take_stuck(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.stuck)
    }

    /// Records that `pid` listens at `addr`. True if that is news.
    pub(crate) fn learn(&mut self, pid: Pid, addr: SocketAddr) -> bool {
        if pid.node == self.shared.pid.node {
            return false;
        }
        match self.book.get(&pid.node) {
            Some(&(p, a)) if p.inc > pid.inc || (p == pid && a == addr) => return false,
            _ => {}
        }
        tracing::debug!(%pid, %addr, "learned address");
        self.book.insert(pid.node, (pid, addr));
        let mut entries: Vec<_> = self.book.values().copied().collect();
        entries.sort();
        self.book_tx.send_replace(entries);
        true
    }

    /// Where to reach `pid`: its address, or the address of an older
    /// incarnation of its node (it may have restarted on the same port: the
    /// frame's destination pid makes that safe). None if only a newer
    /// incarnation is known.
    pub(crate) fn addr_of(&self, pid: Pid) -> Option<SocketAddr> {
        match self.book.get(&pid.node) {
            Some(&(p, a)) if p.inc <= pid.inc => Some(a),
            _ => None,
        }
    }

    /// The processes known to listen at `addr`.
    pub(crate) fn pids_at(&self, addr: SocketAddr) -> Vec<Pid> {
        self.book
            .values()
            .filter(|(_, a)| *a == addr)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Sends `msg` to `to`, encoding it once.
    pub(crate) fn send(&mut self, to: Target, msg: &Message) {
        let body = match encode_msg_body(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, kind = msg.kind(), "cannot encode a message");
                return;
            }
        };
        // The frame adds a version byte, a tag and the destination pid.
        if body.len() + 32 > self.shared.max_frame {
            self.oversized += 1;
            tracing::error!(
                kind = msg.kind(),
                bytes = body.len(),
                max_frame = self.shared.max_frame,
                "message larger than the maximum frame: dropped"
            );
            return;
        }
        match to {
            Target::One(p) => self.send_to(p, body, msg),
            Target::Many(ps) => {
                for p in ps {
                    self.send_to(p, body.clone(), msg);
                }
            }
            Target::Seeds => {
                // The configured seeds, and every address known: a process
                // that founded the group has no seeds, and a blocked
                // minority's seeds may be on its own side.
                let mut addrs: BTreeSet<SocketAddr> = self.seeds.iter().copied().collect();
                addrs.extend(self.book.values().map(|(_, a)| *a));
                for a in addrs {
                    self.push(
                        a,
                        Out::Msg {
                            to: None,
                            body: body.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Queues a point-to-point payload for `to` on the link to it (FIFO
    /// with everything else sent there). Dropped, and counted, if `to`'s
    /// address is unknown or its queue is full.
    pub(crate) fn send_direct(
        &mut self,
        to: Pid,
        payload: bytes::Bytes,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        if to == self.shared.pid {
            return;
        }
        let Some(addr) = self.addr_of(to) else {
            self.direct_dropped += 1;
            tracing::debug!(%to, "direct message to an unknown address: dropped");
            return;
        };
        let before = self.dropped;
        self.push(
            addr,
            Out::Direct {
                to,
                payload,
                permit,
            },
        );
        if self.dropped > before {
            self.direct_dropped += 1;
        }
    }

    fn send_to(&mut self, p: Pid, body: bytes::Bytes, msg: &Message) {
        if p == self.shared.pid {
            return;
        }
        match self.addr_of(p) {
            Some(a) => self.push(a, Out::Msg { to: Some(p), body }),
            None => {
                self.unroutable += 1;
                tracing::trace!(to = %p, kind = msg.kind(), "no address yet: dropped");
            }
        }
    }

    fn push(&mut self, addr: SocketAddr, out: Out) {
        if addr == self.shared.listen {
            return;
        }
        let shared = &self.shared;
        let w = self
            .writers
            .entry(addr)
            .or_insert_with(|| spawn_writer(shared.clone(), addr));
        let size = out.size();
        // Bounded in bytes (one item is always let in, whatever its size).
        let before = w.queued.fetch_add(size, Ordering::AcqRel);
        let full = before > 0 && before + size > self.max_queue;
        let r = if full {
            Err(TrySendError::Full(out))
        } else {
            w.tx.try_send(out)
        };
        match r {
            Ok(()) => {
                w.full_since = None;
                w.reported = false;
            }
            Err(TrySendError::Full(_)) => {
                w.queued.fetch_sub(size, Ordering::AcqRel);
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    tracing::debug!(%addr, dropped = self.dropped, "peer queue full: dropping");
                }
                let since = *w.full_since.get_or_insert_with(Instant::now);
                if !w.reported && since.elapsed() >= self.stuck_after {
                    w.reported = true;
                    self.stuck.push(addr);
                }
            }
            Err(TrySendError::Closed(out)) => {
                // The writer exited (idle): start another.
                let w = spawn_writer(self.shared.clone(), addr);
                w.queued.fetch_add(size, Ordering::AcqRel);
                if w.tx.try_send(out).is_err() {
                    w.queued.fetch_sub(size, Ordering::AcqRel);
                }
                self.writers.insert(addr, w);
            }
        }
    }

    /// Sends the address book (with our own entry) to `to`.
    pub(crate) fn gossip(&mut self, to: &[Pid]) {
        let mut entries: Vec<(Pid, SocketAddr)> = self.book.values().copied().collect();
        entries.push((self.shared.pid, self.shared.listen));
        let frame = match encode_frame(&Frame::AddressBook { entries }, self.shared.max_frame) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the address book");
                return;
            }
        };
        let addrs: BTreeSet<SocketAddr> = to
            .iter()
            .filter(|p| **p != self.shared.pid)
            .filter_map(|p| self.addr_of(*p))
            .collect();
        for a in addrs {
            self.push(a, Out::Frame(frame.clone()));
        }
    }

    /// Stops every writer: gracefully (each sends what it has queued, then
    /// closes) or at once.
    pub(crate) fn shutdown(&mut self, graceful: bool) {
        for (_, w) in self.writers.drain() {
            if !graceful {
                w.task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Faults;
    use crate::frame::Frame;
    use crate::transport::{HELLO_MAX, Limits, Reader};
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    /// A peer that completes the Hello exchange and then never reads: its
    /// queue stays full, memory stays bounded by `max_peer_queue`, and the
    /// router reports it once the timeout has passed (not before).
    #[tokio::test]
    async fn a_peer_that_does_not_read_is_reported_after_the_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let peer = Pid::new(2, 1);
        let hello = encode_frame(
            &Frame::Hello {
                group: "g".into(),
                pid: peer,
                listen: addr,
                policy: vsync_core::engine::PartitionPolicy::PrimaryComponent,
            },
            HELLO_MAX,
        )
        .expect("hello");
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let (mut rd, mut wr) = s.into_split();
            let mut r = Reader::new_plain();
            let _ = r.next(&mut rd, HELLO_MAX).await;
            wr.write_all(&hello).await.expect("hello back");
            // Never reads again.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop((rd, wr));
        });
        let (in_tx, _in_rx) = mpsc::channel(1024);
        let shared = Arc::new(
            Shared::new(
                "g".into(),
                vsync_core::engine::PartitionPolicy::PrimaryComponent,
                Pid::new(1, 1),
                "127.0.0.1:1".parse().expect("addr"),
                Limits {
                    max_frame: 16 << 20,
                    key: None,
                    max_inbound: 8,
                    max_handshakes: 8,
                },
                Faults::new(),
                in_tx,
                tracing::Span::none(),
            )
            .expect("shared"),
        );
        let (book_tx, _) = watch::channel(Vec::new());
        let max_queue = 1 << 20;
        let after = Duration::from_millis(300);
        let mut router = Router::new(shared, Vec::new(), book_tx, max_queue, after);
        router.learn(peer, addr);
        let body = bytes::Bytes::from(vec![0u8; 256 << 10]);
        let start = Instant::now();
        let mut first_drop = None;
        loop {
            router.push(addr, Out::Frame(body.clone()));
            if router.dropped > 0 && first_drop.is_none() {
                first_drop = Some(Instant::now());
            }
            let queued = router.writers[&addr].queued.load(Ordering::Acquire);
            assert!(queued <= max_queue, "{queued} bytes queued");
            if !router.take_stuck().is_empty() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never reported");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let full_for = first_drop.expect("dropped").elapsed();
        assert!(full_for >= after, "reported after {full_for:?}");
        // Reported once per episode.
        router.push(addr, Out::Frame(body.clone()));
        assert!(router.take_stuck().is_empty());
        server.abort();
    }
}
