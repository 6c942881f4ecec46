//! Large payloads: the byte window keeps every protocol message, flush
//! messages included, under the transport's frame limit, so a crash under a
//! load of 64 KiB multicasts still ends in a view change.

mod common;

use bytes::Bytes;
use common::{Net, delivered};
use vsync_core::engine::EngineError;
use vsync_core::{AppEvent, Config, Engine, Pid};

const MEMBERS: u64 = 5;
const PER_SENDER: usize = 200;
const SIZE: usize = 64 * 1024;

/// Runs `MEMBERS` members that each queue `PER_SENDER` 64 KiB multicasts,
/// crashes the last one mid-stream, and returns the network afterwards.
fn crash_under_large_load(config: Config) -> Net {
    let mut net = Net::new();
    for n in 1..=MEMBERS {
        net.add_with(n, n == 1, config.clone());
        net.run(50_000);
    }
    net.run(300_000);
    for i in 0..MEMBERS as usize {
        for k in 0..PER_SENDER {
            let mut p = vec![i as u8; SIZE];
            p[..8].copy_from_slice(&(k as u64).to_le_bytes());
            net.engines[i].multicast(net.now, Bytes::from(p)).unwrap();
        }
    }
    // It crashes before acknowledging any of them: nothing becomes stable.
    net.dead[MEMBERS as usize - 1] = true;
    net.run(2_000_000);
    net
}

#[test]
fn a_crash_under_64_kib_load_changes_the_view_with_messages_under_the_limit() {
    let config = Config::with_suspect_timeout(100_000);
    let limit = config.max_message_bytes as usize;
    let net = crash_under_large_load(config);
    assert!(
        net.max_msg_bytes <= limit,
        "largest message {} bytes > limit {limit}",
        net.max_msg_bytes
    );
    let survivors = MEMBERS as usize - 1;
    let reference = delivered(&net.events[0]);
    for i in 0..survivors {
        let last_view = net.events[i]
            .iter()
            .filter_map(|e| match e {
                AppEvent::View { view, .. } => Some(view.clone()),
                _ => None,
            })
            .next_back()
            .expect("a view");
        assert_eq!(last_view.members.len(), survivors, "{last_view}");
        assert!(!last_view.contains(Pid::new(MEMBERS, 1)));
        assert_eq!(delivered(&net.events[i]), reference, "member {i} differs");
    }
    // Every survivor's own multicasts get through (in the old or new view).
    for i in 0..survivors {
        let mine = reference.iter().filter(|p| p[SIZE - 1] == i as u8).count();
        assert_eq!(mine, PER_SENDER, "member {i}'s multicasts");
    }
}

#[test]
fn without_the_byte_window_messages_exceed_the_limit() {
    // The measurement above is meaningful: with the byte window made
    // ineffective, the same run produces messages larger than 16 MiB.
    let config = Config {
        window_bytes: u64::MAX / 4,
        max_message_bytes: u64::MAX / 4,
        ..Config::with_suspect_timeout(100_000)
    };
    let net = crash_under_large_load(config);
    assert!(
        net.max_msg_bytes > 16 << 20,
        "largest message only {} bytes",
        net.max_msg_bytes
    );
}

#[test]
fn a_payload_over_the_limit_is_refused() {
    let mut e = Engine::new(Pid::new(1, 1), Config::default());
    e.found(0);
    let max = e.config().max_payload;
    assert!(e.multicast(1, Bytes::from(vec![0u8; max])).is_ok());
    match e.multicast(2, Bytes::from(vec![0u8; max + 1])) {
        Err(EngineError::PayloadTooLarge { len, max: m }) => {
            assert_eq!((len, m), (max + 1, max));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
}
