//! The data directory's identity: which cluster its state belongs to and
//! the last view its replica installed.
//!
//! Why it exists: a restarted replica must never mistake its own durable
//! state for nothing (and found a second, empty group beside the running
//! one), nor load the state of another cluster. The file
//! [`IDENTITY_FILE`] in [`crate::ReplicaConfig::data_dir`] records:
//! - the **cluster id**, made once when the cluster is founded and carried
//!   to every member by state transfer ([`crate::wire::Direct::Begin`]);
//! - the **group name** and this replica's **node id**;
//! - the **last view** this replica installed, with its members'
//!   addresses: whom to ask when it restarts, and, after a whole-cluster
//!   outage, whose claims total-failure recovery must wait for.
//!
//! The file is JSON (readable with `cat`), written whole to a temporary
//! file, synced, and renamed over the old one, so it is the old or the new
//! record, never a mix. A file that cannot be read or parsed is an error
//! that stops the replica at start, with the path in the message: it is
//! never overwritten or ignored.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vsync_core::{Pid, ViewId};

/// The identity file's name in the data directory.
pub const IDENTITY_FILE: &str = "vsync-identity.json";

/// The version of the identity file's format this build writes and reads.
pub const IDENTITY_FORMAT: u32 = 1;

/// A cluster's identity: 128 random bits drawn when it is founded, shown
/// as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ClusterId(pub u128);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

impl From<ClusterId> for String {
    fn from(c: ClusterId) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for ClusterId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        u128::from_str_radix(&s, 16)
            .map(ClusterId)
            .map_err(|e| format!("a cluster id is 32 hex digits, not {s:?}: {e}"))
    }
}

/// A member of the last view, with the address it was known by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMember {
    /// The member (node id and incarnation).
    pub pid: Pid,
    /// Its listen address, if this replica knew it.
    pub addr: Option<SocketAddr>,
}

/// The last view a replica installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastView {
    /// The view's id.
    pub id: ViewId,
    /// Its members, in the view's order.
    pub members: Vec<LastMember>,
}

impl LastView {
    /// The node ids of the members.
    pub fn nodes(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.pid.node.0).collect()
    }
}

/// What the identity file holds (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// [`IDENTITY_FORMAT`] when written.
    pub format: u32,
    /// The cluster the state belongs to.
    pub cluster: ClusterId,
    /// The group's name.
    pub group: String,
    /// This replica's node id.
    pub node: u64,
    /// The last view this replica installed, if any yet.
    pub last_view: Option<LastView>,
}

/// Why the identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading, writing or syncing the file failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a valid identity record (damaged or edited).
    #[error("{} is damaged (not a valid identity record: {source}); restore it from a backup or move the data directory aside", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The file was written by a newer version of vsync.
    #[error("{} has format {found}; this build reads format {IDENTITY_FORMAT} (written by a newer version: upgrade this binary)", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
}

impl Identity {
    /// A new identity for a replica of a newly founded cluster.
    pub fn new(cluster: ClusterId, group: &str, node: u64) -> Self {
        Identity {
            format: IDENTITY_FORMAT,
            cluster,
            group: group.to_string(),
            node,
            last_view: None,
        }
    }

    /// Reads the identity in `dir`. `Ok(None)`: there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        let raw = match std::fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityError::Io {
                    what: "read",
                    path,
                    source,
                });
            }
        };
        // The format first, so that a newer file is named as such rather
        // than as damaged.
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        match serde_json::from_slice::<Format>(&raw) {
            Ok(f) if f.format > IDENTITY_FORMAT => {
                return Err(IdentityError::Format {
                    path,
                    found: f.format,
                });
            }
            _ => {}
        }
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|source| IdentityError::Corrupt { path, source })
    }

    /// Writes the identity into `dir`, durably and atomically (a temporary
    /// file, synced, renamed over the old one; then the directory synced).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { what, path, source }
        };
        let body = serde_json::to_vec_pretty(self).map_err(|source| IdentityError::Corrupt {
            path: dir.join(IDENTITY_FILE),
            source,
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("write into", dir))?;
        tmp.write_all(&body)
            .and_then(|()| tmp.write_all(b"\n"))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io("write", tmp.path()))?;
        let path = dir.join(IDENTITY_FILE);
        tmp.persist(&path).map_err(|e| IdentityError::Io {
            what: "replace",
            path: path.clone(),
            source: e.error,
        })?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Identity {
        let mut id = Identity::new(ClusterId(0xabc), "kv", 2);
        let (n1, n2) = (Pid::new(1, 5), Pid::new(2, 7));
        id.last_view = Some(LastView {
            id: ViewId {
                epoch: 4,
                installer: n1,
            },
            members: vec![
                LastMember {
                    pid: n1,
                    addr: Some("127.0.0.1:7001".parse().unwrap()),
                },
                LastMember {
                    pid: n2,
                    addr: None,
                },
            ],
        });
        id
    }

    #[test]
    fn an_identity_round_trips_and_absence_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Identity::load(dir.path()).unwrap().is_none());
        let id = sample();
        id.save(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), Some(id.clone()));
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert!(text.contains("00000000000000000000000000000abc"), "{text}");
        assert_eq!(id.last_view.unwrap().nodes(), vec![1, 2]);
    }

    #[test]
    fn a_damaged_or_newer_file_is_an_error_naming_it_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"{\"format\": 1, \"clus").unwrap();
        let e = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(e, IdentityError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(IDENTITY_FILE), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"format\": 1, \"clus");
        std::fs::write(&path, b"{\"format\": 99}").unwrap();
        let e = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(e, IdentityError::Format { found: 99, .. }), "{e}");
    }
}
