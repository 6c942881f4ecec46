//! The RESP front end: accepts connections and answers requests, sending
//! writes through the group and answering reads from the local replica.
//!
//! How a connection is served: every complete request already received is
//! parsed (up to [`ServerConfig::max_batch`]); consecutive writes are sent
//! as **one** replicated command (a pipeline of 16 SETs costs one
//! multicast), consecutive reads run in **one** read of the data set, and
//! the replies go back in request order in one socket write. A read that
//! follows a write on the same connection waits for that write, so a
//! client always reads its own writes. Each connection has at most one
//! command in flight; many connections are in flight at once, which is
//! what lets the group batch them.
//!
//! Guarantees: no input closes anything but its own connection. At most
//! [`ServerConfig::max_clients`] connections are served at once; one more is
//! answered `-ERR max number of clients reached` and closed. An unknown
//! command, wrong arity or bad option gets Redis' error and the connection
//! goes on; a malformed frame gets `-ERR Protocol error: ...` and that
//! connection is closed (the byte stream cannot be resynchronised, as in
//! Redis). On shutdown the listener stops, requests already being served
//! are finished and answered, then connections close.

use crate::kv::backend::{Backend, BackendMetrics, NodeStatus};
use crate::kv::command::{self, Request};
use crate::kv::machine::{KvCommand, KvStore, WriteOp, now_ms};
use crate::kv::metrics::Metrics;
use crate::kv::resp::{self, Limits};
use crate::kv::transaction::{TxState, encode_read, encode_result, to_op, watch_hash};
use bytes::{Bytes, BytesMut};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The default limit on client connections (Redis' `maxclients`).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// The reply to a client over the limit (Redis' text).
pub const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Request size limits.
    pub limits: Limits,
    /// Serve reads at a position in the group's order instead of locally.
    pub ordered_reads: bool,
    /// At most this many requests of one connection are handled together.
    pub max_batch: usize,
    /// A run of writes is cut into several replicated commands once its
    /// keys and values exceed this many bytes.
    pub max_command_bytes: usize,
    /// How long shutdown waits for connections to finish their requests.
    pub drain_timeout: Duration,
    /// At most this many client connections at once; a further one is
    /// answered `-ERR max number of clients reached` and closed (as Redis
    /// does with `maxclients`).
    pub max_clients: usize,
    /// The password clients must give (`AUTH`, or `HELLO … AUTH`) before
    /// any other command, as Redis' `requirepass`; `None`: no password.
    pub password: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            ordered_reads: false,
            max_batch: 1024,
            max_command_bytes: 256 * 1024,
            drain_timeout: Duration::from_secs(10),
            password: None,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

/// What every connection shares.
struct Ctx<B> {
    backend: B,
    cfg: ServerConfig,
    metrics: Arc<Metrics>,
    resp_addr: SocketAddr,
}

/// Serves RESP on `listener` until `shutdown` turns true, then drains.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: B,
    cfg: ServerConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let resp_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let drain = cfg.drain_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_clients.max(1)));
    let mut refused: u64 = 0;
    let mut refused_logged: Option<Instant> = None;
    let ctx = Arc::new(Ctx {
        backend,
        cfg,
        metrics,
        resp_addr,
    });
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Best effort, without waiting: the client may not
                        // read it, and a full send buffer must not stall
                        // the accept loop.
                        let _ = sock.try_write(MAX_CLIENTS_REPLY);
                        refused += 1;
                        if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            refused_logged = Some(Instant::now());
                            tracing::warn!(%peer, refused, "max number of clients reached: refusing a connection");
                        }
                        continue;
                    };
                    tracing::debug!(%peer, "RESP connection");
                    let c = connection(sock, ctx.clone(), shutdown.clone());
                    conns.spawn(async move {
                        c.await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still busy after {drain:?}; closing them",
            conns.len()
        );
        conns.abort_all();
    }
}

