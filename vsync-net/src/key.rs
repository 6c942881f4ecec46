//! The cluster key: the 32-byte secret every member of a closed group holds
//! ([`Key`]), its file format, and [`keygen`].
//!
//! Why it exists: links between members are authenticated and encrypted
//! with it ([`crate::secure`]); whoever holds it is a member, whoever does
//! not cannot join, read or inject anything (docs/SECURITY.md).
//!
//! File format: 64 lowercase hexadecimal characters and a newline (surrounding
//! whitespace is ignored when reading, upper case accepted). [`Key::save`]
//! and [`keygen`] create the file with mode 0600 and never overwrite one;
//! [`Key::load`] warns (a log line, not an error) when the file can be read
//! by group or others.
//!
//! Guarantees: the key's bytes are wiped from memory when the last copy is
//! dropped, and never printed (`Debug` shows `Key(..)`); a missing, short,
//! long or non-hex file is a typed [`KeyError`] naming the file.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Bytes in a cluster key.
pub const KEY_LEN: usize = 32;

/// A cluster key (a 256-bit secret shared by the group's members).
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file does not exist.
    #[error("key file {path} does not exist (create one with `vsync-kv keygen {path}`)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file's content is not a key.
    #[error("key file {path} is not a cluster key: {reason} (expected 64 hex characters)")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key text (not from a file) is not a key.
    #[error("not a cluster key: {0} (expected 64 hex characters)")]
    Text(String),
    /// The key file already exists (keys are never overwritten).
    #[error("key file {path} already exists: not overwriting it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The key file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Key {
    /// A new random key, from the operating system's generator (through
    /// `rand`'s thread-local CSPRNG, seeded from it).
    pub fn generate() -> Key {
        use rand::RngCore;
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(&mut k[..]);
        Key(k)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// The key's bytes (for the Noise handshake).
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses 64 hex characters (whitespace around them ignored).
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let t = text.trim();
        if t.len() != 2 * KEY_LEN {
            return Err(KeyError::Text(format!(
                "{} characters instead of {}",
                t.len(),
                2 * KEY_LEN
            )));
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(t, &mut k[..]).map_err(|e| KeyError::Text(e.to_string()))?;
        Ok(Key(k))
    }

    /// The key as 64 lowercase hex characters (what the file holds). Handle
    /// with care: it is the secret.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// Reads a key file. A file readable by group or others is accepted
    /// with a warning in the log.
    pub fn load(path: impl AsRef<Path>) -> Result<Key, KeyError> {
        let path = path.as_ref();
        let text = match std::fs::read(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let format = |reason: String| KeyError::Format {
            path: path.to_owned(),
            reason,
        };
        // A key file is 65 bytes; anything much larger is not one (and is
        // not worth echoing).
        if text.len() > 4 * KEY_LEN {
            return Err(format(format!("{} bytes long", text.len())));
        }
        let s = std::str::from_utf8(&text).map_err(|_| format("not text".into()))?;
        let key = Key::from_hex(s).map_err(|e| match e {
            KeyError::Text(reason) => format(reason),
            other => other,
        })?;
        warn_if_exposed(path);
        Ok(key)
    }

    /// Writes the key to a new file with mode 0600 (owner only); refuses
    /// to overwrite an existing file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        let path = path.as_ref();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_owned(),
                }
            } else {
                KeyError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut line = self.to_hex();
        line.push('\n');
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|source| KeyError::Write {
                path: path.to_owned(),
                source,
            })
    }
}

/// Generates a new cluster key and writes it to `path` (a new file, mode
/// 0600; see [`Key::save`]). Copy the file to every member.
pub fn keygen(path: impl AsRef<Path>) -> Result<Key, KeyError> {
    let key = Key::generate();
    key.save(path)?;
    Ok(key)
}

/// Logs a warning if group or others may read the key file.
fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the cluster key file can be read by other users: chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_that_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.key");
        let k = keygen(&path).expect("keygen");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(Key::load(&path).expect("load"), k);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        assert!(matches!(keygen(&path), Err(KeyError::Exists { .. })));
        assert_eq!(Key::load(&path).expect("load"), k);
        // Two keys differ.
        assert_ne!(Key::generate(), Key::generate());
        assert_eq!(format!("{k:?}"), "Key(..)");
    }

    #[test]
    fn bad_key_files_are_typed_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        assert!(matches!(Key::load(&p), Err(KeyError::Missing { .. })));
        for bad in [
            &b""[..],
            b"abc\n",
            &[b'a'; 63],
            &[b'a'; 66],
            &[b'g'; 64],
            &[0xff; 64],
            &[b'0'; 10_000],
        ] {
            std::fs::write(&p, bad).expect("write");
            assert!(
                matches!(Key::load(&p), Err(KeyError::Format { .. })),
                "{bad:?}"
            );
        }
        std::fs::write(&p, format!("  {}\r\n", "AB".repeat(32))).expect("write");
        assert_eq!(
            Key::load(&p).expect("load"),
            Key::from_bytes([0xab; KEY_LEN])
        );
    }
}
