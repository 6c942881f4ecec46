//! String and key commands on a real 3-replica cluster with the `redis`
//! crate: SETNX, GETSET, GETDEL, APPEND, STRLEN, TYPE, TOUCH, RENAME,
//! RENAMENX, TIME, answered as Redis answers them, and equal on every
//! replica.

mod kv_common;

use kv_common::{cluster, wait_same_position};
use redis::Value;

#[test]
fn string_and_key_commands_answer_as_redis_does_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3, &[]);
    let mut c = nodes[0].conn();
    let q = |c: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(c)
    };
    let int = |v: Value| match v {
        Value::Int(i) => i,
        other => panic!("not an integer: {other:?}"),
    };
    let text = |v: Value| match v {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        Value::SimpleString(s) => s,
        Value::Okay => "OK".into(),
        Value::Nil => "(nil)".into(),
        other => panic!("not text: {other:?}"),
    };
    assert_eq!(int(q(&mut c, &["SETNX", "a", "1"]).unwrap()), 1);
    assert_eq!(int(q(&mut c, &["SETNX", "a", "2"]).unwrap()), 0);
    let _ = q(&mut c, &["EXPIRE", "a", "100"]).unwrap();
    assert_eq!(text(q(&mut c, &["GETSET", "a", "3"]).unwrap()), "1");
    assert_eq!(
        int(q(&mut c, &["TTL", "a"]).unwrap()),
        -1,
        "GETSET clears the expiry"
    );
    let _ = q(&mut c, &["EXPIRE", "a", "100"]).unwrap();
    assert_eq!(int(q(&mut c, &["APPEND", "a", "45"]).unwrap()), 3);
    assert!(
        int(q(&mut c, &["TTL", "a"]).unwrap()) > 0,
        "APPEND keeps the expiry"
    );
    assert_eq!(int(q(&mut c, &["APPEND", "new", "xy"]).unwrap()), 2);
    assert_eq!(int(q(&mut c, &["STRLEN", "a"]).unwrap()), 3);
    assert_eq!(int(q(&mut c, &["STRLEN", "nope"]).unwrap()), 0);
    assert_eq!(text(q(&mut c, &["TYPE", "a"]).unwrap()), "string");
    assert_eq!(text(q(&mut c, &["TYPE", "nope"]).unwrap()), "none");
    assert_eq!(int(q(&mut c, &["TOUCH", "a", "new", "nope"]).unwrap()), 2);
    assert_eq!(text(q(&mut c, &["GETDEL", "new"]).unwrap()), "xy");
    assert_eq!(text(q(&mut c, &["GETDEL", "new"]).unwrap()), "(nil)");
    let e = q(&mut c, &["RENAME", "nope", "x"]).unwrap_err();
    assert!(e.to_string().contains("no such key"), "{e}");
    assert_eq!(text(q(&mut c, &["RENAME", "a", "b"]).unwrap()), "OK");
    assert_eq!(text(q(&mut c, &["GET", "b"]).unwrap()), "345");
    assert!(
        int(q(&mut c, &["TTL", "b"]).unwrap()) > 0,
        "RENAME moves the expiry"
    );
    let _ = q(&mut c, &["SET", "c", "z"]).unwrap();
    assert_eq!(int(q(&mut c, &["RENAMENX", "b", "c"]).unwrap()), 0);
    assert_eq!(int(q(&mut c, &["RENAMENX", "b", "d"]).unwrap()), 1);
    match q(&mut c, &["TIME"]).unwrap() {
        Value::Array(v) => assert_eq!(v.len(), 2),
        other => panic!("TIME: {other:?}"),
    }
    wait_same_position(&[&nodes[0], &nodes[1], &nodes[2]]);
    let d = nodes[0].digest();
    assert!(nodes.iter().all(|n| n.digest() == d));
    let mut c3 = nodes[2].conn();
    assert_eq!(text(q(&mut c3, &["GET", "d"]).unwrap()), "345");
}
