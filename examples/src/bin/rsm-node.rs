//! `rsm-node`: one replica of a journal or ledger, driven from stdin, for
//! the real-process tests (kill -9, partitions, total-failure recovery).
//!
//! ```text
//! rsm-node --node 1 --group g --listen 127.0.0.1:0 [--seeds a,b] [--data DIR]
//!          [--durability memory|logged] [--start auto|found|join|recover-found|recover]
//!          [--expect N] [--machine journal|ledger] [--suspect-ms 300]
//!          [--checkpoint-every N] (--key FILE | --insecure)
//! ```
//!
//! `--key FILE` closes the group with that cluster key; `--insecure` runs
//! without one (logged as a warning). One of them is required.
//!
//! Prints one line per fact: `READY <addr>`, `PID <pid>`, `VIEW <n> <members>`,
//! `ROLE <role> <position>`, `EVENT <debug>`, and answers to commands:
//! `record <start> <count>` (journal: `ACKED <id>` per acknowledged id, then
//! `RECORDED <ok> <failed>`), `transfer <count> <accounts>` (ledger: random
//! transfers, then `TRANSFERRED <ok> <failed>`), `init <accounts> <balance>`,
//! `verify <file>` (journal: `MISSING <n>` ids of the file absent), `state`
//! (`STATE <position> <digest> <size> <total>`), `checkpoint`
//! (`CHECKPOINTED`), `cut <node>` / `heal` (faults), `leave` (`LEFT`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use vsync_examples::rsm::journal::{Journal, Record};
use vsync_examples::rsm::ledger::{Ledger, LedgerCmd, LedgerOutput};
use vsync_rsm::{Durability, Replica, ReplicaConfig, ReplicaEvent, Role, Start, StateMachine};

