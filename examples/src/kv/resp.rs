//! RESP2, the Redis wire protocol: an incremental request parser with hard
//! limits, and reply encoders.
//!
//! Why hand-written: the parser must refuse an oversized bulk string or
//! array from its *header*, before buffering a byte of it, and must accept
//! Redis' inline commands (`PING\r\n` typed into telnet); the codec crates
//! we looked at buffer whole frames first. Guarantees: [`parse_request`]
//! never panics on any input (every length is checked, arithmetic is
//! checked), never consumes a partial request, and returns zero-copy
//! [`Bytes`] slices of the input buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

/// The largest bulk string Redis accepts (its `proto-max-bulk-len`).
pub const DEFAULT_MAX_BULK: usize = 512 * 1024 * 1024;
/// The largest number of arguments in one request (Redis' limit).
pub const DEFAULT_MAX_ARGS: usize = 1024 * 1024;
/// The longest inline command line (Redis' `PROTO_INLINE_MAX_SIZE`).
pub const DEFAULT_MAX_INLINE: usize = 64 * 1024;

/// The parser's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes.
    pub max_bulk: usize,
    /// Largest number of arguments in one request.
    pub max_args: usize,
    /// Longest inline command line, in bytes.
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: DEFAULT_MAX_BULK,
            max_args: DEFAULT_MAX_ARGS,
            max_inline: DEFAULT_MAX_INLINE,
        }
    }
}

/// A request that cannot be framed. The byte stream cannot be
/// resynchronised after one, so the server answers with the error and
/// closes that connection (as Redis does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The `*N` header is not a number or is out of range.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$N` header is not a number or is larger than the limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of an array is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string is not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// An inline command line is longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// A header line is longer than any valid header.
    #[error("Protocol error: too big mbulk count string")]
    HeaderTooBig,
    /// Unbalanced quotes in an inline command.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// The most buffer space reserved ahead of the bytes received, for a large
/// argument still arriving.
const RESERVE_AHEAD: usize = 1 << 20;

/// A header line (`*N` or `$N`) is never longer than this.
const MAX_HEADER: usize = 32;

/// Finds `\r\n` in `buf[from..]`, returning the index of `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let mut i = 0;
    while let Some(off) = rest
        .get(i..)
        .and_then(|r| r.iter().position(|&b| b == b'\r'))
    {
        let at = i + off;
        match rest.get(at + 1) {
            Some(b'\n') => return Some(from + at),
            Some(_) => i = at + 1,
            None => return None,
        }
    }
    None
}

/// Parses a decimal integer header value (optionally negative).
fn parse_int(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Reads a header line `<prefix>N\r\n` starting at `pos`. `Ok(None)`: not
/// all there yet.
fn header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, ()> {
    match find_crlf(buf, pos) {
        None => {
            if buf.len().saturating_sub(pos) > MAX_HEADER {
                Err(())
            } else {
                Ok(None)
            }
        }
        Some(cr) => {
            let digits = buf.get(pos + 1..cr).ok_or(())?;
            let n = parse_int(digits).ok_or(())?;
            Ok(Some((n, cr + 2)))
        }
    }
}

/// Takes one complete request off the front of `buf`: `Ok(Some(args))`,
/// `Ok(None)` if more bytes are needed (nothing consumed), or a
/// [`ProtocolError`]. An empty array or blank inline line yields an empty
/// argument list (the caller ignores it).
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// `*N\r\n` followed by N bulk strings `$L\r\n<L bytes>\r\n`.
fn parse_multibulk(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let (n, mut pos) = match header(buf, 0) {
        Err(()) => return Err(ProtocolError::InvalidMultibulkLength),
        Ok(None) => return Ok(None),
        Ok(Some(h)) => h,
    };
    if n <= 0 {
        buf.advance(pos);
        return Ok(Some(Vec::new()));
    }
    let n = usize::try_from(n).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
    if n > limits.max_args {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    // First pass: find every argument's range without copying.
    let mut ranges = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&c) => return Err(ProtocolError::ExpectedBulk(c as char)),
        }
        let (len, start) = match header(buf, pos) {
            Err(()) => return Err(ProtocolError::InvalidBulkLength),
            Ok(None) => return Ok(None),
            Ok(Some(h)) => h,
        };
        let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
        if len > limits.max_bulk {
            return Err(ProtocolError::InvalidBulkLength);
        }
        let end = start
            .checked_add(len)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        let after = end.checked_add(2).ok_or(ProtocolError::InvalidBulkLength)?;
        if buf.len() < after {
            // Make room for more of a large argument, but no more than
            // RESERVE_AHEAD at a time: memory grows with the bytes that
            // actually arrive, not with what a header announces (a client
            // could otherwise make each connection hold `max_bulk`).
            buf.reserve((after - buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        if buf.get(end..after) != Some(b"\r\n".as_slice()) {
            return Err(ProtocolError::MissingCrlf);
        }
        ranges.push((start, end));
        pos = after;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Some(
        ranges.into_iter().map(|(s, e)| frame.slice(s..e)).collect(),
    ))
}

/// A line of whitespace-separated words (with Redis' double quotes).
fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    if nl > limits.max_inline {
        return Err(ProtocolError::InlineTooBig);
    }
    let line = buf.split_to(nl + 1);
    let line = line.get(..nl).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_inline(line).map(Some)
}

/// Splits an inline line into words; `"..."` groups words and understands
/// `\n`, `\r`, `\t`, `\\`, `\"` and `\xHH`.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut word = Vec::new();
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match line.get(i) {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'"') => {
                        i += 1;
                        if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        break;
                    }
                    Some(b'\\') => {
                        let (c, used) = match line.get(i + 1) {
                            Some(b'n') => (b'\n', 2),
                            Some(b'r') => (b'\r', 2),
                            Some(b't') => (b'\t', 2),
                            Some(b'x') => match line
                                .get(i + 2..i + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                            {
                                Some(v) => (v, 4),
                                None => (b'x', 2),
                            },
                            Some(&c) => (c, 2),
                            None => return Err(ProtocolError::UnbalancedQuotes),
                        };
                        word.push(c);
                        i += used;
                    }
                    Some(&c) => {
                        word.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = line.get(i) {
                if c.is_ascii_whitespace() {
                    break;
                }
                word.push(c);
                i += 1;
            }
        }
        args.push(Bytes::from(word));
    }
    Ok(args)
}

