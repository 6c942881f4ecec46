//! How long a long history takes to draw: a synthetic run of 5 processes,
//! 22,000 multicasts each delivered by all (102,666 deliveries), a view
//! change every 2,000 multicasts and a crash. Prints the time to write and
//! read the JSON lines, to check, and to render (checker included and not).
//!
//! ```text
//! cargo run --release -p vsync-core --example timeline_bench [-- --messages N --out long.svg --jsonl long.jsonl]
//! ```

use std::time::Instant;
use vsync_core::checker::{self, CheckOptions};
use vsync_core::history::{self, Event, History};
use vsync_core::timeline::{self, TimelineOptions};
use vsync_core::{MsgId, Pid, View, ViewId};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let messages: u64 = flag("--messages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(22_000);
    let histories = synthetic(messages);
    let deliveries: usize = histories
        .iter()
        .flat_map(|h| &h.records)
        .filter(|r| matches!(r.event, Event::Deliver { .. }))
        .count();

    let t = Instant::now();
    let text: String = histories
        .iter()
        .flat_map(|h| &h.records)
        .map(|r| history::to_json_line(r) + "\n")
        .collect();
    let write = t.elapsed();
    let t = Instant::now();
    let back = history::read_jsonl(text.as_bytes()).expect("own output reads back");
    let read = t.elapsed();
    let t = Instant::now();
    let violations = checker::check_all(&back, &CheckOptions::default());
    let check = t.elapsed();
    let t = Instant::now();
    let plain = timeline::render_with_violations(&back, &violations, &TimelineOptions::default())
        .expect("renders");
    let render = t.elapsed();
    let t = Instant::now();
    let full = timeline::render(&back, &TimelineOptions::default()).expect("renders");
    let render_checked = t.elapsed();
    println!(
        "{deliveries} deliveries, {} records, {} MB of JSON lines",
        back.iter().map(|h| h.records.len()).sum::<usize>(),
        text.len() / 1_000_000
    );
    println!("  to JSON lines       {:>8.1} ms", ms(write));
    println!("  read_jsonl          {:>8.1} ms", ms(read));
    println!(
        "  check_all           {:>8.1} ms ({} violations)",
        ms(check),
        violations.len()
    );
    println!(
        "  render (no check)   {:>8.1} ms ({} KB of SVG, binned: {})",
        ms(render),
        plain.svg.len() / 1000,
        plain.binned
    );
    println!("  render with check   {:>8.1} ms", ms(render_checked));
    if let Some(out) = flag("--jsonl") {
        std::fs::write(&out, &text).expect("writes the JSON lines");
        println!("wrote {out}");
    }
    if let Some(out) = flag("--out") {
        std::fs::write(&out, &full.svg).expect("writes the SVG");
        println!("wrote {out}");
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Five founders; node 5 crashes at two thirds of the run and the others
/// install a view without it.
fn synthetic(messages: u64) -> Vec<History> {
    let pids: Vec<Pid> = (1..=5).map(|n| Pid::new(n, 1)).collect();
    let mut hs: Vec<History> = pids.iter().map(|p| History::new(*p)).collect();
    let mut t = 0u64;
    for h in &mut hs {
        h.push(t, Event::Start);
    }
    let mut members = pids.clone();
    let mut epoch = 0;
    let mut view = ViewId {
        epoch: 0,
        installer: pids[0],
    };
    let mut pos = 0;
    let mut seq = vec![0u64; 6];
    let crash_at = messages * 2 / 3;
    for i in 0..messages {
        if i % 2000 == 0 || i == crash_at {
            if i == crash_at {
                members.retain(|p| p.node.0 != 5);
                hs[4].push(t, Event::Crash);
            }
            epoch += 1;
            view = ViewId {
                epoch,
                installer: pids[0],
            };
            for (k, h) in hs.iter_mut().enumerate() {
                if members.contains(&pids[k]) {
                    t += 50;
                    h.push(
                        t,
                        Event::Install {
                            view: View {
                                id: view,
                                members: members.clone(),
                            },
                            joined: epoch == 1,
                            donor: None,
                        },
                    );
                }
            }
            pos = 0;
            seq = vec![0u64; 6];
        }
        let sender = members[(i as usize) % members.len()];
        let s = sender.node.0 as usize;
        seq[s] += 1;
        let msg = MsgId {
            view,
            sender,
            seq: seq[s],
        };
        t += 100;
        hs[s - 1].push(
            t,
            Event::Send {
                msg,
                mode: vsync_core::Delivery::Safe,
            },
        );
        pos += 1;
        for (k, h) in hs.iter_mut().enumerate() {
            if members.contains(&pids[k]) {
                h.push(
                    t + 200 + 10 * k as u64,
                    Event::Deliver {
                        msg,
                        view,
                        pos,
                        mode: vsync_core::Delivery::Safe,
                    },
                );
            }
        }
    }
    hs
}
