//! Shared helpers for the vsync-kv integration tests: real `vsync-kv`
//! processes on OS-picked loopback ports, temporary data directories, and a
//! Drop guard that kills every child even when a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One `vsync-kv node` process.
pub struct Node {
    pub id: u64,
    pub child: Option<Child>,
    pub resp: SocketAddr,
    pub listen: SocketAddr,
    pub http: Option<SocketAddr>,
    pub data: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts a node; `extra` are more arguments. Waits for its ready line.
/// Tries twice: the node picks its group port by binding port 0 and
/// releasing it, so another process may take it in between (rare; the
/// failed attempt's error is on stderr).
pub fn spawn(id: u64, data: PathBuf, seeds: &[SocketAddr], extra: &[&str]) -> Node {
    spawn_logged(id, data, seeds, extra, None)
}

/// Like [`spawn`], with the node's standard error (its log) appended to
/// `log` instead of the test's.
pub fn spawn_logged(
    id: u64,
    data: PathBuf,
    seeds: &[SocketAddr],
    extra: &[&str],
    log: Option<&std::path::Path>,
) -> Node {
    match try_spawn(id, data.clone(), "127.0.0.1:0", seeds, extra, log) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("node {id}: {e}; retrying once");
            try_spawn(id, data, "127.0.0.1:0", seeds, extra, log)
                .unwrap_or_else(|e| panic!("node {id}: {e}"))
        }
    }
}

/// Starts a node whose group traffic listens on `listen` (a fixed port, as
/// in a real deployment, so that a restart with the same command line is
/// reachable where it was). Panics if it does not come up.
pub fn spawn_on(
    id: u64,
    data: PathBuf,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    extra: &[&str],
) -> Node {
    try_spawn(id, data, &listen.to_string(), seeds, extra, None)
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

/// Runs `vsync-kv node` with these arguments to its end (for a start that
/// must be refused); returns its exit success and standard error. Killed
/// after `within`.
pub fn run_to_exit(
    id: u64,
    data: &std::path::Path,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    extra: &[&str],
    within: Duration,
) -> (Option<bool>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsync-kv"));
    cmd.args([
        "node",
        "--id",
        &id.to_string(),
        "--listen",
        &listen.to_string(),
    ])
    .args([
        "--resp",
        "127.0.0.1:0",
        "--insecure",
        "--suspect-timeout-ms",
        "1000",
    ])
    .arg("--data")
    .arg(data);
    for s in seeds {
        cmd.args(["--seed", &s.to_string()]);
    }
    let mut child = cmd
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vsync-kv");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap_or_default())
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn try_spawn(
    id: u64,
    data: PathBuf,
    listen: &str,
    seeds: &[SocketAddr],
    extra: &[&str],
    log: Option<&std::path::Path>,
) -> Result<Node, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsync-kv"));
    cmd.args([
        "node",
        "--id",
        &id.to_string(),
        "--listen",
        listen,
        "--resp",
        "127.0.0.1:0",
    ])
    .arg("--data")
    .arg(&data)
    .args(["--suspect-timeout-ms", "1000", "--http", "127.0.0.1:0"]);
    for s in seeds {
        cmd.args(["--seed", &s.to_string()]);
    }
    if !extra.contains(&"--key") {
        cmd.arg("--insecure");
    }
    // Nodes log at info by default: keep the tests' output to warnings
    // unless the test run asks for more.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let stderr = match log {
        None => Stdio::inherit(),
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
    };
    cmd.args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = cmd.spawn().expect("spawn vsync-kv");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let mut node = Node {
        id,
        child: Some(child),
        resp: ([0, 0, 0, 0], 0).into(),
        listen: ([0, 0, 0, 0], 0).into(),
        http: None,
        data,
    };
    let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
        return Err("did not print its ready line within 20 s".into());
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("ready line is JSON");
    node.resp = v["resp"].as_str().unwrap().parse().unwrap();
    if let Some(l) = v["listen"].as_str() {
        node.listen = l.parse().unwrap();
    }
    node.http = v["http"].as_str().map(|h| h.parse().unwrap());
    Ok(node)
}

impl Node {
    /// A Redis client connection.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.resp)).unwrap();
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    /// `INFO vsync` field `name` (without the `vsync_` prefix).
    pub fn info(&self, name: &str) -> Option<String> {
        let mut c = self.conn();
        let text: String = redis::cmd("INFO").arg("vsync").query(&mut c).ok()?;
        text.lines()
            .filter_map(|l| l.strip_prefix("vsync_"))
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().to_string())
    }

    pub fn digest(&self) -> String {
        redis::cmd("DEBUG")
            .arg("DIGEST")
            .query(&mut self.conn())
            .unwrap()
    }

    pub fn position(&self) -> u64 {
        self.info("position")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (SIGTERM, SIGSTOP, SIGCONT).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid touches no memory of ours.
            let r = unsafe { libc::kill(c.id() as i32, sig) };
            assert_eq!(r, 0, "kill({sig})");
        }
    }

    /// Waits for the process to exit by itself; returns its success.
    pub fn wait_exit(&mut self, within: Duration) -> Option<bool> {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// GET over plain HTTP from the node's `--http` address.
    pub fn http_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.http.expect("http")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

/// Polls `f` every 50 ms until it is true or `within` passed.
pub fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Waits until `node` is a serving member of a view of `n` members.
pub fn wait_members(node: &Node, n: usize) {
    wait_until(
        Duration::from_secs(30),
        &format!("node {} in a view of {n}", node.id),
        || {
            node.info("member_count").as_deref() == Some(&n.to_string())
                && node.info("partition").as_deref() == Some("primary")
        },
    );
}

/// Starts `n` nodes (the first founds, the others join it) and waits until
/// all are members of one view.
pub fn cluster(dir: &std::path::Path, n: u64, extra: &[&str]) -> Vec<Node> {
    let first = spawn(1, dir.join("n1"), &[], extra);
    wait_members(&first, 1);
    let seed = first.listen;
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(spawn(id, dir.join(format!("n{id}")), &[seed], extra));
    }
    for node in &nodes {
        wait_members(node, n as usize);
    }
    nodes
}

/// Waits until every node reports the same position, then returns it.
pub fn wait_same_position(nodes: &[&Node]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ps: Vec<u64> = nodes.iter().map(|n| n.position()).collect();
        if ps.iter().all(|p| *p == ps[0]) {
            return ps[0];
        }
        if Instant::now() > deadline {
            let st: Vec<_> = nodes
                .iter()
                .map(|n| {
                    (
                        n.info("pid"),
                        n.info("view"),
                        n.info("role"),
                        n.info("position"),
                    )
                })
                .collect();
            panic!("positions still differ after 20 s: {st:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
