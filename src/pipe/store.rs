//! SQLite access for the pipe: the records index ([`Zones`]: whole for a
//! small database, per name for a large one), the soft-state readings, and
//! the watch that notices a change.
//!
//! The watch is a fingerprint (`Fingerprint`) of the file and its WAL, taken with `stat`
//! every 250 ms: any commit changes it. A database held whole is then read
//! through a connection opened for the read and closed after it, so a pipe
//! process keeps none of SQLite's memory between changes (four or more pipe
//! processes each kept about 190 KiB of it); a database read per name keeps
//! its connection, which every new name needs. Monitors commit readings
//! several times a second, so a change is sorted by kind: the readings (a
//! few rows per target) are always re-read, while the zones are dropped or
//! re-read only when the `ha_changes` counter that triggers keep on `domains`
//! and `records` moved (`sql/schema.sql`). A database without that table
//! (plain gsqlite3) is treated as if every commit touched the zones.
//!
//! A missing, replaced-by-garbage, locked or corrupt file keeps the last good
//! data answering: all of it when held whole, the cached names otherwise.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::pipe::zone::{is_apex, Builder, Row, Skip, Zones, WHOLE_LIMIT};
use crate::state::index::Metrics;
use crate::state::memcached::{Cache, Reject};
use crate::state::reading::{drain_key, health_key, latency_key, load_key, Reading};
use crate::state::reading::{
    target_key, unix_now, Drain, Health, Latency, Load, Source, ANY_NETWORK,
};
use crate::state::service::{Service, Transport};
use crate::state::validate::Clock;
use crate::text::{shown, Limited};

/// How often the pipe looks for a changed database. The contract is that an
/// operator's change is served within a second; a check costs two `stat`s,
/// a few microseconds.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// While the database stays broken, repeat the error at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// How long the first load may wait for a writer's lock. Later reads never
/// wait: what is held answers and the next check tries again.
const STARTUP_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the pipe reads the shared readings from memcached: about as
/// fresh as SQLite's, one round trip per server per second.
const FETCH_EVERY: Duration = Duration::from_secs(1);

/// SQLite's page cache for this read-only connection, in KiB. Pages of a
/// large database are shared in the kernel's page cache anyway; this only
/// keeps the hot index pages private to the process.
const PAGE_CACHE_KIB: i64 = 1024;

const PIPE_SQL: &str = include_str!("../../sql/pipe.sql");

/// Skipped rows whose reasons are kept (for `status` and `explain`) and
/// logged; the rest are only counted, so that a table full of bad rows
/// cannot fill the log or the memory of every pipe process.
const SKIPPED_KEPT: usize = 20;

/// The statement under `-- name: NAME` in `sql/pipe.sql`. Every name the
/// code asks for is checked by a unit test, so a missing one fails there.
fn named(name: &str) -> &'static str {
    let marker = format!("-- name: {name}\n");
    let Some(start) = PIPE_SQL.find(&marker) else {
        return "";
    };
    let body = &PIPE_SQL[start + marker.len()..];
    body.split(';').next().unwrap_or("")
}

/// Whether `r` is a drain or undrain older than the generation SQLite holds
/// for its target.
fn superseded(generations: &HashMap<String, u64>, r: &Reading) -> bool {
    match r {
        Reading::Drain {
            target, generation, ..
        } => generations
            .get(&target_key(target))
            .is_some_and(|g| generation < g),
        _ => false,
    }
}

/// An error that names the database file.
#[derive(Debug)]
pub struct StoreError {
    path: PathBuf,
    what: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database {}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for StoreError {}

/// What `stat` says of one file: which file it is (a new inode means the
/// operator replaced the database) and when and how it last changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    id: (u64, u64),
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            id: (m.dev(), m.ino()),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The database file and its WAL as `stat` sees them. Every commit changes
/// one of the two: in WAL mode it appends to the `-wal` file (and a
/// checkpoint writes the database), with a rollback journal it writes the
/// database itself; each write stamps the file's change times, which Linux
/// keeps in nanoseconds. The same fingerprint twice means nothing to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    db: Stamp,
    wal: Option<Stamp>,
}

/// The fingerprint of the database at `path`. Anything but a regular file
/// (a FIFO would block the open for ever, a directory or device is no
/// database) is refused before SQLite sees it.
fn fingerprint(path: &Path) -> Result<Fingerprint, String> {
    let m = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err(format!("{}, not a database file", crate::files::kind(&m)));
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok(Fingerprint {
        db: Stamp::of(&m),
        wal: std::fs::metadata(&wal).ok().map(|w| Stamp::of(&w)),
    })
}

