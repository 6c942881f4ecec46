//! A test state machine and helpers for in-process replica tests.

#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use vsync_rsm::{
    Replica, ReplicaConfig, ReplicaStatus, RestoreError, Role, SnapshotImage, Start, StateMachine,
};

/// A state of pages (1 MiB each by default) shared by `Arc`, so that an
/// image is O(pages) pointer copies and a write copies only its page.
#[derive(Clone, Debug, Default)]
pub struct Pages {
    pub pages: Arc<Vec<Arc<Vec<u8>>>>,
    pub ops: u64,
    pub chain: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PageCmd {
    /// Appends `n` pages of `size` bytes filled from `seed`.
    Grow { n: u32, size: u32, seed: u64 },
    /// Writes `byte` at `offset` of page `page` (mod the page count).
    Write { page: u32, offset: u32, byte: u8 },
}

pub fn fnv(mut h: u64, b: &[u8]) -> u64 {
    if h == 0 {
        h = 0xcbf2_9ce4_8422_2325;
    }
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Pages {
    /// A digest of every byte.
    pub fn digest(&self) -> u64 {
        let mut h = fnv(0, &self.ops.to_le_bytes());
        h = fnv(h, &self.chain.to_le_bytes());
        for p in self.pages.iter() {
            // Sample every 64th byte plus the length: fast on 100 MB.
            h = fnv(h, &(p.len() as u64).to_le_bytes());
            for i in (0..p.len()).step_by(64) {
                h ^= u64::from(p[i]);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    pub fn bytes(&self) -> usize {
        self.pages.iter().map(|p| p.len()).sum()
    }
}

#[derive(Clone)]
pub struct PagesImage {
    pages: Arc<Vec<Arc<Vec<u8>>>>,
    head: Option<(u64, u64)>,
    next: usize,
}

impl SnapshotImage for PagesImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if let Some((ops, chain)) = self.head.take() {
            let mut v = vec![0u8];
            v.extend_from_slice(&ops.to_le_bytes());
            v.extend_from_slice(&chain.to_le_bytes());
            return Some(v);
        }
        let p = self.pages.get(self.next)?;
        self.next += 1;
        let mut v = Vec::with_capacity(p.len() + 1);
        v.push(1);
        v.extend_from_slice(p);
        Some(v)
    }
}

impl StateMachine for Pages {
    type Command = PageCmd;
    type Output = u64;
    type Image = PagesImage;

    fn apply(&mut self, cmd: PageCmd) -> u64 {
        self.ops += 1;
        let enc = postcard::to_stdvec(&cmd).unwrap_or_default();
        self.chain = fnv(self.chain, &enc);
        match cmd {
            PageCmd::Grow { n, size, seed } => {
                let pages = Arc::make_mut(&mut self.pages);
                for i in 0..n {
                    let mut x = seed ^ u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    let mut p = vec![0u8; size as usize];
                    for b in p.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *b = x as u8;
                    }
                    pages.push(Arc::new(p));
                }
            }
            PageCmd::Write { page, offset, byte } => {
                let n = self.pages.len();
                if n > 0 {
                    let pages = Arc::make_mut(&mut self.pages);
                    let p = Arc::make_mut(&mut pages[page as usize % n]);
                    if !p.is_empty() {
                        let len = p.len();
                        p[offset as usize % len] = byte;
                    }
                }
            }
        }
        self.chain
    }

    fn image(&self) -> PagesImage {
        PagesImage {
            pages: self.pages.clone(),
            head: Some((self.ops, self.chain)),
            next: 0,
        }
    }

    fn restore_begin(&mut self) {
        *self = Pages::default();
    }

    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        match chunk.split_first() {
            Some((0, rest)) if rest.len() == 16 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&rest[..8]);
                self.ops = u64::from_le_bytes(a);
                a.copy_from_slice(&rest[8..]);
                self.chain = u64::from_le_bytes(a);
                Ok(())
            }
            Some((1, rest)) => {
                Arc::make_mut(&mut self.pages).push(Arc::new(rest.to_vec()));
                Ok(())
            }
            _ => Err(RestoreError("unknown chunk".into())),
        }
    }
}

pub const SUSPECT_US: u64 = 400_000;

/// A free loopback port.
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Logs to stderr under `RUST_LOG` (once per test binary).
pub fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

pub fn config(
    node: u64,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    group: &str,
    start: Start,
) -> ReplicaConfig {
    init_log();
    let mut net = vsync_net::Config::new(node, listen, group);
    net.seeds = seeds;
    net.engine = vsync_core::Config::with_suspect_timeout(SUSPECT_US);
    let mut c = ReplicaConfig::new(net);
    c.start = start;
    c.transfer_timeout = Duration::from_secs(10);
    c
}

/// Starts a replica of `Pages` on a free port, with the configuration
/// `make` gives for it. [`free_port`] releases the port before the replica
/// binds it, so another process may take it in between (seen in CI:
/// `AddrInUse`): then it tries another port, up to five times.
pub async fn start_on_free_port(
    mut make: impl FnMut(SocketAddr) -> ReplicaConfig,
) -> (Replica<Pages>, SocketAddr, vsync_net::Faults) {
    let mut attempt = 0;
    loop {
        let addr = free_port();
        let cfg = make(addr);
        let faults = cfg.net.faults.clone();
        match Replica::start(cfg, Pages::default()).await {
            Ok(r) => return (r, addr, faults),
            Err(vsync_rsm::RsmError::Net(vsync_net::NetError::Bind { source, .. }))
                if source.kind() == std::io::ErrorKind::AddrInUse && attempt < 5 =>
            {
                attempt += 1;
                eprintln!("port {addr} was taken before the replica bound it; another");
            }
            Err(e) => panic!("start: {e:?}"),
        }
    }
}

/// Waits (bounded) for a status condition.
pub async fn wait<S: StateMachine>(
    r: &Replica<S>,
    what: &str,
    f: impl FnMut(&ReplicaStatus) -> bool,
) -> ReplicaStatus {
    match tokio::time::timeout(Duration::from_secs(30), r.wait_for(f)).await {
        Ok(s) => s,
        Err(_) => panic!("timed out waiting for {what}; status {:?}", r.status()),
    }
}

pub fn serving(s: &ReplicaStatus) -> bool {
    matches!(s.role, Role::Member | Role::Coordinator | Role::Donor)
}

/// Starts a group of `n` in-process replicas of `Pages`.
pub async fn group(n: u64, name: &str) -> (Vec<Replica<Pages>>, Vec<SocketAddr>) {
    let (rs, addrs, _) = group_with_faults(n, name).await;
    (rs, addrs)
}

/// Like [`group`], with each process's fault switch.
pub async fn group_with_faults(
    n: u64,
    name: &str,
) -> (Vec<Replica<Pages>>, Vec<SocketAddr>, Vec<vsync_net::Faults>) {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut rs = Vec::new();
    let mut faults = Vec::new();
    for i in 0..n {
        let start = if i == 0 { Start::Found } else { Start::Join };
        let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        let (r, addr, f) =
            start_on_free_port(|a| config(i + 1, a, seeds.clone(), name, start)).await;
        addrs.push(addr);
        faults.push(f);
        wait(&r, "membership", serving).await;
        rs.push(r);
    }
    for r in &rs {
        wait(r, "full view", |s| {
            s.members.len() == n as usize && serving(s)
        })
        .await;
    }
    (rs, addrs, faults)
}
