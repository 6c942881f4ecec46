//! The vsync-net benchmark: every member of the group is a separate OS
//! process on loopback (this binary re-executed with a hidden `--member`
//! flag), and this process orchestrates them.
//!
//! ```text
//! cargo run --release -p vsync-net --example bench -- \
//!     [--test tput|latency|kill|stop] [--members 3] [--size 64] \
//!     [--senders all|one] [--secs 5] [--runs 1] [--suspect-ms MS] [--json]
//! cargo run --release -p vsync-net --example bench -- --all [--secs 3] [--json]
//! cargo run --release -p vsync-net --example bench -- --secure both [--test tput|latency] ...
//! cargo run --release -p vsync-net --example bench -- --mode all --test tput|latency \
//!     [--rate 1000] [--runs 3] ...
//! ```
//!
//! `--mode safe|total|fifo|causal|all`: the delivery mode of every multicast
//! of the run (`GroupHandle::multicast_with`; default safe, what
//! `multicast` sends). `all` runs the four modes side by side, run after
//! run alternately (the order rotates each round so that no mode always
//! runs first), and prints the medians of each mode and their ratios to
//! safe.
//!
//! `--rate R`: a paced latency test: every sender (`--senders`, all by
//! default) multicasts R messages a second on a timer instead of one in
//! flight. It is the default (R = 1000) for `--test latency` whenever the
//! mode is not safe, and in `--mode all`: a sender delivers its own FIFO or
//! causal message locally at once, so one in flight would turn into a
//! flood and own-message latency would measure nothing.
//!
//! `--secure off|on|both`: the members run insecure (the default), in a
//! closed group (a cluster key generated for the run: Noise-sealed links),
//! or both, run after run alternately (insecure, secured, insecure, ...) so
//! that the machine's load drifts alike for both; `both` prints the two
//! medians and the secured/insecure ratios.
//!
//! Tests:
//! - `tput`: the senders (all members, or only the last to join, which is
//!   not the coordinator) multicast as fast as backpressure allows for
//!   `--secs`. Each member counts its deliveries (totally ordered, safe)
//!   in that window: msgs/s and MB/s per member.
//! - `latency`: idle latency, one message in flight: the last member sends,
//!   waits for its own delivery, sends the next.
//! - `kill`: failover after `kill -9` of the coordinator (node 1): from the
//!   kill to the new view installed at every survivor (wall clock,
//!   `CLOCK_REALTIME`, which is shared by the processes of one host).
//! - `stop`: the same after `SIGSTOP` (a silent failure: the connections stay
//!   open, only the heartbeat timeout detects it).
//!
//! Latency is *own-message delivery latency*, measured at the sender for its
//! own messages: from the `multicast` call to the delivery of the message
//! to the sender itself, which under safe delivery happens only once every
//! member holds it. It is measured with the sender's monotonic clock (the
//! send instant travels in the payload's first 8 bytes). Under full load it
//! is mostly queueing in the sender's window.
//!
//! Receive latency (`recv`) is measured at the receivers, for the other
//! members' messages: the sender puts its wall-clock send time
//! (`CLOCK_REALTIME`, ns, shared by the processes of one host) in payload
//! bytes 8..16, and each member records `now - sent` at delivery. It is the
//! figure that compares the modes; every tput and latency run reports it
//! (payloads of at least 16 bytes). Percentiles of a run are over all
//! receive latencies of all members (their histograms merged).
//!
//! Summary figures of a run: msgs/s and MB/s = the mean over the members;
//! latency percentiles = the worst sender's. With `--runs N` the medians of
//! the N runs are reported. `--all` runs the matrix: sizes 64 B, 1 KiB and
//! 64 KiB, one sender and all senders, 3, 5 and 7 members, then the idle
//! latency and both failovers (default and `--suspect-ms 100`).

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use vsync_net::{Config, Delivery, Event, Group, GroupHandle};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Test {
    /// Throughput (and latency under load).
    Tput,
    /// Idle latency: one message in flight.
    Latency,
    /// Failover after kill -9 of the coordinator.
    Kill,
    /// Failover after SIGSTOP of the coordinator.
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Senders {
    /// Every member sends.
    All,
    /// Only the last member to join sends.
    One,
}

const USAGE: &str = "usage: bench [--test tput|latency|kill|stop] [--members N] [--size BYTES] \
[--senders all|one] [--secs S] [--runs N] [--suspect-ms MS] [--threads N] [--secure off|on|both] \
[--mode safe|total|fifo|causal|all] [--rate MSGS_PER_S] [--json] [--all]";

/// The paced latency test's rate per sender when `--rate` is not given.
const DEFAULT_RATE: u64 = 1000;

/// The modes of `--mode all`, in the order of the first round (safe first:
/// it is the baseline of the ratios).
const MODES: [Delivery; 4] = [
    Delivery::Safe,
    Delivery::Total,
    Delivery::Fifo,
    Delivery::Causal,
];

/// The name of a delivery mode on the command line and in reports.
fn mode_name(m: Delivery) -> &'static str {
    match m {
        Delivery::Fifo => "fifo",
        Delivery::Causal => "causal",
        Delivery::Total => "total",
        Delivery::Safe => "safe",
    }
}

/// Parses a delivery mode (not `all`).
fn parse_mode(s: &str) -> Option<Delivery> {
    MODES.into_iter().find(|m| mode_name(*m) == s)
}

