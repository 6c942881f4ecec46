//! Every member of a group runs the same partition policy: a process of
//! another policy is refused at the connection (the Hello), so it is never
//! admitted and never exchanges a protocol message with the group. (Before,
//! participants accepted any Prepare: one partitionable node among
//! primary-component nodes led one of them into a minority view that
//! forked.)

use std::time::{Duration, Instant};
use vsync_core::engine::PartitionPolicy;
use vsync_net::{Config, Event, Group, GroupHandle};

fn cfg(node: u64, policy: PartitionPolicy) -> Config {
    let mut c = Config::new(node, "127.0.0.1:0".parse().expect("addr"), "policy");
    c.engine = vsync_core::Config::with_suspect_timeout(300_000);
    c.engine.policy = policy;
    c.security = vsync_net::Security::Insecure;
    c
}

async fn views(g: &mut GroupHandle, within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    let mut sizes = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        g.next_event(),
    )
    .await
    {
        if let Event::View { view, .. } = e {
            sizes.push(view.members.len());
        }
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_of_another_partition_policy_is_never_admitted() {
    let mut a = Group::found(cfg(1, PartitionPolicy::PrimaryComponent))
        .await
        .expect("found");
    assert_eq!(views(&mut a, Duration::from_millis(300)).await, vec![1]);
    let mut bc = cfg(2, PartitionPolicy::Partitionable);
    bc.seeds = vec![a.local_addr()];
    let mut b = Group::join(bc).await.expect("join");
    // Neither side installs a view with the other.
    let (va, vb) = tokio::join!(
        views(&mut a, Duration::from_secs(2)),
        views(&mut b, Duration::from_secs(2))
    );
    assert!(va.is_empty(), "the group changed: {va:?}");
    assert!(
        vb.is_empty(),
        "the other policy's process was admitted: {vb:?}"
    );
    // A process of the same policy is admitted as usual.
    let mut cc = cfg(3, PartitionPolicy::PrimaryComponent);
    cc.seeds = vec![a.local_addr()];
    let mut c = Group::join(cc).await.expect("join");
    let vc = views(&mut c, Duration::from_secs(2)).await;
    assert_eq!(vc.first(), Some(&2), "{vc:?}");
    b.shutdown().await;
    c.shutdown().await;
    a.shutdown().await;
}
