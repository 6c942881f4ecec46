//! Partitionable policy on in-process replicas over real loopback sockets:
//! a group of three split 1|2 goes on on both sides; after the heal the
//! single replica loses the merge, its state machine is shown exactly the
//! commands it applied alone, its checkpoint and log on disk (real sled)
//! are erased, and restarted from that directory it takes the winner's
//! state.

mod common;

use common::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vsync_core::NodeId;
use vsync_core::engine::PartitionPolicy;
use vsync_rsm::store::Store;
use vsync_rsm::{
    Divergence, Durability, Replica, ReplicaConfig, ReplicaEvent, RestoreError, Start, StateMachine,
};

/// What `on_discard` was shown: the position, the unlisted count, and the
/// listed commands with their positions.
type Shown = (Option<u64>, u64, Vec<(u64, PageCmd)>);

/// `Pages`, recording what `on_discard` is shown.
#[derive(Default)]
struct Recording {
    inner: Pages,
    shown: Arc<Mutex<Vec<Shown>>>,
}

impl StateMachine for Recording {
    type Command = PageCmd;
    type Output = u64;
    type Image = <Pages as StateMachine>::Image;
    fn apply(&mut self, cmd: PageCmd) -> u64 {
        self.inner.apply(cmd)
    }
    fn image(&self) -> Self::Image {
        self.inner.image()
    }
    fn restore_begin(&mut self) {
        self.inner.restore_begin();
    }
    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        self.inner.restore_chunk(chunk)
    }
    fn on_discard(&mut self, d: &Divergence<PageCmd>) {
        // The state is still the losing one here.
        assert_eq!(self.inner.ops, d.last);
        let cmds = d
            .discarded
            .iter()
            .map(|x| (x.position, x.command.clone()))
            .collect();
        if let Ok(mut s) = self.shown.lock() {
            s.push((d.position, d.unlisted, cmds));
        }
    }
}

fn partitionable(node: u64, addrs: &[std::net::SocketAddr], start: Start) -> ReplicaConfig {
    let seeds = if node == 1 { vec![] } else { vec![addrs[0]] };
    let mut c = config(
        node,
        addrs[node as usize - 1],
        seeds,
        "rsm-partition",
        start,
    );
    c.net.engine.policy = PartitionPolicy::Partitionable;
    c
}

fn write(byte: u8) -> PageCmd {
    PageCmd::Write {
        page: 0,
        offset: u32::from(byte),
        byte,
    }
}

