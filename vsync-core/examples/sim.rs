//! Runs the deterministic simulator over many seeds and checks every run.
//!
//! ```text
//! cargo run --release -p vsync-core --example sim -- --seeds 100000
//! cargo run --release -p vsync-core --example sim -- --seed 1234 --trace
//! ```
//! Options: `--seeds N` (how many), `--start S` (first seed), `--seed S`
//! (just one), `--size K` (force the group size), `--trace` (print the run),
//! `--mutation NAME` (break the engine on purpose: flush-drops-unordered,
//! deliver-unstable, ignore-quorum, causal-ignores-deps, merge-never,
//! split-guessed-from-members), `--threads T`,
//! `--policy primary|partitionable`, `--modes fifo,causal,total,safe` (the
//! delivery modes to draw from; otherwise drawn per seed).
//! Exits non-zero if any seed violates a guarantee, and prints the command
//! that replays the first failing seed.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use vsync_core::Delivery;
use vsync_core::checker::Policy;
use vsync_core::sim::{self, SimOptions};

struct Args {
    start: u64,
    seeds: u64,
    opts: SimOptions,
    threads: usize,
    single: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        start: 0,
        seeds: 1000,
        opts: SimOptions::default(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        single: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
        match arg.as_str() {
            "--seeds" => a.seeds = num(val()?)?,
            "--start" => a.start = num(val()?)?,
            "--seed" => {
                a.start = num(val()?)?;
                a.seeds = 1;
                a.single = true;
            }
            "--size" => a.opts.size = Some(num(val()?)? as usize),
            "--threads" => a.threads = num(val()?)?.max(1) as usize,
            "--trace" => a.opts.trace = true,
            "--policy" => {
                a.opts.policy = Some(match val()?.as_str() {
                    "primary" => Policy::PrimaryComponent,
                    "partitionable" => Policy::Partitionable,
                    other => return Err(format!("unknown policy {other}")),
                })
            }
            "--mutation" => match val()?.as_str() {
                "flush-drops-unordered" => a.opts.mutations.flush_drops_unordered = true,
                "deliver-unstable" => a.opts.mutations.deliver_unstable = true,
                "ignore-quorum" => a.opts.mutations.ignore_quorum = true,
                "causal-ignores-deps" => a.opts.mutations.causal_ignores_deps = true,
                "merge-never" => a.opts.mutations.merge_never = true,
                "split-guessed-from-members" => {
                    a.opts.mutations.split_guessed_from_members = true;
                }
                other => return Err(format!("unknown mutation {other}")),
            },
            "--modes" => {
                let mut modes = Vec::new();
                for m in val()?.split(',') {
                    modes.push(match m {
                        "fifo" => Delivery::Fifo,
                        "causal" => Delivery::Causal,
                        "total" => Delivery::Total,
                        "safe" => Delivery::Safe,
                        other => return Err(format!("unknown delivery mode {other}")),
                    });
                }
                a.opts.modes = Some(modes);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: sim [--seeds N] [--start S] [--seed S] [--size K] [--trace] \
                     [--mutation NAME] [--threads T] [--policy primary|partitionable] \
                     [--modes fifo,causal,total,safe]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    if args.single {
        let r = sim::run(args.start, &args.opts);
        for line in &r.trace {
            println!("{line}");
        }
        println!("seed {} profile {:?}", r.seed, r.profile);
        println!(
            "messages {} deliveries {} installs {} end {} us",
            r.messages, r.deliveries, r.installs, r.end
        );
        for v in &r.violations {
            println!("VIOLATION {v}");
        }
        return if r.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let failed = AtomicU64::new(0);
    let first_fail = AtomicU64::new(u64::MAX);
    let ran = AtomicU64::new(0);
    let forks = AtomicU64::new(0);
    let diverged = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let r = sim::run(seed, &args.opts);
                    let done = ran.fetch_add(1, Ordering::Relaxed) + 1;
                    forks.fetch_add(r.forks, Ordering::Relaxed);
                    diverged.fetch_add(r.diverged, Ordering::Relaxed);
                    if !r.violations.is_empty() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_fail.fetch_min(seed, Ordering::Relaxed);
                        eprintln!("seed {seed}: {}", r.violations[0]);
                    }
                    if done % 10_000 == 0 {
                        eprintln!("{done} seeds, {} violated", failed.load(Ordering::Relaxed));
                    }
                }
            });
        }
    });
    let ran = ran.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "ran {ran} seeds ({}..{end}), {failed} violated, in {:.1} s; {} forked views, {} processes lost a merge",
        args.start,
        started.elapsed().as_secs_f64(),
        forks.load(Ordering::Relaxed),
        diverged.load(Ordering::Relaxed),
    );
    let first = first_fail.load(Ordering::Relaxed);
    if failed > 0 {
        let mut replay =
            format!("cargo run --release -p vsync-core --example sim -- --seed {first} --trace");
        if let Some(k) = args.opts.size {
            replay.push_str(&format!(" --size {k}"));
        }
        println!("first failing seed: {first}; replay with:\n  {replay}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
