//! `vsync`: virtual synchrony for Rust.
//!
//! This facade re-exports the three crates of the toolkit:
//! - [`core`]: the sans-IO protocol engine, its deterministic simulator and
//!   the checker of the virtual synchrony guarantees;
//! - [`net`]: the tokio transport and node runtime;
//! - [`rsm`]: replicated state machines on top of the ordered, safe multicast.
#![forbid(unsafe_code)]

pub use vsync_core as core;
pub use vsync_net as net;
pub use vsync_rsm as rsm;
