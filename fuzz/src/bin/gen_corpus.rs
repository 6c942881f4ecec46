//! Writes seed corpora: real engine messages (with selector bytes) for
//! `engine_messages`, real encoded frames for `frame_decode`, and Redis
//! requests (with a selector byte) for `resp_parse`.
//! Run from the repository: `cargo run --manifest-path fuzz/Cargo.toml --bin gen_corpus`.

use std::path::Path;
use vsync_fuzz::Group;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let engine = dir.join("engine_messages");
    let frames = dir.join("frame_decode");
    std::fs::create_dir_all(&engine)?;
    std::fs::create_dir_all(&frames)?;
    let g = Group::new();
    let mut kinds = std::collections::BTreeMap::new();
    for m in &g.log {
        kinds.entry(m.kind()).or_insert_with(Vec::new).push(m.clone());
    }
    let mut n = 0;
    for (kind, msgs) in kinds {
        for (k, m) in msgs.iter().take(3).enumerate() {
            let Ok(body) = postcard::to_allocvec(m) else { continue };
            let mut input = vec![(k as u8) * 5];
            input.extend_from_slice(&body);
            std::fs::write(engine.join(format!("{kind}-{k}")), &input)?;
            let frame = vsync_net::frame::Frame::Msg {
                to: vsync_core::Pid::new(2, 1),
                msg: m.clone(),
            };
            if let Ok(bytes) = vsync_net::frame::encode_frame(&frame, 1 << 24) {
                std::fs::write(frames.join(format!("{kind}-{k}")), &bytes)?;
            }
            n += 1;
        }
    }
    let resp = dir.join("resp_parse");
    std::fs::create_dir_all(&resp)?;
    let requests: [(&str, &[u8]); 8] = [
        ("set", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n"),
        ("get-pipelined", b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"),
        ("inline", b"PING\r\nSET k \"a b\\x41\\n\"\r\n"),
        ("empty-array", b"*0\r\n*-1\r\n"),
        ("big-bulk", b"*1\r\n$536870912\r\n"),
        ("bad-bulk", b"*1\r\n:5\r\n"),
        ("partial", b"*2\r\n$3\r\nGE"),
        ("mset", b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"),
    ];
    for (i, (name, req)) in requests.iter().enumerate() {
        for sel in [i as u8 * 3, i as u8 * 3 + 2] {
            let mut input = vec![sel];
            input.extend_from_slice(req);
            std::fs::write(resp.join(format!("{name}-{sel}")), &input)?;
            n += 1;
        }
    }
    println!("wrote {n} seeds to {}", dir.display());
    Ok(())
}