/// Serves one connection.
async fn connection<B: Backend>(
    mut sock: TcpStream,
    ctx: Arc<Ctx<B>>,
    mut shutdown: watch::Receiver<bool>,
) {
    ctx.metrics.connection_opened();
    let _ = sock.set_nodelay(true);
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut tx = TxState::default();
    let mut authed = ctx.cfg.password.is_none();
    loop {
        let mut reqs = Vec::new();
        let mut perr = None;
        while reqs.len() < ctx.cfg.max_batch {
            match resp::parse_request(&mut inbuf, &ctx.cfg.limits) {
                Ok(Some(args)) => reqs.push(args),
                Ok(None) => break,
                Err(e) => {
                    perr = Some(e);
                    break;
                }
            }
        }
        let more = reqs.len() >= ctx.cfg.max_batch;
        let quit = if reqs.is_empty() {
            false
        } else {
            process(&ctx, &mut tx, &mut authed, reqs, &mut out).await
        };
        if let Some(e) = &perr {
            ctx.metrics.protocol_error();
            resp::error(&mut out, &format!("ERR {e}"));
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            if out.capacity() > 1024 * 1024 {
                out = BytesMut::with_capacity(16 * 1024);
            }
        }
        if quit || perr.is_some() {
            break;
        }
        if more {
            continue;
        }
        if *shutdown.borrow() {
            break;
        }
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16 * 1024);
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            r = sock.read_buf(&mut inbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
    }
    let _ = sock.shutdown().await;
    ctx.metrics.connection_closed();
}

/// One request's place in a run.
enum Item {
    /// Its reply is already encoded.
    Ready(Bytes),
    /// A write: its command name and the replicated operation.
    Write(&'static str, WriteOp),
    /// A read of the data set.
    Read(Request),
}

/// Which kind of run is being gathered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Writes,
    Reads,
}

/// Answers `reqs` in order into `out`. Returns true after `QUIT`.
async fn process<B: Backend>(
    ctx: &Ctx<B>,
    tx: &mut TxState,
    authed: &mut bool,
    reqs: Vec<Vec<Bytes>>,
    out: &mut BytesMut,
) -> bool {
    let start = Instant::now();
    let now = now_ms();
    let mut run: Vec<Item> = Vec::new();
    let mut kind = Kind::None;
    let mut run_bytes = 0usize;
    let mut quit = false;
    for args in reqs {
        if args.is_empty() {
            continue;
        }
        let parsed = command::parse(&args);
        if let Ok(Request::Auth { .. } | Request::Hello { .. }) = &parsed {
            flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
            kind = Kind::None;
            run_bytes = 0;
            if let Ok(req) = parsed {
                connection_step(ctx, authed, req, out);
            }
            continue;
        }
        if !*authed && !matches!(parsed, Ok(Request::Quit)) {
            flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
            kind = Kind::None;
            run_bytes = 0;
            resp::error(out, "NOAUTH Authentication required.");
            continue;
        }
        let control = matches!(
            parsed,
            Ok(Request::Multi
                | Request::Exec
                | Request::Discard
                | Request::Watch(_)
                | Request::Unwatch)
        );
        if tx.queued.is_some() || control {
            flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
            kind = Kind::None;
            run_bytes = 0;
            // Control commands under their own name; queued ones as "multi"
            // (their reply, QUEUED, says nothing of their own latency).
            let name = match &parsed {
                Ok(r) if control => r.name(),
                _ => "multi",
            };
            transaction_step(ctx, tx, args, parsed, now, out).await;
            ctx.metrics.record(name, start.elapsed(), false);
            continue;
        }
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                ctx.metrics.rejected();
                let mut b = BytesMut::new();
                resp::error(&mut b, &e);
                run.push(Item::Ready(b.freeze()));
                continue;
            }
        };
        if req.is_write() {
            let size: usize = args.iter().map(|a| a.len()).sum();
            if kind == Kind::Reads
                || (kind == Kind::Writes && run_bytes + size > ctx.cfg.max_command_bytes)
            {
                flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
                run_bytes = 0;
            }
            kind = Kind::Writes;
            run_bytes += size;
            let name = req.name();
            run.push(Item::Write(name, to_op(req, now)));
        } else if req.reads_data() {
            if kind == Kind::Writes {
                flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
                run_bytes = 0;
            }
            kind = Kind::Reads;
            run.push(Item::Read(req));
        } else if let Request::VsyncEvict(node) = req {
            flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
            kind = Kind::None;
            run_bytes = 0;
            match ctx.backend.evict(node).await {
                Ok(pid) => resp::bulk(out, Some(format!("evicted {pid}").as_bytes())),
                Err(e) => resp::error(out, &format!("ERR {e}")),
            }
            ctx.metrics.record("vsync", start.elapsed(), false);
        } else if req == Request::Save {
            flush(ctx, std::mem::take(&mut run), kind, now, start, out).await;
            kind = Kind::None;
            run_bytes = 0;
            match ctx.backend.checkpoint().await {
                Ok(()) => resp::simple(out, "OK"),
                Err(e) => resp::error(out, &format!("ERR checkpoint failed: {e}")),
            }
            ctx.metrics.record("save", start.elapsed(), false);
        } else {
            let mut b = BytesMut::new();
            quit = immediate(ctx, &req, &mut b);
            ctx.metrics.record(req.name(), start.elapsed(), false);
            run.push(Item::Ready(b.freeze()));
            if quit {
                break;
            }
        }
    }
    flush(ctx, run, kind, now, start, out).await;
    quit
}

