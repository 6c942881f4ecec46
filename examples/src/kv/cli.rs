//! The `vsync-kv` command line: `node`, `demo`, `status`, `timeline` and
//! `keygen`.
//!
//! Guarantees: bad arguments get clap's usage message; every failure at run
//! time is a one-line message saying what to do (never a panic). `node`
//! prints one JSON line on standard output once it serves
//! (`{"ready":true,"resp":...,"listen":...,"http":...}`), so scripts and
//! tests can use OS-picked ports (`127.0.0.1:0`).

use crate::kv::backend::{Backend, Standalone};
use crate::kv::metrics::Metrics;
use crate::kv::resp::Limits;
use crate::kv::server::{self, ServerConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A Redis-protocol key-value server replicated with virtual synchrony.
#[derive(Debug, Parser)]
#[command(name = "vsync-kv", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one replica.
    Node(Box<NodeArgs>),
    /// Start a 3-replica cluster on this machine and walk through it.
    Demo(DemoArgs),
    /// Print a replica's view, members, position and role.
    Status(StatusArgs),
    /// List the members of a replica's view: process, address, role.
    Members(MembersArgs),
    /// Remove a member from the group through a view change (as if it had
    /// failed); if it is alive it learns it and rejoins as a new
    /// incarnation. Stop a replica to make it leave for good.
    Evict(EvictArgs),
    /// Write a new cluster key file (64 hex characters, mode 0600): copy it
    /// to every replica and start each with `--key FILE`.
    Keygen(KeygenArgs),
    /// Draw history files (`node --history`) as one timeline picture (SVG,
    /// or HTML for an `.html` output); `vsync-kv timeline --help` for the
    /// options.
    #[command(disable_help_flag = true)]
    Timeline {
        /// `FILES... -o OUT [--from MS --to MS] [--html] ...`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// How a replica persists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// State in memory; checkpoints (if any) on disk.
    Memory,
    /// Every applied command logged to disk before it is acknowledged.
    Logged,
}

/// What a split cluster does (see docs/PROTOCOL.md, "Partitions").
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PartitionPolicyArg {
    /// Only a side holding a majority of the last view goes on; the others
    /// refuse writes (MINORITY) until the heal. No acknowledged write is
    /// ever lost.
    Primary,
    /// Every side goes on and accepts writes. After the heal the sides
    /// merge: the larger side wins (then the lowest node id), and the
    /// writes the other sides took since the split are discarded (logged
    /// and counted in INFO).
    Partitionable,
}

/// Where reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadsArg {
    /// From the local replica (fast; may miss writes still in flight
    /// elsewhere).
    Local,
    /// At a position in the group's total order (sees every write
    /// acknowledged before the read started).
    Ordered,
}

