//! Writes seed corpora: real engine messages (with selector bytes) for
//! `engine_messages`, and real encoded frames for `frame_decode`.
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
    println!("wrote {n} seeds to {}", dir.display());
    Ok(())
}
