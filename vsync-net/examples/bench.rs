//! Throughput and latency of safe, totally ordered multicast over TCP on
//! loopback: `members` processes of one group in this process (one tokio
//! runtime), every member multicasting as fast as backpressure allows.
//!
//! ```text
//! cargo run --release -p vsync-net --example bench -- [--members 3] [--payload 64] [--seconds 5] [--rate R]
//! ```
//!
//! `--rate R` paces each member to R multicasts per second (default: as fast
//! as backpressure allows, which measures throughput; the latency is then
//! mostly queueing).
//!
//! Latency is from `multicast` to the sender's own delivery, which happens
//! only once every member holds the message (safe delivery).

use bytes::Bytes;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use vsync_net::{Config, Event, Group, GroupHandle};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let members = arg("--members", 3).max(1);
    let payload = arg("--payload", 64).max(8) as usize;
    let seconds = arg("--seconds", 5);
    let rate = arg("--rate", 0);
    let config = |node: u64| {
        let mut c = Config::new(node, "127.0.0.1:0".parse().expect("address"), "bench");
        c.incarnation = Some(1);
        c.engine = vsync_core::Config::with_suspect_timeout(2_000_000);
        c
    };
    let mut handles: Vec<GroupHandle> = vec![Group::found(config(1)).await?];
    let seed = handles[0].local_addr();
    for node in 2..=members {
        let mut c = config(node);
        c.seeds = vec![seed];
        handles.push(Group::join(c).await?);
    }
    // Wait until everyone is in one view of all members.
    for h in &mut handles {
        loop {
            match h.next_event().await {
                Some(Event::View { view, .. }) if view.members.len() == members as usize => break,
                Some(_) => {}
                None => return Err("event stream ended".into()),
            }
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for mut h in handles {
        let sender = h.sender();
        let me = h.pid();
        tokio::spawn(async move {
            let mut buf = vec![0u8; payload];
            let mut tick = (rate > 0).then(|| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            while Instant::now() < end {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let t = start.elapsed().as_nanos() as u64;
                buf[..8].copy_from_slice(&t.to_be_bytes());
                if sender
                    .multicast(Bytes::copy_from_slice(&buf))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut delivered = 0u64;
            let deadline = end + Duration::from_secs(2);
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline.into(), h.next_event()).await
            {
                if let Event::Deliver { msg, payload, .. } = ev {
                    delivered += 1;
                    if msg.sender == me {
                        let sent = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                        let now = start.elapsed().as_nanos() as u64;
                        let _ = hist.record(now.saturating_sub(sent) / 1000);
                    }
                }
            }
            h.shutdown().await;
            (delivered, hist)
        }));
    }
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        let (d, h) = t.await?;
        total += d;
        hist.add(&h).expect("same bounds");
    }
    let per_member = total as f64 / members as f64 / seconds as f64;
    let pace = if rate > 0 {
        format!("{rate}/s per sender")
    } else {
        "unpaced".to_string()
    };
    println!(
        "{members} members, {payload}-byte payloads, {pace}, {seconds} s: {per_member:.0} deliveries/s per member \
         ({:.1} MB/s), latency to own safe delivery: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        per_member * payload as f64 / 1e6,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    Ok(())
}
