//! Benchmarks of replicated state machines (figures in docs/BENCHMARKS.md,
//! "Replicated state machines").
//!
//! ```text
//! cargo run -p vsync-rsm --release --example rsm-bench -- [execute|transfer|checkpoint|all]
//!     [--secs 5] [--inflight 512] [--durability memory|logged] [--gib 1] [--entries 1000000]
//! ```
//!
//! - `execute`: commands/s through `Replica::execute` with 3 replicas in
//!   one process over loopback TCP, `--inflight` concurrent executes spread
//!   over the replicas, in Memory and in Logged mode (sled, flushed before
//!   acknowledgement; `--durability` picks one). `RUST_LOG=info` shows the
//!   replicas' view changes.
//! - `transfer`: a joiner receives a `--gib` GiB state (1 MiB pages shared
//!   by `Arc`) while the group keeps serving; MB/s from the joiner's start
//!   to its first view as a member with the state restored.
//! - `checkpoint`: write and restore a checkpoint of a `--entries`-entry
//!   map (sled on disk, in a temporary directory).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vsync_rsm::store::Store;
use vsync_rsm::{
    Durability, Replica, ReplicaConfig, RestoreError, Role, SnapshotImage, Start, StateMachine,
};

/// A map of u64 to u64, shared by `Arc` (images are O(1); a write after an
/// image copies the map once, which the benchmark avoids).
#[derive(Clone, Default)]
struct Map(Arc<BTreeMap<u64, u64>>);

#[derive(Clone)]
struct MapImage {
    map: Arc<BTreeMap<u64, u64>>,
    after: Option<u64>,
    done: bool,
}

impl SnapshotImage for MapImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let lower = self.after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::with_capacity(16 * 8192);
        let mut n = 0;
        for (k, v) in self.map.range((lower, Bound::Unbounded)).take(8192) {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
            self.after = Some(*k);
            n += 1;
        }
        if n < 8192 {
            self.done = true;
        }
        Some(out)
    }
}

impl StateMachine for Map {
    type Command = (u64, u64);
    type Output = u64;
    type Image = MapImage;
    fn apply(&mut self, (k, v): (u64, u64)) -> u64 {
        Arc::make_mut(&mut self.0).insert(k, v);
        self.0.len() as u64
    }
    fn image(&self) -> MapImage {
        MapImage {
            map: self.0.clone(),
            after: None,
            done: false,
        }
    }
    fn restore_begin(&mut self) {
        self.0 = Arc::new(BTreeMap::new());
    }
    fn restore_chunk(&mut self, c: &[u8]) -> Result<(), RestoreError> {
        if c.len() % 16 != 0 {
            return Err(RestoreError("chunk not a multiple of 16 bytes".into()));
        }
        let m = Arc::make_mut(&mut self.0);
        for e in c.chunks_exact(16) {
            let mut k = [0u8; 8];
            let mut v = [0u8; 8];
            k.copy_from_slice(&e[..8]);
            v.copy_from_slice(&e[8..]);
            m.insert(u64::from_le_bytes(k), u64::from_le_bytes(v));
        }
        Ok(())
    }
}

/// Pages of 1 MiB shared by `Arc`: a large state whose image is cheap.
#[derive(Clone, Default)]
struct Pages(Arc<Vec<Arc<Vec<u8>>>>);

#[derive(Clone)]
struct PagesImage(Arc<Vec<Arc<Vec<u8>>>>, usize);

impl SnapshotImage for PagesImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let p = self.0.get(self.1)?;
        self.1 += 1;
        Some(p.to_vec())
    }
}

impl StateMachine for Pages {
    type Command = (u32, u8);
    type Output = ();
    type Image = PagesImage;
    fn apply(&mut self, (n, fill): (u32, u8)) {
        let v = Arc::make_mut(&mut self.0);
        for _ in 0..n {
            v.push(Arc::new(vec![fill; 1 << 20]));
        }
    }
    fn image(&self) -> PagesImage {
        PagesImage(self.0.clone(), 0)
    }
    fn restore_begin(&mut self) {
        self.0 = Arc::new(Vec::new());
    }
    fn restore_chunk(&mut self, c: &[u8]) -> Result<(), RestoreError> {
        Arc::make_mut(&mut self.0).push(Arc::new(c.to_vec()));
        Ok(())
    }
}

fn port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| {
            eprintln!("cannot find a free port: {e}");
            std::process::exit(1)
        })
}

fn config(
    node: u64,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    group: &str,
    start: Start,
) -> ReplicaConfig {
    let mut net = vsync_net::Config::new(node, listen, group);
    net.seeds = seeds;
    net.engine = vsync_core::Config::with_suspect_timeout(2_000_000);
    let mut c = ReplicaConfig::new(net);
    c.start = start;
    c
}

