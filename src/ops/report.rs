//! Operator reports: `status` (every target's health, load and latency with
//! the age of each reading) and `explain` (the answer a client would get
//! under each algorithm, through the same code the pipe runs, and why each
//! target got its place).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use super::Sql;
use crate::config::PipeOptions;
use crate::dns::Subnet;
use crate::pipe::abi::QType;
use crate::pipe::answer::{candidate, Decision, Ranker};
use crate::pipe::store::Store;
use crate::pipe::zone::Record;
use crate::select::latency::{fuse, weight};
use crate::select::{Algorithm, Why};
use crate::state::reading::{
    target_key, unix_now, Health, Latency, Load, Reading, Source, ANY_NETWORK,
};
use crate::text::{shown, shown_record};

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

fn open(db: &Path) -> anyhow::Result<Connection> {
    let at = || format!("database {}", db.display());
    crate::files::check_database(db).with_context(at)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(db, flags)
        .map_err(Sql)
        .with_context(at)
}

/// The view the pipe has: the database loaded by the pipe's own code (the
/// same validation, the same skipped rows) with memcached's readings laid
/// over it when `--memcached` is given.
pub(super) fn view(opts: &PipeOptions) -> anyhow::Result<Store> {
    let store = Store::open_with(&opts.db, unix_now, opts.max_clock_skew)
        .with_context(|| format!("database {}", opts.db.display()))?;
    match &opts.cache {
        None => Ok(store),
        Some(c) => Ok(store.with_cache_for_all(crate::state::memcached::Cache::connect(c)?)),
    }
}

/// Where a reading the pipe uses came from: memcached if the one in use is
/// among those fetched, else SQLite.
fn origin(store: &Store, want: impl Fn(&Reading) -> bool) -> &'static str {
    match store.from_memcached().iter().any(want) {
        true => "memcached",
        false => "sqlite",
    }
}

fn health_origin(store: &Store, target: &str, monitor: &str, h: &Health) -> &'static str {
    origin(store, |r| {
        matches!(r, Reading::Health { target: t, monitor: m, h: x }
            if target_key(t) == target && m == monitor && x == h)
    })
}

fn load_origin(store: &Store, target: &str, l: &Load) -> &'static str {
    origin(
        store,
        |r| matches!(r, Reading::Load { target: t, load: Some(x), .. } if target_key(t) == target && x == l),
    )
}

fn latency_origin(
    store: &Store,
    network: &str,
    target: &str,
    source: Source,
    l: &Latency,
) -> &'static str {
    origin(store, |r| {
        matches!(r, Reading::Latency { network: n, target: t, source: s, l: x, .. }
            if n == network && target_key(t) == target && *s == source && x == l)
    })
}

/// One source's part in a fused figure: its EWMA/mean, what it weighs by
/// (callers or samples), its timeouts, its weight under the fusion rule
/// (none when stale), its age and where it was read from.
fn latency_part(
    store: &Store,
    network: &str,
    target: &str,
    (source, l): (Source, Latency),
    timeouts: Option<i64>,
    (now, stale_after): (f64, f64),
    stale: &dyn Fn(f64) -> String,
) -> String {
    let from = latency_origin(store, network, target, source, &l);
    let callers = l
        .callers
        .map_or(String::new(), |c| format!("{c} callers, "));
    let timeouts = timeouts.map_or("?".into(), |t| t.to_string());
    let weight =
        weight(&l, now, stale_after).map_or("no weight".into(), |w| format!("weight {w:.1}"));
    format!(
        "{source} {:.1}/{:.1} ({callers}{} samples, {timeouts} timeouts, {weight}) {} ({from})",
        l.ewma_ms,
        l.mean_ms,
        l.samples,
        stale(l.updated)
    )
}

/// Rows the load left out, and values memcached sent that were ignored:
/// the same words the pipe logs.
fn rejected(store: &Store, out: &mut String) {
    let (n, why) = store.skipped();
    if n > 0 {
        let _ = writeln!(out, "\nskipped {n} rows (as the pipe does):");
        for w in why {
            let _ = writeln!(out, "  {w}");
        }
        if n > why.len() {
            let _ = writeln!(out, "  … and {} more", n - why.len());
        }
    }
    if let Some(c) = store.cache() {
        let auth = match c.authenticated() {
            true => "sealed values only (key file)",
            false => "unauthenticated (no key file)",
        };
        let _ = writeln!(out, "memcached: {auth}; values ignored: {}", c.rejects());
    }
}

