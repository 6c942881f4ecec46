//! A clean leave completes for the members that stay, even when the
//! leaving process's application drops its handle (or exits) the moment it
//! is told it left. Before the fix, the runtime stopped at once and dropped
//! the commit still queued for the others: in a group of two, the member
//! left behind never installed its view of one and blocked as a minority,
//! for good.

use std::time::{Duration, Instant};
use vsync_net::{Config, Event, Group, GroupHandle};

fn cfg(node: u64) -> Config {
    let mut c = Config::new(node, "127.0.0.1:0".parse().expect("addr"), "leave");
    c.engine = vsync_core::Config::with_suspect_timeout(300_000);
    c.security = vsync_net::Security::Insecure;
    c
}

async fn next(g: &mut GroupHandle, what: &str, mut f: impl FnMut(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(10);
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
async fn the_coordinator_of_two_leaves_and_drops_its_handle_and_the_other_goes_on_alone() {
    for round in 0..10 {
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
        // a (the coordinator) leaves; its application drops the handle as
        // soon as it hears it left, as an exiting process would.
        let sender = a.sender();
        let leaving = tokio::spawn(async move { sender.leave().await });
        next(&mut a, "a left", |e| matches!(e, Event::Left { .. })).await;
        drop(a);
        leaving.await.expect("task").expect("leave");
        // b installs a view of itself, well before any suspicion could
        // have removed a, and is not blocked.
        let t = Instant::now();
        let ev = next(&mut b, "b's view without a", |e| {
            matches!(e, Event::View { .. } | Event::Blocked { .. })
        })
        .await;
        match ev {
            Event::View { view, .. } => assert_eq!(view.members, vec![b.pid()], "round {round}"),
            other => panic!("round {round}: b {other:?} instead of going on alone"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "round {round}: took {:?}",
            t.elapsed()
        );
        b.shutdown().await;
    }
}
