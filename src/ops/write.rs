//! The operator's writes by hand: `metric` stores one reading, `drain` and `undrain` take a
//! target out of every answer and give it back. Each says what it did, since an operator
//! runs it from a shell.

use std::io::{self, Write};
use std::path::Path;

use crate::config::{CacheOptions, Metric};
use crate::state::memcached::Cache;
use crate::state::reading::Source;
use crate::state::writer::Writer;

fn writer(db: &Path, cache: Option<&CacheOptions>) -> anyhow::Result<Writer> {
    Ok(Writer::open(db, cache.map(Cache::connect).transpose()?)?)
}

/// `drain` (with a reason) or `undrain` (without).
pub fn drain(
    db: &Path,
    target: &str,
    reason: Option<&str>,
    cache: Option<&CacheOptions>,
) -> anyhow::Result<()> {
    let w = writer(db, cache)?;
    let target = w.target(target)?;
    let shared = if cache.is_some() {
        " here and in memcached"
    } else {
        ""
    };
    let line = match reason {
        Some(reason) => {
            w.drain(&target, reason)?;
            format!("{target}: drained{shared}; every answer leaves it out until undrain")
        }
        None => match w.undrain(&target)? {
            true => format!("{target}: undrained{shared}; probes decide again"),
            false if cache.is_some() => {
                format!("{target}: was not drained here; undrain sent to memcached anyway")
            }
            false => format!("{target}: was not drained; nothing to do"),
        },
    };
    Ok(writeln!(io::stdout(), "{line}")?)
}

/// `metric latency|load|health`: one reading, stored as `monitor_id`'s.
pub fn metric(
    db: &Path,
    m: &Metric,
    cache: Option<&CacheOptions>,
    monitor_id: &str,
) -> anyhow::Result<()> {
    let w = writer(db, cache)?.with_monitor(monitor_id);
    let written = match m {
        Metric::Latency {
            network,
            target,
            ms,
        } => {
            // A name as the monitor's --network takes it: one CIDR, or refused.
            let (network, target) = (w.vantage(network)?, w.target(target)?);
            w.latency(&network, &target, Source::Metric, *ms, None)
                .map(drop)
        }
        Metric::Load {
            target,
            sessions,
            max,
        } => w.load(&w.target(target)?, *sessions, *max),
        Metric::Health { target, up } => w.health(&w.target(target)?, *up),
    };
    Ok(written?)
}