/// Prints columns padded to their widest cell.
pub(super) fn table(rows: &[Vec<String>]) -> String {
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
            // Padded by hand: a format width is at most 65,535, and the
            // latency cell of `--all-networks` at 20,000 networks is wider.
            line.push_str(cell);
            let pad = width[c].saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// Past this many measured networks per target, `status` shows `*`, the
/// fastest and the slowest [`SUMMARY_TOP`] and a summary line, unless
/// `--all-networks` (issue 22: 20,000 networks make a line nobody reads).
const SUMMARY_OVER: usize = 10;
const SUMMARY_TOP: usize = 3;

/// Which of `fused` (one per measured network, `None` when stale) are
/// shown: all of them, or `*` (`any`), the fastest and the slowest.
fn shown_networks(fused: &[(bool, Option<f64>)], all: bool) -> Vec<usize> {
    if all || fused.len() <= SUMMARY_OVER {
        return (0..fused.len()).collect();
    }
    let mut fresh: Vec<usize> = (0..fused.len())
        .filter(|&i| !fused[i].0 && fused[i].1.is_some())
        .collect();
    fresh.sort_by(|&a, &b| {
        fused[a]
            .1
            .partial_cmp(&fused[b].1)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut shown: Vec<usize> = (0..fused.len()).filter(|&i| fused[i].0).collect();
    shown.extend(fresh.iter().take(SUMMARY_TOP));
    shown.extend(
        fresh
            .iter()
            .rev()
            .take(SUMMARY_TOP.min(fresh.len().saturating_sub(SUMMARY_TOP))),
    );
    shown.sort_unstable();
    shown.dedup();
    // `*` first, then fastest to slowest.
    shown.sort_by(|&a, &b| {
        (!fused[a].0).cmp(&!fused[b].0).then(
            fused[a]
                .1
                .partial_cmp(&fused[b].1)
                .unwrap_or(std::cmp::Ordering::Equal),
        )
    });
    shown
}

/// The summary of the networks `shown_networks` left out.
fn summary(fused: &[(bool, Option<f64>)], shown: usize) -> String {
    let mut fresh: Vec<f64> = fused.iter().filter(|f| !f.0).filter_map(|f| f.1).collect();
    fresh.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let median = fresh
        .get(fresh.len() / 2)
        .map_or("-".into(), |m| format!("{m:.1} ms"));
    format!(
        "{} more of {} networks measured ({} fresh, median {median}; --all-networks lists them)",
        fused.len() - shown,
        fused.iter().filter(|f| !f.0).count(),
        fresh.len()
    )
}

/// What pdns's pipe processes answered, from the files they write (`pdnsutil backend-cmd
/// pipe status` would ask a fresh process, which has answered nothing).
fn pipes(dir: &std::path::Path, out: &mut String) {
    use crate::state::pipe_counters::{alive, read_dir, Counts, WRITE_EVERY};
    let files = match read_dir(dir) {
        Ok((files, _)) if !files.is_empty() => files,
        Ok(_) => {
            let _ = writeln!(
                out,
                "pipes: no counters in {} yet (each pipe writes them when it starts, every {} s while pdns asks, and when it ends)",
                dir.display(),
                WRITE_EVERY.as_secs()
            );
            return;
        }
        Err(e) => {
            let _ = writeln!(out, "pipes: {}: {e}", dir.display());
            return;
        }
    };
    let running = files.iter().filter(|f| alive(f.pid)).count();
    let mut c = Counts::default();
    for f in &files {
        c.add(&f.counts);
    }
    let _ = writeln!(
        out,
        "pipes: {running} running, {} ended not yet summed by a monitor ({}): {} questions, {} with no data, {} FAIL, {} from no known network",
        files.len() - running,
        dir.display(),
        c.lookups,
        c.empty,
        c.fails,
        c.unknown.queries
    );
    let mut by: Vec<_> = c.networks.iter().collect();
    by.sort_by(|a, b| b.1.queries.cmp(&a.1.queries).then(a.0.cmp(b.0)));
    const SHOWN: usize = 10;
    let mut list: Vec<String> = by
        .iter()
        .take(SHOWN)
        .map(|(n, p)| format!("{} {}", shown(n), p.queries))
        .collect();
    if by.len() > SHOWN {
        list.push(format!("… and {} more", by.len() - SHOWN));
    }
    if !list.is_empty() {
        let _ = writeln!(out, "  questions by network: {}", list.join(", "));
    }
}

pub fn status(opts: &PipeOptions, all_networks: bool) -> anyhow::Result<()> {
    let store = view(opts)?;
    let metrics = store.metrics();
    let conn = open(&opts.db)?;
    let stale_after = opts.stale_after.0;
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
        "latency by network: fused ms = each source's ewma/mean (callers, samples, timeouts, weight) age".into(),
        "probe and load source".into(),
    ]];
    // How each target is measured; a cell of the wrong type shows as "?"
    // rather than failing the whole report.
    let mut stmt = conn
        .prepare("SELECT name, probe, load_source, load_address FROM ha_targets ORDER BY name")
        .map_err(Sql)
        .with_context(|| format!("database {}", opts.db.display()))?;
    let mut how = std::collections::HashMap::new();
    let mut q = stmt.query([]).map_err(Sql)?;
    while let Ok(Some(r)) = q.next() {
        let text = |i: usize| {
            r.get_ref(i)
                .ok()
                .and_then(|v| v.as_str_or_null().ok())
                .map(|v| v.map_or(String::new(), shown))
                .unwrap_or_else(|| "?".into())
        };
        if let Ok(name) = r.get_ref(0).and_then(|v| Ok(v.as_str()?)) {
            how.insert(target_key(name), (text(1), text(2), text(3)));
        }
    }
    let timeouts = |network: &str, target: &str, source: Source| -> Option<i64> {
        conn.query_row(
            "SELECT timeouts FROM ha_latency WHERE network = ?1 AND target = ?2 AND source = ?3",
            [network, target, source.as_str()],
            |r| r.get(0),
        )
        .ok()
    };
    let networks: Vec<(&str, &str)> = metrics
        .networks()
        .iter()
        .map(|n| (&*n.cidr, &*n.name))
        .chain([(ANY_NETWORK, ANY_NETWORK)])
        .collect();
    for name in metrics.targets() {
        let name = &**name;
        let health = health_cell(&store, name, now, f64::from(stale_after), &stale);
        let load = metrics.load(name).map_or("-".into(), |l| {
            let max = l.max_sessions.or(metrics.capacity(name));
            let max = max.map_or("?".into(), |m| m.to_string());
            let from = load_origin(&store, name, &l);
            format!("{}/{max} {} ({from})", l.sessions, stale(l.updated))
        });
        let mut latency = Vec::new();
        // Fused figure per measured network, then details for those shown.
        let mut measured: Vec<(&str, &str)> = Vec::new();
        let mut fused_all: Vec<(bool, Option<f64>)> = Vec::new();
        for (cidr, label) in &networks {
            let mut parts = metrics.latency(cidr, name).peekable();
            if parts.peek().is_none() {
                continue;
            }
            let fused = fuse(parts, now, f64::from(stale_after));
            measured.push((cidr, label));
            fused_all.push((*cidr == ANY_NETWORK, fused.map(|f| f.ms)));
        }
        let listed = shown_networks(&fused_all, all_networks);
        for &i in &listed {
            let (cidr, label) = measured[i];
            let parts: Vec<(Source, Latency)> = metrics.latency(cidr, name).collect();
            let fused = fuse(parts.iter().copied(), now, f64::from(stale_after));
            let each: Vec<String> = parts
                .into_iter()
                .map(|(source, l)| {
                    let from = latency_origin(&store, cidr, name, source, &l);
                    let t = match from {
                        "memcached" => store.from_memcached().iter().find_map(|r| match r {
                            Reading::Latency {
                                network,
                                target,
                                source: s,
                                timeouts,
                                ..
                            } if network == cidr && target_key(target) == name && *s == source => {
                                Some(*timeouts as i64)
                            }
                            _ => None,
                        }),
                        _ => timeouts(cidr, name, source),
                    };
                    let clock = (now, f64::from(stale_after));
                    latency_part(&store, cidr, name, (source, l), t, clock, &stale)
                })
                .collect();
            let figure = fused.map_or("STALE".into(), |f| format!("{:.1} ms", f.ms));
            latency.push(format!("{}: {figure} = {}", shown(label), each.join(" + ")));
        }
        if listed.len() < measured.len() {
            latency.push(summary(&fused_all, listed.len()));
        }
        let latency = if latency.is_empty() {
            "-".into()
        } else {
            latency.join("; ")
        };
        // The address, never the secret: status output ends up in tickets.
        let mut source = match how.get(name) {
            None => "?".into(),
            Some((probe, kind, _)) if kind == "none" => format!("probe {probe}"),
            Some((probe, kind, a)) if a.is_empty() => format!("probe {probe}, {kind}"),
            Some((probe, kind, a)) => format!("probe {probe}, {kind} {a}"),
        };
        // Whose readings these are, when several monitors write.
        let mut by: Vec<String> = conn
            .prepare(
                "SELECT monitor FROM ha_load WHERE target = ?1 AND monitor IS NOT NULL
                 UNION SELECT monitor FROM ha_latency WHERE target = ?1 AND monitor IS NOT NULL",
            )
            .and_then(|mut s| s.query_map([name], |r| r.get(0))?.collect())
            .unwrap_or_default();
        by.extend(metrics.health(name).map(|(m, _)| m.to_owned()));
        by.retain(|m| !m.is_empty());
        by.sort();
        by.dedup();
        if !by.is_empty() {
            let by: Vec<String> = by.iter().map(|m| shown(m)).collect();
            source = format!("{source}; by {}", by.join(", "));
        }
        rows.push(vec![shown(name), health, load, latency, source]);
    }
    let mut out = table(&rows);
    let services = services(&conn, now, f64::from(stale_after));
    if !services.is_empty() {
        let mut rows = vec![vec![
            "service (SRV target transport/port)".to_owned(),
            "state".into(),
            "reason".into(),
            "certificate".into(),
        ]];
        for ((target, transport, port), s) in &services {
            rows.push(vec![
                format!("{} {transport}/{port}", shown(target)),
                s.state.clone(),
                shown(&s.reason),
                s.expiry.clone(),
            ]);
        }
        let _ = write!(out, "\n{}", table(&rows));
    }
    quality(&conn, metrics, &stale, &mut out);
    let known = metrics.networks();
    if known.len() > SUMMARY_OVER && !all_networks {
        let _ = writeln!(
            out,
            "\nnetworks: {} known (--all-networks lists them)",
            known.len()
        );
    } else {
        let mut names: Vec<String> = known
            .iter()
            .map(|n| format!("{} {}", shown(&n.name), shown(&n.cidr)))
            .collect();
        names.sort();
        let _ = writeln!(out, "\nnetworks: {}", names.join(", "));
    }
    let _ = writeln!(
        out,
        "readings older than {stale_after}s are STALE and count as unknown"
    );
    rejected(&store, &mut out);
    if let Some(dir) = &opts.pipe_counters {
        pipes(dir, &mut out);
    }
    Ok(io::stdout().write_all(out.as_bytes())?)
}

/// Call quality beside latency (`observe --freeswitch`), one line per target and network,
/// when there is any. A database from before the table has none to show.
fn quality(
    conn: &Connection,
    metrics: &crate::state::index::Metrics,
    stale: &dyn Fn(f64) -> String,
    out: &mut String,
) {
    type Row = (String, String, Option<f64>, Option<f64>, i64, i64, f64);
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT target, network, mos, loss, callers, calls, updated FROM ha_quality
             ORDER BY target, network",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\ncall quality (observe --freeswitch): median over callers of MOS and RTCP loss"
    );
    for (target, network, mos, loss, callers, calls, updated) in rows {
        let name = metrics
            .networks()
            .iter()
            .find(|n| *n.cidr == *network)
            .map_or(String::new(), |n| format!("{} ", shown(&n.name)));
        let mos = mos.map_or("-".into(), |m| format!("{m:.2}"));
        let loss = loss.map_or("-".into(), |l| format!("{:.1} %", l * 100.0));
        let _ = writeln!(
            out,
            "  {} from {name}{}: MOS {mos}, loss {loss} ({callers} callers, {calls} calls) {}",
            shown(&target),
            shown(&network),
            stale(updated)
        );
    }
}

