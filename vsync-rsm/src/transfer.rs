//! The donor's side of a state transfer: a task per joiner that serialises
//! the image taken at the cut (on a blocking thread, off the apply path)
//! and streams it as [`Direct`] pieces with
//! [`vsync_net::GroupSender::send_to`], once the joiner asks for it
//! ([`Direct::Request`]; asking again with a higher attempt number restarts
//! the stream from a clone of the same image).
//!
//! Flow control is end to end: the donor keeps at most [`WINDOW`] pieces
//! beyond the joiner's last acknowledgement (the joiner acknowledges every
//! [`ACK_EVERY`] pieces once restored), so neither side buffers more than
//! a few tens of MiB whatever the state's size. The replica task cancels
//! the stream (aborts the task) when a view change removes the joiner.
//!
//! The joiner's side counts what it receives (`Received`) and refuses a
//! state larger than [`crate::ReplicaConfig::max_transfer`]
//! ([`TransferTooLarge`]): a donor, faulty or malicious, cannot make a
//! joiner take in more than it is configured to hold.

use crate::machine::SnapshotImage;
use crate::sansio::{Offer, StateToSend};
use crate::status::Metrics;
use crate::wire::{Direct, encode_direct};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vsync_core::{Pid, ViewId};
use vsync_net::GroupSender;

/// Largest piece, bytes (kept well below the frame limit).
pub const PIECE: usize = 1 << 20;
/// Pieces in flight beyond the joiner's acknowledgement.
pub const WINDOW: u64 = 64;
/// The joiner acknowledges every this many pieces.
pub const ACK_EVERY: u64 = 16;

/// A running stream to one joiner.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) attempt: u32,
    pub(crate) acked: watch::Sender<u64>,
    pub(crate) task: JoinHandle<()>,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a stream ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) joiner: Pid,
    pub(crate) attempt: u32,
    pub(crate) result: Result<u64, String>,
}

/// What to send.
#[derive(Clone)]
pub(crate) struct Plan<I> {
    pub(crate) joiner: Pid,
    pub(crate) view: ViewId,
    pub(crate) position: u64,
    pub(crate) image: Option<I>,
    pub(crate) recovering: Option<u64>,
    /// The donor's cluster id, sent in [`Direct::Begin`].
    pub(crate) cluster: Option<crate::identity::ClusterId>,
    /// The lineage hash at `position`.
    pub(crate) chain: Option<u64>,
    /// The batches applied before the cut ([`crate::tail`]).
    pub(crate) tail: Option<Arc<crate::tail::Tail>>,
    /// The command versions of the admitted members at the cut.
    pub(crate) versions: Vec<(Pid, crate::wire::Versions)>,
    /// For this attempt: send these batches from this position (a
    /// catch-up) instead of the image.
    pub(crate) catch_up: Option<(u64, Vec<Bytes>)>,
    pub(crate) attempt: u32,
}

impl<I> Plan<I> {
    /// The plan for the state the core asked to send: the whole image (or
    /// the catch-up the joiner asks for later), first attempt `attempt`.
    pub(crate) fn new(s: StateToSend<I>, attempt: u32) -> Self {
        Plan {
            joiner: s.joiner,
            view: s.view,
            position: s.position,
            image: s.image,
            recovering: s.recovering,
            cluster: s.cluster,
            chain: s.chain,
            tail: s.tail.map(Arc::new),
            versions: s.versions,
            catch_up: None,
            attempt,
        }
    }
}

impl<I: SnapshotImage + 'static> Plan<I> {
    /// What the stream opens with: the offer of [`Direct::Begin`], or
    /// `None` for [`Direct::Refuse`] (this donor has no state to give).
    pub(crate) fn opening(&self) -> Option<Offer> {
        if self.image.is_none() {
            return self.recovering.map(|r| Offer {
                position: self.position,
                recovering: Some(r),
                cluster: self.cluster,
                chain: None,
                catch_up: None,
                versions: self.versions.clone(),
            });
        }
        Some(Offer {
            position: self.position,
            recovering: None,
            cluster: self.cluster,
            chain: self.chain,
            catch_up: self.catch_up.as_ref().map(|(p, _)| *p),
            versions: self.versions.clone(),
        })
    }

    /// The chunks the stream carries after its opening: the catch-up's
    /// batches, one each, or the image's; `None` when it carries none (a
    /// refusal, or a recovering group's opening alone).
    pub(crate) fn into_chunks(self) -> Option<Box<dyn Iterator<Item = Bytes> + Send>> {
        let mut image = self.image?;
        Some(match self.catch_up {
            Some((_, batches)) => Box::new(batches.into_iter()),
            None => Box::new(std::iter::from_fn(move || {
                image.next_chunk().map(Bytes::from)
            })),
        })
    }
}

impl<I> Plan<I> {
    /// The batches that take a joiner at `have` (position, lineage hash)
    /// to this plan's cut, if the tail holds them.
    pub(crate) fn catch_up_from(&self, have: Option<(u64, u64)>) -> Option<(u64, Vec<Bytes>)> {
        let (pos, chain) = have?;
        let end = (self.position, self.chain?);
        self.image.as_ref()?;
        if pos > self.position {
            return None;
        }
        let tail = self.tail.as_ref()?;
        tail.since(pos, chain, end).map(|b| (pos, b))
    }
}

