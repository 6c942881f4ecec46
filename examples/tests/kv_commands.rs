//! The command set against the expected Redis replies, and bad input
//! (garbage bytes, oversized bulk strings, unknown commands) answered with
//! errors while other clients go on, on a real `vsync-kv` process (a
//! one-member group: every write still goes through the replica).

mod kv_common;

use kv_common::{spawn, wait_members};
use redis::{Commands, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends raw bytes and reads what comes back until the server closes or
/// goes quiet.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[test]
fn command_set_replies_like_redis() {
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(1, dir.path().join("n1"), &[], &["--max-bulk", "4096"]);
    wait_members(&node, 1);
    let mut c = node.conn();

    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(
        redis::cmd("PING")
            .arg("hi")
            .query::<String>(&mut c)
            .unwrap(),
        "hi"
    );
    assert_eq!(
        redis::cmd("ECHO")
            .arg("hello")
            .query::<String>(&mut c)
            .unwrap(),
        "hello"
    );
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    assert_eq!(
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    // NX on an existing key: nil; XX on a missing key: nil.
    assert_eq!(
        redis::cmd("SET")
            .arg("k")
            .arg("w")
            .arg("NX")
            .query::<Value>(&mut c)
            .unwrap(),
        Value::Nil
    );
    assert_eq!(
        redis::cmd("SET")
            .arg("nope")
            .arg("w")
            .arg("XX")
            .query::<Value>(&mut c)
            .unwrap(),
        Value::Nil
    );
    assert_eq!(
        redis::cmd("SET")
            .arg("k")
            .arg("w")
            .arg("XX")
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    assert_eq!(c.get::<_, String>("k").unwrap(), "w");
    // Expiry: PX 200 is visible at once and gone after it passed.
    assert_eq!(
        redis::cmd("SET")
            .arg("t")
            .arg("x")
            .arg("PX")
            .arg(200)
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        redis::cmd("SET")
            .arg("t2")
            .arg("x")
            .arg("EX")
            .arg(100)
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        c.get::<_, Option<String>>("t").unwrap().as_deref(),
        Some("x")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.get::<_, Option<String>>("t").unwrap(), None);
    assert_eq!(c.exists::<_, i64>("t").unwrap(), 0);
    assert_eq!(
        c.get::<_, Option<String>>("t2").unwrap().as_deref(),
        Some("x")
    );
    // An expired key counts as absent for NX.
    assert_eq!(
        redis::cmd("SET")
            .arg("t")
            .arg("y")
            .arg("NX")
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );

    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert_eq!(redis::cmd("INCR").arg("n").query::<i64>(&mut c).unwrap(), 2);
    assert_eq!(
        redis::cmd("INCRBY")
            .arg("n")
            .arg(40)
            .query::<i64>(&mut c)
            .unwrap(),
        42
    );
    assert_eq!(
        redis::cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(),
        41
    );
    let e = redis::cmd("INCR")
        .arg("k")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    redis::cmd("SET")
        .arg("big")
        .arg(i64::MAX)
        .query::<()>(&mut c)
        .unwrap();
    let e = redis::cmd("INCR")
        .arg("big")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");

    assert_eq!(
        redis::cmd("MSET")
            .arg("a")
            .arg("1")
            .arg("b")
            .arg("2")
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg("a")
        .arg("zz")
        .arg("b")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec![Some("1".into()), None, Some("2".into())]);
    assert_eq!(
        redis::cmd("EXISTS")
            .arg("a")
            .arg("a")
            .arg("zz")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        redis::cmd("DEL")
            .arg("a")
            .arg("zz")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("t*").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(keys, vec!["t", "t2"]);
    // k, t, t2, n, big, b
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 6);

    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for field in [
        "vsync_view:",
        "vsync_members:",
        "vsync_position:",
        "vsync_partition:primary",
        "vsync_role:",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    let d1: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut c).unwrap();
    assert_eq!(d1.len(), 32);
    redis::cmd("SET")
        .arg("k")
        .arg("changed")
        .query::<()>(&mut c)
        .unwrap();
    assert_ne!(d1, node.digest(), "the digest must follow the data");

    // A pipeline mixing writes and reads answers in order and reads its own writes.
    let (a, b, n): (String, Option<String>, i64) = redis::pipe()
        .cmd("SET")
        .arg("p")
        .arg("1")
        .cmd("GET")
        .arg("p")
        .cmd("INCR")
        .arg("p")
        .query(&mut c)
        .unwrap();
    assert_eq!((a.as_str(), b.as_deref(), n), ("OK", Some("1"), 2));

    assert_eq!(redis::cmd("FLUSHDB").query::<String>(&mut c).unwrap(), "OK");
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(node.digest(), "0".repeat(32));

    // Expired keys are purged from memory by the coordinator (not only hidden).
    redis::cmd("SET")
        .arg("e1")
        .arg("x")
        .arg("PX")
        .arg(50)
        .query::<()>(&mut c)
        .unwrap();
    let keyspace = |c: &mut redis::Connection| {
        redis::cmd("INFO")
            .arg("keyspace")
            .query::<String>(c)
            .unwrap()
    };
    assert!(
        keyspace(&mut c).contains("db0:keys=1"),
        "{}",
        keyspace(&mut c)
    );
    kv_common::wait_until(Duration::from_secs(10), "the expired key purged", || {
        !keyspace(&mut c).contains("db0:keys=")
    });

    // Errors: the connection goes on after each.
    let e = redis::cmd("NOSUCH")
        .arg("x")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("unknown command"), "{e}");
    let e = redis::cmd("GET").query::<Value>(&mut c).unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    let e = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg("-1")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("invalid expire time"), "{e}");
    let e = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("BOGUS")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");

    // /metrics and /status.
    let m = node.http_get("/metrics");
    assert!(m.contains("200 OK"), "{m}");
    assert!(m.contains("vsync_kv_commands_total{cmd=\"set\"}"), "{m}");
    assert!(m.contains("vsync_kv_deliveries_total"), "{m}");
    assert!(
        m.contains("vsync_kv_command_duration_seconds_bucket{cmd=\"get\""),
        "{m}"
    );
    let s = node.http_get("/status");
    assert!(s.contains("\"partition\":\"primary\""), "{s}");

    // QUIT answers OK and closes.
    let (out, closed) = raw(node.resp, b"QUIT\r\n");
    assert_eq!(out, "+OK\r\n");
    assert!(closed);
}

#[test]
fn bad_input_gets_errors_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(1, dir.path().join("n1"), &[], &["--max-bulk", "4096"]);
    wait_members(&node, 1);
    let mut other = node.conn();
    redis::cmd("SET")
        .arg("x")
        .arg("1")
        .query::<()>(&mut other)
        .unwrap();

    // Unknown command typed inline: an error, then the connection still works.
    let (out, closed) = raw(node.resp, b"HELLO_THERE a b\r\nPING\r\n");
    assert!(
        out.starts_with("-ERR unknown command 'HELLO_THERE'"),
        "{out}"
    );
    assert!(out.ends_with("+PONG\r\n"), "{out}");
    assert!(!closed);

    // An oversized bulk string is refused from its header; the connection closes.
    let (out, closed) = raw(node.resp, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);

    // Binary garbage in a multibulk frame.
    let (out, closed) = raw(node.resp, b"*2\r\n\x00\xff\xfe garbage\r\n");
    assert!(out.starts_with("-ERR Protocol error"), "{out}");
    assert!(closed);
    let (out, closed) = raw(node.resp, b"*zz\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid multibulk length\r\n");
    assert!(closed);

    // A line with no end, longer than the inline limit.
    let (out, closed) = raw(node.resp, &vec![b'a'; 70 * 1024]);
    assert_eq!(out, "-ERR Protocol error: too big inline request\r\n");
    assert!(closed);

    // The other client and the replica went on.
    assert_eq!(
        redis::cmd("GET")
            .arg("x")
            .query::<String>(&mut other)
            .unwrap(),
        "1"
    );
    redis::cmd("SET")
        .arg("x")
        .arg("2")
        .query::<()>(&mut other)
        .unwrap();
    assert_eq!(node.conn().get::<_, String>("x").unwrap(), "2");
    let m = node.http_get("/metrics");
    assert!(m.contains("vsync_kv_protocol_errors_total 4"), "{m}");
}
