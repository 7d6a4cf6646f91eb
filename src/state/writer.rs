//! Writing soft state: the validated readings that `pdns-ha metric` pushes
//! and `pdns-ha monitor` measures, into the `ha_` tables. Readings are
//! stamped with the time they were written; the pipe treats old ones as
//! unknown.

use std::path::Path;
use std::time::Duration;

use std::cell::RefCell;

use rusqlite::{params, Connection, OptionalExtension};

use crate::state::memcached::Cache;
use crate::state::reading::Reading;
use crate::state::reading::{Health, Latency, Load, Source};
use crate::state::service::Service;

use crate::dns::Subnet;
pub use crate::state::estimate::AntiFlap;
use crate::state::estimate::Average;
use crate::state::reading::{target_key, unix_now, ANY_NETWORK};
use crate::state::validate::{self, Clock};
use crate::text::shown;

const SCHEMA: &str = include_str!("../../sql/schema.sql");

/// Writers wait this long for each other (the monitor and an operator's
/// `metric` may write at once). Readers never wait: WAL.
const WRITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `ha_latency` was made before FreeSWITCH readings: its own CHECK names the
/// sources it takes, and one without `freeswitch` refuses them. What `init` upgrades, and
/// what the writer refuses to start on until it has.
pub fn latency_predates_freeswitch(conn: &Connection) -> rusqlite::Result<bool> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ha_latency'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(sql.is_some_and(|s| s.contains("'metric'") && !s.contains("'freeswitch'")))
}

/// What can go wrong writing readings, by who can fix it: the database (missing, locked,
/// made by an older pdns-ha: the operator's `init` or a retry), or what was asked (an
/// unknown target or network, a value out of range: the caller's input). SQLite's words
/// are the message, not a `source`: rusqlite's source repeats them, which `{:#}` would
/// print twice.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// SQLite refused: locked past the busy timeout, I/O, a constraint.
    #[error("{0}")]
    Db(rusqlite::Error),
    /// The database is not one this pdns-ha can write; the message says what to run.
    #[error("{0}")]
    Database(String),
    /// The caller named a target or network the database does not know, or gave a
    /// value out of range; the message names it.
    #[error("{0}")]
    Refused(String),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e)
    }
}

impl From<validate::Invalid> for WriteError {
    fn from(e: validate::Invalid) -> Self {
        Self::Refused(e.to_string())
    }
}

pub struct Writer {
    conn: Connection,
    /// Where readings are also published for the other DNS nodes.
    cache: RefCell<Option<Cache>>,
    /// Whose health verdicts these are (`--monitor-id`).
    monitor: String,
    /// Whether this process listed `monitor` in memcached yet.
    registered: std::cell::Cell<bool>,
}

/// The default `--monitor-id`: this host's name, so that monitors on
/// different hosts never share a vote by accident.
pub fn default_monitor_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    match rc == 0 && crate::state::reading::valid_monitor_id(&name) {
        true => name,
        false => "monitor".to_owned(),
    }
}

/// A drain as `status` and `drain` show it.
pub struct DrainRow {
    pub target: String,
    pub reason: String,
    pub since: f64,
}

/// Longest drain reason kept: a ticket reference, not an essay.
pub const MAX_REASON: usize = 200;

/// An `ha_targets` row as the monitor reads it.
pub struct TargetRow {
    pub name: String,
    pub probe: String,
    pub probe_address: Option<String>,
    pub load_source: String,
    pub load_address: Option<String>,
    pub load_secret: Option<String>,
    /// Where the Event Socket password is, when not in `load_secret`.
    pub load_secret_file: Option<String>,
    pub probe_ok_codes: Option<String>,
    /// Capacity set by the operator, for targets whose load source reports none.
    pub max_sessions: Option<u32>,
    /// CA file for the target's TLS services (`_sips._tcp`); `None`: the system roots.
    pub probe_ca_file: Option<String>,
}

