//! Operator reports: `status` (every target's health, load and latency with
//! the age of each reading) and `explain` (the answer a client would get
//! under each algorithm, through the same code the pipe runs, and why each
//! target got its place).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::config::PipeOptions;
use crate::dns::Subnet;
use crate::pipe::abi::QType;
use crate::pipe::answer::{candidate, Decision, Ranker};
use crate::pipe::store::Store;
use crate::pipe::zone::Record;
use crate::select::{Algorithm, Why};
use crate::state::reading::unix_now;

/// `3s`, `4m`, `2h`, `5d`.
fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn open(db: &Path) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(db, flags).map_err(|e| format!("database {}: {e}", db.display()))
}

/// Prints columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = width[c]);
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

pub fn status(db: &Path, stale_after: u32) -> Result<(), String> {
    let conn = open(db)?;
    let err = |e: rusqlite::Error| format!("database {}: {e}", db.display());
    let now = unix_now();
    let stale = |updated: f64| {
        let a = age(now - updated);
        if now - updated > f64::from(stale_after) {
            format!("{a} STALE")
        } else {
            a
        }
    };
    let mut rows = vec![vec![
        "target".to_owned(),
        "health".into(),
        "load".into(),
        "latency ewma/mean ms (samples, timeouts) by network".into(),
        "source".into(),
    ]];
    let mut stmt = conn
        .prepare("SELECT name, probe, max_sessions, load_source, load_address FROM ha_targets ORDER BY name")
        .map_err(err)?;
    type TargetRow = (String, String, Option<i64>, String, Option<String>);
    let targets: Vec<TargetRow> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    for (name, probe, capacity, source, address) in targets {
        let health = health_cell(&conn, &name, now, f64::from(stale_after), &stale).map_err(err)?;
        let load = conn
            .query_row(
                "SELECT sessions, max_sessions, updated FROM ha_load WHERE target = ?1",
                [&name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, f64>(2)?,
                    ))
                },
            )
            .ok()
            .map_or("-".into(), |(s, max, t)| {
                let max = max.or(capacity).map_or("?".into(), |m| m.to_string());
                format!("{s}/{max} {}", stale(t))
            });
        let mut lat = conn
            .prepare(
                "SELECT l.network, n.name, l.ewma_ms, l.mean_ms, l.samples, l.timeouts, l.updated
                 FROM ha_latency l LEFT JOIN ha_networks n ON n.cidr = l.network
                 WHERE l.target = ?1 ORDER BY l.network",
            )
            .map_err(err)?;
        let latency: Vec<String> = lat
            .query_map([&name], |r| {
                let net: String = r.get(0)?;
                let label = r.get::<_, Option<String>>(1)?.unwrap_or(net);
                Ok(format!(
                    "{label}: {:.1}/{:.1} ({}, {}) {}",
                    r.get::<_, f64>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    stale(r.get(6)?)
                ))
            })
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let latency = if latency.is_empty() {
            "-".into()
        } else {
            latency.join("; ")
        };
        // The address, never the secret: status output ends up in tickets.
        let mut source = match (source.as_str(), address) {
            ("none", _) => format!("probe {probe}"),
            (kind, Some(a)) => format!("probe {probe}, {kind} {a}"),
            (kind, None) => format!("probe {probe}, {kind}"),
        };
        // Whose readings these are, when several monitors write.
        let by: Vec<String> = conn
            .prepare(
                "SELECT monitor FROM ha_health WHERE target = ?1 AND monitor != ''
                 UNION SELECT monitor FROM ha_load WHERE target = ?1 AND monitor IS NOT NULL
                 UNION SELECT monitor FROM ha_latency WHERE target = ?1 AND monitor IS NOT NULL
                 ORDER BY 1",
            )
            .and_then(|mut s| s.query_map([&name], |r| r.get(0))?.collect())
            .unwrap_or_default();
        if !by.is_empty() {
            source = format!("{source}; by {}", by.join(", "));
        }
        rows.push(vec![name, health, load, latency, source]);
    }
    let mut out = table(&rows);
    let networks: Vec<String> = conn
        .prepare("SELECT cidr, name FROM ha_networks ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(format!(
                    "{} {}",
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(0)?
                ))
            })?
            .collect()
        })
        .map_err(err)?;
    let _ = writeln!(out, "\nnetworks: {}", networks.join(", "));
    let _ = writeln!(
        out,
        "readings older than {stale_after}s are STALE and count as unknown"
    );
    io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| e.to_string())
}

