//! Authenticated, encrypted links: the Noise protocol
//! (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, through the `snow` crate) with
//! the cluster [`Key`] as the pre-shared key.
//!
//! Why it exists: in a closed group ([`Security::Key`]) a process without
//! the key must not be able to join, read, inject or replay anything. What
//! it guarantees, per connection:
//!
//! - **Mutual authentication**: the dialer's first handshake message and
//!   the acceptor's answer are each sealed with keys derived from the
//!   cluster key; a side that does not hold it fails the handshake, and
//!   both sides refuse the connection with a log line.
//! - **Fresh session keys**: both sides contribute an ephemeral X25519 key,
//!   so a recorded connection replayed into a new one fails at its first
//!   sealed byte (the replayer cannot compute the new session's keys).
//! - **Integrity and order**: the byte stream after the handshake is cut
//!   into chunks of at most [`MAX_CHUNK`] bytes, each sealed with
//!   ChaCha20-Poly1305 under an implicit counter nonce: a chunk altered,
//!   dropped, repeated or reordered fails to open, and the connection is
//!   closed ([`LinkError::Tampered`]).
//!
//! Wire format of a secured connection: the dialer sends [`PREAMBLE`]
//! (8 bytes, in the clear, so that a process without a key can say what it
//! received), then each Noise message (two handshake messages, then the
//! sealed chunks) as a big-endian `u16` length and that many bytes. The
//! frames of [`crate::frame`] travel inside the sealed chunks unchanged,
//! starting with the Hello in each direction (group name and pid).
//!
//! The writer seals a whole coalesced write buffer at once (one AEAD
//! operation per 64 KiB chunk, not per message); the reader opens every
//! complete chunk it has and decodes frames from the plaintext, so payloads
//! are still slices of one buffer.

use crate::key::Key;
use bytes::{Buf, BufMut, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake: a peer of another protocol version fails it.
const PROLOGUE: &[u8] = b"vsync-net secure link v1";
/// What a dialer sends first, in the clear.
pub const PREAMBLE: [u8; 8] = *b"vsyncNz1";
/// The largest Noise message.
pub const MAX_NOISE_MSG: usize = 65535;
/// The authentication tag each sealed chunk carries.
pub const TAG_LEN: usize = 16;
/// The most plaintext in one sealed chunk.
pub const MAX_CHUNK: usize = MAX_NOISE_MSG - TAG_LEN;

/// How a process's links are protected ([`crate::Config::security`]).
#[derive(Clone, Debug, Default)]
pub enum Security {
    /// Not chosen: the links run unauthenticated and unencrypted, and the
    /// process logs a warning at start saying so (the library default, so
    /// that embedders and tests keep working; the command-line tools
    /// refuse to start without `--key` or `--insecure`).
    #[default]
    Unset,
    /// Chosen explicitly: plain TCP, no authentication, no encryption
    /// (logged as a warning at start). Only for trusted networks and tests.
    Insecure,
    /// A closed group: every link is authenticated and encrypted with this
    /// cluster key; processes without it are refused.
    Key(Key),
}

impl Security {
    /// The key, in a closed group.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Security::Key(k) => Some(k),
            _ => None,
        }
    }
}

/// Why a secured connection failed. Each closes its connection.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer did not start with [`PREAMBLE`]: not a vsync peer, or one
    /// running without a cluster key.
    #[error("not a vsync peer, or a peer running without a cluster key (--insecure)")]
    NotSecured,
    /// The handshake failed: the peer holds another cluster key (or none),
    /// or is not a vsync peer, or replays a recorded handshake.
    #[error("wrong cluster key or not a vsync peer")]
    Handshake,
    /// The peer closed the connection during the handshake (it refused
    /// ours: most likely another cluster key).
    #[error(
        "the peer closed the connection during the handshake: wrong cluster key or not a vsync peer"
    )]
    ClosedInHandshake,
    /// A sealed chunk did not open: altered, replayed, reordered or
    /// forged bytes.
    #[error("a sealed chunk failed authentication (tampered, replayed or forged data)")]
    Tampered,
    /// A zero-length Noise message.
    #[error("empty sealed chunk")]
    Empty,
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// Noise refused an operation (a bug, or a nonce space exhausted).
    #[error("noise error: {0}")]
    Noise(String),
}

fn noise(e: snow::Error) -> LinkError {
    LinkError::Noise(e.to_string())
}

fn builder(key: &Key) -> Result<snow::Builder<'_>, LinkError> {
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse().map_err(noise)?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .map_err(noise)?
        .psk(0, key.bytes())
        .map_err(noise)
}

/// Reads one length-prefixed Noise message into `buf` (handshake only).
async fn read_msg<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut [u8]) -> Result<usize, LinkError> {
    let mut len = [0u8; 2];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(LinkError::ClosedInHandshake);
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Err(LinkError::ClosedInHandshake);
        }
        Err(e) => return Err(e.into()),
    }
    let n = usize::from(u16::from_be_bytes(len));
    let slot = buf.get_mut(..n).ok_or(LinkError::Handshake)?;
    match rd.read_exact(slot).await {
        Ok(_) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(LinkError::Handshake),
        Err(e) => Err(e.into()),
    }
}

