//! Sanity limits on peer messages, checked before the engine sees them.
//!
//! Why it exists: the engine trusts a message's counts in places. An
//! ordering record (`Message::Order`) names runs of up to 2^32 positions
//! each, and the engine appends every position it names to its order: one
//! forged record from the sequencer's identity (a member holding the key in
//! a closed group, anyone in an insecure one) made it allocate gigabytes
//! (found by the `engine_messages` fuzz target). A well-behaved sequencer
//! never names more positions in one record than can be unstable at once:
//! each sender has at most `window` unstable multicasts
//! ([`vsync_core::Config::window`]), so at most `members x window`
//! positions are ordered and not yet delivered everywhere.
//!
//! Guarantee: [`check`] refuses a record over twice that bound (plus a
//! margin); the runtime drops the message and logs it. It is a guard in
//! front of the engine, not a substitute for bounds in the engine itself.

use vsync_core::Message;

/// Positions an ordering record may name beyond `2 x members x window`.
const MARGIN: u64 = 1024;

/// A message refused before the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An ordering record names more positions than a sequencer can have
    /// unstable.
    #[error(
        "an ordering record names {positions} positions, more than the {max} a sequencer can have unstable"
    )]
    OrderTooLong {
        /// Positions the record names.
        positions: u64,
        /// The most it may name.
        max: u64,
    },
}

/// The positions an ordering record names (0 for other messages).
pub fn order_positions(msg: &Message) -> u64 {
    match msg {
        Message::Order { runs, .. } => runs.iter().map(|r| u64::from(r.2)).sum(),
        _ => 0,
    }
}

/// Checks `msg` for a group of `members` processes whose engines run with
/// `window` ([`vsync_core::Config::window`]).
pub fn check(msg: &Message, members: usize, window: u64) -> Result<(), Refused> {
    let positions = order_positions(msg);
    if positions == 0 {
        return Ok(());
    }
    let max = (members.max(1) as u64)
        .saturating_mul(window)
        .saturating_mul(2)
        .saturating_add(MARGIN);
    if positions > max {
        return Err(Refused::OrderTooLong { positions, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsync_core::{Pid, ViewId};

    fn order(runs: Vec<vsync_core::message::Run>) -> Message {
        Message::Order {
            view: ViewId {
                epoch: 1,
                installer: Pid::new(1, 1),
            },
            first_pos: 1,
            runs,
        }
    }

    #[test]
    fn long_orders_are_refused_and_others_pass() {
        assert_eq!(check(&order(vec![(0, 1, 3), (1, 1, 5)]), 3, 4096), Ok(()));
        assert_eq!(check(&order(vec![(0, 1, 24_000)]), 3, 4096), Ok(()));
        assert!(matches!(
            check(&order(vec![(0, 1, u32::MAX)]), 3, 4096),
            Err(Refused::OrderTooLong { .. })
        ));
        // Many runs add up.
        let many = vec![(0, 1, 1 << 20); 64];
        assert!(check(&order(many), 3, 4096).is_err());
        let ack = Message::Ack {
            view: ViewId {
                epoch: 1,
                installer: Pid::new(1, 1),
            },
            have: u64::MAX,
            order_len: u64::MAX,
            recv: vec![],
        };
        assert_eq!(check(&ack, 3, 4096), Ok(()));
    }
}
