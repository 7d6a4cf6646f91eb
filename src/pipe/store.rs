//! SQLite access for the pipe: a read-only connection, the snapshot of the
//! zones it loads, and the watch that reloads it when an operator changes
//! the database, while a missing, locked or corrupt file keeps the last good
//! snapshot answering.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use rusqlite::{Connection, OpenFlags};

use crate::pipe::zone::{Builder, Row, Skip, Zones};
use crate::state::index::Metrics;
use crate::state::memcached::Cache;
use crate::state::reading::{health_key, latency_key, load_key, Reading};
use crate::state::reading::{Health, Latency, Load, ANY_NETWORK};
use crate::state::validate::Clock;
use crate::text::shown;

/// How often the pipe looks for a changed database. The contract is that an
/// operator's change is served within a second; a check costs one `stat`
/// and one `PRAGMA data_version`, a few microseconds.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// While the database stays broken, repeat the error at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// How long the first load may wait for a writer's lock. Later loads never
/// wait: the last snapshot answers and the next check tries again.
const STARTUP_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the pipe reads the shared readings from memcached: about as
/// fresh as SQLite's, one round trip per server per second.
const FETCH_EVERY: Duration = Duration::from_secs(1);

const DOMAINS_SQL: &str = include_str!("../../sql/pipe_domains.sql");
const RECORDS_SQL: &str = include_str!("../../sql/pipe_records.sql");
const METRICS_SQL: &str = include_str!("../../sql/pipe_metrics.sql");

/// Skipped rows whose reasons are kept (for `status` and `explain`) and
/// logged; the rest are only counted, so that a table full of bad rows
/// cannot fill the log or the memory of every pipe process.
const SKIPPED_KEPT: usize = 20;

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

/// Identity of the file behind the path: a new inode means the operator
/// replaced the file, and the open connection still reads the old one.
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

pub struct Store {
    path: PathBuf,
    conn: Connection,
    file: (u64, u64),
    data_version: i64,
    zones: Zones,
    /// The readings in SQLite.
    base: Metrics,
    /// `base` with memcached's newer readings laid over it: what answers.
    metrics: Metrics,
    cache: Option<Cache>,
    /// The readings last fetched from memcached.
    overlay: Vec<Reading>,
    next_fetch: Instant,
    /// Rows left out of the current snapshot; their reasons are logged
    /// again only when this changes, not on every reload.
    skipped: usize,
    /// The first [`SKIPPED_KEPT`] reasons.
    skipped_why: Vec<String>,
    loaded_at: Instant,
    next_check: Instant,
    /// Set while the database cannot be read: when the error was last
    /// logged and how many checks failed since.
    failing: Option<(Instant, u64)>,
}

