//! A replicated bank ledger: three replicas, concurrent transfers from all
//! of them, one replica crashed and restarted from its checkpoint, and the
//! total balance checked at every replica (it is an invariant).
//!
//! `cargo run --example ledger`

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vsync_examples::rsm::ledger::{Ledger, LedgerCmd, LedgerOutput};
use vsync_rsm::{Durability, Replica, ReplicaConfig, Role, Start};

const ACCOUNTS: u32 = 1000;
const OPENING: i64 = 1000;

fn port() -> Result<SocketAddr, std::io::Error> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn config(
    node: u64,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    start: Start,
    dir: &std::path::Path,
) -> ReplicaConfig {
    let mut net = vsync_net::Config::new(node, listen, "ledger");
    net.seeds = seeds;
    net.engine = vsync_core::Config::with_suspect_timeout(500_000);
    let mut c = ReplicaConfig::new(net);
    c.start = start;
    c.data_dir = Some(dir.join(format!("n{node}")));
    c.durability = Durability::Logged;
    c.checkpoint_every = 5_000;
    c
}

async fn serving(r: &Replica<Ledger>, members: usize) {
    r.wait_for(|s| {
        matches!(s.role, Role::Member | Role::Coordinator | Role::Donor)
            && s.members.len() == members
    })
    .await;
}

async fn transfers(r: Replica<Ledger>, n: u32, seed: u64) -> (u32, u32) {
    let mut x = seed | 1;
    let mut tasks = Vec::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let cmd = LedgerCmd::Transfer {
            from: (x % u64::from(ACCOUNTS)) as u32,
            to: ((x >> 24) % u64::from(ACCOUNTS)) as u32,
            amount: ((x >> 48) % 300) as i64 + 1,
        };
        let r = r.clone();
        tasks.push(tokio::spawn(async move { r.execute(cmd).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Ok(LedgerOutput::Ok)) => ok += 1,
            _ => refused += 1,
        }
    }
    (ok, refused)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let addrs = [port()?, port()?, port()?];
    let mut rs = Vec::new();
    for i in 0..3u64 {
        let (start, seeds) = if i == 0 {
            (Start::Found, vec![])
        } else {
            (Start::Join, vec![addrs[0]])
        };
        let r = Replica::start(
            config(i + 1, addrs[i as usize], seeds, start, dir.path()),
            Ledger::default(),
        )
        .await?;
        serving(&r, i as usize + 1).await;
        rs.push(r);
    }
    let out = rs[0]
        .execute(LedgerCmd::Init {
            accounts: ACCOUNTS,
            balance: OPENING,
        })
        .await?;
    println!("opened {ACCOUNTS} accounts of {OPENING}: {out:?}");
    let t = Instant::now();
    let loads: Vec<_> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| tokio::spawn(transfers(r.clone(), 3000, 77 + i as u64)))
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for l in loads {
        let (o, r) = l.await?;
        ok += o;
        refused += r;
    }
    println!(
        "9000 transfers (Logged: each acknowledged after a flush) in {:?}: {ok} done, {refused} refused",
        t.elapsed()
    );
    // Crash replica 3 (drop every handle: the others see it vanish) and
    // restart it with its data directory: checkpoint + log, then transfer.
    let crashed = rs.pop().ok_or("no replica")?;
    drop(crashed);
    serving(&rs[0], 2).await;
    transfers(rs[0].clone(), 500, 5).await;
    let r3 = Replica::start(
        config(3, addrs[2], vec![addrs[0]], Start::Join, dir.path()),
        Ledger::default(),
    )
    .await?;
    serving(&r3, 3).await;
    rs.push(r3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, r) in rs.iter().enumerate() {
        let (total, digest, ops) = r
            .read_ordered(|l: &Ledger| (l.total(), l.digest(), l.ops()))
            .await?;
        println!(
            "replica {}: total {total} (invariant {}), {ops} commands, digest {digest:#x}, checkpoints {}",
            i + 1,
            i64::from(ACCOUNTS) * OPENING,
            r.metrics().checkpoints_written
        );
        if total != i64::from(ACCOUNTS) * OPENING {
            return Err("the total balance changed".into());
        }
    }
    for r in &rs {
        let _ = r.leave().await;
    }
    Ok(())
}