/// The health column: the verdict, and each monitor's when several monitor
/// the target; an operator's drain first, since it overrides them all.
fn health_cell(
    conn: &Connection,
    target: &str,
    now: f64,
    stale_after: f64,
    stale: &dyn Fn(f64) -> String,
) -> rusqlite::Result<String> {
    let mut stmt = conn
        .prepare("SELECT monitor, up, updated FROM ha_health WHERE target = ?1 ORDER BY monitor")?;
    let votes: Vec<(String, bool, f64)> = stmt
        .query_map([target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let word = |up: bool| if up { "up" } else { "DOWN" };
    let mut cell = match votes.as_slice() {
        [] => "unknown".to_owned(),
        [(_, up, t)] => format!("{} {}", word(*up), stale(*t)),
        _ => {
            let fresh: Vec<_> = votes.iter().filter(|v| now - v.2 <= stale_after).collect();
            let down = fresh.iter().filter(|v| !v.1).count();
            let verdict = match fresh.len() {
                0 => "unknown",
                n if down * 2 > n => "DOWN",
                _ => "up",
            };
            let each: Vec<String> = votes
                .iter()
                .map(|(m, up, t)| format!("{m} {} {}", word(*up), stale(*t)))
                .collect();
            format!(
                "{verdict} ({down} of {} fresh say down: {})",
                fresh.len(),
                each.join(", ")
            )
        }
    };
    let drain: Option<String> = conn
        .query_row(
            "SELECT reason FROM ha_drain WHERE target = ?1",
            [target],
            |r| r.get(0),
        )
        .ok();
    if let Some(reason) = drain {
        cell = format!("drained: {reason}; {cell}");
    }
    Ok(cell)
}

fn why(w: Why, drain: Option<&str>) -> String {
    match w {
        Why::Static => "as stored".into(),
        Why::Down => "left out: down".into(),
        Why::Drained => format!("left out: drained: {}", drain.unwrap_or("")),
        Why::Latency {
            ms,
            from_any: false,
        } => format!("{ms:.1} ms from the client's network"),
        Why::Latency { ms, from_any: true } => format!("{ms:.1} ms from the monitor host (*)"),
        Why::Unmeasured => "no fresh latency: stored order, after the measured".into(),
        Why::Load { sessions, max } => {
            format!("{sessions}/{max} sessions, {} free", max - sessions)
        }
        // least-load: behind its tier; least-latency: behind every other.
        Why::Full { sessions, max } => {
            format!("{sessions}/{max} sessions: full, served after the others")
        }
        Why::UnknownLoad => "no fresh load or no capacity known".into(),
    }
}

pub fn explain(
    opts: &PipeOptions,
    all: bool,
    client: Option<Subnet>,
    qname: &str,
    qtype: &str,
) -> Result<(), String> {
    let mut store = Store::open(&opts.db).map_err(|e| e.to_string())?;
    store.prepare(qname)?;
    let (zones, metrics) = (store.zones(), store.metrics());
    let client = client.unwrap_or(Subnet::host([127, 0, 0, 1].into()));
    let mut out = String::new();
    let _ = match metrics.network_for(client) {
        Some(n) => writeln!(out, "client {client}: network {} ({})", n.name, n.cidr),
        None => writeln!(out, "client {client}: in no known network"),
    };
    let records: Vec<Record<'_>> = zones.lookup(qname, QType::parse(qtype)).collect();
    if records.is_empty() {
        let _ = writeln!(
            out,
            "{qname} {qtype}: no records (pdns answers NODATA or NXDOMAIN)"
        );
    }
    let algorithms = match all {
        true => vec![
            Algorithm::Static,
            Algorithm::LeastLatency,
            Algorithm::LeastLoad,
        ],
        false => vec![opts.algorithm],
    };
    let now = unix_now();
    for alg in algorithms {
        let _ = writeln!(out, "\n== {alg}");
        let mut ranker = Ranker::new(alg, opts.dynamic_ttl.0, opts.stale_after.0);
        for rrset in records.chunk_by(|a, b| a.rtype == b.rtype) {
            // The very records the pipe would send, with the scope it
            // would give them (ABI 3+).
            let decision = ranker
                .answer(rrset, metrics, client, now, &mut |d| {
                    let prio = d.prio.map(|p| format!("{p} ")).unwrap_or_default();
                    let weight = d.weight.map(|w| format!("{w} ")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{}. {} IN {} {prio}{weight}{}   ; scope /{}",
                        d.qname, d.ttl, d.qtype, d.content, d.scopebits
                    );
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
            let Decision::Ranked(outcome) = decision else {
                continue;
            };
            let mut rows = Vec::new();
            for p in ranker.placed() {
                let target = candidate(&rrset[p.idx]).map_or("?", |c| c.target);
                let place = p
                    .place
                    .map_or("-".into(), |(prio, w)| format!("prio {prio} weight {w}"));
                let drain = metrics.drain(target).map(|d| &*d.reason);
                rows.push(vec![format!("  {target}"), place, why(p.why, drain)]);
            }
            let _ = write!(out, "{}", table(&rows));
            if outcome.fail_open {
                let _ = writeln!(
                    out,
                    "  every target is down or drained: all not drained served (fail open)"
                );
            } else if outcome.all_drained {
                let _ = writeln!(out, "  every target is drained: all served (fail open)");
            }
        }
    }
    io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| e.to_string())
}
