//! vsync-kv as a closed group, on real processes: `keygen` writes a private
//! key file; replicas started with `--key` form a cluster, a process with
//! another key or none cannot join it; `node` refuses to start without
//! `--key` or `--insecure`; `--max-clients` answers the client over the
//! limit with Redis' error.

mod kv_common;

use kv_common::{spawn, wait_members, wait_until};
use redis::Commands;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vsync-kv");

fn keygen(path: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .arg("keygen")
        .arg(path)
        .output()
        .expect("run vsync-kv keygen")
}

#[test]
fn replicas_with_the_key_form_a_cluster_and_others_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let out = keygen(&key);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim().len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwritten.
    let again = keygen(&key);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    let k = key.to_str().unwrap();
    let n1 = spawn(1, dir.path().join("n1"), &[], &["--key", k]);
    wait_members(&n1, 1);
    let n2 = spawn(2, dir.path().join("n2"), &[n1.listen], &["--key", k]);
    wait_members(&n1, 2);
    wait_members(&n2, 2);
    let _: () = n1.conn().set("secret", "kept").unwrap();
    wait_until(Duration::from_secs(10), "the write on n2", || {
        n2.conn().get::<_, Option<String>>("secret").unwrap() == Some("kept".into())
    });

    // Another key, and no key at all: both start, neither gets in.
    let other = dir.path().join("other.key");
    assert!(keygen(&other).status.success());
    let n3 = spawn(
        3,
        dir.path().join("n3"),
        &[n1.listen],
        &["--key", other.to_str().unwrap()],
    );
    let n4 = spawn(4, dir.path().join("n4"), &[n1.listen], &[]);
    std::thread::sleep(Duration::from_secs(3));
    for outsider in [&n3, &n4] {
        assert_ne!(
            outsider.info("member_count").as_deref(),
            Some("3"),
            "node {} got in",
            outsider.id
        );
        let r: redis::RedisResult<()> = outsider.conn().set("secret", "stolen");
        assert!(r.is_err(), "node {} took a write", outsider.id);
    }
    assert_eq!(n1.info("member_count").as_deref(), Some("2"));
    assert_eq!(
        n1.conn().get::<_, Option<String>>("secret").unwrap(),
        Some("kept".into())
    );
}

#[test]
fn node_refuses_to_start_without_key_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "node",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--resp",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(dir.path().join("d"))
            .args(extra)
            .output()
            .expect("run vsync-kv node")
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--key FILE") && err.contains("--insecure"),
        "{err}"
    );
    let missing = dir.path().join("nope.key");
    let out = run(&["--key", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let out = run(&["--key", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a cluster key"), "{err}");
}

#[test]
fn max_clients_answers_the_client_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let n = spawn(1, dir.path().join("n1"), &[], &["--max-clients", "3"]);
    wait_members(&n, 1);
    // wait_members' connections are closed; their slots free shortly.
    let ping = |s: &mut TcpStream| -> String {
        s.write_all(b"PING\r\n").unwrap();
        let mut b = [0u8; 128];
        let k = s.read(&mut b).unwrap_or(0);
        String::from_utf8_lossy(&b[..k]).into_owned()
    };
    let open = || {
        let s = TcpStream::connect(n.resp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let mut held = Vec::new();
    wait_until(Duration::from_secs(10), "3 clients served", || {
        let mut s = open();
        if ping(&mut s) == "+PONG\r\n" {
            held.push(s);
        }
        held.len() == 3
    });
    let mut fourth = open();
    let mut b = [0u8; 128];
    let k = fourth.read(&mut b).unwrap();
    assert_eq!(&b[..k], b"-ERR max number of clients reached\r\n");
    assert_eq!(fourth.read(&mut b).unwrap_or(0), 0, "not closed");
    for s in &mut held {
        assert_eq!(ping(s), "+PONG\r\n");
    }
    // A slot freed is taken again.
    held.pop();
    wait_until(Duration::from_secs(10), "a freed slot", || {
        ping(&mut open()) == "+PONG\r\n"
    });
}

#[test]
fn a_joiner_refuses_a_state_larger_than_max_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = spawn(1, dir.path().join("n1"), &[], &[]);
    wait_members(&n1, 1);
    let mut c = n1.conn();
    let value = "v".repeat(1000);
    for chunk in 0..10 {
        let mut p = redis::pipe();
        for i in 0..100 {
            p.set(format!("k{chunk}:{i}"), &value).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    // About 1 MB of state; this joiner takes at most 100 kB.
    let mut n2 = spawn(
        2,
        dir.path().join("n2"),
        &[n1.listen],
        &["--max-transfer", "100000"],
    );
    // The replica stops, and a stopped replica's process exits with an
    // error (a supervisor sees it), never having served the state.
    assert_eq!(
        n2.wait_exit(Duration::from_secs(20)),
        Some(false),
        "n2 did not refuse the state and exit"
    );
    // The group goes on.
    let _: () = n1.conn().set("after", "1").unwrap();
    assert_eq!(
        n1.conn().get::<_, Option<String>>("after").unwrap(),
        Some("1".into())
    );
}

/// `--requirepass`: every command but AUTH, HELLO and QUIT is refused
/// until the client authenticates, as Redis does; the `redis` crate's
/// password URL works, a wrong password is refused, HELLO 2 with AUTH
/// authenticates and HELLO 3 is refused with NOPROTO; `vsync-kv status`
/// authenticates with REDISCLI_AUTH, as redis-cli does.
#[test]
fn a_password_protected_replica_serves_only_authenticated_clients() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = spawn(1, dir.path().join("n1"), &[], &["--requirepass", "s3cret"]);
    wait_until(Duration::from_secs(20), "n1 serving", || {
        n1.http_get("/ready").starts_with("HTTP/1.1 200")
    });
    let anon = redis::Client::open(format!("redis://{}/", n1.resp)).unwrap();
    let mut c = anon.get_connection().unwrap();
    let e = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    let e = redis::cmd("AUTH")
        .arg("wrong")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("WRONGPASS"), "{e}");
    let e = redis::cmd("HELLO").arg(3).query::<()>(&mut c).unwrap_err();
    assert!(e.to_string().contains("NOPROTO"), "{e}");
    let hello: Vec<redis::Value> = redis::cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut c)
        .unwrap();
    assert_eq!(hello.len(), 14);
    let _: () = c.set("k", "v").unwrap();

    let with = redis::Client::open(format!("redis://:s3cret@{}/", n1.resp)).unwrap();
    let mut c = with.get_connection().unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("v")
    );
    let bad = redis::Client::open(format!("redis://:nope@{}/", n1.resp)).unwrap();
    assert!(bad.get_connection().is_err());

    let status = |env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsync-kv"));
        cmd.args(["status", "--resp", &n1.resp.to_string()]);
        if let Some(p) = env {
            cmd.env("REDISCLI_AUTH", p);
        }
        cmd.output().unwrap().status.success()
    };
    assert!(!status(None));
    assert!(status(Some("s3cret")));
}