impl Store {
    /// Opens the database and loads it; any failure here is fatal to the
    /// caller, because there is no earlier snapshot to fall back on.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |what: String| StoreError {
            path: path.to_owned(),
            what,
        };
        let file = file_id(path).map_err(|e| err(e.to_string()))?;
        let conn = open_read_only(path, STARTUP_BUSY_TIMEOUT).map_err(err)?;
        let loaded = load(&conn).map_err(|e| match e.contains("no such table") {
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
            conn,
            file,
            data_version: loaded.data_version,
            zones: Zones::default(),
            base: Metrics::default(),
            metrics: Metrics::default(),
            cache: None,
            overlay: Vec::new(),
            next_fetch: now,
            skipped: usize::MAX,
            skipped_why: Vec::new(),
            loaded_at: now,
            next_check: now + CHECK_EVERY,
            failing: None,
        };
        store.install(loaded, now);
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

    pub fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    /// How many rows the snapshot left out, and the first reasons.
    pub fn skipped(&self) -> (usize, &[String]) {
        (self.skipped, &self.skipped_why)
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The readings taken from memcached (the rest came from SQLite).
    pub fn from_memcached(&self) -> &[Reading] {
        &self.overlay
    }

    /// Reloads the snapshot if the database changed, at most every
    /// `CHECK_EVERY`. Never fails: on error the old snapshot stays.
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

    /// Fetches every reading the answers could use: health and load per
    /// target, latency per target from each known network and from `*`.
    fn fetch(&mut self, now: Instant) {
        self.next_fetch = now + FETCH_EVERY;
        let Some(cache) = &mut self.cache else { return };
        let p = &cache.prefix;
        let mut keys = Vec::new();
        let networks = self
            .base
            .networks()
            .iter()
            .map(|n| &*n.cidr)
            .chain([ANY_NETWORK]);
        for t in self.base.targets() {
            keys.push(health_key(p, t));
            keys.push(load_key(p, t));
        }
        for n in networks {
            keys.extend(self.base.targets().iter().map(|t| latency_key(p, n, t)));
        }
        self.overlay = cache.fetch(&keys);
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.metrics = self.base.clone();
        for r in &self.overlay {
            self.metrics.overlay(r);
        }
    }

    /// Forces a reload at the next `refresh` (CMD `reload`).
    pub fn expire(&mut self) {
        self.data_version = i64::MIN;
        self.next_check = Instant::now();
    }

    fn check(&mut self, now: Instant) -> Result<(), String> {
        let file = file_id(&self.path).map_err(|e| e.to_string())?;
        if file != self.file {
            let conn = open_read_only(&self.path, Duration::ZERO)?;
            let loaded = load(&conn)?;
            info!("database {} was replaced; reopened it", self.path.display());
            (self.conn, self.file) = (conn, file);
            self.install(loaded, now);
            return Ok(());
        }
        if data_version(&self.conn)? != self.data_version {
            let loaded = load(&self.conn)?;
            self.install(loaded, now);
        }
        Ok(())
    }

    fn install(&mut self, loaded: Loaded, now: Instant) {
        let z = &loaded.zones;
        info!(
            "loaded {}: {} zones, {} records",
            self.path.display(),
            z.zone_count(),
            z.record_count()
        );
        if loaded.skipped != self.skipped {
            for why in &loaded.skipped_why {
                warn!("not served: {why}");
            }
            if let Some(more) = loaded.skipped.checked_sub(loaded.skipped_why.len()) {
                if more > 0 {
                    warn!("not served: {more} more rows");
                }
            }
        }
        self.skipped = loaded.skipped;
        self.skipped_why = loaded.skipped_why;
        self.data_version = loaded.data_version;
        self.zones = loaded.zones;
        self.base = loaded.metrics;
        self.rebuild();
        self.loaded_at = now;
    }

    fn report(&mut self, now: Instant, what: &str) {
        let (last, n) = self.failing.get_or_insert((now, 0));
        *n += 1;
        if *n == 1 || now.duration_since(*last) >= ERROR_LOG_EVERY {
            error!(
                "database {}: {what}; answering from the copy loaded {:.0?} ago ({n} failed checks)",
                self.path.display(),
                now.duration_since(self.loaded_at),
            );
            *last = now;
        }
    }
}

fn open_read_only(path: &Path, busy: Duration) -> Result<Connection, String> {
    // A FIFO, device or directory at the path is an outage like a missing
    // file, found without blocking; SQLite's own open would hang on a FIFO.
    crate::files::check_database(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    conn.busy_timeout(busy).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn data_version(conn: &Connection) -> Result<i64, String> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())
}

/// Reads every servable record in one read transaction, so a snapshot never
/// mixes two versions of the database. A row that cannot be served is left
/// out with a reason; it never stops the rest from loading.
fn load(conn: &Connection) -> Result<Loaded, String> {
    let run = || -> rusqlite::Result<Loaded> {
        let tx = conn.unchecked_transaction()?;
        let data_version = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let mut b = Builder::default();
        let mut skipped = Skipped::default();
        let mut stmt = tx.prepare(DOMAINS_SQL)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            match (r.get(0), r.get_ref(1)?.as_str()) {
                (Ok(id), Ok(name)) => b.domain(id, name),
                _ => skipped.push(|| "a domains row whose id or name is not readable".to_owned()),
            }
        }
        drop(rows);
        let mut stmt = tx.prepare(RECORDS_SQL)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let row = || -> rusqlite::Result<Row<'_>> {
                Ok(Row {
                    name: r.get_ref(0)?.as_str()?,
                    rtype: r.get_ref(1)?.as_str()?,
                    content: r.get_ref(2)?.as_str_or_null()?.unwrap_or(""),
                    ttl: r.get(3)?,
                    prio: r.get(4)?,
                    domain_id: r.get(5)?,
                    auth: r.get(6)?,
                })
            };
            let why = match row() {
                Err(e) => format!("a records row is not readable ({e})"),
                Ok(row) => match b.record(&row) {
                    Ok(()) => continue,
                    Err(skip) => {
                        let what = match skip {
                            Skip::Unservable => "a TAB or line break cannot be sent to pdns",
                            Skip::NoPriority => "MX/SRV without a priority",
                            Skip::BadPriority => "priority out of range (0 to 65535)",
                        };
                        // Names and contents escaped and cut: a 10 MB TXT
                        // must not become a 10 MB log line.
                        skipped.push(|| {
                            format!(
                                "record {} {} \"{}\": {what}",
                                shown(row.name),
                                shown(row.rtype),
                                shown(row.content)
                            )
                        });
                        continue;
                    }
                },
            };
            skipped.push(|| why);
        }
        let metrics = load_metrics(&tx, &Clock::now(), &mut skipped)?;
        Ok(Loaded {
            metrics,
            zones: b.finish(),
            data_version,
            skipped: skipped.count,
            skipped_why: skipped.kept,
        })
    };
    run().map_err(|e| e.to_string())
}

