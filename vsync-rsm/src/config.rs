//! How to run a replica: [`ReplicaConfig`], [`Durability`], [`Start`].

use std::path::PathBuf;
use std::time::Duration;

/// What survives a crash of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Checkpoints only (if [`ReplicaConfig::data_dir`] is set). A restarted
    /// process loads its last checkpoint and catches up by state transfer;
    /// if every member crashes, the commands applied after the newest
    /// checkpoint among them are lost, acknowledged or not.
    #[default]
    Memory,
    /// Every delivered batch is appended to a log on disk and flushed
    /// before any command of it is acknowledged (before
    /// [`crate::Replica::execute`] returns). The log is truncated at each
    /// checkpoint. Needs [`ReplicaConfig::data_dir`]. If every member
    /// crashes, restarting them recovers every acknowledged command.
    Logged,
}

/// How a replica enters its group. The rule is in [`crate::startup`]: a
/// data directory with state is never discarded implicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// Decide from the data directory (the default, and what a supervisor
    /// that restarts a process with its original command line gets):
    /// - empty, no seeds: found a new cluster;
    /// - empty, with seeds: join the running group through them;
    /// - holding state: restart. Ask the members of the last view recorded
    ///   on disk ([`crate::identity`]) and the seeds to admit it; if no
    ///   group does within [`ReplicaConfig::restart_wait`], the whole
    ///   cluster is down and it recovers: the lowest node id of its last
    ///   view founds a recovering group, the others join it, and once every
    ///   node named in any member's last view is present the most recent
    ///   state wins (in [`Durability::Logged`] mode no acknowledged command
    ///   is lost).
    #[default]
    Auto,
    /// Found a new group (genesis: position 0, a new cluster id). Refused
    /// ([`crate::startup::StartError::NotEmpty`]) if the data directory
    /// holds anything: use [`Start::FoundAnew`] to move it aside.
    Found,
    /// Found a new group after moving the data directory aside to
    /// `DIR.old-<unix ms>` (renamed, never deleted): the explicit,
    /// named way to start over.
    FoundAnew,
    /// Join a running group: as [`Start::Auto`], but never found one. A
    /// replica with state restarts as there; with an empty directory it
    /// needs seeds.
    Join,
    /// Operator override after a total failure: load this process's
    /// checkpoint (and log), then found (`found: true`, exactly one
    /// process) or join the recovering group, and choose the most recent
    /// state once a view of at least `expect` members has formed (instead
    /// of waiting for every node of the last views, as [`Start::Auto`]
    /// does). Waiting for fewer than the last view's members may lose what
    /// only the missing ones hold: use it when a member is gone for good.
    /// Commands are refused ([`crate::RsmError::Recovering`]) until then.
    /// If the group turns out to be running normally, this is an ordinary
    /// join.
    Recover {
        /// Found the recovering group (true for exactly one process).
        found: bool,
        /// How many members must be present before the state is chosen.
        expect: usize,
    },
}

/// The configuration of one replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The network runtime's configuration (node id, addresses, seeds,
    /// group name, timeouts).
    pub net: vsync_net::Config,
    /// Where checkpoints and the log live (a sled database). `None`: no
    /// checkpoints, nothing survives a crash.
    pub data_dir: Option<PathBuf>,
    /// What survives a crash.
    pub durability: Durability,
    /// Write a checkpoint after this many commands (0: never by count).
    pub checkpoint_every: u64,
    /// Write a checkpoint at least this often while commands are applied
    /// (zero: never by time).
    pub checkpoint_interval: Duration,
    /// How to enter the group.
    pub start: Start,
    /// A restarting replica ([`Start::Auto`] with state on disk) that no
    /// group admits within this long concludes that the whole cluster is
    /// down and recovers (see [`Start::Auto`]). A recovering group that
    /// stays a group of one for this long tries to join again, in case a
    /// running group it could not reach exists.
    pub restart_wait: Duration,
    /// Rejoin automatically as a new incarnation after being removed (or
    /// after giving up on a state transfer).
    pub auto_rejoin: bool,
    /// A state transfer that makes no progress for this long is given up:
    /// the joiner rejoins as a new incarnation.
    pub transfer_timeout: Duration,
    /// Capacity of the event stream ([`crate::Replica::events`]).
    pub event_capacity: usize,
    /// The largest state, in bytes, this replica accepts by state transfer
    /// as a joiner. A donor that sends more is refused: the replica stops
    /// ([`crate::ReplicaEvent::Stopped`], with a
    /// [`crate::transfer::TransferTooLarge`] reason) and logs it, instead
    /// of taking in more than it can hold.
    pub max_transfer: u64,
    /// Partitionable policy ([`vsync_core::Config::policy`] in
    /// `net.engine`): how many of the last applied commands the replica
    /// keeps in memory, so that if its side of a partition loses the merge
    /// it can show the state machine what it discards
    /// ([`crate::StateMachine::on_discard`]). Older ones are counted, not
    /// listed ([`crate::Divergence::unlisted`]). 0 keeps none. Unused under
    /// the primary-component policy (nothing is ever discarded).
    pub discard_journal: usize,
    /// The same journal's limit in bytes of encoded commands.
    pub discard_journal_bytes: usize,
    /// How many of the last applied commands a replica keeps in memory
    /// ([`crate::tail`]) so that, as a donor, it can send a restarting
    /// replica only the commands it lacks (a catch-up) instead of the whole
    /// state. A replica further behind, or on another history, gets the
    /// whole state. 0 turns catch-ups off.
    pub catch_up_commands: u64,
    /// The same tail's limit in bytes of delivered batches.
    pub catch_up_bytes: usize,
}

impl ReplicaConfig {
    /// Defaults: no data directory, [`Durability::Memory`], a checkpoint
    /// every 100,000 commands or 60 s, [`Start::Auto`] with a 3 s restart
    /// wait, automatic rejoin,
    /// 15 s transfer timeout, state transfers up to 16 GiB, a discard
    /// journal of 10,000 commands or 16 MiB, a catch-up tail of 1,000,000
    /// commands or 64 MiB.
    pub fn new(net: vsync_net::Config) -> Self {
        ReplicaConfig {
            net,
            data_dir: None,
            durability: Durability::Memory,
            checkpoint_every: 100_000,
            checkpoint_interval: Duration::from_secs(60),
            start: Start::Auto,
            restart_wait: Duration::from_secs(3),
            auto_rejoin: true,
            transfer_timeout: Duration::from_secs(15),
            event_capacity: 1024,
            max_transfer: 16 << 30,
            discard_journal: 10_000,
            discard_journal_bytes: 16 << 20,
            catch_up_commands: 1_000_000,
            catch_up_bytes: 64 << 20,
        }
    }
}