/// The handshake messages here carry no payload: 32 bytes of ephemeral key
/// and a 16-byte tag.
const HS_MAX: usize = 256;

/// Runs the dialer's side of the handshake on a fresh connection.
pub async fn initiate<R, W>(rd: &mut R, wr: &mut W, key: &Key) -> Result<Link, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hs = builder(key)?.build_initiator().map_err(noise)?;
    let mut msg = [0u8; HS_MAX];
    let mut out = Vec::with_capacity(PREAMBLE.len() + 2 + HS_MAX);
    out.extend_from_slice(&PREAMBLE);
    let n = hs.write_message(&[], &mut msg).map_err(noise)?;
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&msg[..n]);
    wr.write_all(&out).await?;
    let n = read_msg(rd, &mut msg).await?;
    let mut payload = [0u8; HS_MAX];
    hs.read_message(&msg[..n], &mut payload)
        .map_err(|_| LinkError::Handshake)?;
    Link::from_handshake(hs)
}

/// Runs the acceptor's side of the handshake on a fresh connection.
pub async fn respond<R, W>(rd: &mut R, wr: &mut W, key: &Key) -> Result<Link, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut pre = [0u8; PREAMBLE.len()];
    match rd.read_exact(&mut pre).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(LinkError::NotSecured);
        }
        Err(e) => return Err(e.into()),
    }
    if pre != PREAMBLE {
        return Err(LinkError::NotSecured);
    }
    let mut hs = builder(key)?.build_responder().map_err(noise)?;
    let mut msg = [0u8; HS_MAX];
    let n = read_msg(rd, &mut msg).await.map_err(|e| match e {
        LinkError::ClosedInHandshake => LinkError::Handshake,
        e => e,
    })?;
    let mut payload = [0u8; HS_MAX];
    hs.read_message(&msg[..n], &mut payload)
        .map_err(|_| LinkError::Handshake)?;
    let n = hs.write_message(&[], &mut msg).map_err(noise)?;
    let mut out = Vec::with_capacity(2 + n);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&msg[..n]);
    wr.write_all(&out).await?;
    Link::from_handshake(hs)
}

/// An established session: split into its sending and receiving halves.
#[derive(Debug)]
pub struct Link {
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the peer sends.
    pub opener: Opener,
}

impl Link {
    fn from_handshake(hs: snow::HandshakeState) -> Result<Link, LinkError> {
        let state = Arc::new(hs.into_stateless_transport_mode().map_err(noise)?);
        Ok(Link {
            sealer: Sealer {
                state: state.clone(),
                nonce: 0,
            },
            opener: Opener { state, nonce: 0 },
        })
    }
}

/// The sending half of a session: seals plaintext into Noise messages
/// under consecutive nonces.
pub struct Sealer {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl Sealer {
    /// Seals everything remaining in `plain` (consuming it) and appends
    /// the sealed chunks, each with its length prefix, to `out`. Chunks
    /// are as large as they can be: one AEAD operation per [`MAX_CHUNK`]
    /// bytes whatever the number of frames in `plain`.
    pub fn seal_buf<B: Buf>(&mut self, plain: &mut B, out: &mut BytesMut) -> Result<(), LinkError> {
        let total = plain.remaining();
        let chunks = total.div_ceil(MAX_CHUNK);
        out.reserve(total + chunks * (2 + TAG_LEN));
        let mut scratch = Vec::new();
        while plain.has_remaining() {
            let n = plain.remaining().min(MAX_CHUNK);
            // A chunk that lies in one piece of `plain` is sealed from where
            // it is; otherwise it is gathered first.
            let contiguous = plain.chunk().len() >= n;
            if !contiguous {
                scratch.clear();
                scratch.reserve(n);
                let mut left = n;
                while left > 0 {
                    let c = plain.chunk();
                    let k = c.len().min(left);
                    scratch.extend_from_slice(&c[..k]);
                    plain.advance(k);
                    left -= k;
                }
            }
            let start = out.len();
            out.put_u16((n + TAG_LEN) as u16);
            out.resize(start + 2 + n + TAG_LEN, 0);
            let src: &[u8] = if contiguous {
                &plain.chunk()[..n]
            } else {
                &scratch
            };
            let written = self
                .state
                .write_message(self.nonce, src, &mut out[start + 2..])
                .map_err(noise)?;
            debug_assert_eq!(written, n + TAG_LEN);
            self.nonce += 1;
            if contiguous {
                plain.advance(n);
            }
        }
        Ok(())
    }

