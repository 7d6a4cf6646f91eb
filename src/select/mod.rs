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

/// An `--algorithm` that names none of the three.
#[derive(Debug, thiserror::Error)]
#[error("unknown algorithm {0:?} (expected static, least-latency or least-load)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, UnknownAlgorithm> {
        match s {
            "static" => Ok(Self::Static),
            "least-latency" => Ok(Self::LeastLatency),
            "least-load" => Ok(Self::LeastLoad),
            _ => Err(UnknownAlgorithm(s.to_owned())),
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

pub mod latency;
mod load;

use crate::dns::Subnet;
use crate::state::index::Metrics;
use crate::state::service::Service;

/// One record of the RRset being ordered: an SRV target, or an address of
/// an A/AAAA RRset (whose priority and weight are 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// `ha_targets` key: SRV target or address, lowercase, no trailing dot.
    pub target: &'a str,
    pub prio: i64,
    pub weight: u32,
    /// The advertised service an SRV record under `_sip._udp`, `_sip._tcp` or
    /// `_sips._tcp` stands for (its transport and port): its own health
    /// decides the record. `None` for A/AAAA and other services.
    pub service: Option<Service>,
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

    /// Most monitors with a fresh verdict say down: more than half of them,
    /// so one monitor cut off from a server cannot take it out of the
    /// answer, and a tie keeps it in. With one monitor this is its verdict.
    /// Unknown or stale health is not down: an unmeasured target is served,
    /// never dropped on a guess.
    pub fn down(&self, m: &Metrics, target: &str) -> bool {
        let (mut fresh, mut down) = (0u32, 0u32);
        for (_, h) in m.health(target) {
            if self.fresh(h.updated) {
                fresh += 1;
                down += u32::from(!h.up);
            }
        }
        down * 2 > fresh
    }

    /// Whether most monitors with a fresh verdict on `target`'s service `s`
    /// say down, by the same rule as [`Self::down`]; `None` while no monitor
    /// has a fresh verdict on it (the target's own health then decides).
    pub fn service_down(&self, m: &Metrics, target: &str, s: Service) -> Option<bool> {
        let (mut fresh, mut down) = (0u32, 0u32);
        for (_, h) in m.service_health(target, s) {
            if self.fresh(h.updated) {
                fresh += 1;
                down += u32::from(!h.up);
            }
        }
        (fresh > 0).then_some(down * 2 > fresh)
    }

    /// Why a candidate must stay out of the answer, if it must: the
    /// operator's drain first (hard state beats every probe), then the
    /// health of its own service, or of the target while that is unknown.
    fn excluded(&self, m: &Metrics, c: &Candidate<'_>) -> Option<Why> {
        let down = || match c.service.and_then(|s| self.service_down(m, c.target, s)) {
            Some(down) => down,
            None => self.down(m, c.target),
        };
        if m.drain(c.target).is_some() {
            Some(Why::Drained)
        } else if down() {
            Some(Why::Down)
        } else {
            None
        }
    }
}

/// Why a candidate got its place, for `explain` and the logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Why {
    /// As stored.
    Static,
    /// Left out: most fresh monitors say down.
    Down,
    /// Left out: an operator drained it (`pdns-ha drain`).
    Drained,
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
    /// Every candidate not drained was down: those are served as stored.
    pub fail_open: bool,
    /// Every candidate was drained: the stored set is served as is, since
    /// an empty answer is worse than a server in maintenance.
    pub all_drained: bool,
}

impl Why {
    /// Left out of the answer.
    pub fn is_out(self) -> bool {
        matches!(self, Why::Down | Why::Drained)
    }
}

/// What `stored` leaves out.
#[derive(Clone, Copy, PartialEq)]
enum Exclude {
    Nothing,
    Drained,
    DrainedAndDown,
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
    if cands.is_empty() {
        return Outcome::default();
    }
    if cands.iter().all(|c| m.drain(c.target).is_some()) {
        stored(cands, out, Why::Static, Exclude::Nothing, m, cx);
        return Outcome {
            all_drained: true,
            ..Outcome::default()
        };
    }
    // Static ignores the probes (clients choose), never the operator.
    if alg == Algorithm::Static {
        stored(cands, out, Why::Static, Exclude::Drained, m, cx);
        return Outcome::default();
    }
    // Fail open among the targets not drained: "down" may be the monitors'
    // mistake, a drain is an operator's decision.
    if cands.iter().all(|c| cx.excluded(m, c).is_some()) {
        stored(cands, out, Why::Static, Exclude::Drained, m, cx);
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

/// The stored order and priorities, each marked `why`, less what `exclude`
/// leaves out.
fn stored(
    cands: &[Candidate<'_>],
    out: &mut Vec<Placed>,
    why: Why,
    exclude: Exclude,
    m: &Metrics,
    cx: &Context,
) {
    out.clear();
    out.extend(cands.iter().enumerate().map(|(idx, c)| {
        let out = match exclude {
            Exclude::Nothing => None,
            Exclude::Drained => m.drain(c.target).map(|_| Why::Drained),
            Exclude::DrainedAndDown => cx.excluded(m, c),
        };
        Placed {
            idx,
            place: out.is_none().then_some((c.prio, c.weight)),
            why: out.unwrap_or(why),
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