/// One advertised service as `status` and `explain` show it.
struct ServiceLine {
    /// `up`, `DOWN` or `unknown`, with the age of the newest verdict.
    state: String,
    /// The newest word of a monitor that agrees with the verdict.
    reason: String,
    /// TLS: `expires 2026-12-05 (in 3 days)` or `EXPIRED 2026-11-30`; else `-`.
    expiry: String,
}

/// Every row of `ha_service_health` by (target, transport, port), decided as the pipe
/// decides (most fresh monitors); empty for a database without the table.
fn services(
    conn: &Connection,
    now: f64,
    stale_after: f64,
) -> std::collections::BTreeMap<(String, String, i64), ServiceLine> {
    type Row = (String, String, i64, String, bool, String, Option<f64>, f64);
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT target, transport, port, monitor, up, reason, cert_expiry, updated
             FROM ha_service_health ORDER BY target, transport, port, updated DESC",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect()
        })
        .unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for group in rows.chunk_by(|a, b| (&a.0, &a.1, a.2) == (&b.0, &b.1, b.2)) {
        let fresh: Vec<&Row> = group.iter().filter(|r| now - r.7 <= stale_after).collect();
        let down = fresh.iter().filter(|r| !r.4).count();
        let verdict = match fresh.len() {
            0 => None,
            n => Some(down * 2 <= n),
        };
        let newest = group[0].7;
        let state = match verdict {
            None => format!("unknown ({} old, STALE)", age(now - newest)),
            Some(up) => format!(
                "{} ({} of {} fresh say down, newest {} old)",
                if up { "up" } else { "DOWN" },
                down,
                fresh.len(),
                age(now - newest)
            ),
        };
        let reason = group
            .iter()
            .find(|r| verdict.is_none_or(|up| r.4 == up))
            .map_or(String::new(), |r| match r.3.is_empty() {
                true => r.5.clone(),
                false => format!("{}: {}", r.3, r.5),
            });
        let expiry =
            group
                .iter()
                .filter_map(|r| r.6)
                .reduce(f64::min)
                .map_or("-".to_owned(), |e| {
                    let when = crate::text::date(e as i64);
                    let left = e - now;
                    match left {
                        l if l <= 0.0 => format!("EXPIRED {when}"),
                        l if l < 86_400.0 => {
                            format!("expires {when} (in {} hours)", (l / 3600.0) as u64)
                        }
                        l => format!("expires {when} (in {} days)", (l / 86_400.0).round() as u64),
                    }
                });
        let key = (group[0].0.clone(), group[0].1.clone(), group[0].2);
        out.insert(
            key,
            ServiceLine {
                state,
                reason,
                expiry,
            },
        );
    }
    out
}

