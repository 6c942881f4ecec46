//! What replicas send each other: [`Entry`] batches through the total order
//! and [`Direct`] messages (state transfer) point to point. Postcard; every
//! decode of peer bytes returns a typed error.

use crate::sansio::Offer;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use vsync_core::{Pid, ViewId};

/// One item of a multicast batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A command from `origin`'s request `req` (the command's postcard).
    Cmd {
        /// The replica that executes it for a client.
        origin: Pid,
        /// Its request number there.
        req: u64,
        /// The encoded command.
        cmd: Bytes,
    },
    /// An ordered read of `origin`: runs when it reaches its place.
    Read {
        /// The replica that reads.
        origin: Pid,
        /// Its request number.
        req: u64,
    },
    /// A recovering member's claim: the position of the state it holds.
    Recover {
        /// The claimant.
        origin: Pid,
        /// Commands applied since genesis in its state.
        position: u64,
        /// The node ids of the last view it installed before the outage
        /// (empty if it knows none): recovery waits for all of them.
        last_view: Vec<u64>,
    },
    /// A new incarnation says which command versions its build sends and
    /// reads. Delivered in the total order, it is checked by every replica
    /// alike against the members admitted so far; the newcomer serves only
    /// once its own is accepted, and halts if it is refused.
    Hello {
        /// The newcomer.
        origin: Pid,
        /// Its build's versions.
        versions: Versions,
    },
}

/// The command versions a replica's build sends and reads
/// ([`crate::StateMachine::VERSION`], [`crate::StateMachine::READS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The version of the commands it sends.
    pub sends: u32,
    /// The oldest version it reads.
    pub reads_from: u32,
    /// The newest version it reads.
    pub reads_to: u32,
}

impl Versions {
    /// Whether a replica of `self` and one of `other` can be in one group:
    /// each reads what the other sends.
    pub fn compatible(&self, other: &Versions) -> bool {
        let reads = |a: &Versions, v: u32| a.reads_from <= v && v <= a.reads_to;
        reads(self, other.sends) && reads(other, self.sends)
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sends command version {}, reads {}..={}",
            self.sends, self.reads_from, self.reads_to
        )
    }
}

/// Encodes a batch.
pub fn encode_batch(entries: &[Entry]) -> Result<Bytes, postcard::Error> {
    postcard::to_stdvec(entries).map(Bytes::from)
}

/// Decodes a batch.
pub fn decode_batch(b: &[u8]) -> Result<Vec<Entry>, postcard::Error> {
    postcard::from_bytes(b)
}

/// Point-to-point messages of a state transfer. The joiner asks
/// ([`Direct::Request`]); the donor streams the image it took at the cut.
/// A lost piece (the link broke and the transport dropped what was
/// queued) makes the joiner ask again with the next `attempt` number: the
/// donor restarts from a clone of the same image, and messages of older
/// attempts are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direct {
    /// The joiner asks for the state (again, with a higher `attempt`).
    Request {
        /// The view that admitted the joiner.
        view: ViewId,
        /// Attempt number, from 1.
        attempt: u32,
        /// The joiner's own state, if it has one of a known lineage (a
        /// restarted replica): its position and lineage hash. A donor whose
        /// tail holds the batches from there sends only those
        /// ([`crate::tail`]).
        have: Option<(u64, u64)>,
    },
    /// The donor starts sending for the view that admitted the joiner:
    /// what [`Offer`] says (the state's position and lineage hash, or that
    /// the group is recovering, or a catch-up; the donor's cluster id and
    /// the admitted members' command versions).
    Begin {
        /// The view that admitted the joiner.
        view: ViewId,
        /// The attempt this answers.
        attempt: u32,
        /// What is offered.
        offer: Offer,
    },
    /// A piece of a chunk (`last`: the chunk's last piece). Its bytes
    /// follow the message's encoding in the same payload ([`encode_direct`],
    /// [`decode_direct`]), so that the receiver takes them without a copy.
    Piece {
        /// The view that admitted the joiner.
        view: ViewId,
        /// The attempt.
        attempt: u32,
        /// Piece number, from 0.
        seq: u64,
        /// Whether this piece ends a chunk.
        last: bool,
    },
    /// The state is complete: `pieces` pieces with this CRC-32 over all
    /// their bytes.
    End {
        /// The view.
        view: ViewId,
        /// The attempt.
        attempt: u32,
        /// Pieces sent.
        pieces: u64,
        /// CRC-32 of every piece's bytes in order.
        crc: u32,
    },
    /// The donor has no state to send (it is itself waiting for one): the
    /// joiner gives up and rejoins.
    Refuse {
        /// The view.
        view: ViewId,
    },
    /// The joiner has restored `next` pieces (flow control); `u64::MAX`:
    /// the state is restored, the donor may drop its image.
    Ack {
        /// The view.
        view: ViewId,
        /// The attempt.
        attempt: u32,
        /// Pieces restored (the next expected number).
        next: u64,
    },
}

impl Direct {
    /// The view this message belongs to.
    pub fn view(&self) -> ViewId {
        match self {
            Direct::Request { view, .. }
            | Direct::Begin { view, .. }
            | Direct::Piece { view, .. }
            | Direct::End { view, .. }
            | Direct::Refuse { view }
            | Direct::Ack { view, .. } => *view,
        }
    }

    /// The attempt this message belongs to (0 for a refusal).
    pub fn attempt(&self) -> u32 {
        match self {
            Direct::Request { attempt, .. }
            | Direct::Begin { attempt, .. }
            | Direct::Piece { attempt, .. }
            | Direct::End { attempt, .. }
            | Direct::Ack { attempt, .. } => *attempt,
            Direct::Refuse { .. } => 0,
        }
    }
}

/// Encodes a direct message followed by `data` (a piece's bytes).
pub fn encode_direct(m: &Direct, data: &[u8]) -> Result<Bytes, postcard::Error> {
    let mut v = postcard::to_stdvec(m)?;
    v.extend_from_slice(data);
    Ok(Bytes::from(v))
}

/// Decodes a direct message and the bytes after it (a slice of `payload`,
/// not a copy).
pub fn decode_direct(payload: &Bytes) -> Result<(Direct, Bytes), postcard::Error> {
    let (m, rest) = postcard::take_from_bytes::<Direct>(payload)?;
    let data = payload.slice(payload.len() - rest.len()..);
    Ok((m, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsync_core::Pid;

    #[test]
    fn a_piece_carries_its_bytes_after_the_header() {
        let view = ViewId {
            epoch: 3,
            installer: Pid::new(1, 2),
        };
        let m = Direct::Piece {
            view,
            attempt: 2,
            seq: 9,
            last: true,
        };
        let b = encode_direct(&m, b"hello").unwrap();
        let (back, data) = decode_direct(&b).unwrap();
        assert_eq!((back, &data[..]), (m, &b"hello"[..]));
        assert!(decode_direct(&Bytes::from_static(&[200, 1])).is_err());
    }
}
