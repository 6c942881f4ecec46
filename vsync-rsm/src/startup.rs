//! How a replica enters its group, decided from its configuration and what
//! its data directory holds: a pure function ([`plan`]) of those values, so
//! that the rule is tested on its own and the simulator can use it.
//!
//! The rule (also in docs/PROTOCOL.md, "Restarting and recovering"):
//! - **A data directory with state is never discarded implicitly.** With
//!   [`Start::Auto`] (the default) or [`Start::Join`], a replica whose
//!   directory holds state *restarts*: it asks the members of its last view
//!   (addresses from [`crate::identity`]) and any seeds to admit it. If no
//!   group admits it within [`crate::ReplicaConfig::restart_wait`], the
//!   whole cluster is down: the lowest node id of its last view founds a
//!   recovering group, which the others join; recovery then waits until
//!   every node named in any member's last view is present, and the most
//!   recent state wins.
//! - **Founding a new cluster needs an empty data directory**
//!   ([`Start::Found`]), or [`Start::FoundAnew`], which moves the old
//!   directory aside (renamed, never deleted).
//! - **A data directory of another cluster is refused**: a different group
//!   name or node id here, a different cluster id when the donor's state
//!   arrives.

use crate::config::Start;
use crate::identity::Identity;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What the data directory holds, as far as the start decision needs.
#[derive(Clone, Debug, Default)]
pub struct OnDisk {
    /// The identity file, if there is one.
    pub identity: Option<Identity>,
    /// Whether the directory holds anything at all (a checkpoint, a log,
    /// an identity, or files this build does not know): only an empty one
    /// may found a new cluster.
    pub has_data: bool,
}

impl OnDisk {
    /// Reads what `dir` holds (a missing directory holds nothing).
    pub fn read(dir: &Path) -> Result<Self, StartError> {
        let has_data = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(StartError::Unreadable {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        };
        let identity = crate::identity::Identity::load(dir).map_err(StartError::Identity)?;
        Ok(OnDisk { identity, has_data })
    }
}

/// What the replica does to enter its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPlan {
    /// Found a new cluster (a new cluster id, position 0).
    /// `move_aside`: the data directory holds data, to be renamed first.
    Found {
        /// Move the existing data aside before founding.
        move_aside: bool,
    },
    /// Join a running group through the seeds as a new member, with no
    /// state of its own (the cluster id comes with the donor's state).
    Join,
    /// Restart with the state on disk: join through `seeds` (the last
    /// view's members and the configured seeds); if no group admits it in
    /// time and `founder` is set, found a recovering group.
    Restart {
        /// Whom to ask.
        seeds: Vec<SocketAddr>,
        /// Whether this replica founds the recovering group if the whole
        /// cluster is down (the lowest node id of its last view).
        founder: bool,
        /// The node ids of the last view (what recovery waits for).
        last_view: Vec<u64>,
    },
    /// Total-failure recovery as the operator said ([`Start::Recover`]):
    /// wait for `expect` members.
    Recover {
        /// Found the recovering group.
        found: bool,
        /// Members to wait for.
        expect: usize,
    },
}

