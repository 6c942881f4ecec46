//! Runs `rsm-node` processes for the real-process tests: spawn, read their
//! lines, kill -9; every wait is bounded and every child is killed and
//! reaped when its [`Node`] drops, even when the test panics.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rsm-node");

/// One test at a time: they are timing sensitive on two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    cv: Condvar,
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct Spec {
    pub node: u64,
    pub group: String,
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub data: PathBuf,
    pub durability: &'static str,
    pub start: String,
    pub expect: usize,
    pub machine: &'static str,
    pub checkpoint_every: u64,
}

pub struct Node {
    pub spec: Spec,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Lines>,
}

impl Node {
    pub fn start(spec: Spec) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args(["--node", &spec.node.to_string()])
            .args(["--group", &spec.group])
            .args(["--listen", &spec.listen.to_string()])
            .args(["--data", &spec.data.display().to_string()])
            .args(["--durability", spec.durability])
            .args(["--start", &spec.start])
            .args(["--expect", &spec.expect.to_string()])
            .args(["--machine", spec.machine])
            .args(["--suspect-ms", "400"])
            .arg("--insecure")
            .args(["--checkpoint-every", &spec.checkpoint_every.to_string()]);
        if !spec.seeds.is_empty() {
            let s: Vec<String> = spec.seeds.iter().map(|a| a.to_string()).collect();
            cmd.args(["--seeds", &s.join(",")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rsm-node");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Lines::default());
        let l2 = lines.clone();
        let node = spec.node;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("RSM_TEST_VERBOSE").is_some() {
                    eprintln!("n{node}| {line}");
                }
                l2.lines.lock().expect("lines").push(line);
                l2.cv.notify_all();
            }
        });
        Node {
            spec,
            child,
            stdin,
            lines,
        }
    }

    pub fn cmd(&mut self, line: &str) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lines.lock().expect("lines").clone()
    }

    /// Waits until `f` holds on the lines so far.
    pub fn wait_for(&self, what: &str, limit: Duration, f: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        let mut g = self.lines.lines.lock().expect("lines");
        while !f(&g) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "n{}: timed out waiting for {what}; last lines: {:?}",
                self.spec.node,
                g.iter().rev().take(12).collect::<Vec<_>>()
            );
            g = self.lines.cv.wait_timeout(g, left).expect("cv").0;
        }
    }

    /// Sends `cmd` and returns the first new line starting with `prefix`.
    pub fn ask(&mut self, cmd: &str, prefix: &str, limit: Duration) -> String {
        let before = self.lines().len();
        self.cmd(cmd);
        let p = prefix.to_string();
        self.wait_for(prefix, limit, |l| {
            l[before..]
                .iter()
                .any(|x| x.starts_with(&p) || x.starts_with("ERROR"))
        });
        let l = self.lines();
        l[before..]
            .iter()
            .find(|x| x.starts_with(prefix) || x.starts_with("ERROR"))
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the node serves with `members` members.
    pub fn wait_serving(&self, members: usize, limit: Duration) {
        self.wait_for("serving", limit, |l| {
            let last_view = l.iter().rev().find(|x| x.starts_with("VIEW "));
            let n = last_view.map_or(0, |v| {
                v.split_whitespace()
                    .nth(2)
                    .map_or(0, |m| m.split(',').count())
            });
            let role = l.iter().rev().find(|x| x.starts_with("ROLE "));
            n == members
                && role.is_some_and(|r| {
                    r.contains("Member") || r.contains("Coordinator") || r.contains("Donor")
                })
        });
    }

    /// Ids acknowledged so far (`ACKED <id>` lines).
    pub fn acked(&self) -> Vec<u64> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("ACKED "))
            .filter_map(|x| x.parse().ok())
            .collect()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        self.stdin = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spec(
    node: u64,
    group: &str,
    dir: &Path,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
) -> Spec {
    Spec {
        node,
        group: group.into(),
        listen,
        seeds,
        data: dir.join(format!("n{node}")),
        durability: "memory",
        start: "join".into(),
        expect: 1,
        machine: "journal",
        checkpoint_every: 100_000,
    }
}
