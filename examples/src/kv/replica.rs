//! The replicated backend: [`KvMachine`] (the [`StateMachine`] over
//! [`KvStore`]) and [`KvReplica`], a [`Backend`] on a `vsync_rsm::Replica`.
//!
//! Guarantees: the machine's `apply` is [`KvStore::apply`] (deterministic);
//! its image is an O(1) clone of the persistent map, serialised 1,024
//! entries (or ~256 KiB) per chunk off the apply path; a restore rejects
//! malformed chunks with an error, never a panic. Writes are acknowledged
//! only after `Replica::execute` returned, i.e. after the command was
//! delivered in the group's total order and applied here (and logged, in
//! Logged durability).
//!
//! Partitions: the node runs the partition policy of `--partition-policy`.
//! Under `partitionable`, when this replica's side loses the merge after a
//! heal, [`KvMachine::on_discard`] logs every write it discards (a warning
//! line each, up to [`LOGGED_DISCARDS`], then a count) and counts them for
//! `INFO` (`vsync_discarded_writes`); the replica then takes the winner's
//! data set by transfer.

use crate::kv::backend::{Backend, BackendError, BackendMetrics, NodeStatus};
use crate::kv::cli::{DurabilityArg, NodeArgs, PartitionPolicyArg};
use crate::kv::machine::{Entry, KvCommand, KvStore, WriteOp, WriteResult};
use bytes::Bytes;
use imbl::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use vsync_core::engine::PartitionPolicy;
use vsync_rsm::{
    Divergence, DivergenceInfo, Durability, Replica, ReplicaConfig, RestoreError, Role, RsmError,
    SnapshotImage, Start, StateMachine,
};

/// Entries per snapshot chunk (a chunk also ends past [`CHUNK_BYTES`]).
const CHUNK_ENTRIES: usize = 1024;
/// Target size of a snapshot chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// At most this many discarded writes are logged one per line after a lost
/// merge; the rest are counted in one line.
pub const LOGGED_DISCARDS: u64 = 100;

/// The key-value data set as a replicated state machine.
#[derive(Debug, Default)]
pub struct KvMachine {
    store: KvStore,
    /// Keys stored, readable without going through the replica's task.
    keys: Arc<AtomicU64>,
    /// Keys with an expiry, readable likewise (the purge task reads it).
    expiring: Arc<AtomicU64>,
    /// Writes discarded by lost partition merges (not replicated state:
    /// it survives the restore that follows a lost merge).
    discarded: Arc<AtomicU64>,
}

impl KvMachine {
    /// An empty machine publishing its key count to `keys`.
    pub fn new(keys: Arc<AtomicU64>) -> Self {
        KvMachine {
            store: KvStore::new(),
            keys,
            expiring: Arc::new(AtomicU64::new(0)),
            discarded: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The published count of writes discarded by lost partition merges.
    pub fn discarded_counter(&self) -> Arc<AtomicU64> {
        self.discarded.clone()
    }

    /// The published count of keys with an expiry.
    pub fn expiring_counter(&self) -> Arc<AtomicU64> {
        self.expiring.clone()
    }

    /// Publishes the counts.
    fn publish(&self) {
        self.keys.store(self.store.len() as u64, Ordering::Relaxed);
        self.expiring
            .store(self.store.expiring() as u64, Ordering::Relaxed);
    }

    /// The data set.
    pub fn store(&self) -> &KvStore {
        &self.store
    }
}

/// A consistent image of the map, serialised chunk by chunk (taking it is
/// O(1): the map is persistent).
///
/// The walk is a draining iterator over the image's own handle on the map:
/// it copies each trie node once as it passes (the live map still shares
/// them), so it holds no borrow, needs no key list, and uses memory for
/// one path of nodes. The walk's order is fixed by the map's structure, so
/// a clone restarts it and skips what was already taken.
pub struct KvImage {
    map: HashMap<Bytes, Entry>,
    /// The walk, started on the first chunk.
    walk: Option<imbl::hashmap::ConsumingIter<(Bytes, Entry), imbl::shared_ptr::DefaultSharedPtr>>,
    /// Entries already serialised.
    taken: usize,
}

impl Clone for KvImage {
    fn clone(&self) -> Self {
        KvImage {
            map: self.map.clone(),
            walk: None,
            taken: self.taken,
        }
    }
}

impl SnapshotImage for KvImage {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let skip = self.taken;
        let map = &self.map;
        let walk = self.walk.get_or_insert_with(|| {
            let mut w = map.clone().into_iter();
            if skip > 0 {
                w.nth(skip - 1);
            }
            w
        });
        let mut part: Vec<(Bytes, Entry)> = Vec::new();
        let mut bytes = 0;
        for (k, e) in walk.by_ref() {
            bytes += k.len() + e.value.len() + 16;
            part.push((k, e));
            if part.len() >= CHUNK_ENTRIES || bytes >= CHUNK_BYTES {
                break;
            }
        }
        if part.is_empty() {
            return None;
        }
        self.taken += part.len();
        // Serialising owned Bytes/Entry values cannot fail with postcard;
        // were it to, the image ends (the receiver sees a short state and
        // its checks fail) rather than the process.
        let chunk = postcard::to_stdvec(&part).ok();
        if chunk.is_none() {
            self.taken = self.map.len();
            self.walk = Some(HashMap::new().into_iter());
        }
        chunk
    }
}

impl StateMachine for KvMachine {
    type Command = KvCommand;
    type Output = Vec<WriteResult>;
    type Image = KvImage;

