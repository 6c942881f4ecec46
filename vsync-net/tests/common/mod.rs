//! A harness for tests that run `vsync-node` processes: spawn them, read
//! their event lines, signal them, and check their histories afterwards.
//!
//! Every wait is bounded; every child is killed and reaped when its [`Proc`]
//! drops, even when the test panics.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vsync_core::checker::{CheckOptions, check_all};
use vsync_core::history::{Event, History, read_jsonl};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vsync-node");

/// Runs tests that start processes one at a time: they are timing
/// sensitive, and the machine has two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A pid as the binary prints it: `n<node>.<inc>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct P {
    pub node: u64,
    pub inc: u64,
}

impl P {
    pub fn parse(s: &str) -> Option<P> {
        let (n, i) = s.strip_prefix('n')?.split_once('.')?;
        Some(P {
            node: n.parse().ok()?,
            inc: i.parse().ok()?,
        })
    }
}

/// A `VIEW <id> <members>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewLine {
    pub id: String,
    pub members: Vec<P>,
}

impl ViewLine {
    pub fn parse(line: &str) -> Option<ViewLine> {
        let mut w = line.split_whitespace();
        if w.next()? != "VIEW" {
            return None;
        }
        let id = w.next()?.to_string();
        let members = w.next()?.split(',').map(P::parse).collect::<Option<_>>()?;
        Some(ViewLine { id, members })
    }

    pub fn nodes(&self) -> BTreeSet<u64> {
        self.members.iter().map(|p| p.node).collect()
    }
}

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    cv: Condvar,
}

/// How to start a process.
#[derive(Clone, Debug)]
pub struct Spec {
    pub node: u64,
    pub seeds: Vec<SocketAddr>,
    pub found: bool,
    pub suspect_ms: u64,
    pub listen: String,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// The cluster key file (`--key`); `None`: `--insecure`.
    pub key: Option<PathBuf>,
}

impl Spec {
    pub fn new(node: u64, suspect_ms: u64) -> Spec {
        Spec {
            node,
            seeds: Vec::new(),
            found: false,
            suspect_ms,
            listen: "127.0.0.1:0".into(),
            netns: None,
            key: None,
        }
    }
}

/// One running `vsync-node`.
pub struct Proc {
    pub node: u64,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Lines>,
    pub history: PathBuf,
    stderr: PathBuf,
    /// Killed with SIGKILL (its history gets a crash record).
    pub killed: bool,
    /// Exited (no longer running).
    pub gone: bool,
}