/// Why a replica refuses to start with its data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory belongs to a group of another name.
    #[error("the data directory {} belongs to the cluster {cluster} of group {on_disk:?}, not to group {configured:?}; nothing was changed (use another data directory, or fix the group name)", dir.display())]
    GroupMismatch {
        /// The directory.
        dir: PathBuf,
        /// Its cluster id.
        cluster: crate::identity::ClusterId,
        /// The group name on disk.
        on_disk: String,
        /// The configured group name.
        configured: String,
    },
    /// The data directory belongs to another node.
    #[error("the data directory {} holds the state of node {on_disk} of cluster {cluster}, but this is node {configured}; nothing was changed (give each node its own data directory)", dir.display())]
    NodeMismatch {
        /// The directory.
        dir: PathBuf,
        /// Its cluster id.
        cluster: crate::identity::ClusterId,
        /// The node id on disk.
        on_disk: u64,
        /// The configured node id.
        configured: u64,
    },
    /// Asked to found a new cluster in a directory that holds data.
    #[error("cannot found a new cluster in {}: it holds data{}; to restart this replica, start it without asking to found; to found a new cluster anyway, move the old data aside (vsync-kv: --found-new-cluster renames it, never deletes it)", dir.display(), cluster.map(|c| format!(" of cluster {c}")).unwrap_or_default())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// The cluster it belongs to, if it says.
        cluster: Option<crate::identity::ClusterId>,
    },
    /// State without a recorded membership (written by an older version)
    /// and nobody to ask.
    #[error("the data directory {} holds state but no record of its cluster's members (written by an older version); give a seed to rejoin the running cluster, or recover explicitly after a whole-cluster outage (vsync-kv: --recover N)", dir.display())]
    NoMembership {
        /// The directory.
        dir: PathBuf,
    },
    /// Asked to join without seeds and without a last view to ask.
    #[error("nothing to join through: no seeds, and the data directory {} records no view", dir.display())]
    NoSeeds {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory cannot be listed.
    #[error("cannot read the data directory {}: {source}", dir.display())]
    Unreadable {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The identity file cannot be read.
    #[error(transparent)]
    Identity(crate::identity::IdentityError),
    /// Moving the old data aside failed.
    #[error("cannot move {} aside to {}: {source}", dir.display(), to.display())]
    MoveAside {
        /// The directory.
        dir: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Decides how the replica of `node` in `group` enters its group (see the
/// module documentation). `dir` is only named in errors.
pub fn plan(
    start: Start,
    node: u64,
    group: &str,
    seeds: &[SocketAddr],
    disk: &OnDisk,
    dir: &Path,
) -> Result<StartPlan, StartError> {
    if let Some(id) = &disk.identity {
        if id.group != group {
            return Err(StartError::GroupMismatch {
                dir: dir.to_path_buf(),
                cluster: id.cluster,
                on_disk: id.group.clone(),
                configured: group.to_string(),
            });
        }
        if id.node != node {
            return Err(StartError::NodeMismatch {
                dir: dir.to_path_buf(),
                cluster: id.cluster,
                on_disk: id.node,
                configured: node,
            });
        }
    }
    match start {
        Start::Recover { found, expect } => Ok(StartPlan::Recover { found, expect }),
        Start::FoundAnew => Ok(StartPlan::Found {
            move_aside: disk.has_data,
        }),
        Start::Found if disk.has_data => Err(StartError::NotEmpty {
            dir: dir.to_path_buf(),
            cluster: disk.identity.as_ref().map(|i| i.cluster),
        }),
        Start::Found => Ok(StartPlan::Found { move_aside: false }),
        Start::Auto | Start::Join => {
            if !disk.has_data {
                return if !seeds.is_empty() {
                    Ok(StartPlan::Join)
                } else if start == Start::Auto {
                    Ok(StartPlan::Found { move_aside: false })
                } else {
                    Err(StartError::NoSeeds {
                        dir: dir.to_path_buf(),
                    })
                };
            }
            restart(node, seeds, disk, dir, start == Start::Auto)
        }
    }
}

/// The plan of a replica whose directory holds data.
fn restart(
    node: u64,
    seeds: &[SocketAddr],
    disk: &OnDisk,
    dir: &Path,
    may_found: bool,
) -> Result<StartPlan, StartError> {
    let last = disk.identity.as_ref().and_then(|i| i.last_view.as_ref());
    let Some(last) = last else {
        // Data but no recorded view: written by an older version, or a
        // replica that crashed before its first view. Only seeds can say
        // where its cluster is.
        if seeds.is_empty() {
            return Err(StartError::NoMembership {
                dir: dir.to_path_buf(),
            });
        }
        return Ok(StartPlan::Restart {
            seeds: seeds.to_vec(),
            founder: false,
            last_view: Vec::new(),
        });
    };
    let mut all: Vec<SocketAddr> = last
        .members
        .iter()
        .filter(|m| m.pid.node.0 != node)
        .filter_map(|m| m.addr)
        .collect();
    for s in seeds {
        if !all.contains(s) {
            all.push(*s);
        }
    }
    let nodes = last.nodes();
    let founder = may_found && nodes.iter().min() == Some(&node);
    Ok(StartPlan::Restart {
        seeds: all,
        founder,
        last_view: nodes,
    })
}

/// Moves `dir` aside to `DIR.old-<unix ms>` (never deletes it) and creates
/// it again empty. Returns where the old data went.
pub fn move_aside(dir: &Path, unix_ms: u128) -> Result<PathBuf, StartError> {
    let name = dir
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let to = dir.with_file_name(format!("{name}.old-{unix_ms}"));
    let err = |source| StartError::MoveAside {
        dir: dir.to_path_buf(),
        to: to.clone(),
        source,
    };
    std::fs::rename(dir, &to).map_err(err)?;
    std::fs::create_dir_all(dir).map_err(err)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ClusterId, LastMember, LastView};
    use vsync_core::{Pid, ViewId};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn disk(node: u64, members: &[u64]) -> OnDisk {
        let mut id = Identity::new(ClusterId(7), "kv", node);
        id.last_view = Some(LastView {
            id: ViewId {
                epoch: 3,
                installer: Pid::new(members[0], 1),
            },
            members: members
                .iter()
                .map(|&n| LastMember {
                    pid: Pid::new(n, 1),
                    addr: Some(addr(7000 + n as u16)),
                })
                .collect(),
        });
        OnDisk {
            identity: Some(id),
            has_data: true,
        }
    }

    fn p(
        start: Start,
        node: u64,
        seeds: &[SocketAddr],
        d: &OnDisk,
    ) -> Result<StartPlan, StartError> {
        plan(start, node, "kv", seeds, d, Path::new("/data"))
    }

    #[test]
    fn an_empty_directory_founds_without_seeds_and_joins_with_them() {
        let empty = OnDisk::default();
        assert_eq!(
            p(Start::Auto, 1, &[], &empty).unwrap(),
            StartPlan::Found { move_aside: false }
        );
        assert_eq!(
            p(Start::Auto, 1, &[addr(1)], &empty).unwrap(),
            StartPlan::Join
        );
        assert!(matches!(
            p(Start::Join, 1, &[], &empty),
            Err(StartError::NoSeeds { .. })
        ));
    }

    /// The case: the founder restarted with the command line that
    /// founded the cluster (no seeds) must rejoin, not found again.
    #[test]
    fn a_directory_with_state_restarts_through_its_last_view_with_or_without_seeds() {
        let d = disk(1, &[1, 2, 3]);
        let want = StartPlan::Restart {
            seeds: vec![addr(7002), addr(7003)],
            founder: true,
            last_view: vec![1, 2, 3],
        };
        assert_eq!(p(Start::Auto, 1, &[], &d).unwrap(), want);
        let d2 = disk(2, &[1, 2, 3]);
        assert_eq!(
            p(Start::Auto, 2, &[addr(9)], &d2).unwrap(),
            StartPlan::Restart {
                seeds: vec![addr(7001), addr(7003), addr(9)],
                founder: false,
                last_view: vec![1, 2, 3],
            }
        );
        assert!(matches!(
            p(Start::Join, 2, &[], &d2),
            Ok(StartPlan::Restart { .. })
        ));
    }

    #[test]
    fn founding_needs_an_empty_directory_or_the_move_aside_flag() {
        let d = disk(1, &[1, 2, 3]);
        let e = p(Start::Found, 1, &[], &d).unwrap_err();
        assert!(matches!(e, StartError::NotEmpty { .. }), "{e}");
        assert!(e.to_string().contains(&ClusterId(7).to_string()), "{e}");
        assert_eq!(
            p(Start::FoundAnew, 1, &[], &d).unwrap(),
            StartPlan::Found { move_aside: true }
        );
        // Files of unknown origin count as data too.
        let unknown = OnDisk {
            identity: None,
            has_data: true,
        };
        assert!(p(Start::Found, 1, &[], &unknown).is_err());
        assert!(matches!(
            p(Start::Auto, 1, &[], &unknown),
            Err(StartError::NoMembership { .. })
        ));
    }

    #[test]
    fn another_clusters_directory_is_refused_naming_both() {
        let d = disk(1, &[1, 2]);
        let e = plan(Start::Auto, 1, "other", &[], &d, Path::new("/data")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"kv\"") && msg.contains("\"other\""), "{msg}");
        let e = p(Start::Auto, 5, &[], &d).unwrap_err();
        assert!(
            matches!(
                e,
                StartError::NodeMismatch {
                    on_disk: 1,
                    configured: 5,
                    ..
                }
            ),
            "{e}"
        );
        // Even the explicit override does not take another node's state.
        assert!(
            p(
                Start::Recover {
                    found: true,
                    expect: 2
                },
                5,
                &[],
                &d
            )
            .is_err()
        );
    }

    #[test]
    fn moving_aside_renames_and_keeps_everything() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let to = move_aside(&dir, 42).unwrap();
        assert_eq!(to, root.path().join("data.old-42"));
        assert_eq!(std::fs::read(to.join("f")).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}
