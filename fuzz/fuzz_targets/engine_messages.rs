//! Arbitrary engine messages, from members, an outsider and unknown
//! processes, into a live three-member group: no panic, and every engine's
//! event stream stays well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vsync_fuzz::Group::run_input(data);
});
