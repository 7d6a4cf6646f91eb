//! Reading what changed: the readings a commit touched, found through the
//! change log `ha_log` that triggers keep (`sql/schema.sql`), applied to the
//! index the pipe holds a row at a time. A change costs the rows it changed
//! (issue 22); the networks and the targets, hard state an operator edits
//! now and then, are re-read whole when their own counter moved.

use rusqlite::Connection;

use crate::state::index::Metrics;
use crate::state::validate::Clock;

use super::load::{
    drain_row, health_row, latency_row, load_networks, load_row, load_targets, named, row_problem,
    table_exists, text, Skipped,
};

/// Where a pipe read the change log up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The highest `ha_log.seq` read.
    pub(super) seq: i64,
    /// The `ha_changes` counters of `ha_networks` and `ha_targets`.
    pub(super) networks: Option<i64>,
    pub(super) targets: Option<i64>,
}

/// The log's position now; `None` on a database without `ha_log` (made
/// by an older `pdns-ha init`), which is then read whole at every change.
pub(super) fn cursor(tx: &Connection) -> rusqlite::Result<Option<Cursor>> {
    if !table_exists(tx, "ha_log")? {
        return Ok(None);
    }
    let seq = tx
        .prepare_cached(named("log_seq"))?
        .query_row([], |r| r.get(0))?;
    let (networks, targets) = tx
        .prepare_cached(named("hard_versions"))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Some(Cursor {
        seq,
        networks,
        targets,
    }))
}

/// Applies to `m` every change logged after `since`; returns the new
/// cursor and how many rows were read. A changed row that fails the
/// validation is taken out of the index (it would have been left out of a
/// whole load too) and logged.
pub(super) fn apply(
    tx: &Connection,
    m: &mut Metrics,
    since: Cursor,
    clock: &Clock,
) -> rusqlite::Result<(Cursor, u64)> {
    let Some(now) = cursor(tx)? else {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    };
    let mut rows = 0;
    let mut skipped = Skipped::default();
    if now.networks != since.networks {
        m.clear_networks();
        load_networks(tx, m, &mut skipped, &mut rows)?;
    }
    if now.targets != since.targets {
        m.clear_targets();
        load_targets(tx, m, &mut skipped, &mut rows)?;
    }
    if now.seq != since.seq {
        changed(
            tx,
            "latency_changed",
            since.seq,
            &mut rows,
            |r| {
                let (network, target) = (text(r, 0)?, text(r, 1)?);
                match present(r, 8) {
                    false => {
                        let source = crate::state::validate::source(text(r, 6)?)
                            .map_err(|e| e.to_string())?;
                        m.set_latency(network, target, source, None);
                        Ok(())
                    }
                    true => match latency_row(r, clock) {
                        Ok((source, l)) => {
                            m.set_latency(network, target, source, Some(l));
                            Ok(())
                        }
                        Err(why) => {
                            if let Ok(source) = crate::state::validate::source(text(r, 6)?) {
                                m.set_latency(network, target, source, None);
                            }
                            Err(why)
                        }
                    },
                }
            },
            &mut skipped,
        )?;
        changed(
            tx,
            "health_changed",
            since.seq,
            &mut rows,
            |r| {
                let (target, monitor) = (text(r, 0)?, text(r, 1)?);
                let h = match present(r, 4) {
                    true => Some(health_row(r, clock)),
                    false => None,
                };
                m.set_health(target, monitor, h.clone().and_then(Result::ok));
                h.transpose().map(drop)
            },
            &mut skipped,
        )?;
        changed(
            tx,
            "load_changed",
            since.seq,
            &mut rows,
            |r| {
                let l = match present(r, 4) {
                    true => Some(load_row(r, clock)),
                    false => None,
                };
                m.set_load(text(r, 0)?, l.clone().and_then(Result::ok));
                l.transpose().map(drop)
            },
            &mut skipped,
        )?;
        changed(
            tx,
            "drains_changed",
            since.seq,
            &mut rows,
            |r| {
                let d = match present(r, 3) {
                    true => Some(drain_row(r, clock)),
                    false => None,
                };
                let target = text(r, 0)?;
                match d {
                    Some(Ok(d)) => m.set_drain(target, Some(d)),
                    Some(Err(why)) => {
                        m.set_drain(target, None);
                        return Err(why);
                    }
                    None => m.set_drain(target, None),
                }
                Ok(())
            },
            &mut skipped,
        )?;
    }
    m.finish_in_place();
    skipped.log();
    Ok((now, rows))
}

/// Whether the changed row is still in its table (the last column of each
/// `*_changed` statement).
fn present(r: &rusqlite::Row<'_>, i: usize) -> bool {
    r.get::<_, bool>(i).unwrap_or(false)
}

/// Runs the `*_changed` statement named `statement` from `since`, handing
/// each row to `f`; rows `f` rejects are listed in `skipped`.
fn changed(
    tx: &Connection,
    statement: &str,
    since: i64,
    rows_read: &mut u64,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), String>,
    skipped: &mut Skipped,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(named(statement))?;
    let mut rows = stmt.query([since])?;
    while let Some(r) = rows.next()? {
        *rows_read += 1;
        if let Err(why) = f(r) {
            skipped.push(|| row_problem(statement, r, &why));
        }
    }
    Ok(())
}