/// Appends `+s\r\n`. `s` must not contain CR or LF (they are replaced).
pub fn simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    put_line(out, s);
}

/// Appends `-msg\r\n`. CR and LF in `msg` are replaced by spaces.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.put_u8(b'-');
    put_line(out, msg);
}

/// Writes a status or error line, keeping it on one line.
fn put_line(out: &mut BytesMut, s: &str) {
    if s.bytes().any(|b| b == b'\r' || b == b'\n') {
        out.put_slice(s.replace(['\r', '\n'], " ").as_bytes());
    } else {
        out.put_slice(s.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Appends `:n\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    let _ = write!(out, ":{n}\r\n");
}

/// Appends a bulk string, or the nil bulk `$-1\r\n` for `None`.
pub fn bulk(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => out.put_slice(b"$-1\r\n"),
        Some(v) => {
            let _ = write!(out, "${}\r\n", v.len());
            out.put_slice(v);
            out.put_slice(b"\r\n");
        }
    }
}

/// Appends an array header `*n\r\n`; the caller appends the n elements.
pub fn array_header(out: &mut BytesMut, n: usize) {
    let _ = write!(out, "*{n}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limits: &Limits) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(req) = parse_request(&mut buf, limits)? {
            out.push(req);
        }
        Ok(out)
    }

    /// A header announcing a huge argument reserves a bounded amount, not
    /// the announced size; the argument still parses as its bytes arrive.
    #[test]
    fn announced_sizes_do_not_reserve_memory() {
        let mut buf = BytesMut::from(&b"*1\r\n$536870000\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
        assert!(buf.capacity() <= 2 * RESERVE_AHEAD, "{}", buf.capacity());
        let n = 3 * RESERVE_AHEAD + 7;
        let mut buf = BytesMut::from(format!("*1\r\n${n}\r\n").as_bytes());
        let mut sent = 0;
        while sent < n {
            assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
            let k = (n - sent).min(100_000);
            buf.extend_from_slice(&vec![b'v'; k]);
            sent += k;
        }
        buf.extend_from_slice(b"\r\n");
        let req = parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(req[0].len(), n);
    }

    #[test]
    fn multibulk_and_pipelining() {
        let reqs = parse_all(
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0], vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(reqs[1], vec![Bytes::from("PING")]);
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let full = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(
                parse_request(&mut buf, &Limits::default()),
                Ok(None),
                "cut {cut}"
            );
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
        let mut buf = BytesMut::from(&full[..]);
        let req = parse_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(req[2], Bytes::from_static(b"va\r\nl"));
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_commands() {
        let reqs = parse_all(b"PING\r\nset  k \"a b\\x41\"\n\r\n", &Limits::default()).unwrap();
        assert_eq!(reqs[0], vec![Bytes::from("PING")]);
        assert_eq!(
            reqs[1],
            vec![Bytes::from("set"), Bytes::from("k"), Bytes::from("a bA")]
        );
        assert!(reqs[2].is_empty());
        assert_eq!(
            parse_all(b"set \"k\n", &Limits::default()),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn limits_are_enforced_from_headers() {
        let small = Limits {
            max_bulk: 10,
            max_args: 4,
            max_inline: 16,
        };
        assert_eq!(
            parse_all(b"*1\r\n$11\r\n", &small),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*5\r\n", &small),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_all(&[b'a'; 17], &small),
            Err(ProtocolError::InlineTooBig)
        );
        assert_eq!(
            parse_all(b"*1\r\n$99999999999999999999999\r\n", &Limits::default()),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*x\r\n", &small),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n:1\r\n", &small),
            Err(ProtocolError::ExpectedBulk(':'))
        );
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nab\r\n", &small),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(parse_all(b"*-1\r\n", &small), Ok(vec![vec![]]));
        assert_eq!(
            parse_all(&[b'*'; 40], &small),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn pseudo_random_garbage_never_panics() {
        // A tiny xorshift so the test needs no dependency and is repeatable.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"*$\r\n0123456789-+:abc \"\\x";
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let mut buf = BytesMut::from(&input[..]);
            let limits = Limits {
                max_bulk: 100,
                max_args: 100,
                max_inline: 100,
            };
            while let Ok(Some(_)) = parse_request(&mut buf, &limits) {}
        }
    }

    #[test]
    fn encoders() {
        let mut out = BytesMut::new();
        simple(&mut out, "OK");
        error(&mut out, "ERR a\r\nb");
        integer(&mut out, -3);
        bulk(&mut out, Some(b"hi"));
        bulk(&mut out, None);
        array_header(&mut out, 2);
        assert_eq!(
            &out[..],
            b"+OK\r\n-ERR a  b\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*2\r\n"
        );
    }
}
