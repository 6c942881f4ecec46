//! vsync-core: the sans-IO virtual synchrony engine.
//!
//! See the crate README section in the repository README and docs/PROTOCOL.md.
#![forbid(unsafe_code)]

pub mod checker;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod history;
pub mod id;
pub mod message;
pub mod sim;
#[cfg(feature = "timeline")]
pub mod timeline;

pub use config::Config;
pub use delivery::Delivery;
pub use engine::{AppEvent, Engine, EngineError, Output, Target};
pub use id::{MsgId, NodeId, Pid, View, ViewId};
pub use message::Message;
