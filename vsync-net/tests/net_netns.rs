//! The kill test across Linux network namespaces: each process in its own
//! namespace, linked by veth pairs to a bridge, so that traffic crosses real
//! (virtual) interfaces rather than loopback.
//!
//! Needs root and a working `ip netns`; otherwise it prints why and passes
//! without running. The namespaces use addresses of TEST-NET-1
//! (192.0.2.0/24), which exist only inside them.

mod common;

use common::{Cluster, Spec, serial};
use std::process::Command;
use std::time::Duration;

const SUSPECT_MS: u64 = 300;
const WAIT: Duration = Duration::from_secs(45);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces `<prefix>h` (a bridge) and `<prefix>1..=n` (one process
/// each, at 192.0.2.<i>); deleted on drop.
struct Netns {
    names: Vec<String>,
}

impl Netns {
    fn new(n: u64) -> Result<Netns, String> {
        let prefix = format!("vs{}x", std::process::id());
        let hub = format!("{prefix}h");
        let mut ns = Netns { names: Vec::new() };
        ip(&["netns", "add", &hub])?;
        ns.names.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 1..=n {
            let name = format!("{prefix}{i}");
            ip(&["netns", "add", &name])?;
            ns.names.push(name.clone());
            let peer = format!("h{i}");
            ip(&[
                "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns",
                &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &peer, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("192.0.2.{i}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    fn node(&self, i: u64) -> &str {
        &self.names[i as usize]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

#[test]
fn kill_one_of_three_across_network_namespaces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let _serial = serial();
    let ns = match Netns::new(3) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipped: cannot set up network namespaces: {e}");
            return;
        }
    };
    let specs: Vec<Spec> = (1..=3)
        .map(|i| {
            let mut s = Spec::new(i, SUSPECT_MS);
            s.listen = format!("192.0.2.{i}:0");
            s.netns = Some(ns.node(i).to_string());
            s
        })
        .collect();
    let mut c = Cluster::start_specs(specs, SUSPECT_MS);
    assert!(c.node(2).addr().to_string().starts_with("192.0.2.2:"));
    for node in 1..=3 {
        c.node_mut(node).cmd("send 20000");
    }
    c.node(1).wait_for("deliveries before the kill", WAIT, |l| {
        l.iter()
            .rev()
            .find_map(|l| l.strip_prefix("DELIVERED "))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 12_000)
    });
    c.log("killing n3 (kill -9)");
    c.node_mut(3).kill9();
    let v = c.wait_converged(&[1, 2], WAIT);
    assert_eq!(v.members.len(), 2);
    for node in [1, 2] {
        c.node(node)
            .wait_for("SENT", WAIT, |l| l.iter().any(|l| l.starts_with("SENT ")));
    }
    c.check();
}