    fn apply(&mut self, cmd: KvCommand) -> Vec<WriteResult> {
        let out = self.store.apply(cmd);
        self.publish();
        out
    }

    fn image(&self) -> KvImage {
        KvImage {
            map: self.store.map().clone(),
            walk: None,
            taken: 0,
        }
    }

    fn restore_begin(&mut self) {
        self.store = KvStore::new();
        self.publish();
    }

    fn restore_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        let part: Vec<(Bytes, Entry)> = postcard::from_bytes(chunk).map_err(RestoreError::new)?;
        for (k, e) in part {
            self.store.put_entry(k, e);
        }
        self.publish();
        Ok(())
    }

    /// Logs and counts the writes this replica discards because its side
    /// lost the partition merge (see the module documentation).
    fn on_discard(&mut self, d: &Divergence<KvCommand>) {
        let n = log_discarded(d);
        self.discarded.fetch_add(n, Ordering::Relaxed);
    }
}

/// Logs what a lost merge discards; returns the number of writes certainly
/// discarded (a command no longer in the journal counts as one).
pub fn log_discarded(d: &Divergence<KvCommand>) -> u64 {
    let info = d.info();
    tracing::warn!(
        "this replica's side of the partition lost the merge to view {}: {}",
        info.winner,
        describe_divergence(&info)
    );
    let mut writes = 0u64;
    let mut listed_cmds = 0u64;
    for x in d.certain() {
        listed_cmds += 1;
        for op in &x.command.ops {
            if matches!(op, WriteOp::PurgeExpired) {
                continue;
            }
            writes += 1;
            if writes <= LOGGED_DISCARDS {
                tracing::warn!(
                    "discarded write (lost the partition merge): {} (position {}, view {})",
                    describe_op(op),
                    x.position,
                    x.view
                );
            }
        }
    }
    if writes > LOGGED_DISCARDS {
        tracing::warn!(
            "... and {} more discarded writes (not listed)",
            writes - LOGGED_DISCARDS
        );
    }
    let unlisted = info.discarded.saturating_sub(listed_cmds);
    if unlisted > 0 {
        tracing::warn!(
            "{unlisted} more discarded commands were no longer in the discard journal (not listed)"
        );
        writes += unlisted;
    }
    if info.uncertain > 0 {
        tracing::warn!(
            "{} commands applied in the split view itself may or may not survive (those delivered before the partition are in the winner's data set too); the winner's data set decides",
            info.uncertain
        );
    }
    writes
}

/// A divergence in plain words, for `INFO` and the log.
pub fn describe_divergence(i: &DivergenceInfo) -> String {
    let opt = |p: Option<u64>| p.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    format!(
        "view={} split={} position={} winner={} discarded={} uncertain={}",
        i.view,
        i.split
            .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
        opt(i.position),
        i.winner,
        i.discarded,
        i.uncertain
    )
}

