//! Reading what changed: the readings a commit touched, found through the
//! change log `ha_log` that triggers keep (`sql/schema.sql`), applied to the
//! index the pipe holds a row at a time. A change costs the rows it changed
//! (issue 22); the networks and the targets, hard state an operator edits
//! now and then, are re-read whole when their own counter moved.

use rusqlite::Connection;

use crate::state::index::Metrics;
use crate::state::validate::{self, Clock};

use super::load::{
    col, drain_row, generation, health_row, latency_row, load_networks, load_row, load_targets,
    named, row_problem, service_key, table_exists, text, BadRow, Skipped,
};
use crate::state::reading::Health;

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
/// cursor, how many rows were read and the rows left out. A changed row
/// that fails the validation is taken out of the index (it would have been
/// left out of a whole load too).
pub(super) fn apply(
    tx: &Connection,
    m: &mut Metrics,
    since: Cursor,
    clock: &Clock,
) -> rusqlite::Result<(Cursor, u64, Skipped)> {
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
        let (seq, skip) = (since.seq, &mut skipped);
        changed(tx, "latency_changed", seq, &mut rows, skip, |r| {
            let (network, target) = (text(r, 0)?, text(r, 1)?);
            let source = validate::source(text(r, 6)?)?;
            let v = value(r, 8, || latency_row(r, clock).map(|(_, l)| l));
            m.set_latency(network, target, source, v.as_ref().ok().cloned().flatten());
            v.map(drop)
        })?;
        changed(tx, "health_changed", seq, &mut rows, skip, |r| {
            let v = value(r, 4, || health_row(r, clock));
            m.set_health(text(r, 0)?, text(r, 1)?, v.as_ref().ok().cloned().flatten());
            v.map(drop)
        })?;
        changed(tx, "load_changed", seq, &mut rows, skip, |r| {
            let v = value(r, 4, || load_row(r, clock));
            m.set_load(text(r, 0)?, v.as_ref().ok().cloned().flatten());
            v.map(drop)
        })?;
        changed(tx, "drains_changed", seq, &mut rows, skip, |r| {
            let v = value(r, 3, || drain_row(r, clock));
            m.set_drain(text(r, 0)?, v.as_ref().ok().cloned().flatten());
            // The generation moves with every drain and undrain, also of a
            // target not drained here (an undrain sent on to memcached).
            let g = match r.get::<_, Option<i64>>(4).ok().flatten() {
                Some(_) => Some(generation(r, 4)?),
                None => None,
            };
            m.set_drain_generation(text(r, 0)?, g);
            v.map(drop)
        })?;
        changed(tx, "service_health_changed", seq, &mut rows, skip, |r| {
            let s = service_key(text(r, 1)?)?;
            let v = value(r, 5, || {
                let h = Health {
                    up: col(r, 3)?,
                    updated: col(r, 4)?,
                };
                clock.health(&h)?;
                Ok(h)
            });
            m.set_service_health(
                text(r, 0)?,
                s,
                text(r, 2)?,
                v.as_ref().ok().cloned().flatten(),
            );
            v.map(drop)
        })?;
    }
    m.finish_in_place();
    Ok((now, rows, skipped))
}

/// A changed row's reading: `Ok(None)` when the row is gone (the last
/// column of each `*_changed` statement says whether it is there), `Err`
/// when it fails the validation; either way it leaves the index.
fn value<T>(
    r: &rusqlite::Row<'_>,
    present_at: usize,
    parse: impl FnOnce() -> Result<T, BadRow>,
) -> Result<Option<T>, BadRow> {
    match r.get::<_, bool>(present_at).unwrap_or(false) {
        false => Ok(None),
        true => parse().map(Some),
    }
}

/// Runs the `*_changed` statement named `statement` from `since`, handing
/// each row to `f`; rows `f` rejects are listed in `skipped`.
fn changed(
    tx: &Connection,
    statement: &str,
    since: i64,
    rows_read: &mut u64,
    skipped: &mut Skipped,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), BadRow>,
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
