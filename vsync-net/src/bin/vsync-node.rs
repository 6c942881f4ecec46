//! `vsync-node`: one vsync process, driven from stdin, for tests and demos.
//!
//! ```text
//! vsync-node --node N [--listen 127.0.0.1:0] [--seed ADDR]... [--group G]
//!            [--history FILE] [--suspect-ms MS] [--inc INC] [--found]
//!            [--advertise ADDR] [--max-peer-queue BYTES] (--key FILE | --insecure)
//! vsync-node --keygen FILE
//! ```
//!
//! `--key FILE` makes the group closed (links authenticated and encrypted
//! with the cluster key in FILE); `--insecure` runs without one (a warning
//! is logged). One of them is required. `--keygen FILE` writes a new key
//! file and exits.
//!
//! Prints `LISTEN <addr>` and `PID <pid>` once bound, then one line per
//! event: `VIEW <view id> <pid>,<pid>,...`, `DELIVERED <total>` (at most
//! every 100 ms), `BLOCKED <view id>`, `REMOVED <view id>`, `LEFT <view id>`,
//! and the results of commands. Commands, one per line on stdin:
//!
//! - `send K [BYTES]`: multicast K payloads (of at least BYTES bytes) as
//!   fast as backpressure allows; prints `SENT K` when done.
//! - `leave`: leave cleanly; prints `LEAVE ok` (and `LEFT ...`).
//! - `cut N` / `heal N`: drop all traffic to and from node N / restore it.
//! - `exit` (or end of input): stop at once.
//!
//! On `REMOVED` it rejoins as a new incarnation (same node id, higher
//! incarnation, a new port), asking its seeds and every peer it knew, and
//! keeps appending to the same history file.

use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use vsync_core::NodeId;
use vsync_net::{Config, Event, Faults, Group, GroupHandle, Key, NetError, Security};

#[derive(Debug)]
struct Args {
    node: u64,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    group: String,
    history: Option<PathBuf>,
    suspect_ms: u64,
    inc: Option<u64>,
    found: bool,
    key: Option<PathBuf>,
    insecure: bool,
    advertise: Option<SocketAddr>,
    max_peer_queue: Option<usize>,
}

