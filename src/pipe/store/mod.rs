//! SQLite access for the pipe: the records index ([`Zones`]: whole for a
//! small database, per name for a large one), the soft-state readings, and
//! the watch that notices a change. One concern per file: the watch
//! (`watch.rs`), the whole read (`load.rs`), the changed readings
//! (`changes.rs`); the memcached overlay is [`crate::state::overlay`].
//!
//! The watch is a fingerprint of the file and its WAL, taken with `stat`
//! every 250 ms: any commit changes it. A database held whole is then read
//! through a connection opened for the read and closed after it, so a pipe
//! process keeps none of SQLite's memory between changes (four or more pipe
//! processes each kept about 190 KiB of it); a database read per name keeps
//! its connection, which every new name needs. Monitors commit readings
//! several times a second, so a change is sorted by kind: the readings are
//! read as the rows the change log `ha_log` names (issue 22: a change costs
//! what changed, not the 160,000 readings of 20,000 networks × 8 targets),
//! while the zones are dropped or re-read only when the `ha_changes` counter
//! that triggers keep on `domains` and `records` moved (`sql/schema.sql`).
//! A database without those tables (plain gsqlite3, or made by an older
//! `pdns-ha init`) is read whole at every commit.
//!
//! A missing, replaced-by-garbage, locked or corrupt file keeps the last good
//! data answering: all of it when held whole, the cached names otherwise.

mod changes;
mod load;
mod read;
mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use rusqlite::{Connection, OptionalExtension};

use crate::dns::Subnet;
use crate::files::FileError;
use crate::pipe::lean;
use crate::pipe::zone::{is_apex, Builder, Zones, WHOLE_LIMIT};
use crate::state::index::Metrics;
use crate::state::memcached::Cache;
use crate::state::overlay::Overlay;
use crate::state::reading::{unix_now, Reading};
use crate::state::validate::DEFAULT_MAX_SKEW;
use crate::text::Limited;

use changes::Cursor;
use load::{
    give_back_memory, named, open_read_only, read_row, skip_reason, table_exists, zones_version,
    Skipped, SKIPPED_KEPT,
};
use read::{read, Loaded};
use watch::{fingerprint, Fingerprint};

