//! In-process replicas over real loopback sockets: ordering, reads, state
//! transfer at the cut (also for a large state), checkpoints (including a
//! corrupted one), automatic rejoin after removal.

mod common;

use common::*;
use std::time::{Duration, Instant};
use vsync_core::NodeId;
use vsync_rsm::{Durability, Replica, ReplicaEvent, Role, RsmError, Start};

/// Fires `n` writes from every replica concurrently; returns the outputs.
async fn load(rs: &[Replica<Pages>], n: u32) -> usize {
    let mut tasks = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        for k in 0..n {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                r.execute(PageCmd::Write {
                    page: k,
                    offset: k * 7 + i as u32,
                    byte: (k ^ i as u32) as u8,
                })
                .await
            }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(_))) {
            ok += 1;
        }
    }
    ok
}

/// Waits until every replica is at the same position, then returns the
/// digests.
async fn settled_digests(rs: &[Replica<Pages>]) -> (u64, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pos: Vec<u64> = rs.iter().map(|r| r.status().position).collect();
        if pos.iter().all(|p| *p == pos[0]) {
            let mut ds = Vec::new();
            for r in rs {
                ds.push(r.read(|s: &Pages| s.digest()).await.expect("read"));
            }
            let pos2: Vec<u64> = rs.iter().map(|r| r.status().position).collect();
            if pos2 == pos {
                return (pos[0], ds);
            }
        }
        assert!(
            Instant::now() < deadline,
            "positions never settled: {pos:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_apply_in_one_order_and_reads_see_them() {
    let (rs, _) = group(3, "rsm-order").await;
    let first = rs[0]
        .execute(PageCmd::Grow {
            n: 4,
            size: 4096,
            seed: 1,
        })
        .await
        .expect("grow");
    assert_ne!(first, 0);
    assert_eq!(load(&rs, 200).await, 600);
    // An ordered read sees every acknowledged command.
    let ops = rs[1].read_ordered(|s: &Pages| s.ops).await.expect("read");
    assert!(ops >= 601, "ordered read saw {ops} commands");
    let (pos, ds) = settled_digests(&rs).await;
    assert_eq!(pos, 601);
    assert!(ds.iter().all(|d| *d == ds[0]), "digests differ: {ds:?}");
    let m = rs[0].metrics();
    assert_eq!(m.commands_applied, 201);
    // At most one delivery per command and read, plus each of the three
    // incarnations' version announcement (`Entry::Hello`).
    assert!(m.deliveries > 0 && m.deliveries <= 602 + 3, "{m:?}");
    // A clean leave; the others see a view without it.
    rs[2].leave().await.expect("leave");
    wait(&rs[2], "stopped", |s| s.role == Role::Stopped).await;
    wait(&rs[0], "a view without the leaver", |s| {
        s.members.len() == 2
    })
    .await;
    assert!(matches!(
        rs[2]
            .execute(PageCmd::Write {
                page: 0,
                offset: 0,
                byte: 0
            })
            .await,
        Err(RsmError::ShuttingDown)
    ));
}

/// A joiner admitted while the group writes gets the state at the cut
/// and, once the writes stop, is at the same position with the same state.
async fn joiner_matches(pages: u32, page_size: u32, name: &str) {
    let (rs, addrs) = group(2, name).await;
    rs[0]
        .execute(PageCmd::Grow {
            n: pages,
            size: page_size,
            seed: 7,
        })
        .await
        .expect("grow");
    // Keep writing while the joiner joins.
    let writers: Vec<_> = rs
        .iter()
        .map(|r| {
            let r = r.clone();
            tokio::spawn(async move {
                let mut k = 0u32;
                let stop = Instant::now() + Duration::from_secs(2);
                while Instant::now() < stop {
                    let _ = r
                        .execute(PageCmd::Write {
                            page: k,
                            offset: k.wrapping_mul(31),
                            byte: k as u8,
                        })
                        .await;
                    k += 1;
                }
                k
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (j, _, _) = start_on_free_port(|a| config(3, a, vec![addrs[0]], name, Start::Join)).await;
    let mut ev = j.events();
    wait(&j, "joiner serving", |s| serving(s) && s.members.len() == 3).await;
    let took = started.elapsed();
    let mut writes = 0;
    for w in writers {
        writes += w.await.expect("writer");
    }
    assert!(writes > 0);
    let all = vec![rs[0].clone(), rs[1].clone(), j.clone()];
    let (pos, ds) = settled_digests(&all).await;
    assert!(
        ds.iter().all(|d| *d == ds[0]),
        "digests differ at {pos}: {ds:?}"
    );
    let m = j.metrics();
    assert_eq!(m.transfers_received, 1);
    let size = u64::from(pages) * u64::from(page_size);
    assert!(m.transfer_bytes_received >= size);
    let mut done = None;
    while let Ok(e) = ev.try_recv() {
        if let ReplicaEvent::StateTransferDone {
            position, bytes, ..
        } = e
        {
            done = Some((position, bytes));
        }
    }
    let (at, bytes) = done.expect("StateTransferDone event");
    assert!(at >= 1 && at <= pos);
    eprintln!(
        "joined with a {size}-byte state in {took:?} ({bytes} bytes at position {at}); {writes} writes meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_state_equals_the_members_at_the_same_position() {
    joiner_matches(16, 1 << 20, "rsm-join").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Moves a 100 MB state: about 4 s in all on the 2-core machine.
async fn joiner_state_equals_the_members_with_a_100_mb_state() {
    joiner_matches(100, 1 << 20, "rsm-join-big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_checkpoint_is_rejected_and_the_state_transferred() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r0, a0, _) = start_on_free_port(|a| {
        let mut c0 = config(1, a, vec![], "rsm-ckpt", Start::Found);
        c0.data_dir = Some(dir.path().join("n1"));
        c0
    })
    .await;
    wait(&r0, "founder", serving).await;
    let mut c1 = config(2, free_port(), vec![a0], "rsm-ckpt", Start::Join);
    let d1 = dir.path().join("n2");
    c1.data_dir = Some(d1.clone());
    c1.durability = Durability::Logged;
    let r1 = Replica::start(c1.clone(), Pages::default())
        .await
        .expect("start");
    wait(&r1, "joiner", |s| serving(s) && s.members.len() == 2).await;
    r0.execute(PageCmd::Grow {
        n: 3,
        size: 10_000,
        seed: 3,
    })
    .await
    .expect("grow");
    r1.checkpoint().await.expect("checkpoint");
    assert!(r1.status().last_checkpoint.is_some());
    assert!(r1.metrics().checkpoints_written >= 1);
    r1.leave().await.expect("leave");
    wait(&r1, "stopped", |s| s.role == Role::Stopped).await;
    drop(r1);
    // Corrupt one chunk of the current checkpoint behind the store's back.
    let db = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sled::open(&d1) {
                Ok(db) => break db,
                Err(e) => {
                    assert!(Instant::now() < deadline, "store still locked: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let mut hit = false;
    for slot in ["ckpt0", "ckpt1"] {
        let t = db.open_tree(slot).expect("tree");
        if let Some(v) = t.get(1u64.to_be_bytes()).expect("get") {
            let mut v = v.to_vec();
            v[100] ^= 0xff;
            t.insert(1u64.to_be_bytes(), v).expect("insert");
            hit = true;
        }
    }
    assert!(hit, "no checkpoint chunk found");
    db.flush().expect("flush");
    drop(db);
    // More commands while it is down.
    r0.execute(PageCmd::Write {
        page: 1,
        offset: 5,
        byte: 9,
    })
    .await
    .expect("write");
    c1.net.incarnation = None;
    let r1 = Replica::start(c1, Pages::default()).await.expect("restart");
    let st = r1.status();
    let reason = st
        .checkpoint_rejected
        .expect("the corrupt checkpoint is reported");
    assert!(reason.contains("checksum"), "{reason}");
    wait(&r1, "rejoined", |s| serving(s) && s.members.len() == 2).await;
    assert_eq!(r1.metrics().transfers_received, 1);
    let (_, ds) = settled_digests(&[r0.clone(), r1.clone()]).await;
    assert_eq!(ds[0], ds[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_rejoins_by_itself() {
    let (rs, _, faults) = group_with_faults(3, "rsm-rejoin").await;
    load(&rs, 20).await;
    let old = rs[2].status().pid.expect("pid");
    // Partition node 3 away: it blocks, the others go on without it.
    faults[2].cut(NodeId(1));
    faults[2].cut(NodeId(2));
    faults[0].cut(NodeId(3));
    faults[1].cut(NodeId(3));
    wait(&rs[0], "a view without node 3", |s| s.members.len() == 2).await;
    wait(&rs[2], "node 3 blocked", |s| {
        s.blocked || s.role == Role::Removed
    })
    .await;
    assert!(matches!(
        rs[2]
            .execute(PageCmd::Write {
                page: 0,
                offset: 0,
                byte: 1
            })
            .await,
        Err(RsmError::Blocked | RsmError::Removed | RsmError::NotMember)
    ));
    load(&rs[..2], 20).await;
    for f in &faults {
        f.heal_all();
    }
    let st = wait(&rs[2], "node 3 back as a new incarnation", |s| {
        s.pid.is_some_and(|p| p != old) && serving(s) && s.members.len() == 3
    })
    .await;
    assert!(st.pid.expect("pid").inc > old.inc);
    assert!(rs[2].metrics().rejoins >= 1);
    let (pos, ds) = settled_digests(&rs).await;
    assert_eq!(pos, 100);
    assert!(ds.iter().all(|d| *d == ds[0]), "digests differ: {ds:?}");
}

/// A Logged joiner that reports itself serving accepts a command at once:
/// its role stays "receiving state" until the received state is on disk as
/// the base of its log (before, the status said `Member` while `execute`
/// still answered `NotMember` for that moment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_joiner_serves_as_soon_as_it_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logged = |node: u64, addr, seeds, start| {
        let mut c = config(node, addr, seeds, "rsm-logged-join", start);
        c.durability = Durability::Logged;
        c.data_dir = Some(dir.path().join(format!("n{node}")));
        c
    };
    let (founder, a0, _) = start_on_free_port(|a| logged(1, a, vec![], Start::Found)).await;
    wait(&founder, "membership", serving).await;
    founder
        .execute(PageCmd::Grow {
            n: 2,
            size: 4096,
            seed: 3,
        })
        .await
        .expect("grow");
    for node in 2..=5u64 {
        let (j, _, _) = start_on_free_port(|a| logged(node, a, vec![a0], Start::Join)).await;
        wait(&j, "the joiner serving", serving).await;
        let r = j
            .execute(PageCmd::Write {
                page: 1,
                offset: node as u32,
                byte: node as u8,
            })
            .await;
        assert!(
            r.is_ok(),
            "joiner {node} said it serves, then refused: {r:?}"
        );
        j.leave().await.expect("leave");
        wait(&founder, "the joiner gone", |s| s.members.len() == 1).await;
    }
}