/// How the members' links are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Secure {
    /// Insecure (explicitly).
    Off,
    /// A closed group with a key made for the run.
    On,
    /// Both, alternately, compared.
    Both,
}

/// Command line.
#[derive(Debug, Clone)]
struct Args {
    /// What to measure.
    test: Test,
    /// Members of the group.
    members: u64,
    /// Payload size in bytes (at least 8).
    size: usize,
    /// Who sends (tput).
    senders: Senders,
    /// Measured seconds per run (tput, latency).
    secs: f64,
    /// Runs per configuration; the medians are reported.
    runs: usize,
    /// The engine's suspicion timeout in ms (default: the engine's default).
    suspect_ms: Option<u64>,
    /// Tokio worker threads per member process (0: a current-thread
    /// runtime). Default: 0 for the latency test (no hand-over between
    /// threads on the path of a message), 2 otherwise (the engine task and
    /// the connections' tasks run in parallel).
    threads: Option<usize>,
    /// Machine-readable output: one JSON object per configuration.
    json: bool,
    /// Run the whole matrix.
    all: bool,
    /// Internal: run as a member process.
    member: bool,
    /// Internal: the member's node id.
    node: u64,
    /// Internal: the address of a member to join through.
    seed: Option<std::net::SocketAddr>,
    /// Insecure, secured or both.
    secure: Secure,
    /// Internal: the cluster key file of a secured member.
    key: Option<std::path::PathBuf>,
    /// The delivery mode of every multicast (ignored when `mode_all`).
    mode: Delivery,
    /// `--mode all`: the four modes side by side.
    mode_all: bool,
    /// `--rate`: messages per second per sender in a paced latency test.
    rate: Option<u64>,
}

impl Args {
    /// Worker threads of the member processes.
    fn threads(&self) -> usize {
        self.threads
            .unwrap_or(if self.test == Test::Latency { 0 } else { 2 })
    }

    /// The paced latency test's messages per second per sender; 0: not
    /// paced (tput, or the one-in-flight latency test of safe messages).
    fn paced_rate(&self) -> u64 {
        if self.test != Test::Latency {
            return 0;
        }
        match self.rate {
            Some(r) => r,
            None if self.mode_all || self.mode != Delivery::Safe => DEFAULT_RATE,
            None => 0,
        }
    }

    fn parse() -> Result<Args, String> {
        let mut a = Args {
            test: Test::Tput,
            members: 3,
            size: 64,
            senders: Senders::All,
            secs: 5.0,
            runs: 1,
            suspect_ms: None,
            threads: None,
            json: false,
            all: false,
            member: false,
            node: 1,
            seed: None,
            secure: Secure::Off,
            key: None,
            mode: Delivery::Safe,
            mode_all: false,
            rate: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut val = || it.next().ok_or(format!("{flag} needs a value"));
            fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
                v.parse().map_err(|_| format!("bad value for {flag}: {v}"))
            }
            match flag.as_str() {
                "--test" => {
                    a.test = match val()?.as_str() {
                        "tput" => Test::Tput,
                        "latency" => Test::Latency,
                        "kill" => Test::Kill,
                        "stop" => Test::Stop,
                        t => return Err(format!("unknown test {t}")),
                    }
                }
                "--senders" => {
                    a.senders = match val()?.as_str() {
                        "all" => Senders::All,
                        "one" | "1" => Senders::One,
                        s => return Err(format!("unknown --senders {s}")),
                    }
                }
                "--members" => a.members = num(&flag, val()?)?,
                "--size" => a.size = num(&flag, val()?)?,
                "--secs" => a.secs = num(&flag, val()?)?,
                "--runs" => a.runs = num(&flag, val()?)?,
                "--suspect-ms" => a.suspect_ms = Some(num(&flag, val()?)?),
                "--threads" => a.threads = Some(num(&flag, val()?)?),
                "--node" => a.node = num(&flag, val()?)?,
                "--seed" => a.seed = Some(num(&flag, val()?)?),
                "--secure" => {
                    a.secure = match val()?.as_str() {
                        "off" => Secure::Off,
                        "on" => Secure::On,
                        "both" => Secure::Both,
                        s => return Err(format!("unknown --secure {s}")),
                    }
                }
                "--key" => a.key = Some(val()?.into()),
                "--mode" => match val()?.as_str() {
                    "all" => a.mode_all = true,
                    m => {
                        a.mode = parse_mode(m).ok_or(format!(
                            "unknown --mode {m} (safe, total, fifo, causal or all)"
                        ))?;
                        a.mode_all = false;
                    }
                },
                "--rate" => a.rate = Some(num(&flag, val()?)?),
                "--json" => a.json = true,
                "--all" => a.all = true,
                "--member" => a.member = true,
                "-h" | "--help" => {
                    out(USAGE);
                    std::process::exit(0);
                }
                f => return Err(format!("unknown argument {f}\n{USAGE}")),
            }
        }
        Ok(a)
    }
}