/// What the store did, for CMD `status` and the scale tests.
#[derive(Default, Debug, Clone, Copy)]
pub struct StoreStats {
    /// The zones were re-read (held whole) or dropped (per name).
    pub zone_loads: u64,
    /// The readings were re-read.
    pub reading_loads: u64,
    /// Names read from the database one at a time (per-name mode).
    pub name_reads: u64,
    /// Questions that could not be read from the database and were FAILed.
    pub read_failures: u64,
}

pub struct Store {
    path: PathBuf,
    /// Held between changes only while the records are read per name.
    conn: Option<Connection>,
    /// The database as last read; `None` forces the next check to read.
    seen: Option<Fingerprint>,
    /// The `ha_changes` zones counter the zones were read at; `None` when
    /// the database has no such table.
    zones_version: Option<i64>,
    zones: Zones,
    /// A zone read for one AXFR when the database is not held whole.
    axfr: Zones,
    /// Asked names, lower-cased for the per-name query.
    name_buf: String,
    /// The readings in SQLite.
    base: Metrics,
    /// `base` with memcached's newer readings laid over it: what answers.
    metrics: Metrics,
    cache: Option<Cache>,
    /// The readings last fetched from memcached.
    overlay: Vec<Reading>,
    /// The monitors publishing health, as last read from memcached; kept
    /// while the list's server is unreachable.
    monitors: Vec<String>,
    next_fetch: Instant,
    /// Rows left out of the whole index, and of the readings; their
    /// reasons are logged again only when a count changes, not on every
    /// reload (readings are re-read on every commit).
    skipped_zones: Skipped,
    skipped_readings: Skipped,
    /// The first [`SKIPPED_KEPT`] reasons of both.
    skipped_why: Vec<String>,
    loaded_at: Instant,
    next_check: Instant,
    /// Set while the database cannot be read: when the error was last
    /// logged and how many checks failed since.
    failing: Option<(Instant, u64)>,
    stats: StoreStats,
    /// What readings' timestamps are judged against.
    clock: fn() -> f64,
    skipped_log: Limited,
    /// From SQLite: a drain from memcached of an older generation is a
    /// copy written back after an undrain or a newer drain, and is refused.
    drain_generations: HashMap<String, u64>,
}

