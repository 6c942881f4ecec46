//! An optional hook on the simulator for layers above the engine (e.g.
//! replicated state machines): it sees every process's application events
//! with the virtual time, and may choose the payloads the simulated
//! workload multicasts.
//!
//! The hook draws nothing from the seed's random stream, so a seed's faults
//! and timing are the same with or without it (with it, only the payload
//! bytes differ); without it, runs are exactly as before.

use crate::engine::AppEvent;
use crate::id::Pid;
use bytes::Bytes;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Sees the simulated processes' application events.
pub trait Observer: Send {
    /// `pid` emitted `ev` at virtual time `now` (microseconds). Events of
    /// one process come in the engine's order.
    fn event(&mut self, now: u64, pid: Pid, ev: &AppEvent);

    /// The payload of `pid`'s `n`-th multicast of the workload (from 1);
    /// `None`: the simulator's own.
    fn payload(&mut self, pid: Pid, n: u64) -> Option<Bytes> {
        let _ = (pid, n);
        None
    }

    /// A run starts, under `profile` (before any other call).
    fn begin(&mut self, profile: &super::Profile) {
        let _ = profile;
    }

    /// The process `pid` (a new incarnation) starts at `now`: founding a
    /// group (`founds`), or asking to join.
    fn started(&mut self, now: u64, pid: Pid, founds: bool) {
        let _ = (now, pid, founds);
    }

    /// The process `pid` crashed at `now` (it emits nothing more).
    fn crashed(&mut self, now: u64, pid: Pid) {
        let _ = (now, pid);
    }

    /// Asked at each timer firing of a live process: what the layer above
    /// decided for it, if anything (see [`Directive`]).
    /// [`super::SimOptions::outages`] needs an observer that founds, or
    /// nobody would ever found a group again after a whole-group outage.
    fn poll(&mut self, now: u64, pid: Pid) -> Vec<Directive> {
        let _ = (now, pid);
        Vec::new()
    }
}

/// What an [`Observer`] may have a process do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    /// Multicast this payload (safe delivery), as the layer above's own
    /// message rather than the workload's.
    Multicast(Bytes),
    /// Stop asking to join and found a group as a new incarnation (as a
    /// restarted replica does once no group admitted it in time). Ignored
    /// unless the process is still joining.
    Found,
    /// The process stops (a replica that halted or cannot write its log):
    /// it crashes, and its supervisor restarts it later.
    Crash,
}

/// A shared observer, for [`super::SimOptions::observer`].
#[derive(Clone)]
pub struct ObserverHandle(pub Arc<Mutex<dyn Observer>>);

impl ObserverHandle {
    /// Wraps an observer.
    pub fn new(o: impl Observer + 'static) -> Self {
        ObserverHandle(Arc::new(Mutex::new(o)))
    }

    pub(crate) fn event(&self, now: u64, pid: Pid, ev: &AppEvent) {
        if let Ok(mut o) = self.0.lock() {
            o.event(now, pid, ev);
        }
    }

    pub(crate) fn payload(&self, pid: Pid, n: u64) -> Option<Bytes> {
        self.0.lock().ok().and_then(|mut o| o.payload(pid, n))
    }

    pub(crate) fn begin(&self, profile: &super::Profile) {
        if let Ok(mut o) = self.0.lock() {
            o.begin(profile);
        }
    }

    pub(crate) fn started(&self, now: u64, pid: Pid, founds: bool) {
        if let Ok(mut o) = self.0.lock() {
            o.started(now, pid, founds);
        }
    }

    pub(crate) fn crashed(&self, now: u64, pid: Pid) {
        if let Ok(mut o) = self.0.lock() {
            o.crashed(now, pid);
        }
    }

    pub(crate) fn poll(&self, now: u64, pid: Pid) -> Vec<Directive> {
        self.0
            .lock()
            .map(|mut o| o.poll(now, pid))
            .unwrap_or_default()
    }
}

impl fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObserverHandle(..)")
    }
}
