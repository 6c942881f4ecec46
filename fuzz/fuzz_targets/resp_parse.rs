//! Arbitrary bytes into vsync-kv's RESP request parser, fed in two pieces
//! (as TCP may cut them): it never panics, a request it returns consumed
//! bytes and respects the limits, and "need more bytes" consumes nothing.
//! The first input byte picks small or default limits, so that the limit
//! checks are reached too.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vsync_fuzz::resp::{Limits, parse_request};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let limits = match sel % 3 {
        0 => Limits {
            max_bulk: 16,
            max_args: 4,
            max_inline: 32,
        },
        1 => Limits {
            max_bulk: 1024,
            max_args: 64,
            max_inline: 256,
        },
        _ => Limits::default(),
    };
    let split = if rest.is_empty() {
        0
    } else {
        usize::from(sel) % (rest.len() + 1)
    };
    let mut buf = BytesMut::new();
    for piece in [&rest[..split], &rest[split..]] {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match parse_request(&mut buf, &limits) {
                Ok(Some(args)) => {
                    let consumed = before - buf.len();
                    assert!(consumed > 0, "a request consumed nothing");
                    // Arguments come from the bytes consumed, within the
                    // limits (a bulk string's, or an inline line's).
                    let total: usize = args.iter().map(|a| a.len()).sum();
                    assert!(total <= consumed);
                    for a in &args {
                        assert!(a.len() <= limits.max_bulk.max(limits.max_inline));
                    }
                    assert!(args.len() <= limits.max_args.max(limits.max_inline));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete request consumed bytes");
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
