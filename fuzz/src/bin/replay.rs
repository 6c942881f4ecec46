//! Replays one `engine_messages` input: prints its messages, then runs it
//! (a debugging aid: `cargo run --manifest-path fuzz/Cargo.toml --bin replay -- FILE`).
use vsync_core::Message;
fn main() {
    let path = std::env::args().nth(1).expect("file");
    let data = std::fs::read(path).expect("read");
    let mut rest = &data[..];
    while let Some((&sel, tail)) = rest.split_first() {
        let Ok((msg, tail)) = postcard::take_from_bytes::<Message>(tail) else { break };
        rest = tail;
        println!("sel={sel:#04x} to={} fromsel={} wait={}ms {:?}", sel & 3, (sel >> 2) & 7, sel >> 4, msg);
    }
    vsync_fuzz::Group::run_input(&data);
    println!("ok");
}