fn main() {
    let args = Args::parse().unwrap_or_else(|e| fail(&e));
    if args.member {
        let threads = args.threads.unwrap_or(2);
        let rt = if threads == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
        };
        let rt = match rt {
            Ok(rt) => rt,
            Err(e) => fail(&format!("cannot start a tokio runtime: {e}")),
        };
        if let Err(e) = rt.block_on(member(args)) {
            fail(&e);
        }
        std::process::exit(0);
    }
    if args.size < 8 {
        fail("--size must be at least 8 bytes");
    }
    if args.members < 2 {
        fail("--members must be at least 2");
    }
    if args.rate == Some(0) {
        fail("--rate must be at least 1 message a second");
    }
    if args.mode_all {
        if args.all || args.secure == Secure::Both {
            fail("--mode all cannot be combined with --all or --secure both");
        }
        if !matches!(args.test, Test::Tput | Test::Latency) {
            fail("--mode all compares the tput and latency tests");
        }
        if args.size < 16 {
            fail("--mode all compares receive latency: --size must be at least 16 bytes");
        }
    }
    // The key of secured runs, in a directory removed at the end.
    let keydir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => fail(&format!("cannot make a temporary directory: {e}")),
    };
    let keyfile = keydir.path().join("bench.key");
    if let Err(e) = vsync_net::keygen(&keyfile) {
        fail(&e.to_string());
    }
    let args = Args {
        key: Some(keyfile),
        ..args
    };
    let res = if args.all {
        run_all(&args)
    } else if args.mode_all {
        compare_modes(&args)
    } else if args.secure == Secure::Both {
        compare(&args)
    } else {
        run_config(&args).map(|_| ())
    };
    if let Err(e) = res {
        fail(&e);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(1)
}

/// Prints a line of the report (a closed stdout is not an error worth a
/// panic: the reader went away).
fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------- member

/// One line of JSON to the orchestrator.
fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A measurement in progress in a member.
struct Run {
    test: Test,
    size: usize,
    send: bool,
    start: Instant,
    end: Instant,
    delivered: u64,
    bytes: u64,
    /// Own-message latency (µs), at the sender.
    hist: Histogram<u64>,
    /// Receive latency (µs) of the other members' messages, wall clock.
    rx_hist: Histogram<u64>,
    /// The mode every multicast of the run is sent with.
    mode: Delivery,
    /// Deliveries in the window whose mode is not `mode` (must stay 0).
    wrong_mode: u64,
    /// Paced latency test: messages a second per sender (0: one in
    /// flight).
    rate: u64,
    /// Multicasts this member sent in the window (shared with its sender
    /// task).
    sent: Arc<AtomicU64>,
    /// Latency test: whether our message is in flight.
    in_flight: bool,
    reported: bool,
    /// This process's CPU time (s) when the window opened, once it has.
    cpu_start: Option<f64>,
}

/// This process's CPU time (user + system) in seconds, from /proc (Linux;
/// 0 elsewhere). Its resolution is a clock tick (10 ms).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name (which is in parentheses).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime: fields 14 and 15 of the line, the 12th and 13th
    // after the name.
    (ticks(11) + ticks(12)) / 100.0
}

impl Run {
    /// Counts a delivery seen at `now` (`wall_now`: the same instant in
    /// wall-clock ns). True if it is our own message of a one-in-flight
    /// latency run, delivered in the window: time to send the next one.
    fn delivered(
        &mut self,
        (now, wall_now): (Instant, u64),
        epoch: Instant,
        own: bool,
        mode: Delivery,
        p: &[u8],
    ) -> bool {
        if self.reported || now < self.start || now > self.end {
            if own {
                self.in_flight = false;
            }
            return false;
        }
        self.delivered += 1;
        self.bytes += p.len() as u64;
        if mode != self.mode {
            self.wrong_mode += 1;
        }
        if !own && p.len() >= 16 {
            let mut t = [0u8; 8];
            t.copy_from_slice(&p[8..16]);
            let sent = u64::from_le_bytes(t);
            let _ = self.rx_hist.record(wall_now.saturating_sub(sent) / 1000);
        }
        if own && p.len() >= 8 {
            let mut t = [0u8; 8];
            t.copy_from_slice(&p[..8]);
            let sent = u64::from_le_bytes(t);
            let lat = (now.duration_since(epoch).as_nanos() as u64).saturating_sub(sent);
            let _ = self.hist.record(lat / 1000);
            if self.test == Test::Latency && self.rate == 0 {
                self.in_flight = false;
                return true;
            }
        }
        false
    }

    fn report(&mut self, node: u64) {
        self.reported = true;
        let secs = self.end.duration_since(self.start).as_secs_f64();
        let cpu = self.cpu_start.map_or(f64::NAN, |c| cpu_secs() - c);
        // The receive histogram goes whole (value, count) to the
        // orchestrator, which merges the members'.
        let rx_hist: Vec<[u64; 2]> = self
            .rx_hist
            .iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect();
        emit(json!({
            "ev": "result",
            "node": node,
            "sender": self.send,
            "mode": mode_name(self.mode),
            "delivered": self.delivered,
            "wrong_mode": self.wrong_mode,
            "sent": self.sent.load(Ordering::Relaxed),
            "msgs_per_s": self.delivered as f64 / secs,
            "mb_per_s": self.bytes as f64 / secs / 1e6,
            "cpu_s": cpu,
            "latency": hist_summary(&self.hist),
            "rx_latency": hist_summary(&self.rx_hist),
            "rx_hist": rx_hist,
        }));
    }
}

/// Percentiles of a latency histogram (µs); null if empty.
fn hist_summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "mean_us": h.mean(),
    })
}

