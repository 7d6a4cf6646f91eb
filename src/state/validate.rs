//! The one validation of soft state. Every path a reading takes into a
//! decision or a report goes through here: the pipe's SQLite load, values
//! fetched from memcached, `metric` and `monitor` before they write, and
//! `status`/`explain` (which load through the pipe's own code). A reading
//! that fails is skipped and counted with the short reason [`Invalid`]
//! prints, the same words on every path.
//!
//! Ranges: `updated` a finite, non-negative Unix time no more than the
//! allowed clock skew ahead of this host's clock (a reading stamped in the
//! future would never go stale and would beat every honest one); latency 0
//! to 60,000 ms; sessions 0 to 10 million, capacity 1 to 10 million;
//! samples and timeouts up to 2^32-1, callers 1 to 2^32-1 (a figure from no
//! caller is no figure); a latency source one of `observe`, `monitor`,
//! `metric`, `freeswitch`. Record priorities (MX/SRV) 0 to 65535.

use std::fmt;

use crate::state::reading::{unix_now, Health, Latency, Load, Reading, Source};

/// Longest a latency reading can be: a SIP answer later than this is a
/// timeout, not a measurement.
pub const MAX_MS: f64 = 60_000.0;

/// Upper bounds that catch a unit mix-up rather than limit real servers.
pub const MAX_SESSIONS: u32 = 10_000_000;
pub const MAX_COUNT: u64 = u32::MAX as u64;

/// MX preference and SRV priority are 16-bit fields on the wire.
pub const MAX_PRIORITY: i64 = 65_535;

/// Default of `--max-clock-skew`: NTP keeps hosts within milliseconds, a
/// few seconds absorbs a host whose clock is being slewed back.
pub const DEFAULT_MAX_SKEW: u32 = 5;

/// Why a reading was not used. `Display` is the short reason logged,
/// counted and shown by `status` and `explain`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Invalid {
    /// `updated` is NaN, infinite or negative.
    Time(f64),
    /// `updated` (the stamp itself) is ahead of our clock by more than the
    /// skew. The stamp, not the distance: the reason must read the same on
    /// every path whenever it is judged.
    Future(f64),
    Latency(f64),
    Sessions(u64),
    Capacity(u64),
    Count(u64),
    Callers(u64),
    /// A latency source that is none of [`Source::ALL`].
    Source,
}

/// A number short enough for a log line whatever its size (f64's
/// `Display` writes 1e300 out in full).
fn num(v: f64) -> String {
    if v.is_finite() && v.abs() < 1e12 {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Time(t) => write!(f, "updated {} is not a time", num(t)),
            Self::Future(t) => write!(
                f,
                "updated {} is in the future (beyond --max-clock-skew)",
                num(t)
            ),
            Self::Latency(ms) => write!(f, "latency {} ms out of range (0 to {MAX_MS})", num(ms)),
            Self::Sessions(n) => write!(f, "sessions {n} out of range (0 to {MAX_SESSIONS})"),
            Self::Capacity(n) => write!(f, "max sessions {n} out of range (1 to {MAX_SESSIONS})"),
            Self::Count(n) => write!(f, "count {n} out of range (0 to {MAX_COUNT})"),
            Self::Callers(n) => write!(f, "callers {n} out of range (1 to {MAX_COUNT})"),
            Self::Source => f.write_str("source is not observe, monitor, metric or freeswitch"),
        }
    }
}

impl std::error::Error for Invalid {}

/// The clock readings are judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    pub now: f64,
    pub max_skew: f64,
}

impl Clock {
    /// This host's clock with the default skew ([`DEFAULT_MAX_SKEW`]): what writers judge
    /// their own readings by.
    pub fn now() -> Self {
        Self::at(unix_now(), DEFAULT_MAX_SKEW)
    }

    /// A given time, with `max_skew` seconds of tolerance for a writer's clock ahead of it
    /// (the reader's `--max-clock-skew`).
    pub fn at(now: f64, max_skew: u32) -> Self {
        Self {
            now,
            max_skew: f64::from(max_skew),
        }
    }

    pub fn updated(&self, t: f64) -> Result<(), Invalid> {
        if !t.is_finite() || t < 0.0 {
            return Err(Invalid::Time(t));
        }
        if t - self.now > self.max_skew {
            return Err(Invalid::Future(t));
        }
        Ok(())
    }

    pub fn health(&self, h: &Health) -> Result<(), Invalid> {
        self.updated(h.updated)
    }