impl Store {
    /// Opens the database and loads it; any failure here is fatal to the
    /// caller, because there is nothing earlier to fall back on.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_at(path, unix_now)
    }

    /// As `open`, judging readings' timestamps (in the future or not) by
    /// `clock`: golden transcripts run at a fixed time, as the backend does.
    pub fn open_at(path: &Path, clock: fn() -> f64) -> Result<Self, StoreError> {
        let err = |what: String| StoreError {
            path: path.to_owned(),
            what,
        };
        let seen = fingerprint(path).map_err(err)?;
        let conn = open_read_only(path, STARTUP_BUSY_TIMEOUT).map_err(err)?;
        let loaded = load(&conn, true, clock()).map_err(|e| match e.contains("no such table") {
            true => err(format!(
                "{e} (not a PowerDNS database; create one with pdns-ha init)"
            )),
            false => err(e),
        })?;
        conn.busy_timeout(Duration::ZERO)
            .map_err(|e| err(e.to_string()))?;
        let now = Instant::now();
        let mut store = Self {
            path: path.to_owned(),
            conn: Some(conn),
            seen: Some(seen),
            zones_version: None,
            zones: Zones::default(),
            axfr: Zones::default(),
            name_buf: String::new(),
            base: Metrics::default(),
            metrics: Metrics::default(),
            cache: None,
            overlay: Vec::new(),
            monitors: Vec::new(),
            next_fetch: now,
            skipped_zones: Skipped::default(),
            skipped_readings: Skipped::default(),
            skipped_why: Vec::new(),
            loaded_at: now,
            next_check: now + CHECK_EVERY,
            failing: None,
            stats: StoreStats::default(),
            clock,
            skipped_log: Limited::default(),
            drain_generations: HashMap::new(),
        };
        store.install(loaded, now);
        store.keep_connection_if_needed();
        Ok(store)
    }

    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the zones were last read (or, per name, last dropped).
    pub fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// How many rows the last load left out, and the first reasons: what
    /// `status` and `explain` show, in the words the pipe logs.
    pub fn skipped(&self) -> (usize, &[String]) {
        let n = self.skipped_zones.count + self.skipped_readings.count;
        (n, &self.skipped_why)
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The readings taken from memcached (the rest came from SQLite).
    pub fn from_memcached(&self) -> &[Reading] {
        &self.overlay
    }

    /// Makes sure `zones()` can answer for `qname`: held whole it always
    /// can; per name, a name not cached yet is read now, one indexed query.
    /// An error means the database could not be read for it (the caller
    /// answers FAIL: pdns must not cache "no such name" for an outage).
    pub fn prepare(&mut self, qname: &str) -> Result<(), String> {
        if self.zones.knows(qname) {
            return Ok(());
        }
        self.stats.name_reads += 1;
        self.name_buf.clear();
        self.name_buf
            .push_str(qname.strip_suffix('.').unwrap_or(qname));
        self.name_buf.make_ascii_lowercase();
        let first = self.zones.start_name();
        let mut skipped = Vec::new();
        let mut read = || -> rusqlite::Result<()> {
            let conn = self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)?;
            let mut stmt = conn.prepare_cached(named("records_named"))?;
            let mut rows = stmt.query([&self.name_buf])?;
            while let Some(r) = rows.next()? {
                let row = read_row(r)?;
                let apex = is_apex(row.name, r.get_ref(7)?.as_str()?);
                if let Err(why) = self.zones.push_row(&row, apex) {
                    skipped.push(skip_reason(&row, &why));
                }
            }
            Ok(())
        };
        let result = read().map_err(|e| e.to_string());
        match result {
            Ok(()) => self.zones.finish_name(&self.name_buf, first),
            Err(_) => self.zones.abort_name(first),
        }
        // Logged once per name while it stays cached, and at most one line
        // per 30 s: a million bad rows asked for one by one are a count.
        for why in skipped {
            self.skipped_log
                .warn(Instant::now(), format_args!("not served: record {why}"));
        }
        if let Err(e) = &result {
            self.stats.read_failures += 1;
            self.report(Instant::now(), e);
        }
        result
    }

    /// The records of a zone for AXFR, by id or (ABI 4+) by name: from the
    /// index when held whole, else read now. `None`: no such zone.
    pub fn zone_for_axfr(&mut self, id: i64, zone: Option<&str>) -> Result<&Zones, String> {
        if self.zones.is_whole() {
            return Ok(&self.zones);
        }
        let read = || -> rusqlite::Result<Zones> {
            let conn = self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)?;
            let mut b = Builder::default();
            let by_id = conn
                .prepare_cached(named("domain_by_id"))?
                .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()?;
            let domain = match (by_id, zone) {
                (Some(d), _) => Some(d),
                (None, Some(z)) => conn
                    .prepare_cached(named("domain_by_name"))?
                    .query_row([z.strip_suffix('.').unwrap_or(z)], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
                (None, None) => None,
            };
            let Some((id, name)) = domain else {
                return Ok(b.finish());
            };
            b.domain(id, &name);
            let mut stmt = conn.prepare_cached(named("zone_records"))?;
            let mut rows = stmt.query([id])?;
            while let Some(r) = rows.next()? {
                // Unservable rows are logged when their names are asked.
                let _ = b.record(&read_row(r)?);
            }
            Ok(b.finish())
        };
        self.axfr = read().map_err(|e| e.to_string())?;
        Ok(&self.axfr)
    }

    /// Frees what `zone_for_axfr` read: a large zone is not kept for the
    /// next AXFR, which may be hours away.
    pub fn end_axfr(&mut self) {
        if self.axfr.record_count() > 0 {
            self.axfr = Zones::default();
            give_back_memory(self.conn.as_ref());
        }
    }

    /// Re-reads what changed, at most every `CHECK_EVERY`. Never fails: on
    /// error what is held stays and answers.
    pub fn refresh(&mut self, now: Instant) {
        if self.cache.is_some() && now >= self.next_fetch {
            self.fetch(now);
        }
        if now < self.next_check {
            return;
        }
        self.next_check = now + CHECK_EVERY;
        match self.check(now) {
            Ok(()) => {
                if let Some((_, n)) = self.failing.take() {
                    // At the outage's level, so whoever saw it start sees it end.
                    warn!(
                        "database {} readable again after {n} failed checks",
                        self.path.display()
                    );
                }
            }
            Err(what) => self.report(now, &what),
        }
    }

    /// Reads shared readings from memcached from now on, the first batch
    /// at once.
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self.fetch(Instant::now());
        self
    }

    /// Fetches every reading the answers could use: each monitor's health,
    /// the drain and the load per target, latency per target and source from
    /// each known network and from `*`. Still one batch per server.
    fn fetch(&mut self, now: Instant) {
        self.next_fetch = now + FETCH_EVERY;
        let Some(cache) = &mut self.cache else { return };
        if let Some(ids) = cache.monitors() {
            self.monitors = ids;
        }
        let monitors = &self.monitors;
        let p = &cache.prefix;
        let mut keys = Vec::new();
        let networks = self
            .base
            .networks()
            .iter()
            .map(|n| &*n.cidr)
            .chain([ANY_NETWORK]);
        for t in self.base.targets() {
            keys.extend(monitors.iter().map(|m| health_key(p, t, m)));
            keys.push(drain_key(p, t));
            keys.push(load_key(p, t));
        }
        for n in networks {
            for t in self.base.targets() {
                keys.extend(Source::ALL.map(|s| latency_key(p, n, t, s)));
            }
        }
        let mut fresh = cache.fetch(&keys);
        fresh.retain(|r| match superseded(&self.drain_generations, r) {
            true => {
                cache.refuse(&r.key(&cache.prefix), Reject::Replayed);
                false
            }
            false => true,
        });
        // A drain is hard state: a miss (memcached restarted, or down and in
        // back-off) never undoes one seen before; only an undrain does.
        let kept: Vec<Reading> = std::mem::take(&mut self.overlay)
            .into_iter()
            .filter(|old| match old {
                Reading::Drain { target, .. } => !fresh
                    .iter()
                    .any(|r| matches!(r, Reading::Drain { target: t, .. } if t == target)),
                _ => false,
            })
            .collect();
        self.overlay = fresh;
        self.overlay.extend(kept);
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.metrics = self.base.clone();
        for r in &self.overlay {
            // Also here: an undrain written to SQLite since the last fetch
            // ends the drain fetched before it at once.
            if !superseded(&self.drain_generations, r) {
                self.metrics.overlay(r);
            }
        }
    }

    /// Forces a full re-read at the next `refresh` (CMD `reload`).
    pub fn expire(&mut self) {
        self.seen = None;
        self.zones_version = None;
        self.next_check = Instant::now();
    }

    /// Reads what changed since the last fingerprint. The fingerprint is
    /// taken before the read and kept only after it succeeded, so a commit
    /// during the read is read again next time, and a failed read is tried
    /// again at every check until the file heals.
    fn check(&mut self, now: Instant) -> Result<(), String> {
        let fp = fingerprint(&self.path)?;
        if self.seen == Some(fp) {
            return Ok(());
        }
        let replaced = self.seen.is_some_and(|s| s.db.id != fp.db.id);
        let opened = match (&self.conn, replaced) {
            (Some(_), false) => None,
            _ => Some(open_read_only(&self.path, Duration::ZERO)?),
        };
        let Some(conn) = opened.as_ref().or(self.conn.as_ref()) else {
            unreachable!("a connection is either held or just opened")
        };
        let zones_changed = replaced
            || self.zones_version.is_none()
            || zones_version(conn).map_err(|e| e.to_string())? != self.zones_version;
        let loaded = load(conn, zones_changed, (self.clock)())?;
        if replaced {
            info!("database {} was replaced; reopened it", self.path.display());
        }
        if opened.is_some() {
            self.conn = opened;
        }
        self.install(loaded, now);
        self.seen = Some(fp);
        self.keep_connection_if_needed();
        Ok(())
    }

    /// Closes the connection unless the records are read per name, and
    /// gives back what reading took.
    fn keep_connection_if_needed(&mut self) {
        if self.zones.is_whole() {
            self.conn = None;
        }
        give_back_memory(self.conn.as_ref());
    }

    fn install(&mut self, loaded: Loaded, now: Instant) {
        if let Some((zones, skipped)) = loaded.zones {
            if skipped.count != self.skipped_zones.count {
                skipped.log();
            }
            self.skipped_zones = skipped;
            match zones.is_whole() {
                true => info!(
                    "loaded {}: {} zones, {} records, held whole",
                    self.path.display(),
                    zones.zone_count(),
                    zones.record_count()
                ),
                false => info!(
                    "opened {}: over {WHOLE_LIMIT} records, read per name as asked",
                    self.path.display()
                ),
            }
            self.zones = zones;
            self.zones_version = loaded.zones_version;
            self.loaded_at = now;
            self.stats.zone_loads += 1;
        }
        if loaded.skipped.count != self.skipped_readings.count {
            loaded.skipped.log();
        }
        self.skipped_readings = loaded.skipped;
        self.skipped_why = (self.skipped_zones.kept.iter())
            .chain(&self.skipped_readings.kept)
            .take(SKIPPED_KEPT)
            .cloned()
            .collect();
        self.base = loaded.metrics;
        self.drain_generations = loaded.drain_generations;
        self.stats.reading_loads += 1;
        self.rebuild();
    }

    fn report(&mut self, now: Instant, what: &str) {
        let (last, n) = self.failing.get_or_insert((now, 0));
        *n += 1;
        if *n == 1 || now.duration_since(*last) >= ERROR_LOG_EVERY {
            let held = match self.zones.is_whole() {
                true => format!(
                    "the copy loaded {:.0?} ago",
                    now.duration_since(self.loaded_at)
                ),
                false => format!("the {} names cached", self.zones.name_count()),
            };
            error!(
                "database {}: {what}; answering from {held} ({n} failed checks)",
                self.path.display(),
            );
            *last = now;
        }
    }
}