/// `AUTH` and `HELLO`, which change the connection's state (Redis'
/// replies and errors).
fn connection_step<B: Backend>(ctx: &Ctx<B>, authed: &mut bool, req: Request, out: &mut BytesMut) {
    let check = |user: Option<&Bytes>, pass: &Bytes| -> Result<(), &'static str> {
        let Some(want) = &ctx.cfg.password else {
            return Err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        };
        let user_ok = user.is_none_or(|u| &u[..] == b"default");
        if user_ok && pass[..] == *want.as_bytes() {
            Ok(())
        } else {
            Err("WRONGPASS invalid username-password pair or user is disabled.")
        }
    };
    match req {
        Request::Auth { user, password } => match check(user.as_ref(), &password) {
            Ok(()) => {
                *authed = true;
                resp::simple(out, "OK");
            }
            Err(e) => resp::error(out, e),
        },
        Request::Hello { proto, auth } => {
            if proto != 2 {
                resp::error(
                    out,
                    "NOPROTO sorry, this protocol version is not supported.",
                );
                return;
            }
            if let Some((user, pass)) = auth {
                if let Err(e) = check(Some(&user), &pass) {
                    resp::error(out, e);
                    return;
                }
                *authed = true;
            }
            if !*authed {
                resp::error(
                    out,
                    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
                );
                return;
            }
            resp::array_header(out, 14);
            for (k, v) in [
                ("server", "vsync-kv"),
                ("version", env!("CARGO_PKG_VERSION")),
            ] {
                resp::bulk(out, Some(k.as_bytes()));
                resp::bulk(out, Some(v.as_bytes()));
            }
            resp::bulk(out, Some(b"proto"));
            resp::integer(out, 2);
            resp::bulk(out, Some(b"id"));
            resp::integer(out, 0);
            for (k, v) in [("mode", "standalone"), ("role", "master")] {
                resp::bulk(out, Some(k.as_bytes()));
                resp::bulk(out, Some(v.as_bytes()));
            }
            resp::bulk(out, Some(b"modules"));
            resp::array_header(out, 0);
        }
        _ => resp::error(out, "ERR internal: not a connection command"),
    }
}