/// A payload of `size` bytes whose first 8 carry the send instant (ns since
/// `epoch`, for own-message latency) and the next 8, if it has them, the
/// wall-clock send time (ns since the Unix epoch, for receive latency).
fn payload(epoch: Instant, size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    let t = epoch.elapsed().as_nanos() as u64;
    v[..8].copy_from_slice(&t.to_le_bytes());
    if let Some(w) = v.get_mut(8..16) {
        w.copy_from_slice(&wall_ns().to_le_bytes());
    }
    Bytes::from(v)
}

/// Parses `run TEST SIZE SEND SECS START_WALL_NS` and starts the sender
/// task of a throughput or paced latency run (`mode`, `rate`: this
/// member's `--mode` and paced rate).
fn start_run(
    h: &GroupHandle,
    cmd: &str,
    epoch: Instant,
    mode: Delivery,
    rate: u64,
) -> Result<Run, String> {
    let w: Vec<&str> = cmd.split_whitespace().collect();
    let ["run", test, size, send, secs, start_wall] = w.as_slice() else {
        return Err(format!("unknown command {cmd}"));
    };
    let test = match *test {
        "tput" => Test::Tput,
        "latency" => Test::Latency,
        t => return Err(format!("unknown test {t}")),
    };
    let bad = |e: &dyn std::fmt::Display| format!("bad command {cmd}: {e}");
    let size: usize = size.parse().map_err(|e| bad(&e))?;
    let send = *send == "1";
    let secs: f64 = secs.parse().map_err(|e| bad(&e))?;
    let start_wall: u64 = start_wall.parse().map_err(|e| bad(&e))?;
    let start = Instant::now() + Duration::from_nanos(start_wall.saturating_sub(wall_ns()));
    let end = start + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    if test == Test::Tput && send {
        let s = h.sender();
        let sent = sent.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            while Instant::now() < end {
                if s.multicast_with(payload(epoch, size), mode).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let rate = if test == Test::Latency { rate } else { 0 };
    if rate > 0 && send {
        let s = h.sender();
        let sent = sent.clone();
        let period = Duration::from_nanos(1_000_000_000 / rate);
        tokio::spawn(async move {
            // Ticks missed while the process waited for a core are skipped,
            // not sent in a burst: the load stays at most `rate`.
            let mut tick = tokio::time::interval_at(start.into(), period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while Instant::now() < end {
                tick.tick().await;
                if s.multicast_with(payload(epoch, size), mode).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(Run {
        test,
        size,
        send,
        start,
        end,
        delivered: 0,
        bytes: 0,
        hist: Histogram::new(3).map_err(|e| e.to_string())?,
        rx_hist: Histogram::new(3).map_err(|e| e.to_string())?,
        mode,
        wrong_mode: 0,
        rate,
        in_flight: false,
        reported: false,
        sent,
        cpu_start: None,
    })
}

async fn member(args: Args) -> Result<(), String> {
    let listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let mut cfg = Config::new(args.node, listen, "bench");
    cfg.security = match &args.key {
        Some(path) => {
            vsync_net::Security::Key(vsync_net::Key::load(path).map_err(|e| e.to_string())?)
        }
        None => vsync_net::Security::Insecure,
    };
    if let Some(ms) = args.suspect_ms {
        cfg.engine = vsync_core::Config::with_suspect_timeout(ms * 1000);
    }
    let mut h: GroupHandle = match args.seed {
        None => Group::found(cfg).await,
        Some(seed) => {
            cfg.seeds = vec![seed];
            Group::join(cfg).await
        }
    }
    .map_err(|e| e.to_string())?;
    emit(json!({"ev": "listen", "addr": h.local_addr().to_string()}));
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if cmd_tx.send(l).is_err() {
                break;
            }
        }
        // End of input: the orchestrator is gone.
        std::process::exit(0);
    });
    let epoch = Instant::now();
    let me = h.pid();
    let mut run: Option<Run> = None;
    // One timer, reset only when the run's next deadline changes: the
    // start of a latency run, then its end.
    let timer = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            ev = h.next_event() => {
                // This event, and every one already waiting, at one clock
                // reading.
                let mut next = ev;
                let mut batch = h.pending_events();
                let now = Instant::now();
                let wall_now = wall_ns();
                let mut send_next = false;
                while let Some(ev) = next.take() {
                    match ev {
                        Event::View { view, .. } => emit(json!({
                            "ev": "view",
                            "id": view.id.to_string(),
                            "members": view.members.len(),
                            "wall_ns": wall_ns(),
                        })),
                        Event::Deliver { msg, payload: p, mode, .. } => {
                            if let Some(r) = run.as_mut() {
                                let own = msg.sender == me;
                                send_next |= r.delivered((now, wall_now), epoch, own, mode, &p);
                            }
                        }
                        Event::Removed { .. } | Event::Left { .. } => {
                            return Err("removed from the group".into());
                        }
                        _ => {}
                    }
                    if batch > 0 {
                        batch -= 1;
                        next = h.next_event().await;
                    }
                }
                if send_next {
                    if let Some(r) = run.as_mut() {
                        if Instant::now() < r.end {
                            h.multicast_with(payload(epoch, r.size), r.mode)
                                .await
                                .map_err(|e| e.to_string())?;
                            r.in_flight = true;
                            r.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            () = &mut timer, if run.as_ref().is_some_and(|r| !r.reported) => {
                let Some(r) = run.as_mut() else { continue };
                let now = Instant::now();
                if r.cpu_start.is_none() {
                    r.cpu_start = Some(cpu_secs());
                }
                if now >= r.end {
                    r.report(args.node);
                } else {
                    if r.test == Test::Latency && r.rate == 0 && r.send && !r.in_flight {
                        h.multicast_with(payload(epoch, r.size), r.mode)
                            .await
                            .map_err(|e| e.to_string())?;
                        r.in_flight = true;
                        r.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    timer.as_mut().reset(r.end.into());
                }
            }
            cmd = cmd_rx.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                if cmd.trim() == "exit" {
                    std::process::exit(0);
                }
                let r = start_run(&h, &cmd, epoch, args.mode, args.rate.unwrap_or(0))?;
                timer.as_mut().reset(r.start.into());
                run = Some(r);
            }
        }
    }
}

// ---------------------------------------------------------- orchestrator

/// A member process; killed and reaped on drop.
struct Member {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Member {
    fn cmd(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    fn signal(&self, sig: i32) {
        // The child is ours and not yet reaped, so its pid is still its own.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The members of one configuration and their event lines.
struct Cluster {
    members: Vec<Member>,
    rx: std_mpsc::Receiver<(u64, Value)>,
    tx: std_mpsc::Sender<(u64, Value)>,
}

impl Cluster {
    fn spawn(&mut self, args: &Args, node: u64, seed: Option<&str>) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut c = Command::new(exe);
        c.args([
            "--member",
            "--node",
            &node.to_string(),
            "--threads",
            &args.threads().to_string(),
        ]);
        if let Some(s) = seed {
            c.args(["--seed", s]);
        }
        if let Some(ms) = args.suspect_ms {
            c.args(["--suspect-ms", &ms.to_string()]);
        }
        if let (Secure::On, Some(k)) = (args.secure, &args.key) {
            c.arg("--key").arg(k);
        }
        c.args(["--mode", mode_name(args.mode)]);
        if args.paced_rate() > 0 {
            c.args(["--rate", &args.paced_rate().to_string()]);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a member: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send((node, v)).is_err() {
                        break;
                    }
                }
            }
        });
        self.members.push(Member { child, stdin });
        Ok(())
    }

    /// Starts `args.members` members and waits until each has installed a
    /// view of all of them.
    fn start(args: &Args) -> Result<Cluster, String> {
        let (tx, rx) = std_mpsc::channel();
        let mut c = Cluster {
            members: Vec::new(),
            rx,
            tx,
        };
        c.spawn(args, 1, None)?;
        let (_, v) = c.wait(Duration::from_secs(10), |_, v| v["ev"] == "listen")?;
        let seed = v["addr"].as_str().ok_or("bad listen line")?.to_string();
        for node in 2..=args.members {
            c.spawn(args, node, Some(&seed))?;
        }
        let mut full = std::collections::BTreeSet::new();
        let n = args.members;
        while full.len() < n as usize {
            let (node, _) = c.wait(Duration::from_secs(30), |_, v| {
                v["ev"] == "view" && v["members"].as_u64() == Some(n)
            })?;
            full.insert(node);
        }
        Ok(c)
    }

    /// The next line that satisfies `pred` (other lines are dropped).
    fn wait(
        &self,
        timeout: Duration,
        pred: impl Fn(u64, &Value) -> bool,
    ) -> Result<(u64, Value), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((node, v)) if pred(node, &v) => return Ok((node, v)),
                Ok(_) => {}
                Err(_) => return Err(format!("no answer from the members within {timeout:?}")),
            }
        }
    }

    fn member(&mut self, node: u64) -> &mut Member {
        &mut self.members[(node - 1) as usize]
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One tput or latency run: per-member results and the run's summary.
fn measure(args: &Args) -> Result<Value, String> {
    let load1 = load_avg();
    let mut c = Cluster::start(args)?;
    let n = args.members;
    let paced = args.paced_rate() > 0;
    let sender = |node: u64| match (args.test, args.senders) {
        (Test::Tput, Senders::All) => true,
        (Test::Latency, Senders::All) if paced => true,
        _ => node == n,
    };
    let test = if args.test == Test::Latency {
        "latency"
    } else {
        "tput"
    };
    let start = wall_ns() + 300_000_000;
    for node in 1..=n {
        let s = u8::from(sender(node));
        let line = format!("run {test} {} {s} {} {start}", args.size, args.secs);
        c.member(node).cmd(&line);
    }
    let mut results = Vec::new();
    let limit = Duration::from_secs_f64(args.secs + 30.0);
    while results.len() < n as usize {
        let (_, v) = c.wait(limit, |_, v| v["ev"] == "result")?;
        results.push(v);
    }
    for node in 1..=n {
        c.member(node).cmd("exit");
    }
    results.sort_by_key(|v| v["node"].as_u64());
    // The receivers' histograms, merged (and dropped from the report).
    let mut rx = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut wrong_mode = 0;
    for r in &mut results {
        wrong_mode += r["wrong_mode"].as_u64().unwrap_or(0);
        if let Some(Value::Array(h)) = r.as_object_mut().and_then(|o| o.remove("rx_hist")) {
            for vc in h {
                if let (Some(v), Some(c)) = (vc[0].as_u64(), vc[1].as_u64()) {
                    rx.record_n(v, c).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    if wrong_mode > 0 {
        return Err(format!(
            "{wrong_mode} deliveries came with another mode than {}",
            mode_name(args.mode)
        ));
    }
    let rx_q = |q: f64| {
        if rx.is_empty() {
            f64::NAN
        } else {
            rx.value_at_quantile(q) as f64
        }
    };
    let mean = |k: &str| results.iter().filter_map(|r| r[k].as_f64()).sum::<f64>() / n as f64;
    let worst = |k: &str| {
        results
            .iter()
            .filter_map(|r| r["latency"][k].as_f64())
            .fold(f64::NAN, f64::max)
    };
    let sum = |k: &str| results.iter().filter_map(|r| r[k].as_f64()).sum::<f64>();
    Ok(json!({
        "msgs_per_s": mean("msgs_per_s"),
        "mb_per_s": mean("mb_per_s"),
        // CPU of all members per delivery (at any member): what a message
        // costs, whatever else loads the machine.
        "cpu_us_per_delivery": sum("cpu_s") / sum("delivered") * 1e6,
        "cores_used": sum("cpu_s") / args.secs,
        "p50_us": worst("p50_us"),
        "p99_us": worst("p99_us"),
        "p999_us": worst("p999_us"),
        "mean_us": worst("mean_us"),
        // Multicasts sent in the window by all senders together, per second.
        "sent_per_s": sum("sent") / args.secs,
        "rx_count": rx.len(),
        "rx_p50_us": rx_q(0.5),
        "rx_p99_us": rx_q(0.99),
        "rx_p999_us": rx_q(0.999),
        "rx_mean_us": if rx.is_empty() { f64::NAN } else { rx.mean() },
        "load1": load1,
        "members": results,
    }))
}

/// One failover run: kill -9 or SIGSTOP node 1, the time until every
/// survivor installed a view without it.
fn failover(args: &Args) -> Result<Value, String> {
    let mut c = Cluster::start(args)?;
    let n = args.members;
    // Let the heartbeats settle.
    std::thread::sleep(Duration::from_millis(500));
    while c.rx.try_recv().is_ok() {}
    let t0 = wall_ns();
    match args.test {
        Test::Kill => c.member(1).signal(libc::SIGKILL),
        _ => c.member(1).signal(libc::SIGSTOP),
    }
    let mut got = std::collections::BTreeMap::new();
    while got.len() < (n - 1) as usize {
        let (node, v) = c.wait(Duration::from_secs(20), |node, v| {
            node != 1 && v["ev"] == "view" && v["members"].as_u64() == Some(n - 1)
        })?;
        let t = v["wall_ns"].as_u64().unwrap_or(0);
        got.entry(node)
            .or_insert((t.saturating_sub(t0)) as f64 / 1e6);
    }
    c.member(1).signal(libc::SIGKILL);
    let worst = got.values().copied().fold(0.0, f64::max);
    Ok(json!({
        "failover_ms": worst,
        "survivors_ms": got.iter().map(|(k, v)| json!({"node": k, "ms": v})).collect::<Vec<_>>(),
    }))
}

fn describe(args: &Args) -> String {
    let st = args
        .suspect_ms
        .map_or("default".to_string(), |m| format!("{m} ms"));
    let base = match args.test {
        Test::Tput => format!(
            "tput     members={} size={} senders={:?}",
            args.members, args.size, args.senders
        )
        .to_lowercase(),
        Test::Latency if args.paced_rate() > 0 => format!(
            "latency  members={} size={} {}/s per sender, senders={}",
            args.members,
            args.size,
            args.paced_rate(),
            format!("{:?}", args.senders).to_lowercase()
        ),
        Test::Latency => format!(
            "latency  members={} size={} 1 in flight",
            args.members, args.size
        ),
        Test::Kill => format!("kill -9  members={} suspect={st}", args.members),
        Test::Stop => format!("SIGSTOP  members={} suspect={st}", args.members),
    };
    match (args.test, args.mode, args.mode_all) {
        (Test::Tput | Test::Latency, m, false) if m != Delivery::Safe => {
            format!("{base} mode={}", mode_name(m))
        }
        _ => base,
    }
}

/// Runs one configuration `args.runs` times; prints and returns the
/// summary.
fn run_config(args: &Args) -> Result<Value, String> {
    let load = load_avg();
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        let r = match args.test {
            Test::Tput | Test::Latency => measure(args)?,
            Test::Kill | Test::Stop => failover(args)?,
        };
        runs.push(r);
    }
    let med = |k: &str| median(runs.iter().filter_map(|r| r[k].as_f64()).collect());
    let summary = match args.test {
        Test::Tput | Test::Latency => json!({
            "msgs_per_s": med("msgs_per_s"),
            "mb_per_s": med("mb_per_s"),
            "p50_us": med("p50_us"),
            "p99_us": med("p99_us"),
            "p999_us": med("p999_us"),
            "mean_us": med("mean_us"),
            "cpu_us_per_delivery": med("cpu_us_per_delivery"),
            "cores_used": med("cores_used"),
            "rx_p50_us": med("rx_p50_us"),
            "rx_p99_us": med("rx_p99_us"),
            "rx_p999_us": med("rx_p999_us"),
            "rx_mean_us": med("rx_mean_us"),
        }),
        Test::Kill | Test::Stop => json!({"failover_ms": med("failover_ms")}),
    };
    let report = json!({
        "test": format!("{:?}", args.test).to_lowercase(),
        "members": args.members,
        "size": args.size,
        "senders": format!("{:?}", args.senders).to_lowercase(),
        "secs": args.secs,
        "suspect_ms": args.suspect_ms,
        "threads": args.threads(),
        "mode": mode_name(args.mode),
        "rate": args.paced_rate(),
        "load1": load,
        "median": summary,
        "runs": runs,
    });
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    if args.json {
        out(&report.to_string());
    } else {
        let s = &report["median"];
        let line = match args.test {
            Test::Tput | Test::Latency => format!(
                "{:<45} {:>9.0} msgs/s {:>8.1} MB/s  mean {:>7.0} us  p50 {:>7.0} us  p99 {:>7.0} us  p99.9 {:>7.0} us  recv p50 {:>7.0} us  p99 {:>7.0} us  cpu {:.2} us/delivery  (load {load}, {} run(s), {} thr)",
                describe(args),
                f(&s["msgs_per_s"]),
                f(&s["mb_per_s"]),
                f(&s["mean_us"]),
                f(&s["p50_us"]),
                f(&s["p99_us"]),
                f(&s["p999_us"]),
                f(&s["rx_p50_us"]),
                f(&s["rx_p99_us"]),
                f(&s["cpu_us_per_delivery"]),
                runs.len(),
                args.threads()
            ),
            Test::Kill | Test::Stop => format!(
                "{:<45} failover {:>8.1} ms at the slowest survivor  (load {load}, {} run(s))",
                describe(args),
                f(&s["failover_ms"]),
                runs.len()
            ),
        };
        out(&line);
        if args.runs > 1 || matches!(args.test, Test::Tput | Test::Latency) {
            for (i, r) in runs.iter().enumerate() {
                if let Some(ms) = r["failover_ms"].as_f64() {
                    out(&format!("    run {}: {ms:.1} ms", i + 1));
                } else {
                    let per_member: Vec<String> = r["members"]
                        .as_array()
                        .map(|ms| {
                            ms.iter()
                                .map(|m| {
                                    format!(
                                        "n{} {:.0}/s {:.1} MB/s",
                                        m["node"],
                                        f(&m["msgs_per_s"]),
                                        f(&m["mb_per_s"])
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out(&format!(
                        "    run {}: {:.0} msgs/s, p50 {:.0} us, p99 {:.0} us, recv p50 {:.0} us, p99 {:.0} us; per member: {}",
                        i + 1,
                        f(&r["msgs_per_s"]),
                        f(&r["p50_us"]),
                        f(&r["p99_us"]),
                        f(&r["rx_p50_us"]),
                        f(&r["rx_p99_us"]),
                        per_member.join(", ")
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// `--secure both`: the same configuration insecure and secured, run
/// after run alternately; prints both medians and the ratios.
fn compare(args: &Args) -> Result<(), String> {
    if !matches!(args.test, Test::Tput | Test::Latency) {
        return Err("--secure both compares the tput and latency tests".into());
    }
    let load = load_avg();
    let mut runs: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..args.runs.max(1) {
        for (i, secure) in [Secure::Off, Secure::On].into_iter().enumerate() {
            runs[i].push(measure(&Args {
                secure,
                ..args.clone()
            })?);
        }
    }
    let med = |i: usize, k: &str| median(runs[i].iter().filter_map(|r| r[k].as_f64()).collect());
    let keys = [
        "msgs_per_s",
        "mb_per_s",
        "p50_us",
        "p99_us",
        "mean_us",
        "cpu_us_per_delivery",
    ];
    let summary = |i: usize| -> Value {
        keys.iter()
            .map(|k| (k.to_string(), json!(med(i, k))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let ratio: Value = keys
        .iter()
        .map(|k| (k.to_string(), json!(med(1, k) / med(0, k))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let report = json!({
        "test": format!("{:?}", args.test).to_lowercase(),
        "members": args.members,
        "size": args.size,
        "senders": format!("{:?}", args.senders).to_lowercase(),
        "secs": args.secs,
        "threads": args.threads(),
        "load1": load,
        "insecure": summary(0),
        "secured": summary(1),
        "secured_over_insecure": ratio,
        "runs_insecure": runs[0],
        "runs_secured": runs[1],
    });
    if args.json {
        out(&report.to_string());
        return Ok(());
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for (name, s) in [
        ("insecure", &report["insecure"]),
        ("secured", &report["secured"]),
    ] {
        out(&format!(
            "{:<45} {name:<9} {:>9.0} msgs/s {:>8.1} MB/s  p50 {:>7.0} us  p99 {:>7.0} us  cpu {:.2} us/delivery",
            describe(args),
            f(&s["msgs_per_s"]),
            f(&s["mb_per_s"]),
            f(&s["p50_us"]),
            f(&s["p99_us"]),
            f(&s["cpu_us_per_delivery"]),
        ));
    }
    let r = &report["secured_over_insecure"];
    out(&format!(
        "{:<45} secured/insecure: msgs/s x{:.2}  p50 x{:.2}  p99 x{:.2}  cpu/delivery x{:.2}  (load {load}, {} run(s) each, alternated)",
        describe(args),
        f(&r["msgs_per_s"]),
        f(&r["p50_us"]),
        f(&r["p99_us"]),
        f(&r["cpu_us_per_delivery"]),
        runs[0].len()
    ));
    Ok(())
}

/// `--mode all`: the same configuration in each delivery mode, run after
/// run alternately (the order rotates each round: safe, total, fifo,
/// causal, then total, fifo, causal, safe, ...); prints each mode's medians
/// and the ratios to safe.
fn compare_modes(args: &Args) -> Result<(), String> {
    let mut runs: [Vec<Value>; 4] = Default::default();
    let rounds = args.runs.max(1);
    for round in 0..rounds {
        for k in 0..MODES.len() {
            let i = (round + k) % MODES.len();
            // Every mode at the rate of the comparison (safe alone would
            // default to one in flight).
            let rate = (args.test == Test::Latency).then(|| args.paced_rate());
            let r = measure(&Args {
                mode: MODES[i],
                mode_all: false,
                rate,
                ..args.clone()
            })?;
            if !args.json {
                let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
                out(&format!(
                    "    round {} {:<6} {:>9.0} msgs/s (sent {:>7.0}/s)  recv p50 {:>7.0} us  p99 {:>7.0} us  own p50 {:>7.0} us  cpu {:.2} us/delivery  (load {})",
                    round + 1,
                    mode_name(MODES[i]),
                    f(&r["msgs_per_s"]),
                    f(&r["sent_per_s"]),
                    f(&r["rx_p50_us"]),
                    f(&r["rx_p99_us"]),
                    f(&r["p50_us"]),
                    f(&r["cpu_us_per_delivery"]),
                    r["load1"].as_str().unwrap_or("?"),
                ));
            }
            runs[i].push(r);
        }
    }
    let med = |i: usize, k: &str| median(runs[i].iter().filter_map(|r| r[k].as_f64()).collect());
    let keys = [
        "msgs_per_s",
        "mb_per_s",
        "rx_p50_us",
        "rx_p99_us",
        "rx_p999_us",
        "rx_mean_us",
        "p50_us",
        "p99_us",
        "cpu_us_per_delivery",
    ];
    let summary = |i: usize| -> Value {
        keys.iter()
            .map(|k| (k.to_string(), json!(med(i, k))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let ratio = |i: usize| -> Value {
        keys.iter()
            .map(|k| (k.to_string(), json!(med(i, k) / med(0, k))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let loads: Vec<f64> = runs
        .iter()
        .flatten()
        .filter_map(|r| r["load1"].as_str().and_then(|l| l.parse().ok()))
        .collect();
    let load_min = loads.iter().copied().fold(f64::NAN, f64::min);
    let load_max = loads.iter().copied().fold(f64::NAN, f64::max);
    let by_mode = |f: &dyn Fn(usize) -> Value| -> Value {
        (0..MODES.len())
            .map(|i| (mode_name(MODES[i]).to_string(), f(i)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let report = json!({
        "test": format!("{:?}", args.test).to_lowercase(),
        "members": args.members,
        "size": args.size,
        "senders": format!("{:?}", args.senders).to_lowercase(),
        "secs": args.secs,
        "rate": args.paced_rate(),
        "threads": args.threads(),
        "load1_min": load_min,
        "load1_max": load_max,
        "median": by_mode(&summary),
        "over_safe": by_mode(&ratio),
        "runs": by_mode(&|i| json!(runs[i])),
    });
    if args.json {
        out(&report.to_string());
        return Ok(());
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    out(&format!(
        "{}: medians of {rounds} run(s) per mode, alternated; load1 {load_min:.2}-{load_max:.2}",
        describe(&Args {
            mode_all: true,
            ..args.clone()
        })
    ));
    out(&format!(
        "  {:<7} {:>10} {:>7}  {:>9} {:>7}  {:>9} {:>7}  {:>9}  {:>8}",
        "mode",
        "msgs/s",
        "x safe",
        "recv p50",
        "x safe",
        "recv p99",
        "x safe",
        "own p50",
        "cpu/dlv"
    ));
    for m in MODES {
        let s = &report["median"][mode_name(m)];
        let r = &report["over_safe"][mode_name(m)];
        out(&format!(
            "  {:<7} {:>10.0} {:>7.2}  {:>6.0} us {:>7.2}  {:>6.0} us {:>7.2}  {:>6.0} us  {:>5.2} us",
            mode_name(m),
            f(&s["msgs_per_s"]),
            f(&r["msgs_per_s"]),
            f(&s["rx_p50_us"]),
            f(&r["rx_p50_us"]),
            f(&s["rx_p99_us"]),
            f(&r["rx_p99_us"]),
            f(&s["p50_us"]),
            f(&s["cpu_us_per_delivery"]),
        ));
    }
    Ok(())
}

/// The matrix.
fn run_all(base: &Args) -> Result<(), String> {
    let started = Instant::now();
    for members in [3, 5, 7] {
        for size in [64, 1024, 65536] {
            for senders in [Senders::One, Senders::All] {
                let a = Args {
                    test: Test::Tput,
                    members,
                    size,
                    senders,
                    ..base.clone()
                };
                run_config(&a)?;
            }
        }
    }
    for members in [3, 5, 7] {
        run_config(&Args {
            test: Test::Latency,
            members,
            size: 64,
            ..base.clone()
        })?;
    }
    for test in [Test::Kill, Test::Stop] {
        for suspect_ms in [None, Some(100)] {
            run_config(&Args {
                test,
                members: 3,
                suspect_ms,
                ..base.clone()
            })?;
        }
    }
    if !base.json {
        out(&format!(
            "matrix done in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}