/// Loading allocates and frees: SQLite's page cache fills with the pages
/// read, and the heap keeps its high-water mark. Four or more pipe
/// processes each keep that private, so it goes back after every load.
fn give_back_memory(conn: Option<&Connection>) {
    if let Some(conn) = conn {
        let _ = conn.execute_batch("PRAGMA shrink_memory");
    }
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn open_read_only(path: &Path, busy: Duration) -> Result<Connection, String> {
    // The path (and the -wal and -shm beside it) must be regular files,
    // checked with stat and a non-blocking open: SQLite's own open would
    // hang for ever on a FIFO swapped in after `fingerprint` looked.
    crate::files::check_database(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    conn.busy_timeout(busy).map_err(|e| e.to_string())?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{PAGE_CACHE_KIB}"))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The zones change counter, `None` on a database without `ha_changes`.
fn zones_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    if !table_exists(conn, "ha_changes")? {
        return Ok(None);
    }
    conn.prepare_cached(named("zones_version"))?
        .query_row([], |r| r.get(0))
        .optional()
}

fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
    )?
    .query_row([table], |r| r.get(0))
}

/// A record row in the shape every record statement of `sql/pipe.sql` has.
fn read_row<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<Row<'r>> {
    Ok(Row {
        name: r.get_ref(0)?.as_str()?,
        rtype: r.get_ref(1)?.as_str()?,
        content: r.get_ref(2)?.as_str_or_null()?.unwrap_or(""),
        ttl: r.get(3)?,
        prio: r.get(4)?,
        domain_id: r.get(5)?,
        auth: r.get(6)?,
    })
}