async fn serving<S: StateMachine>(r: &Replica<S>, n: usize) {
    r.wait_for(|s| {
        matches!(s.role, Role::Member | Role::Coordinator | Role::Donor) && s.members.len() == n
    })
    .await;
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn execute(durability: Durability, secs: u64, inflight: usize) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let addrs = [port(), port(), port()];
    let group = format!("bench-{durability:?}");
    let mut rs = Vec::new();
    for i in 0..3u64 {
        let (start, seeds) = if i == 0 {
            (Start::Found, vec![])
        } else {
            (Start::Join, vec![addrs[0]])
        };
        let mut c = config(i + 1, addrs[i as usize], seeds, &group, start);
        c.data_dir = Some(dir.path().join(format!("n{}", i + 1)));
        c.durability = durability;
        c.checkpoint_every = 0;
        c.checkpoint_interval = Duration::ZERO;
        let r = Replica::start(c, Map::default()).await?;
        serving(&r, i as usize + 1).await;
        rs.push(r);
    }
    for r in &rs {
        serving(r, 3).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..inflight {
        let r = rs[w % 3].clone();
        let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = w as u64;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match r.execute((k % 100_000, k)).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed());
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("execute on replica {} failed: {e}", w % 3 + 1);
                        }
                    }
                }
                k += inflight as u64;
            }
            lat
        }));
    }
    // Warm up for a second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d0 = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - d0;
    let el = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let m = rs[0].metrics();
    println!(
        "execute {durability:?}: {:.0} commands/s ({n} in {el:.2?}, {inflight} in flight over 3 replicas); latency p50 {:.2?} p99 {:.2?}; {} errors; replica 1: {} deliveries, {} log appends",
        n as f64 / el.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed),
        m.deliveries,
        m.log_appends,
    );
    for r in &rs {
        let _ = r.leave().await;
    }
    Ok(())
}

async fn transfer(gib: u64) -> Res<()> {
    let pages = (gib * 1024) as u32;
    let addrs = [port(), port(), port()];
    let mut net = config(1, addrs[0], vec![], "bench-transfer", Start::Found);
    net.net.max_pending_events = usize::MAX;
    let a = Replica::start(net, Pages::default()).await?;
    serving(&a, 1).await;
    let b = Replica::start(
        config(2, addrs[1], vec![addrs[0]], "bench-transfer", Start::Join),
        Pages::default(),
    )
    .await?;
    serving(&b, 2).await;
    let t = Instant::now();
    for chunk in 0..pages.div_ceil(64) {
        let n = 64.min(pages - chunk * 64);
        a.execute((n, chunk as u8)).await?;
    }
    println!(
        "built a {gib} GiB state ({pages} pages) in {:.2?}",
        t.elapsed()
    );
    // Keep the group serving during the transfer.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (a, stop, served) = (a.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if a.execute((0, 0)).await.is_ok() {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let t = Instant::now();
    let j = Replica::start(
        config(3, addrs[2], vec![addrs[0]], "bench-transfer", Start::Join),
        Pages::default(),
    )
    .await?;
    serving(&j, 3).await;
    let el = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let m = j.metrics();
    println!(
        "transfer: {} bytes in {el:.2?} = {:.0} MB/s (joiner start to member with the state); the group applied {} commands meanwhile",
        m.transfer_bytes_received,
        m.transfer_bytes_received as f64 / el.as_secs_f64() / 1e6,
        served.load(Ordering::Relaxed)
    );
    Ok(())
}

fn checkpoint(entries: u64) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut m = Map::default();
    {
        let map = Arc::make_mut(&mut m.0);
        for k in 0..entries {
            map.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), k);
        }
    }
    let w = store.write_checkpoint(entries, None, None, m.image())?;
    println!(
        "checkpoint write: {entries} entries, {} bytes in {} chunks, {:.2?}",
        w.meta.bytes, w.meta.chunks, w.took
    );
    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path())?;
    let mut back = Map::default();
    back.restore_begin();
    let meta = store
        .load_checkpoint(|c| back.restore_chunk(c))
        .map_err(|e| format!("restore: {e}"))?
        .ok_or("no checkpoint")?;
    let el = t.elapsed();
    assert_eq!(back.0.len() as u64, entries);
    println!(
        "checkpoint restore: {} entries at position {} in {el:.2?} (open, read, verify, rebuild the map)",
        back.0.len(),
        meta.position
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    // RUST_LOG=info shows the replicas' view changes (quiet by default).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str, d: u64| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let what = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map_or("all", |s| s.as_str());
    let secs = get("--secs", 5);
    let inflight = get("--inflight", 512) as usize;
    if what == "execute" || what == "all" {
        let only = args
            .iter()
            .position(|a| a == "--durability")
            .and_then(|i| args.get(i + 1));
        if only.is_none_or(|d| d == "memory") {
            execute(Durability::Memory, secs, inflight).await?;
        }
        if only.is_none_or(|d| d == "logged") {
            execute(Durability::Logged, secs, inflight).await?;
        }
    }
    if what == "checkpoint" || what == "all" {
        checkpoint(get("--entries", 1_000_000))?;
    }
    if what == "transfer" || what == "all" {
        transfer(get("--gib", 1)).await?;
    }
    Ok(())
}