/// How `vsync-kv node` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// `vsync-kv node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// This node's id, unique in the cluster.
    #[arg(long, env = "VSYNC_KV_ID")]
    pub id: u64,
    /// Address for the replicas' own traffic (port 0: any free port).
    #[arg(long, env = "VSYNC_KV_LISTEN")]
    pub listen: SocketAddr,
    /// The address the other replicas dial to reach this one, when it
    /// differs from `--listen` (which may then be `0.0.0.0:PORT`, or
    /// `[::]:PORT`): behind NAT, in a container, on a host with several
    /// interfaces. Recorded in the others' last views, so keep it stable.
    #[arg(long, env = "VSYNC_KV_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Address for Redis clients (port 0: any free port).
    #[arg(long, env = "VSYNC_KV_RESP")]
    pub resp: SocketAddr,
    /// Directory for this replica's checkpoints and log.
    #[arg(long, env = "VSYNC_KV_DATA")]
    pub data: PathBuf,
    /// The `--listen` address of a running replica to join through (repeat
    /// for several). With an empty data directory and no seed, a new
    /// cluster is founded. A data directory that holds state is never
    /// founded over: the replica rejoins the members of its last view (and
    /// the seeds), or recovers with them if the whole cluster is down.
    #[arg(long = "seed", env = "VSYNC_KV_SEED", value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Persistence.
    #[arg(
        long,
        value_enum,
        default_value = "memory",
        env = "VSYNC_KV_DURABILITY"
    )]
    pub durability: DurabilityArg,
    /// Address for `/metrics` and `/status` over HTTP.
    #[arg(long, env = "VSYNC_KV_HTTP")]
    pub http: Option<SocketAddr>,
    /// Where reads are served.
    #[arg(long, value_enum, default_value = "local", env = "VSYNC_KV_READS")]
    pub reads: ReadsArg,
    /// The cluster's name; replicas of different clusters refuse each other.
    #[arg(long, default_value = "vsync-kv", env = "VSYNC_KV_GROUP")]
    pub group: String,
    /// Take a checkpoint after this many applied commands (0: only on
    /// `SAVE` and at the interval). Every checkpoint serialises the whole
    /// data set: under a heavy write load the interval (`--checkpoint-secs`)
    /// usually comes first, as with Redis' `save 60 10000`.
    #[arg(long, default_value_t = 1_000_000, env = "VSYNC_KV_CHECKPOINT_EVERY")]
    pub checkpoint_every: u64,
    /// Take a checkpoint at least this often, in seconds (0: never by time).
    #[arg(long, default_value_t = 60, env = "VSYNC_KV_CHECKPOINT_SECS")]
    pub checkpoint_secs: u64,
    /// Largest bulk string a client may send, in bytes.
    #[arg(long, default_value_t = crate::kv::resp::DEFAULT_MAX_BULK, env = "VSYNC_KV_MAX_BULK")]
    pub max_bulk: usize,
    /// How long a silent replica may be before it is suspected, in ms.
    #[arg(long, default_value_t = 1000, env = "VSYNC_KV_SUSPECT_TIMEOUT_MS")]
    pub suspect_timeout_ms: u64,
    /// Override for a whole-cluster outage in which a replica is gone for
    /// good: load this node's checkpoint and log, then choose the most
    /// recent state once this many replicas are present (without the flag,
    /// recovery is automatic and waits for every replica of the last
    /// view). Without `--seed`, this node founds the recovering cluster.
    /// What only the missing replicas held is lost.
    #[arg(long, value_name = "EXPECT", conflicts_with = "found_new_cluster")]
    pub recover: Option<usize>,
    /// Found a new, empty cluster even though the data directory holds
    /// data: the directory is first renamed to `DIR.old-<unix ms>` (never
    /// deleted). Without this flag a replica with data always rejoins its
    /// cluster.
    #[arg(long)]
    pub found_new_cluster: bool,
    /// How long a restarting replica asks its last view's members to admit
    /// it before it concludes the whole cluster is down and recovers, in ms.
    #[arg(long, default_value_t = 3000, env = "VSYNC_KV_RESTART_WAIT_MS")]
    pub restart_wait_ms: u64,
    /// How many of the last writes this replica keeps in memory so that a
    /// restarted replica that is fewer writes behind receives only those
    /// (a catch-up) instead of the whole data set. 0: always the whole set.
    #[arg(long, default_value_t = 1_000_000, env = "VSYNC_KV_CATCH_UP_WRITES")]
    pub catch_up_writes: u64,
    /// The same, in MiB of writes.
    #[arg(long, default_value_t = 64, env = "VSYNC_KV_CATCH_UP_MIB")]
    pub catch_up_mib: usize,
    /// Append this replica's history (views, sends, deliveries) to this
    /// file as JSON lines, for `vsync-kv timeline` and the checker.
    #[arg(long, env = "VSYNC_KV_HISTORY")]
    pub history: Option<PathBuf>,
    /// Serve an unreplicated in-memory data set instead (measures the
    /// RESP front end alone; not for real use).
    #[arg(long, hide = true)]
    pub standalone: bool,
    /// The cluster key file (`vsync-kv keygen FILE`): links between
    /// replicas are authenticated and encrypted with it, and a process
    /// without it cannot join. Required unless `--insecure`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "insecure",
        env = "VSYNC_KV_KEY"
    )]
    pub key: Option<PathBuf>,
    /// Run without a cluster key: links between replicas are neither
    /// authenticated nor encrypted (anyone who can reach `--listen` can
    /// join). Logged as a warning. Only for trusted networks and tests.
    #[arg(long, env = "VSYNC_KV_INSECURE")]
    pub insecure: bool,
    /// At most this many Redis clients at once; one more is answered
    /// `-ERR max number of clients reached`.
    #[arg(long, default_value_t = crate::kv::server::DEFAULT_MAX_CLIENTS, env = "VSYNC_KV_MAX_CLIENTS")]
    pub max_clients: usize,
    /// The largest state, in bytes, this replica accepts by state transfer
    /// when it joins; a larger one is refused and the replica stops (see
    /// `vsync_rsm::ReplicaConfig::max_transfer`).
    #[arg(long, default_value_t = 16 << 30, env = "VSYNC_KV_MAX_TRANSFER")]
    pub max_transfer: u64,
    /// What the cluster does when it splits: `primary` (a minority side
    /// refuses writes; nothing acknowledged is lost) or `partitionable`
    /// (every side accepts writes; after the heal the losing side's writes
    /// since the split are discarded, logged and counted). Give every
    /// replica the same policy.
    #[arg(
        long,
        value_enum,
        default_value = "primary",
        env = "VSYNC_KV_PARTITION_POLICY"
    )]
    pub partition_policy: PartitionPolicyArg,
    /// Accept `DEBUG CUT <node>...` (drop all traffic between this replica
    /// and those nodes) and `DEBUG HEAL` from Redis clients, to make
    /// partitions on purpose. For tests and demos only: anyone who can
    /// reach the RESP port can then cut the replica off.
    #[arg(long, env = "VSYNC_KV_FAULT_INJECTION")]
    pub fault_injection: bool,
    /// Worker threads of the node's async runtime. 1 (the default) runs
    /// one event loop, like Redis: the least CPU per command (+20% SET
    /// throughput with three replicas and the client sharing 2 cores,
    /// docs/BENCHMARKS.md). 0: one per CPU.
    #[arg(long, default_value_t = 1, env = "VSYNC_KV_THREADS")]
    pub threads: usize,
    /// A password Redis clients must give (`AUTH`, or `HELLO 2 AUTH
    /// default PASSWORD`) before any other command, as Redis' `requirepass`.
    /// Prefer the environment variable or the config file to the flag: a
    /// flag is visible to every user in the process list.
    #[arg(long, env = "VSYNC_KV_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Log format on standard error: `text` (for people) or `json` (one
    /// object per line, for log pipelines). The level is `info` (view
    /// changes, removals, state transfers, recoveries: one line each);
    /// `RUST_LOG` overrides it (e.g. `RUST_LOG=warn`, `RUST_LOG=debug`).
    #[arg(long, value_enum, default_value = "text", env = "VSYNC_KV_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Read options from this TOML file (keys are the long option names,
    /// e.g. `listen = "10.0.0.1:7001"`, `seed = ["10.0.0.2:7001"]`,
    /// `insecure = true`). Precedence: a flag, then its `VSYNC_KV_...`
    /// environment variable, then this file, then the default.
    /// `--recover` and `--found-new-cluster` are flags only: one-time
    /// operator actions never come from a file.
    #[arg(long, value_name = "FILE", env = "VSYNC_KV_CONFIG")]
    pub config: Option<PathBuf>,
}

