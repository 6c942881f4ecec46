//! What a replica restarts from, behind a trait: the newest checkpoint and
//! the command log. The sled/WAL `Store` implements it for real
//! processes; the simulator's disk ([`crate::simcheck`]) implements it with
//! crashes that lose unsynced writes, tear the last one, and fail fsyncs.
//! [`restore_local`] is the one restart path both run, so that the
//! simulator exercises the code real replicas restart with.

use crate::error::RestoreError;
use crate::machine::StateMachine;
use crate::sansio::ReplicaCore;
use crate::store::Store;

/// The logged batches, oldest first: each a position and its encoded
/// commands, or a message saying why a record could not be read.
pub type LogBatches<'a> = Box<dyn Iterator<Item = Result<(u64, Vec<u8>), String>> + 'a>;

/// The checkpoint and log a replica restarts from.
pub trait Disk {
    /// Feeds the newest checkpoint's chunks to `sink`, in order, and
    /// returns its position and lineage hash. `Ok(None)`: no checkpoint;
    /// `Err(reason)`: torn, corrupt or unreadable (the receiver discards
    /// what it took).
    fn load_checkpoint(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), RestoreError>,
    ) -> Result<Option<(u64, Option<u64>)>, String>;

    /// The logged batches in order, as (position before the batch,
    /// payload); an `Err` ends the readable part (replay stops there).
    fn log_batches(&self) -> LogBatches<'_>;
}

impl Disk for Store {
    fn load_checkpoint(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), RestoreError>,
    ) -> Result<Option<(u64, Option<u64>)>, String> {
        let meta = Store::load_checkpoint(self, sink)?;
        Ok(meta.map(|m| (m.position, self.checkpoint_chain(&m))))
    }

    fn log_batches(&self) -> LogBatches<'_> {
        Box::new(self.log_entries().map(|e| e.map_err(|e| e.to_string())))
    }
}

/// What [`restore_local`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The checkpoint's position, if one was loaded.
    pub checkpoint: Option<u64>,
    /// Why the checkpoint was not used (torn, corrupt, unreadable).
    pub rejected: Option<String>,
    /// Log batches replayed.
    pub replayed: u64,
    /// Why replay stopped before the log's end, if it did.
    pub stopped: Option<String>,
}

/// Restores `core` from `disk`: the newest checkpoint (a rejected one
/// leaves genesis), then, with `replay_log` (Logged durability), every
/// logged batch that continues it, stopping at the first unreadable,
/// undecodable or gapped one (never skipping it: what follows would
/// apply to the wrong state).
pub fn restore_local<S: StateMachine>(
    disk: &dyn Disk,
    core: &mut ReplicaCore<S>,
    replay_log: bool,
) -> Restored {
    let mut out = Restored::default();
    core.load_begin();
    match disk.load_checkpoint(&mut |c| core.load_chunk(c)) {
        Ok(Some((position, chain))) => match core.load_end(position, chain) {
            Ok(()) => out.checkpoint = Some(position),
            Err(e) => out.rejected = Some(format!("the checkpoint cannot be restored: {e}")),
        },
        Ok(None) => {
            let _ = core.reset();
        }
        Err(reason) => out.rejected = Some(reason),
    }
    if out.rejected.is_some() {
        let _ = core.reset();
    }
    if !replay_log {
        return out;
    }
    for e in disk.log_batches() {
        let (first, payload) = match e {
            Ok(x) => x,
            Err(e) => {
                out.stopped = Some(format!("the log is unreadable from here on ({e})"));
                break;
            }
        };
        if first > core.position() {
            out.stopped = Some(format!(
                "the log has a gap (a batch after position {first}, the state is at {})",
                core.position()
            ));
            break;
        }
        if let Err(e) = core.replay(first, &payload) {
            out.stopped = Some(format!("an undecodable log entry ({e})"));
            break;
        }
        out.replayed += 1;
    }
    out
}
