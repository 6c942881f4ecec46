//! vsync-net: the tokio runtime that drives the sans-IO engine of
//! [`vsync_core`] over TCP between processes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vsync_net::NetError> {
//! use vsync_net::{Config, Event, Group};
//! let mut cfg = Config::new(1, "127.0.0.1:0".parse().unwrap(), "demo");
//! // A closed group: every member loads the same key file
//! // (`vsync_net::keygen(path)` writes one).
//! cfg.security = vsync_net::Security::Key(vsync_net::Key::generate());
//! cfg.engine = vsync_core::Config::with_suspect_timeout(500_000);
//! let mut g = Group::found(cfg).await?;
//! g.multicast(bytes::Bytes::from_static(b"hello")).await?;
//! while let Some(ev) = g.next_event().await {
//!     if let Event::Deliver { msg, payload, .. } = ev {
//!         println!("{msg}: {payload:?}");
//!         break;
//!     }
//! }
//! g.leave().await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! - **One engine task** per process owns the [`vsync_core::Engine`]. It
//!   wakes on inbound messages, application commands, the engine's timer
//!   (`poll_timeout`) and a gossip tick; takes up to 256 inputs of a kind,
//!   then drains the engine's outputs once (where the engine batches). Time
//!   is microseconds of a monotonic clock since the process started.
//! - **Connections**: each process dials every peer it sends to, and only
//!   sends on that connection; it only receives on the ones it accepts. A
//!   connection starts with a Hello each way (group, pid, listen address); a
//!   peer of another group is refused with an error frame and a warning on
//!   both sides. Frames are `u32` length, version byte, postcard
//!   ([`frame`]); a bad or oversized frame closes its connection.
//! - **Closed groups**: with a cluster key ([`Config::security`],
//!   [`keygen`], [`Key`]) every connection first runs a Noise handshake
//!   with the key as pre-shared key, and its frames travel sealed
//!   ([`secure`]); a process without the key is refused on both sides
//!   before anything else is read. Without one the process runs insecure,
//!   with a warning at start. Threat model: docs/SECURITY.md.
//! - **Limits on hostile input**: connections in their handshake, accepted
//!   connections and each peer's send queue (in bytes) are bounded
//!   ([`Config::max_handshakes`], [`Config::max_inbound`],
//!   [`Config::max_peer_queue`]); a peer whose queue stays full is
//!   suspected and removed.
//! - **Writers**: one task per peer address, with a bounded queue (a full
//!   queue drops: the engine retransmits). It coalesces everything queued
//!   into one write, reconnects with backoff, and reports a refused
//!   reconnect, upon which the engine suspects the peer at once (a kill -9
//!   is detected in milliseconds rather than after the heartbeat timeout).
//!   A message for many peers is encoded once.
//! - **Addressing**: the engine names pids; an address book (newest
//!   incarnation of each node, learned from Hellos and gossiped to the
//!   view) maps them to addresses. Frames carry the destination pid, and a
//!   process drops frames for another incarnation. `Target::Seeds` goes to
//!   the configured seeds and every known address (a founder has no seeds,
//!   and a blocked minority's seeds may be on its own side).
//! - **Backpressure**: [`GroupSender::multicast`] waits while
//!   [`Config::max_queued`] multicasts wait in the engine or
//!   [`Config::max_pending_events`] events wait for the application.
//! - **History**: with [`Config::history`] set, every event is appended as
//!   a JSON line (docs/HISTORY.md), written before anything of its batch
//!   leaves the process.
//! - **Faults**: [`Faults`] drops traffic to or from chosen nodes, to make
//!   partitions on running processes.
//!
//! Layout: [`frame`] is the wire format; [`guard`] the sanity limits on
//! peer messages before the engine; [`key`] the cluster key and its
//! file; [`secure`] the Noise handshake and sealed chunks; `transport` the listener and the
//! per-peer connection tasks; `router` the address book; `runtime` the engine
//! task; `history` the JSON-lines recorder; [`fault`] the fault-injection
//! switch. The binary `vsync-node` (feature `node-bin`, on by default) runs
//! one process driven from stdin, for tests and demos; `examples/bench.rs`
//! measures throughput and latency.
#![forbid(unsafe_code)]

mod api;
pub mod fault;
pub mod frame;
pub mod guard;
mod history;
pub mod key;
mod router;
mod runtime;
pub mod secure;
mod transport;

pub use api::{Config, Event, Group, GroupHandle, GroupSender, NetError};
pub use fault::Faults;
pub use frame::FrameError;
pub use key::{Key, KeyError, keygen};
pub use secure::{LinkError, Security};
pub use vsync_core::Delivery;