impl NodeArgs {
    /// How the replica's links are protected, as `--key` / `--insecure`
    /// say; `Err` (the message to print) if neither is given or the key
    /// file cannot be loaded.
    pub fn security(&self) -> Result<vsync_net::Security, String> {
        match (&self.key, self.insecure) {
            (Some(path), _) => vsync_net::Key::load(path)
                .map(vsync_net::Security::Key)
                .map_err(|e| e.to_string()),
            (None, true) => Ok(vsync_net::Security::Insecure),
            (None, false) => Err(
                "give --key FILE (a cluster key; create one with `vsync-kv keygen FILE` and copy it to every replica) or --insecure (no authentication, no encryption)"
                    .into(),
            ),
        }
    }
}

/// `vsync-kv keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// The file to create (never overwritten).
    pub path: PathBuf,
}

/// `vsync-kv demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep the temporary data directories (their path is printed).
    #[arg(long)]
    pub keep: bool,
    /// Do not pause between steps.
    #[arg(long)]
    pub fast: bool,
}

/// `vsync-kv members`.
#[derive(Debug, Clone, Args)]
pub struct MembersArgs {
    /// A replica's RESP address.
    #[arg(long)]
    pub resp: SocketAddr,
}

/// `vsync-kv evict`.
#[derive(Debug, Clone, Args)]
pub struct EvictArgs {
    /// A replica's RESP address (any member but the one evicted).
    #[arg(long)]
    pub resp: SocketAddr,
    /// The node id of the member to remove.
    #[arg(long)]
    pub node: u64,
}

/// `vsync-kv status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The replica's RESP address.
    #[arg(long)]
    pub resp: SocketAddr,
    /// Print the raw `INFO vsync` fields instead.
    #[arg(long)]
    pub raw: bool,
    /// Wait up to this many seconds for the replica to be ready (a serving
    /// member) before reporting; 0: report at once.
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
}