/// Why a record is not served, short: a 10 MB TXT must not make a 10 MB
/// log line on every start.
fn skip_reason(row: &Row<'_>, why: &Skip) -> String {
    let what = format!(
        "{} {} \"{}\"",
        shown(row.name),
        shown(row.rtype),
        shown(row.content)
    );
    match why {
        Skip::Unservable => format!("{what}: a TAB or line break cannot be sent to pdns"),
        Skip::NoPriority => format!("{what}: MX/SRV without a priority"),
        Skip::BadPriority => format!("{what}: priority out of range (0 to 65535)"),
    }
}

struct Loaded {
    /// `None`: the zones did not change, only the readings were read.
    /// With them, the rows they left out.
    zones: Option<(Zones, Skipped)>,
    zones_version: Option<i64>,
    metrics: Metrics,
    /// Per target (as `target_key` spells it), the generation of its last
    /// drain or undrain written to this database.
    drain_generations: HashMap<String, u64>,
    /// Readings left out.
    skipped: Skipped,
}

/// Rows left out of a load: all counted, the first few with a reason.
#[derive(Default)]
struct Skipped {
    count: usize,
    kept: Vec<String>,
}

impl Skipped {
    fn push(&mut self, why: impl FnOnce() -> String) {
        self.count += 1;
        if self.kept.len() < SKIPPED_KEPT {
            self.kept.push(why());
        }
    }