/// The health column, as the pipe sees it (SQLite and memcached): the
/// verdict, and each monitor's word with where it came from when several
/// monitor the target; an operator's drain first, since it beats them all.
fn health_cell(
    store: &Store,
    target: &str,
    now: f64,
    stale_after: f64,
    stale: &dyn Fn(f64) -> String,
) -> String {
    let metrics = store.metrics();
    let votes: Vec<(&str, Health)> = metrics.health(target).collect();
    let word = |up: bool| if up { "up" } else { "DOWN" };
    let mut cell = match votes.as_slice() {
        [] => "unknown".to_owned(),
        [(m, h)] => {
            let from = health_origin(store, target, m, h);
            format!("{} {} ({from})", word(h.up), stale(h.updated))
        }
        _ => {
            let fresh: Vec<_> = votes
                .iter()
                .filter(|(_, h)| now - h.updated <= stale_after)
                .collect();
            let down = fresh.iter().filter(|(_, h)| !h.up).count();
            let verdict = match fresh.len() {
                0 => "unknown",
                n if down * 2 > n => "DOWN",
                _ => "up",
            };
            let each: Vec<String> = votes
                .iter()
                .map(|(m, h)| {
                    let from = health_origin(store, target, m, h);
                    format!("{} {} {} ({from})", shown(m), word(h.up), stale(h.updated))
                })
                .collect();
            format!(
                "{verdict} ({down} of {} fresh say down: {})",
                fresh.len(),
                each.join(", ")
            )
        }
    };
    if let Some(d) = metrics.drain(target) {
        cell = format!("drained: {}; {cell}", shown(&d.reason));
    }
    cell
}

