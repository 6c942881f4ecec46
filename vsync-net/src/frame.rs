//! The wire format.
//!
//! Every frame is a big-endian `u32` length, then that many bytes: one
//! version byte ([`VERSION`]) and a [postcard](https://docs.rs/postcard)
//! encoding of a [`Frame`]. The length counts the version byte.
//!
//! A connection starts with a [`Frame::Hello`] in each direction. After it,
//! the dialing side sends [`Frame::Msg`] and [`Frame::AddressBook`] frames;
//! the accepting side sends nothing more unless it refuses the connection
//! ([`Frame::Error`]).
//!
//! [`Frame::Direct`] carries an application payload for one process (a
//! point-to-point message, e.g. a chunk of a state transfer); it is written
//! without an intermediate copy ([`put_direct_frame`]).
//!
//! A message sent to many peers is encoded once: postcard writes a struct
//! variant as its tag followed by its fields, so a `Msg` frame is the tag,
//! the destination pid, and the message's own encoding, which is shared
//! ([`encode_msg_body`], [`put_msg_frame`]; a writer may send the shared
//! body from where it is after [`put_msg_head`]).
//!
//! Decoding does not copy payloads: the payloads of a data message and of a
//! direct frame are slices of the read buffer ([`decode_frame`]), decoded by
//! hand for those two layouts and by postcard for everything else, with
//! the same result (a test compares them on valid, truncated and corrupted
//! frames).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};
use vsync_core::{Message, Pid};

/// The wire format version this crate speaks. 2: `MergeAway` carries the
/// winner's recent view ids (2026-11-25); a node of version 1 is refused
/// with [`FrameError`]'s "unsupported wire version" rather than misread.
pub const VERSION: u8 = 3;

/// The default largest frame accepted or sent (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// The postcard tag of [`Frame::Msg`] (its variant index).
const MSG_TAG: u8 = 1;
/// The postcard tag of [`Frame::Direct`] (its variant index).
const DIRECT_TAG: u8 = 4;
/// Bytes a [`Frame::Direct`] adds to its payload, at most (length prefix,
/// version, tag, destination pid, payload length).
pub const DIRECT_OVERHEAD: usize = 4 + 1 + 1 + 20 + 10;

/// One frame on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame in each direction: who is at this end.
    Hello {
        /// The group the sender belongs to; a connection between different
        /// groups is refused.
        group: String,
        /// The sending process.
        pid: Pid,
        /// The address the sender listens on (where to dial it).
        listen: SocketAddr,
        /// The sender's partition policy; a connection between processes
        /// of different policies is refused (one partitionable member among
        /// primary-component members could lead them into a minority view
        /// that forks).
        policy: vsync_core::engine::PartitionPolicy,
    },
    /// A protocol message for process `to`. A receiver whose process is not
    /// `to` (an older or newer incarnation) drops it.
    Msg {
        /// The destination process.
        to: Pid,
        /// The message.
        msg: Message,
    },
    /// Addresses the sender knows, so that every member learns where every
    /// other one listens (a joiner may have talked only to a seed).
    AddressBook {
        /// Process and listen address pairs.
        entries: Vec<(Pid, SocketAddr)>,
    },
    /// The sender refuses the connection and closes it.
    Error {
        /// Why, for the log.
        reason: String,
    },
    /// An application payload for process `to` (a point-to-point message).
    /// A receiver whose process is not `to` drops it.
    Direct {
        /// The destination process.
        to: Pid,
        /// The payload.
        payload: Bytes,
    },
}

/// What can be wrong with a frame. Each closes the connection it came on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced or encoded length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A zero length prefix (there must be at least the version byte).
    #[error("empty frame")]
    Empty,
    /// A version this crate does not speak.
    #[error("unsupported wire version {0} (we speak {VERSION})")]
    Version(u8),
    /// The body is not a valid frame.
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    /// A frame could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(postcard::Error),
    /// The connection failed or closed in the middle of a frame.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The secured link under the frames failed (tampered data).
    #[error("{0}")]
    Link(#[from] crate::secure::LinkError),
}