struct Loaded {
    zones: Zones,
    metrics: Metrics,
    data_version: i64,
    skipped: usize,
    /// Why rows were left out, one line each, the first few.
    skipped_why: Vec<String>,
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
    let mut sql = METRICS_SQL
        .split(';')
        .filter_map(|s| s.find("SELECT").map(|i| &s[i..]));
    let mut next = || sql.next().unwrap_or("");
    each_row(tx, next(), skipped, |r| {
        m.add_network(&col::<String>(r, 0)?, &col::<String>(r, 1)?)
    })?;
    each_row(tx, next(), skipped, |r| {
        m.add_target(&col::<String>(r, 0)?);
        Ok(())
    })?;
    each_row(tx, next(), skipped, |r| {
        m.add_capacity(&col::<String>(r, 0)?, count(r, 1)?);
        Ok(())
    })?;
    let valid = |v: Result<(), crate::state::validate::Invalid>| v.map_err(|e| e.to_string());
    each_row(tx, next(), skipped, |r| {
        let h = Health {
            up: col(r, 1)?,
            updated: col(r, 2)?,
        };
        valid(clock.health(&h))?;
        m.add_health(&col::<String>(r, 0)?, h);
        Ok(())
    })?;
    each_row(tx, next(), skipped, |r| {
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
    each_row(tx, next(), skipped, |r| {
        let l = Latency {
            ewma_ms: col(r, 2)?,
            mean_ms: col(r, 3)?,
            samples: u64::from(count(r, 4)?),
            updated: col(r, 5)?,
        };
        valid(clock.latency(&l))?;
        m.add_latency(&col::<String>(r, 0)?, &col::<String>(r, 1)?, l);
        Ok(())
    })?;
    Ok(m.finish())
}

/// Runs one `SELECT … FROM table` if the table exists, handing each row to
/// `f`; rows `f` rejects are listed in `skipped`.
fn each_row(
    tx: &Connection,
    sql: &str,
    skipped: &mut Skipped,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), String>,
) -> rusqlite::Result<()> {
    let table = sql
        .split(" FROM ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("");
    let exists: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let mut stmt = tx.prepare(sql)?;
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