/// A state transfer went past the joiner's limit
/// ([`crate::ReplicaConfig::max_transfer`]); the joiner stops rather than
/// take in more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused the state transfer from {donor}: more than max_transfer ({max} bytes) received ({received} bytes so far)"
)]
pub struct TransferTooLarge {
    /// The donor.
    pub donor: Pid,
    /// Bytes received, the refused piece included.
    pub received: u64,
    /// The limit.
    pub max: u64,
}

/// The joiner's count of the state bytes received in the current transfer
/// (a new view or attempt starts a new count).
#[derive(Debug, Default)]
pub(crate) struct Received {
    of: Option<(ViewId, u32)>,
    bytes: u64,
}

impl Received {
    /// Counts a piece of `len` bytes of the transfer `(view, attempt)` from
    /// `donor`; `Err` once the transfer's total exceeds `max`.
    pub(crate) fn add(
        &mut self,
        donor: Pid,
        view: ViewId,
        attempt: u32,
        len: usize,
        max: u64,
    ) -> Result<(), TransferTooLarge> {
        if self.of != Some((view, attempt)) {
            self.of = Some((view, attempt));
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(len as u64);
        if self.bytes > max {
            return Err(TransferTooLarge {
                donor,
                received: self.bytes,
                max,
            });
        }
        Ok(())
    }
}

fn enc(m: &Direct, data: &[u8]) -> Result<Bytes, String> {
    encode_direct(m, data).map_err(|e| e.to_string())
}

/// Starts streaming to a joiner.
pub(crate) fn spawn<I: SnapshotImage>(
    sender: GroupSender,
    plan: Plan<I>,
    metrics: Arc<Metrics>,
    done: mpsc::UnboundedSender<Finished>,
) -> Outgoing {
    let (acked_tx, acked_rx) = watch::channel(0u64);
    let (joiner, attempt) = (plan.joiner, plan.attempt);
    let task = tokio::spawn(async move {
        let result = stream(sender, plan, metrics, acked_rx).await;
        let _ = done.send(Finished {
            joiner,
            attempt,
            result,
        });
    });
    Outgoing {
        attempt,
        acked: acked_tx,
        task,
    }
}

async fn stream<I: SnapshotImage>(
    sender: GroupSender,
    plan: Plan<I>,
    metrics: Arc<Metrics>,
    mut acked: watch::Receiver<u64>,
) -> Result<u64, String> {
    let (to, view, attempt) = (plan.joiner, plan.view, plan.attempt);
    let send = |m: Direct, data: Bytes| {
        let sender = sender.clone();
        async move {
            let b = enc(&m, &data)?;
            sender.send_to(to, b).await.map_err(|e| e.to_string())
        }
    };
    let Some(offer) = plan.opening() else {
        send(Direct::Refuse { view }, Bytes::new()).await?;
        return Ok(0);
    };
    send(
        Direct::Begin {
            view,
            attempt,
            offer,
        },
        Bytes::new(),
    )
    .await?;
    let Some(mut chunks) = plan.into_chunks() else {
        return Ok(0);
    };
    let piece = PIECE.min(sender.max_direct().saturating_sub(256)).max(1024);
    // The image is serialised on a blocking thread, a few pieces ahead.
    let (ptx, mut prx) = mpsc::channel::<(Bytes, bool)>(8);
    let producer = tokio::task::spawn_blocking(move || {
        for chunk in chunks.by_ref() {
            if chunk.is_empty() {
                if ptx.blocking_send((chunk, true)).is_err() {
                    return;
                }
                continue;
            }
            let mut off = 0;
            while off < chunk.len() {
                let end = (off + piece).min(chunk.len());
                if ptx
                    .blocking_send((chunk.slice(off..end), end == chunk.len()))
                    .is_err()
                {
                    return;
                }
                off = end;
            }
        }
    });
    let mut seq = 0u64;
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    while let Some((data, last)) = prx.recv().await {
        while seq >= *acked.borrow() + WINDOW {
            if acked.changed().await.is_err() {
                return Err("the replica stopped".into());
            }
        }
        crc.update(&data);
        let n = data.len() as u64;
        send(
            Direct::Piece {
                view,
                attempt,
                seq,
                last,
            },
            data,
        )
        .await?;
        bytes += n;
        Metrics::add(&metrics.transfer_bytes_sent, n);
        seq += 1;
    }
    producer
        .await
        .map_err(|e| format!("serialising the state failed: {e}"))?;
    send(
        Direct::End {
            view,
            attempt,
            pieces: seq,
            crc: crc.finalize(),
        },
        Bytes::new(),
    )
    .await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_counts_per_transfer_and_refuses_past_the_limit() {
        let donor = Pid::new(1, 1);
        let v1 = ViewId {
            epoch: 1,
            installer: donor,
        };
        let v2 = ViewId {
            epoch: 2,
            installer: donor,
        };
        let mut r = Received::default();
        assert!(r.add(donor, v1, 1, 600, 1000).is_ok());
        assert!(r.add(donor, v1, 1, 400, 1000).is_ok());
        let e = r.add(donor, v1, 1, 1, 1000).unwrap_err();
        assert_eq!((e.received, e.max), (1001, 1000));
        // A new attempt, or a new view, starts again from zero.
        assert!(r.add(donor, v1, 2, 1000, 1000).is_ok());
        assert!(r.add(donor, v2, 2, 1000, 1000).is_ok());
        assert!(r.add(donor, v2, 2, usize::MAX, u64::MAX - 1).is_err());
    }
}
