//! Turns one RRset into DATA lines: as stored, or ordered by the selection
//! algorithm for SRV and multi-address A/AAAA RRsets.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use log::warn;

use crate::dns::{RType, Subnet};
use crate::pipe::abi::{self, AbiVersion, Data};
use crate::pipe::zone::Record;
use crate::select::{self, Algorithm, Candidate, Context, Outcome, Placed};
use crate::state::index::Metrics;
use crate::state::service::{Service, Transport};

/// What [`Ranker::answer`] did with an RRset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Sent as stored: the static algorithm, a type that is not ranked, a
    /// single record, or an SRV whose content does not parse.
    AsStored,
    /// Ordered by the algorithm.
    Ranked(Outcome),
}

/// While every target of some RRset is down, say so at most this often.
const FAIL_OPEN_LOG_EVERY: Duration = Duration::from_secs(30);

pub struct Ranker {
    pub algorithm: Algorithm,
    dynamic_ttl: u32,
    stale_after: f64,
    /// Scratch space kept between questions, so ranking does not allocate
    /// once the buffers have grown to the largest RRset.
    cands: Vec<Candidate<'static>>,
    placed: Vec<Placed>,
    fail_open_logged: Option<Instant>,
}

/// Empties a vector and hands its allocation over for another lifetime.
/// std collects a `map` over `into_iter` in place when the layouts match.
pub fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

impl Ranker {
    /// The ranker the pipe's options describe, as the pipe and `explain` use it.
    pub fn from_options(o: &crate::config::PipeOptions) -> Self {
        Self::new(o.algorithm, o.dynamic_ttl.0, o.stale_after.0)
    }

    pub fn new(algorithm: Algorithm, dynamic_ttl: u32, stale_after: u32) -> Self {
        Self {
            algorithm,
            dynamic_ttl,
            stale_after: f64::from(stale_after),
            cands: Vec::new(),
            placed: Vec::new(),
            fail_open_logged: None,
        }
    }

    /// Writes `rrset` (records of one name and type) for `client` as DATA
    /// lines in the format of `abi`.
    pub fn write(
        &mut self,
        out: &mut dyn Write,
        abi: AbiVersion,
        rrset: &[Record<'_>],
        metrics: &Metrics,
        client: Subnet,
        now: f64,
    ) -> io::Result<()> {
        self.answer(rrset, metrics, client, now, &mut |d| {
            abi::write_data(out, abi, d)
        })
        .map(drop)
    }

    /// Decides the answer for `rrset` and hands each record that goes out
    /// to `emit`, in order, as the pipe sends it. What was decided is
    /// returned, and for a ranked answer each candidate's place and why is
    /// in [`Ranker::placed`] until the next call: `explain` prints from
    /// that, so it shows what the pipe does rather than a second opinion.
    pub fn answer<'a>(
        &mut self,
        rrset: &[Record<'a>],
        metrics: &Metrics,
        client: Subnet,
        now: f64,
        emit: &mut dyn FnMut(&Data<'a>) -> io::Result<()>,
    ) -> io::Result<Decision> {
        self.placed.clear();
        let Some(first) = rrset.first() else {
            return Ok(Decision::AsStored);
        };
        // Static answers go out as stored unless an operator drained a
        // target, which every algorithm must leave out.
        let as_is = self.algorithm == Algorithm::Static && !metrics.any_drained();
        if as_is || !first.rtype.is_rankable() || rrset.len() < 2 {
            rrset.iter().try_for_each(|r| emit(&as_stored(r)))?;
            return Ok(Decision::AsStored);
        }
        let mut cands = recycle(std::mem::take(&mut self.cands));
        for r in rrset {
            match candidate(r) {
                Some(c) => cands.push(c),
                // An SRV whose content does not parse cannot be re-weighted;
                // the RRset goes out as stored rather than half-ranked.
                None => {
                    self.cands = recycle(cands);
                    rrset.iter().try_for_each(|r| emit(&as_stored(r)))?;
                    return Ok(Decision::AsStored);
                }
            }
        }
        let cx = Context {
            client,
            now,
            stale_after: self.stale_after,
        };
        let outcome = select::select(self.algorithm, &cands, metrics, &cx, &mut self.placed);
        self.cands = recycle(cands);
        if outcome.fail_open {
            self.log_fail_open(first.name, "down: answering with all those not drained");
        } else if outcome.all_drained {
            self.log_fail_open(first.name, "drained: answering with all of them");
        }
        let is_srv = first.rtype == RType::Srv;
        let best = self
            .placed
            .first()
            .and_then(|p| p.place)
            .map(|(prio, _)| prio);
        for p in &self.placed {
            let Some((prio, weight)) = p.place else {
                continue;
            };
            // A and AAAA have no priorities to carry the order: a ranked
            // answer is the best group of addresses alone.
            if !is_srv && outcome.dynamic && Some(prio) != best {
                continue;
            }
            let r = &rrset[p.idx];
            let mut d = as_stored(r);
            d.scopebits = outcome.scopebits;
            d.ttl = r.ttl.min(self.dynamic_ttl);
            if is_srv {
                d.prio = Some(prio);
                d.weight = Some(weight);
                d.content = srv_rest(r.content).unwrap_or(r.content);
            }
            emit(&d)?;
        }
        Ok(Decision::Ranked(outcome))
    }

    /// Each candidate's place and why, best first, from the last
    /// [`Ranker::answer`] that ranked; `idx` points into its RRset.
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    fn log_fail_open(&mut self, name: &str, what: &str) {
        let now = Instant::now();
        if self
            .fail_open_logged
            .is_none_or(|t| now.duration_since(t) >= FAIL_OPEN_LOG_EVERY)
        {
            warn!(
                "every target of {} is {what} (fail open)",
                crate::text::shown(name)
            );
            self.fail_open_logged = Some(now);
        }
    }
}

pub fn as_stored<'a>(r: &Record<'a>) -> Data<'a> {
    Data {
        scopebits: 0,
        auth: r.auth,
        qname: r.name,
        qtype: r.rtype.as_str(),
        ttl: r.ttl,
        id: r.domain_id,
        prio: r.prio,
        weight: None,
        content: r.content,
    }
}

/// An SRV content without its weight: `port target`.
fn srv_rest(content: &str) -> Option<&str> {
    content
        .trim_start()
        .split_once(' ')
        .map(|(_, rest)| rest.trim_start())
}

/// The `ha_targets` key and stored priority/weight of a record.
pub fn candidate<'a>(r: &Record<'a>) -> Option<Candidate<'a>> {
    if r.rtype != RType::Srv {
        return Some(Candidate {
            target: r.content,
            prio: 0,
            weight: 0,
            service: None,
        });
    }
    let mut f = r.content.split_whitespace();
    let weight = f.next()?.parse::<u16>().ok()?;
    let port = f.next()?.parse::<u16>().ok()?;
    let target = f.next()?;
    f.next().is_none().then_some(())?;
    let target = target.strip_suffix('.').unwrap_or(target);
    let service = Transport::of_owner(r.name).map(|(transport, _)| Service { transport, port });
    Some(Candidate {
        target,
        prio: r.prio?,
        weight: u32::from(weight),
        service,
    })
}
