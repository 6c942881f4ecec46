//! Engine configuration: timeouts (microseconds), windows and the partition
//! policy.

use crate::checker::Policy;
use serde::{Deserialize, Serialize};

/// Engine configuration. All durations are in microseconds of the time the
/// driver passes in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// How often the engine wants [`crate::Engine::handle_timeout`] called.
    /// Every other period is checked at this granularity.
    pub tick: u64,
    /// How often a member sends a heartbeat (its acknowledgement status) to
    /// every other member even when it has nothing else to send.
    pub heartbeat_interval: u64,
    /// A member not heard from for this long is suspected, and a view change
    /// removes it.
    pub suspect_timeout: u64,
    /// How long a flush proposer waits for answers before it leaves the
    /// silent members out, and how long a member in a flush waits for the
    /// proposer's next step before it suspects the proposer.
    pub flush_timeout: u64,
    /// How often unanswered control messages (join, flush, install) are sent
    /// again, and how soon the same missing data may be asked for again.
    pub resend_interval: u64,
    /// At most this many of a sender's own multicasts may be unstable (not
    /// yet received by every member); further multicasts wait in the engine.
    pub window: u64,
    /// At most this many payloads in one data message.
    pub max_batch: usize,
    /// What a group does when it splits.
    pub policy: Policy,
}

impl Default for Config {
    /// Defaults detect a crash within 1 s: heartbeats every 100 ms, suspicion
    /// after 500 ms of silence (one lost heartbeat does not trigger it).
    fn default() -> Self {
        Config {
            tick: 10_000,
            heartbeat_interval: 100_000,
            suspect_timeout: 500_000,
            flush_timeout: 500_000,
            resend_interval: 50_000,
            window: 4096,
            max_batch: 256,
            policy: Policy::PrimaryComponent,
        }
    }
}

impl Config {
    /// A configuration scaled to a suspicion timeout: heartbeats at a fifth
    /// of it, ticks at a twentieth (at least 1 ms), resends at a tenth.
    pub fn with_suspect_timeout(suspect_timeout: u64) -> Self {
        let st = suspect_timeout.max(1_000);
        Config {
            tick: (st / 20).max(1_000),
            heartbeat_interval: st / 5,
            suspect_timeout: st,
            flush_timeout: st,
            resend_interval: (st / 10).max(1_000),
            ..Config::default()
        }
    }
}
