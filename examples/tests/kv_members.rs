//! Membership commands on a real 3-replica cluster: `vsync-kv members`
//! lists the view with each member's address and role; `vsync-kv evict`
//! removes a member through a view change, and the evicted replica, alive,
//! rejoins as a new incarnation; evicting oneself or a stranger is refused.

mod kv_common;

use kv_common::{cluster, wait_members, wait_until};
use std::time::Duration;

fn kv(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vsync-kv"))
        .args(args)
        .output()
        .expect("run vsync-kv");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn members_lists_the_view_and_evict_removes_a_member_that_then_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let resp = nodes[0].resp.to_string();
    let (ok, out) = kv(&["members", "--resp", &resp]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("coordinator"), "{out}");
    for n in &nodes {
        assert!(
            out.contains(&n.listen.to_string()),
            "{} missing: {out}",
            n.listen
        );
    }
    assert!(out.contains("(this replica, position"), "{out}");

    let before = nodes[2].info("pid");
    let (ok, out) = kv(&["evict", "--resp", &resp, "--node", "3"]);
    assert!(ok && out.contains("evicted n3."), "{out}");
    // Removed, alive, it rejoins as a new incarnation.
    wait_until(
        Duration::from_secs(30),
        "node 3 as a new incarnation",
        || {
            nodes[2]
                .info("pid")
                .is_some_and(|p| Some(&p) != before.as_ref())
        },
    );
    for n in &nodes {
        wait_members(n, 3);
    }

    let (ok, out) = kv(&["evict", "--resp", &resp, "--node", "1"]);
    assert!(!ok && out.contains("does not evict itself"), "{out}");
    let (ok, out) = kv(&["evict", "--resp", &resp, "--node", "9"]);
    assert!(
        !ok && out.contains("no member of the current view is node 9"),
        "{out}"
    );
}
