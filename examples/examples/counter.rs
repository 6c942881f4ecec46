//! A replicated counter: three replicas in one process over loopback TCP,
//! commands from all of them, a fourth replica joining by state transfer.
//!
//! `cargo run --example counter`

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vsync_examples::rsm::counter::{Counter, CounterCmd};
use vsync_rsm::{Replica, ReplicaConfig, Role, RsmError, Start};

fn port() -> Result<SocketAddr, std::io::Error> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn config(node: u64, listen: SocketAddr, seeds: Vec<SocketAddr>, start: Start) -> ReplicaConfig {
    let mut net = vsync_net::Config::new(node, listen, "counter");
    net.seeds = seeds;
    net.engine = vsync_core::Config::with_suspect_timeout(500_000);
    let mut c = ReplicaConfig::new(net);
    c.start = start;
    c
}

async fn serving(r: &Replica<Counter>, members: usize) {
    r.wait_for(|s| {
        matches!(s.role, Role::Member | Role::Coordinator | Role::Donor)
            && s.members.len() == members
    })
    .await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addrs = [port()?, port()?, port()?, port()?];
    let mut replicas = Vec::new();
    for i in 0..3u64 {
        let (start, seeds) = if i == 0 {
            (Start::Found, vec![])
        } else {
            (Start::Join, vec![addrs[0]])
        };
        let r = Replica::start(
            config(i + 1, addrs[i as usize], seeds, start),
            Counter::default(),
        )
        .await?;
        serving(&r, i as usize + 1).await;
        println!("replica {} is a member: {:?}", i + 1, r.status().members);
        replicas.push(r);
    }
    // 3 x 1000 increments, 1000 in flight at a time.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in &replicas {
        for _ in 0..1000 {
            let r = r.clone();
            tasks.push(tokio::spawn(
                async move { r.execute(CounterCmd::Add(1)).await },
            ));
        }
    }
    for t in tasks {
        t.await??;
    }
    println!("3000 increments in {:?}", start.elapsed());
    let v = replicas[0].read_ordered(|c: &Counter| c.value).await?;
    println!("ordered read at replica 1: {v}");
    // A fourth replica joins and receives the state.
    let j = Replica::start(
        config(4, addrs[3], vec![addrs[0]], Start::Join),
        Counter::default(),
    )
    .await?;
    serving(&j, 4).await;
    let jv = j.read(|c: &Counter| *c).await?;
    println!(
        "replica 4 joined with value {} (digest {:#x}) after {} bytes of state transfer",
        jv.value,
        jv.digest,
        j.metrics().transfer_bytes_received
    );
    replicas[1].execute(CounterCmd::Add(-3000)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, r) in replicas.iter().chain([&j]).enumerate() {
        let c = r.read(|c: &Counter| *c).await?;
        println!(
            "replica {}: value {} after {} commands, status {:?}",
            i + 1,
            c.value,
            c.ops,
            r.status().role
        );
    }
    for r in replicas.iter().chain([&j]) {
        match r.leave().await {
            Ok(()) | Err(RsmError::ShuttingDown) => {}
            Err(e) => println!("leave: {e}"),
        }
    }
    Ok(())
}