/// Encodes a whole frame, length prefix included.
pub fn encode_frame(frame: &Frame, max: usize) -> Result<Bytes, FrameError> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&[0, 0, 0, 0, VERSION]);
    let mut v = postcard::to_extend(frame, v).map_err(FrameError::Encode)?;
    let len = v.len() - 4;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    v[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(Bytes::from(v))
}

/// Encodes a message once, for [`put_msg_frame`] to any number of peers.
pub fn encode_msg_body(msg: &Message) -> Result<Bytes, FrameError> {
    // Sized up front: a batch of payloads is encoded without regrowing.
    let hint = match msg {
        Message::Data { payloads, .. } => 64 + payloads.iter().map(|p| p.len() + 5).sum::<usize>(),
        _ => 256,
    };
    postcard::to_extend(msg, Vec::with_capacity(hint))
        .map(Bytes::from)
        .map_err(FrameError::Encode)
}

/// Appends a `Msg { to, msg }` frame to `buf`, where `body` is
/// [`encode_msg_body`] of `msg`. The result is byte for byte what
/// [`encode_frame`] gives for the same frame.
pub fn put_msg_frame(
    buf: &mut BytesMut,
    to: Pid,
    body: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    buf.reserve(32 + body.len());
    put_msg_head(buf, to, body.len(), max)?;
    buf.put_slice(body);
    Ok(())
}

/// Appends the head of a `Msg { to, msg }` frame whose body (of `body_len`
/// bytes) is written after it: the length prefix, version, tag and
/// destination. With the body it is what [`put_msg_frame`] writes; a
/// writer that sends the body from where it is (one body shared by many
/// peers) copies only this head.
pub fn put_msg_head(
    buf: &mut BytesMut,
    to: Pid,
    body_len: usize,
    max: usize,
) -> Result<(), FrameError> {
    let mut head = [0u8; 24];
    let to_len = postcard::to_slice(&to, &mut head)
        .map_err(FrameError::Encode)?
        .len();
    let len = 1 + 1 + to_len + body_len;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.reserve(4 + len - body_len);
    buf.put_u32(len as u32);
    buf.put_u8(VERSION);
    buf.put_u8(MSG_TAG);
    buf.put_slice(&head[..to_len]);
    Ok(())
}

/// Appends a `Direct { to, payload }` frame to `buf`: byte for byte what
/// [`encode_frame`] gives for the same frame, with one copy of the payload.
pub fn put_direct_frame(
    buf: &mut BytesMut,
    to: Pid,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    buf.reserve(DIRECT_OVERHEAD + payload.len());
    put_direct_head(buf, to, payload.len(), max)?;
    buf.put_slice(payload);
    Ok(())
}

/// Appends everything of a `Direct { to, payload }` frame but the payload's
/// `payload_len` bytes, which the caller writes next (e.g. from a shared
/// buffer, without copying it).
pub fn put_direct_head(
    buf: &mut BytesMut,
    to: Pid,
    payload_len: usize,
    max: usize,
) -> Result<(), FrameError> {
    let mut head = [0u8; 24];
    let to_len = postcard::to_slice(&to, &mut head)
        .map_err(FrameError::Encode)?
        .len();
    let mut plen = [0u8; 10];
    let plen_len = postcard::to_slice(&(payload_len as u64), &mut plen)
        .map_err(FrameError::Encode)?
        .len();
    let len = 1 + 1 + to_len + plen_len + payload_len;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.reserve(4 + len - payload_len);
    buf.put_u32(len as u32);
    buf.put_u8(VERSION);
    buf.put_u8(DIRECT_TAG);
    buf.put_slice(&head[..to_len]);
    buf.put_slice(&plen[..plen_len]);
    Ok(())
}

/// Takes one whole frame off the front of `buf`, if it holds one.
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len).freeze();
    if body[0] != VERSION {
        return Err(FrameError::Version(body[0]));
    }
    if let Some(frame) = decode_data_frame(&body).map_err(FrameError::Decode)? {
        return Ok(Some(frame));
    }
    postcard::from_bytes(&body[1..])
        .map(Some)
        .map_err(FrameError::Decode)
}

/// The postcard variant index of [`Message::Data`].
const DATA_TAG: u64 = 0;

