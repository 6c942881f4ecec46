//! The sans-IO replica: the state machine, its position, the buffer of
//! deliveries held back during a state transfer, and total-failure
//! recovery, driven by the group's events. No sockets, no clocks, no disk:
//! the runtime ([`crate::Replica`]) and the simulator tests feed it events
//! and carry out its [`Action`]s.
//!
//! Guarantees (each checked by the simulator test over many seeds):
//! - every member applies the same commands in the same order; `position`
//!   counts them since the group's genesis, so two replicas at the same
//!   position hold the same state;
//! - a joiner's state is the donor's at the cut (the donor's last delivery
//!   of the view before the one that admits the joiner), and the joiner
//!   applies the new view's deliveries after restoring it, so it reaches
//!   every later position with the same state as the others;
//! - a recovering group applies no command until its members have agreed,
//!   through the total order, on the highest position among them and
//!   every member holds that state; by default ([`RecoveryRule::LastViews`])
//!   the agreement waits until every node named in any member's last view
//!   before the outage is present, so that no member holding a newer state
//!   is left out;
//! - a command that this replica cannot decode is never skipped: the
//!   replica halts ([`Action::Halt`]) rather than diverge from replicas that
//!   could decode it;
//! - a replica serves only once its build's command versions
//!   ([`crate::StateMachine::VERSION`], [`crate::StateMachine::READS`]),
//!   announced through the total order ([`Entry::Hello`]), were found
//!   compatible with every admitted member's, by every replica alike; an
//!   incompatible newcomer halts before it sends a command;
//! - a state from another cluster (its cluster id differs from this
//!   replica's) is refused ([`Action::ForeignCluster`]) before any of it is
//!   applied;
//! - a replica whose side lost a partition merge
//!   ([`ReplicaCore::on_diverged`]) shows the state machine what it
//!   discards ([`StateMachine::on_discard`]), then discards its state at
//!   once (unreadable, position 0, never a donor) so that only the
//!   winner's state, by transfer, can replace it.

use crate::divergence::{Divergence, Journal};
use crate::error::RestoreError;
use crate::identity::ClusterId;
use crate::machine::StateMachine;
use crate::tail::{Tail, TailBatch, fold};
use crate::wire::{Entry, Versions, decode_batch, encode_batch};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use vsync_core::{Pid, View, ViewId};

/// A closure run on the state at an ordered read's place.
/// (`Err` if the replica cannot serve it: removed, stopping.)
pub type ReadFn<S> = Box<dyn FnOnce(Result<&S, crate::RsmError>) + Send>;

/// The state a donor streams to one joiner (`image` `None`: send no state,
/// see `recovering`; both `None`: refuse, this replica has no state).
pub struct StateToSend<I> {
    /// Who gets it.
    pub joiner: Pid,
    /// The view the transfer belongs to.
    pub view: ViewId,
    /// The position of the image.
    pub position: u64,
    /// The image at the cut.
    pub image: Option<I>,
    /// The group is recovering, under this rule
    /// ([`RecoveryRule::to_wire`]).
    pub recovering: Option<u64>,
    /// This replica's cluster id, if it has one.
    pub cluster: Option<ClusterId>,
    /// The lineage hash of the image's state (`None`: not known).
    pub chain: Option<u64>,
    /// The batches applied before the cut, for a catch-up instead of
    /// the image (`None`: none kept).
    pub tail: Option<Tail>,
    /// The command versions of the members admitted at the cut.
    pub versions: Vec<(Pid, Versions)>,
}

/// What the runtime must do for the core.
pub enum Action<S: StateMachine> {
    /// A command of this replica was applied: answer request `req`.
    Applied {
        /// The request.
        req: u64,
        /// The output.
        output: S::Output,
    },
    /// A delivered command cannot be decoded by this replica (another
    /// version's command, or damage): it is not skipped, which would make
    /// this replica diverge from those that applied it. The replica stops
    /// applying here and must leave the group.
    Halt {
        /// The position the command would have taken.
        position: u64,
        /// Why, in plain words.
        reason: String,
    },
    /// The donor's state belongs to another cluster: nothing of it was
    /// applied; the replica must stop (its data directory is left as is).
    ForeignCluster {
        /// This replica's cluster.
        ours: ClusterId,
        /// The donor's.
        theirs: ClusterId,
    },
    /// Multicast this payload (a recovery claim).
    Multicast(Bytes),
    /// Stream this state to its joiner (see [`StateToSend`]).
    SendState(StateToSend<S::Image>),
    /// A delivered batch with commands was applied; `first` is the position
    /// before it (for the durable log).
    Log {
        /// Position before the batch.
        first: u64,
        /// The batch as delivered.
        payload: Bytes,
    },
    /// A state transfer completed.
    StateRestored {
        /// The donor.
        donor: Pid,
        /// The position restored.
        position: u64,
        /// Bytes received.
        bytes: u64,
        /// Only the missing commands were received (a catch-up, logged as
        /// they were applied), not the whole state.
        caught_up: bool,
    },
    /// A piece of the state was lost in transit: ask the donor to start
    /// the transfer again.
    Retry {
        /// Why, in plain words.
        reason: String,
    },
    /// The state transfer cannot complete: rejoin as a new incarnation.
    GiveUp {
        /// Why, in plain words.
        reason: String,
    },
    /// Recovery chose the state of `holder` at `position`.
    Recovered {
        /// The position chosen.
        position: u64,
        /// Who held it.
        holder: Pid,
    },
}

/// Where the core is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not yet in a view.
    Joining,
    /// In a view, waiting for the state from `donor`.
    Awaiting {
        /// The donor.
        donor: Pid,
        /// The view of the transfer.
        view: ViewId,
    },
    /// A member with a state (recovering or not: see
    /// [`ReplicaCore::recovering`]).
    Member,
    /// Removed from the group.
    Removed,
}

struct Restore {
    position: u64,
    /// The donor's lineage hash at `position`.
    chain: Option<u64>,
    /// A catch-up: the pieces are batches applied to the state as it is.
    catch_up: bool,
    next: u64,
    crc: crc32fast::Hasher,
    partial: Vec<u8>,
    bytes: u64,
}

