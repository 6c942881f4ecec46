//! `vsync-kv demo`: a guided tour on this machine. It starts three replicas
//! as separate processes on loopback with temporary data directories, and
//! narrates: writes, a kill -9 of a replica (the new view), a new replica
//! joining by state transfer, a checkpoint and a restart from it, and equal
//! state digests. Then two more clusters of five, one per partition policy,
//! are split 2|3 side by side (`DEBUG CUT`, `--fault-injection`) and
//! healed: the primary-component minority refuses writes and loses
//! nothing; under the partitionable policy both sides take writes, their
//! data differ, and the smaller side's writes are discarded at the merge
//! (the demo lists them from that replica's log).
//!
//! Guarantees: every process it starts is killed when the demo ends, fails
//! or is interrupted (a Drop guard per child; Ctrl-C reaches the children
//! too, being in the same process group); the temporary directory is
//! removed unless `--keep`; every wait is bounded, so it ends by itself
//! (normally in 20–30 s).

use crate::kv::cli::{DemoArgs, RespConn};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One replica process started by the demo.
struct Proc {
    id: u64,
    child: Option<Child>,
    resp: SocketAddr,
    listen: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Proc {
    fn conn(&self) -> Result<RespConn, String> {
        RespConn::connect(self.resp, Duration::from_secs(5))
    }

    fn call(&self, args: &[&str]) -> Result<String, String> {
        self.conn()?.call(args)
    }

    /// `INFO vsync` field `name`.
    fn info(&self, name: &str) -> String {
        crate::kv::cli::vsync_info(self.resp)
            .ok()
            .and_then(|f| f.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
            .unwrap_or_else(|| "?".into())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        // `kill -TERM` (procps) rather than libc, to keep this crate free of unsafe code.
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + within;
        while sent && Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("  {spinner:.cyan} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(80));
    pb
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("  {msg:<28} [{bar:30.green/white}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn step(n: u32, title: &str, fast: bool) {
    if !fast && n > 1 {
        // A moment to read the previous step.
        std::thread::sleep(Duration::from_millis(1200));
    }
    println!("\n\x1b[1m{n}. {title}\x1b[0m");
}

/// The demo's cluster key, generated in its directory.
const KEY_FILE: &str = "cluster.key";

/// Starts `vsync-kv node` for replica `id` of the main cluster.
fn start(id: u64, dir: &Path, seeds: &[SocketAddr]) -> Result<Proc, String> {
    start_as(id, dir, seeds, "replica", &[])
}

/// Starts `vsync-kv node` for replica `id`; its data, log (and, for the
/// main cluster, history) files are named `<name>-<id>` in `dir`; `extra`
/// are more arguments.
fn start_as(
    id: u64,
    dir: &Path,
    seeds: &[SocketAddr],
    name: &str,
    extra: &[&str],
) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let data: PathBuf = dir.join(format!("{name}-{id}"));
    let log =
        std::fs::File::create(dir.join(format!("{name}-{id}.log"))).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "node",
        "--id",
        &id.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--resp",
        "127.0.0.1:0",
    ])
    .arg("--data")
    .arg(&data)
    .args(["--suspect-timeout-ms", "400"])
    .arg("--key")
    .arg(dir.join(KEY_FILE))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::from(log));
    if name == "replica" {
        cmd.arg("--history")
            .arg(dir.join(format!("replica-{id}.jsonl")));
    }
    cmd.args(extra);
    for s in seeds {
        cmd.args(["--seed", &s.to_string()]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start replica {id}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut proc = Proc {
        id,
        child: Some(child),
        resp: ([127, 0, 0, 1], 0).into(),
        listen: ([127, 0, 0, 1], 0).into(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(15)).map_err(|_| {
        format!(
            "replica {id} did not start (see {}/{name}-{id}.log)",
            dir.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("replica {id}: {e}"))?;
    let addr = |k: &str| -> Result<SocketAddr, String> {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("replica {id} did not say its {k} address"))
    };
    proc.resp = addr("resp")?;
    proc.listen = addr("listen")?;
    Ok(proc)
}

/// Polls `f` until it is true, for at most `within`.
fn wait(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("timed out waiting for {what}"))
}

fn wait_view(p: &Proc, n: usize) -> Result<(), String> {
    wait(
        Duration::from_secs(20),
        &format!("replica {} to be in a view of {n}", p.id),
        || p.info("member_count") == n.to_string() && p.info("partition") == "primary",
    )
}

fn show_view(p: &Proc) {
    println!(
        "     view {} on replica {}: members [{}]",
        p.info("view"),
        p.id,
        p.info("members").replace(',', ", ")
    );
}

/// Writes `n` keys `prefix:i` through `p`, 50 per pipeline, with a bar.
fn write_keys(p: &Proc, prefix: &str, n: u64) -> Result<(), String> {
    let mut c = p.conn()?;
    let pb = bar(n, &format!("SET {prefix}:* via replica {}", p.id));
    let mut i = 0;
    while i < n {
        let batch: Vec<Vec<String>> = (i..(i + 50).min(n))
            .map(|k| vec!["SET".into(), format!("{prefix}:{k}"), format!("value-{k}")])
            .collect();
        for r in c.pipeline(&batch)? {
            r.map_err(|e| format!("a write failed: {e}"))?;
        }
        i += batch.len() as u64;
        pb.set_position(i);
    }
    pb.finish();
    Ok(())
}

/// Waits until all replicas are at one position, then returns their digests.
fn digests(ps: &[&Proc]) -> Result<Vec<(u64, String, String)>, String> {
    wait(Duration::from_secs(15), "equal positions", || {
        let pos: Vec<String> = ps.iter().map(|p| p.info("position")).collect();
        pos.iter().all(|x| *x == pos[0])
    })?;
    ps.iter()
        .map(|p| Ok((p.id, p.info("position"), p.call(&["DEBUG", "DIGEST"])?)))
        .collect()
}

/// Runs the demo.
pub fn run(a: DemoArgs) -> Result<(), String> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("vsync-kv-demo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path().to_path_buf();
    println!(
        "\x1b[1mvsync-kv demo\x1b[0m: a Redis-protocol key-value store replicated with virtual synchrony."
    );
    println!(
        "Three replicas run as separate processes on 127.0.0.1; their data and logs are in {}.",
        dir.display()
    );

    vsync_net::keygen(dir.join(KEY_FILE))
        .map_err(|e| format!("cannot create the demo's cluster key: {e}"))?;
    println!(
        "The replicas run secured: their links are authenticated and encrypted with a cluster key made for this run ({}); a process without it cannot join.",
        dir.join(KEY_FILE).display()
    );

    step(1, "Start three replicas", a.fast);
    let sp = spinner("replica 1 founds the cluster");
    let r1 = start(1, &dir, &[])?;
    wait_view(&r1, 1)?;
    sp.set_message("replicas 2 and 3 join it");
    let mut r2 = start(2, &dir, &[r1.listen])?;
    let mut r3 = start(3, &dir, &[r1.listen])?;
    for p in [&r1, &r2, &r3] {
        wait_view(p, 3)?;
    }
    sp.finish_and_clear();
    for p in [&r1, &r2, &r3] {
        println!(
            "     replica {} serves Redis clients on {} (try: redis-cli -p {})",
            p.id,
            p.resp,
            p.resp.port()
        );
    }
    show_view(&r1);

    step(
        2,
        "Write through one replica, read from every replica",
        a.fast,
    );
    write_keys(&r2, "user", 2_000)?;
    r1.call(&["SET", "greeting", "hello from replica 1"])?;
    wait(Duration::from_secs(5), "the greeting everywhere", || {
        [&r1, &r2, &r3].iter().all(|p| {
            p.call(&["GET", "greeting"])
                .is_ok_and(|v| v == "hello from replica 1")
        })
    })?;
    for p in [&r1, &r2, &r3] {
        println!(
            "     replica {}: GET greeting -> {:?}, DBSIZE -> {}",
            p.id,
            p.call(&["GET", "greeting"])?,
            p.call(&["DBSIZE"])?
        );
    }
    println!(
        "     Every write went through the group's total order, so every replica applied the same writes in the same order."
    );

    step(3, "kill -9 replica 3 while writes go on", a.fast);
    let writer_addr = r1.resp;
    let writer = std::thread::spawn(move || -> Result<u64, String> {
        let mut c = RespConn::connect(writer_addr, Duration::from_secs(5))?;
        let mut acked = 0;
        for k in 0..3_000u64 {
            c.call(&["SET", &format!("order:{k}"), &k.to_string()])?;
            acked += 1;
        }
        Ok(acked)
    });
    std::thread::sleep(Duration::from_millis(300));
    r3.kill9();
    let _ = vsync_core::timeline::append_crash(&dir.join("replica-3.jsonl"), wall_micros());
    println!("     replica 3 killed (SIGKILL): no goodbye, the others must notice.");
    let sp = spinner("waiting for the survivors to install a new view");
    wait_view(&r1, 2)?;
    wait_view(&r2, 2)?;
    sp.finish_and_clear();
    show_view(&r1);
    let acked = writer.join().map_err(|_| "the writer thread failed")??;
    let last = r2.call(&["GET", &format!("order:{}", acked - 1)])?;
    println!(
        "     {acked} writes acknowledged during the failure; replica 2 has the last one: order:{} = {last}",
        acked - 1
    );

    step(
        4,
        "A new replica joins and receives the state by transfer",
        a.fast,
    );
    let sp = spinner(
        "replica 4 asks to join; a member streams it a snapshot while the group keeps serving",
    );
    let r4 = start(4, &dir, &[r1.listen])?;
    wait_view(&r4, 3)?;
    sp.finish_and_clear();
    show_view(&r4);
    println!(
        "     replica 4 received {} bytes of state and now holds {} keys",
        r4.info("state_transfer_received_bytes"),
        r4.call(&["DBSIZE"])?
    );

    step(
        5,
        "Checkpoint replica 2, stop it, restart it from the checkpoint",
        a.fast,
    );
    r2.call(&["SAVE"])?;
    println!(
        "     SAVE: checkpoint written at position {}",
        r2.info("last_checkpoint")
    );
    let sp = spinner("SIGTERM: replica 2 finishes its requests and leaves the group cleanly");
    let clean = r2.terminate(Duration::from_secs(15));
    wait_view(&r1, 2)?;
    sp.finish_and_clear();
    println!(
        "     replica 2 exited {}; new view:",
        if clean { "cleanly" } else { "(forced)" }
    );
    show_view(&r1);
    write_keys(&r1, "while-away", 500)?;
    let sp = spinner("restarting replica 2 with the same data directory");
    let r2b = start(2, &dir, &[r1.listen])?;
    let loaded = r2b.info("last_checkpoint");
    wait_view(&r2b, 3)?;
    sp.finish_and_clear();
    println!(
        "     replica 2 loaded its checkpoint (position {loaded}) and caught up with the writes it missed:"
    );
    println!(
        "     GET while-away:499 on replica 2 -> {:?}",
        r2b.call(&["GET", "while-away:499"])?
    );
    show_view(&r2b);

    step(6, "Compare the replicas", a.fast);
    let ds = digests(&[&r1, &r2b, &r4])?;
    for (id, pos, d) in &ds {
        println!("     replica {id}: position {pos}, DEBUG DIGEST {d}");
    }
    let equal = ds.iter().all(|(_, _, d)| *d == ds[0].2);
    if equal {
        println!("     \x1b[32mAll digests are equal\x1b[0m: the replicas hold the same data.");
    } else {
        return Err("the digests differ: please report this as a bug".into());
    }

    let (primary, partitionable) = partition_step(&dir, a.fast)?;

    step(8, "Clean up", a.fast);
    let sp = spinner("stopping the replicas (SIGTERM)");
    let mut all = vec![r1, r2b, r4];
    for p in all.iter_mut().rev() {
        p.terminate(Duration::from_secs(10));
    }
    sp.finish_and_clear();
    drop(all);
    drop(r2);
    drop(r3);
    // The partition clusters are throwaway: killed.
    drop(primary);
    drop(partitionable);
    write_timeline(&dir, a.keep);
    if a.keep {
        let kept = tmp.keep();
        println!("     data and logs kept in {}", kept.display());
    } else {
        drop(tmp);
        println!("     replicas stopped, temporary data removed.");
    }
    println!(
        "\nDone in {:.1} s. Next: README.md shows how to run a cluster by hand.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Microseconds since the Unix epoch (the histories' clock).
fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Draws the run's histories as one timeline and says where it is (outside
/// the temporary directory unless it is kept).
fn write_timeline(dir: &Path, keep: bool) {
    let files: Vec<PathBuf> = (1..=4)
        .map(|n| dir.join(format!("replica-{n}.jsonl")))
        .filter(|p| p.exists())
        .collect();
    let out = if keep {
        dir.join("timeline.html")
    } else {
        std::env::temp_dir().join("vsync-kv-demo-timeline.html")
    };
    let opts = vsync_core::timeline::TimelineOptions {
        title: Some("vsync-kv demo".into()),
        ..Default::default()
    };
    match vsync_core::timeline::write_timeline(&files, &out, &opts) {
        Ok(t) => println!(
            "     timeline of this run: {} (checker: {} violations)",
            out.display(),
            t.violations.len()
        ),
        Err(e) => println!("     no timeline: {e}"),
    }
}

/// Waits until `p` serves in a view of `n` (either policy).
fn wait_serving(p: &Proc, n: usize) -> Result<(), String> {
    wait(
        Duration::from_secs(20),
        &format!("replica {} to serve in a view of {n}", p.id),
        || {
            p.info("member_count") == n.to_string()
                && matches!(p.info("partition").as_str(), "primary" | "serving")
        },
    )
}

/// Starts a cluster of five replicas running `policy`, cut-able with
/// `DEBUG CUT`.
fn start_split_cluster(dir: &Path, policy: &str) -> Result<Vec<Proc>, String> {
    let group = format!("demo-{policy}");
    let extra = [
        "--group",
        &group,
        "--partition-policy",
        policy,
        "--fault-injection",
    ];
    let first = start_as(1, dir, &[], policy, &extra)?;
    wait_serving(&first, 1)?;
    let seed = first.listen;
    let mut ps = vec![first];
    for id in 2..=5 {
        ps.push(start_as(id, dir, &[seed], policy, &extra)?);
    }
    for p in &ps {
        wait_serving(p, 5)?;
    }
    Ok(ps)
}

/// A reply in a few words.
fn said(r: Result<String, String>) -> String {
    match r {
        Ok(v) if v.is_empty() => "(nil)".into(),
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("refused ({})", e.split(' ').next().unwrap_or("error")),
    }
}

/// The discarded writes listed in a replica's log.
fn discarded_in_log(path: &Path) -> Vec<String> {
    const MARK: &str = "discarded write (lost the partition merge): ";
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(MARK).map(|(_, w)| w.to_string()))
        .collect()
}

/// Step 7: the same 2|3 partition under both policies, side by side.
/// Returns the two clusters (killed by the caller).
fn partition_step(dir: &Path, fast: bool) -> Result<(Vec<Proc>, Vec<Proc>), String> {
    step(
        7,
        "The same partition under both policies: why virtual synchrony is not consensus",
        fast,
    );
    println!("     Two more clusters of five replicas, one per --partition-policy:");
    println!(
        "       primary        only a side holding a majority of the last view goes on (the default)"
    );
    println!(
        "       partitionable  every side goes on; after the heal the larger side wins and the others' writes are discarded"
    );
    let sp = spinner("starting 2 x 5 replicas");
    let pc = start_split_cluster(dir, "primary")?;
    let pt = start_split_cluster(dir, "partitionable")?;
    for c in [&pc, &pt] {
        c[2].call(&["SET", "color", "green"])?;
    }
    for c in [&pc, &pt] {
        wait(Duration::from_secs(5), "color everywhere", || {
            c.iter()
                .all(|p| p.call(&["GET", "color"]).is_ok_and(|v| v == "green"))
        })?;
    }
    sp.finish_and_clear();
    println!(
        "     Both clusters hold color = \"green\". Now each is cut in two: replicas 1 and 2 | replicas 3, 4 and 5 (DEBUG CUT)."
    );
    for c in [&pc, &pt] {
        for p in &c[..2] {
            p.call(&["DEBUG", "CUT", "3", "4", "5"])?;
        }
        for p in &c[2..] {
            p.call(&["DEBUG", "CUT", "1", "2"])?;
        }
    }
    let sp = spinner("waiting for each side to notice the other is gone (0.4 s suspicion timeout)");
    for p in &pc[..2] {
        wait(
            Duration::from_secs(20),
            "the primary cluster's side of 2 to block",
            || p.info("partition") == "minority",
        )?;
    }
    wait_serving(&pc[2], 3)?;
    wait_serving(&pt[0], 2)?;
    wait_serving(&pt[1], 2)?;
    wait_serving(&pt[2], 3)?;
    sp.finish_and_clear();
    for (name, c) in [("primary", &pc), ("partitionable", &pt)] {
        let small = c[0].call(&["SET", "color", "red"]);
        let small2 = c[0].call(&["SET", "note", "written on the side of 2"]);
        let big = c[2].call(&["SET", "color", "blue"]);
        println!(
            "     {name:<14} replica 1 (side of 2): SET color red -> {}; SET note ... -> {}",
            said(small),
            said(small2)
        );
        println!(
            "     {:<14} replica 3 (side of 3): SET color blue -> {}",
            "",
            said(big)
        );
    }
    for (name, c) in [("primary", &pc), ("partitionable", &pt)] {
        wait(Duration::from_secs(5), "the side of 2 to agree", || {
            c[0].info("position") == c[1].info("position")
        })?;
        println!(
            "     {name:<14} GET color: {} on the side of 2, {} on the side of 3; digests {} | {}",
            said(c[0].call(&["GET", "color"])),
            said(c[2].call(&["GET", "color"])),
            short(c[0].call(&["DEBUG", "DIGEST"])),
            short(c[2].call(&["DEBUG", "DIGEST"]))
        );
    }
    println!(
        "     primary: the side of 2 still answers reads from the state it had, but takes no writes: its data is an"
    );
    println!(
        "     earlier state of the majority's. partitionable: the two sides took different writes; two histories now give"
    );
    println!("     different answers to the same question, at the same time.");

    println!("     The links come back (DEBUG HEAL).");
    for c in [&pc, &pt] {
        for p in c.iter() {
            p.call(&["DEBUG", "HEAL"])?;
        }
    }
    let sp = spinner("the sides find each other and become one group again");
    for c in [&pc, &pt] {
        for p in c.iter() {
            wait_serving(p, 5)?;
        }
    }
    wait(
        Duration::from_secs(10),
        "the smaller side to report the lost merge",
        || pt[0].info("divergences") != "0",
    )?;
    for c in [&pc, &pt] {
        wait(Duration::from_secs(15), "equal positions", || {
            let pos: Vec<String> = c.iter().map(|p| p.info("position")).collect();
            pos.iter().all(|x| *x == pos[0])
        })?;
    }
    sp.finish_and_clear();
    let digests = |c: &[Proc]| -> Vec<String> {
        c.iter()
            .map(|p| short(p.call(&["DEBUG", "DIGEST"])))
            .collect()
    };
    let dpc = digests(&pc);
    let dpt = digests(&pt);
    println!(
        "     primary        replicas 1 and 2 were left out while the majority went on, then rejoined and took its data:"
    );
    println!(
        "                    GET color -> {} everywhere; they had acknowledged no write during the split, so nothing acknowledged is lost.",
        said(pc[0].call(&["GET", "color"]))
    );
    println!(
        "     partitionable  the side of 3 won the merge (more members); replicas 1 and 2 discarded their history since the split"
    );
    println!(
        "                    and took the winner's data. Replica 1 reports it: INFO vsync_discarded_writes:{} vsync_last_divergence:{}",
        pt[0].info("discarded_writes"),
        pt[0].info("last_divergence")
    );
    let listed = discarded_in_log(&dir.join("partitionable-1.log"));
    println!("                    and its log lists the writes it threw away:");
    for w in listed.iter().take(5) {
        println!("                      {w}");
    }
    println!(
        "                    GET color -> {} everywhere, GET note -> {}: writes that were acknowledged with OK are gone.",
        said(pt[0].call(&["GET", "color"])),
        said(pt[0].call(&["GET", "note"]))
    );
    let equal = |d: &[String]| d.iter().all(|x| *x == d[0]);
    println!(
        "     Digests after the heal: primary {} ({}), partitionable {} ({}).",
        dpc[0],
        if equal(&dpc) {
            "all five equal"
        } else {
            "DIFFERENT"
        },
        dpt[0],
        if equal(&dpt) {
            "all five equal"
        } else {
            "DIFFERENT"
        }
    );
    if !equal(&dpc) || !equal(&dpt) || listed.is_empty() {
        return Err(
            "the partition step did not end as it should: please report this as a bug".into(),
        );
    }
    println!(
        "     In plain words: consensus (and the primary-component policy) never acknowledges a write it may have to undo,"
    );
    println!(
        "     so a side without a majority stops. Virtual synchrony promises that everyone in a view sees the same history;"
    );
    println!(
        "     under the partitionable policy each side of a partition is its own view with its own history, both answer"
    );
    println!(
        "     clients, and at the merge only the winner's history survives: the rest is reported, not kept."
    );
    Ok((pc, pt))
}

/// A digest reply cut to 12 characters.
fn short(r: Result<String, String>) -> String {
    match r {
        Ok(d) => d.chars().take(12).collect(),
        Err(_) => "?".into(),
    }
}