    /// Seals `plain` (see [`Sealer::seal_buf`]).
    pub fn seal(&mut self, plain: &[u8], out: &mut BytesMut) -> Result<(), LinkError> {
        let mut p = plain;
        self.seal_buf(&mut p, out)
    }
}

/// The receiving half of a session: opens Noise messages in order.
pub struct Opener {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl Opener {
    /// Opens every complete sealed chunk at the front of `raw` (consuming
    /// it) and appends the plaintext to `plain`. A partial chunk stays in
    /// `raw`. Fails on the first chunk that does not open.
    pub fn open(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> Result<(), LinkError> {
        while raw.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
            if n == 0 {
                return Err(LinkError::Empty);
            }
            if n < TAG_LEN {
                return Err(LinkError::Tampered);
            }
            if raw.len() < 2 + n {
                raw.reserve(2 + n - raw.len());
                return Ok(());
            }
            let start = plain.len();
            plain.resize(start + n - TAG_LEN, 0);
            let r = self
                .state
                .read_message(self.nonce, &raw[2..2 + n], &mut plain[start..]);
            match r {
                Ok(k) => {
                    plain.truncate(start + k);
                    self.nonce += 1;
                    raw.advance(2 + n);
                }
                Err(_) => {
                    plain.truncate(start);
                    return Err(LinkError::Tampered);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    async fn pair(a: &Key, b: &Key) -> (Result<Link, LinkError>, Result<Link, LinkError>) {
        let (c, s) = duplex(1 << 16);
        let (mut cr, mut cw) = tokio::io::split(c);
        let (mut sr, mut sw) = tokio::io::split(s);
        let (a, b) = (a.clone(), b.clone());
        let server = tokio::spawn(async move {
            let r = respond(&mut sr, &mut sw, &b).await;
            drop(sw);
            r
        });
        let client = initiate(&mut cr, &mut cw, &a).await;
        drop(cw);
        (client, server.await.expect("join"))
    }

    #[tokio::test]
    async fn same_key_links_and_seals_in_both_directions() {
        let k = Key::generate();
        let (c, s) = pair(&k, &k).await;
        let (mut c, mut s) = (c.expect("client"), s.expect("server"));
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut raw = BytesMut::new();
        c.sealer.seal(&big, &mut raw).expect("seal");
        c.sealer.seal(b"tail", &mut raw).expect("seal");
        assert_eq!(raw.len(), big.len() + 4 + 5 * (2 + TAG_LEN));
        // Fed in pieces of any size.
        let mut plain = BytesMut::new();
        let mut feed = BytesMut::new();
        for piece in raw.chunks(7777) {
            feed.extend_from_slice(piece);
            s.opener.open(&mut feed, &mut plain).expect("open");
        }
        assert!(feed.is_empty());
        assert_eq!(&plain[..big.len()], &big[..]);
        assert_eq!(&plain[big.len()..], b"tail");
        let mut back = BytesMut::new();
        s.sealer.seal(b"hello", &mut back).expect("seal");
        let mut p2 = BytesMut::new();
        c.opener.open(&mut back, &mut p2).expect("open");
        assert_eq!(&p2[..], b"hello");
    }

    #[tokio::test]
    async fn another_key_fails_the_handshake_on_both_sides() {
        let (c, s) = pair(&Key::generate(), &Key::generate()).await;
        assert!(matches!(s, Err(LinkError::Handshake)), "{s:?}");
        assert!(
            matches!(c, Err(LinkError::ClosedInHandshake | LinkError::Io(_))),
            "{c:?}"
        );
    }

    #[tokio::test]
    async fn altered_replayed_or_reordered_chunks_do_not_open() {
        let k = Key::generate();
        let (c, s) = pair(&k, &k).await;
        let (mut c, s) = (c.expect("client"), s.expect("server"));
        let mut one = BytesMut::new();
        c.sealer.seal(b"first", &mut one).expect("seal");
        let mut two = BytesMut::new();
        c.sealer.seal(b"second", &mut two).expect("seal");
        let fresh = |s: &Link| Opener {
            state: s.opener.state.clone(),
            nonce: 0,
        };
        // Altered.
        let mut bad = one.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut plain = BytesMut::new();
        assert!(matches!(
            fresh(&s).open(&mut bad, &mut plain),
            Err(LinkError::Tampered)
        ));
        assert!(plain.is_empty());
        // Reordered.
        assert!(matches!(
            fresh(&s).open(&mut two.clone(), &mut plain),
            Err(LinkError::Tampered)
        ));
        // Replayed.
        let mut o = fresh(&s);
        o.open(&mut one.clone(), &mut plain).expect("first");
        assert!(matches!(
            o.open(&mut one.clone(), &mut plain),
            Err(LinkError::Tampered)
        ));
        // A length below the tag.
        let mut short = BytesMut::from(&[0u8, 3, 1, 2, 3][..]);
        assert!(matches!(
            fresh(&s).open(&mut short, &mut plain),
            Err(LinkError::Tampered)
        ));
    }
}