    fn log(&self) {
        for why in &self.kept {
            warn!("not served: {why}");
        }
        if self.count > self.kept.len() {
            warn!("not served: {} more rows", self.count - self.kept.len());
        }
    }
}

/// Reads the readings, and the zones too when `zones` says they changed,
/// in one read transaction, so what is installed never mixes two versions
/// of the database. A row that cannot be served is left out with a reason;
/// it never stops the rest from loading.
fn load(conn: &Connection, zones: bool, now: f64) -> Result<Loaded, String> {
    let run = || -> rusqlite::Result<Loaded> {
        let tx = conn.unchecked_transaction()?;
        let zones_version = zones_version(&tx)?;
        let zones = match zones {
            false => None,
            true => {
                let mut skipped = Skipped::default();
                Some((load_zones(&tx, &mut skipped)?, skipped))
            }
        };
        let mut skipped = Skipped::default();
        let mut drain_generations = HashMap::new();
        each_row(
            &tx,
            "ha_drain_generation",
            "drain_generations",
            &mut skipped,
            |r| {
                let g = u64::try_from(col::<i64>(r, 1)?).map_err(|_| "negative generation")?;
                drain_generations.insert(target_key(&col::<String>(r, 0)?), g);
                Ok(())
            },
        )?;
        Ok(Loaded {
            metrics: load_metrics(&tx, &Clock::at(now), &mut skipped)?,
            zones,
            zones_version,
            drain_generations,
            skipped,
        })
    };
    run().map_err(|e| e.to_string())
}

