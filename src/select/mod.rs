//! Selection algorithms: how an RRset is ordered for the client asking.

use std::fmt;
use std::str::FromStr;

/// The `--algorithm` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The records as stored: plain RFC 2782, clients choose.
    #[default]
    Static,
    /// Best measured latency from the client's network first.
    LeastLatency,
    /// Weights within each priority tier follow free capacity.
    LeastLoad,
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "static" => Ok(Self::Static),
            "least-latency" => Ok(Self::LeastLatency),
            "least-load" => Ok(Self::LeastLoad),
            _ => Err(format!(
                "unknown algorithm {s:?} (expected static, least-latency or least-load)"
            )),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Static => "static",
            Self::LeastLatency => "least-latency",
            Self::LeastLoad => "least-load",
        })
    }
}

mod latency;
mod load;

use crate::dns::Subnet;
use crate::state::index::Metrics;

/// One record of the RRset being ordered: an SRV target, or an address of
/// an A/AAAA RRset (whose priority and weight are 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// `ha_targets` key: SRV target or address, lowercase, no trailing dot.
    pub target: &'a str,
    pub prio: i64,
    pub weight: u32,
}

/// The inputs every algorithm shares besides the RRset and the metrics.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// The client: ECS subnet or remote address (see `backend`).
    pub client: Subnet,
    /// Unix time, seconds.
    pub now: f64,
    /// Readings older than this many seconds are unknown.
    pub stale_after: f64,
}

impl Context {
    fn fresh(&self, updated: f64) -> bool {
        self.now - updated <= self.stale_after
    }

    /// Fresh health says down. Unknown or stale health is not down: an
    /// unmeasured target is served, never dropped on a guess.
    fn down(&self, m: &Metrics, target: &str) -> bool {
        m.health(target)
            .is_some_and(|h| !h.up && self.fresh(h.updated))
    }
}

/// Why a candidate got its place, for `explain` and the logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Why {
    /// As stored.
    Static,
    /// Left out: fresh health says down.
    Down,
    /// Ranked by this latency (ms), from the client's network or, when
    /// `from_any` is set, from the monitor host's `*` samples.
    Latency { ms: f64, from_any: bool },
    /// No fresh latency: after the measured ones, in stored order.
    Unmeasured,
    /// Weighted by free capacity.
    Load { sessions: u32, max: u32 },
    /// At or over capacity: behind the rest of its tier.
    Full { sessions: u32, max: u32 },
    /// No fresh load or no capacity known: the tier's average share.
    UnknownLoad,
}

/// A candidate's place: `prio` and `weight` as they go out, or `None` when
/// the candidate is left out of the answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    pub idx: usize,
    pub place: Option<(i64, u32)>,
    pub why: Why,
}

/// What the whole answer is, beside each candidate's place.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Outcome {
    /// ECS scope for the answer: the prefix it is valid for. 0 means the
    /// same for every client, which pdns may cache.
    pub scopebits: u8,
    /// The order came from measurements. An A/AAAA answer then serves its
    /// best group of addresses alone. (The TTL cap applies to every
    /// answer of a ranking algorithm, dynamic or not: see `Ranker::write`.)
    pub dynamic: bool,
    /// Every candidate was down: the stored set is served as is.
    pub fail_open: bool,
}

/// Orders `cands` for the client; `out` receives one entry per candidate,
/// the answer's order first and the left-out ones last. Never leaves an
/// empty answer for a non-empty RRset.
pub fn select(
    alg: Algorithm,
    cands: &[Candidate<'_>],
    m: &Metrics,
    cx: &Context,
    out: &mut Vec<Placed>,
) -> Outcome {
    out.clear();
    if alg == Algorithm::Static || cands.is_empty() {
        stored(cands, out, Why::Static, None);
        return Outcome::default();
    }
    if cands.iter().all(|c| cx.down(m, c.target)) {
        stored(cands, out, Why::Static, None);
        return Outcome {
            fail_open: true,
            ..Outcome::default()
        };
    }
    match alg {
        Algorithm::LeastLatency => latency::select(cands, m, cx, out),
        _ => load::select(cands, m, cx, out),
    }
}

/// The stored order and priorities, each marked `why`; with `health`,
/// targets that fresh readings say are down are left out.
fn stored(
    cands: &[Candidate<'_>],
    out: &mut Vec<Placed>,
    why: Why,
    health: Option<(&Metrics, &Context)>,
) {
    out.clear();
    out.extend(cands.iter().enumerate().map(|(idx, c)| {
        let down = health.is_some_and(|(m, cx)| cx.down(m, c.target));
        let why = if down { Why::Down } else { why };
        Placed {
            idx,
            place: (!down).then_some((c.prio, c.weight)),
            why,
        }
    }));
    out.sort_by_key(|p| p.place.is_none());
}

/// Priorities for ranked answers: one per group, in answer order. Steps of
/// 10 leave room for an operator reading `explain` to see the groups.
fn rank_prio(rank: usize) -> i64 {
    10 * (rank as i64 + 1)
}

#[cfg(test)]
mod tests;
