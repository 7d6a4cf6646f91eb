//! memcached as the shared, disposable store of soft state: monitors and
//! `metric` publish every reading, pipe processes on every DNS node read
//! them back, so all nodes answer from one live view. Keys are spread over
//! the servers by hash, so losing one loses only its share; a server that
//! refuses, fails or hangs costs one short timeout and is then skipped
//! (back-off) until it answers again.
//!
//! Keys (PREFIX is `--memcached-prefix`, default `pdns-ha`), values are
//! space-separated text, `updated` in Unix seconds:
//!
//! ```text
//! PREFIX:monitors                 ENTRY ENTRY ...  (who publishes health; no expiry)
//! PREFIX:health:TARGET|MONITOR    up(0|1) updated           (one monitor's verdict)
//! PREFIX:drain:TARGET             1 since REASON...|0 updated (no expiry: hard state)
//! PREFIX:load:TARGET              sessions max|- updated     (- - updated: unknown since then)
//! PREFIX:latency:NETWORK|TARGET|SOURCE   ewma_ms mean_ms samples timeouts updated callers|-
//! ```
//!
//! With `--memcached-key-file` the values are sealed (`v1 VALUE MAC`) and
//! keys too long for memcached are hashed, as [`crate::state::auth`]
//! describes; an ENTRY of the monitors list is then `MONITOR_ID/MAC`, else
//! the bare id. Nothing fetched is trusted further than it must be: a value
//! that is unauthenticated (with a key), forged, malformed, too large, out
//! of range, stamped in the future or older than one already accepted for
//! its key (a replay) is ignored and counted; the last good reading for
//! that key stays in use until it goes stale, as the last good copy of the
//! database does. So do the readings of a server that is down or slow.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use log::warn;
use memcache::exp::{Error, Get, Meta, MetaClient, Ttl};

use crate::state::auth::{
    self, wire_key, Key, KeyFileError, Unsealed, MAX_LIST, MAX_MONITORS, MAX_VALUE,
};
use crate::state::reading::{monitors_key, valid_monitor_id, Reading};
use crate::state::validate::{Clock, Invalid};
use crate::text::shown;

/// Connect and exchange timeout per server. memcached answers in tens of
/// microseconds on a LAN; past this it is treated as down.
const TIMEOUT: Duration = Duration::from_millis(10);

/// A failed server is skipped for this long, doubling up to the maximum,
/// so an outage costs one timeout per back-off period, not one per query.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Ignored values are logged at most this often, with the count since.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(30);

pub const DEFAULT_PREFIX: &str = "pdns-ha";

/// Why a fetched value was ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reject {
    Unauthenticated,
    BadMac,
    TooLarge(usize),
    Malformed,
    Invalid(Invalid),
    /// Older than a value already accepted for the same key.
    Replayed,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthenticated => f.write_str("no MAC (unauthenticated value)"),
            Self::BadMac => f.write_str("MAC does not verify"),
            Self::TooLarge(n) => write!(f, "{n} bytes, too large to read"),
            Self::Malformed => f.write_str("malformed value"),
            Self::Invalid(why) => write!(f, "{why}"),
            Self::Replayed => f.write_str("older than a value already seen (replayed)"),
        }
    }
}

/// Values ignored since start, by reason: `CMD status` shows them.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejects {
    pub unauthenticated: u64,
    pub bad_mac: u64,
    pub too_large: u64,
    pub malformed: u64,
    pub future: u64,
    pub out_of_range: u64,
    pub replayed: u64,
}

