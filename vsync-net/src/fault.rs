//! Fault injection: drop traffic to or from chosen nodes on a running
//! process, to make partitions and one-way links in tests.
//!
//! The switch is read on every frame sent and received. It costs one atomic
//! load while no fault is set; only then is the lock taken.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use vsync_core::NodeId;

#[derive(Debug, Default)]
struct Cuts {
    inbound: HashSet<NodeId>,
    outbound: HashSet<NodeId>,
}

#[derive(Debug, Default)]
struct FaultState {
    active: AtomicBool,
    cuts: Mutex<Cuts>,
}

/// A handle to a process's fault-injection switch. Cheap to clone; every
/// clone controls the same switch. Pass one in [`crate::Config::faults`] to
/// keep the same switch across incarnations.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    state: Arc<FaultState>,
}

impl Faults {
    /// A switch with nothing cut.
    pub fn new() -> Self {
        Faults::default()
    }

    fn lock(&self) -> MutexGuard<'_, Cuts> {
        self.state
            .cuts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Cuts)) {
        let mut c = self.lock();
        f(&mut c);
        let active = !c.inbound.is_empty() || !c.outbound.is_empty();
        self.state.active.store(active, Ordering::Release);
    }

    /// Drops all traffic to and from `node`.
    pub fn cut(&self, node: NodeId) {
        self.update(|c| {
            c.inbound.insert(node);
            c.outbound.insert(node);
        });
    }

    /// Restores traffic to and from `node`.
    pub fn heal(&self, node: NodeId) {
        self.update(|c| {
            c.inbound.remove(&node);
            c.outbound.remove(&node);
        });
    }

    /// Drops traffic from `node` (a one-way cut).
    pub fn cut_inbound(&self, node: NodeId) {
        self.update(|c| {
            c.inbound.insert(node);
        });
    }

    /// Drops traffic to `node` (a one-way cut).
    pub fn cut_outbound(&self, node: NodeId) {
        self.update(|c| {
            c.outbound.insert(node);
        });
    }

    /// Restores all traffic.
    pub fn heal_all(&self) {
        self.update(|c| {
            c.inbound.clear();
            c.outbound.clear();
        });
    }

    /// Whether frames from `node` are dropped.
    pub fn drops_inbound(&self, node: NodeId) -> bool {
        self.state.active.load(Ordering::Acquire) && self.lock().inbound.contains(&node)
    }

    /// Whether frames to `node` are dropped.
    pub fn drops_outbound(&self, node: NodeId) -> bool {
        self.state.active.load(Ordering::Acquire) && self.lock().outbound.contains(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_and_heal() {
        let f = Faults::new();
        let g = f.clone();
        assert!(!f.drops_inbound(NodeId(2)));
        g.cut(NodeId(2));
        assert!(f.drops_inbound(NodeId(2)) && f.drops_outbound(NodeId(2)));
        assert!(!f.drops_inbound(NodeId(3)));
        g.cut_outbound(NodeId(3));
        assert!(f.drops_outbound(NodeId(3)) && !f.drops_inbound(NodeId(3)));
        g.heal(NodeId(2));
        assert!(!f.drops_inbound(NodeId(2)));
        g.heal_all();
        assert!(!f.drops_outbound(NodeId(3)));
    }
}