/// When a recovering group chooses its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryRule {
    /// Once every member of the view has claimed and every node named in
    /// any claim's last view (before the outage) is a member: nobody who
    /// may hold a newer state is missing. The default of a restart.
    LastViews,
    /// Once a view of at least this many members has formed and each has
    /// claimed (the operator's override, [`crate::Start::Recover`]).
    Expect(usize),
}

impl RecoveryRule {
    /// On the wire ([`crate::wire::Direct::Begin`]'s `recovering`): 0 is
    /// [`RecoveryRule::LastViews`], n > 0 is `Expect(n)`.
    pub fn to_wire(self) -> u64 {
        match self {
            RecoveryRule::LastViews => 0,
            RecoveryRule::Expect(n) => n.max(1) as u64,
        }
    }

    /// From the wire (see [`RecoveryRule::to_wire`]).
    pub fn from_wire(n: u64) -> Self {
        match n {
            0 => RecoveryRule::LastViews,
            n => RecoveryRule::Expect(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

/// A recovering member's claim.
#[derive(Clone, Debug)]
struct Claim {
    position: u64,
    last_view: Vec<u64>,
}

struct Recovery {
    rule: RecoveryRule,
    claims: BTreeMap<Pid, Claim>,
}

/// The sans-IO replica (see the module documentation).
pub struct ReplicaCore<S: StateMachine> {
    pid: Pid,
    machine: S,
    position: u64,
    phase: Phase,
    view: Option<View>,
    buffered: VecDeque<Bytes>,
    restore: Option<Restore>,
    recovery: Option<Recovery>,
    reads: HashMap<u64, ReadFn<S>>,
    actions: Vec<Action<S>>,
    /// Whether the machine holds a usable state (not a partial restore,
    /// not a discarded one).
    intact: bool,
    /// Awaiting the state recovery chose (not a join's): a donor's answer
    /// still saying "recovering" is stale (given before it decided) and
    /// is ignored; asking again reaches it once it has decided.
    awaiting_recovered: bool,
    /// Recently applied commands, for [`ReplicaCore::on_diverged`].
    journal: Journal,
    /// The cluster this replica's state belongs to (`None`: not known yet,
    /// a new member before its first state).
    cluster: Option<ClusterId>,
    /// The nodes of the last view installed before this process started
    /// (from disk): what this replica's recovery claim names.
    last_view: Vec<u64>,
    /// Halted on an undecodable command: nothing more is applied.
    halted: bool,
    /// The lineage hash of the state ([`crate::tail`]); `None`: not known
    /// (a checkpoint written before the hash existed), so no catch-up.
    chain: Option<u64>,
    /// The last applied batches, for catch-ups of restarting replicas.
    tail: Tail,
    /// The command versions of the members admitted so far (their
    /// [`Entry::Hello`] accepted), pruned at each view.
    versions: BTreeMap<Pid, Versions>,
    /// This build's versions.
    own_versions: Versions,
    /// This incarnation announced its versions.
    hello_sent: bool,
    /// This incarnation's versions were accepted: it may serve.
    admitted: bool,
}

/// What a donor's [`crate::wire::Direct::Begin`] offers
/// ([`ReplicaCore::state_begin`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// The position of the state.
    pub position: u64,
    /// The group is recovering, under this rule ([`RecoveryRule::to_wire`]).
    pub recovering: Option<u64>,
    /// The donor's cluster.
    pub cluster: Option<ClusterId>,
    /// The lineage hash at `position`.
    pub chain: Option<u64>,
    /// A catch-up from this position (this replica's own).
    pub catch_up: Option<u64>,
    /// The command versions of the members admitted at the cut.
    pub versions: Vec<(Pid, Versions)>,
}

impl<S: StateMachine> ReplicaCore<S> {
    /// A core for process `pid` holding `machine` at `position`.
    /// `recovering`: `Some(rule)` to start in total-failure recovery.
    pub fn new(pid: Pid, machine: S, position: u64, recovering: Option<RecoveryRule>) -> Self {
        ReplicaCore {
            pid,
            machine,
            position,
            phase: Phase::Joining,
            view: None,
            buffered: VecDeque::new(),
            restore: None,
            recovery: recovering.map(|rule| Recovery {
                rule,
                claims: BTreeMap::new(),
            }),
            reads: HashMap::new(),
            actions: Vec::new(),
            intact: true,
            awaiting_recovered: false,
            journal: Journal::default(),
            cluster: None,
            last_view: Vec::new(),
            halted: false,
            chain: Some(0),
            tail: Tail::default(),
            versions: BTreeMap::new(),
            own_versions: Versions {
                sends: S::VERSION,
                reads_from: S::READS.0,
                reads_to: S::READS.1,
            },
            hello_sent: false,
            admitted: false,
        }
    }

    /// Whether this incarnation's command versions were accepted by the
    /// group (it may serve).
    pub fn admitted(&self) -> bool {
        self.admitted
    }

    /// This build's command versions.
    pub fn own_versions(&self) -> Versions {
        self.own_versions
    }

    /// Keeps the last `commands` applied commands (at most `bytes` bytes)
    /// for catch-ups ([`crate::tail`]; 0: none).
    pub fn set_tail_limits(&mut self, commands: u64, bytes: usize) {
        self.tail.set_limits(commands, bytes);
    }

    /// The lineage hash of the state, if known.
    pub fn chain(&self) -> Option<u64> {
        self.chain
    }

    /// Where this replica's state is, for a catch-up request: its position
    /// and lineage hash, if it holds a usable state of a known lineage.
    pub fn catch_up_point(&self) -> Option<(u64, u64)> {
        if !self.intact || self.halted || self.cluster.is_none() {
            return None;
        }
        self.chain.map(|c| (self.position, c))
    }

    /// The cluster the state belongs to (from the data directory; a new
    /// member adopts its donor's).
    pub fn set_cluster(&mut self, cluster: Option<ClusterId>) {
        self.cluster = cluster;
    }

    /// The cluster the state belongs to, if known.
    pub fn cluster(&self) -> Option<ClusterId> {
        self.cluster
    }

    /// The nodes of the last view installed before this process started
    /// (from the data directory), named in recovery claims. The core then
    /// keeps it current itself: each view in which it holds the group's
    /// state replaces it.
    pub fn set_last_view(&mut self, nodes: Vec<u64>) {
        self.last_view = nodes;
    }

    /// The last view this replica held the group's state in, as claims
    /// name it.
    pub fn last_view(&self) -> &[u64] {
        &self.last_view
    }

    /// The current view becomes the last view, if this replica holds the
    /// group's state in it (a member, intact, not recovering).
    fn note_last_view(&mut self) {
        if self.phase != Phase::Member || !self.intact || self.recovery.is_some() {
            return;
        }
        if let Some(v) = &self.view {
            self.last_view = v.members.iter().map(|m| m.node.0).collect();
        }
    }

    /// Starts total-failure recovery under `rule` (a restarted replica that
    /// found no running group and founds a recovering one).
    pub fn start_recovery(&mut self, rule: RecoveryRule) {
        self.recovery = Some(Recovery {
            rule,
            claims: BTreeMap::new(),
        });
    }

    /// Whether the replica halted on a command it cannot decode.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Keeps the last `commands` applied commands (at most `bytes` bytes of
    /// them) in the journal that [`ReplicaCore::on_diverged`] lists
    /// discarded commands from (0: keep none; the default).
    pub fn set_journal(&mut self, commands: usize, bytes: usize) {
        self.journal.set_limits(commands, bytes);
    }

    /// This process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Commands applied since genesis.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The state machine.
    pub fn machine(&self) -> &S {
        &self.machine
    }

    /// Where the core is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current view.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Whether the group has not yet recovered from a total failure.
    pub fn recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Whether the state may be read locally (not mid-transfer).
    pub fn readable(&self) -> bool {
        self.intact && !matches!(self.phase, Phase::Awaiting { .. })
    }

    /// Whether commands may be submitted.
    pub fn serving(&self) -> bool {
        self.phase == Phase::Member
            && self.recovery.is_none()
            && self.intact
            && !self.halted
            && self.admitted
    }

    /// Deliveries held back until the state arrives.
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// The actions produced so far.
    pub fn drain_actions(&mut self) -> Vec<Action<S>> {
        std::mem::take(&mut self.actions)
    }

    /// Registers the closure of ordered read `req` (run when its
    /// [`Entry::Read`] is delivered).
    pub fn register_read(&mut self, req: u64, f: ReadFn<S>) {
        self.reads.insert(req, f);
    }

    /// Fails every registered read with `err()`.
    pub fn fail_reads(&mut self, err: impl Fn() -> crate::RsmError) {
        for (_, f) in self.reads.drain() {
            f(Err(err()));
        }
    }

    /// Starts loading a local state (a checkpoint) before the core joins.
    pub fn load_begin(&mut self) {
        self.intact = false;
        self.machine.restore_begin();
    }

    /// Loads one chunk of a local state.
    pub fn load_chunk(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        self.machine.restore_chunk(chunk)
    }

    /// Ends loading a local state at `position`, whose lineage hash is
    /// `chain` (`None`: not known).
    pub fn load_end(&mut self, position: u64, chain: Option<u64>) -> Result<(), RestoreError> {
        self.machine.restore_end()?;
        self.position = position;
        self.chain = chain;
        self.intact = true;
        self.journal.clear();
        self.tail.clear();
        Ok(())
    }

    /// Discards the state: genesis (position 0, an empty machine).
    pub fn reset(&mut self) -> Result<(), RestoreError> {
        self.load_begin();
        self.load_end(0, Some(0))
    }

    /// Re-applies a logged batch whose first command is at `first` (commands
    /// before the current position are skipped).
    pub fn replay(&mut self, first: u64, payload: &[u8]) -> Result<(), String> {
        let entries = decode_batch(payload).map_err(|e| e.to_string())?;
        self.apply_entries(entries, first, None);
        let mut halt = None;
        self.actions.retain(|a| match a {
            Action::Halt { reason, .. } => {
                halt = Some(reason.clone());
                false
            }
            a => !matches!(a, Action::Applied { .. }),
        });
        match halt {
            // Replay stops before the command; the replica is as far as the
            // log could take it (the group's transfer or recovery goes on
            // from there).
            Some(reason) => {
                self.halted = false;
                Err(reason)
            }
            None => Ok(()),
        }
    }

    /// A view was installed.
    pub fn on_view(&mut self, view: View) {
        let id = view.id;
        let has_donor = match self.phase {
            Phase::Awaiting { donor, .. } => Some(view.contains(donor)),
            _ => None,
        };
        self.versions.retain(|p, _| view.contains(*p));
        self.view = Some(view);
        if !self.hello_sent {
            self.hello_sent = true;
            let e = [Entry::Hello {
                origin: self.pid,
                versions: self.own_versions,
            }];
            if let Ok(b) = encode_batch(&e) {
                self.actions.push(Action::Multicast(b));
            }
        }
        match (self.phase, has_donor) {
            (Phase::Joining, _) => self.phase = Phase::Member,
            (Phase::Awaiting { donor, .. }, Some(false)) => {
                self.give_up(format!(
                    "the donor {donor} left the view {id} before the state arrived"
                ));
                return;
            }
            _ => {}
        }
        if self.phase == Phase::Member {
            if self.intact {
                self.journal.view_began(id, self.position);
            }
            self.note_last_view();
            self.claim();
        }
    }

    /// Multicasts a recovery claim if the group is recovering.
    fn claim(&mut self) {
        if let Some(r) = &mut self.recovery {
            r.claims.clear();
            let e = [Entry::Recover {
                origin: self.pid,
                position: self.position,
                last_view: self.last_view.clone(),
            }];
            if let Ok(b) = encode_batch(&e) {
                self.actions.push(Action::Multicast(b));
            }
        }
    }

    /// This process must receive the state from `donor`.
    pub fn on_await_state(&mut self, donor: Pid, view: ViewId) {
        self.phase = Phase::Awaiting { donor, view };
        self.awaiting_recovered = false;
        self.restore = None;
        if let Some(r) = &mut self.recovery {
            r.claims.clear();
        }
    }

    /// This process is the donor for `joiner` (the cut is now).
    pub fn on_send_state(&mut self, joiner: Pid, view: ViewId) {
        let (image, recovering) = if self.phase != Phase::Member || !self.intact {
            (None, None)
        } else if let Some(r) = &self.recovery {
            (None, Some(r.rule.to_wire()))
        } else {
            (Some(self.machine.image()), None)
        };
        self.actions.push(Action::SendState(StateToSend {
            joiner,
            view,
            position: self.position,
            image,
            recovering,
            cluster: self.cluster,
            chain: self.chain,
            tail: (!self.tail.is_empty()).then(|| self.tail.clone()),
            versions: self.versions_table(),
        }));
    }

    /// A batch was delivered in the total order.
    pub fn on_deliver(&mut self, payload: Bytes) {
        if matches!(self.phase, Phase::Awaiting { .. }) {
            self.buffered.push_back(payload);
            return;
        }
        self.apply_batch(payload);
    }

    /// Partitionable policy: this process's side lost the merge to
    /// `winner` (the engine's `Diverged`; `view` is its last view, `split`
    /// the split view). Builds the [`Divergence`] from the journal, shows it
    /// to the state machine ([`StateMachine::on_discard`]), then discards
    /// the state: the machine is reset ([`StateMachine::restore_begin`]),
    /// the position is 0 and the state is unreadable, so that nothing (a
    /// read, a checkpoint, a recovery claim, a transfer to another joiner)
    /// uses the losing side's state again; the winner's state, by transfer
    /// after the rejoin, is the only one it can take. Returns the
    /// divergence (the runtime reports its [`Divergence::info`]).
    pub fn on_diverged(
        &mut self,
        view: ViewId,
        split: Option<ViewId>,
        winner: View,
    ) -> Divergence<S::Command> {
        let d = self
            .journal
            .divergence(view, split, winner, self.position, |b| {
                postcard::from_bytes(b).ok()
            });
        self.machine.on_discard(&d);
        self.machine.restore_begin();
        self.intact = false;
        self.position = 0;
        self.chain = None;
        self.tail.clear();
        self.admitted = false;
        self.versions.clear();
        self.journal.clear();
        self.buffered.clear();
        self.restore = None;
        self.fail_reads(|| crate::RsmError::Removed);
        d
    }

    /// This process was removed (or gave up); it will rejoin as `pid`.
    pub fn on_removed(&mut self) {
        self.phase = Phase::Removed;
        self.view = None;
        self.buffered.clear();
        self.restore = None;
        self.fail_reads(|| crate::RsmError::Removed);
    }

    /// This process rejoins as a new incarnation.
    pub fn rejoin(&mut self, pid: Pid) {
        self.on_removed();
        self.pid = pid;
        self.phase = Phase::Joining;
        self.hello_sent = false;
        self.admitted = false;
        self.versions.clear();
    }

    /// The command versions of the admitted members, for a joiner.
    fn versions_table(&self) -> Vec<(Pid, Versions)> {
        self.versions.iter().map(|(p, v)| (*p, *v)).collect()
    }

    /// Members whose versions are incompatible with `v` (`origin` aside).
    fn incompatible_with(&self, origin: Pid, v: &Versions) -> Vec<String> {
        self.versions
            .iter()
            .filter(|(p, w)| **p != origin && !v.compatible(w))
            .map(|(p, w)| format!("{p} ({w})"))
            .collect()
    }

    /// This build is refused by the group: halt before sending anything.
    fn refuse_own_versions(&mut self, bad: &[String]) {
        let v = self.own_versions;
        self.halt(format!(
            "this build ({v}) is incompatible with the group's member(s) {}: refused at join (upgrade in steps: docs/PROTOCOL.md, \"Versions and upgrades\")",
            bad.join(", ")
        ));
    }

    /// A newcomer's versions were delivered: every replica decides alike
    /// whether they are compatible with every admitted member's.
    fn on_hello(&mut self, origin: Pid, v: Versions) {
        if !self.view.as_ref().is_some_and(|view| view.contains(origin)) {
            return;
        }
        let bad = self.incompatible_with(origin, &v);
        if bad.is_empty() {
            self.versions.insert(origin, v);
            if origin == self.pid {
                self.admitted = true;
            }
        } else if origin == self.pid {
            self.refuse_own_versions(&bad);
        } else {
            tracing::warn!(newcomer = %origin, versions = %v, "a newcomer's command versions are incompatible with the group's: it is refused and halts");
        }
    }

    fn apply_batch(&mut self, payload: Bytes) {
        if self.halted {
            return;
        }
        let entries = match decode_batch(&payload) {
            Ok(e) => e,
            Err(e) => {
                // Every replica of this build fails alike on the batch
                // framing, but one of another build may not: halt rather
                // than guess.
                self.halt(format!("a delivered batch cannot be decoded: {e}"));
                return;
            }
        };
        let first = self.position;
        let chain = self.chain;
        let applied = self.apply_entries(entries, first, Some(()));
        if applied > 0 {
            if let (Some(chain), false) = (chain, self.halted) {
                self.tail.push(TailBatch {
                    first,
                    chain,
                    commands: applied,
                    payload: payload.clone(),
                });
            }
            self.actions.push(Action::Log { first, payload });
        }
    }

    /// Applies entries, the first command being at position `first`.
    /// Returns how many commands were applied.
    fn apply_entries(&mut self, entries: Vec<Entry>, first: u64, live: Option<()>) -> u64 {
        let mut pos = first;
        let mut applied = 0;
        for e in entries {
            match e {
                Entry::Cmd { origin, req, cmd } => {
                    pos += 1;
                    if pos <= self.position {
                        continue; // replay of a command already in the state
                    }
                    let c = match postcard::from_bytes::<S::Command>(&cmd) {
                        Ok(c) => c,
                        Err(e) => {
                            self.halt(format!(
                                "the command at position {pos} (from {origin}) cannot be decoded by this build: {e}"
                            ));
                            return applied;
                        }
                    };
                    if self.recovery.is_some() && live.is_some() {
                        // Never multicast while recovering; skip alike
                        // everywhere should one arrive.
                        continue;
                    }
                    let output = self.machine.apply(c);
                    self.position += 1;
                    self.chain = self.chain.map(|h| fold(h, &cmd));
                    applied += 1;
                    if let (Some(()), Some(v)) = (live, self.view.as_ref()) {
                        self.journal.applied(self.position, v.id, &cmd);
                    }
                    if origin == self.pid {
                        self.actions.push(Action::Applied { req, output });
                    }
                }
                Entry::Read { origin, req } => {
                    if origin == self.pid && live.is_some() {
                        if let Some(f) = self.reads.remove(&req) {
                            f(Ok(&self.machine));
                        }
                    }
                }
                Entry::Recover {
                    origin,
                    position,
                    last_view,
                } => {
                    if live.is_some() {
                        self.on_claim(
                            origin,
                            Claim {
                                position,
                                last_view,
                            },
                        );
                    }
                }
                Entry::Hello { origin, versions } => {
                    if live.is_some() {
                        self.on_hello(origin, versions);
                    }
                }
            }
        }
        applied
    }

    /// Stops applying: a command cannot be decoded (see [`Action::Halt`]).
    fn halt(&mut self, reason: String) {
        tracing::error!(position = self.position, %reason, "halting: this replica cannot apply the group's commands");
        self.halted = true;
        self.actions.push(Action::Halt {
            position: self.position + 1,
            reason,
        });
    }

    fn on_claim(&mut self, origin: Pid, claim: Claim) {
        let Some(view) = &self.view else { return };
        let Some(r) = &mut self.recovery else { return };
        if !view.contains(origin) {
            return;
        }
        r.claims.insert(origin, claim);
        if !view.members.iter().all(|m| r.claims.contains_key(m)) {
            return;
        }
        let complete = match r.rule {
            RecoveryRule::Expect(n) => view.members.len() >= n,
            RecoveryRule::LastViews => r
                .claims
                .values()
                .flat_map(|c| c.last_view.iter())
                .all(|n| view.members.iter().any(|m| m.node.0 == *n)),
        };
        if !complete {
            return;
        }
        // The deciding claim: every member holds the same claims now.
        let (holder, max) = r
            .claims
            .iter()
            .map(|(p, c)| (*p, c.position))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .unwrap_or((self.pid, self.position));
        let behind: Vec<Pid> = r
            .claims
            .iter()
            .filter(|(_, c)| c.position < max)
            .map(|(p, _)| *p)
            .collect();
        self.recovery = None;
        let vid = view.id;
        let nodes: Vec<u64> = view.members.iter().map(|m| m.node.0).collect();
        tracing::info!(position = max, %holder, "recovery: chose the most recent state");
        self.actions.push(Action::Recovered {
            position: max,
            holder,
        });
        if holder == self.pid || self.position >= max {
            self.last_view = nodes;
        }
        if holder == self.pid {
            for joiner in behind {
                self.actions.push(Action::SendState(StateToSend {
                    joiner,
                    view: vid,
                    position: self.position,
                    image: Some(self.machine.image()),
                    recovering: None,
                    cluster: self.cluster,
                    chain: self.chain,
                    tail: None,
                    versions: self.versions_table(),
                }));
            }
        } else if self.position < max {
            self.phase = Phase::Awaiting {
                donor: holder,
                view: vid,
            };
            self.restore = None;
            self.awaiting_recovered = true;
        }
    }

    fn check_from(&self, from: Pid, view: ViewId) -> bool {
        matches!(self.phase, Phase::Awaiting { donor, view: v } if donor == from && v == view)
    }

    /// The donor starts sending what `offer` says: the state at
    /// `offer.position`, or, with `offer.recovering`, nothing (the group has
    /// no agreed state yet: keep ours and take part in recovery, under the
    /// rule [`RecoveryRule::from_wire`] gives), or, with `offer.catch_up`,
    /// the batches after this replica's own position, applied to the state
    /// as it is (`offer.chain`, the donor's lineage hash at the cut, is
    /// checked at the end). Ignored unless it comes from the awaited donor
    /// for the awaited view. A donor of another cluster is refused
    /// ([`Action::ForeignCluster`]); a replica without a cluster id adopts
    /// the donor's. A build whose command versions are incompatible with
    /// the admitted members' (`offer.versions`) halts at once.
    pub fn state_begin(&mut self, from: Pid, view: ViewId, offer: Offer) {
        let Offer {
            position,
            recovering,
            cluster,
            chain,
            catch_up,
            versions,
        } = offer;
        if !self.check_from(from, view) {
            return;
        }
        match (self.cluster, cluster) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                self.restore = None;
                // Nothing more from this donor is taken.
                self.phase = Phase::Removed;
                self.actions.push(Action::ForeignCluster { ours, theirs });
                return;
            }
            (None, Some(theirs)) => self.cluster = Some(theirs),
            _ => {}
        }
        self.versions = versions.into_iter().collect();
        let own = self.own_versions;
        let bad = self.incompatible_with(self.pid, &own);
        if !bad.is_empty() {
            self.restore = None;
            self.phase = Phase::Removed;
            self.refuse_own_versions(&bad);
            return;
        }
        if let Some(rule) = recovering {
            if self.awaiting_recovered {
                // Answered before the donor decided: ask again later.
                return;
            }
            if !self.intact {
                // No usable state of our own: take part with an empty one.
                if let Err(e) = self.reset() {
                    self.give_up(e.to_string());
                    return;
                }
            }
            self.recovery = Some(Recovery {
                rule: RecoveryRule::from_wire(rule),
                claims: BTreeMap::new(),
            });
            self.phase = Phase::Member;
            self.claim();
            self.drain_buffer();
            return;
        }
        // A donor with a state: the group has recovered (or never failed).
        self.recovery = None;
        if let Some(p) = catch_up {
            if !self.intact || p != self.position {
                self.give_up(format!(
                    "the donor sent a catch-up from position {p}, but this replica is at {}",
                    self.position
                ));
                return;
            }
            self.tail.clear();
            self.restore = Some(Restore {
                position,
                chain,
                catch_up: true,
                next: 0,
                crc: crc32fast::Hasher::new(),
                partial: Vec::new(),
                bytes: 0,
            });
            return;
        }
        self.intact = false;
        self.machine.restore_begin();
        self.restore = Some(Restore {
            position,
            chain,
            catch_up: false,
            next: 0,
            crc: crc32fast::Hasher::new(),
            partial: Vec::new(),
            bytes: 0,
        });
    }

    /// A piece of the state. Returns the number of pieces restored so far
    /// (for the acknowledgement), or `None` if the piece was ignored.
    pub fn state_piece(
        &mut self,
        from: Pid,
        view: ViewId,
        seq: u64,
        last: bool,
        data: &[u8],
    ) -> Option<u64> {
        if !self.check_from(from, view) {
            return None;
        }
        let r = self.restore.as_mut()?;
        if seq != r.next {
            let reason = format!("state transfer piece {seq} arrived, {} expected", r.next);
            self.restore = None;
            self.actions.push(Action::Retry { reason });
            return None;
        }
        r.next += 1;
        r.bytes += data.len() as u64;
        r.crc.update(data);
        let catch_up = r.catch_up;
        let whole: Option<std::borrow::Cow<'_, [u8]>> = if last && r.partial.is_empty() {
            Some(data.into())
        } else {
            r.partial.extend_from_slice(data);
            last.then(|| std::mem::take(&mut r.partial).into())
        };
        let next = r.next;
        let res = match whole {
            None => Ok(()),
            Some(chunk) if catch_up => self.catch_up_batch(&chunk),
            Some(chunk) => self.machine.restore_chunk(&chunk),
        };
        if let Err(e) = res {
            self.give_up(e.to_string());
            return None;
        }
        Some(next)
    }

