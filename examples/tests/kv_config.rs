//! `vsync-kv node` takes its options from flags, `VSYNC_KV_*` environment
//! variables and a `--config` TOML file, in that order of precedence, on a
//! real process (the node's ready line says which id it took).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts a node with `args` and `env`, returns the id in its ready line,
/// and kills it.
fn started_id(args: &[&str], env: &[(&str, &str)]) -> u64 {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsync-kv"));
    cmd.arg("node")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a ready line");
    v["node"].as_u64().expect("node id")
}

#[test]
fn a_flag_wins_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kv.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "id = 5\nlisten = \"127.0.0.1:0\"\nresp = \"127.0.0.1:0\"\ndata = {:?}\ninsecure = true\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(started_id(&["--config", f], &[]), 5, "the file");
    // A fresh data directory each time: the id is part of its identity.
    std::fs::remove_dir_all(&data).unwrap();
    assert_eq!(
        started_id(&["--config", f], &[("VSYNC_KV_ID", "6")]),
        6,
        "the environment over the file"
    );
    std::fs::remove_dir_all(&data).unwrap();
    assert_eq!(
        started_id(&["--config", f, "--id", "7"], &[("VSYNC_KV_ID", "6")]),
        7,
        "the flag over the environment"
    );
    // The file itself may come from the environment.
    std::fs::remove_dir_all(&data).unwrap();
    assert_eq!(started_id(&[], &[("VSYNC_KV_CONFIG", f)]), 5);
}

/// By default a node logs its view changes at info, one line each; with
/// `--log-format json` every line is a JSON object.
#[test]
fn a_node_logs_its_view_changes_by_default_and_in_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsync-kv"))
        .args([
            "node",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--resp",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(dir.path().join("d"))
        .args(["--insecure", "--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if v["fields"]["message"] == "installed view" {
            seen = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = seen.expect("no 'installed view' line at the default level");
    assert_eq!(v["level"], "INFO");
    assert!(
        v["fields"]["view"]
            .as_str()
            .unwrap_or("")
            .starts_with("v1@n1"),
        "{v}"
    );
}