fn usage(msg: &str) -> ! {
    eprintln!("vsync-node: {msg}");
    eprintln!(
        "usage: vsync-node --node N [--listen ADDR] [--seed ADDR]... [--group G] \
         [--history FILE] [--suspect-ms MS] [--inc INC] [--found] [--advertise ADDR] \
         [--max-peer-queue BYTES] (--key FILE | --insecure)\n\
         \x20      vsync-node --keygen FILE"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        node: 0,
        listen: "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| usage("bad default")),
        seeds: Vec::new(),
        group: "vsync".into(),
        history: None,
        suspect_ms: 500,
        inc: None,
        found: false,
        key: None,
        insecure: false,
        advertise: None,
        max_peer_queue: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match flag.as_str() {
            "--node" => {
                a.node = val("--node")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --node"))
            }
            "--listen" => {
                a.listen = val("--listen")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --listen"))
            }
            "--seed" => a.seeds.push(
                val("--seed")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --seed")),
            ),
            "--group" => a.group = val("--group"),
            "--history" => a.history = Some(val("--history").into()),
            "--suspect-ms" => {
                a.suspect_ms = val("--suspect-ms")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --suspect-ms"))
            }
            "--inc" => a.inc = Some(val("--inc").parse().unwrap_or_else(|_| usage("bad --inc"))),
            "--found" => a.found = true,
            "--key" => a.key = Some(val("--key").into()),
            "--insecure" => a.insecure = true,
            "--advertise" => {
                a.advertise = Some(
                    val("--advertise")
                        .parse()
                        .unwrap_or_else(|_| usage("bad --advertise")),
                )
            }
            "--max-peer-queue" => {
                a.max_peer_queue = Some(
                    val("--max-peer-queue")
                        .parse()
                        .unwrap_or_else(|_| usage("bad --max-peer-queue")),
                )
            }
            "--keygen" => {
                let path = val("--keygen");
                match vsync_net::keygen(&path) {
                    Ok(_) => {
                        println!("wrote a new cluster key to {path}");
                        std::process::exit(0)
                    }
                    Err(e) => {
                        eprintln!("vsync-node: {e}");
                        std::process::exit(1)
                    }
                }
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.node == 0 {
        usage("--node is required (and not 0)");
    }
    match (&a.key, a.insecure) {
        (None, false) => usage(
            "give --key FILE (a cluster key, see --keygen) or --insecure (no authentication, no encryption)",
        ),
        (Some(_), true) => usage("--key and --insecure exclude each other"),
        _ => {}
    }
    a
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

fn config(
    a: &Args,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    inc: u64,
    faults: &Faults,
    security: &Security,
) -> Config {
    let mut c = Config::new(a.node, listen, a.group.clone());
    c.incarnation = Some(inc);
    c.seeds = seeds;
    c.history = a.history.clone();
    c.engine = vsync_core::Config::with_suspect_timeout(a.suspect_ms * 1000);
    c.faults = faults.clone();
    c.security = security.clone();
    if let Some(ad) = a.advertise {
        c.advertise = Some(ad);
    }
    if let Some(q) = a.max_peer_queue {
        c.max_peer_queue = q;
    }
    c
}

fn announce(h: &GroupHandle) {
    println!("LISTEN {}", h.local_addr());
    println!("PID {}", h.pid());
}

fn fail(e: NetError) -> ! {
    eprintln!("vsync-node: {e}");
    std::process::exit(1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let security = match &args.key {
        Some(path) => match Key::load(path) {
            Ok(k) => Security::Key(k),
            Err(e) => {
                eprintln!("vsync-node: {e}");
                std::process::exit(1)
            }
        },
        None => Security::Insecure,
    };
    let faults = Faults::new();
    let mut inc = args.inc.unwrap_or_else(now_ms);
    let cfg = config(
        &args,
        args.listen,
        args.seeds.clone(),
        inc,
        &faults,
        &security,
    );
    let started = if args.found {
        Group::found(cfg).await
    } else {
        Group::join(cfg).await
    };
    let mut handle = started.unwrap_or_else(|e| fail(e));
    announce(&handle);

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut delivered: u64 = 0;
    let mut printed: u64 = 0;
    let mut events_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                let Ok(Some(line)) = line else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["send", k, rest @ ..] => {
                        let Ok(k) = k.parse::<u64>() else {
                            println!("ERROR bad count");
                            continue;
                        };
                        let size: usize = rest.first().and_then(|s| s.parse().ok()).unwrap_or(0);
                        let sender = handle.sender();
                        let pid = handle.pid();
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            for i in 0..k {
                                let mut p = format!("{pid}:{i}").into_bytes();
                                if p.len() < size {
                                    p.resize(size, b'.');
                                }
                                if let Err(e) = sender.multicast(Bytes::from(p)).await {
                                    let _ = done.send(format!("SEND_FAILED {i} {e}"));
                                    return;
                                }
                            }
                            let _ = done.send(format!("SENT {k}"));
                        });
                    }
                    ["leave"] => {
                        let sender = handle.sender();
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let _ = done.send(match sender.leave().await {
                                Ok(()) => "LEAVE ok".to_string(),
                                Err(e) => format!("LEAVE failed {e}"),
                            });
                        });
                    }
                    ["cut", n] | ["heal", n] => {
                        let Ok(n) = n.parse::<u64>() else {
                            println!("ERROR bad node");
                            continue;
                        };
                        if words[0] == "cut" {
                            faults.cut(NodeId(n));
                            println!("CUT {n}");
                        } else {
                            faults.heal(NodeId(n));
                            println!("HEALED {n}");
                        }
                    }
                    ["exit"] => break,
                    [] => {}
                    _ => println!("ERROR unknown command {line}"),
                }
            }
            ev = handle.next_event(), if events_open => match ev {
                Some(Event::View { view, .. }) => {
                    if delivered != printed {
                        println!("DELIVERED {delivered}");
                        printed = delivered;
                    }
                    let members: Vec<String> = view.members.iter().map(|p| p.to_string()).collect();
                    println!("VIEW {} {}", view.id, members.join(","));
                }
                Some(Event::Deliver { .. }) => delivered += 1,
                Some(Event::Blocked { view }) => println!("BLOCKED {view}"),
                Some(Event::Removed { view }) => {
                    println!("REMOVED {view}");
                    // Rejoin as a new incarnation, through every address we knew.
                    let mut seeds = args.seeds.clone();
                    for (_, a) in handle.known_peers() {
                        if !seeds.contains(&a) {
                            seeds.push(a);
                        }
                    }
                    inc = now_ms().max(inc + 1);
                    let mut listen = args.listen;
                    if listen.port() != 0 {
                        listen = handle.local_addr();
                    }
                    // Stop the old incarnation (it is finished) before the
                    // new one binds, in case it reuses the port.
                    handle.shutdown().await;
                    handle = Group::join(config(&args, listen, seeds, inc, &faults, &security))
                        .await
                        .unwrap_or_else(|e| fail(e));
                    events_open = true;
                    announce(&handle);
                }
                Some(Event::Left { view }) => println!("LEFT {view}"),
                Some(_) => {}
                None => events_open = false,
            },
            Some(line) = done_rx.recv() => println!("{line}"),
            _ = tick.tick() => {
                if delivered != printed {
                    println!("DELIVERED {delivered}");
                    printed = delivered;
                }
            }
        }
    }
    println!("DELIVERED {delivered}");
    println!("BYE");
    handle.shutdown().await;
}
