//! Closed groups and hostile input, on real `vsync-node` processes over
//! TCP on 127.0.0.1: an outsider without the key (or with another key, or
//! none) is refused with a log line on both sides; tampered and replayed
//! bytes are dropped and logged; a flood of garbage connections does not
//! disturb a 3-member group's deliveries; a peer announcing 1 GiB frames is
//! cut off. The attacker side of each test is this test process, speaking
//! the wire protocol through `vsync_net::secure`.

mod common;

use bytes::BytesMut;
use common::{Cluster, Proc, Spec, serial};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use vsync_core::Pid;
use vsync_net::frame::{DEFAULT_MAX_FRAME, Frame, encode_frame};
use vsync_net::{Key, secure};

const SUSPECT_MS: u64 = 500;
const WAIT: Duration = Duration::from_secs(30);

fn has(prefix: &'static str) -> impl Fn(&[String]) -> bool {
    move |lines| lines.iter().any(|l| l.starts_with(prefix))
}

fn delivered_in(lines: &[String]) -> u64 {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("DELIVERED "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// True once `s` is closed by the other side (EOF or reset) within
/// `timeout`; false if it is still open then.
fn closed_by_peer(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut b = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// An `AsyncWrite` that keeps a copy of everything written through it.
struct Tee<'a> {
    inner: &'a mut tokio::net::tcp::OwnedWriteHalf,
    copy: Vec<u8>,
}

impl AsyncWrite for Tee<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut *this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.copy.extend_from_slice(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// A member's way in: the handshake with `key`, then our Hello (group
/// "test", node 99). Returns the session, the socket, and every byte we
/// wrote.
async fn member_session(
    addr: SocketAddr,
    key: &Key,
) -> (secure::Link, tokio::net::TcpStream, Vec<u8>) {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let mut tee = Tee {
        inner: &mut wr,
        copy: Vec::new(),
    };
    let mut link = secure::initiate(&mut rd, &mut tee, key)
        .await
        .expect("handshake with the right key");
    let hello = encode_frame(
        &Frame::Hello {
            group: "test".into(),
            pid: Pid::new(99, 1),
            // Nobody listens there: the node's dial to it is refused.
            listen: "127.0.0.1:9".parse().expect("addr"),
            policy: vsync_core::engine::PartitionPolicy::PrimaryComponent,
        },
        DEFAULT_MAX_FRAME,
    )
    .expect("hello");
    let mut out = BytesMut::new();
    link.sealer.seal(&hello, &mut out).expect("seal");
    tokio::io::AsyncWriteExt::write_all(&mut tee, &out)
        .await
        .expect("send hello");
    let copy = tee.copy;
    let s = rd.reunite(wr).expect("reunite");
    (link, s, copy)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A process with another cluster key, and one without any, cannot join a
/// closed group: each is refused with a clear line on both sides, and the
/// group's view does not change. With the right key the same process joins.
#[test]
fn outsiders_without_the_key_are_refused_on_both_sides() {
    let _serial = serial();
    let mut c = Cluster::start_secured(2, SUSPECT_MS);
    let view = c.node(1).last_view().expect("view");
    let seed = c.node(1).addr();
    let n1_log_before = c.node(1).log_text().len();

    // Another key.
    let other = c.dir.path().join("other.key");
    vsync_net::keygen(&other).expect("keygen");
    let mut spec = Spec::new(3, SUSPECT_MS);
    spec.seeds = vec![seed];
    spec.key = Some(other);
    c.log("n3 with another key asks to join");
    c.add(&spec);
    let theirs = c.node(3).wait_for_log(
        &[
            &format!("connection to {seed} refused"),
            "wrong cluster key or not a vsync peer",
        ],
        WAIT,
    );
    c.log(&format!("n3 says: {theirs}"));
    let ours = c.node(1).wait_for_log(
        &[
            "refused connection from 127.0.0.1:",
            "wrong cluster key or not a vsync peer",
        ],
        WAIT,
    );
    c.log(&format!("n1 says: {ours}"));

    // No key at all.
    let mut spec = Spec::new(4, SUSPECT_MS);
    spec.seeds = vec![seed];
    c.log("n4 without a key (--insecure) asks to join");
    c.add(&spec);
    c.node(4).wait_for_log(
        &[
            &format!("connection to {seed} refused"),
            "may require a cluster key",
        ],
        WAIT,
    );
    c.node(1).wait_for_log(
        &[
            "refused connection from 127.0.0.1:",
            "running without a cluster key (--insecure)",
        ],
        WAIT,
    );
    std::thread::sleep(Duration::from_millis(3 * SUSPECT_MS));
    assert!(!c.node(3).has_line("VIEW"), "{}", c.dump());
    assert!(!c.node(4).has_line("VIEW"), "{}", c.dump());
    assert_eq!(c.node(1).last_view(), Some(view.clone()));
    assert_eq!(c.node(2).last_view(), Some(view));
    assert!(c.node(1).log_text().len() > n1_log_before);

    // The same binary with the right key gets in.
    c.node_mut(3).exit();
    c.node_mut(4).exit();
    c.procs.retain(|p| p.node < 3);
    c.join(5);
    c.wait_converged(&[1, 2, 5], WAIT);
    c.check();
}

/// A member's session with one altered sealed byte is cut off and logged;
/// the bytes of a whole recorded session replayed on a new connection are
/// refused; the node keeps running and serving its group.
#[test]
fn tampered_and_replayed_bytes_are_dropped_and_logged() {
    let _serial = serial();
    let mut c = Cluster::start_secured(2, SUSPECT_MS);
    let key = Key::load(c.key.as_ref().expect("key")).expect("load key");
    let addr = c.node(1).addr();
    let rt = runtime();
    // A genuine session, then a sealed frame with one bit flipped.
    let recorded = rt.block_on(async {
        let (mut link, s, recorded) = member_session(addr, &key).await;
        let book = encode_frame(&Frame::AddressBook { entries: vec![] }, 1 << 20).expect("book");
        let mut out = BytesMut::new();
        link.sealer.seal(&book, &mut out).expect("seal");
        let at = out.len() / 2;
        out[at] ^= 0x10;
        let mut s = s.into_std().expect("std");
        s.set_nonblocking(false).expect("blocking");
        s.write_all(&out).expect("write");
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(5)),
            "the node kept a connection that sent tampered data"
        );
        recorded
    });
    let line = c
        .node(1)
        .wait_for_log(&["tampered data on the link", "n99.1"], WAIT);
    c.log(&format!("n1 says: {line}"));

    // Replay: the exact bytes of that session, on a new connection.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&recorded).expect("replay");
    assert!(
        closed_by_peer(&mut s, Duration::from_secs(5)),
        "the node kept a replayed session"
    );
    let line = c
        .node(1)
        .wait_for_log(&["refused connection from", "replayed handshake"], WAIT);
    c.log(&format!("n1 says: {line}"));

    // The group still works.
    c.node_mut(1).cmd("send 500");
    c.node_mut(2).cmd("send 500");
    for n in [1, 2] {
        c.node(n)
            .wait_for("all deliveries", WAIT, |l| delivered_in(l) >= 1000);
    }
    let h = c.check();
    assert_eq!(h.len(), 2, "no member was replaced");
}

/// While 3 members multicast, connections pour in from outsiders: random
/// bytes, a fake preamble with garbage, half-open connections that send
/// nothing. Every delivery arrives, the view never changes, and the
/// outsiders are refused.
#[test]
fn garbage_flood_does_not_disturb_a_three_member_group() {
    let _serial = serial();
    let mut c = Cluster::start_secured(3, SUSPECT_MS);
    let view = c.node(1).last_view().expect("view");
    let addrs: Vec<SocketAddr> = (1..=3).map(|n| c.node(n).addr()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flooders = Vec::new();
    for t in 0..4u64 {
        let (stop, opened, addrs) = (stop.clone(), opened.clone(), addrs.clone());
        flooders.push(std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut idle = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(40);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let addr = addrs[(next() % 3) as usize];
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                else {
                    continue;
                };
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut junk = vec![0u8; (next() % 3000) as usize];
                junk.iter_mut().for_each(|b| *b = next() as u8);
                match next() % 4 {
                    0 => {
                        let _ = s.write_all(&junk);
                    }
                    1 => {
                        let _ = s.write_all(&secure::PREAMBLE);
                        let _ = s.write_all(&junk);
                    }
                    2 => {
                        // 1 GiB length prefixes.
                        let _ = s.write_all(&[0x40, 0, 0, 0, 1, 2, 3]);
                    }
                    _ => {
                        // Half-open: holds a handshake slot until the
                        // node's timeout.
                        idle.push(s);
                        if idle.len() > 100 {
                            idle.remove(0);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Rounds of multicasts while the flood goes on (a few seconds, so
    // that half-open connections time out and are replaced meanwhile).
    for round in 1..=5u64 {
        c.log(&format!(
            "flood running; round {round}: every member multicasts 2000"
        ));
        for n in 1..=3 {
            c.node_mut(n).cmd("send 2000");
        }
        for n in 1..=3 {
            c.node(n).wait_for("the round's deliveries", WAIT, |l| {
                delivered_in(l) >= 6000 * round
            });
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    let n_open = opened.load(std::sync::atomic::Ordering::Relaxed);
    c.log(&format!("flood stopped after {n_open} connections"));
    assert!(n_open > 100, "the flood did not run ({n_open} connections)");
    let turned_away = (1..=3)
        .filter(|n| c.node(*n).log_text().contains("too many connections"))
        .count();
    c.log(&format!("{turned_away} members hit their handshake limit"));
    for n in 1..=3 {
        assert_eq!(
            c.node(n).last_view(),
            Some(view.clone()),
            "n{n}'s view changed under the flood\n{}",
            c.dump()
        );
        assert!(
            c.node(n).log_text().contains("refused connection from"),
            "n{n} logged no refusal\n{}",
            c.dump()
        );
    }
    let h = c.check();
    assert_eq!(h.len(), 3, "no member was replaced");
}

/// A 1 GiB length prefix is cut off: from an outsider (insecure node, where
/// it arrives in the clear) and from a member holding the key (secured
/// node, inside a sealed chunk). The node stays up and keeps its group.
#[test]
fn a_peer_sending_1_gib_length_prefixes_is_cut_off() {
    let _serial = serial();
    // Insecure node: an outsider's first frame.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = Spec::new(1, SUSPECT_MS);
    spec.found = true;
    let plain = Proc::spawn(dir.path(), &spec);
    plain.wait_for("VIEW", WAIT, has("VIEW"));
    for _ in 0..3 {
        let mut s = TcpStream::connect(plain.addr()).expect("connect");
        s.write_all(&[0x40, 0, 0, 0, 1, 0, 0, 0]).expect("write");
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(3)),
            "a 1 GiB prefix was not cut off"
        );
    }
    plain.wait_for_log(&["refused connection from", "1073741824 bytes"], WAIT);
    drop(plain);

    // Secured group: a member's frame after the handshake and Hello.
    let mut c = Cluster::start_secured(2, SUSPECT_MS);
    let key = Key::load(c.key.as_ref().expect("key")).expect("load key");
    let addr = c.node(1).addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut link, s, _) = member_session(addr, &key).await;
        let mut out = BytesMut::new();
        link.sealer
            .seal(&[0x40, 0, 0, 0, 1, 0, 0, 0], &mut out)
            .expect("seal");
        let mut s = s.into_std().expect("std");
        s.set_nonblocking(false).expect("blocking");
        s.write_all(&out).expect("write");
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(5)),
            "a member's 1 GiB prefix was not cut off"
        );
    });
    c.node(1).wait_for_log(
        &["bad frame: closing the connection", "1073741824 bytes"],
        WAIT,
    );
    c.node_mut(2).cmd("send 200");
    c.node(1)
        .wait_for("deliveries", WAIT, |l| delivered_in(l) >= 200);
    let h = c.check();
    assert_eq!(h.len(), 2);
}

/// A TCP proxy that forwards what its clients send at `rate` bytes a
/// second (and the replies at full speed): a member behind it does not
/// take what is sent to it, while its own traffic flows freely.
struct Throttle {
    addr: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Throttle {
    fn start(rate: usize) -> Throttle {
        use std::sync::atomic::Ordering::Relaxed;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let target = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, st) = (target.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut pipes = Vec::new();
            while !st.load(Relaxed) {
                match l.accept() {
                    Ok((client, _)) => {
                        let (t, st) = (t.clone(), st.clone());
                        pipes.push(std::thread::spawn(move || pipe(client, &t, &st, rate)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for p in pipes {
                let _ = p.join();
            }
        });
        Throttle {
            addr,
            target,
            stop,
            accept: Some(accept),
        }
    }

    fn set_target(&self, a: SocketAddr) {
        *self.target.lock().expect("lock") = Some(a);
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// Copies `from` to `to`, at most `per_tick` bytes every 100 ms (or at
/// full speed: `usize::MAX`), until either side closes or `stop`.
fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    per_tick: usize,
    stop: &std::sync::atomic::AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; per_tick.min(64 * 1024)];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if per_tick != usize::MAX {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn pipe(
    client: TcpStream,
    target: &std::sync::Mutex<Option<SocketAddr>>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    rate: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let to = loop {
        if let Some(a) = *target.lock().expect("lock") {
            break a;
        }
        if Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(to) else {
        return;
    };
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let st = stop.clone();
    let down = std::thread::spawn(move || copy(s2, c2, usize::MAX, &st));
    copy(client, server, (rate / 10).max(1), stop);
    let _ = down.join();
}

/// A member whose inbound traffic crawls (64 KB/s through a proxy) while
/// its own traffic flows freely is removed, and the group goes on at full
/// speed without it: it cannot hold the group to its pace, nor make the
/// others buffer for it without bound (their send queues to it are 64 KiB
/// here). Which detector removes it first (the engine's, from the lag of
/// its acknowledgements, or the send queue that stays full; the latter is
/// tested alone in the router's unit tests) is logged.
#[test]
fn a_member_that_does_not_keep_up_is_removed() {
    let _serial = serial();
    let throttle = Throttle::start(64 * 1024);
    let mut c = Cluster::empty_secured(SUSPECT_MS);
    let queue = vec!["--max-peer-queue".to_string(), "65536".to_string()];
    let mut s1 = Spec::new(1, SUSPECT_MS);
    s1.found = true;
    s1.key = c.key.clone();
    s1.extra = queue.clone();
    c.add(&s1);
    let seed = c.node(1).addr();
    // n2 itself is patient (it hears the others only through the crawl,
    // and must not suspect them first: this test is about the others).
    let mut s2 = Spec::new(2, 60_000);
    s2.seeds = vec![seed];
    s2.key = c.key.clone();
    s2.extra = vec!["--advertise".into(), throttle.addr.to_string()];
    c.add(&s2);
    throttle.set_target(c.node(2).addr());
    let mut s3 = Spec::new(3, SUSPECT_MS);
    s3.seeds = vec![seed];
    s3.key = c.key.clone();
    s3.extra = queue;
    c.add(&s3);
    c.wait_converged(&[1, 2, 3], WAIT);
    c.log("n2's inbound traffic crawls; n1 and n3 multicast 1 KB messages");
    c.node_mut(1).cmd("send 1000000 1000");
    c.node_mut(3).cmd("send 1000000 1000");
    let removed = c.node(1).try_wait_for(WAIT, |l| {
        l.iter()
            .rev()
            .find_map(|l| common::ViewLine::parse(l))
            .is_some_and(|v| v.nodes() == [1, 3].into_iter().collect())
    });
    assert!(removed, "n2 was not removed\n{}", c.dump());
    let by_queue = (1..=3).any(|n| {
        c.node(n)
            .log_text()
            .contains("does not take what is sent to it")
    });
    c.log(&format!(
        "n2 removed (send queue full reported: {by_queue})"
    ));
    let before = delivered_in(&c.node(1).lines());
    // The others go on (a loaded machine may be slow: the bar is low).
    c.node(1).wait_for("deliveries without n2", 2 * WAIT, |l| {
        delivered_in(l) > before + 2_000
    });
    c.log("removed; the others go on");
    drop(throttle);
}