/// Runs the parsed command line; `Err` is the message to print.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Node(a) => {
            let rt = runtime(a.threads).map_err(|e| format!("cannot start the runtime: {e}"))?;
            rt.block_on(run_node(*a))
        }
        Cmd::Demo(a) => crate::kv::demo::run(a),
        Cmd::Status(a) => status(&a),
        Cmd::Members(a) => {
            let lines = resp_call(a.resp, &["VSYNC", "MEMBERS"], Duration::from_secs(3))?;
            println!("{lines}");
            Ok(())
        }
        Cmd::Evict(a) => {
            let r = RespConn::connect(a.resp, Duration::from_secs(3))?
                .pipeline(&[vec!["VSYNC".into(), "EVICT".into(), a.node.to_string()]])?
                .pop()
                .ok_or("no reply")?;
            let done = r.map_err(|e| format!("the replica refused: {e}"))?;
            println!("{done}");
            Ok(())
        }
        Cmd::Keygen(a) => {
            vsync_net::keygen(&a.path).map_err(|e| e.to_string())?;
            println!(
                "wrote a new cluster key to {} (readable by you only): copy it to every replica and start each with --key {}",
                a.path.display(),
                a.path.display()
            );
            Ok(())
        }
        Cmd::Timeline { args } => vsync_core::timeline::cli::run(&args)
            .map(|line| println!("{line}"))
            .map_err(|e| e.to_string()),
    }
}

/// The node's async runtime with `threads` workers (0: one per CPU, 1: a
/// single-threaded runtime).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// The server settings a node's arguments ask for.
pub fn server_config(a: &NodeArgs) -> ServerConfig {
    ServerConfig {
        limits: Limits {
            max_bulk: a.max_bulk,
            ..Limits::default()
        },
        ordered_reads: a.reads == ReadsArg::Ordered,
        max_clients: a.max_clients,
        password: a.requirepass.clone(),
        ..ServerConfig::default()
    }
}

/// Runs one replica until SIGTERM or Ctrl-C, then leaves cleanly (within
/// [`LEAVE_DEADLINE`]; a second signal exits at once).
pub async fn run_node(a: NodeArgs) -> Result<(), String> {
    if a.standalone {
        return serve_until_signal(a, Standalone::new()).await;
    }
    // Checked before anything starts (the replica reads it again).
    a.security()?;
    let backend = crate::kv::replica::start(&a).await?;
    serve_until_signal(a, backend).await
}

/// Binds the RESP and HTTP listeners, announces them, serves until a
/// signal, drains the connections, then leaves the group.
pub async fn serve_until_signal<B: Backend>(a: NodeArgs, backend: B) -> Result<(), String> {
    let resp = tokio::net::TcpListener::bind(a.resp)
        .await
        .map_err(|e| format!("cannot listen for Redis clients on {}: {e}", a.resp))?;
    let resp_addr = resp.local_addr().map_err(|e| e.to_string())?;
    let http = match a.http {
        None => None,
        Some(h) => Some(
            tokio::net::TcpListener::bind(h)
                .await
                .map_err(|e| format!("cannot listen for HTTP on {h}: {e}"))?,
        ),
    };
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = watch::channel(false);
    let http_task = http.map(|l| {
        tokio::spawn(crate::kv::http::serve(
            l,
            backend.clone(),
            metrics.clone(),
            resp_addr.to_string(),
            rx.clone(),
        ))
    });
    let ready = serde_json::json!({
        "ready": true,
        "node": a.id,
        "resp": resp_addr.to_string(),
        "listen": backend.group_addr().map(|x| x.to_string()),
        "http": http_addr.map(|x| x.to_string()),
    });
    println!("{ready}");
    let _ = std::io::stdout().flush();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: finishing requests in flight, then leaving the group");
        let _ = tx.send(true);
        // A second signal means "now": stop without the clean leave.
        wait_for_signal().await;
        eprintln!("second signal: exiting at once (the others will see a failure, not a leave)");
        std::process::exit(130);
    });
    server::serve(resp, backend.clone(), server_config(&a), metrics, rx).await;
    // However the leave goes, the process ends: a stuck leave must not keep
    // a stopped node alive.
    let left = tokio::time::timeout(LEAVE_DEADLINE, backend.leave()).await;
    if let Some(t) = http_task {
        let _ = t.await;
    }
    match left {
        Ok(r) => r.map_err(|e| format!("could not leave the group cleanly: {e}")),
        Err(_) => Err(format!(
            "could not leave the group cleanly within {} s; exiting anyway (the others will \
             remove this node as failed)",
            LEAVE_DEADLINE.as_secs()
        )),
    }
}