pub(super) fn why(w: Why, drain: Option<&str>) -> String {
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
) -> anyhow::Result<()> {
    let mut store = view(opts)?;
    store.prepare(qname)?;
    let (zones, metrics) = (store.zones(), store.metrics());
    let client = client.unwrap_or(Subnet::host([127, 0, 0, 1].into()));
    let mut out = String::new();
    let network = metrics.network_for(client).map(|n| &*n.cidr);
    let _ = match metrics.network_for(client) {
        Some(n) => writeln!(
            out,
            "client {client}: network {} ({})",
            shown(&n.name),
            shown(&n.cidr)
        ),
        None => writeln!(out, "client {client}: in no known network"),
    };
    let records: Vec<Record<'_>> = zones.lookup(qname, QType::parse(qtype)).collect();
    if records.is_empty() {
        let _ = writeln!(
            out,
            "{} {}: no records (pdns answers NODATA or NXDOMAIN)",
            shown(qname),
            shown(qtype)
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
    let service_lines = match open(&opts.db) {
        Ok(conn) => services(&conn, now, f64::from(opts.stale_after.0)),
        Err(_) => Default::default(),
    };
    for alg in algorithms {
        let _ = writeln!(out, "\n== {alg}");
        let mut ranker = Ranker::new(alg, opts.dynamic_ttl.0, opts.stale_after.0);
        for rrset in records.chunk_by(|a, b| a.rtype == b.rtype) {
            // The very records the pipe would send, with the scope it
            // would give them (ABI 3+).
            let decision = ranker.answer(rrset, metrics, client, now, &mut |d| {
                let prio = d.prio.map(|p| format!("{p} ")).unwrap_or_default();
                let weight = d.weight.map(|w| format!("{w} ")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}. {} IN {} {prio}{weight}{}   ; scope /{}",
                    shown(d.qname),
                    d.ttl,
                    shown(d.qtype),
                    shown_record(d.content),
                    d.scopebits
                );
                Ok(())
            })?;
            let Decision::Ranked(outcome) = decision else {
                continue;
            };
            let mut rows = Vec::new();
            for p in ranker.placed() {
                let target = candidate(&rrset[p.idx]).map_or("?", |c| c.target);
                let place = p
                    .place
                    .map_or("-".into(), |(prio, w)| format!("prio {prio} weight {w}"));
                let drain = metrics.drain(target).map(|d| shown(&d.reason));
                rows.push(vec![
                    format!("  {}", shown(target)),
                    place,
                    why(p.why, drain.as_deref()),
                    reading_from(
                        &store,
                        p.why,
                        network,
                        target,
                        (now, f64::from(opts.stale_after.0)),
                    ),
                ]);
            }
            let _ = write!(out, "{}", table(&rows));
            // Each record's own service, when health is kept per service.
            let mut lines = Vec::new();
            for p in ranker.placed() {
                let Some(c) = candidate(&rrset[p.idx]) else {
                    continue;
                };
                let Some(svc) = c.service else { continue };
                let key = (
                    target_key(c.target),
                    svc.transport.as_str().to_owned(),
                    i64::from(svc.port),
                );
                let line = match service_lines.get(&key) {
                    Some(s) => vec![
                        format!("  {} {}/{}", shown(c.target), svc.transport, svc.port),
                        s.state.clone(),
                        shown(&s.reason),
                        s.expiry.clone(),
                    ],
                    None => vec![
                        format!("  {} {}/{}", shown(c.target), svc.transport, svc.port),
                        "no verdict: the target's own health decides".into(),
                        String::new(),
                        String::new(),
                    ],
                };
                lines.push(line);
            }
            if !lines.is_empty() {
                let _ = write!(out, "  services:\n{}", table(&lines));
            }
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
    rejected(&store, &mut out);
    Ok(io::stdout().write_all(out.as_bytes())?)
}

/// Which store the reading behind a placement came from; for latency, each
/// source fused into the figure.
fn reading_from(
    store: &Store,
    why: Why,
    network: Option<&str>,
    target: &str,
    (now, stale_after): (f64, f64),
) -> String {
    let m = store.metrics();
    let from = match why {
        Why::Down => {
            let mut from: Vec<&str> = m
                .health(target)
                .map(|(mon, h)| health_origin(store, target, mon, &h))
                .collect();
            from.sort_unstable();
            from.dedup();
            (!from.is_empty()).then(|| from.join(" and "))
        }
        Why::Drained => Some(
            origin(store, |r| {
                matches!(r, Reading::Drain { target: t, reason: Some(_), .. } if target_key(t) == target)
            })
            .to_owned(),
        ),
        // Each source that took part, with its weight and where it was read.
        Why::Latency { from_any, .. } => {
            let net = match from_any {
                true => ANY_NETWORK,
                false => network.unwrap_or(ANY_NETWORK),
            };
            let parts: Vec<String> = m
                .latency(net, target)
                .filter_map(|(source, l)| {
                    let w = weight(&l, now, stale_after)?;
                    let n = match l.callers {
                        Some(c) => format!("{c} callers"),
                        None => format!("{} samples", l.samples),
                    };
                    let from = latency_origin(store, net, target, source, &l);
                    Some(format!(
                        "{source} {:.1} ms, {n}, {} old, weight {w:.1}, {from}",
                        l.ewma_ms,
                        age(now - l.updated)
                    ))
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join(" + "))
        }
        Why::Load { .. } | Why::Full { .. } => m
            .load(target)
            .map(|l| load_origin(store, target, &l).to_owned()),
        Why::Static | Why::Unmeasured | Why::UnknownLoad => None,
    };
    from.map_or(String::new(), |f| format!("({f})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_an_operator_counts() {
        let got: Vec<String> = [-3.0, 0.4, 119.0, 120.0, 7199.0, 7200.0, 172_800.0]
            .into_iter()
            .map(age)
            .collect();
        assert_eq!(got, ["0s", "0s", "119s", "2m", "119m", "2h", "2d"]);
    }

    #[test]
    fn tables_align_by_characters_and_end_without_padding() {
        let rows = vec![
            vec!["target".into(), "health".into(), "latency".into()],
            vec!["sip1.example.com".into(), "up".into(), "4.0 ms".into()],
            vec!["é".into(), "DOWN (2 of 3)".into(), String::new()],
        ];
        assert_eq!(
            table(&rows),
            "target            health         latency\n\
             sip1.example.com  up             4.0 ms\n\
             é                 DOWN (2 of 3)\n"
        );
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn every_reason_names_its_cause() {
        assert_eq!(why(Why::Static, None), "as stored");
        assert_eq!(why(Why::Down, None), "left out: down");
        assert_eq!(
            why(Why::Drained, Some("kernel upgrade")),
            "left out: drained: kernel upgrade"
        );
        let near = Why::Latency {
            ms: 4.04,
            from_any: false,
        };
        assert_eq!(why(near, None), "4.0 ms from the client's network");
        let any = Why::Latency {
            ms: 12.0,
            from_any: true,
        };
        assert_eq!(why(any, None), "12.0 ms from the monitor host (*)");
        let load = Why::Load {
            sessions: 30,
            max: 100,
        };
        assert_eq!(why(load, None), "30/100 sessions, 70 free");
        let full = Why::Full {
            sessions: 100,
            max: 100,
        };
        assert_eq!(
            why(full, None),
            "100/100 sessions: full, served after the others"
        );
    }

    /// Few networks: all listed. Many: `*`, the three fastest and the three
    /// slowest fresh ones; stale ones only counted.
    #[test]
    fn many_networks_are_summarized() {
        let few: Vec<(bool, Option<f64>)> =
            (0..SUMMARY_OVER).map(|i| (false, Some(i as f64))).collect();
        assert_eq!(shown_networks(&few, false).len(), SUMMARY_OVER);
        let mut many: Vec<(bool, Option<f64>)> = (0..100)
            .map(|i| (false, Some(f64::from((i * 37) % 100))))
            .collect();
        many.push((false, None));
        many.push((true, Some(50.0)));
        let shown = shown_networks(&many, false);
        let ms: Vec<f64> = shown.iter().filter_map(|&i| many[i].1).collect();
        assert_eq!(ms, [50.0, 0.0, 1.0, 2.0, 97.0, 98.0, 99.0]);
        assert_eq!(shown[0], 101, "`*` always, first");
        assert_eq!(shown_networks(&many, true).len(), 102);
        assert_eq!(
            summary(&many, shown.len()),
            "95 more of 101 networks measured (100 fresh, median 50.0 ms; --all-networks lists them)"
        );
    }
}
