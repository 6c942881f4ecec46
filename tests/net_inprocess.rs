//! vsync-net through the `vsync` facade, several group members in one
//! process (one tokio runtime): total order, clean leave, history files the
//! checker reads, refusal of another group, bad frames, backpressure.

use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use vsync::core::checker::{CheckOptions, check_all};
use vsync::core::history::read_jsonl;
use vsync::core::{MsgId, Pid, View};
use vsync::net::frame::{DEFAULT_MAX_FRAME, Frame, decode_frame, encode_frame};
use vsync::net::{Config, Event, Group, GroupHandle, NetError};

const WAIT: Duration = Duration::from_secs(20);

fn config(node: u64, group: &str, seeds: &[SocketAddr], suspect_us: u64) -> Config {
    let mut c = Config::new(node, "127.0.0.1:0".parse().unwrap(), group);
    c.incarnation = Some(1);
    c.seeds = seeds.to_vec();
    c.engine = vsync::core::Config::with_suspect_timeout(suspect_us);
    c
}

/// Waits for a view with `n` members, collecting deliveries meanwhile.
async fn view_of(h: &mut GroupHandle, n: usize, got: &mut Vec<(MsgId, Bytes)>) -> View {
    timeout(WAIT, async {
        loop {
            match h.next_event().await {
                Some(Event::View { view, .. }) if view.members.len() == n => return view,
                Some(Event::Deliver { msg, payload, .. }) => got.push((msg, payload)),
                Some(_) => {}
                None => panic!("{}: event stream ended", h.pid()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{}: no view of {n} members", h.pid()))
}

async fn deliveries(h: &mut GroupHandle, n: usize, got: &mut Vec<(MsgId, Bytes)>) {
    timeout(WAIT, async {
        while got.len() < n {
            match h.next_event().await {
                Some(Event::Deliver { msg, payload, .. }) => got.push((msg, payload)),
                Some(_) => {}
                None => panic!("{}: event stream ended", h.pid()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{}: only {} of {n} deliveries", h.pid(), got.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_agree_on_one_order_and_one_leaves_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let hist = |n: u64| dir.path().join(format!("n{n}.jsonl"));
    let mut c1 = config(1, "g", &[], 1_000_000);
    c1.history = Some(hist(1));
    let mut a = Group::found(c1).await.unwrap();
    let seed = [a.local_addr()];
    let mut hs = vec![];
    for n in 2..=3 {
        let mut c = config(n, "g", &seed, 1_000_000);
        c.history = Some(hist(n));
        hs.push(Group::join(c).await.unwrap());
    }
    let mut c = hs.pop().unwrap();
    let mut b = hs.pop().unwrap();
    let (mut ga, mut gb, mut gc) = (vec![], vec![], vec![]);
    let va = view_of(&mut a, 3, &mut ga).await;
    assert_eq!(view_of(&mut b, 3, &mut gb).await, va);
    assert_eq!(view_of(&mut c, 3, &mut gc).await, va);

    const EACH: usize = 2_000;
    for h in [&a, &b, &c] {
        let s = h.sender();
        let me = h.pid();
        tokio::spawn(async move {
            for i in 0..EACH {
                s.multicast(Bytes::from(format!("{me}:{i}"))).await.unwrap();
            }
        });
    }
    deliveries(&mut a, 3 * EACH, &mut ga).await;
    deliveries(&mut b, 3 * EACH, &mut gb).await;
    deliveries(&mut c, 3 * EACH, &mut gc).await;
    assert_eq!(ga, gb);
    assert_eq!(ga, gc);
    // Each sender's messages in its own order.
    let mine: Vec<&Bytes> = ga
        .iter()
        .filter(|(m, _)| m.sender == a.pid())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(mine.len(), EACH);
    assert_eq!(mine[7], &Bytes::from(format!("{}:7", a.pid())));

    // A clean leave.
    c.leave().await.unwrap();
    assert!(matches!(
        c.multicast(Bytes::from_static(b"late")).await,
        Err(NetError::Left)
    ));
    let v2 = view_of(&mut a, 2, &mut ga).await;
    assert!(!v2.contains(c.pid()));
    assert_eq!(view_of(&mut b, 2, &mut gb).await, v2);
    assert_eq!(a.view(), Some(v2));
    // The peers' addresses are known (for picking seeds later).
    assert!(a.known_peers().iter().any(|(p, _)| *p == b.pid()));

    for h in [a, b, c] {
        h.shutdown().await;
    }
    let mut all = vec![];
    for n in 1..=3 {
        let f = std::fs::File::open(hist(n)).unwrap();
        all.extend(read_jsonl(std::io::BufReader::new(f)).unwrap());
    }
    assert_eq!(all.len(), 3);
    let v = check_all(&all, &CheckOptions::default());
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_of_another_group_is_refused() {
    let mut a = Group::found(config(1, "alpha", &[], 1_000_000))
        .await
        .unwrap();
    let mut b = Group::join(config(2, "beta", &[a.local_addr()], 1_000_000))
        .await
        .unwrap();
    let r = timeout(Duration::from_millis(1500), b.next_event()).await;
    assert!(r.is_err(), "beta was admitted to alpha: {r:?}");

    // What the refusal looks like on the wire.
    let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
    let hello = Frame::Hello {
        group: "beta".into(),
        pid: Pid::new(9, 1),
        listen: "127.0.0.1:9".parse().unwrap(),
        policy: vsync::core::engine::PartitionPolicy::PrimaryComponent,
    };
    s.write_all(&encode_frame(&hello, DEFAULT_MAX_FRAME).unwrap())
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut frames = vec![];
    timeout(WAIT, async {
        loop {
            while let Some(f) = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                frames.push(f);
            }
            if s.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(&frames[0], Frame::Hello { group, .. } if group == "alpha"));
    assert!(
        matches!(&frames[1], Frame::Error { reason } if reason.contains("'alpha'") && reason.contains("'beta'")),
        "{frames:?}"
    );
    // Alpha is unharmed.
    let v = timeout(WAIT, a.next_event()).await.unwrap();
    assert!(matches!(v, Some(Event::View { .. })));
}

/// Reads until the peer closes the connection.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    timeout(WAIT, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let mut cfg = config(1, "g", &[], 1_000_000);
    cfg.max_frame = 64 * 1024;
    let mut a = Group::found(cfg).await.unwrap();
    let addr = a.local_addr();
    let hello = encode_frame(
        &Frame::Hello {
            group: "g".into(),
            pid: Pid::new(7, 1),
            listen: "127.0.0.1:9".parse().unwrap(),
            policy: vsync::core::engine::PartitionPolicy::PrimaryComponent,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    // An oversized length prefix instead of a Hello.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 1]).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    // A Hello, then an oversized frame.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    // A Hello, then garbage of a valid length.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 1, 0xee, 0xee, 0xee])
        .await
        .unwrap();
    assert!(closed_by_peer(&mut s).await);
    // A wrong version byte.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0, 0, 0, 2, 9, 0]).await.unwrap();
    assert!(closed_by_peer(&mut s).await);

    // The process is unharmed: a real member joins and messages flow.
    let mut got = vec![];
    view_of(&mut a, 1, &mut got).await;
    let mut b = Group::join(config(2, "g", &[addr], 1_000_000))
        .await
        .unwrap();
    view_of(&mut a, 2, &mut got).await;
    view_of(&mut b, 2, &mut vec![]).await;
    b.multicast(Bytes::from_static(b"after")).await.unwrap();
    deliveries(&mut a, 1, &mut got).await;
    assert_eq!(got[0].1, Bytes::from_static(b"after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_waits_while_the_engine_queue_is_full() {
    // A long suspicion timeout: the cut below must not change the view.
    let mut c1 = config(1, "g", &[], 10_000_000);
    c1.engine.window = 16;
    c1.max_queued = 8;
    let mut a = Group::found(c1).await.unwrap();
    let mut b = Group::join(config(2, "g", &[a.local_addr()], 10_000_000))
        .await
        .unwrap();
    view_of(&mut a, 2, &mut vec![]).await;
    view_of(&mut b, 2, &mut vec![]).await;
    // Node 2 hears nothing from node 1: node 1's messages stay unstable,
    // its window fills, then its queue.
    b.faults().cut(a.pid().node);
    let s = a.sender();
    let sender = tokio::spawn(async move {
        for i in 0..100u32 {
            s.multicast(Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sender.is_finished(), "multicast did not wait");
    b.faults().heal_all();
    timeout(WAIT, sender).await.unwrap().unwrap();
    let mut got = vec![];
    deliveries(&mut b, 100, &mut got).await;
    let order: Vec<u32> = got
        .iter()
        .map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert_eq!(order, (0..100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_waits_while_the_application_is_behind() {
    let mut cfg = config(1, "g", &[], 1_000_000);
    cfg.max_pending_events = 100;
    // A short engine queue: with the default (4096), a sender on a loaded
    // machine could queue all 1,000 before the runtime delivered any, and
    // finish without ever seeing the backlog.
    cfg.max_queued = 16;
    let mut a = Group::found(cfg).await.unwrap();
    view_of(&mut a, 1, &mut vec![]).await;
    let s = a.sender();
    let sender = tokio::spawn(async move {
        for i in 0..1_000u32 {
            s.multicast(Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
    });
    // Nobody reads: the sender stops once 100 events wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sender.is_finished(), "the sender did not wait");
    let pending = a.pending_events();
    assert!((100..200).contains(&pending), "{pending} events pending");
    // The handle's own multicast does not wait for the backlog.
    timeout(WAIT, a.multicast(Bytes::from_static(b"mine")))
        .await
        .unwrap()
        .unwrap();
    // Reading lets it finish.
    let mut got = vec![];
    deliveries(&mut a, 1_001, &mut got).await;
    timeout(WAIT, sender).await.unwrap().unwrap();
}