impl Rejects {
    fn count(&mut self, r: Reject) {
        *match r {
            Reject::Unauthenticated => &mut self.unauthenticated,
            Reject::BadMac => &mut self.bad_mac,
            Reject::TooLarge(_) => &mut self.too_large,
            Reject::Malformed => &mut self.malformed,
            Reject::Invalid(Invalid::Future(_)) => &mut self.future,
            Reject::Invalid(_) => &mut self.out_of_range,
            Reject::Replayed => &mut self.replayed,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        self.unauthenticated
            + self.bad_mac
            + self.too_large
            + self.malformed
            + self.future
            + self.out_of_range
            + self.replayed
    }
}

impl fmt::Display for Rejects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (unauthenticated {}, bad MAC {}, too large {}, malformed {}, future {}, out of range {}, replayed {})",
            self.total(),
            self.unauthenticated,
            self.bad_mac,
            self.too_large,
            self.malformed,
            self.future,
            self.out_of_range,
            self.replayed
        )
    }
}

fn updated(r: &Reading) -> f64 {
    match r {
        Reading::Health { h, .. } => h.updated,
        Reading::Load { updated, .. } => *updated,
        Reading::Latency { l, .. } => l.updated,
        Reading::Drain { updated, .. } => *updated,
    }
}

/// Whether `old` is newer than `new`, of the same key: drains by their
/// generation first, since clocks on two hosts may disagree but every
/// drain and undrain takes the next generation.
fn newer(old: &Reading, new: &Reading) -> bool {
    match (old, new) {
        (Reading::Drain { generation: a, .. }, Reading::Drain { generation: b, .. }) if a != b => {
            a > b
        }
        _ => updated(old) > updated(new),
    }
}

/// A failure of the server or the link, as opposed to one bad item: only
/// these put a server in back-off. A key or value memcached refuses must
/// not switch sharing off for every other key.
fn is_outage(e: &Error) -> bool {
    matches!(
        e,
        Error::Io(_) | Error::Timeout { .. } | Error::Ambiguous { .. } | Error::Protocol(_)
    )
}

struct Server {
    addr: String,
    client: MetaClient,
    /// Skipped until then after a failure.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Exchanges that failed as an outage (refused, timed out, broken).
    failures: u64,
}

impl Server {
    fn usable(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    fn failed(&mut self, now: Instant, what: &str) {
        self.failures += 1;
        if self.retry_at.is_none() {
            warn!(
                "memcached {}: {what}; using SQLite alone, retrying in the background",
                self.addr
            );
        }
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn worked(&mut self) {
        // At the outage's level, so whoever saw it go sees it come back.
        if self.retry_at.take().is_some() {
            warn!("memcached {} is back", self.addr);
        }
        self.backoff = BACKOFF_START;
    }
}

/// `--memcached HOST:PORT[,...]` with its prefix, the expiry in seconds of what is
/// published (the `--stale-after` of the command) and the shared secret that seals values
/// (`--memcached-key-file`). Every command that talks to memcached takes all of these, and
/// connects through [`Cache::connect`], so none can forget the key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    pub servers: String,
    pub prefix: String,
    pub ttl: u32,
    pub key_file: Option<std::path::PathBuf>,
}

pub struct Cache {
    servers: Vec<Server>,
    pub prefix: String,
    /// Expiry of published readings: past it they would be stale anyway.
    ttl: Duration,
    /// The shared secret of `--memcached-key-file`.
    key: Option<Key>,
    /// The newest reading accepted per logical key: what a replayed older
    /// value is measured against, and what stays in use when the current
    /// value is refused. Only keys asked for in the last fetch are kept.
    seen: HashMap<String, Reading>,
    rejects: Rejects,
    /// Rejections not yet logged, the last one's key and reason, and when
    /// the log last spoke.
    unlogged: u64,
    last_reject: Option<(String, Reject)>,
    logged_at: Option<Instant>,
    /// When a refused write was last logged: a server that refuses every
    /// write (out of memory, say) is reported every 30 s, not every write.
    refused_logged_at: Option<Instant>,
    /// Readings stamped further ahead of this host's clock are refused (the reader's
    /// `--max-clock-skew`).
    max_skew: u32,
}

/// Said once per process on stderr, whatever the command: without a key
/// file every value is taken as it comes, so whoever reaches memcached can
/// drain targets, mark them down or reorder answers, and `status` alone
/// (which operators rarely read) used to say so (issue 19).
fn warn_unauthenticated() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        warn!(
            "memcached without --memcached-key-file: values are neither sealed nor checked, \
             so anyone who can reach memcached can drain targets, mark them down or reorder \
             answers; give every writer and pipe the same key file (docs/trust.md)"
        )
    });
}

