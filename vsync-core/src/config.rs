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
    /// The largest payload [`crate::Engine::multicast`] accepts, in bytes.
    pub max_payload: usize,
    /// At most this many bytes of a sender's own multicasts may be unstable
    /// (an upper bound; see [`Config::byte_window`]).
    pub window_bytes: u64,
    /// The largest protocol message the transport carries, in bytes. The
    /// flush sends a member's unstable payloads of every sender in one
    /// message, so the byte window shrinks with the group to keep flush
    /// messages (about `members x window`) well under this size.
    pub max_message_bytes: u64,
    /// What a group does when it splits.
    pub policy: Policy,
    /// Partitionable policy: how often the acting coordinator of each side
    /// probes for other sides of a healed partition, so that they merge.
    #[serde(default = "default_merge_interval")]
    pub merge_interval: u64,
}

fn default_merge_interval() -> u64 {
    1_000_000
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
            max_payload: 1 << 20,
            window_bytes: 4 << 20,
            max_message_bytes: 16 << 20,
            policy: Policy::PrimaryComponent,
            merge_interval: default_merge_interval(),
        }
    }
}

impl Config {
    /// The byte window of each sender in a view of `members` members: at
    /// most [`Config::window_bytes`], at most half of
    /// [`Config::max_message_bytes`] spread over the members (so that a
    /// flush report of every sender's unstable payloads fits in one
    /// message), and at least one payload of the largest size.
    pub fn byte_window(&self, members: usize) -> u64 {
        let per_member = self.max_message_bytes / (2 * members.max(1) as u64);
        per_member
            .min(self.window_bytes)
            .max(self.max_payload as u64)
    }

    /// A configuration scaled to a suspicion timeout: heartbeats at a fifth
    /// of it, ticks at a twentieth (at least 1 ms), resends at a tenth,
    /// merge probes at twice it.
    pub fn with_suspect_timeout(suspect_timeout: u64) -> Self {
        let st = suspect_timeout.max(1_000);
        Config {
            tick: (st / 20).max(1_000),
            heartbeat_interval: st / 5,
            suspect_timeout: st,
            flush_timeout: st,
            resend_interval: (st / 10).max(1_000),
            merge_interval: 2 * st,
            ..Config::default()
        }
    }
}
