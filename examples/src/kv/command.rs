//! Turns a request's arguments into a typed [`Request`]: command lookup,
//! arity and option checks, with Redis' own error texts.
//!
//! Guarantees: [`parse`] never panics; it either returns a [`Request`]
//! whose fields are all valid, or the exact error line Redis would send
//! (so that clients and tests that match on Redis errors work unchanged).
//! Relative expiries stay relative here; the server turns them into
//! absolute deadlines (see [`crate::kv::machine`]) before replication.

use bytes::Bytes;

/// How a `SET` is conditioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetCond {
    /// Always set.
    Always,
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// A `SET` expiry as the client gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetExpiry {
    /// No option: the key loses any expiry.
    None,
    /// `EX s` / `PX ms`: expire this many milliseconds from now.
    In(u64),
    /// `KEEPTTL`: keep the key's current expiry.
    Keep,
}

/// `INFO`'s optional section argument, already lower-cased.
pub type Section = Option<String>;

/// When an `EXPIRE`-family command sets the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireWhen {
    /// This many ms from the issuing node's clock (may be negative: the
    /// key goes at once).
    In(i64),
    /// At this Unix time in ms (may be in the past: the key goes at once).
    At(i64),
}

/// `EXPIRE`'s condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpireCond {
    /// Always.
    Always,
    /// `NX`: only if the key has no deadline.
    Nx,
    /// `XX`: only if it has one.
    Xx,
    /// `GT`: only if the new deadline is later (none counts as infinite).
    Gt,
    /// `LT`: only if the new deadline is earlier.
    Lt,
}

/// A parsed client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `PING [message]`.
    Ping(Option<Bytes>),
    /// `ECHO message`.
    Echo(Bytes),
    /// `GET key`.
    Get(Bytes),
    /// `SET key value [NX|XX] [EX s|PX ms|KEEPTTL]`.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// NX / XX.
        cond: SetCond,
        /// EX / PX / KEEPTTL.
        expiry: SetExpiry,
    },
    /// `DEL key...`.
    Del(Vec<Bytes>),
    /// `EXISTS key...`.
    Exists(Vec<Bytes>),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: add `delta`.
    IncrBy(Bytes, i64),
    /// `MGET key...`.
    MGet(Vec<Bytes>),
    /// `MSET key value...`.
    MSet(Vec<(Bytes, Bytes)>),
    /// `DBSIZE`.
    DbSize,
    /// `FLUSHDB [ASYNC|SYNC]`.
    FlushDb,
    /// `KEYS pattern`.
    Keys(Bytes),
    /// `INFO [section]`.
    Info(Section),
    /// `DEBUG DIGEST`.
    DebugDigest,
    /// `DEBUG CUT node...`: drop all traffic between this replica and
    /// those nodes (fault injection; only on a node started with
    /// `--fault-injection`).
    DebugCut(Vec<u64>),
    /// `DEBUG HEAL`: undo every `DEBUG CUT`.
    DebugHeal,
    /// `QUIT`.
    Quit,
    /// `SELECT 0` (only database 0 exists).
    Select,
    /// `CONFIG GET pattern`: answered with an empty list (tools probe it).
    ConfigGet,
    /// `CLIENT ...`: accepted and ignored (client libraries send it).
    Client,
    /// `COMMAND ...`: answered with an empty list (redis-cli probes it).
    Command,
    /// `SAVE`: take a checkpoint of this replica now.
    Save,
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (and their `NX`,
    /// `XX`, `GT`, `LT` conditions).
    Expire {
        /// The key.
        key: Bytes,
        /// The deadline, relative or absolute, in ms.
        when: ExpireWhen,
        /// The condition.
        cond: ExpireCond,
    },
    /// `PERSIST key`.
    Persist(Bytes),
    /// `TTL key` (`ms` false) or `PTTL key` (`ms` true).
    Ttl {
        /// The key.
        key: Bytes,
        /// Milliseconds rather than seconds.
        ms: bool,
    },
    /// `EXPIRETIME key` or `PEXPIRETIME key`: the absolute deadline.
    ExpireTime {
        /// The key.
        key: Bytes,
        /// Milliseconds rather than seconds.
        ms: bool,
    },
    /// `AUTH [username] password` (the only user is `default`).
    Auth {
        /// The user named, if any.
        user: Option<Bytes>,
        /// The password.
        password: Bytes,
    },
    /// `HELLO [protover [AUTH username password] [SETNAME name]]`.
    Hello {
        /// The protocol version asked for (2 if none).
        proto: i64,
        /// Credentials to authenticate with.
        auth: Option<(Bytes, Bytes)>,
    },
    /// `SETNX key value`: 1 if set, 0 if the key exists.
    SetNx(Bytes, Bytes),
    /// `GETSET key value`: the old value; the new one has no expiry.
    GetSet(Bytes, Bytes),
    /// `GETDEL key`: the value, and the key removed.
    GetDel(Bytes),
    /// `APPEND key value`: the new length.
    Append(Bytes, Bytes),
    /// `RENAME key newkey` (`nx`: `RENAMENX`, only if `newkey` is absent).
    Rename {
        /// The key.
        from: Bytes,
        /// Its new name.
        to: Bytes,
        /// Only if `to` does not exist.
        nx: bool,
    },
    /// `STRLEN key`.
    Strlen(Bytes),
    /// `TYPE key`.
    Type(Bytes),
    /// `TOUCH key...`: how many exist.
    Touch(Vec<Bytes>),
    /// `TIME`: this replica's clock.
    Time,
    /// `VSYNC MEMBERS`: the view's members, one line each.
    VsyncMembers,
    /// `VSYNC EVICT node`: remove that node's member through a view change.
    VsyncEvict(u64),
    /// `MULTI`: start queueing a transaction.
    Multi,
    /// `EXEC`: run the queued transaction as one replicated command.
    Exec,
    /// `DISCARD`: drop the queued transaction.
    Discard,
    /// `WATCH key...`: make the next `EXEC` fail if one of these keys
    /// changes first.
    Watch(Vec<Bytes>),
    /// `UNWATCH`.
    Unwatch,
}