impl Proc {
    pub fn spawn(dir: &Path, spec: &Spec) -> Proc {
        let history = dir.join(format!("n{}.jsonl", spec.node));
        let stderr = dir.join(format!("n{}.stderr", spec.node));
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("--node")
            .arg(spec.node.to_string())
            .arg("--listen")
            .arg(&spec.listen)
            .arg("--group")
            .arg("test")
            .arg("--history")
            .arg(&history)
            .arg("--suspect-ms")
            .arg(spec.suspect_ms.to_string());
        for s in &spec.seeds {
            cmd.arg("--seed").arg(s.to_string());
        }
        if spec.found {
            cmd.arg("--found");
        }
        match &spec.key {
            Some(k) => cmd.arg("--key").arg(k),
            None => cmd.arg("--insecure"),
        };
        let err = File::create(&stderr).expect("stderr file");
        cmd.env(
            "RUST_LOG",
            std::env::var("VSYNC_TEST_LOG").unwrap_or_else(|_| "vsync_net=info".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err));
        let mut child = cmd.spawn().expect("spawn vsync-node");
        let stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Lines::default());
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut v = o.lines.lock().unwrap();
                v.push(line);
                o.cv.notify_all();
            }
        });
        let p = Proc {
            node: spec.node,
            stdin: child.stdin.take(),
            child,
            out,
            history,
            stderr,
            killed: false,
            gone: false,
        };
        // `PID` follows `LISTEN`.
        p.wait_for("LISTEN and PID", Duration::from_secs(20), |l| {
            l.iter().any(|l| l.starts_with("PID "))
        });
        p
    }

    pub fn lines(&self) -> Vec<String> {
        self.out.lines.lock().unwrap().clone()
    }

    /// Waits until `pred` holds of the output lines; panics (with the
    /// process's output) after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[String]) -> bool) {
        if !self.try_wait_for(timeout, pred) {
            panic!(
                "n{}: timed out waiting for {what}\n{}",
                self.node,
                self.dump()
            );
        }
    }

    pub fn try_wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut v = self.out.lines.lock().unwrap();
        loop {
            if pred(&v) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            v = self.out.cv.wait_timeout(v, deadline - now).unwrap().0;
        }
    }

    /// The address of the current incarnation.
    pub fn addr(&self) -> SocketAddr {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("LISTEN "))
            .and_then(|a| a.parse().ok())
            .expect("LISTEN line")
    }

    /// The current incarnation.
    pub fn pid(&self) -> P {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("PID "))
            .and_then(P::parse)
            .expect("PID line")
    }

    /// The most recent view.
    pub fn last_view(&self) -> Option<ViewLine> {
        self.lines().iter().rev().find_map(|l| ViewLine::parse(l))
    }

    /// Deliveries so far (the last `DELIVERED` line).
    pub fn delivered(&self) -> u64 {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("DELIVERED "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn has_line(&self, prefix: &str) -> bool {
        self.lines().iter().any(|l| l.starts_with(prefix))
    }

    pub fn cmd(&mut self, c: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{c}");
            let _ = s.flush();
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.child.id());
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if self.gone {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
        self.gone = true;
    }

    /// Asks it to exit; kills it if it does not within 10 s.
    pub fn exit(&mut self) {
        if self.gone {
            return;
        }
        self.cmd("exit");
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.gone = true;
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log holds a line containing every one of `parts`;
    /// panics (with the process's output) after `timeout`.
    pub fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(l) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "n{}: no log line with {parts:?} within {timeout:?}\n{}",
                    self.node,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of output and log, for a failure message.
    pub fn dump(&self) -> String {
        let lines = self.lines();
        let skip = lines.len().saturating_sub(40);
        let mut s = format!("---- n{} stdout (last 40 lines)\n", self.node);
        for l in &lines[skip..] {
            s.push_str(l);
            s.push('\n');
        }
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let errs: Vec<&str> = err.lines().collect();
        let skip = errs.len().saturating_sub(30);
        s.push_str(&format!("---- n{} stderr (last 30 lines)\n", self.node));
        for l in &errs[skip..] {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.gone {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A set of processes of one group.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub procs: Vec<Proc>,
    pub suspect_ms: u64,
    /// The cluster key file the members use (`None`: `--insecure`).
    pub key: Option<PathBuf>,
    started: Instant,
}

impl Cluster {
    pub fn empty(suspect_ms: u64) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            procs: Vec::new(),
            suspect_ms,
            key: None,
            started: Instant::now(),
        }
    }

    /// An empty cluster whose members use a new cluster key (written in
    /// the cluster's directory as `cluster.key`).
    pub fn empty_secured(suspect_ms: u64) -> Cluster {
        let mut c = Cluster::empty(suspect_ms);
        let path = c.dir.path().join("cluster.key");
        vsync_net::keygen(&path).expect("keygen");
        c.key = Some(path);
        c
    }

    /// Founds a group of `n` nodes (1 founds, the others join through it)
    /// and waits until all are in one view.
    pub fn start(n: u64, suspect_ms: u64) -> Cluster {
        Cluster::start_in(Cluster::empty(suspect_ms), n)
    }

    /// [`Cluster::start`] with a cluster key.
    pub fn start_secured(n: u64, suspect_ms: u64) -> Cluster {
        Cluster::start_in(Cluster::empty_secured(suspect_ms), n)
    }

    fn start_in(mut c: Cluster, n: u64) -> Cluster {
        let mut spec = Spec::new(1, c.suspect_ms);
        spec.key = c.key.clone();
        spec.found = true;
        c.add(&spec);
        for node in 2..=n {
            c.join(node);
        }
        let all: Vec<u64> = (1..=n).collect();
        c.wait_converged(&all, Duration::from_secs(30));
        c
    }

    pub fn add(&mut self, spec: &Spec) -> &mut Proc {
        let p = Proc::spawn(self.dir.path(), spec);
        self.procs.push(p);
        self.procs.last_mut().expect("just pushed")
    }

    /// Starts one process per spec: the first founds the group, the others
    /// join through it. Waits until all are in one view.
    pub fn start_specs(mut specs: Vec<Spec>, suspect_ms: u64) -> Cluster {
        let mut c = Cluster::empty(suspect_ms);
        specs[0].found = true;
        c.add(&specs[0]);
        let seed = c.procs[0].addr();
        for s in &mut specs[1..] {
            s.seeds = vec![seed];
            c.add(s);
        }
        let all: Vec<u64> = specs.iter().map(|s| s.node).collect();
        c.wait_converged(&all, Duration::from_secs(30));
        c
    }

    /// Starts `node`, joining through node 1.
    pub fn join(&mut self, node: u64) -> &mut Proc {
        let mut spec = Spec::new(node, self.suspect_ms);
        spec.seeds = vec![self.node(1).addr()];
        spec.key = self.key.clone();
        self.add(&spec)
    }

    pub fn node(&self, node: u64) -> &Proc {
        self.procs
            .iter()
            .find(|p| p.node == node)
            .expect("no such node")
    }

    pub fn node_mut(&mut self, node: u64) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.node == node)
            .expect("no such node")
    }

    pub fn log(&self, what: &str) {
        eprintln!("[{:>7.3}s] {what}", self.started.elapsed().as_secs_f64());
    }

    pub fn dump(&self) -> String {
        self.procs.iter().map(Proc::dump).collect()
    }

    /// Waits until each of `nodes` has, as its latest view, one and the same
    /// view whose members are exactly the current incarnations of `nodes`.
    pub fn wait_converged(&self, nodes: &[u64], timeout: Duration) -> ViewLine {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.converged(nodes) {
                self.log(&format!("converged: {} {:?}", v.id, v.nodes()));
                return v;
            }
            if Instant::now() > deadline {
                let views: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("n{n}: {:?}", self.node(*n).last_view()))
                    .collect();
                panic!(
                    "nodes {nodes:?} did not converge within {timeout:?}\n{}\n{}",
                    views.join("\n"),
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn converged(&self, nodes: &[u64]) -> Option<ViewLine> {
        let want: BTreeSet<P> = nodes.iter().map(|n| self.node(*n).pid()).collect();
        let first = self.node(nodes[0]).last_view()?;
        let members: BTreeSet<P> = first.members.iter().copied().collect();
        if members != want || first.members.len() != want.len() {
            return None;
        }
        for n in &nodes[1..] {
            if self.node(*n).last_view()? != first {
                return None;
            }
        }
        Some(first)
    }

    /// Stops every live process, reads every history, adds a crash record
    /// for each process killed with SIGKILL, and runs the checker (no
    /// liveness: a real run does not end with a quiet period). Panics on any
    /// violation. Returns the histories.
    pub fn check(&mut self) -> Vec<History> {
        for p in &mut self.procs {
            p.exit();
        }
        let mut all = Vec::new();
        for p in &self.procs {
            let f = File::open(&p.history).expect("history file");
            let mut hs = read_jsonl(BufReader::new(f))
                .unwrap_or_else(|e| panic!("n{}: bad history: {e}", p.node));
            assert!(!hs.is_empty(), "n{}: empty history", p.node);
            if p.killed {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                // The incarnation that was running is the last one.
                hs.last_mut().expect("non-empty").push(t, Event::Crash);
            }
            all.extend(hs);
        }
        let records: usize = all.iter().map(|h| h.records.len()).sum();
        let violations = check_all(&all, &CheckOptions::default());
        self.log(&format!(
            "checked {} histories, {records} records: {} violations",
            all.len(),
            violations.len()
        ));
        if !violations.is_empty() {
            let v: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            panic!("checker found violations:\n{}", v.join("\n"));
        }
        all
    }
}

/// Counts events of one kind over all histories.
pub fn count(h: &[History], f: impl Fn(&Event) -> bool) -> usize {
    h.iter()
        .flat_map(|h| &h.records)
        .filter(|r| f(&r.event))
        .count()
}
