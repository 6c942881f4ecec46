//! Command versions and rolling upgrades, with three builds of one counter
//! in one group (in-process replicas on real sockets):
//! - `V1` sends and reads version 1 (`Op1`: add);
//! - `Bridge` still sends version 1 but reads 1 and 2 (`Op2`: add, multiply);
//! - `V2` sends version 2 and reads 1 and 2.
//!
//! The documented upgrade (V1 → Bridge on every replica, then → V2) works
//! with the group serving throughout; skipping the bridge is refused at
//! join with a message naming both builds, and nothing diverges.

mod common;

use common::{config, free_port, init_log, serving, wait};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use vsync_rsm::{Replica, ReplicaConfig, RestoreError, Role, SnapshotImage, Start, StateMachine};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op1 {
    Add(u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op2 {
    Add(u64),
    Mul(u64),
}

#[derive(Clone)]
struct Image(Option<u64>);

impl SnapshotImage for Image {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        self.0.take().map(|n| n.to_le_bytes().to_vec())
    }
}

fn restore(n: &mut u64, c: &[u8]) -> Result<(), RestoreError> {
    *n = u64::from_le_bytes(c.try_into().map_err(RestoreError::new)?);
    Ok(())
}

/// A counter machine: `$name` applies `$cmd` with `$apply`, sends command
/// version `$v` and reads `$reads`; its state is one number.
macro_rules! counter {
    ($(#[$doc:meta])* $name:ident, $cmd:ty, $v:expr, $reads:expr, $apply:expr) => {
        $(#[$doc])*
        #[derive(Default)]
        struct $name(u64);

        impl StateMachine for $name {
            type Command = $cmd;
            type Output = u64;
            type Image = Image;
            const VERSION: u32 = $v;
            const READS: (u32, u32) = $reads;
            fn apply(&mut self, c: $cmd) -> u64 {
                let f: fn(&mut u64, $cmd) -> u64 = $apply;
                f(&mut self.0, c)
            }
            fn image(&self) -> Image {
                Image(Some(self.0))
            }
            fn restore_begin(&mut self) {
                self.0 = 0;
            }
            fn restore_chunk(&mut self, c: &[u8]) -> Result<(), RestoreError> {
                restore(&mut self.0, c)
            }
        }
    };
}

fn apply1(n: &mut u64, c: Op1) -> u64 {
    match c {
        Op1::Add(x) => *n = n.wrapping_add(x),
    }
    *n
}

fn apply2(n: &mut u64, c: Op2) -> u64 {
    match c {
        Op2::Add(x) => *n = n.wrapping_add(x),
        Op2::Mul(x) => *n = n.wrapping_mul(x),
    }
    *n
}

counter!(
    /// Version 1.
    V1, Op1, 1, (1, 1), apply1
);
counter!(
    /// Reads version 2, still sends version 1 (the application sends only
    /// `Add` through it).
    Bridge, Op2, 1, (1, 2), apply2
);
counter!(
    /// Version 2.
    V2, Op2, 2, (1, 2), apply2
);

/// Starts a replica of `m` (retrying another port if the one picked was
/// taken meanwhile).
async fn start<S: StateMachine>(
    node: u64,
    seeds: Vec<SocketAddr>,
    group: &str,
    how: Start,
    mut m: impl FnMut() -> S,
) -> (Replica<S>, SocketAddr) {
    for _ in 0..5 {
        let addr = free_port();
        let mut c: ReplicaConfig = config(node, addr, seeds.clone(), group, how);
        c.transfer_timeout = Duration::from_secs(5);
        match Replica::start(c, m()).await {
            Ok(r) => return (r, addr),
            Err(vsync_rsm::RsmError::Net(vsync_net::NetError::Bind { .. })) => continue,
            Err(e) => panic!("start: {e}"),
        }
    }
    panic!("no free port");
}

async fn serving_in<S: StateMachine>(r: &Replica<S>, n: usize) {
    wait(r, "serving", |s| serving(s) && s.members.len() == n).await;
}

async fn value<S: StateMachine>(r: &Replica<S>, f: fn(&S) -> u64) -> (u64, u64) {
    let st = r.status();
    (st.position, r.read(f).await.expect("read"))
}

/// One build or another, so that a group can hold several.
enum Any {
    V1(Replica<V1>),
    Bridge(Replica<Bridge>),
    V2(Replica<V2>),
}

impl Any {
    async fn add(&self, x: u64) {
        match self {
            Any::V1(r) => r.execute(Op1::Add(x)).await.map(drop),
            Any::Bridge(r) => r.execute(Op2::Add(x)).await.map(drop),
            Any::V2(r) => r.execute(Op2::Add(x)).await.map(drop),
        }
        .expect("add")
    }

    async fn value(&self) -> (u64, u64) {
        match self {
            Any::V1(r) => value(r, |m| m.0).await,
            Any::Bridge(r) => value(r, |m| m.0).await,
            Any::V2(r) => value(r, |m| m.0).await,
        }
    }

    async fn leave(&self) {
        match self {
            Any::V1(r) => r.leave().await,
            Any::Bridge(r) => r.leave().await,
            Any::V2(r) => r.leave().await,
        }
        .expect("leave")
    }
}

/// Positions and values of every replica, once they are all equal in
/// position (bounded).
async fn settled(rs: &[&Any]) -> Vec<u64> {
    for _ in 0..200 {
        let mut vs = Vec::new();
        for r in rs {
            vs.push(r.value().await);
        }
        if vs.iter().all(|v| v.0 == vs[0].0) {
            return vs.into_iter().map(|v| v.1).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replicas did not reach the same position");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_through_the_bridge_build_serves_throughout_and_stays_equal() {
    init_log();
    let g = "upgrade-ok";
    let (a, aa) = start(1, vec![], g, Start::Found, V1::default).await;
    serving_in(&a, 1).await;
    let mut rs = vec![Any::V1(a)];
    let mut addrs = vec![aa];
    for node in 2..=3 {
        let (r, addr) = start(node, vec![aa], g, Start::Join, V1::default).await;
        serving_in(&r, node as usize).await;
        rs.push(Any::V1(r));
        addrs.push(addr);
    }
    rs[0].add(5).await;

    // Step 1: every replica in turn to the bridge build (sends 1, reads 2),
    // the coordinator last; the others serve meanwhile.
    for i in [2usize, 1, 0] {
        rs[i].leave().await;
        let via = addrs[(i + 1) % 3];
        let (r, addr) = start(i as u64 + 1, vec![via], g, Start::Join, Bridge::default).await;
        serving_in(&r, 3).await;
        rs[i] = Any::Bridge(r);
        addrs[i] = addr;
        rs[(i + 1) % 3].add(1).await;
    }

    // Step 2: a replica of the version-2 build joins; its version-2
    // command is applied by every replica alike.
    let (c, _) = start(4, vec![addrs[0]], g, Start::Join, V2::default).await;
    serving_in(&c, 4).await;
    c.execute(Op2::Mul(3)).await.unwrap();
    let c = Any::V2(c);
    rs[0].add(2).await;
    let want = ((5 + 3) * 3) + 2;
    let vs = settled(&[&rs[0], &rs[1], &rs[2], &c]).await;
    assert_eq!(vs, vec![want; 4], "replicas at one position differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_skips_the_bridge_is_refused_at_join_and_nothing_diverges() {
    init_log();
    let g = "upgrade-refused";
    let (a, aa) = start(1, vec![], g, Start::Found, V1::default).await;
    serving_in(&a, 1).await;
    a.execute(Op1::Add(7)).await.unwrap();
    let (c, _) = start(3, vec![aa], g, Start::Join, V2::default).await;
    let mut ev = c.events();
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ev.recv().await {
                Ok(vsync_rsm::ReplicaEvent::Stopped { reason }) => return reason,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("the version-2 replica stops");
    assert!(
        reason.contains("sends command version 2") && reason.contains("reads 1..=1"),
        "the refusal names both builds: {reason}"
    );
    wait(&c, "stopped", |s| s.role == Role::Stopped).await;
    // It never served, and the version-1 replica goes on alone, unchanged.
    assert!(c.execute(Op2::Mul(0)).await.is_err());
    serving_in(&a, 1).await;
    assert_eq!(a.execute(Op1::Add(1)).await.unwrap(), 8);
    // A version-1 build that reads 2 is admitted beside it.
    let (b, _) = start(2, vec![aa], g, Start::Join, Bridge::default).await;
    serving_in(&b, 2).await;
    assert_eq!(b.read(|m| m.0).await.unwrap(), 8);
}