struct Args {
    node: u64,
    group: String,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    data: Option<std::path::PathBuf>,
    durability: Durability,
    start: String,
    expect: usize,
    machine: String,
    suspect_ms: u64,
    checkpoint_every: u64,
    security: Option<vsync_net::Security>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        node: 0,
        group: "rsm".into(),
        listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        seeds: Vec::new(),
        data: None,
        durability: Durability::Memory,
        start: "join".into(),
        expect: 1,
        machine: "journal".into(),
        suspect_ms: 300,
        checkpoint_every: 100_000,
        security: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--insecure" {
            if a.security.is_some() {
                return Err("--key and --insecure exclude each other".into());
            }
            a.security = Some(vsync_net::Security::Insecure);
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad value for {k}: {e}");
        match k.as_str() {
            "--node" => a.node = v.parse().map_err(|e| bad(&e))?,
            "--group" => a.group = v,
            "--listen" => a.listen = v.parse().map_err(|e| bad(&e))?,
            "--seeds" => {
                a.seeds = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?
            }
            "--data" => a.data = Some(v.into()),
            "--durability" => {
                a.durability = match v.as_str() {
                    "memory" => Durability::Memory,
                    "logged" => Durability::Logged,
                    _ => return Err(format!("--durability is memory or logged, not {v}")),
                }
            }
            "--start" => a.start = v,
            "--expect" => a.expect = v.parse().map_err(|e| bad(&e))?,
            "--machine" => a.machine = v,
            "--suspect-ms" => a.suspect_ms = v.parse().map_err(|e| bad(&e))?,
            "--checkpoint-every" => a.checkpoint_every = v.parse().map_err(|e| bad(&e))?,
            "--key" => {
                if a.security.is_some() {
                    return Err("--key and --insecure exclude each other".into());
                }
                let k = vsync_net::Key::load(&v).map_err(|e| e.to_string())?;
                a.security = Some(vsync_net::Security::Key(k));
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.node == 0 {
        return Err("--node is required".into());
    }
    if a.security.is_none() {
        return Err(
            "give --key FILE (a cluster key) or --insecure (no authentication, no encryption)"
                .into(),
        );
    }
    Ok(a)
}

fn config(a: &Args) -> Result<ReplicaConfig, String> {
    let mut net = vsync_net::Config::new(a.node, a.listen, a.group.clone());
    net.seeds = a.seeds.clone();
    net.engine = vsync_core::Config::with_suspect_timeout(a.suspect_ms * 1000);
    net.security = a.security.clone().unwrap_or_default();
    let mut c = ReplicaConfig::new(net);
    c.data_dir = a.data.clone();
    c.durability = a.durability;
    c.checkpoint_every = a.checkpoint_every;
    c.checkpoint_interval = Duration::from_secs(2);
    c.transfer_timeout = Duration::from_secs(5);
    c.start = match a.start.as_str() {
        "auto" => Start::Auto,
        "found" => Start::Found,
        "join" => Start::Join,
        "recover-found" => Start::Recover {
            found: true,
            expect: a.expect,
        },
        "recover" => Start::Recover {
            found: false,
            expect: a.expect,
        },
        s => {
            return Err(format!(
                "--start is auto, found, join, recover-found or recover, not {s}"
            ));
        }
    };
    Ok(c)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rsm-node: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rsm-node: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(async {
        match args.machine.as_str() {
            "journal" => run(&args, Journal::default()).await,
            "ledger" => run(&args, Ledger::default()).await,
            m => Err(format!("--machine is journal or ledger, not {m}")),
        }
    });
    if let Err(e) = r {
        eprintln!("rsm-node: {e}");
        std::process::exit(1);
    }
}

/// What the node does with each machine.
trait NodeMachine: StateMachine + Sized {
    fn state(&self) -> String;
    fn command(r: &Replica<Self>, words: &[&str]) -> Option<tokio::task::JoinHandle<()>>;
}

impl NodeMachine for Journal {
    fn state(&self) -> String {
        format!("{:#x} {} 0", self.digest(), self.len())
    }

    fn command(r: &Replica<Self>, words: &[&str]) -> Option<tokio::task::JoinHandle<()>> {
        match words {
            ["record", start, count] => {
                let (start, count): (u64, u64) = (start.parse().ok()?, count.parse().ok()?);
                let r = r.clone();
                Some(tokio::spawn(async move {
                    let sem = Arc::new(Semaphore::new(32));
                    let mut tasks = Vec::new();
                    for id in start..start + count {
                        let Ok(p) = sem.clone().acquire_owned().await else {
                            break;
                        };
                        let r = r.clone();
                        tasks.push(tokio::spawn(async move {
                            let res = r.execute(Record(id)).await;
                            drop(p);
                            match res {
                                Ok(_) => {
                                    println!("ACKED {id}");
                                    true
                                }
                                Err(_) => false,
                            }
                        }));
                    }
                    let (mut ok, mut failed) = (0, 0);
                    for t in tasks {
                        if matches!(t.await, Ok(true)) {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                    println!("RECORDED {ok} {failed}");
                }))
            }
            ["verify", file] => {
                let ids: Vec<u64> = std::fs::read_to_string(file)
                    .ok()?
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                let r = r.clone();
                Some(tokio::spawn(async move {
                    match r
                        .read(move |j: &Journal| ids.iter().filter(|id| !j.contains(**id)).count())
                        .await
                    {
                        Ok(n) => println!("MISSING {n}"),
                        Err(e) => println!("ERROR {e}"),
                    }
                }))
            }
            _ => None,
        }
    }
}

impl NodeMachine for Ledger {
    fn state(&self) -> String {
        format!("{:#x} {} {}", self.digest(), self.len(), self.total())
    }

    fn command(r: &Replica<Self>, words: &[&str]) -> Option<tokio::task::JoinHandle<()>> {
        match words {
            ["init", accounts, balance] => {
                let cmd = LedgerCmd::Init {
                    accounts: accounts.parse().ok()?,
                    balance: balance.parse().ok()?,
                };
                let r = r.clone();
                Some(tokio::spawn(async move {
                    match r.execute(cmd).await {
                        Ok(o) => println!("INIT {o:?}"),
                        Err(e) => println!("ERROR {e}"),
                    }
                }))
            }
            ["transfer", count, accounts] => {
                let (count, accounts): (u64, u32) = (count.parse().ok()?, accounts.parse().ok()?);
                let r = r.clone();
                Some(tokio::spawn(async move {
                    let sem = Arc::new(Semaphore::new(32));
                    let mut tasks = Vec::new();
                    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
                    for _ in 0..count {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let from = (x % u64::from(accounts.max(1))) as u32;
                        let to = ((x >> 20) % u64::from(accounts.max(1))) as u32;
                        let amount = ((x >> 40) % 50) as i64 + 1;
                        let Ok(p) = sem.clone().acquire_owned().await else {
                            break;
                        };
                        let r = r.clone();
                        tasks.push(tokio::spawn(async move {
                            let res = r.execute(LedgerCmd::Transfer { from, to, amount }).await;
                            drop(p);
                            matches!(res, Ok(LedgerOutput::Ok | LedgerOutput::Refused(_)))
                        }));
                    }
                    let (mut ok, mut failed) = (0, 0);
                    for t in tasks {
                        if matches!(t.await, Ok(true)) {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                    println!("TRANSFERRED {ok} {failed}");
                }))
            }
            _ => None,
        }
    }
}

async fn run<S: NodeMachine>(args: &Args, machine: S) -> Result<(), String> {
    let cfg = config(args)?;
    let faults = cfg.net.faults.clone();
    let r = Replica::start(cfg, machine)
        .await
        .map_err(|e| e.to_string())?;
    let st = r.status();
    println!("PID {}", st.pid.map(|p| p.to_string()).unwrap_or_default());
    if let Some(reason) = &st.checkpoint_rejected {
        println!("REJECTED {reason}");
    }
    // Status and events, printed as they change.
    let mut events = r.events();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            match &ev {
                ReplicaEvent::View { .. } => {} // printed from the status
                ReplicaEvent::Rejoined { pid } => println!("PID {pid}"),
                ReplicaEvent::CheckpointRejected { reason } => println!("REJECTED {reason}"),
                other => println!("EVENT {other:?}"),
            }
        }
    });
    let r2 = r.clone();
    tokio::spawn(async move {
        let mut last = (Role::Stopped, u64::MAX);
        let mut last_view = None;
        loop {
            let s = r2.status();
            let vid = s.view.as_ref().map(|v| v.id);
            if vid != last_view {
                if let Some(v) = &s.view {
                    let m: Vec<String> = v.members.iter().map(|p| p.to_string()).collect();
                    println!("VIEW {} {}", v.id, m.join(","));
                }
                last_view = vid;
            }
            if (s.role, s.position) != last
                && (s.role != last.0 || s.position / 100 != last.1 / 100)
            {
                println!("ROLE {:?} {}", s.role, s.position);
                last = (s.role, s.position);
            }
            if s.role == Role::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    println!("READY");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["state"] => match r.read(|s: &S| s.state()).await {
                Ok(s) => println!("STATE {} {s}", r.status().position),
                Err(e) => println!("ERROR {e}"),
            },
            ["ostate"] => match r.read_ordered(|s: &S| s.state()).await {
                Ok(s) => println!("OSTATE {s}"),
                Err(e) => println!("ERROR {e}"),
            },
            ["checkpoint"] => match r.checkpoint().await {
                Ok(()) => println!("CHECKPOINTED {}", r.status().position),
                Err(e) => println!("ERROR {e}"),
            },
            ["cut", node] => {
                if let Ok(n) = node.parse::<u64>() {
                    faults.cut(vsync_core::NodeId(n));
                    println!("CUT {n}");
                }
            }
            ["heal"] => {
                faults.heal_all();
                println!("HEALED");
            }
            ["leave"] => {
                let res = r.leave().await;
                println!("LEFT {res:?}");
                break;
            }
            w => {
                if S::command(&r, w).is_none() {
                    println!("ERROR unknown command: {line}");
                }
            }
        }
    }
    Ok(())
}