fn split(faults: &[vsync_net::Faults]) {
    faults[2].cut(NodeId(1));
    faults[2].cut(NodeId(2));
    faults[0].cut(NodeId(3));
    faults[1].cut(NodeId(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_losing_side_shows_what_it_discards_erases_its_store_and_takes_the_winners_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data3 = dir.path().join("n3");
    let addrs: Vec<_> = (0..3).map(|_| free_port()).collect();
    let shown = Arc::new(Mutex::new(Vec::new()));
    let mut rs = Vec::new();
    let mut faults = Vec::new();
    for node in 1..=3u64 {
        let start = if node == 1 { Start::Found } else { Start::Join };
        let mut c = partitionable(node, &addrs, start);
        let mut m = Recording::default();
        if node == 3 {
            // The loser-to-be: a durable log and checkpoints on disk, and
            // no automatic rejoin, so that its store can be inspected.
            c.data_dir = Some(data3.clone());
            c.durability = Durability::Logged;
            c.auto_rejoin = false;
            m.shown = shown.clone();
        }
        faults.push(c.net.faults.clone());
        let r = Replica::start(c, m).await.expect("start");
        wait(&r, "membership", serving).await;
        rs.push(r);
    }
    for r in &rs {
        wait(r, "full view", |s| s.members.len() == 3 && serving(s)).await;
    }
    // Logged mode: node 3 serves once its received state is checkpointed
    // (the base of its log).
    wait(&rs[2], "node 3's base checkpoint", |s| {
        s.last_checkpoint.is_some()
    })
    .await;
    rs[0]
        .execute(PageCmd::Grow {
            n: 2,
            size: 1024,
            seed: 7,
        })
        .await
        .expect("grow");
    for b in 0..10 {
        rs[b % 3].execute(write(b as u8)).await.expect("write");
    }
    let mut events = rs[2].events();

    split(&faults);
    wait(&rs[2], "node 3 alone", |s| {
        s.members.len() == 1 && serving(s)
    })
    .await;
    wait(&rs[0], "nodes 1 and 2 together", |s| {
        s.members.len() == 2 && serving(s)
    })
    .await;
    // Both sides accept writes.
    let before = rs[2].status().position;
    for b in 100..105u8 {
        rs[2]
            .execute(write(b))
            .await
            .expect("the single side writes");
    }
    rs[2]
        .checkpoint()
        .await
        .expect("a checkpoint of the losing state");
    for b in 200..220u8 {
        rs[0].execute(write(b)).await.expect("the pair writes");
    }
    let lost = rs[2].status().position;
    assert_eq!(lost, before + 5);

    for f in &faults {
        f.heal_all();
    }
    // Node 3 loses the merge, reports it, and stops (no automatic rejoin).
    let info = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(ReplicaEvent::Diverged(i)) => return i,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("a Diverged event within 30 s");
    // The split view is the view of three, which node 3 began at 0 (it
    // joined it); it diverged where that view ended, before its own five
    // writes. The commands of the split view (the grow and ten writes) are
    // listed as uncertain; here the winner has them all.
    assert_eq!(info.last, lost);
    assert_eq!((info.split_start, info.position), (Some(0), Some(before)));
    assert_eq!((info.discarded, info.uncertain, info.listed), (5, 11, 16));
    let shown = shown.lock().expect("lock").clone();
    assert_eq!(shown.len(), 1, "on_discard called once");
    let (position, unlisted, cmds) = &shown[0];
    assert_eq!((*position, *unlisted), (Some(before), 0));
    let certain: Vec<u8> = cmds
        .iter()
        .filter(|(p, _)| *p > before)
        .map(|(_, c)| match c {
            PageCmd::Write { byte, .. } => *byte,
            PageCmd::Grow { .. } => 0,
        })
        .collect();
    assert_eq!(certain, (100..105).collect::<Vec<u8>>());
    assert_eq!(cmds.len(), 16);
    let st = wait(&rs[2], "node 3 stopped", |s| {
        s.role == vsync_rsm::Role::Stopped
    })
    .await;
    assert_eq!(st.last_divergence.as_ref(), Some(&info));
    assert_eq!(st.last_checkpoint, None);
    let m = rs[2].metrics();
    assert_eq!((m.divergences, m.discarded_commands), (1, 5));
    let r3 = rs.pop().expect("node 3");
    drop(r3);

    // Its checkpoint and log (of the discarded history) are gone.
    assert_store_empty(&data3).await;

    // Restarted from the same directory, it takes the winner's state.
    let mut c = partitionable(3, &addrs, Start::Join);
    c.data_dir = Some(data3.clone());
    c.durability = Durability::Logged;
    let r3 = Replica::start(c, Recording::default())
        .await
        .expect("restart");
    wait(&r3, "node 3 back", |s| s.members.len() == 3 && serving(s)).await;
    rs.push(r3);
    let digests = settled(&rs).await;
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    // The winner's history: the pair's 20 writes, not the single's 5.
    let ops = rs[2].read(|m: &Recording| m.inner.ops).await.expect("read");
    assert_eq!(ops, 1 + 10 + 20);
}

/// The store is empty once the replica's task has let go of it (sled
/// holds a lock on the directory while open).
async fn assert_store_empty(dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(dir) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store stays locked: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(store.meta(), Ok(None), "the losing checkpoint was kept");
    assert_eq!(store.log_entries().count(), 0, "the losing log was kept");
}

/// Waits for equal positions, then returns the digests.
async fn settled(rs: &[Replica<Recording>]) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pos: Vec<u64> = rs.iter().map(|r| r.status().position).collect();
        if pos.iter().all(|p| *p == pos[0]) {
            let mut ds = Vec::new();
            for r in rs {
                ds.push(
                    r.read(|m: &Recording| m.inner.digest())
                        .await
                        .expect("read"),
                );
            }
            return ds;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "positions never settled: {pos:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