    pub fn load(&self, l: &Load) -> Result<(), Invalid> {
        self.updated(l.updated)?;
        sessions(u64::from(l.sessions), l.max_sessions.map(u64::from))
    }

    pub fn latency(&self, l: &Latency) -> Result<(), Invalid> {
        self.updated(l.updated)?;
        latency_ms(l.ewma_ms)?;
        latency_ms(l.mean_ms)?;
        count(l.samples)?;
        match l.callers {
            Some(0) => Err(Invalid::Callers(0)),
            _ => Ok(()),
        }
    }

    pub fn reading(&self, r: &Reading) -> Result<(), Invalid> {
        match r {
            Reading::Health { h, .. } => self.health(h),
            Reading::Load { load, updated, .. } => {
                self.updated(*updated)?;
                load.as_ref().map_or(Ok(()), |l| self.load(l))
            }
            Reading::Latency { l, timeouts, .. } => {
                self.latency(l)?;
                count(*timeouts)
            }
            Reading::Drain { updated, .. } => self.updated(*updated),
        }
    }
}

/// A latency source as SQLite and memcached keys spell it.
pub fn source(s: &str) -> Result<Source, Invalid> {
    Source::parse(s).ok_or(Invalid::Source)
}

pub fn latency_ms(ms: f64) -> Result<(), Invalid> {
    match (0.0..=MAX_MS).contains(&ms) {
        true => Ok(()),
        false => Err(Invalid::Latency(ms)),
    }
}

/// Sessions and capacity as `metric`, the monitor and stored rows give them.
pub fn sessions(n: u64, max: Option<u64>) -> Result<(), Invalid> {
    if n > u64::from(MAX_SESSIONS) {
        return Err(Invalid::Sessions(n));
    }
    match max {
        Some(m) if m == 0 || m > u64::from(MAX_SESSIONS) => Err(Invalid::Capacity(m)),
        _ => Ok(()),
    }
}

pub fn count(n: u64) -> Result<(), Invalid> {
    match n <= MAX_COUNT {
        true => Ok(()),
        false => Err(Invalid::Count(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Clock = Clock {
        now: 1_000_000.0,
        max_skew: 5.0,
    };

    #[test]
    fn times() {
        assert!(C.updated(999_000.0).is_ok(), "old is stale, not invalid");
        assert!(C.updated(1_000_004.0).is_ok(), "within the skew");
        assert_eq!(C.updated(1_000_010.0), Err(Invalid::Future(1_000_010.0)));
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(matches!(C.updated(bad), Err(Invalid::Time(_))), "{bad}");
        }
        assert_eq!(
            Invalid::Future(1e300).to_string(),
            "updated 1e300 is in the future (beyond --max-clock-skew)"
        );
        assert_eq!(
            Invalid::Time(f64::INFINITY).to_string(),
            "updated inf is not a time"
        );
    }

    #[test]
    fn ranges() {
        let l = Latency {
            ewma_ms: -50.0,
            mean_ms: 1.0,
            samples: 1,
            updated: 1.0,
            callers: None,
        };
        assert_eq!(C.latency(&l), Err(Invalid::Latency(-50.0)));
        let no_callers = Latency {
            ewma_ms: 1.0,
            callers: Some(0),
            ..l
        };
        assert_eq!(
            C.latency(&no_callers).unwrap_err().to_string(),
            "callers 0 out of range (1 to 4294967295)"
        );
        assert_eq!(source("observe"), Ok(Source::Observe));
        assert_eq!(
            source("Monitor").unwrap_err().to_string(),
            "source is not observe, monitor, metric or freeswitch"
        );
        assert!(C.latency(&Latency { ewma_ms: 1.0, ..l }).is_ok());
        assert_eq!(
            C.latency(&Latency {
                ewma_ms: 1.0,
                mean_ms: 1e9,
                ..l
            })
            .unwrap_err()
            .to_string(),
            "latency 1000000000 ms out of range (0 to 60000)"
        );
        let load = Load {
            sessions: 10,
            max_sessions: Some(0),
            updated: 1.0,
        };
        assert_eq!(C.load(&load), Err(Invalid::Capacity(0)));
        assert_eq!(
            sessions(u64::from(MAX_SESSIONS) + 1, None),
            Err(Invalid::Sessions(10_000_001))
        );
        let r = Reading::Latency {
            network: "*".into(),
            target: "a".into(),
            source: Source::Metric,
            l: Latency { ewma_ms: 1.0, ..l },
            timeouts: u64::MAX,
        };
        assert_eq!(C.reading(&r), Err(Invalid::Count(u64::MAX)));
    }
}