/// How long a stopping node tries to leave cleanly before it exits anyway.
const LEAVE_DEADLINE: Duration = Duration::from_secs(20);

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A minimal blocking RESP client (for `status` and the demo).
#[derive(Debug)]
pub struct RespConn {
    addr: SocketAddr,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl RespConn {
    /// Connects with `timeout` for connecting and for each reply.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, String> {
        let s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut c = RespConn {
            addr,
            r: BufReader::new(s),
            w,
        };
        // As redis-cli does: a password in REDISCLI_AUTH is sent first.
        if let Ok(pass) = std::env::var("REDISCLI_AUTH") {
            c.call(&["AUTH", &pass])
                .map_err(|e| format!("{addr} refused the password in REDISCLI_AUTH: {e}"))?;
        }
        Ok(c)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Result<String, String> {
        self.pipeline(&[args.iter().map(|a| a.to_string()).collect()])?
            .pop()
            .ok_or_else(|| "no reply".to_string())?
    }

    /// Sends all `cmds` in one write, then reads one reply per command:
    /// the outer `Err` is a connection failure, an inner one an error reply.
    pub fn pipeline(
        &mut self,
        cmds: &[Vec<String>],
    ) -> Result<Vec<Result<String, String>>, String> {
        let mut req = String::new();
        for args in cmds {
            req.push_str(&format!("*{}\r\n", args.len()));
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        }
        let addr = self.addr;
        self.w
            .write_all(req.as_bytes())
            .map_err(|e| format!("cannot send to {addr}: {e}"))?;
        (0..cmds.len()).map(|_| self.reply()).collect()
    }

    fn reply(&mut self) -> Result<Result<String, String>, String> {
        let addr = self.addr;
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => return Err(format!("{addr} closed the connection")),
            Ok(_) => {}
            Err(e) => return Err(format!("no reply from {addr}: {e}")),
        }
        let line = line.trim_end();
        match line.split_at_checked(1) {
            Some(("+", rest)) | Some((":", rest)) => Ok(Ok(rest.to_string())),
            Some(("-", rest)) => Ok(Err(rest.to_string())),
            Some(("$", "-1")) => Ok(Ok(String::new())),
            Some(("$", n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("bad reply from {addr}: {line}"))?;
                let mut buf = vec![0; n + 2];
                self.r
                    .read_exact(&mut buf)
                    .map_err(|e| format!("short reply from {addr}: {e}"))?;
                buf.truncate(n);
                Ok(Ok(String::from_utf8_lossy(&buf).into_owned()))
            }
            _ => Err(format!("unexpected reply from {addr}: {line}")),
        }
    }
}

/// Sends one command over a new connection and returns the reply's text
/// (a bulk, integer or status reply); an error reply becomes `Err`.
pub fn resp_call(addr: SocketAddr, args: &[&str], timeout: Duration) -> Result<String, String> {
    RespConn::connect(addr, timeout)?.call(args)
}

/// The `vsync_*` fields of `INFO vsync`, without the prefix.
pub fn vsync_info(addr: SocketAddr) -> Result<Vec<(String, String)>, String> {
    let text = resp_call(addr, &["INFO", "vsync"], Duration::from_secs(3))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("vsync_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// `vsync-kv status`: prints where the replica stands; exits non-zero
/// (the reason on stderr) when it is not ready to serve writes, so that
/// scripts can wait on it (`--wait SECS`).
fn status(a: &StatusArgs) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(a.wait);
    let mut fields = vsync_info(a.resp);
    while std::time::Instant::now() < deadline
        && !fields
            .as_ref()
            .is_ok_and(|f| f.iter().any(|(k, v)| k == "ready" && v == "yes"))
    {
        std::thread::sleep(Duration::from_millis(100));
        fields = vsync_info(a.resp);
    }
    let fields = fields?;
    let ready = fields.iter().any(|(k, v)| k == "ready" && v == "yes");
    let reason = fields
        .iter()
        .find(|(k, _)| k == "not_ready_reason")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    print_status(a, &fields);
    if ready {
        Ok(())
    } else {
        Err(format!("not ready: {reason}"))
    }
}

fn print_status(a: &StatusArgs, fields: &[(String, String)]) {
    if a.raw {
        for (k, v) in fields {
            println!("{k}: {v}");
        }
        return;
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    };
    println!(
        "replica   {} (node {}) at {}",
        get("pid"),
        get("node"),
        a.resp
    );
    println!("view      {}", get("view"));
    println!(
        "members   {} ({})",
        get("members").replace(',', ", "),
        get("member_count")
    );
    println!("position  {} commands applied", get("position"));
    println!("role      {}", get("role"));
    println!(
        "partition {} (policy {})",
        get("partition"),
        get("partition_policy")
    );
    println!(
        "diverged  {} times, {} writes discarded; last: {}",
        get("divergences"),
        get("discarded_writes"),
        get("last_divergence")
    );
    println!("ready     {}", get("ready"));
}
