//! One read of the database, in one read transaction so that what is installed never
//! mixes two versions of it: the zones when they changed, and the readings, either the
//! rows changed since the last read ([`super::changes`], when the database keeps a change
//! log and an index is held) or all of them ([`super::load`]).

use rusqlite::Connection;

use crate::pipe::zone::Zones;
use crate::state::index::Metrics;
use crate::state::validate::Clock;

use super::changes::{self, Cursor};
use super::load::{load_metrics, load_zones, zones_version, Skipped};

/// What one read brought.
pub(super) struct Loaded {
    /// `None`: the zones did not change, only the readings were read.
    /// With them, the rows they left out.
    pub(super) zones: Option<(Zones, Skipped)>,
    pub(super) zones_version: Option<i64>,
    /// A fresh index of every reading, with the rows it left out; `None`
    /// when the changes were applied to the index held.
    pub(super) metrics: Option<(Metrics, Skipped)>,
    /// Where the change log was read up to; `None` without a log.
    pub(super) cursor: Option<Cursor>,
    /// Reading rows read (whole, or changed).
    pub(super) rows: u64,
    /// Changed rows left out (not counted in a whole load's `metrics`).
    pub(super) changed_skipped: Skipped,
}

/// Reads the zones when `zones` says they changed, and the readings: the
/// rows changed since `since` applied to `held` when both are given (the
/// database keeps a change log), else all of them. One read transaction,
/// so what is installed never mixes two versions of the database. A row
/// that cannot be served is left out with a reason; it never stops the
/// rest from loading.
pub(super) fn read(
    conn: &Connection,
    zones: bool,
    held: Option<(&mut Metrics, Cursor)>,
    now: f64,
    max_skew: u32,
) -> rusqlite::Result<Loaded> {
    let tx = conn.unchecked_transaction()?;
    let zones_version = zones_version(&tx)?;
    let zones = match zones {
        false => None,
        true => {
            let mut skipped = Skipped::default();
            Some((load_zones(&tx, &mut skipped)?, skipped))
        }
    };
    let clock = Clock::at(now, max_skew);
    if let Some((m, since)) = held {
        let (cursor, rows, changed_skipped) = changes::apply(&tx, m, since, &clock)?;
        return Ok(Loaded {
            zones,
            zones_version,
            metrics: None,
            cursor: Some(cursor),
            rows,
            changed_skipped,
        });
    }
    let mut skipped = Skipped::default();
    let mut rows = 0;
    let cursor = changes::cursor(&tx)?;
    let metrics = load_metrics(&tx, &clock, &mut skipped, &mut rows)?;
    Ok(Loaded {
        metrics: Some((metrics, skipped)),
        zones,
        zones_version,
        cursor,
        rows,
        changed_skipped: Skipped::default(),
    })
}