/// One request of a transaction's life: `MULTI`, a command queued after
/// it, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` (see
/// [`crate::kv::transaction`]). Replies as Redis does.
async fn transaction_step<B: Backend>(
    ctx: &Ctx<B>,
    tx: &mut TxState,
    args: Vec<Bytes>,
    parsed: Result<Request, String>,
    now: u64,
    out: &mut BytesMut,
) {
    let queueing = tx.queued.is_some();
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            // A command the transaction cannot hold: EXEC will refuse it.
            tx.failed |= queueing;
            resp::error(out, &e);
            return;
        }
    };
    match (queueing, req) {
        (false, Request::Multi) => {
            tx.queued = Some(Vec::new());
            resp::simple(out, "OK");
        }
        (true, Request::Multi) => resp::error(out, "ERR MULTI calls can not be nested"),
        (false, Request::Exec) => resp::error(out, "ERR EXEC without MULTI"),
        (false, Request::Discard) => resp::error(out, "ERR DISCARD without MULTI"),
        (true, Request::Discard) => {
            tx.reset();
            resp::simple(out, "OK");
        }
        (true, Request::Watch(_)) => resp::error(out, "ERR WATCH inside MULTI is not allowed"),
        (false, Request::Watch(keys)) => {
            let read = ctx
                .backend
                .read(ctx.cfg.ordered_reads, move |store: &KvStore| {
                    let now = now_ms();
                    keys.into_iter()
                        .map(|k| {
                            let h = watch_hash(store, &k, now);
                            (k, h)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            match read {
                Ok(w) => {
                    tx.watched.extend(w);
                    resp::simple(out, "OK");
                }
                Err(e) => resp::error(out, &e.to_string()),
            }
        }
        (_, Request::Unwatch) => {
            tx.watched.clear();
            resp::simple(out, "OK");
        }
        (true, Request::Exec) => {
            let cmds = tx.queued.take().unwrap_or_default();
            let watch = std::mem::take(&mut tx.watched);
            let failed = tx.failed;
            tx.reset();
            if failed {
                resp::error(
                    out,
                    "EXECABORT Transaction discarded because of previous errors.",
                );
                return;
            }
            let op = WriteOp::Exec { cmds, watch };
            match ctx.backend.execute(KvCommand { now, ops: vec![op] }).await {
                Ok(r) if r.len() == 1 => {
                    encode_result(out, &r[0]);
                }
                Ok(r) => resp::error(out, &format!("ERR internal: {} results for EXEC", r.len())),
                Err(e) => resp::error(out, &e.to_string()),
            }
        }
        (true, req) if req.in_transaction() => {
            let size: usize = tx
                .queued
                .iter()
                .flatten()
                .flatten()
                .map(Bytes::len)
                .sum::<usize>()
                + args.iter().map(Bytes::len).sum::<usize>();
            if size > ctx.cfg.max_command_bytes {
                tx.failed = true;
                resp::error(
                    out,
                    &format!(
                        "ERR the transaction is over {} bytes, the most one replicated command may carry",
                        ctx.cfg.max_command_bytes
                    ),
                );
                return;
            }
            if let Some(q) = tx.queued.as_mut() {
                q.push(args);
            }
            resp::simple(out, "QUEUED");
        }
        (true, req) => {
            tx.failed = true;
            resp::error(
                out,
                &format!(
                    "ERR '{}' cannot run inside a transaction on vsync-kv",
                    req.name()
                ),
            );
        }
        // Not reached: only transaction commands come here outside MULTI.
        (false, req) => resp::error(
            out,
            &format!(
                "ERR internal: '{}' is not a transaction command",
                req.name()
            ),
        ),
    }
}

/// Runs one run of writes or reads and appends the replies in order.
async fn flush<B: Backend>(
    ctx: &Ctx<B>,
    run: Vec<Item>,
    kind: Kind,
    now: u64,
    start: Instant,
    out: &mut BytesMut,
) {
    match kind {
        Kind::Writes => flush_writes(ctx, run, now, start, out).await,
        Kind::Reads => flush_reads(ctx, run, start, out).await,
        Kind::None => {
            for item in run {
                if let Item::Ready(b) = item {
                    out.extend_from_slice(&b);
                }
            }
        }
    }
}

async fn flush_writes<B: Backend>(
    ctx: &Ctx<B>,
    run: Vec<Item>,
    now: u64,
    start: Instant,
    out: &mut BytesMut,
) {
    let mut ops = Vec::new();
    let mut items = Vec::with_capacity(run.len());
    for item in run {
        match item {
            Item::Write(name, op) => {
                ops.push(op);
                items.push(Err(name));
            }
            Item::Ready(b) => items.push(Ok(b)),
            Item::Read(_) => {}
        }
    }
    let n = ops.len();
    let result = ctx.backend.execute(KvCommand { now, ops }).await;
    let latency = start.elapsed();
    let mut results = match result {
        Ok(r) if r.len() == n => Ok(r.into_iter()),
        Ok(r) => Err(format!("ERR internal: {} results for {n} writes", r.len())),
        Err(e) => Err(e.to_string()),
    };
    for item in items {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(name) => {
                let is_err = match &mut results {
                    Ok(it) => match it.next() {
                        Some(r) => encode_result(out, &r),
                        None => {
                            resp::error(out, "ERR internal: missing result");
                            true
                        }
                    },
                    Err(e) => {
                        resp::error(out, e);
                        true
                    }
                };
                ctx.metrics.record(name, latency, is_err);
            }
        }
    }
}

async fn flush_reads<B: Backend>(ctx: &Ctx<B>, run: Vec<Item>, start: Instant, out: &mut BytesMut) {
    // What to answer if the read cannot run: the ready replies as they are,
    // an error for each read.
    let fallback: Vec<Result<Bytes, &'static str>> = run
        .iter()
        .filter_map(|i| match i {
            Item::Ready(b) => Some(Ok(b.clone())),
            Item::Read(r) => Some(Err(r.name())),
            Item::Write(..) => None,
        })
        .collect();
    let encoded = ctx
        .backend
        .read(ctx.cfg.ordered_reads, move |store: &KvStore| {
            let now = now_ms();
            let mut b = BytesMut::new();
            for item in run {
                match item {
                    Item::Ready(r) => b.extend_from_slice(&r),
                    Item::Read(req) => encode_read(store, &req, now, &mut b),
                    Item::Write(..) => {}
                }
            }
            b
        })
        .await;
    let latency = start.elapsed();
    let failed = encoded.as_ref().err().map(|e| e.to_string());
    if let Ok(b) = &encoded {
        out.extend_from_slice(b);
    }
    for item in fallback {
        match (item, &failed) {
            (Err(name), None) => ctx.metrics.record(name, latency, false),
            (Err(name), Some(msg)) => {
                ctx.metrics.record(name, latency, true);
                resp::error(out, msg);
            }
            (Ok(b), Some(_)) => out.extend_from_slice(&b),
            (Ok(_), None) => {}
        }
    }
}

/// The reply to `DEBUG CUT`/`DEBUG HEAL` on a node that does not allow
/// fault injection.
const FAULTS_OFF: &str =
    "ERR fault injection is off: start the node with --fault-injection (tests and demos only)";

/// Answers a request that touches no data. Returns true for `QUIT`.
fn immediate<B: Backend>(ctx: &Ctx<B>, req: &Request, out: &mut BytesMut) -> bool {
    match req {
        Request::Ping(None) => resp::simple(out, "PONG"),
        Request::Ping(Some(m)) | Request::Echo(m) => resp::bulk(out, Some(m)),
        Request::Info(section) => {
            let text = info_text(
                &ctx.backend.status(),
                &ctx.backend.metrics(),
                section.as_deref(),
                ctx.resp_addr,
                &ctx.metrics,
            );
            resp::bulk(out, Some(text.as_bytes()));
        }
        Request::Quit => {
            resp::simple(out, "OK");
            return true;
        }
        Request::Select | Request::Client => resp::simple(out, "OK"),
        Request::DebugCut(nodes) => match ctx.backend.faults() {
            Some(f) => {
                for n in nodes {
                    f.cut(vsync_core::NodeId(*n));
                }
                tracing::warn!(
                    ?nodes,
                    "DEBUG CUT: all traffic to and from these nodes is dropped"
                );
                resp::simple(out, "OK");
            }
            None => resp::error(out, FAULTS_OFF),
        },
        Request::Time => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            resp::array_header(out, 2);
            resp::bulk(out, Some(t.as_secs().to_string().as_bytes()));
            resp::bulk(out, Some(t.subsec_micros().to_string().as_bytes()));
        }
        Request::VsyncMembers => {
            let lines = ctx.backend.status().member_lines.join("\n");
            resp::bulk(out, Some(lines.as_bytes()));
        }
        Request::DebugHeal => match ctx.backend.faults() {
            Some(f) => {
                f.heal_all();
                tracing::warn!("DEBUG HEAL: every cut link restored");
                resp::simple(out, "OK");
            }
            None => resp::error(out, FAULTS_OFF),
        },
        Request::ConfigGet | Request::Command => resp::array_header(out, 0),
        _ => resp::error(out, "ERR internal: not an immediate command"),
    }
    false
}

/// The `INFO` text. Sections: `server`, `replication`, `vsync`,
/// `keyspace`; none, `all`, `default` or `everything` give all of them.
pub fn info_text(
    st: &NodeStatus,
    repl: &BackendMetrics,
    section: Option<&str>,
    resp_addr: SocketAddr,
    metrics: &Metrics,
) -> String {
    let all = matches!(section, None | Some("all" | "default" | "everything"));
    let want = |s: &str| all || section == Some(s);
    let mut o = String::new();
    if want("server") {
        let _ = write!(
            o,
            "# Server\r\nredis_version:7.0.0\r\nvsync_kv_version:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            resp_addr.port()
        );
    }
    if want("replication") {
        // Every replica accepts writes: tools that look for a primary see one.
        let _ = write!(
            o,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n"
        );
    }
    if want("vsync") {
        let _ = write!(
            o,
            "# Vsync\r\nvsync_node:{}\r\nvsync_pid:{}\r\nvsync_view:{}\r\nvsync_members:{}\r\nvsync_member_count:{}\r\nvsync_position:{}\r\nvsync_role:{}\r\nvsync_partition:{}\r\nvsync_partition_policy:{}\r\nvsync_divergences:{}\r\nvsync_discarded_writes:{}\r\nvsync_last_divergence:{}\r\nvsync_last_checkpoint:{}\r\nvsync_state_transfer_received_bytes:{}\r\nvsync_state_transfer_sent_bytes:{}\r\nvsync_state_transfers_received:{}\r\nvsync_catch_ups_received:{}\r\nvsync_checkpoints:{}\r\nvsync_commands_processed:{}\r\nvsync_ready:{}\r\nvsync_not_ready_reason:{}\r\n\r\n",
            st.node,
            st.pid,
            st.view.as_deref().unwrap_or("none"),
            st.members.join(","),
            st.members.len(),
            st.position,
            st.role,
            st.partition,
            st.partition_policy,
            st.divergences,
            st.discarded_writes,
            st.last_divergence.as_deref().unwrap_or("none"),
            st.last_checkpoint
                .map_or_else(|| "none".to_string(), |p| p.to_string()),
            repl.state_transfer_bytes_received,
            repl.state_transfer_bytes_sent,
            repl.state_transfers_received,
            repl.catch_ups_received,
            repl.checkpoints,
            metrics.total_commands(),
            if st.readiness().is_ok() { "yes" } else { "no" },
            st.readiness().err().unwrap_or_default(),
        );
    }
    if want("keyspace") {
        let _ = write!(o, "# Keyspace\r\n");
        if st.keys > 0 {
            let _ = write!(o, "db0:keys={},expires=0,avg_ttl=0\r\n", st.keys);
        }
    }
    o
}