impl Writer {
    pub fn open(db: &Path, cache: Option<Cache>) -> Result<Self, WriteError> {
        let at =
            |e: rusqlite::Error| WriteError::Database(format!("database {}: {e}", db.display()));
        if !db.exists() {
            return Err(WriteError::Database(format!(
                "database {}: no such file (create it with pdns-ha init)",
                db.display()
            )));
        }
        // A FIFO at the path would hang the writer in open(2).
        crate::files::check_database(db)
            .map_err(|e| WriteError::Database(format!("database {}: {e}", db.display())))?;
        let conn = Connection::open(db).map_err(at)?;
        conn.busy_timeout(WRITE_BUSY_TIMEOUT).map_err(at)?;
        let has_ha: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'ha_targets'",
                [],
                |r| r.get(0),
            )
            .map_err(at)?;
        if !has_ha {
            return Err(WriteError::Database(format!(
                "database {}: no ha_targets table (run pdns-ha init on it first)",
                db.display()
            )));
        }
        // A database made by an older pdns-ha: say how to upgrade it rather
        // than fail on the first statement that names a newer column.
        let newest = [
            ("ha_targets", "probe_ok_codes"),
            ("ha_targets", "load_secret_file"),
            ("ha_health", "monitor"),
            ("ha_load", "monitor"),
            ("ha_latency", "monitor"),
            ("ha_latency", "source"),
            ("ha_targets", "probe_ca_file"),
            ("ha_service_health", "transport"),
            ("ha_quality", "mos"),
        ];
        for (table, column) in newest {
            let has: bool = conn
                .query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )
                .map_err(at)?;
            if !has {
                return Err(WriteError::Database(format!(
                    "database {}: made by an older pdns-ha ({table} has no {column}); \
                     run pdns-ha init --db {} to upgrade it",
                    db.display(),
                    db.display()
                )));
            }
        }
        if latency_predates_freeswitch(&conn).map_err(at)? {
            return Err(WriteError::Database(format!(
                "database {}: made by an older pdns-ha (ha_latency takes no freeswitch \
                 readings); run pdns-ha init --db {} to upgrade it",
                db.display(),
                db.display()
            )));
        }
        Ok(Self {
            conn,
            cache: RefCell::new(cache),
            monitor: default_monitor_id(),
            registered: std::cell::Cell::new(false),
        })
    }

    /// Health verdicts from now on are `id`'s.
    pub fn with_monitor(mut self, id: &str) -> Self {
        id.clone_into(&mut self.monitor);
        self
    }

    pub fn monitor(&self) -> &str {
        &self.monitor
    }

    /// Lists this monitor in memcached, so the pipes fetch its verdicts.
    /// The monitor does it every round, so a restarted memcached learns it
    /// again; `metric health` once, before its first verdict.
    pub fn register_monitor(&self) {
        if let Some(c) = self.cache.borrow_mut().as_mut() {
            c.register_monitor(&self.monitor);
            self.registered.set(true);
        }
    }

    fn publish(&self, r: Reading) {
        // Stamped by this host's clock, so never in the future; checked all
        // the same, so that what is shared passes the check every reader makes.
        if let Err(why) = Clock::now().reading(&r) {
            log::warn!("not published to memcached: {why}");
            return;
        }
        if let Some(c) = self.cache.borrow_mut().as_mut() {
            c.publish(&r);
        }
    }

    pub fn targets(&self) -> Result<Vec<TargetRow>, WriteError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, probe, probe_address, load_source, load_address, load_secret,
                        probe_ok_codes, max_sessions, load_secret_file, probe_ca_file
                 FROM ha_targets ORDER BY name",
            )
            .map_err(WriteError::from)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TargetRow {
                    name: r.get(0)?,
                    probe: r.get(1)?,
                    probe_address: r.get(2)?,
                    load_source: r.get(3)?,
                    load_address: r.get(4)?,
                    load_secret: r.get(5)?,
                    probe_ok_codes: r.get(6)?,
                    // Out of range (a hand edit): no capacity, never a failed round.
                    max_sessions: r
                        .get::<_, Option<i64>>(7)?
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|&n| n > 0),
                    load_secret_file: r.get(8)?,
                    probe_ca_file: r.get(9)?,
                })
            })
            .map_err(WriteError::from)?;
        rows.collect::<Result<_, _>>().map_err(WriteError::from)
    }

    /// Every enabled SRV record whose owner starts with `_sip` (as pdns's tools store
    /// names: lower case) as (owner name, content): the services to probe. A range of
    /// gsqlite3's (name, type) index, so a round does not scan a large zone.
    pub fn srv_records(&self) -> Result<Vec<(String, String)>, WriteError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT CAST(name AS TEXT), CAST(content AS TEXT) FROM records
                 WHERE name >= '_sip' AND name < '_siq' AND type = 'SRV' AND disabled = 0
                   AND content IS NOT NULL
                 ORDER BY name, id",
            )
            .map_err(WriteError::from)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(WriteError::from)?;
        rows.collect::<Result<_, _>>().map_err(WriteError::from)
    }

    /// One probe result of an advertised service, through the same anti-flap thresholds
    /// as [`Self::probe`]. Returns the state before (`None`: none yet) and after it.
    pub fn service_probe(
        &self,
        target: &str,
        service: Service,
        ok: bool,
        reason: &str,
        cert_expiry: Option<f64>,
        t: AntiFlap,
    ) -> Result<(Option<bool>, bool), WriteError> {
        let (transport, port) = (service.transport.as_str(), service.port);
        let old: Option<(bool, u32, u32)> = self
            .conn
            .query_row(
                "SELECT up, ok_streak, fail_streak FROM ha_service_health
                 WHERE target = ?1 AND transport = ?2 AND port = ?3 AND monitor = ?4",
                params![target, transport, port, self.monitor],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(WriteError::from)?;
        let before = old.map(|(up, _, _)| up);
        let (up, oks, fails) = t.step(old, ok);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ha_service_health
                   (target, transport, port, monitor, up, ok_streak, fail_streak, reason,
                    cert_expiry, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    target,
                    transport,
                    port,
                    self.monitor,
                    up,
                    oks,
                    fails,
                    reason,
                    cert_expiry,
                    unix_now()
                ],
            )
            .map_err(WriteError::from)?;
        Ok((before, up))
    }

    /// Forgets this monitor's rows of services no longer advertised, so that `status`
    /// does not show them and the pipe never reads them.
    pub fn retain_services(&self, keep: &[(String, Service)]) -> Result<(), WriteError> {
        let mut stmt = self
            .conn
            .prepare("SELECT target, transport, port FROM ha_service_health WHERE monitor = ?1")
            .map_err(WriteError::from)?;
        let rows: Vec<(String, String, i64)> = stmt
            .query_map([&self.monitor], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(WriteError::from)?
            .collect::<Result<_, _>>()
            .map_err(WriteError::from)?;
        for (target, transport, port) in rows {
            let kept = keep.iter().any(|(t, s)| {
                t.eq_ignore_ascii_case(&target)
                    && s.transport.as_str() == transport
                    && i64::from(s.port) == port
            });
            if !kept {
                self.conn
                    .execute(
                        "DELETE FROM ha_service_health
                         WHERE target = ?1 AND transport = ?2 AND port = ?3 AND monitor = ?4",
                        params![target, transport, port, self.monitor],
                    )
                    .map_err(WriteError::from)?;
            }
        }
        Ok(())
    }

    /// Every `ha_networks` row as (cidr, name), for grouping callers the way the pipe does.
    pub fn networks(&self) -> Result<Vec<(String, String)>, WriteError> {
        let mut stmt = self
            .conn
            .prepare("SELECT cidr, name FROM ha_networks ORDER BY cidr")
            .map_err(WriteError::from)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(WriteError::from)?;
        rows.collect::<Result<_, _>>().map_err(WriteError::from)
    }

    /// Runs `f` in one write transaction: readers see all of it or none.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(WriteError::from)?;
        match f(self) {
            Ok(v) => {
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(WriteError::from)?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The target's key as `ha_targets` has it; metrics for targets that
    /// are not there would be read by nobody.
    pub fn target(&self, name: &str) -> Result<String, WriteError> {
        let key = target_key(name);
        let found: Option<String> = self
            .conn
            .query_row("SELECT name FROM ha_targets WHERE name = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(WriteError::from)?;
        found.ok_or_else(|| {
            WriteError::Refused(format!("target \"{}\" is not in ha_targets", shown(name)))
        })
    }

    /// `*`, or a network listed in `ha_networks` (as written there).
    pub fn network(&self, cidr: &str) -> Result<String, WriteError> {
        if cidr == ANY_NETWORK {
            return Ok(cidr.to_owned());
        }
        let want = Subnet::parse(cidr)
            .filter(Subnet::is_network)
            .ok_or_else(|| {
                WriteError::Refused(format!(
                    "network \"{}\" is not '*' or an address/prefix like 192.0.2.0/24",
                    shown(cidr)
                ))
            })?;
        let mut stmt = self
            .conn
            .prepare("SELECT cidr FROM ha_networks")
            .map_err(WriteError::from)?;
        let known = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(WriteError::from)?
            .filter_map(Result::ok)
            .find(|c| Subnet::parse(c.trim()) == Some(want));
        known.ok_or_else(|| {
            WriteError::Refused(format!("network \"{}\" is not in ha_networks", shown(cidr)))
        })
    }

    /// The CIDR of the known network `name` names: an `ha_networks` name,
    /// or its CIDR (as [`Self::network`] takes it). `*` is the monitor's own
    /// host, or anywhere. A name that several rows share is refused, not
    /// guessed. The monitor's `--network` and `metric latency --network`.
    pub fn vantage(&self, name: &str) -> Result<String, WriteError> {
        let mut stmt = self
            .conn
            .prepare("SELECT cidr FROM ha_networks WHERE name = ?1 ORDER BY cidr")
            .map_err(WriteError::from)?;
        let named: Vec<String> = stmt
            .query_map([name], |r| r.get(0))
            .map_err(WriteError::from)?
            .collect::<Result<_, _>>()
            .map_err(WriteError::from)?;
        match named.as_slice() {
            [cidr] => Ok(cidr.clone()),
            [] => self.network(name).map_err(|_| {
                WriteError::Refused(format!(
                    "--network \"{}\" is not a name or CIDR in ha_networks",
                    shown(name)
                ))
            }),
            many => Err(WriteError::Refused(format!(
                "--network \"{}\" names {} networks ({}); give the CIDR",
                shown(name),
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// One latency sample from `source`: Welford mean plus an EWMA, as
    /// Kamailio's dispatcher keeps them, in the source's own row. `callers`:
    /// how many distinct callers the sample stands for (observe), which the
    /// pipe weighs it by when it fuses the sources. Returns the reading as
    /// stored, so that the monitor and `observe` export the average the
    /// pipe ranks by.
    pub fn latency(
        &self,
        network: &str,
        target: &str,
        source: Source,
        ms: f64,
        callers: Option<u32>,
    ) -> Result<Latency, WriteError> {
        validate::latency_ms(ms).map_err(WriteError::from)?;
        // Cached statements: observe writes one row per network in a round,
        // 20,000 of them at the scale of issue 22.
        let old: Option<(f64, f64, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT mean_ms, ewma_ms, samples, timeouts FROM ha_latency
                 WHERE network = ?1 AND target = ?2 AND source = ?3",
            )
            .and_then(|mut s| {
                s.query_row([network, target, source.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
            })
            .optional()
            .map_err(WriteError::from)?;
        // A stored row out of range (written by hand, or by a broken
        // writer) is not averaged into: the series starts again here.
        let old = old.filter(|&(mean, ewma, n, timeouts)| {
            let ok = validate::latency_ms(mean)
                .and(validate::latency_ms(ewma))
                .and(validate::count(n.max(0) as u64))
                .and(validate::count(timeouts.max(0) as u64));
            if let Err(why) = ok {
                log::warn!(
                    "latency {} from {}: stored row skipped: {why}; starting over",
                    shown(target),
                    shown(network)
                );
            }
            ok.is_ok() && n >= 0 && timeouts >= 0
        });
        let (avg, timeouts) = match old {
            None => (Average::first(ms), 0),
            Some((mean_ms, ewma_ms, samples, timeouts)) => {
                let stored = Average {
                    mean_ms,
                    ewma_ms,
                    samples,
                };
                (stored.with(ms), timeouts)
            }
        };
        let (mean, ewma, n) = (avg.mean_ms, avg.ewma_ms, avg.samples);
        let updated = unix_now();
        let l = Latency {
            ewma_ms: ewma,
            mean_ms: mean,
            samples: n as u64,
            updated,
            callers,
        };
        Clock::now().latency(&l).map_err(WriteError::from)?;
        self.conn
            .prepare_cached(
                "INSERT INTO ha_latency
                   (network, target, source, mean_ms, ewma_ms, samples, timeouts, updated,
                    callers, monitor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9)
                 ON CONFLICT (network, target, source) DO UPDATE SET
                   mean_ms = ?4, ewma_ms = ?5, samples = ?6, updated = ?7, callers = ?8,
                   monitor = ?9",
            )
            .and_then(|mut s| {
                s.execute(params![
                    network,
                    target,
                    source.as_str(),
                    mean,
                    ewma,
                    n,
                    updated,
                    callers,
                    self.monitor
                ])
            })
            .map_err(WriteError::from)?;
        let (network, target) = (network.to_owned(), target.to_owned());
        self.publish(Reading::Latency {
            network,
            target,
            source,
            l,
            timeouts: timeouts.max(0) as u64,
        });
        Ok(l)
    }

    /// A probe that got no answer: counted, never averaged in. Only
    /// `status` shows the count, so it is not published.
    pub fn latency_timeout(
        &self,
        network: &str,
        target: &str,
        source: Source,
    ) -> Result<(), WriteError> {
        self.conn
            .execute(
                "UPDATE ha_latency SET timeouts = timeouts + 1
                 WHERE network = ?1 AND target = ?2 AND source = ?3",
                [network, target, source.as_str()],
            )
            .map(drop)
            .map_err(WriteError::from)
    }

    /// A round's call quality for (network, target) (`observe --freeswitch`): replaces the
    /// last one. Only `status` and the exporter show it, so it is not published.
    pub fn quality(
        &self,
        network: &str,
        target: &str,
        mos: Option<f64>,
        loss: Option<f64>,
        (callers, calls): (usize, usize),
    ) -> Result<(), WriteError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ha_quality
                   (network, target, mos, loss, callers, calls, updated, monitor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    network,
                    target,
                    mos,
                    loss,
                    callers as i64,
                    calls as i64,
                    unix_now(),
                    self.monitor
                ],
            )
            .map(drop)
            .map_err(WriteError::from)
    }

    pub fn load(&self, target: &str, sessions: u32, max: Option<u32>) -> Result<(), WriteError> {
        validate::sessions(u64::from(sessions), max.map(u64::from)).map_err(WriteError::from)?;
        let updated = unix_now();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ha_load (target, sessions, max_sessions, updated, monitor)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![target, sessions, max, updated, self.monitor],
            )
            .map_err(WriteError::from)?;
        let load = Some(Load {
            sessions,
            max_sessions: max,
            updated,
        });
        self.publish(Reading::Load {
            target: target.to_owned(),
            load,
            updated,
        });
        Ok(())
    }

    /// A load source that could not be read: the reading is dropped, so
    /// the target's load is unknown rather than stale or zero, on every
    /// node (memcached gets the "unknown since now").
    pub fn clear_load(&self, target: &str) -> Result<(), WriteError> {
        self.conn
            .execute("DELETE FROM ha_load WHERE target = ?1", [target])
            .map_err(WriteError::from)?;
        self.publish(Reading::Load {
            target: target.to_owned(),
            load: None,
            updated: unix_now(),
        });
        Ok(())
    }

    /// The operator's word: set at once, no anti-flap. It is this monitor
    /// id's verdict (the host name unless `--monitor-id` says otherwise), so
    /// the next probe rounds of a monitor with the same id move it again;
    /// `drain` is what sticks.
    pub fn health(&self, target: &str, up: bool) -> Result<(), WriteError> {
        self.set_health(target, up, 0, 0)
    }

    fn set_health(&self, target: &str, up: bool, oks: u32, fails: u32) -> Result<(), WriteError> {
        let updated = unix_now();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ha_health
                   (target, monitor, up, ok_streak, fail_streak, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![target, self.monitor, up, oks, fails, updated],
            )
            .map_err(WriteError::from)?;
        if !self.registered.get() {
            self.register_monitor();
        }
        self.publish(Reading::Health {
            target: target.to_owned(),
            monitor: self.monitor.clone(),
            h: Health { up, updated },
        });
        Ok(())
    }

    /// The generation the next drain or undrain of `target` takes: one past
    /// the newest known here (SQLite) or on the other nodes (memcached), so
    /// that it supersedes both.
    fn next_generation(&self, target: &str) -> Result<u64, WriteError> {
        // A database made before drain generations gains the table here
        // (as `init` would add it), so that drains keep working after an
        // upgrade of the binary alone.
        let ddl = SCHEMA
            .find("CREATE TABLE IF NOT EXISTS ha_drain_generation")
            .and_then(|at| Some(&SCHEMA[at..at + SCHEMA[at..].find(");")? + 2]))
            .unwrap_or("");
        self.conn.execute_batch(ddl).map_err(WriteError::from)?;
        let here: Option<i64> = self
            .conn
            .query_row(
                "SELECT generation FROM ha_drain_generation WHERE target = ?1",
                [target],
                |r| r.get(0),
            )
            .optional()
            .map_err(WriteError::from)?;
        let here = here.and_then(|g| u64::try_from(g).ok()).unwrap_or(0);
        let shared = match self.cache.borrow_mut().as_mut() {
            Some(c) => {
                let key = crate::state::reading::drain_key(&c.prefix, target);
                c.fetch(&[key])
                    .iter()
                    .filter_map(|r| match r {
                        Reading::Drain { generation, .. } => Some(*generation),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0)
            }
            None => 0,
        };
        Ok(here.max(shared).saturating_add(1).min(i64::MAX as u64))
    }

    fn set_generation(&self, target: &str, generation: u64) -> Result<(), WriteError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO ha_drain_generation (target, generation) VALUES (?1, ?2)",
                params![target, generation as i64],
            )
            .map(drop)
            .map_err(WriteError::from)
    }

    /// Takes `target` out of every answer until `undrain`: hard state in
    /// SQLite, and in memcached (without expiry) for the other nodes.
    pub fn drain(&self, target: &str, reason: &str) -> Result<(), WriteError> {
        if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(WriteError::Refused(format!(
                "--reason: at most {MAX_REASON} bytes on one line, got {} bytes",
                reason.len()
            )));
        }
        let since = unix_now();
        let generation = self.next_generation(target)?;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(WriteError::from)?;
        tx.execute(
            "INSERT OR REPLACE INTO ha_drain (target, reason, since) VALUES (?1, ?2, ?3)",
            params![target, reason, since],
        )
        .map_err(WriteError::from)?;
        self.set_generation(target, generation)?;
        tx.commit().map_err(WriteError::from)?;
        self.publish(Reading::Drain {
            target: target.to_owned(),
            reason: Some(reason.to_owned()),
            updated: since,
            generation,
        });
        Ok(())
    }

    /// Ends a drain here and, through memcached, on every node: the
    /// undrain is newer than any copy of the drain, by its time and by its
    /// generation, which SQLite keeps after the drain's row is gone.
    pub fn undrain(&self, target: &str) -> Result<bool, WriteError> {
        let generation = self.next_generation(target)?;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(WriteError::from)?;
        let removed = tx
            .execute("DELETE FROM ha_drain WHERE target = ?1", [target])
            .map_err(WriteError::from)?;
        self.set_generation(target, generation)?;
        tx.commit().map_err(WriteError::from)?;
        self.publish(Reading::Drain {
            target: target.to_owned(),
            reason: None,
            updated: unix_now(),
            generation,
        });
        Ok(removed > 0)
    }

    pub fn drains(&self) -> Result<Vec<DrainRow>, WriteError> {
        let mut stmt = self
            .conn
            .prepare("SELECT target, reason, since FROM ha_drain ORDER BY target")
            .map_err(WriteError::from)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DrainRow {
                    target: r.get(0)?,
                    reason: r.get(1)?,
                    since: r.get(2)?,
                })
            })
            .map_err(WriteError::from)?;
        rows.collect::<Result<_, _>>().map_err(WriteError::from)
    }

    /// One probe result, through the anti-flap thresholds. Returns the
    /// state before (`None`: no state yet) and after it. A target with no
    /// state yet takes the first result.
    pub fn probe(
        &self,
        target: &str,
        ok: bool,
        t: AntiFlap,
    ) -> Result<(Option<bool>, bool), WriteError> {
        let old: Option<(bool, u32, u32)> = self
            .conn
            .query_row(
                "SELECT up, ok_streak, fail_streak FROM ha_health
                 WHERE target = ?1 AND monitor = ?2",
                [target, &self.monitor],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(WriteError::from)?;
        let before = old.map(|(up, _, _)| up);
        let (up, oks, fails) = t.step(old, ok);
        self.set_health(target, up, oks, fails)?;
        Ok((before, up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../sql/schema.sql"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO ha_targets (name) VALUES ('sip1.example.com'), ('2001:db8::1');
             INSERT INTO ha_networks (cidr, name) VALUES ('198.51.100.0/24', 'b');",
        )
        .unwrap();
        Writer {
            conn,
            cache: RefCell::new(None),
            monitor: "test".into(),
            registered: std::cell::Cell::new(false),
        }
    }

    #[test]
    fn every_drain_and_undrain_takes_the_next_generation() {
        let w = writer();
        // As in a database made before generations: the first drain adds the table.
        w.conn
            .execute_batch("DROP TABLE ha_drain_generation")
            .unwrap();
        let generation = |w: &Writer| -> i64 {
            w.conn
                .query_row(
                    "SELECT generation FROM ha_drain_generation WHERE target = 'SIP1.example.com'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        w.drain("sip1.example.com", "disk").unwrap();
        assert_eq!(generation(&w), 1);
        assert!(w.undrain("sip1.example.com").unwrap());
        assert_eq!(generation(&w), 2, "kept after the drain's row is gone");
        assert!(w.drains().unwrap().is_empty());
        assert!(!w.undrain("sip1.example.com").unwrap());
        w.drain("sip1.example.com", "again").unwrap();
        assert_eq!(generation(&w), 4);
    }

    #[test]
    fn targets_and_networks_must_be_known() {
        let w = writer();
        assert_eq!(w.target("SIP1.example.com.").unwrap(), "sip1.example.com");
        assert_eq!(w.target("2001:DB8:0:0::1").unwrap(), "2001:db8::1");
        assert!(w
            .target("sip9.example.com")
            .unwrap_err()
            .to_string()
            .contains("not in ha_targets"));
        assert_eq!(w.network("198.51.100.0/24").unwrap(), "198.51.100.0/24");
        assert_eq!(w.network("*").unwrap(), "*");
        assert!(w
            .network("203.0.113.0/24")
            .unwrap_err()
            .to_string()
            .contains("not in ha_networks"));
        assert!(w
            .network("198.51.100.7/24")
            .unwrap_err()
            .to_string()
            .contains("not '*'"));
        assert_eq!(w.vantage("b").unwrap(), "198.51.100.0/24");
        assert_eq!(w.vantage("198.51.100.0/24").unwrap(), "198.51.100.0/24");
        assert_eq!(w.vantage("*").unwrap(), "*");
        // What the caller asked for, not the database's fault: the kind says so.
        let e = w.vantage("nowhere").unwrap_err();
        assert!(matches!(e, WriteError::Refused(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "--network \"nowhere\" is not a name or CIDR in ha_networks"
        );
    }

    #[test]
    fn latency_mean_and_ewma() {
        let w = writer();
        for ms in [10.0, 20.0, 30.0] {
            w.latency("*", "sip1.example.com", Source::Monitor, ms, None)
                .unwrap();
        }
        let row = |w: &Writer| -> (f64, f64, i64) {
            w.conn
                .query_row(
                    "SELECT mean_ms, ewma_ms, samples FROM ha_latency",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap()
        };
        assert_eq!(
            row(&w),
            (20.0, 20.0, 3),
            "the EWMA is the mean while warming up"
        );
        for _ in 0..7 {
            w.latency("*", "sip1.example.com", Source::Monitor, 20.0, None)
                .unwrap();
        }
        w.latency("*", "sip1.example.com", Source::Monitor, 120.0, None)
            .unwrap();
        let (mean, ewma, n) = row(&w);
        assert_eq!(n, 11);
        assert!((ewma - 30.0).abs() < 1e-9, "{ewma}");
        assert!((mean - 29.0909).abs() < 1e-3, "{mean}");
        assert!(w
            .latency("*", "sip1.example.com", Source::Monitor, -1.0, None)
            .is_err());
        assert!(w
            .latency("*", "sip1.example.com", Source::Monitor, f64::NAN, None)
            .is_err());
        assert!(w
            .latency("*", "sip1.example.com", Source::Monitor, 1e9, None)
            .is_err());
    }

    #[test]
    fn anti_flap() {
        let w = writer();
        let t = AntiFlap {
            down_after: 3,
            up_after: 2,
        };
        let seq = |w: &Writer, results: &[bool]| -> Vec<bool> {
            results
                .iter()
                .map(|&ok| w.probe("sip1.example.com", ok, t).unwrap().1)
                .collect()
        };
        assert_eq!(seq(&w, &[true]), [true], "the first result decides");
        assert_eq!(
            seq(&w, &[false, false, true, false, false]),
            [true; 5],
            "a blip is not an outage"
        );
        assert_eq!(seq(&w, &[false]), [false], "three in a row is");
        assert_eq!(seq(&w, &[true, false, true]), [false; 3]);
        assert_eq!(
            seq(&w, &[true]),
            [true],
            "two successes in a row bring it back"
        );
    }

    #[test]
    fn load_ranges() {
        let w = writer();
        w.load("sip1.example.com", 10, Some(100)).unwrap();
        assert!(w.load("sip1.example.com", 10, Some(0)).is_err());
        assert!(w
            .load("sip1.example.com", validate::MAX_SESSIONS + 1, None)
            .is_err());
    }
}