    /// The donor has sent everything.
    pub fn state_end(&mut self, from: Pid, view: ViewId, pieces: u64, crc: u32) {
        if !self.check_from(from, view) {
            return;
        }
        let Some(r) = self.restore.take() else {
            self.give_up("the state ended before it began".into());
            return;
        };
        if r.next != pieces || !r.partial.is_empty() {
            self.give_up(format!(
                "the state ended after {} pieces, the donor sent {pieces}",
                r.next
            ));
            return;
        }
        if r.crc.finalize() != crc {
            self.give_up("the state's checksum does not match: corrupted in transit".into());
            return;
        }
        if r.catch_up {
            if self.position != r.position || (r.chain.is_some() && self.chain != r.chain) {
                self.give_up(format!(
                    "the catch-up ended at position {} (lineage {:?}), the donor's cut is at {} ({:?})",
                    self.position, self.chain, r.position, r.chain
                ));
                return;
            }
        } else if let Err(e) = self.machine.restore_end() {
            self.give_up(e.to_string());
            return;
        }
        self.intact = true;
        self.position = r.position;
        self.chain = r.chain;
        self.tail.clear();
        self.phase = Phase::Member;
        self.journal.clear();
        self.journal.view_began(view, r.position);
        self.note_last_view();
        self.actions.push(Action::StateRestored {
            donor: from,
            position: r.position,
            bytes: r.bytes,
            caught_up: r.catch_up,
        });
        self.drain_buffer();
    }