/// How often the pipe looks for a changed database. The contract is that an
/// operator's change is served within a second; a check costs two `stat`s,
/// a few microseconds.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// While the database stays broken, repeat the error at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// How long the first load may wait for a writer's lock. Later reads never
/// wait: what is held answers and the next check tries again.
const STARTUP_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the database cannot be read. The caller names the file: the store's log lines
/// and `waiting::diagnose` do. What SQLite said is part of the message, not a `source`
/// (rusqlite's source repeats it, which `{:#}` would print twice).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Nothing SQLite may open at the path: missing, unreadable, or a `-wal` or `-shm`
    /// beside it that is no regular file.
    #[error(transparent)]
    File(#[from] FileError),
    /// A FIFO, device or directory where the watch looked for the file.
    #[error("{0}, not a database file")]
    NotAFile(&'static str),
    /// An SQLite file without PowerDNS's tables: a new or foreign database.
    #[error("not a PowerDNS database (no records or domains table); create one with pdns-ha init")]
    NotPdns,
    /// SQLite refused: not a database, damaged, locked, an I/O error.
    #[error("{0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl StoreError {
    /// Whether SQLite found the file is not a database or is damaged: the fix is a
    /// backup or a new database, not a permission.
    pub fn is_damaged(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        let code = match self {
            Self::Sqlite(e) => e.sqlite_error_code(),
            _ => None,
        };
        matches!(code, Some(NotADatabase | DatabaseCorrupt))
    }
}

/// What the store did, for CMD `status` and the scale tests.
#[derive(Default, Debug, Clone, Copy)]
pub struct StoreStats {
    /// The zones were re-read (held whole) or dropped (per name).
    pub zone_loads: u64,
    /// The readings were brought up to date (whole or by their changes).
    pub reading_loads: u64,
    /// Of those, how many read every reading.
    pub reading_full_loads: u64,
    /// Reading rows read, over all loads, and by the last one.
    pub reading_rows: u64,
    pub reading_rows_last: u64,
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
    /// Where the change log was read up to; `None`: the next read of the
    /// readings is whole.
    cursor: Option<Cursor>,
    zones: Zones,
    /// A zone read for one AXFR when the database is not held whole.
    axfr: Zones,
    /// Asked names, lower-cased for the per-name query.
    name_buf: String,
    /// The readings in SQLite.
    base: Metrics,
    /// memcached's readings, laid over `base`, when `--memcached` is given.
    overlay: Option<Overlay>,
    /// When `refresh` last ran: the time a lookup's network is noted at.
    now: Instant,
    /// Rows left out of the whole index, and of the readings; their
    /// reasons are logged again only when a count changes, not on every
    /// reload.
    skipped_zones: Skipped,
    skipped_readings: Skipped,
    /// The first [`SKIPPED_KEPT`] reasons of both.
    skipped_why: Vec<String>,
    /// When changed rows left out were last logged: a writer that keeps
    /// writing a bad row is reported every `ERROR_LOG_EVERY`, not at every
    /// change.
    changed_skipped_logged: Option<Instant>,
    skipped_log: Limited,
    loaded_at: Instant,
    next_check: Instant,
    /// Set while the database cannot be read: when the error was last
    /// logged and how many checks failed since.
    failing: Option<(Instant, u64)>,
    stats: StoreStats,
    /// What readings' timestamps are judged against.
    clock: fn() -> f64,
    /// `--max-clock-skew`: how far ahead of `clock` a reading may be stamped.
    max_skew: u32,
}

impl Store {
    /// Opens the database and loads it; any failure here is fatal to the
    /// caller, because there is nothing earlier to fall back on.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, unix_now, DEFAULT_MAX_SKEW)
    }

    /// As `open`, judging readings' timestamps by `clock`, with `max_skew` seconds of
    /// tolerance for a writer's clock ahead of it (`--max-clock-skew`): golden transcripts
    /// run at a fixed time, as the backend does.
    pub fn open_with(path: &Path, clock: fn() -> f64, max_skew: u32) -> Result<Self, StoreError> {
        let seen = fingerprint(path)?;
        let conn = open_read_only(path, STARTUP_BUSY_TIMEOUT)?;
        // Asked, not guessed from an error's text.
        if !(table_exists(&conn, "records")? && table_exists(&conn, "domains")?) {
            return Err(StoreError::NotPdns);
        }
        let loaded = read(&conn, true, None, clock(), max_skew)?;
        conn.busy_timeout(Duration::ZERO)?;
        let now = Instant::now();
        let mut store = Self {
            path: path.to_owned(),
            conn: Some(conn),
            seen: Some(seen),
            zones_version: None,
            cursor: None,
            zones: Zones::default(),
            axfr: Zones::default(),
            name_buf: String::new(),
            base: Metrics::default(),
            overlay: None,
            now,
            skipped_zones: Skipped::default(),
            skipped_readings: Skipped::default(),
            skipped_why: Vec::new(),
            changed_skipped_logged: None,
            skipped_log: Limited::default(),
            loaded_at: now,
            next_check: now + CHECK_EVERY,
            failing: None,
            stats: StoreStats::default(),
            clock,
            max_skew,
        };
        store.install(loaded, now);
        store.keep_connection_if_needed();
        Ok(store)
    }

    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// What answers: SQLite's readings, with memcached's newer ones.
    pub fn metrics(&self) -> &Metrics {
        match &self.overlay {
            Some(o) => o.metrics(),
            None => &self.base,
        }
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
        self.overlay.as_ref().map(Overlay::cache)
    }

    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// The readings taken from memcached (the rest came from SQLite).
    pub fn from_memcached(&self) -> &[Reading] {
        self.overlay.as_ref().map_or(&[], |o| o.readings())
    }

    /// A client is being answered: with memcached, its network's readings
    /// are fetched from now on; for a network not fetched yet, before this
    /// answer, unless this lookup's refresh fetched already (one fetch per
    /// lookup at most) or another new network did so very recently.
    pub fn asked_from(&mut self, client: Subnet) {
        if let Some(o) = &mut self.overlay {
            if let Some(n) = self.base.network_for(client) {
                o.asked(&n.cidr, self.now);
                if o.due(self.now) && !o.fetched_at(self.now) {
                    o.fetch(&self.base, self.now);
                }
            }
        }
    }

    /// Makes sure `zones()` can answer for `qname`: held whole it always
    /// can; per name, a name not cached yet is read now, one indexed query.
    /// An error means the database could not be read for it (the caller
    /// answers FAIL: pdns must not cache "no such name" for an outage).
    pub fn prepare(&mut self, qname: &str) -> Result<(), StoreError> {
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
        let result = read().map_err(StoreError::Sqlite);
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
    pub fn zone_for_axfr(&mut self, id: i64, zone: Option<&str>) -> Result<&Zones, StoreError> {
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
        self.axfr = read()?;
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
        self.now = now;
        if let Some(o) = &mut self.overlay {
            if o.due(now) {
                o.fetch(&self.base, now);
                // Once a second: the keys, the replies and the merge are freed again.
                lean::give_back();
            }
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
    /// at once: those of the networks asked for (the pipe).
    pub fn with_cache(self, cache: Cache) -> Self {
        self.with_overlay(Overlay::new(cache))
    }

    /// As `with_cache`, fetching every known network's readings (`status`).
    pub fn with_cache_for_all(self, cache: Cache) -> Self {
        self.with_overlay(Overlay::new(cache).fetching_all())
    }

    fn with_overlay(mut self, o: Overlay) -> Self {
        let mut o = o.with_max_skew(self.max_skew);
        o.fetch(&self.base, Instant::now());
        self.overlay = Some(o);
        self
    }

    /// Forces a full re-read at the next `refresh` (CMD `reload`).
    pub fn expire(&mut self) {
        self.seen = None;
        self.zones_version = None;
        self.cursor = None;
        self.next_check = Instant::now();
    }

    /// Reads what changed since the last fingerprint. The fingerprint is
    /// taken before the read and kept only after it succeeded, so a commit
    /// during the read is read again next time, and a failed read is tried
    /// again at every check until the file heals.
    fn check(&mut self, now: Instant) -> Result<(), StoreError> {
        let fp = fingerprint(&self.path)?;
        if self.seen == Some(fp) {
            return Ok(());
        }
        let replaced = self.seen.is_some_and(|s| fp.replaces(&s));
        let opened = match (&self.conn, replaced) {
            (Some(_), false) => None,
            _ => Some(open_read_only(&self.path, Duration::ZERO)?),
        };
        let Some(conn) = opened.as_ref().or(self.conn.as_ref()) else {
            unreachable!("a connection is either held or just opened")
        };
        let zones_changed =
            replaced || self.zones_version.is_none() || zones_version(conn)? != self.zones_version;
        let held = match (replaced, self.cursor) {
            (false, Some(c)) => Some((&mut self.base, c)),
            _ => None,
        };
        let loaded = match read(conn, zones_changed, held, (self.clock)(), self.max_skew) {
            Ok(l) => l,
            Err(e) => {
                // Changes applied before the failure are applied again
                // (they are idempotent), or the next read is whole.
                self.cursor = None;
                return Err(e.into());
            }
        };
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
    /// gives back what reading took. A connection kept takes SQLite back to
    /// the process heap (`lean::sqlite_heap_join`): it is closed and opened
    /// again there, and if that fails the next check reads everything again.
    fn keep_connection_if_needed(&mut self) {
        if self.zones.is_whole() {
            self.conn = None;
            // SAFETY: where SQLite's heap is apart, this store holds the process's only
            // connection (`lean::sqlite_heap_apart`'s contract), and it is closed.
            unsafe { lean::sqlite_heap_give_back() };
        } else if lean::sqlite_heap_is_apart() {
            self.conn = None;
            // SAFETY: as above.
            unsafe { lean::sqlite_heap_join() };
            self.conn = open_read_only(&self.path, Duration::ZERO).ok();
            if self.conn.is_none() {
                self.seen = None;
            }
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
        self.cursor = loaded.cursor;
        let due =
            (self.changed_skipped_logged).is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY);
        if loaded.changed_skipped.count > 0 && due {
            loaded.changed_skipped.log();
            self.changed_skipped_logged = Some(now);
        }
        // A commit that touched no reading (an edit of the zones) is no
        // reading load: the counters say what reading cost.
        if loaded.metrics.is_some() || loaded.rows > 0 {
            self.stats.reading_loads += 1;
            self.stats.reading_rows += loaded.rows;
            self.stats.reading_rows_last = loaded.rows;
        }
        if let Some((metrics, skipped)) = loaded.metrics {
            if skipped.count != self.skipped_readings.count {
                skipped.log();
            }
            self.skipped_readings = skipped;
            self.base = metrics;
            self.stats.reading_full_loads += 1;
        }
        self.skipped_why = (self.skipped_zones.kept.iter())
            .chain(&self.skipped_readings.kept)
            .take(SKIPPED_KEPT)
            .cloned()
            .collect();
        if let Some(o) = &mut self.overlay {
            o.rebuild(&self.base);
        }
    }

    fn report(&mut self, now: Instant, what: &StoreError) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::reading::Source;

    const NOW: f64 = 2_000_000_000.0;

    fn now() -> f64 {
        NOW
    }

    fn temp_db(name: &str) -> (PathBuf, Connection) {
        let dir = std::env::temp_dir().join(format!("pdns-ha-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ha.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(include_str!("../../../sql/schema.sql"))
            .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO domains (id, name, type) VALUES (1, 'example.com', 'NATIVE');
             INSERT INTO records (domain_id, name, type, content, ttl)
               VALUES (1, 'example.com', 'SOA', 'ns. h. 1 2 3 4 5', 300);
             INSERT INTO ha_targets (name) VALUES ('sip1.example.com'), ('sip2.example.com');
             WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 99)
             INSERT INTO ha_networks (cidr, name) SELECT '10.0.' || n || '.0/24', 'n' || n FROM i;
             INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples, updated)
               SELECT cidr, t.name, 'observe', 10, 10, 1, {}
               FROM ha_networks, ha_targets t;",
            NOW - 5.0
        ))
        .unwrap();
        (path, conn)
    }

    fn ewma(s: &Store, network: &str, target: &str) -> Option<f64> {
        s.metrics()
            .latency(network, target)
            .find(|(src, _)| *src == Source::Observe)
            .map(|(_, l)| l.ewma_ms)
    }

    /// The watch reads nothing while nothing changed, the rows a change of
    /// readings touched when they did, and the zones only when they moved.
    #[test]
    fn the_watch_reads_what_changed() {
        let (path, conn) = temp_db("watch");
        let mut s = Store::open_with(&path, now, DEFAULT_MAX_SKEW).unwrap();
        let rows = s.stats().reading_rows;
        assert!(rows >= 200, "{rows}");
        assert_eq!(s.stats().reading_full_loads, 1);
        let mut t = Instant::now();
        let mut tick = |s: &mut Store| {
            t += CHECK_EVERY;
            s.refresh(t);
        };
        // Nothing changed: no check reads a row or counts a load.
        let loads = s.stats().reading_loads;
        tick(&mut s);
        tick(&mut s);
        assert_eq!(
            s.stats().reading_loads,
            loads,
            "nothing changed, nothing read"
        );

        conn.execute(
            "UPDATE ha_latency SET ewma_ms = 3 WHERE network = '10.0.7.0/24'
             AND target = 'sip2.example.com'",
            [],
        )
        .unwrap();
        tick(&mut s);
        let st = s.stats();
        assert_eq!((st.reading_loads, st.reading_rows_last), (loads + 1, 1));
        assert_eq!(ewma(&s, "10.0.7.0/24", "sip2.example.com"), Some(3.0));
        assert_eq!(ewma(&s, "10.0.7.0/24", "sip1.example.com"), Some(10.0));

        // A new key and a deleted one: two rows.
        conn.execute_batch(&format!(
            "INSERT INTO ha_latency (network, target, source, mean_ms, ewma_ms, samples, updated)
               VALUES ('*', 'sip1.example.com', 'monitor', 7, 7, 1, {NOW});
             DELETE FROM ha_latency WHERE network = '10.0.8.0/24' AND target = 'sip1.example.com';"
        ))
        .unwrap();
        tick(&mut s);
        assert_eq!(s.stats().reading_rows_last, 2);
        assert_eq!(ewma(&s, "10.0.8.0/24", "sip1.example.com"), None);
        assert!(s.metrics().latency("*", "SIP1.example.com").count() == 1);

        // An edit of the zones re-reads them, and no reading.
        conn.execute("UPDATE records SET ttl = 60", []).unwrap();
        tick(&mut s);
        let st = s.stats();
        assert_eq!((st.zone_loads, st.reading_loads), (2, loads + 2));
        assert_eq!(st.reading_full_loads, 1);

        // CMD reload reads everything again.
        s.expire();
        s.refresh(t + CHECK_EVERY);
        assert_eq!(s.stats().reading_full_loads, 2);
        assert_eq!(ewma(&s, "10.0.7.0/24", "sip2.example.com"), Some(3.0));
        drop(conn);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A database whose change log is gone (an older schema) is read whole
    /// at every change, as before the log existed.
    #[test]
    fn without_the_log_every_change_reads_everything() {
        let (path, conn) = temp_db("nolog");
        let triggers: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE name LIKE 'ha_log_%' AND type = 'trigger'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for t in triggers {
            conn.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
        }
        conn.execute_batch("DROP TABLE ha_log").unwrap();
        let mut s = Store::open_with(&path, now, DEFAULT_MAX_SKEW).unwrap();
        let rows = s.stats().reading_rows;
        conn.execute("UPDATE ha_latency SET ewma_ms = 4 WHERE rowid = 1", [])
            .unwrap();
        s.refresh(Instant::now() + CHECK_EVERY);
        let st = s.stats();
        assert_eq!(st.reading_full_loads, 2);
        assert_eq!(st.reading_rows_last, rows);
        drop(conn);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
