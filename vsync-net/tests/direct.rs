//! Point-to-point messages (`GroupSender::send_to`, `Event::Direct`):
//! FIFO, intact, with backpressure, and a large transfer does not starve
//! the protocol (no member is suspected while 384 MiB stream).

use bytes::Bytes;
use std::time::{Duration, Instant};
use vsync_net::{Config, Event, Group, GroupHandle, NetError};

fn cfg(node: u64) -> Config {
    let mut c = Config::new(node, "127.0.0.1:0".parse().expect("addr"), "direct");
    // A suspicion timeout shorter than the transfer: an engine task
    // stalled behind the direct messages would be noticed.
    c.engine = vsync_core::Config::with_suspect_timeout(500_000);
    c
}

async fn next(g: &mut GroupHandle, what: &str, mut f: impl FnMut(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, g.next_event()).await {
            Ok(Some(e)) if f(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_arrive_in_order_without_stalling_the_group() {
    let mut a = Group::found(cfg(1)).await.expect("found");
    next(&mut a, "a's view", |e| matches!(e, Event::View { .. })).await;
    let mut bc = cfg(2);
    bc.seeds = vec![a.local_addr()];
    let mut b = Group::join(bc).await.expect("join");
    next(
        &mut b,
        "b admitted",
        |e| matches!(e, Event::View { view, .. } if view.members.len() == 2),
    )
    .await;
    let to = b.pid();
    let sender = a.sender();
    // Too large for a frame: a typed error, not a dropped message.
    let big = Bytes::from(vec![0u8; sender.max_direct() + 1]);
    assert!(matches!(
        sender.send_to(to, big).await,
        Err(NetError::PayloadTooLarge { .. })
    ));
    const N: u32 = 384;
    const SIZE: usize = 1 << 20;
    let start = Instant::now();
    let tx = tokio::spawn(async move {
        for i in 0..N {
            let mut v = vec![(i % 251) as u8; SIZE];
            v[..4].copy_from_slice(&i.to_be_bytes());
            sender.send_to(to, Bytes::from(v)).await.expect("send_to");
        }
    });
    // Multicasts keep flowing meanwhile.
    a.multicast(Bytes::from_static(b"during"))
        .await
        .expect("multicast");
    let mut got = 0u32;
    let mut delivered = false;
    let mut views = 0;
    while got < N {
        match next(&mut b, "direct messages", |_| true).await {
            Event::Direct { from, payload } => {
                assert_eq!(from, a.pid());
                assert_eq!(payload.len(), SIZE);
                assert_eq!(u32::from_be_bytes(payload[..4].try_into().expect("4")), got);
                assert!(payload[4..].iter().all(|x| *x == (got % 251) as u8));
                got += 1;
            }
            Event::Deliver { payload, .. } => {
                assert_eq!(&payload[..], b"during");
                delivered = true;
            }
            Event::View { .. } => views += 1,
            _ => {}
        }
    }
    let took = start.elapsed();
    tx.await.expect("sender");
    if !delivered {
        next(&mut b, "the multicast", |e| {
            matches!(e, Event::Deliver { .. })
        })
        .await;
    }
    assert_eq!(
        views, 0,
        "a view change happened during the transfer (suspicion)"
    );
    assert_eq!(a.view().expect("view").members.len(), 2);
    eprintln!(
        "{} MiB direct in {took:?}: {:.0} MiB/s",
        N,
        f64::from(N) / took.as_secs_f64()
    );
    // Events of a departed sender stop: sending to a dead pid is not an
    // error for the sender (the message is dropped), like a socket write.
    b.shutdown().await;
    let r = a.sender().send_to(to, Bytes::from_static(b"x")).await;
    assert!(r.is_ok());
}
