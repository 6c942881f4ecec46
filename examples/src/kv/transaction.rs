//! Transactions (`MULTI`/`EXEC`/`DISCARD`/`WATCH`/`UNWATCH`), and the reply
//! encoding they share with the ordinary command path.
//!
//! Why it is built this way: a transaction is one command of the group's
//! total order. `EXEC` replicates the queued commands themselves (their
//! arguments, as the client sent them) in one [`WriteOp::Exec`]; every
//! replica parses and runs them at the same position, writes and reads
//! alike, with the command's `now`, and produces the same `EXEC` reply. So
//! a transaction is atomic on every replica at once, and its reads see
//! exactly the state its writes apply to.
//!
//! `WATCH` records, on the client's replica, a hash of each watched key's
//! value and expiry (or its absence); `EXEC` carries them, and every
//! replica compares them with the key as it is at `EXEC`'s place in the
//! order: any difference aborts the transaction everywhere (a nil reply).
//! Unlike Redis, a key changed and then changed back to the same value does
//! not abort it (the comparison is of values, not of a modification
//! counter); a replica that lagged when `WATCH` read can only make `EXEC`
//! abort, never commit on a stale value.

use crate::kv::command::{ExpireWhen, Request, SetExpiry};
use crate::kv::machine::{Expire, KvStore, WriteOp, WriteResult};
use crate::kv::resp;
use bytes::{Bytes, BytesMut};

/// Turns a write request into its replicated operation (relative expiry
/// becomes an absolute deadline by the issuing node's clock).
pub fn to_op(req: Request, now: u64) -> WriteOp {
    match req {
        Request::Set {
            key,
            value,
            cond,
            expiry,
        } => {
            let expire = match expiry {
                SetExpiry::None => Expire::Never,
                SetExpiry::In(ms) => Expire::At(now.saturating_add(ms)),
                SetExpiry::Keep => Expire::Keep,
            };
            WriteOp::Set {
                key,
                value,
                cond,
                expire,
            }
        }
        Request::Del(keys) => WriteOp::Del(keys),
        Request::IncrBy(k, d) => WriteOp::IncrBy(k, d),
        Request::MSet(pairs) => WriteOp::MSet(pairs),
        Request::Expire { key, when, cond } => {
            let at = match when {
                ExpireWhen::In(ms) => i64::try_from(now).unwrap_or(i64::MAX).saturating_add(ms),
                ExpireWhen::At(ms) => ms,
            };
            WriteOp::Expire {
                key,
                at: u64::try_from(at).unwrap_or(0),
                cond,
            }
        }
        Request::Persist(key) => WriteOp::Persist(key),
        Request::SetNx(k, v) => WriteOp::SetNx(k, v),
        Request::GetSet(k, v) => WriteOp::GetSet(k, v),
        Request::GetDel(k) => WriteOp::GetDel(k),
        Request::Append(k, v) => WriteOp::Append(k, v),
        Request::Rename { from, to, nx } => WriteOp::Rename { from, to, nx },
        // `is_write` admits only the above and FLUSHDB.
        _ => WriteOp::FlushDb,
    }
}