/// FNV-1a: stable across processes and versions, which key placement
/// must be, since monitors and pipes on different hosts compute it apart.
fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why the memcached options cannot be used: each names its option.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("--memcached-prefix {0:?}: needs 1 to 64 visible characters")]
    Prefix(String),
    /// An address the client cannot use (it resolves names here, dials later).
    #[error("--memcached {addr:?}: {error}")]
    Server { addr: String, error: Error },
    #[error("--memcached needs HOST:PORT[,HOST:PORT...]")]
    NoServers,
    #[error(transparent)]
    Key(#[from] KeyFileError),
}

impl Cache {
    /// `list` is `HOST:PORT[,HOST:PORT...]`. Nothing is dialed here.
    pub fn new(list: &str, prefix: &str, stale_after: u32) -> Result<Self, CacheError> {
        if prefix.is_empty() || prefix.bytes().any(|b| b <= b' ' || b == 0x7f) || prefix.len() > 64
        {
            return Err(CacheError::Prefix(prefix.to_owned()));
        }
        let mut servers = Vec::new();
        for addr in list.split(',').map(str::trim) {
            let client = MetaClient::builder()
                .connect_timeout(Some(TIMEOUT))
                .io_timeout(Some(TIMEOUT))
                .max_idle(1)
                .connect(addr)
                .map_err(|error| CacheError::Server {
                    addr: addr.to_owned(),
                    error,
                })?;
            servers.push(Server {
                addr: addr.to_owned(),
                client,
                retry_at: None,
                backoff: BACKOFF_START,
                failures: 0,
            });
        }
        if servers.is_empty() || list.trim().is_empty() {
            return Err(CacheError::NoServers);
        }
        Ok(Self {
            servers,
            prefix: prefix.to_owned(),
            ttl: Duration::from_secs(u64::from(stale_after)),
            key: None,
            seen: HashMap::new(),
            rejects: Rejects::default(),
            unlogged: 0,
            max_skew: crate::state::validate::DEFAULT_MAX_SKEW,
            last_reject: None,
            logged_at: None,
            refused_logged_at: None,
        })
    }

    /// As `new`, sealing with the secret in `key_file` if one is given: the
    /// one constructor every command uses, so none forgets the key.
    /// The client `--memcached` and its companions describe: the one way every command
    /// connects, so none can forget the key file.
    pub fn connect(o: &CacheOptions) -> Result<Self, CacheError> {
        Self::open(&o.servers, &o.prefix, o.ttl, o.key_file.as_deref())
    }

    pub fn open(
        list: &str,
        prefix: &str,
        stale_after: u32,
        key_file: Option<&std::path::Path>,
    ) -> Result<Self, CacheError> {
        let key = key_file.map(Key::load).transpose()?;
        let cache = Self::new(list, prefix, stale_after)?.with_key(key);
        if cache.key.is_none() {
            warn_unauthenticated();
        }
        Ok(cache)
    }

    /// Seals what is published and accepts only sealed values from now on.
    pub fn with_key(mut self, key: Option<Key>) -> Self {
        self.key = key;
        self
    }

    /// How far ahead of this host's clock a fetched reading may be stamped.
    pub fn with_max_skew(mut self, secs: u32) -> Self {
        self.max_skew = secs;
        self
    }

    pub fn authenticated(&self) -> bool {
        self.key.is_some()
    }

