//! `explain --networks QNAME [QTYPE]`: who gets what now. For each known network, and for
//! a client in none, the first tier the pipe would answer with and why, through the same
//! ranking the pipe runs; one table with full target names. At thousands of networks it
//! stays readable: the first `--limit` networks, then how many networks each first tier
//! goes to.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};

use crate::config::PipeOptions;
use crate::dns::Subnet;
use crate::pipe::abi::QType;
use crate::pipe::answer::{candidate, Decision, Ranker};
use crate::pipe::zone::Record;
use crate::state::index::Metrics;
use crate::state::reading::unix_now;
use crate::text::shown;

use super::report::{table, view, why};

/// One row: who asks, what they get first, and why.
struct Row {
    network: String,
    cidr: String,
    first: Vec<String>,
    why: String,
}

pub fn explain_networks(
    opts: &PipeOptions,
    qname: &str,
    qtype: &str,
    limit: usize,
) -> anyhow::Result<()> {
    let mut store = view(opts)?;
    store.prepare(qname)?;
    let (zones, metrics) = (store.zones(), store.metrics());
    let records: Vec<Record<'_>> = zones.lookup(qname, QType::parse(qtype)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} under {}: the first tier per known network",
        shown(qname),
        shown(qtype),
        opts.algorithm
    );
    if records.is_empty() {
        let _ = writeln!(out, "no records (pdns answers NODATA or NXDOMAIN)");
        return print(&out);
    }
    let mut ranker = Ranker::from_options(opts);
    let now = unix_now();
    let mut rows = Vec::new();
    for n in metrics.networks() {
        let (first, why) = first_tier(&mut ranker, &records, metrics, n.subnet, now)?;
        rows.push(Row {
            network: shown(&n.name),
            cidr: shown(&n.cidr),
            first,
            why,
        });
    }
    let nowhere = outside(metrics);
    let (first, why) = match nowhere {
        Some(client) => first_tier(&mut ranker, &records, metrics, client, now)?,
        None => (Vec::new(), "every address is in a known network".into()),
    };
    let known = rows.len();
    let mut header = vec![vec![
        "network".into(),
        "cidr".into(),
        "first tier".into(),
        "why (first target)".into(),
    ]];
    let shown_rows = if limit == 0 { known } else { limit.min(known) };
    for r in rows.iter().take(shown_rows) {
        header.push(vec![
            r.network.clone(),
            r.cidr.clone(),
            r.first.join(", "),
            r.why.clone(),
        ]);
    }
    header.push(vec![
        "(no known network)".into(),
        "-".into(),
        first.join(", "),
        why,
    ]);
    out.push_str(&table(&header));
    if shown_rows < known {
        let _ = writeln!(
            out,
            "... and {} more networks (--limit 0 shows all); first tiers over all {known}:",
            known - shown_rows
        );
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for r in &rows {
            *count.entry(r.first.join(", ")).or_default() += 1;
        }
        let mut by: Vec<(String, usize)> = count.into_iter().collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (tier, n) in by {
            let s = if n == 1 { "" } else { "s" };
            let _ = writeln!(out, "  {n:>7} network{s}: {tier}");
        }
    }
    print(&out)
}

fn print(out: &str) -> anyhow::Result<()> {
    Ok(io::stdout().write_all(out.as_bytes())?)
}

/// The records of the lowest priority the answer gives (all of an A/AAAA answer), by
/// target name, and why the first of them is there.
fn first_tier(
    ranker: &mut Ranker,
    records: &[Record<'_>],
    metrics: &Metrics,
    client: Subnet,
    now: f64,
) -> anyhow::Result<(Vec<String>, String)> {
    let mut tiers: Vec<(String, Vec<String>)> = Vec::new();
    for rrset in records.chunk_by(|a, b| a.rtype == b.rtype) {
        let mut sent: Vec<(i64, String)> = Vec::new();
        let decision = ranker.answer(rrset, metrics, client, now, &mut |_| Ok(()))?;
        let placed = ranker.placed();
        let mut why_first = "as stored".to_owned();
        match decision {
            Decision::Ranked(_) if !placed.is_empty() => {
                let mut placed: Vec<_> = placed.iter().filter(|p| p.place.is_some()).collect();
                placed.sort_by_key(|p| p.place.map(|(prio, w)| (prio, std::cmp::Reverse(w))));
                for p in &placed {
                    let target = candidate(&rrset[p.idx]).map_or("?", |c| c.target);
                    let prio = p.place.map_or(0, |(prio, _)| prio);
                    sent.push((prio, shown(target)));
                }
                if let Some(p) = placed.first() {
                    let target = candidate(&rrset[p.idx]).map_or("?", |c| c.target);
                    let drain = metrics.drain(target).map(|d| shown(&d.reason));
                    why_first = why(p.why, drain.as_deref());
                }
            }
            _ => {
                for r in rrset {
                    if let Some(c) = candidate(r) {
                        if metrics.drain(c.target).is_none() {
                            sent.push((r.prio.unwrap_or(0), shown(c.target)));
                        }
                    }
                }
            }
        }
        let best = sent.iter().map(|(p, _)| *p).min();
        let first: Vec<String> = sent
            .into_iter()
            .filter(|(p, _)| Some(*p) == best)
            .map(|(_, t)| t)
            .collect();
        tiers.push((why_first, first));
    }
    // ANY asks for several types; their first tiers are listed together.
    let why = tiers.first().map(|(w, _)| w.clone()).unwrap_or_default();
    let first = tiers.into_iter().flat_map(|(_, f)| f).collect();
    Ok((first, why))
}

/// An address in no known network, to show what such clients get: the first of a few
/// documentation and loopback addresses that no network covers.
fn outside(metrics: &Metrics) -> Option<Subnet> {
    let tries: [IpAddr; 4] = [
        Ipv4Addr::new(192, 0, 2, 1).into(),
        Ipv4Addr::new(127, 0, 0, 1).into(),
        Ipv4Addr::new(100, 64, 0, 1).into(),
        "2001:db8::1"
            .parse()
            .unwrap_or(Ipv4Addr::UNSPECIFIED.into()),
    ];
    tries
        .into_iter()
        .map(Subnet::host)
        .find(|s| metrics.network_for(*s).is_none())
}