    /// Applies one batch of a catch-up (as the group delivered it) to the
    /// state as it is, and logs it (so that the log stays contiguous).
    fn catch_up_batch(&mut self, payload: &[u8]) -> Result<(), RestoreError> {
        let first = self.position;
        if let Err(reason) = self.replay(first, payload) {
            // This build cannot apply the group's commands: a retry would
            // fail alike.
            self.halt(reason.clone());
            return Err(RestoreError(reason));
        }
        if self.position > first {
            self.actions.push(Action::Log {
                first,
                payload: Bytes::copy_from_slice(payload),
            });
        }
        Ok(())
    }

    /// The donor has no state to send.
    pub fn state_refused(&mut self, from: Pid, view: ViewId) {
        if self.check_from(from, view) {
            self.give_up(format!("the donor {from} has no state to send"));
        }
    }

    /// Gives up on the transfer in progress (e.g. no progress for too long).
    pub fn give_up(&mut self, reason: String) {
        self.restore = None;
        self.actions.push(Action::GiveUp { reason });
    }

    fn drain_buffer(&mut self) {
        while self.phase == Phase::Member {
            let Some(p) = self.buffered.pop_front() else {
                break;
            };
            self.apply_batch(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::SnapshotImage;
    use vsync_core::ViewId;

    /// A counter: enough state to recover.
    #[derive(Default)]
    struct Count(u64);

    #[derive(Clone)]
    struct CountImage(Option<u64>);

    impl SnapshotImage for CountImage {
        fn next_chunk(&mut self) -> Option<Vec<u8>> {
            self.0.take().map(|n| n.to_le_bytes().to_vec())
        }
    }

    impl StateMachine for Count {
        type Command = u64;
        type Output = u64;
        type Image = CountImage;
        fn apply(&mut self, c: u64) -> u64 {
            self.0 += c;
            self.0
        }
        fn image(&self) -> CountImage {
            CountImage(Some(self.0))
        }
        fn restore_begin(&mut self) {
            self.0 = 0;
        }
        fn restore_chunk(&mut self, _: &[u8]) -> Result<(), crate::RestoreError> {
            Ok(())
        }
    }

    fn claim(origin: Pid, position: u64) -> Bytes {
        claim_with(origin, position, &[])
    }

    fn claim_with(origin: Pid, position: u64, last_view: &[u64]) -> Bytes {
        encode_batch(&[Entry::Recover {
            origin,
            position,
            last_view: last_view.to_vec(),
        }])
        .expect("encode")
    }

    fn cmd(origin: Pid, req: u64, bytes: Vec<u8>) -> Bytes {
        encode_batch(&[Entry::Cmd {
            origin,
            req,
            cmd: Bytes::from(bytes),
        }])
        .expect("encode")
    }

    fn vid(epoch: u64, installer: Pid) -> ViewId {
        ViewId { epoch, installer }
    }

    fn offer(position: u64, cluster: u128) -> Offer {
        Offer {
            position,
            cluster: Some(ClusterId(cluster)),
            ..Offer::default()
        }
    }

    /// A member admitted in the view where recovery decides may ask the
    /// chosen holder for the state before the holder has decided; the
    /// holder's stale answer ("the group is recovering") must not put it
    /// back into recovery, or it waits for ever (seen in CI).
    #[test]
    fn a_stale_recovering_answer_does_not_undo_the_decision() {
        let (n1, n2, n3) = (Pid::new(1, 1), Pid::new(2, 1), Pid::new(3, 1));
        let v3 = ViewId {
            epoch: 3,
            installer: n1,
        };
        let mut c = ReplicaCore::new(n2, Count::default(), 5, Some(RecoveryRule::Expect(3)));
        c.on_view(View {
            id: v3,
            members: vec![n1, n3, n2],
        });
        // Admitted as a joiner: n3 donates and says the group recovers.
        c.on_await_state(n3, v3);
        c.state_begin(
            n3,
            v3,
            Offer {
                position: 9,
                recovering: Some(3),
                ..Offer::default()
            },
        );
        assert!(c.recovering());
        for (p, pos) in [(n1, 5), (n3, 9), (n2, 5)] {
            c.on_deliver(claim(p, pos));
        }
        // Decided: n3's state, at 9; this member awaits it.
        assert!(!c.recovering());
        assert_eq!(
            c.phase(),
            Phase::Awaiting {
                donor: n3,
                view: v3
            }
        );
        // n3's answer to a request it got before deciding: ignored.
        c.state_begin(
            n3,
            v3,
            Offer {
                position: 9,
                recovering: Some(3),
                ..Offer::default()
            },
        );
        assert!(!c.recovering(), "a stale answer restarted recovery");
        assert_eq!(
            c.phase(),
            Phase::Awaiting {
                donor: n3,
                view: v3
            }
        );
        // Asked again, n3 (decided) sends the state.
        c.state_begin(
            n3,
            v3,
            Offer {
                position: 9,
                ..Offer::default()
            },
        );
        assert!(c.restore.is_some());
    }

    /// Delivers `cmds` to `c`, one batch each.
    fn deliver_all(c: &mut ReplicaCore<Count>, from: Pid, cmds: &[u64]) {
        for (i, n) in cmds.iter().enumerate() {
            c.on_deliver(cmd(from, i as u64, postcard::to_stdvec(n).unwrap()));
        }
    }

    /// Runs a catch-up of `batches` from the donor's cut into `j`.
    fn catch_up(j: &mut ReplicaCore<Count>, d: &ReplicaCore<Count>, from: u64, batches: &[Bytes]) {
        let (n1, v) = (Pid::new(1, 1), vid(5, Pid::new(1, 1)));
        j.on_view(View {
            id: v,
            members: vec![n1, j.pid()],
        });
        j.on_await_state(n1, v);
        j.state_begin(
            n1,
            v,
            Offer {
                position: d.position(),
                cluster: Some(ClusterId(1)),
                chain: d.chain(),
                catch_up: Some(from),
                ..Offer::default()
            },
        );
        let mut crc = crc32fast::Hasher::new();
        for (i, b) in batches.iter().enumerate() {
            crc.update(b);
            j.state_piece(n1, v, i as u64, true, b);
        }
        j.state_end(n1, v, batches.len() as u64, crc.finalize());
    }

    /// A restarted replica on the donor's history receives only the
    /// batches after its own position and ends with the donor's state and
    /// lineage; a donor that starts one batch too late is caught (the
    /// lineage hash at the end differs) and the joiner gives up instead of
    /// serving a wrong state.
    #[test]
    fn a_catch_up_sends_only_the_missing_batches_and_a_wrong_start_is_caught() {
        let (n1, n2) = (Pid::new(1, 1), Pid::new(2, 2));
        let mut d = ReplicaCore::new(n1, Count::default(), 0, None);
        d.set_tail_limits(100, 1 << 20);
        d.set_cluster(Some(ClusterId(1)));
        d.on_view(View {
            id: vid(1, n1),
            members: vec![n1],
        });
        deliver_all(&mut d, n1, &[1, 2, 3, 4, 5]);
        // The joiner restarted with the first two commands applied.
        let mut j = ReplicaCore::new(n2, Count::default(), 0, None);
        j.set_cluster(Some(ClusterId(1)));
        j.on_view(View {
            id: vid(1, n1),
            members: vec![n1, n2],
        });
        deliver_all(&mut j, n1, &[1, 2]);
        j.drain_actions();
        let have = j.catch_up_point().expect("a point");
        assert_eq!(have.0, 2);
        let batches = d
            .tail
            .since(have.0, have.1, (d.position(), d.chain().unwrap()))
            .expect("on the same history");
        assert_eq!(batches.len(), 3, "only the missing batches");
        catch_up(&mut j, &d, have.0, &batches);
        assert_eq!(j.phase(), Phase::Member);
        assert_eq!((j.position(), j.machine().0, j.chain()), (5, 15, d.chain()));
        let acts = j.drain_actions();
        assert!(acts.iter().any(|a| matches!(
            a,
            Action::StateRestored {
                caught_up: true,
                ..
            }
        )));
        let logged = acts
            .iter()
            .filter(|a| matches!(a, Action::Log { .. }))
            .count();
        assert_eq!(logged, 3, "each caught-up batch is logged");

        // Mutation: the donor starts one batch too late.
        let mut k = ReplicaCore::new(n2, Count::default(), 0, None);
        k.set_cluster(Some(ClusterId(1)));
        k.on_view(View {
            id: vid(1, n1),
            members: vec![n1, n2],
        });
        deliver_all(&mut k, n1, &[1, 2]);
        catch_up(&mut k, &d, 2, &batches[1..]);
        assert_ne!(
            k.phase(),
            Phase::Member,
            "served a state that skipped a command"
        );
        assert!(
            k.drain_actions()
                .iter()
                .any(|a| matches!(a, Action::GiveUp { .. }))
        );
    }

    fn hello(origin: Pid, sends: u32, reads: (u32, u32)) -> Bytes {
        encode_batch(&[Entry::Hello {
            origin,
            versions: Versions {
                sends,
                reads_from: reads.0,
                reads_to: reads.1,
            },
        }])
        .expect("encode")
    }

    /// Every replica decides alike, in the total order, whether a
    /// newcomer's command versions fit the admitted members': a replica
    /// serves only once its own are accepted, and a newcomer that does
    /// not fit is not admitted (and halts itself, below).
    #[test]
    fn command_versions_are_admitted_in_the_total_order() {
        let (n1, n2, n3) = (Pid::new(1, 1), Pid::new(2, 1), Pid::new(3, 1));
        let mut c = ReplicaCore::new(n1, Count::default(), 0, None);
        c.on_view(View {
            id: vid(1, n1),
            members: vec![n1, n2, n3],
        });
        assert!(
            matches!(c.drain_actions()[..], [Action::Multicast(_)]),
            "no hello sent"
        );
        assert!(!c.serving(), "serves before its versions were accepted");
        c.on_deliver(hello(n1, 1, (1, 1)));
        assert!(c.serving());
        // Sends version 2, which n1 does not read: not admitted.
        c.on_deliver(hello(n2, 2, (1, 2)));
        // Sends 1, reads 1..=2: admitted.
        c.on_deliver(hello(n3, 1, (1, 2)));
        let admitted: Vec<Pid> = c.versions.keys().copied().collect();
        assert_eq!(admitted, vec![n1, n3]);

        // The version-2 newcomer's own view of the same deliveries: it halts.
        let mut d = ReplicaCore::new(n2, Count::default(), 0, None);
        d.own_versions = Versions {
            sends: 2,
            reads_from: 1,
            reads_to: 2,
        };
        d.on_view(View {
            id: vid(1, n1),
            members: vec![n1, n2, n3],
        });
        d.on_deliver(hello(n1, 1, (1, 1)));
        d.on_deliver(hello(n2, 2, (1, 2)));
        assert!(d.halted() && !d.admitted());
    }

    /// Two builds whose commands differ: a replica that cannot decode a
    /// delivered command halts at its position instead of skipping it
    /// (skipping made it diverge silently from those that applied it).
    #[test]
    fn a_command_this_build_cannot_decode_halts_instead_of_being_skipped() {
        let (n1, n2) = (Pid::new(1, 1), Pid::new(2, 1));
        let mut c = ReplicaCore::new(n1, Count::default(), 0, None);
        c.on_view(View {
            id: vid(1, n1),
            members: vec![n1, n2],
        });
        c.on_deliver(cmd(n2, 1, postcard::to_stdvec(&5u64).unwrap()));
        assert_eq!((c.position(), c.machine().0), (1, 5));
        // Not a u64 for this build (a newer build's command, say).
        c.on_deliver(cmd(n2, 2, vec![0xff; 12]));
        c.on_deliver(cmd(n2, 3, postcard::to_stdvec(&7u64).unwrap()));
        assert!(c.halted());
        assert!(!c.serving());
        assert_eq!(
            (c.position(), c.machine().0),
            (1, 5),
            "applied past the undecodable command"
        );
        let halts: Vec<u64> = c
            .drain_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Halt { position, .. } => Some(position),
                _ => None,
            })
            .collect();
        assert_eq!(halts, vec![2]);
    }

    /// Recovery after a whole-cluster outage, by default, waits until every
    /// node named in a member's last view is present: a member that may
    /// hold a newer state is never left out.
    #[test]
    fn recovery_waits_for_every_node_of_the_claimed_last_views() {
        let (n1, n2, n3) = (Pid::new(1, 9), Pid::new(2, 9), Pid::new(3, 9));
        let mut c = ReplicaCore::new(n1, Count::default(), 4, Some(RecoveryRule::LastViews));
        c.set_last_view(vec![1, 2]);
        c.on_view(View {
            id: vid(2, n1),
            members: vec![n1, n2],
        });
        // n2's last view also named node 3, which held newer commands.
        c.on_deliver(claim_with(n1, 4, &[1, 2]));
        c.on_deliver(claim_with(n2, 4, &[1, 2, 3]));
        assert!(c.recovering(), "decided without node 3");
        c.on_view(View {
            id: vid(3, n1),
            members: vec![n1, n2, n3],
        });
        c.on_deliver(claim_with(n1, 4, &[1, 2]));
        c.on_deliver(claim_with(n2, 4, &[1, 2, 3]));
        c.on_deliver(claim_with(n3, 9, &[2, 3]));
        assert!(!c.recovering());
        assert_eq!(
            c.phase(),
            Phase::Awaiting {
                donor: n3,
                view: vid(3, n1)
            }
        );
    }

    /// A donor of another cluster is refused before anything of its state
    /// is applied; a new member without a cluster id adopts the donor's.
    #[test]
    fn a_donor_of_another_cluster_is_refused_and_a_new_member_adopts_its_donors() {
        let (n1, n2) = (Pid::new(1, 1), Pid::new(2, 1));
        let v = vid(2, n1);
        let mut c = ReplicaCore::new(n2, Count(3), 3, None);
        c.set_cluster(Some(ClusterId(1)));
        c.on_view(View {
            id: v,
            members: vec![n1, n2],
        });
        c.on_await_state(n1, v);
        c.state_begin(n1, v, offer(10, 2));
        assert!(c.restore.is_none());
        assert_eq!(c.machine().0, 3, "the state was touched");
        assert!(c.drain_actions().iter().any(|a| matches!(
            a,
            Action::ForeignCluster {
                ours: ClusterId(1),
                theirs: ClusterId(2)
            }
        )));
        let mut fresh = ReplicaCore::new(n2, Count(0), 0, None);
        fresh.on_view(View {
            id: v,
            members: vec![n1, n2],
        });
        fresh.on_await_state(n1, v);
        fresh.state_begin(n1, v, offer(10, 2));
        assert!(fresh.restore.is_some());
        assert_eq!(fresh.cluster(), Some(ClusterId(2)));
    }
}
