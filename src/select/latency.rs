//! least-latency: targets ranked by measured latency from the client's
//! network, near-equal ones sharing a rank. A target that reports itself full
//! (fresh load at or over its capacity) refuses new calls, so it goes behind
//! every other served target, however close it is.
//!
//! # Fusion
//!
//! Several sources may measure the same (network, target): `observe` next
//! to the server (real callers' round trips), `monitor --network` from a
//! vantage host inside the network, `metric` pushes, and for `*` the
//! monitor's own host. The figure a target is ranked by is their weighted
//! mean ([`fuse`]):
//!
//! - only fresh readings count (no older than `--stale-after`);
//! - each weighs `min(n, FUSE_CAP)`, where `n` is the distinct callers
//!   behind an `observe` figure, or the sample count of a probe or push, so
//!   one probe cannot outvote many callers, while a monitor's thousands of
//!   samples cannot drown a well-attended network either;
//! - times its freshness, `1 - age / (2 × stale_after)`: a reading about to
//!   go stale counts half as much as one just written.
//!
//! The network's own readings are fused first; only when it has none fresh
//! do the `*` readings (fused the same way) stand in. A lookup fuses at most
//! three adjacent readings, without allocating.

use super::{rank_prio, stored, Candidate, Context, Exclude, Outcome, Placed, Why};
use crate::state::index::Metrics;
use crate::state::reading::{Latency, Source, ANY_NETWORK};

/// The most callers or samples one reading weighs as: past ten, more of the
/// same evidence says little more about the typical round trip.
pub const FUSE_CAP: u64 = 10;

/// The weight of one reading at `now`; `None` once it is stale.
pub fn weight(l: &Latency, now: f64, stale_after: f64) -> Option<f64> {
    let age = now - l.updated;
    if age > stale_after {
        return None;
    }
    let n = l.callers.map_or(l.samples, u64::from).clamp(1, FUSE_CAP) as f64;
    let freshness = match stale_after > 0.0 {
        true => 1.0 - age.max(0.0) / (2.0 * stale_after),
        false => 1.0,
    };
    Some(n * freshness)
}

/// Fresh readings of one (network, target) fused into one figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fused {
    /// The weighted mean of the readings' EWMAs.
    pub ms: f64,
    /// How many sources took part.
    pub sources: u32,
}

/// The fusion rule of the module docs, over one pair's readings.
pub fn fuse(
    readings: impl Iterator<Item = (Source, Latency)>,
    now: f64,
    stale_after: f64,
) -> Option<Fused> {
    let (mut sum, mut total, mut sources) = (0.0, 0.0, 0);
    for (_, l) in readings {
        if let Some(w) = weight(&l, now, stale_after) {
            sum += w * l.ewma_ms;
            total += w;
            sources += 1;
        }
    }
    (sources > 0).then(|| Fused {
        ms: sum / total,
        sources,
    })
}

/// Two targets share a rank while the slower is within this fraction of
/// the faster, plus `TOLERANCE_MS`: answers must not flap on jitter.
const TOLERANCE_REL: f64 = 0.2;
const TOLERANCE_MS: f64 = 2.0;

pub fn select(
    cands: &[Candidate<'_>],
    m: &Metrics,
    cx: &Context,
    out: &mut Vec<Placed>,
) -> Outcome {
    let Some(net) = m.network_for(cx.client) else {
        // Unknown network: the stored answer for this client, but scoped
        // to its own prefix so that pdns never hands it to a known network.
        stored(cands, out, Why::Static, Exclude::DrainedAndDown, m, cx);
        return Outcome {
            scopebits: cx.client.prefix,
            ..Outcome::default()
        };
    };
    let scoped = Outcome {
        scopebits: net.subnet.prefix,
        ..Outcome::default()
    };
    let latency = |t: &str| {
        if let Some(f) = fuse(m.network_latency(net, t), cx.now, cx.stale_after) {
            return Some(Why::Latency {
                ms: f.ms,
                from_any: false,
            });
        }
        fuse(m.latency(ANY_NETWORK, t), cx.now, cx.stale_after).map(|f| Why::Latency {
            ms: f.ms,
            from_any: true,
        })
    };
    let full = |t: &str| {
        let l = m.load(t).filter(|l| cx.fresh(l.updated))?;
        let max = l.max_sessions.or_else(|| m.capacity(t))?;
        (l.sessions >= max).then_some(Why::Full {
            sessions: l.sessions,
            max,
        })
    };
    for (idx, c) in cands.iter().enumerate() {
        let why = match cx.excluded(m, c) {
            Some(out) => out,
            None => full(c.target)
                .or_else(|| latency(c.target))
                .unwrap_or(Why::Unmeasured),
        };
        out.push(Placed {
            idx,
            place: None,
            why,
        });
    }
    if !out.iter().any(|p| matches!(p.why, Why::Latency { .. })) {
        stored(cands, out, Why::Unmeasured, Exclude::DrainedAndDown, m, cx);
        return scoped;
    }
    // Measured first by latency, then unmeasured by stored priority, then
    // the left-out; stable, so ties keep the stored order.
    let ms = |p: &Placed| match p.why {
        Why::Latency { ms, .. } => ms,
        _ => f64::INFINITY,
    };
    let class = |p: &Placed| match p.why {
        Why::Latency { .. } => 0,
        Why::Full { .. } => 2,
        w if w.is_out() => 3,
        _ => 1,
    };
    out.sort_by(|a, b| {
        class(a)
            .cmp(&class(b))
            .then(ms(a).total_cmp(&ms(b)))
            .then(cands[a.idx].prio.cmp(&cands[b.idx].prio))
    });
    // A rank starts at its fastest member and takes everyone within the
    // tolerance of it; unmeasured targets form one rank per stored priority.
    let mut rank = 0;
    let mut leader: Option<Group> = None;
    for p in out.iter_mut() {
        let c = &cands[p.idx];
        let group = match p.why {
            w if w.is_out() => continue,
            Why::Latency { ms, .. } => Group::Measured(ms),
            Why::Full { .. } => Group::Full,
            _ => Group::Unmeasured(c.prio),
        };
        match leader {
            Some(l) if l.holds(group) => {}
            Some(_) => {
                rank += 1;
                leader = Some(group);
            }
            None => leader = Some(group),
        }
        p.place = Some((rank_prio(rank), c.weight));
    }
    Outcome {
        dynamic: true,
        ..scoped
    }
}

#[derive(Clone, Copy)]
enum Group {
    Measured(f64),
    Unmeasured(i64),
    Full,
}

impl Group {
    fn holds(self, other: Group) -> bool {
        match (self, other) {
            (Group::Measured(lead), Group::Measured(ms)) => {
                ms <= lead * (1.0 + TOLERANCE_REL) + TOLERANCE_MS
            }
            (Group::Unmeasured(a), Group::Unmeasured(b)) => a == b,
            (Group::Full, Group::Full) => true,
            _ => false,
        }
    }
}
