//! least-load: the operator's priority tiers stay (failover order is
//! intent); within a tier, weights follow free capacity, and a target at
//! capacity moves behind its tier.

use super::{rank_prio, stored, Candidate, Context, Exclude, Outcome, Placed, Why};
use crate::state::index::Metrics;

/// The largest SRV weight.
const MAX_WEIGHT: u64 = 65535;

pub fn select(
    cands: &[Candidate<'_>],
    m: &Metrics,
    cx: &Context,
    out: &mut Vec<Placed>,
) -> Outcome {
    let why_of = |c: &Candidate<'_>| {
        if let Some(out) = cx.excluded(m, c) {
            return out;
        }
        let Some(l) = m.load(c.target).filter(|l| cx.fresh(l.updated)) else {
            return Why::UnknownLoad;
        };
        match l.max_sessions.or_else(|| m.capacity(c.target)) {
            Some(max) if l.sessions >= max => Why::Full {
                sessions: l.sessions,
                max,
            },
            Some(max) => Why::Load {
                sessions: l.sessions,
                max,
            },
            None => Why::UnknownLoad,
        }
    };
    out.extend(cands.iter().enumerate().map(|(idx, c)| Placed {
        idx,
        place: None,
        why: why_of(c),
    }));
    if !out
        .iter()
        .any(|p| matches!(p.why, Why::Load { .. } | Why::Full { .. }))
    {
        stored(cands, out, Why::UnknownLoad, Exclude::DrainedAndDown, m, cx);
        return Outcome::default();
    }
    // Tier by tier: those with room (most free first), then the full ones;
    // the left-out go last.
    out.sort_by(|a, b| {
        (a.why.is_out())
            .cmp(&b.why.is_out())
            .then(cands[a.idx].prio.cmp(&cands[b.idx].prio))
            .then(is_full(a).cmp(&is_full(b)))
            .then(free(b).cmp(&free(a)))
    });
    let mut rank = 0;
    let mut start = 0;
    while start < out.len() && !out[start].why.is_out() {
        let tier = cands[out[start].idx].prio;
        let len = out[start..]
            .iter()
            .take_while(|p| !p.why.is_out() && cands[p.idx].prio == tier)
            .count();
        let members = &mut out[start..start + len];
        let open = members.iter().filter(|p| !is_full(p)).count();
        let (open, full) = members.split_at_mut(open);
        for group in [open, full] {
            if group.is_empty() {
                continue;
            }
            let weights = Weights::of(group);
            for p in group.iter_mut() {
                p.place = Some((rank_prio(rank), weights.weight(p, cands[p.idx].weight)));
            }
            rank += 1;
        }
        start += len;
    }
    Outcome {
        dynamic: true,
        ..Outcome::default()
    }
}

fn is_full(p: &Placed) -> bool {
    matches!(p.why, Why::Full { .. })
}

fn free(p: &Placed) -> u64 {
    match p.why {
        Why::Load { sessions, max } => u64::from(max - sessions),
        _ => 0,
    }
}

/// Weights proportional to free sessions, scaled down only when the
/// largest would not fit in an SRV weight.
struct Weights {
    scale: f64,
    /// What a target of unknown load gets: the average of the measured
    /// ones, so it neither starves nor takes the tier. `None` when nobody
    /// in the group is measured: stored weights then.
    average: Option<u32>,
}

impl Weights {
    fn of(group: &[Placed]) -> Self {
        let (mut n, mut sum, mut max) = (0u64, 0u64, 0u64);
        for p in group.iter().filter(|p| matches!(p.why, Why::Load { .. })) {
            let f = free(p);
            (n, sum, max) = (n + 1, sum + f, max.max(f));
        }
        let scale = if max > MAX_WEIGHT {
            MAX_WEIGHT as f64 / max as f64
        } else {
            1.0
        };
        let average = (n > 0).then(|| Self::clamp(sum as f64 / n as f64 * scale));
        Self { scale, average }
    }

    fn clamp(w: f64) -> u32 {
        (w.round() as u64).clamp(1, MAX_WEIGHT) as u32
    }

    fn weight(&self, p: &Placed, stored: u32) -> u32 {
        match (p.why, self.average) {
            (Why::Load { .. }, _) => Self::clamp(free(p) as f64 * self.scale),
            (_, Some(avg)) if !is_full(p) => avg,
            // At capacity, or no one measured: the operator's weights.
            _ => stored,
        }
    }
}