impl Request {
    /// True for commands that change the data set (they go through the
    /// group); false for those answered locally.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Set { .. }
                | Request::Del(_)
                | Request::IncrBy(..)
                | Request::MSet(_)
                | Request::FlushDb
                | Request::Expire { .. }
                | Request::Persist(_)
                | Request::SetNx(..)
                | Request::GetSet(..)
                | Request::GetDel(_)
                | Request::Append(..)
                | Request::Rename { .. }
        )
    }

    /// True for commands that read the data set.
    pub fn reads_data(&self) -> bool {
        matches!(
            self,
            Request::Get(_)
                | Request::Exists(_)
                | Request::MGet(_)
                | Request::DbSize
                | Request::Keys(_)
                | Request::DebugDigest
                | Request::Ttl { .. }
                | Request::ExpireTime { .. }
                | Request::Strlen(_)
                | Request::Type(_)
                | Request::Touch(_)
        )
    }

    /// True for commands a transaction (`MULTI`) may queue: writes, reads
    /// of the data set, `PING` and `ECHO`; they run inside `EXEC` on every
    /// replica alike.
    pub fn in_transaction(&self) -> bool {
        self.is_write()
            || (self.reads_data() && *self != Request::DebugDigest)
            || matches!(self, Request::Ping(_) | Request::Echo(_))
    }

    /// The command's name for metrics (lower case, a fixed set).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping(_) => "ping",
            Request::Echo(_) => "echo",
            Request::Get(_) => "get",
            Request::Set { .. } => "set",
            Request::Del(_) => "del",
            Request::Exists(_) => "exists",
            Request::IncrBy(..) => "incrby",
            Request::MGet(_) => "mget",
            Request::MSet(_) => "mset",
            Request::DbSize => "dbsize",
            Request::FlushDb => "flushdb",
            Request::Keys(_) => "keys",
            Request::Info(_) => "info",
            Request::DebugDigest | Request::DebugCut(_) | Request::DebugHeal => "debug",
            Request::Quit => "quit",
            Request::Select => "select",
            Request::ConfigGet => "config",
            Request::Client => "client",
            Request::Command => "command",
            Request::Save => "save",
            Request::Expire { .. } => "expire",
            Request::Persist(_) => "persist",
            Request::Ttl { .. } => "ttl",
            Request::ExpireTime { .. } => "expiretime",
            Request::VsyncMembers | Request::VsyncEvict(_) => "vsync",
            Request::Auth { .. } => "auth",
            Request::SetNx(..) => "setnx",
            Request::GetSet(..) => "getset",
            Request::GetDel(_) => "getdel",
            Request::Append(..) => "append",
            Request::Rename { .. } => "rename",
            Request::Strlen(_) => "strlen",
            Request::Type(_) => "type",
            Request::Touch(_) => "touch",
            Request::Time => "time",
            Request::Hello { .. } => "hello",
            Request::Multi => "multi",
            Request::Exec => "exec",
            Request::Discard => "discard",
            Request::Watch(_) => "watch",
            Request::Unwatch => "unwatch",
        }
    }
}