/// One write, for the log (keys and values cut to 64 bytes).
fn describe_op(op: &WriteOp) -> String {
    let show = |b: &[u8]| {
        let s: String = String::from_utf8_lossy(b).chars().take(64).collect();
        format!("{s:?}")
    };
    match op {
        WriteOp::Set { key, value, .. } => format!("SET {} {}", show(key), show(value)),
        WriteOp::Del(keys) => format!(
            "DEL {}",
            keys.iter().map(|k| show(k)).collect::<Vec<_>>().join(" ")
        ),
        WriteOp::IncrBy(k, by) => format!("INCRBY {} {by}", show(k)),
        WriteOp::MSet(pairs) => format!(
            "MSET {}",
            pairs
                .iter()
                .map(|(k, v)| format!("{} {}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        WriteOp::FlushDb => "FLUSHDB".into(),
        WriteOp::PurgeExpired => "(expiry purge)".into(),
        WriteOp::Expire { key, at, .. } => format!("PEXPIREAT {} {at}", show(key)),
        WriteOp::Persist(key) => format!("PERSIST {}", show(key)),
        WriteOp::SetNx(k, v) => format!("SETNX {} {}", show(k), show(v)),
        WriteOp::GetSet(k, v) => format!("GETSET {} {}", show(k), show(v)),
        WriteOp::GetDel(k) => format!("GETDEL {}", show(k)),
        WriteOp::Append(k, v) => format!("APPEND {} {}", show(k), show(v)),
        WriteOp::Rename { from, to, nx } => format!(
            "{} {} {}",
            if *nx { "RENAMENX" } else { "RENAME" },
            show(from),
            show(to)
        ),
        WriteOp::Exec { cmds, .. } => format!(
            "EXEC [{}]",
            cmds.iter()
                .map(|a| a.iter().map(|x| show(x)).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// A [`Backend`] on a running replica.
#[derive(Clone, Debug)]
pub struct KvReplica {
    replica: Replica<KvMachine>,
    node: u64,
    listen: SocketAddr,
    keys: Arc<AtomicU64>,
    discarded: Arc<AtomicU64>,
    policy: PartitionPolicy,
    faults: Option<vsync_net::Faults>,
    /// Set when this process asked to leave: the replica's stop is then
    /// expected, not a failure.
    leaving: Arc<AtomicBool>,
}

impl KvReplica {
    /// The replica.
    pub fn replica(&self) -> &Replica<KvMachine> {
        &self.replica
    }
}

/// Maps the replica's errors to what a Redis client is told.
fn map_err(e: RsmError) -> BackendError {
    match e {
        RsmError::Blocked => BackendError::Minority,
        RsmError::NotMember => BackendError::NotMember("joining or receiving the state".into()),
        RsmError::Recovering => BackendError::NotMember("recovering from a total failure".into()),
        RsmError::ShuttingDown => BackendError::ShuttingDown,
        RsmError::Removed => BackendError::Other(
            "this replica was removed from the group while the command was in flight; it may or may not have been applied"
                .into(),
        ),
        other => BackendError::Other(other.to_string()),
    }
}

/// Picks the address to listen on for group traffic: a port-0 address is
/// given a free port now, because peers must be told a concrete one.
fn concrete(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

/// Starts this node's replica as its arguments say.
pub async fn start(a: &NodeArgs) -> Result<KvReplica, String> {
    let listen = concrete(a.listen)?;
    let mut net = vsync_net::Config::new(a.id, listen, a.group.clone());
    net.advertise = a.advertise;
    if listen.ip().is_unspecified() && a.advertise.is_none() {
        return Err(format!(
            "--listen {listen} binds every interface: give --advertise IP:PORT, the address the other replicas dial to reach this one"
        ));
    }
    net.seeds = a.seeds.clone();
    net.history = a.history.clone();
    net.security = a.security()?;
    net.engine =
        vsync_core::Config::with_suspect_timeout(a.suspect_timeout_ms.saturating_mul(1000));
    let policy = match a.partition_policy {
        PartitionPolicyArg::Primary => PartitionPolicy::PrimaryComponent,
        PartitionPolicyArg::Partitionable => PartitionPolicy::Partitionable,
    };
    net.engine.policy = policy;
    let faults = a.fault_injection.then(|| net.faults.clone());
    let mut cfg = ReplicaConfig::new(net);
    std::fs::create_dir_all(&a.data)
        .map_err(|e| format!("cannot create the data directory {}: {e}", a.data.display()))?;
    cfg.data_dir = Some(a.data.clone());
    cfg.durability = match a.durability {
        DurabilityArg::Memory => Durability::Memory,
        DurabilityArg::Logged => Durability::Logged,
    };
    cfg.checkpoint_every = a.checkpoint_every;
    cfg.checkpoint_interval = Duration::from_secs(a.checkpoint_secs);
    cfg.max_transfer = a.max_transfer;
    cfg.restart_wait = Duration::from_millis(a.restart_wait_ms);
    cfg.catch_up_commands = a.catch_up_writes;
    cfg.catch_up_bytes = a.catch_up_mib.saturating_mul(1 << 20);
    cfg.start = match (a.recover, a.found_new_cluster) {
        (Some(expect), _) => Start::Recover {
            found: a.seeds.is_empty(),
            expect,
        },
        (None, true) => Start::FoundAnew,
        (None, false) => Start::Auto,
    };
    let keys = Arc::new(AtomicU64::new(0));
    let machine = KvMachine::new(keys.clone());
    let expiring = machine.expiring_counter();
    let discarded = machine.discarded_counter();
    let replica = Replica::start(cfg, machine)
        .await
        .map_err(|e| format!("cannot start the replica: {e}"))?;
    tokio::spawn(purge_expired(replica.clone(), expiring));
    let leaving = Arc::new(AtomicBool::new(false));
    tokio::spawn(exit_when_stopped(replica.clone(), leaving.clone()));
    Ok(KvReplica {
        replica,
        node: a.id,
        // What peers dial (and what the ready line shows).
        listen: a.advertise.unwrap_or(listen),
        keys,
        discarded,
        policy,
        faults,
        leaving,
    })
}

/// Ends the process when the replica stops by itself (it halted on a
/// command this build cannot decode, its data directory belongs to another
/// cluster, its disk failed): a server that can no longer serve must not
/// look alive to a supervisor. Exit status 1, the reason on stderr.
async fn exit_when_stopped(replica: Replica<KvMachine>, leaving: Arc<AtomicBool>) {
    let mut events = replica.events();
    loop {
        let reason = match events.recv().await {
            Ok(vsync_rsm::ReplicaEvent::Stopped { reason }) => reason,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if replica.status().role != Role::Stopped {
                    continue;
                }
                "see the log".to_string()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if leaving.load(Ordering::Relaxed) {
            return;
        }
        tracing::error!(%reason, "the replica stopped: exiting");
        eprintln!("vsync-kv: the replica stopped: {reason}");
        std::process::exit(1);
    }
}

/// Once a second, the view's coordinator replicates a purge of the keys
/// expired by its clock, so that expired keys do not stay in memory until
/// they are written again. (Every replica applies the purge with the same
/// `now`, so they stay identical.)
async fn purge_expired(replica: Replica<KvMachine>, expiring: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = replica.status();
        if st.role == Role::Stopped {
            return;
        }
        if st.role == Role::Coordinator && expiring.load(Ordering::Relaxed) > 0 {
            let cmd = KvCommand {
                now: crate::kv::machine::now_ms(),
                ops: vec![crate::kv::machine::WriteOp::PurgeExpired],
            };
            if let Err(e) = replica.execute(cmd).await {
                tracing::debug!("expiry purge not replicated: {e}");
            }
        }
    }
}

impl Backend for KvReplica {
    async fn execute(&self, cmd: KvCommand) -> Result<Vec<WriteResult>, BackendError> {
        self.replica.execute(cmd).await.map_err(map_err)
    }

    async fn read<R: Send + 'static>(
        &self,
        ordered: bool,
        f: impl FnOnce(&KvStore) -> R + Send + 'static,
    ) -> Result<R, BackendError> {
        let g = move |m: &KvMachine| f(&m.store);
        if ordered {
            self.replica.read_ordered(g).await.map_err(map_err)
        } else {
            self.replica.read(g).await.map_err(map_err)
        }
    }

    fn status(&self) -> NodeStatus {
        let st = self.replica.status();
        // "primary" only once the replica serves (a member with its state),
        // not while it still receives the state. Under the partitionable
        // policy every side serves: "serving".
        let serving = matches!(st.role, Role::Member | Role::Coordinator | Role::Donor);
        let partitionable = self.policy == PartitionPolicy::Partitionable;
        let partition = if st.blocked {
            "minority"
        } else if serving && partitionable {
            "serving"
        } else if serving {
            "primary"
        } else {
            "none"
        };
        NodeStatus {
            node: self.node,
            pid: st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            view: st.view.as_ref().map(|v| v.id.to_string()),
            members: st.members.iter().map(|p| p.to_string()).collect(),
            position: st.position,
            role: format!("{:?}", st.role).to_lowercase(),
            partition: partition.into(),
            keys: self.keys.load(Ordering::Relaxed),
            last_checkpoint: st.last_checkpoint,
            partition_policy: if partitionable {
                "partitionable"
            } else {
                "primary"
            }
            .into(),
            member_lines: st
                .members
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let addr = st
                        .addresses
                        .iter()
                        .find(|(q, _)| q == p)
                        .map_or_else(|| "-".to_string(), |(_, a)| a.to_string());
                    let role = if i == 0 { "coordinator" } else { "member" };
                    let me = if st.pid == Some(*p) {
                        format!(" (this replica, position {})", st.position)
                    } else {
                        String::new()
                    };
                    format!("{p} {addr} {role}{me}")
                })
                .collect(),
            divergences: self.replica.metrics().divergences,
            discarded_writes: self.discarded.load(Ordering::Relaxed),
            last_divergence: st.last_divergence.as_ref().map(describe_divergence),
        }
    }

    fn metrics(&self) -> BackendMetrics {
        let m = self.replica.metrics();
        BackendMetrics {
            deliveries: m.deliveries,
            view_changes: m.view_changes,
            state_transfer_bytes_sent: m.transfer_bytes_sent,
            state_transfer_bytes_received: m.transfer_bytes_received,
            state_transfers_received: m.transfers_received,
            catch_ups_received: m.catch_ups_received,
            checkpoints: m.checkpoints_written,
            checkpoint_seconds_total: 0.0,
            last_checkpoint_seconds: m.last_checkpoint_duration.as_secs_f64(),
        }
    }

    async fn checkpoint(&self) -> Result<(), BackendError> {
        self.replica.checkpoint().await.map_err(map_err)
    }

    async fn evict(&self, node: u64) -> Result<String, String> {
        self.replica
            .evict(node)
            .await
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }

    async fn leave(&self) -> Result<(), BackendError> {
        self.leaving.store(true, Ordering::Relaxed);
        self.replica.leave().await.map_err(map_err)
    }

    fn group_addr(&self) -> Option<SocketAddr> {
        Some(self.listen)
    }

    fn faults(&self) -> Option<vsync_net::Faults> {
        self.faults.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::SetCond;
    use crate::kv::machine::{Expire, WriteOp};

    #[test]
    fn image_round_trips_in_chunks_and_rejects_garbage() {
        let mut m = KvMachine::new(Arc::new(AtomicU64::new(0)));
        let ops = (0..5000)
            .map(|i| WriteOp::Set {
                key: Bytes::from(format!("key{i:05}")),
                value: Bytes::from(vec![b'v'; i % 300]),
                cond: SetCond::Always,
                expire: if i % 7 == 0 {
                    Expire::At(1_000 + i as u64)
                } else {
                    Expire::Never
                },
            })
            .collect();
        m.apply(KvCommand { now: 1, ops });
        let mut img = m.image();
        let pristine = img.clone();
        // Writes after the image must not show up in it.
        m.apply(KvCommand {
            now: 1,
            ops: vec![WriteOp::FlushDb],
        });
        let mut chunks = Vec::new();
        while let Some(c) = img.next_chunk() {
            chunks.push(c);
        }
        assert!(chunks.len() > 4, "{} chunks", chunks.len());
        let keys = Arc::new(AtomicU64::new(0));
        let mut r = KvMachine::new(keys.clone());
        r.restore_begin();
        for c in &chunks {
            r.restore_chunk(c).unwrap();
        }
        r.restore_end().unwrap();
        assert_eq!(keys.load(Ordering::Relaxed), 5000);
        let mut orig = KvMachine::new(Arc::new(AtomicU64::new(0)));
        orig.store = KvStore::from_entries(img.map.clone());
        assert_eq!(r.store.digest(), orig.store.digest());
        assert!(r.restore_chunk(&[0xff, 0xff, 0xff]).is_err());
        // A clone of a partly taken image goes on where it stood.
        let mut img = pristine;
        let first = img.next_chunk().unwrap();
        let mut rest = img.clone();
        let mut all = vec![first];
        while let Some(c) = rest.next_chunk() {
            all.push(c);
        }
        assert_eq!(all, chunks);
        assert_eq!(img.next_chunk().as_ref(), chunks.get(1));
    }
}
