//! Arbitrary bytes into the peer frame decoder: it returns frames or a
//! typed error, never panics, and never yields a frame over the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = 64 * 1024;
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        match vsync_net::frame::decode_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                // What decodes re-encodes within the limit.
                let _ = vsync_net::frame::encode_frame(&frame, max);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