/// Every command name [`parse`] knows, for metrics labels.
pub const COMMAND_NAMES: &[&str] = &[
    "setnx",
    "getset",
    "getdel",
    "append",
    "rename",
    "strlen",
    "type",
    "touch",
    "time",
    "vsync",
    "auth",
    "hello",
    "ping",
    "echo",
    "get",
    "set",
    "del",
    "exists",
    "incrby",
    "mget",
    "mset",
    "dbsize",
    "flushdb",
    "keys",
    "info",
    "debug",
    "quit",
    "select",
    "config",
    "client",
    "command",
    "save",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "expire",
    "persist",
    "ttl",
    "expiretime",
];

/// Redis' wrong-arity error for `name`.
fn arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Lossy text of a client-supplied word, cut to keep error lines short.
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(128).collect()
}

/// Parses a signed 64-bit integer the way Redis does (no spaces, no `+`).
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 || b.first() == Some(&b'+') {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses `args` (the first is the command name). `Err` holds the error
/// line to send (without the leading `-`).
pub fn parse(args: &[Bytes]) -> Result<Request, String> {
    let Some((name, rest)) = args.split_first() else {
        return Err("ERR empty command".into());
    };
    let lname = String::from_utf8_lossy(name).to_ascii_lowercase();
    let n = rest.len();
    let need = |ok: bool| if ok { Ok(()) } else { Err(arity(&lname)) };
    let req = match lname.as_str() {
        "ping" => {
            need(n <= 1)?;
            Request::Ping(rest.first().cloned())
        }
        "echo" => {
            need(n == 1)?;
            Request::Echo(rest[0].clone())
        }
        "get" => {
            need(n == 1)?;
            Request::Get(rest[0].clone())
        }
        "set" => {
            need(n >= 2)?;
            parse_set(rest)?
        }
        "del" | "unlink" => {
            need(n >= 1)?;
            Request::Del(rest.to_vec())
        }
        "exists" => {
            need(n >= 1)?;
            Request::Exists(rest.to_vec())
        }
        "incr" | "decr" => {
            need(n == 1)?;
            Request::IncrBy(rest[0].clone(), if lname == "incr" { 1 } else { -1 })
        }
        "incrby" | "decrby" => {
            need(n == 2)?;
            let d = parse_i64(&rest[1]).ok_or("ERR value is not an integer or out of range")?;
            let d = if lname == "incrby" {
                d
            } else {
                d.checked_neg().ok_or("ERR decrement would overflow")?
            };
            Request::IncrBy(rest[0].clone(), d)
        }
        "mget" => {
            need(n >= 1)?;
            Request::MGet(rest.to_vec())
        }
        "mset" => {
            need(n >= 2 && n % 2 == 0)?;
            Request::MSet(
                rest.chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
        }
        "dbsize" => {
            need(n == 0)?;
            Request::DbSize
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            need(n >= 2)?;
            let v = parse_i64(&rest[1]).ok_or("ERR value is not an integer or out of range")?;
            let secs = lname == "expire" || lname == "expireat";
            let ms = if secs { v.checked_mul(1000) } else { Some(v) }
                .ok_or_else(|| format!("ERR invalid expire time in '{lname}' command"))?;
            let when = if lname.ends_with("at") {
                ExpireWhen::At(ms)
            } else {
                ExpireWhen::In(ms)
            };
            let mut cond = ExpireCond::Always;
            for opt in &rest[2..] {
                let c = match opt.to_ascii_lowercase().as_slice() {
                    b"nx" => ExpireCond::Nx,
                    b"xx" => ExpireCond::Xx,
                    b"gt" => ExpireCond::Gt,
                    b"lt" => ExpireCond::Lt,
                    _ => return Err(format!("ERR Unsupported option {}", show(opt))),
                };
                if cond != ExpireCond::Always && cond != c {
                    return Err(
                        "ERR NX and XX, GT or LT options at the same time are not compatible"
                            .into(),
                    );
                }
                cond = c;
            }
            Request::Expire {
                key: rest[0].clone(),
                when,
                cond,
            }
        }
        "persist" => {
            need(n == 1)?;
            Request::Persist(rest[0].clone())
        }
        "ttl" | "pttl" => {
            need(n == 1)?;
            Request::Ttl {
                key: rest[0].clone(),
                ms: lname == "pttl",
            }
        }
        "expiretime" | "pexpiretime" => {
            need(n == 1)?;
            Request::ExpireTime {
                key: rest[0].clone(),
                ms: lname == "pexpiretime",
            }
        }
        "setex" | "psetex" => {
            need(n == 3)?;
            let v = parse_i64(&rest[1]).ok_or("ERR value is not an integer or out of range")?;
            let ms = if lname == "setex" {
                v.checked_mul(1000)
            } else {
                Some(v)
            };
            match ms {
                Some(ms) if ms > 0 => Request::Set {
                    key: rest[0].clone(),
                    value: rest[2].clone(),
                    cond: SetCond::Always,
                    expiry: SetExpiry::In(ms as u64),
                },
                _ => return Err(format!("ERR invalid expire time in '{lname}' command")),
            }
        }
        "setnx" | "getset" | "append" => {
            need(n == 2)?;
            let (k, v) = (rest[0].clone(), rest[1].clone());
            match lname.as_str() {
                "setnx" => Request::SetNx(k, v),
                "getset" => Request::GetSet(k, v),
                _ => Request::Append(k, v),
            }
        }
        "getdel" | "strlen" | "type" => {
            need(n == 1)?;
            let k = rest[0].clone();
            match lname.as_str() {
                "getdel" => Request::GetDel(k),
                "strlen" => Request::Strlen(k),
                _ => Request::Type(k),
            }
        }
        "rename" | "renamenx" => {
            need(n == 2)?;
            Request::Rename {
                from: rest[0].clone(),
                to: rest[1].clone(),
                nx: lname == "renamenx",
            }
        }
        "touch" => {
            need(n >= 1)?;
            Request::Touch(rest.to_vec())
        }
        "time" => {
            need(n == 0)?;
            Request::Time
        }
        "auth" => {
            need(n == 1 || n == 2)?;
            Request::Auth {
                user: (n == 2).then(|| rest[0].clone()),
                password: rest[n - 1].clone(),
            }
        }
        "hello" => {
            let proto = match rest.first() {
                None => 2,
                Some(v) => {
                    parse_i64(v).ok_or("ERR Protocol version is not an integer or out of range")?
                }
            };
            let mut auth = None;
            let mut i = 1;
            while i < n {
                match rest[i].to_ascii_lowercase().as_slice() {
                    b"auth" => {
                        let (Some(u), Some(p)) = (rest.get(i + 1), rest.get(i + 2)) else {
                            return Err("ERR Syntax error in HELLO option 'auth'".into());
                        };
                        auth = Some((u.clone(), p.clone()));
                        i += 3;
                    }
                    b"setname" if i + 1 < n => i += 2,
                    _ => {
                        return Err(format!(
                            "ERR Syntax error in HELLO option '{}'",
                            show(&rest[i])
                        ));
                    }
                }
            }
            Request::Hello { proto, auth }
        }
        "vsync" => {
            need(n >= 1)?;
            match rest[0].to_ascii_lowercase().as_slice() {
                b"members" if n == 1 => Request::VsyncMembers,
                b"evict" if n == 2 => Request::VsyncEvict(
                    std::str::from_utf8(&rest[1])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("ERR the node id is a number")?,
                ),
                _ => return Err("ERR VSYNC MEMBERS | VSYNC EVICT <node>".into()),
            }
        }
        "multi" => {
            need(n == 0)?;
            Request::Multi
        }
        "exec" => {
            need(n == 0)?;
            Request::Exec
        }
        "discard" => {
            need(n == 0)?;
            Request::Discard
        }
        "watch" => {
            need(n >= 1)?;
            Request::Watch(rest.to_vec())
        }
        "unwatch" => {
            need(n == 0)?;
            Request::Unwatch
        }
        "flushdb" | "flushall" => {
            need(n <= 1)?;
            if let Some(mode) = rest.first() {
                let m = mode.to_ascii_lowercase();
                if m != b"async" && m != b"sync" {
                    return Err("ERR syntax error".into());
                }
            }
            Request::FlushDb
        }
        "keys" => {
            need(n == 1)?;
            Request::Keys(rest[0].clone())
        }
        "info" => Request::Info(
            rest.first()
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()),
        ),
        "debug" => {
            need(n >= 1)?;
            if rest[0].eq_ignore_ascii_case(b"digest") && n == 1 {
                Request::DebugDigest
            } else if rest[0].eq_ignore_ascii_case(b"heal") && n == 1 {
                Request::DebugHeal
            } else if rest[0].eq_ignore_ascii_case(b"cut") && n >= 2 {
                let mut nodes = Vec::with_capacity(n - 1);
                for a in &rest[1..] {
                    match std::str::from_utf8(a)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        Some(id) => nodes.push(id),
                        None => {
                            return Err(format!("ERR DEBUG CUT takes node ids, not '{}'", show(a)));
                        }
                    }
                }
                Request::DebugCut(nodes)
            } else {
                return Err(format!(
                    "ERR unknown subcommand '{}'. Try DEBUG DIGEST, DEBUG CUT <node>... or DEBUG HEAL.",
                    show(&rest[0])
                ));
            }
        }
        "quit" => Request::Quit,
        "select" => {
            need(n == 1)?;
            match parse_i64(&rest[0]) {
                Some(0) => Request::Select,
                Some(_) => return Err("ERR DB index is out of range".into()),
                None => return Err("ERR value is not an integer or out of range".into()),
            }
        }
        "config" => {
            need(n >= 1)?;
            if rest[0].eq_ignore_ascii_case(b"get") {
                Request::ConfigGet
            } else {
                return Err(format!(
                    "ERR unknown subcommand '{}'. Try CONFIG GET.",
                    show(&rest[0])
                ));
            }
        }
        "client" => Request::Client,
        "command" => Request::Command,
        "save" => {
            need(n == 0)?;
            Request::Save
        }
        _ => {
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with: ",
                show(name)
            );
            for a in rest.iter().take(4) {
                msg.push_str(&format!("'{}' ", show(a)));
            }
            return Err(msg);
        }
    };
    Ok(req)
}