/// A reader of postcard's varints over a frame body.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, postcard::Error> {
        let v = *self
            .b
            .get(self.pos)
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.pos += 1;
        Ok(v)
    }

    /// A LEB128 `u64` with postcard's checks (at most 10 bytes, no bits
    /// beyond 64).
    fn varint(&mut self) -> Result<u64, postcard::Error> {
        let mut out = 0u64;
        for i in 0..10 {
            let v = self.byte()?;
            out |= u64::from(v & 0x7f) << (7 * i);
            if v & 0x80 == 0 {
                if i == 9 && v > 1 {
                    return Err(postcard::Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(postcard::Error::DeserializeBadVarint)
    }

    fn pid(&mut self) -> Result<Pid, postcard::Error> {
        let node = self.varint()?;
        let inc = self.varint()?;
        Ok(Pid::new(node, inc))
    }

    /// A length-prefixed byte string, as a range of the body.
    fn bytes(&mut self) -> Result<std::ops::Range<usize>, postcard::Error> {
        let len = self.varint()?;
        let left = (self.b.len() - self.pos) as u64;
        if len > left {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }
}

/// Decodes a `Msg` frame that carries a [`Message::Data`], or a
/// [`Frame::Direct`], without copying its payloads: each payload is a slice
/// of `body` (the frame, after its length prefix). `Ok(None)`: another kind
/// of frame (postcard decodes it). The result is what postcard gives for
/// the same bytes; the steady stream of multicasts, and large direct
/// messages (state transfer), are where a per-payload allocation and copy
/// would cost most.
fn decode_data_frame(body: &Bytes) -> Result<Option<Frame>, postcard::Error> {
    let mut c = Cursor { b: body, pos: 1 };
    let tag = c.varint()?;
    if tag == u64::from(DIRECT_TAG) {
        let to = c.pid()?;
        let r = c.bytes()?;
        return Ok(Some(Frame::Direct {
            to,
            payload: body.slice(r),
        }));
    }
    if tag != u64::from(MSG_TAG) {
        return Ok(None);
    }
    let to = c.pid()?;
    if c.varint()? != DATA_TAG {
        return Ok(None);
    }
    let epoch = c.varint()?;
    let installer = c.pid()?;
    let first_seq = c.varint()?;
    let count = c.varint()?;
    // Each payload takes at least its length byte: a count beyond what is
    // left is a lie, refused before anything is allocated for it.
    if count > (body.len() - c.pos) as u64 {
        return Err(postcard::Error::DeserializeUnexpectedEnd);
    }
    let mut payloads = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let r = c.bytes()?;
        payloads.push(body.slice(r));
    }
    Ok(Some(Frame::Msg {
        to,
        msg: Message::Data {
            view: vsync_core::ViewId { epoch, installer },
            first_seq,
            payloads,
        },
    }))
}

/// Reads the next frame from `rd`, buffering in `buf`. `Ok(None)` at a clean
/// end of stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    loop {
        if let Some(f) = decode_frame(buf, max)? {
            return Ok(Some(f));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsync_core::ViewId;

    fn data() -> Message {
        Message::Data {
            view: ViewId {
                epoch: 7,
                installer: Pid::new(1, 1_700_000_000_123),
            },
            first_seq: 300,
            payloads: vec![Bytes::from_static(b"hello"), Bytes::from(vec![7u8; 1000])],
        }
    }

    #[test]
    fn shared_body_encoding_equals_whole_frame_encoding() {
        let msg = data();
        let to = Pid::new(u64::MAX, u64::MAX);
        let whole = encode_frame(
            &Frame::Msg {
                to,
                msg: msg.clone(),
            },
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        let body = encode_msg_body(&msg).unwrap();
        let mut buf = BytesMut::new();
        put_msg_frame(&mut buf, to, &body, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(&buf[..], &whole[..]);
        let back = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(back, Frame::Msg { to, msg });
        assert!(buf.is_empty());
    }

    #[test]
    fn direct_frame_encoding_equals_whole_frame_encoding() {
        for n in [0usize, 1, 127, 128, 300_000] {
            let to = Pid::new(u64::MAX, 12345);
            let payload = Bytes::from(vec![9u8; n]);
            let whole = encode_frame(
                &Frame::Direct {
                    to,
                    payload: payload.clone(),
                },
                DEFAULT_MAX_FRAME,
            )
            .unwrap();
            let mut buf = BytesMut::new();
            put_direct_frame(&mut buf, to, &payload, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(&buf[..], &whole[..]);
            assert!(whole.len() <= n + DIRECT_OVERHEAD);
            let back = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
            assert_eq!(back, Frame::Direct { to, payload });
        }
        let mut buf = BytesMut::new();
        assert!(matches!(
            put_direct_frame(&mut buf, Pid::new(1, 1), &[0u8; 2000], 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    /// The zero-copy decoding of data frames gives what postcard gives, for
    /// well-formed frames and for truncated and corrupted ones.
    #[test]
    fn data_fast_path_agrees_with_postcard() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let n = (next() % 6) as usize;
            let payloads: Vec<Bytes> = (0..n)
                .map(|_| {
                    let len = [0, 1, 127, 128, 300][(next() % 5) as usize];
                    Bytes::from(vec![(next() & 0xff) as u8; len])
                })
                .collect();
            let msg = Message::Data {
                view: ViewId {
                    epoch: next() >> (next() % 64),
                    installer: Pid::new(next() % 1000, next()),
                },
                first_seq: next() >> (next() % 64),
                payloads,
            };
            let to = Pid::new(next() % 1000, next() >> 20);
            let frame = if round % 3 == 2 {
                let len = [0, 1, 127, 128, 3000][(next() % 5) as usize];
                Frame::Direct {
                    to,
                    payload: Bytes::from(vec![(next() & 0xff) as u8; len]),
                }
            } else {
                Frame::Msg { to, msg }
            };
            let whole = encode_frame(&frame, DEFAULT_MAX_FRAME).unwrap();
            let body = whole.slice(4..);
            assert_eq!(decode_data_frame(&body).unwrap(), Some(frame.clone()));
            let mut buf = BytesMut::from(&whole[..]);
            assert_eq!(
                decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap(),
                Some(frame)
            );
            // Every truncation, and corrupted bytes.
            let mut variants: Vec<Vec<u8>> = (1..body.len()).map(|k| body[..k].to_vec()).collect();
            for _ in 0..20 {
                let mut v = body.to_vec();
                let i = 1 + (next() as usize) % (v.len() - 1);
                v[i] = if round % 2 == 0 {
                    0xff
                } else {
                    (next() & 0xff) as u8
                };
                variants.push(v);
            }
            for v in variants {
                let fast = decode_data_frame(&Bytes::from(v.clone()));
                let slow: Result<Frame, _> = postcard::from_bytes(&v[1..]);
                match (fast, slow) {
                    (Ok(Some(a)), Ok(b)) => assert_eq!(a, b),
                    (Ok(None), _) | (Err(_), Err(_)) => {}
                    (a, b) => panic!("fast path {a:?}, postcard {b:?} for {v:?}"),
                }
            }
        }
        // A count of payloads beyond the frame is refused without
        // allocating for it.
        let mut v = vec![VERSION, MSG_TAG, 1, 1, 0, 1, 1, 1, 1];
        v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode_data_frame(&Bytes::from(v)).is_err());
    }

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let frames = vec![
            Frame::Hello {
                group: "g".into(),
                pid: Pid::new(3, 9),
                listen: "127.0.0.1:4000".parse().unwrap(),
                policy: vsync_core::engine::PartitionPolicy::Partitionable,
            },
            Frame::AddressBook {
                entries: vec![(Pid::new(1, 1), "[::1]:5".parse().unwrap())],
            },
            Frame::Error {
                reason: "no".into(),
            },
            Frame::Msg {
                to: Pid::new(2, 2),
                msg: data(),
            },
        ];
        let mut all = BytesMut::new();
        for f in &frames {
            all.extend_from_slice(&encode_frame(f, DEFAULT_MAX_FRAME).unwrap());
        }
        // Feed one byte at a time.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        assert!(matches!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::Empty)
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 9, 0][..]);
        assert!(matches!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::Version(9))
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 3, VERSION, 200, 200][..]);
        assert!(matches!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::Decode(_))
        ));
        let big = Frame::Error {
            reason: "x".repeat(2000),
        };
        assert!(matches!(
            encode_frame(&big, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
