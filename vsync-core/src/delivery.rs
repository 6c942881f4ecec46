//! Delivery modes: how each multicast is ordered and when it is delivered.
//!
//! One group carries four kinds of multicast side by side, chosen per
//! message ([`Delivery`]). Every kind keeps the virtual synchrony
//! guarantees: a message is delivered in the view it was sent in, only
//! while its sender is a member, and the flush at a view change delivers the
//! same set of messages of every kind at every survivor. What differs is the
//! order and the moment of delivery:
//!
//! - [`Delivery::Fifo`]: in the order its sender sent its FIFO and causal
//!   messages; delivered as soon as it and the sender's earlier messages
//!   have arrived (one hop).
//! - [`Delivery::Causal`]: additionally after every FIFO or causal message
//!   its sender had delivered before sending it (vector timestamps scoped to
//!   the view and sent as deltas: a few bytes per message).
//! - [`Delivery::Total`]: one total order with the safe messages; delivered
//!   once its position is known, before it is stable (a member that
//!   delivers it and crashes at once may have delivered it alone).
//! - [`Delivery::Safe`]: total order, delivered once every member holds it
//!   (uniform: if anyone delivered it, every survivor does).
//!
//! Between the two families (FIFO/causal and total/safe) there is no order
//! within a view; across views, the view boundary orders everything.
//!
//! On the wire a message is its [`Header`] (postcard) followed by the
//! payload, so every part of the protocol that moves payloads (repairs,
//! flush reports, installs) moves headers too.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How a multicast is ordered and when it is delivered. See the module
/// docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Sender order, one hop.
    Fifo,
    /// Causal order (happened-before among FIFO and causal messages).
    Causal,
    /// Total order, delivered before stability.
    Total,
    /// Total order, delivered once held by every member (the default).
    #[default]
    Safe,
}

impl Delivery {
    /// True for the totally ordered kinds ([`Delivery::Total`],
    /// [`Delivery::Safe`]).
    pub fn is_ordered(self) -> bool {
        matches!(self, Delivery::Total | Delivery::Safe)
    }

    /// Every mode, for iteration.
    pub const ALL: [Delivery; 4] = [
        Delivery::Fifo,
        Delivery::Causal,
        Delivery::Total,
        Delivery::Safe,
    ];
}

/// The per-message header on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Header {
    Safe,
    Total,
    Fifo,
    /// Dependencies added since the sender's previous causal message in
    /// this view: `(rank, seq)`: the sender had delivered the FIFO or
    /// causal message `seq` of sender `rank`.
    Causal(Vec<(u32, u64)>),
}

impl Header {
    pub(crate) fn mode(&self) -> Delivery {
        match self {
            Header::Safe => Delivery::Safe,
            Header::Total => Delivery::Total,
            Header::Fifo => Delivery::Fifo,
            Header::Causal(_) => Delivery::Causal,
        }
    }
}

/// Prefixes `payload` with `header`.
pub(crate) fn encode(header: &Header, payload: &Bytes) -> Bytes {
    let mut v = Vec::with_capacity(payload.len() + 4);
    // Serialising these plain enums into a Vec cannot fail.
    if let Ok(v2) = postcard::to_extend(header, std::mem::take(&mut v)) {
        v = v2;
    }
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// Splits a wire payload into its header and the application's payload
/// (without copying). A payload whose header does not decode is treated as
/// safe and delivered whole (`None` tells the caller to count it); every
/// member decides the same way because every member holds the same bytes.
pub(crate) fn decode(wire: &Bytes) -> (Header, Bytes, bool) {
    match postcard::take_from_bytes::<Header>(wire) {
        Ok((h, rest)) => {
            let at = wire.len() - rest.len();
            (h, wire.slice(at..), true)
        }
        Err(_) => (Header::Safe, wire.clone(), false),
    }
}

/// The header's mode, as [`decode`] would find it (cheap for all but
/// causal messages).
pub(crate) fn mode_of(wire: &Bytes) -> Delivery {
    match wire.first() {
        Some(0) => Delivery::Safe,
        Some(1) => Delivery::Total,
        Some(2) => Delivery::Fifo,
        Some(3) => decode(wire).0.mode(),
        _ => Delivery::Safe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_stay_small() {
        let p = Bytes::from_static(b"hello");
        for h in [
            Header::Safe,
            Header::Total,
            Header::Fifo,
            Header::Causal(vec![(2, 300)]),
        ] {
            let w = encode(&h, &p);
            let (h2, p2, ok) = decode(&w);
            assert!(ok);
            assert_eq!((h2.clone(), p2.clone()), (h.clone(), p.clone()));
            assert_eq!(mode_of(&w), h.mode());
        }
        assert_eq!(encode(&Header::Safe, &p).len(), p.len() + 1);
        assert_eq!(encode(&Header::Causal(vec![]), &p).len(), p.len() + 2);
    }

    #[test]
    fn a_malformed_header_is_safe_and_whole() {
        let w = Bytes::from_static(&[9, 1, 2]);
        let (h, p, ok) = decode(&w);
        assert_eq!((h, p, ok), (Header::Safe, w.clone(), false));
        let w = Bytes::from_static(&[3, 200]);
        assert!(!decode(&w).2);
        assert_eq!(mode_of(&w), Delivery::Safe, "as decode decides");
        assert_eq!(mode_of(&Bytes::new()), Delivery::Safe);
    }
}