/// `SET key value` options.
fn parse_set(rest: &[Bytes]) -> Result<Request, String> {
    let mut cond = SetCond::Always;
    let mut expiry = SetExpiry::None;
    let mut i = 2;
    let syntax = || "ERR syntax error".to_string();
    while let Some(opt) = rest.get(i) {
        let o = opt.to_ascii_lowercase();
        match o.as_slice() {
            b"nx" if cond == SetCond::Always => cond = SetCond::IfAbsent,
            b"xx" if cond == SetCond::Always => cond = SetCond::IfPresent,
            b"keepttl" if expiry == SetExpiry::None => expiry = SetExpiry::Keep,
            b"ex" | b"px" if expiry == SetExpiry::None => {
                i += 1;
                let v = rest.get(i).ok_or_else(syntax)?;
                let v = parse_i64(v).ok_or("ERR value is not an integer or out of range")?;
                let ms = if o.as_slice() == b"ex" {
                    v.checked_mul(1000)
                } else {
                    Some(v)
                };
                match ms {
                    Some(ms) if ms > 0 => expiry = SetExpiry::In(ms as u64),
                    _ => return Err("ERR invalid expire time in 'set' command".into()),
                }
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    Ok(Request::Set {
        key: rest[0].clone(),
        value: rest[1].clone(),
        cond,
        expiry,
    })
}

/// Redis' glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), on bytes.
/// Iterative with backtracking to the last `*`, so no input can make it
/// recurse deeply.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let mut advanced = false;
        if let Some(&pc) = pattern.get(p) {
            match pc {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    advanced = true;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            advanced = true;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        advanced = true;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        advanced = true;
                    }
                }
            }
        }
        if !advanced {
            match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            }
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Matches byte `c` against the class starting at `pattern[p] == b'['`.
/// Returns whether it matched and the index after the class.
fn class_match(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(j) {
            None => return Some((matched != negate, j)), // unterminated: Redis treats the end as ']'
            Some(b']') => return Some((matched != negate, j + 1)),
            Some(b'\\') if j + 1 < pattern.len() => {
                matched |= pattern[j + 1] == c;
                j += 2;
            }
            Some(&lo)
                if pattern.get(j + 1) == Some(&b'-')
                    && j + 2 < pattern.len()
                    && pattern[j + 2] != b']' =>
            {
                let hi = pattern[j + 2];
                let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                matched |= a <= c && c <= b;
                j += 3;
            }
            Some(&x) => {
                matched |= x == c;
                j += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn set_options() {
        assert_eq!(
            parse(&args("SET k v NX PX 100")),
            Ok(Request::Set {
                key: "k".into(),
                value: "v".into(),
                cond: SetCond::IfAbsent,
                expiry: SetExpiry::In(100)
            })
        );
        assert_eq!(
            parse(&args("set k v ex 2 xx")),
            Ok(Request::Set {
                key: "k".into(),
                value: "v".into(),
                cond: SetCond::IfPresent,
                expiry: SetExpiry::In(2000)
            })
        );
        assert_eq!(
            parse(&args("SET k v NX XX")),
            Err("ERR syntax error".into())
        );
        assert_eq!(parse(&args("SET k v EX")), Err("ERR syntax error".into()));
        assert_eq!(
            parse(&args("SET k v EX 0")),
            Err("ERR invalid expire time in 'set' command".into())
        );
        assert_eq!(
            parse(&args("SET k v EX x")),
            Err("ERR value is not an integer or out of range".into())
        );
        assert_eq!(
            parse(&args("SET k v EX 9223372036854775807")),
            Err("ERR invalid expire time in 'set' command".into())
        );
    }

    #[test]
    fn arity_and_unknown() {
        assert_eq!(
            parse(&args("GET")),
            Err("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            parse(&args("MSET a")),
            Err("ERR wrong number of arguments for 'mset' command".into())
        );
        assert_eq!(
            parse(&args("MSET a b c")),
            Err("ERR wrong number of arguments for 'mset' command".into())
        );
        assert!(
            parse(&args("FOO bar"))
                .unwrap_err()
                .starts_with("ERR unknown command 'FOO'")
        );
        assert_eq!(
            parse(&args("DECRBY k -9223372036854775808")),
            Err("ERR decrement would overflow".into())
        );
        assert!(parse(&args("INCR k")).unwrap().is_write());
        assert!(!parse(&args("GET k")).unwrap().is_write());
    }

    #[test]
    fn debug_fault_injection() {
        assert_eq!(
            parse(&args("DEBUG CUT 4 5")),
            Ok(Request::DebugCut(vec![4, 5]))
        );
        assert_eq!(parse(&args("debug heal")), Ok(Request::DebugHeal));
        assert!(
            parse(&args("DEBUG CUT x"))
                .unwrap_err()
                .contains("node ids")
        );
        assert!(
            parse(&args("DEBUG CUT"))
                .unwrap_err()
                .contains("unknown subcommand")
        );
        assert!(!parse(&args("DEBUG HEAL")).unwrap().is_write());
        assert!(!parse(&args("DEBUG CUT 2")).unwrap().reads_data());
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[ae]llo", b"hillo"));
        assert!(glob_match(b"h[^e]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-c]llo", b"hbllo"));
        assert!(glob_match(b"h\\*llo", b"h*llo"));
        assert!(!glob_match(b"h\\*llo", b"hello"));
        assert!(glob_match(b"user:*:name", b"user:42:name"));
        assert!(!glob_match(b"user:*:name", b"user:42:age"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"a*", b"a"));
        // Pathological pattern: must finish quickly (no exponential backtracking).
        let s = vec![b'a'; 2000];
        assert!(!glob_match(b"*a*a*a*a*a*a*a*b", &s));
    }
}
