//! A timeline of a real run: three vsync-net members over TCP on loopback
//! write history files (tempdir), one leaves; the files are drawn with
//! `vsync_core::timeline` and the picture shows what happened, including
//! the state donors that vsync-net records for joiners.

use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::timeout;
use vsync::core::history::Event as HistEvent;
use vsync::core::timeline::{self, TimelineOptions};
use vsync::net::{Config, Event, Group, GroupHandle};

const WAIT: Duration = Duration::from_secs(20);

fn config(node: u64, seeds: &[SocketAddr]) -> Config {
    let mut c = Config::new(node, "127.0.0.1:0".parse().unwrap(), "timeline");
    c.incarnation = Some(1);
    c.seeds = seeds.to_vec();
    c.engine = vsync::core::Config::with_suspect_timeout(1_000_000);
    c
}

/// Waits until `h` has a view of `n` members and has delivered `want`
/// messages in all.
async fn settle(h: &mut GroupHandle, n: usize, want: usize, got: &mut usize) {
    timeout(WAIT, async {
        loop {
            if *got >= want && h.view().is_some_and(|v| v.members.len() == n) {
                return;
            }
            match h.next_event().await {
                Some(Event::Deliver { .. }) => *got += 1,
                Some(_) => {}
                None => panic!("{}: event stream ended", h.pid()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{}: not settled ({} deliveries)", h.pid(), got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_is_drawn_with_its_joins_and_its_leave() {
    let dir = tempfile::tempdir().unwrap();
    let hist = |n: u64| dir.path().join(format!("n{n}.jsonl"));
    let mut c1 = config(1, &[]);
    c1.history = Some(hist(1));
    let mut a = Group::found(c1).await.unwrap();
    let seed = [a.local_addr()];
    let mut c2 = config(2, &seed);
    c2.history = Some(hist(2));
    let mut b = Group::join(c2).await.unwrap();
    let (mut ga, mut gb, mut gc) = (0, 0, 0);
    settle(&mut a, 2, 0, &mut ga).await;
    let mut c3 = config(3, &seed);
    c3.history = Some(hist(3));
    let mut c = Group::join(c3).await.unwrap();
    settle(&mut a, 3, 0, &mut ga).await;
    settle(&mut c, 3, 0, &mut gc).await;

    const EACH: usize = 20;
    for h in [&a, &b, &c] {
        for i in 0..EACH {
            h.multicast(Bytes::from(format!("{}:{i}", h.pid())))
                .await
                .unwrap();
        }
    }
    settle(&mut a, 3, 3 * EACH, &mut ga).await;
    settle(&mut b, 3, 3 * EACH, &mut gb).await;
    settle(&mut c, 3, 3 * EACH, &mut gc).await;
    c.leave().await.unwrap();
    settle(&mut a, 2, 3 * EACH, &mut ga).await;
    settle(&mut b, 2, 3 * EACH, &mut gb).await;
    for h in [a, b, c] {
        h.shutdown().await;
    }

    let files: Vec<_> = (1..=3).map(hist).collect();
    // vsync-net recorded who sent each joiner its state.
    let histories = timeline::read_files(&files).unwrap();
    let donors: Vec<_> = histories
        .iter()
        .flat_map(|h| &h.records)
        .filter_map(|r| match &r.event {
            HistEvent::Install {
                joined: true,
                donor: Some(d),
                view,
            } => Some((r.pid, *d, view.contains(*d))),
            _ => None,
        })
        .collect();
    assert_eq!(donors.len(), 2, "n2 and n3 got their state: {donors:?}");
    assert!(donors.iter().all(|(p, d, member)| p != d && *member));

    let out = dir.path().join("run.svg");
    let t = timeline::write_timeline(&files, &out, &TimelineOptions::default()).unwrap();
    assert!(t.violations.is_empty(), "{:?}", t.violations);
    assert_eq!(t.lanes, 3);
    // Views: {n1}, {n1 n2}, {n1 n2 n3}, {n1 n2} after the leave.
    assert_eq!(t.views, 4);
    assert_eq!(t.deliveries, 3 * 3 * EACH);
    let svg = std::fs::read_to_string(&out).unwrap();
    let count = |class: &str| svg.matches(&format!("class=\"{class}\"")).count();
    assert_eq!(count("lane"), 3);
    assert_eq!(count("view"), 4);
    assert_eq!(count("transfer"), 2);
    assert_eq!(count("left"), 1);
    assert_eq!(count("deliver"), 3 * 3 * EACH);
    assert_eq!(count("violation"), 0);
}