    /// Exchanges with a server that failed as an outage, over all servers:
    /// with back-off, a server that stays down costs one every few seconds.
    pub fn failures(&self) -> u64 {
        self.servers.iter().map(|s| s.failures).sum()
    }

    pub fn rejects(&self) -> Rejects {
        self.rejects
    }

    /// Counts and logs a fetched value the caller refused, as one refused
    /// here is: a drain older than the generation in the pipe's SQLite.
    pub fn refuse(&mut self, key: &str, why: Reject) {
        self.reject(key, why, Instant::now());
    }

    fn server_of(&self, key: &str) -> usize {
        (fnv1a(key.as_bytes()) % self.servers.len() as u64) as usize
    }

    /// Stores a reading on its server. Failures are logged once per outage
    /// and never reach the caller: memcached is only a copy.
    pub fn publish(&mut self, r: &Reading) {
        let key = r.key(&self.prefix);
        let wire = wire_key(&self.prefix, &key).into_owned();
        let value = match &self.key {
            Some(k) => k.seal(&key, &r.value()),
            None => r.value(),
        };
        let now = Instant::now();
        let s = self.server_of(&wire);
        let server = &mut self.servers[s];
        if !server.usable(now) {
            return;
        }
        // A drain is the operator's word and holds until undrained; an
        // undrain must outlive any copy of the drain it overrides.
        let ttl = match r {
            Reading::Drain { .. } => Ttl::NEVER,
            _ => Ttl::from(self.ttl),
        };
        match server.client.set(&wire, value).ttl(ttl).send() {
            Ok(_) => server.worked(),
            Err(e) if is_outage(&e) => server.failed(now, &e.to_string()),
            // This key or value only: the server is fine for the others.
            Err(e) => {
                let due = self
                    .refused_logged_at
                    .is_none_or(|t| now.duration_since(t) >= REJECT_LOG_EVERY);
                if due {
                    warn!("memcached {}: refused {}: {e}", server.addr, shown(&key));
                    self.refused_logged_at = Some(now);
                }
            }
        }
    }