/// Answers one read from the data set.
pub fn encode_read(store: &KvStore, req: &Request, now: u64, out: &mut BytesMut) {
    match req {
        Request::Get(k) => resp::bulk(out, store.get(k, now).map(|b| &b[..])),
        Request::Exists(keys) => resp::integer(out, store.exists(keys, now)),
        Request::MGet(keys) => {
            resp::array_header(out, keys.len());
            for k in keys {
                resp::bulk(out, store.get(k, now).map(|b| &b[..]));
            }
        }
        Request::DbSize => resp::integer(out, store.dbsize(now) as i64),
        Request::Keys(p) => {
            let keys = store.keys(p, now);
            resp::array_header(out, keys.len());
            for k in keys {
                resp::bulk(out, Some(&k));
            }
        }
        Request::DebugDigest => resp::simple(out, &store.digest()),
        Request::Strlen(k) => resp::integer(
            out,
            store
                .get(k, now)
                .map_or(0, |v| i64::try_from(v.len()).unwrap_or(i64::MAX)),
        ),
        Request::Type(k) => resp::simple(
            out,
            if store.get(k, now).is_some() {
                "string"
            } else {
                "none"
            },
        ),
        Request::Touch(keys) => resp::integer(out, store.exists(keys, now)),
        Request::Ttl { key, ms } => {
            let v = match store.entry(key, now) {
                None => -2,
                Some(e) => match e.expire_at {
                    None => -1,
                    Some(at) => {
                        let left = at.saturating_sub(now);
                        // Rounded as Redis rounds it.
                        let v = if *ms { left } else { (left + 500) / 1000 };
                        i64::try_from(v).unwrap_or(i64::MAX)
                    }
                },
            };
            resp::integer(out, v)
        }
        Request::ExpireTime { key, ms } => {
            let v = match store.entry(key, now) {
                None => -2,
                Some(e) => match e.expire_at {
                    None => -1,
                    Some(at) => {
                        let v = if *ms { at } else { at / 1000 };
                        i64::try_from(v).unwrap_or(i64::MAX)
                    }
                },
            };
            resp::integer(out, v)
        }
        Request::Ping(None) => resp::simple(out, "PONG"),
        Request::Ping(Some(m)) | Request::Echo(m) => resp::bulk(out, Some(m)),
        _ => resp::error(out, "ERR internal: not a read"),
    }
}

/// Encodes a write's result; true if it is an error reply.
pub fn encode_result(out: &mut BytesMut, r: &WriteResult) -> bool {
    match r {
        WriteResult::Ok => resp::simple(out, "OK"),
        WriteResult::Nil => resp::bulk(out, None),
        WriteResult::Int(i) => resp::integer(out, *i),
        WriteResult::Err(e) => {
            resp::error(out, e);
            return true;
        }
        WriteResult::Raw(b) => out.extend_from_slice(b),
        WriteResult::Bulk(b) => resp::bulk(out, b.as_deref()),
    }
    false
}

/// What `WATCH` records of `key`: a hash of its live value and expiry, or
/// `None` if it does not exist at `now`.
pub fn watch_hash(store: &KvStore, key: &[u8], now: u64) -> Option<u64> {
    let e = store.entry(key, now)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&e.value);
    h.update(&e.expire_at.unwrap_or(0).to_le_bytes());
    Some(h.digest())
}

/// Runs a transaction on `store` at `now` and returns the `EXEC` reply:
/// a nil array if a watched key changed, else an array of each queued
/// command's reply (every replica computes the same bytes).
pub fn exec(
    store: &mut KvStore,
    cmds: Vec<Vec<Bytes>>,
    watch: &[(Bytes, Option<u64>)],
    now: u64,
) -> Bytes {
    let mut out = BytesMut::new();
    if watch.iter().any(|(k, h)| watch_hash(store, k, now) != *h) {
        out.extend_from_slice(b"*-1\r\n");
        return out.freeze();
    }
    resp::array_header(&mut out, cmds.len());
    for args in cmds {
        match crate::kv::command::parse(&args) {
            Err(e) => resp::error(&mut out, &e),
            Ok(req) if req.is_write() => {
                let r = store.apply_op(to_op(req, now), now);
                encode_result(&mut out, &r);
            }
            Ok(req) if req.in_transaction() => encode_read(store, &req, now, &mut out),
            Ok(req) => resp::error(
                &mut out,
                &format!(
                    "ERR '{}' cannot run inside a transaction on vsync-kv",
                    req.name()
                ),
            ),
        }
    }
    out.freeze()
}

/// A connection's transaction state.
#[derive(Debug, Default)]
pub struct TxState {
    /// Queued commands, between `MULTI` and `EXEC` (`None`: no `MULTI`).
    pub queued: Option<Vec<Vec<Bytes>>>,
    /// A queued command was refused: `EXEC` answers `EXECABORT`.
    pub failed: bool,
    /// What `WATCH` recorded.
    pub watched: Vec<(Bytes, Option<u64>)>,
}

impl TxState {
    /// Forgets the transaction and the watched keys (after `EXEC` or
    /// `DISCARD`).
    pub fn reset(&mut self) {
        *self = TxState::default();
    }
}