/// Every record when there are at most `WHOLE_LIMIT`, else an empty
/// per-name cache (what was cached before may be stale now).
fn load_zones(tx: &Connection, skipped: &mut Skipped) -> rusqlite::Result<Zones> {
    let limit = i64::try_from(WHOLE_LIMIT + 1).unwrap_or(i64::MAX);
    let count: i64 = tx
        .prepare_cached(named("records_at_most"))?
        .query_row([limit], |r| r.get(0))?;
    if count > WHOLE_LIMIT as i64 {
        // The domains table is still read, so a database that is not
        // pdns's fails here at start-up rather than at the first question.
        tx.prepare_cached(named("domains"))?.exists([])?;
        return Ok(Zones::per_name());
    }
    let mut b = Builder::default();
    let mut stmt = tx.prepare_cached(named("domains"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        match (r.get(0), r.get_ref(1)?.as_str()) {
            (Ok(id), Ok(name)) => b.domain(id, name),
            _ => skipped.push(|| "a domains row whose id or name is not readable".to_owned()),
        }
    }
    drop(rows);
    let mut stmt = tx.prepare_cached(named("records"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        match read_row(r) {
            Err(e) => skipped.push(|| format!("a records row is not readable ({e})")),
            Ok(row) => {
                if let Err(why) = b.record(&row) {
                    skipped.push(|| format!("record {}", skip_reason(&row, &why)));
                }
            }
        }
    }
    Ok(b.finish())
}

/// Reads the `ha_` tables. A row with a value of the wrong type or out of
/// range (the one validation every path shares, against `clock`) is left
/// out with a reason, like a bad record.
fn load_metrics(
    tx: &Connection,
    clock: &Clock,
    skipped: &mut Skipped,
) -> rusqlite::Result<Metrics> {
    let mut m = Metrics::default();
    let valid = |v: Result<(), crate::state::validate::Invalid>| v.map_err(|e| e.to_string());
    let valid_source = |s: &str| crate::state::validate::source(s).map_err(|e| e.to_string());
    each_row(tx, "ha_networks", "networks", skipped, |r| {
        m.add_network(&col::<String>(r, 0)?, &col::<String>(r, 1)?)
    })?;
    each_row(tx, "ha_targets", "targets", skipped, |r| {
        m.add_target(&col::<String>(r, 0)?);
        Ok(())
    })?;
    each_row(tx, "ha_targets", "capacity", skipped, |r| {
        m.add_capacity(&col::<String>(r, 0)?, count(r, 1)?);
        Ok(())
    })?;
    each_row(tx, "ha_health", "health", skipped, |r| {
        let h = Health {
            up: col(r, 2)?,
            updated: col(r, 3)?,
        };
        valid(clock.health(&h))?;
        m.add_health(&col::<String>(r, 0)?, &col::<String>(r, 1)?, h);
        Ok(())
    })?;
    // A newer table: absent from older databases, which then serve as before.
    each_row(tx, "ha_service_health", "service_health", skipped, |r| {
        let transport = col::<String>(r, 1)?;
        let service = Service {
            transport: Transport::parse(&transport)
                .ok_or_else(|| format!("transport {} is not udp, tcp or tls", shown(&transport)))?,
            port: u16::try_from(col::<i64>(r, 2)?).map_err(|_| "port out of range".to_owned())?,
        };
        let h = Health {
            up: col(r, 4)?,
            updated: col(r, 5)?,
        };
        valid(clock.health(&h))?;
        m.add_service_health(&col::<String>(r, 0)?, service, &col::<String>(r, 3)?, h);
        Ok(())
    })?;
    each_row(tx, "ha_load", "load", skipped, |r| {
        let max_sessions = match col::<Option<i64>>(r, 2)? {
            Some(_) => Some(count(r, 2)?),
            None => None,
        };
        let l = Load {
            sessions: count(r, 1)?,
            max_sessions,
            updated: col(r, 3)?,
        };
        valid(clock.load(&l))?;
        m.add_load(&col::<String>(r, 0)?, l);
        Ok(())
    })?;
    each_row(tx, "ha_latency", "latency", skipped, |r| {
        let callers = match col::<Option<i64>>(r, 7)? {
            Some(_) => Some(count(r, 7)?),
            None => None,
        };
        let l = Latency {
            ewma_ms: col(r, 2)?,
            mean_ms: col(r, 3)?,
            samples: u64::from(count(r, 4)?),
            updated: col(r, 5)?,
            callers,
        };
        valid(clock.latency(&l))?;
        let source = valid_source(&col::<String>(r, 6)?)?;
        m.add_latency(&col::<String>(r, 0)?, &col::<String>(r, 1)?, source, l);
        Ok(())
    })?;
    each_row(tx, "ha_drain", "drains", skipped, |r| {
        let d = Drain {
            reason: col::<String>(r, 1)?.into(),
            since: col(r, 2)?,
        };
        valid(clock.updated(d.since))?;
        m.add_drain(&col::<String>(r, 0)?, d);
        Ok(())
    })?;
    Ok(m.finish())
}

/// Runs the statement named `statement`, over `table`, if the table
/// exists, handing each row to `f`; rows `f` rejects are listed in
/// `skipped`.
fn each_row(
    tx: &Connection,
    table: &str,
    statement: &str,
    skipped: &mut Skipped,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), String>,
) -> rusqlite::Result<()> {
    if !table_exists(tx, table)? {
        return Ok(());
    }
    // A table of an older layout (a column added since) must not stop the
    // zones from loading; `pdns-ha init` upgrades it.
    let mut stmt = match tx.prepare_cached(named(statement)) {
        Ok(stmt) => stmt,
        Err(e) => {
            skipped.push(|| format!("table {table}: {e} (run pdns-ha init to upgrade it)"));
            return Ok(());
        }
    };
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Err(why) = f(r) {
            // The row's key (target or network) says which row it is.
            let key = r.get_ref(0).ok().and_then(|v| v.as_str().ok()).map(shown);
            skipped.push(|| match key {
                Some(k) => format!("a row of {table} ({k}): {why}"),
                None => format!("a row of {table}: {why}"),
            });
        }
    }
    Ok(())
}

fn col<T: rusqlite::types::FromSql>(r: &rusqlite::Row<'_>, i: usize) -> Result<T, String> {
    r.get(i).map_err(|e| e.to_string())
}

/// A column holding a count: sessions, capacity, samples.
fn count(r: &rusqlite::Row<'_>, i: usize) -> Result<u32, String> {
    let n: i64 = col(r, i)?;
    u32::try_from(n).map_err(|_| format!("column {i} is {n}, out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement the code names exists and compiles against the
    /// schema `init` creates.
    #[test]
    fn every_named_statement_prepares() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../sql/schema.sql"))
            .unwrap();
        for name in [
            "zones_version",
            "records_at_most",
            "domains",
            "records",
            "records_named",
            "domain_by_id",
            "domain_by_name",
            "zone_records",
            "networks",
            "targets",
            "capacity",
            "health",
            "service_health",
            "load",
            "latency",
            "drains",
        ] {
            let sql = named(name);
            assert!(sql.contains("SELECT"), "no statement named {name}");
            conn.prepare(sql).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(named("no_such_statement"), "");
    }
}