    /// One value of at most `max` bytes from server `s`, its size asked
    /// first so that a larger one is never transferred. `Ok(None)`: a miss;
    /// `Ok(Some(Err(why)))`: refused unread; `Err(())`: the server is in
    /// back-off or just failed (and is now).
    fn get_bounded(&mut self, s: usize, wire: &str, max: usize) -> Result<Raw, ()> {
        fn down<T>(server: &mut Server, now: Instant, e: &dyn fmt::Display) -> Result<T, ()> {
            server.failed(now, &e.to_string());
            Err(())
        }
        let now = Instant::now();
        let server = &mut self.servers[s];
        if !server.usable(now) {
            return Err(());
        }
        let size = Get::new(wire).without_value().meta(Meta::NONE.size());
        let size = match server.client.run_many(std::iter::once(size)) {
            Ok(mut r) => r.pop(),
            Err(e) => return down(server, now, &e),
        };
        let n = match size {
            None => return down(server, now, &"no answer"),
            Some(Err(e)) if is_outage(&e) => return down(server, now, &e),
            Some(Err(_)) => return Ok(Some(Err(Reject::Malformed))),
            Some(Ok(g)) if !g.hit() => {
                server.worked();
                return Ok(None);
            }
            Some(Ok(g)) => g
                .item
                .size
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        if n > max {
            server.worked();
            return Ok(Some(Err(Reject::TooLarge(n))));
        }
        match server.client.get(wire).send() {
            Ok(g) => {
                server.worked();
                // Grown between the two reads: judged again by its length.
                Ok(g.value.map(|v| match v.len() > max {
                    true => Err(Reject::TooLarge(v.len())),
                    false => Ok(v),
                }))
            }
            Err(e) => down(server, now, &e),
        }
    }

    /// This process's entry in the monitors list: sealed with a key file.
    fn list_entry(&self, list: &str, id: &str) -> String {
        match &self.key {
            Some(k) => k.seal_entry(list, id),
            None => id.to_owned(),
        }
    }

    /// The monitor id of one list entry, if it may be used.
    fn open_entry<'e>(&self, list: &str, entry: &'e str) -> Result<&'e str, Reject> {
        let id = match &self.key {
            Some(k) => k.open_entry(list, entry).map_err(|e| match e {
                Unsealed::Unauthenticated => Reject::Unauthenticated,
                Unsealed::BadMac => Reject::BadMac,
            })?,
            None => auth::open_entry_unchecked(entry),
        };
        valid_monitor_id(id).then_some(id).ok_or(Reject::Malformed)
    }

    /// Adds `id` to the list of monitors that publish health, unless it is
    /// there. Run every round, so a restarted memcached learns it again. A
    /// list that is too large or holds entries that do not verify (planted,
    /// or sealed with another secret) is rewritten from its good entries
    /// and this one, so one monitor round heals it. Two monitors rewriting
    /// at once may drop each other's entry; the next round adds it back.
    pub fn register_monitor(&mut self, id: &str) {
        let list = monitors_key(&self.prefix);
        let wire = wire_key(&self.prefix, &list).into_owned();
        let s = self.server_of(&wire);
        let mine = self.list_entry(&list, id);
        let listed = match self.get_bounded(s, &wire, MAX_LIST) {
            Err(()) => return,
            Ok(listed) => listed,
        };
        let server_refused = |this: &mut Self, e: Error| {
            let server = &mut this.servers[s];
            server.failed(Instant::now(), &e.to_string());
        };
        let keep = match listed {
            // `add` when the list is missing, `append` when another monitor
            // created it first: ids are never lost to that race.
            None => {
                let server = &mut self.servers[s];
                match server
                    .client
                    .set(&wire, mine.as_str())
                    .ttl(Ttl::NEVER)
                    .add()
                    .send()
                {
                    Ok(r) if r.applied() => return,
                    Ok(_) => None,
                    Err(e) => return server_refused(self, e),
                }
            }
            Some(Err(_)) => Some(Vec::new()),
            Some(Ok(v)) => {
                let text = String::from_utf8_lossy(&v);
                let entries: Vec<&str> = text.split(' ').filter(|e| !e.is_empty()).collect();
                let good: Vec<String> = entries
                    .iter()
                    .filter(|e| self.open_entry(&list, e).is_ok())
                    .map(|e| (*e).to_owned())
                    .collect();
                match (good.len() == entries.len(), good.contains(&mine)) {
                    (true, true) => return,
                    (true, false) => None,
                    (false, _) => Some(good),
                }
            }
        };
        let server = &mut self.servers[s];
        let result = match keep {
            None => server
                .client
                .set(&wire, format!(" {mine}"))
                .append()
                .send()
                .map(drop),
            Some(mut good) => {
                good.sort();
                good.dedup();
                good.retain(|e| *e != mine);
                good.truncate(MAX_MONITORS - 1);
                good.push(mine);
                let value = good.join(" ");
                server
                    .client
                    .set(&wire, value)
                    .ttl(Ttl::NEVER)
                    .send()
                    .map(drop)
            }
        };
        if let Err(e) = result {
            server_refused(self, e);
        }
    }

    /// The monitors that publish health, as listed in memcached: the
    /// entries that verify, in byte order, at most [`MAX_MONITORS`]. `None`
    /// when the list cannot be read (its server is down, or the list is
    /// over [`MAX_LIST`] bytes), so the caller keeps the last list rather
    /// than forget every monitor's verdicts.
    pub fn monitors(&mut self) -> Option<Vec<String>> {
        let list = monitors_key(&self.prefix);
        let wire = wire_key(&self.prefix, &list).into_owned();
        let s = self.server_of(&wire);
        let now = Instant::now();
        let listed = match self.get_bounded(s, &wire, MAX_LIST) {
            Err(()) => return None,
            Ok(None) => Vec::new(),
            Ok(Some(Ok(v))) => v,
            Ok(Some(Err(why))) => {
                self.reject(&list, why, now);
                return None;
            }
        };
        let text = String::from_utf8_lossy(&listed);
        let mut ids = Vec::new();
        let mut refused = None;
        for entry in text.split(' ').filter(|e| !e.is_empty()) {
            match self.open_entry(&list, entry) {
                Ok(id) => ids.push(id.to_owned()),
                Err(why) => refused = Some(why),
            }
        }
        // One count per list read, however many entries it holds.
        if let Some(why) = refused {
            self.reject(&list, why, now);
        }
        ids.sort();
        ids.dedup();
        ids.truncate(MAX_MONITORS);
        Some(ids)
    }

    /// Judges one fetched value for the logical `key`.
    fn judge(&self, key: &str, raw: &[u8], clock: &Clock) -> Result<Reading, Reject> {
        if raw.len() > MAX_VALUE {
            return Err(Reject::TooLarge(raw.len()));
        }
        let value = std::str::from_utf8(raw).map_err(|_| Reject::Malformed)?;
        let body = match &self.key {
            Some(k) => k.open(key, value).map_err(|e| match e {
                Unsealed::Unauthenticated => Reject::Unauthenticated,
                Unsealed::BadMac => Reject::BadMac,
            })?,
            None => auth::open_unchecked(value),
        };
        let r = Reading::parse(&self.prefix, key, body).ok_or(Reject::Malformed)?;
        clock.reading(&r).map_err(Reject::Invalid)?;
        match self.seen.get(key) {
            Some(old) if newer(old, &r) => Err(Reject::Replayed),
            _ => Ok(r),
        }
    }

    fn reject(&mut self, key: &str, why: Reject, now: Instant) {
        self.rejects.count(why);
        self.unlogged += 1;
        self.last_reject = Some((key.to_owned(), why));
        if self
            .logged_at
            .is_none_or(|t| now.duration_since(t) >= REJECT_LOG_EVERY)
        {
            let (k, w) = self.last_reject.take().expect("just set");
            warn!(
                "memcached: ignored {} value(s) since the last report, the last {}: {w}; \
                 the last good reading stays in use (CMD status counts them by reason)",
                self.unlogged,
                shown(&k)
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
    }

    /// Reads the values of `wires` from server `s`, sizes first: a value
    /// larger than [`MAX_VALUE`] is refused without being transferred, so
    /// that planted megabytes cannot push a fetch past its timeout (which
    /// would switch sharing off for every key on the server). Per key:
    /// `None` for a miss. `Err(())`: the server failed, and is in back-off.
    fn read_server(&mut self, s: usize, wires: &[&str]) -> Result<Vec<Raw>, ()> {
        let server = &mut self.servers[s];
        let now = Instant::now();
        let refused = |server: &mut Server, e: Error| {
            match is_outage(&e) {
                true => server.failed(now, &e.to_string()),
                false => warn!("memcached {}: batch refused: {e}", server.addr),
            };
        };
        let sizes = wires
            .iter()
            .map(|w| Get::new(w).without_value().meta(Meta::NONE.size()));
        let sizes = server
            .client
            .run_many(sizes)
            .map_err(|e| refused(server, e))?;
        let mut raw = Vec::with_capacity(wires.len());
        let mut small = Vec::new();
        for (i, r) in sizes.into_iter().enumerate() {
            raw.push(match r {
                Ok(g) if !g.hit() => None,
                Ok(g) => match g
                    .item
                    .size
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                {
                    Some(n) if n > MAX_VALUE => Some(Err(Reject::TooLarge(n))),
                    _ => {
                        small.push(i);
                        None
                    }
                },
                Err(e) if is_outage(&e) => {
                    refused(server, e);
                    return Err(());
                }
                Err(_) => Some(Err(Reject::Malformed)),
            });
        }
        if small.is_empty() {
            server.worked();
            return Ok(raw);
        }
        let values = small.iter().map(|&i| Get::new(wires[i]));
        let values = server
            .client
            .run_many(values)
            .map_err(|e| refused(server, e))?;
        for (&i, r) in small.iter().zip(values) {
            raw[i] = match r {
                // Gone between the two reads: a miss.
                Ok(g) => g.value.map(Ok),
                Err(e) if is_outage(&e) => {
                    refused(server, e);
                    return Err(());
                }
                Err(_) => Some(Err(Reject::Malformed)),
            };
        }
        server.worked();
        Ok(raw)
    }

    /// Fetches `keys` (logical keys), two pipelined round trips (sizes,
    /// then values) per usable server, and returns the readings to use.
    /// Servers in back-off are skipped.
    pub fn fetch(&mut self, keys: &[String]) -> Vec<Reading> {
        let now = Instant::now();
        let clock = Clock::at(crate::state::reading::unix_now(), self.max_skew);
        let mut found = Vec::new();
        let mut seen = HashMap::with_capacity(self.seen.len());
        let wires: Vec<String> = keys
            .iter()
            .map(|k| wire_key(&self.prefix, k).into_owned())
            .collect();
        for s in 0..self.servers.len() {
            let mine: Vec<usize> = (0..keys.len())
                .filter(|&i| self.server_of(&wires[i]) == s)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let asked: Vec<&str> = mine.iter().map(|&i| wires[i].as_str()).collect();
            let raw = match self.servers[s].usable(now) {
                true => self.read_server(s, &asked).ok(),
                false => None,
            };
            let Some(raw) = raw else {
                // Not read this time (down, hanging, or slow past the
                // timeout, which someone who can fill memcached can also
                // cause): what was last read from it stays in use until
                // it is stale, as the last good copy of the database does.
                for &i in &mine {
                    if let Some(r) = self.seen.remove(&keys[i]) {
                        found.push(r.clone());
                        seen.insert(keys[i].clone(), r);
                    }
                }
                continue;
            };
            for (&i, raw) in mine.iter().zip(raw) {
                let key = &keys[i];
                // Judged before the key's last reading is taken out: a
                // replay is measured against it.
                let verdict = raw.map(|v| v.and_then(|v| self.judge(key, &v, &clock)));
                let old = self.seen.remove(key);
                match (verdict, old) {
                    (Some(Ok(r)), _) => {
                        found.push(r.clone());
                        seen.insert(key.clone(), r);
                    }
                    (Some(Err(why)), old) => {
                        self.reject(key, why, now);
                        if let Some(old) = old {
                            found.push(old.clone());
                            seen.insert(key.clone(), old);
                        }
                    }
                    // A miss: the reading is gone (expired, evicted, a
                    // restarted memcached), but its time is remembered so
                    // that an older copy written back later is a replay.
                    (None, Some(old)) => {
                        seen.insert(key.clone(), old);
                    }
                    (None, None) => {}
                }
            }
        }
        self.seen = seen;
        found
    }
}

/// What a server gave for one key: `None` a miss, else the value or why
/// it was refused unread.
type Raw = Option<Result<Vec<u8>, Reject>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::reading::Health;

    #[test]
    fn placement_is_stable_and_spread() {
        // The published FNV-1a 64 test vectors: placement must never drift.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let cache = Cache::new("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "p", 30).unwrap();
        let mut per = [0; 3];
        for i in 0..300 {
            per[cache.server_of(&format!("p:health:sip{i}.example.com"))] += 1;
        }
        assert!(per.iter().all(|&n| n > 60), "{per:?}");
    }

    #[test]
    fn fetched_values_are_judged() {
        let key = Key::new(b"0123456789abcdef0123").unwrap();
        let cache = Cache::new("127.0.0.1:1", "p", 30)
            .unwrap()
            .with_key(Some(key.clone()));
        let clock = Clock {
            now: 1000.0,
            max_skew: 5.0,
        };
        let k = "p:health:a|m";
        let judge = |c: &Cache, v: &str| c.judge(k, v.as_bytes(), &clock);
        assert!(judge(&cache, &key.seal(k, "1 990")).is_ok());
        assert_eq!(judge(&cache, "1 990"), Err(Reject::Unauthenticated));
        let other = Key::new(b"not the shared secret").unwrap();
        assert_eq!(judge(&cache, &other.seal(k, "1 990")), Err(Reject::BadMac));
        // Sealed for another key: moved values do not verify.
        assert_eq!(
            judge(&cache, &key.seal("p:health:b|m", "1 990")),
            Err(Reject::BadMac)
        );
        assert_eq!(
            judge(&cache, &key.seal(k, "1 2000")),
            Err(Reject::Invalid(Invalid::Future(2000.0)))
        );
        assert_eq!(judge(&cache, &key.seal(k, "7 990")), Err(Reject::Malformed));
        let big = "1 ".repeat(1 << 19);
        assert_eq!(judge(&cache, &big), Err(Reject::TooLarge(1 << 20)));
        let mut cache = cache;
        let newer = Reading::parse("p", k, "1 995").unwrap();
        cache.seen.insert(k.to_owned(), newer);
        assert_eq!(judge(&cache, &key.seal(k, "0 990")), Err(Reject::Replayed));
        assert!(
            judge(&cache, &key.seal(k, "0 995")).is_ok(),
            "the same time again is fine"
        );

        // Without a key file: as before, and sealed values are read unchecked.
        let open = Cache::new("127.0.0.1:1", "p", 30).unwrap();
        assert!(judge(&open, "1 990").is_ok());
        assert!(judge(&open, &other.seal(k, "1 990")).is_ok());
        assert_eq!(
            judge(&open, "1 2000"),
            Err(Reject::Invalid(Invalid::Future(2000.0)))
        );

        let mut r = Rejects::default();
        for why in [
            Reject::BadMac,
            Reject::Replayed,
            Reject::Invalid(Invalid::Time(-1.0)),
        ] {
            r.count(why);
        }
        assert_eq!(
            r.to_string(),
            "3 (unauthenticated 0, bad MAC 1, too large 0, malformed 0, future 0, out of range 1, replayed 1)"
        );
    }

    #[test]
    fn readings_outlive_a_server_that_stops_answering() {
        // Accepts and never answers: every exchange times out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut cache = Cache::new(&addr, "p", 30).unwrap();
        let k = "p:health:a|m".to_owned();
        let kept = Reading::parse("p", &k, "0 1").unwrap();
        cache.seen.insert(k.clone(), kept.clone());
        let first = cache.fetch(std::slice::from_ref(&k));
        assert_eq!(first, std::slice::from_ref(&kept));
        assert!(!cache.servers[0].usable(Instant::now()), "in back-off");
        assert_eq!(
            cache.fetch(std::slice::from_ref(&k)),
            [kept],
            "still, while skipped"
        );
        drop(listener);
    }

    #[test]
    fn a_dead_server_costs_one_timeout_then_is_skipped() {
        let mut cache = Cache::new("127.0.0.1:1", "p", 30).unwrap();
        let keys = vec!["p:health:a".to_owned()];
        assert!(cache.fetch(&keys).is_empty());
        assert!(!cache.servers[0].usable(Instant::now()));
        for _ in 0..100 {
            cache.fetch(&keys);
            cache.publish(&Reading::Health {
                target: "a".into(),
                monitor: "m".into(),
                h: Health {
                    up: true,
                    updated: 1.0,
                },
            });
        }
        // Each attempt doubles the back-off: one attempt was made in all.
        assert_eq!(cache.servers[0].backoff, BACKOFF_START * 2);
    }
}
