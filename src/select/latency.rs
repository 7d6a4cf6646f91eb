//! least-latency: targets ranked by measured latency from the client's
//! network, near-equal ones sharing a rank. A target that reports itself full
//! (fresh load at or over its capacity) refuses new calls, so it goes behind
//! every other served target, however close it is.

use super::{rank_prio, stored, Candidate, Context, Exclude, Outcome, Placed, Why};
use crate::state::index::Metrics;
use crate::state::reading::ANY_NETWORK;

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
        let fresh = |l: &crate::state::reading::Latency| cx.fresh(l.updated);
        if let Some(l) = m.latency(&net.cidr, t).filter(fresh) {
            return Some(Why::Latency {
                ms: l.ewma_ms,
                from_any: false,
            });
        }
        m.latency(ANY_NETWORK, t)
            .filter(fresh)
            .map(|l| Why::Latency {
                ms: l.ewma_ms,
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
        let why = match cx.excluded(m, c.target) {
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
