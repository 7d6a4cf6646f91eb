//! `pdns-ha observe`: round-trip times that a SIP server already sees, turned into latency
//! per known client network. One file per source (registrar keepalives, kernel TCP RTT,
//! FreeSWITCH's RTCP round trips of calls) and one for the statistics that group callers
//! into networks. Calls arrive as events, so [`freeswitch`] listens on a thread of its own
//! and each round takes the calls that ended since the last; they are written as source
//! `freeswitch`, apart from the others, with the calls' MOS and loss beside them.
//!
//! It runs on or beside one SIP server, named by `--target` (its `ha_targets` row). Each
//! round reads every source, pools the round trips (a caller seen by both sources counts
//! once, with the median of its samples), groups them by `ha_networks` as the pipe does
//! (longest prefix), and writes one latency sample per network that has enough distinct
//! callers, through the same writer as `monitor` and `metric` (mean, EWMA, sample count,
//! memcached), as source `observe` with its number of callers, which is what it weighs when
//! the pipe fuses it with other sources of the same network ([`crate::select::latency`]). A network without enough callers this round gets nothing: its reading ages
//! out rather than turning into a guess. A source that fails is logged once until it works
//! again, and writes nothing; the target's other readings (health, load, `*`) are not
//! touched.

pub mod aggregate;
pub mod freeswitch;
pub mod keepalive;
pub mod openmetrics;
pub mod tcp_rtt;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::ObserveOptions;
use crate::dns::Subnet;
use crate::state::index::Metrics;
use crate::state::reading::{unix_now, Source};
use crate::state::writer::Writer;
use crate::text::Reported;

use aggregate::{aggregate, NetworkRtt, Policy, Sample};
use openmetrics::{Figures, NetworkFigures, Round};

pub fn run(opts: &ObserveOptions) -> anyhow::Result<()> {
    let cache = opts
        .cache
        .as_ref()
        .map(crate::state::memcached::Cache::connect)
        .transpose()?;
    let w = Writer::open(&opts.db, cache)?;
    let target = w.target(&opts.target)?;
    let mut reported = Reported::default();
    let figures = Arc::new(Mutex::new(Figures::new(&target)));
    if let Some(addr) = opts.metrics_listen {
        crate::net::openmetrics::serve(addr, Arc::clone(&figures), openmetrics::render)?;
    }
    let interval = Duration::from_secs(u64::from(opts.interval.0));
    // Calls arrive as events: the listener gathers them between rounds, and the first
    // round (the only one with --once) comes after one interval of listening.
    let source = opts
        .freeswitch
        .as_ref()
        .map(|f| {
            let file = f.password_file.as_deref();
            freeswitch::Endpoint::new(&f.addr, file, f.caller_header.as_deref())
        })
        .transpose()?;
    let calls = source
        .as_ref()
        .map(|_| Arc::new(Mutex::new(freeswitch::Calls::default())));
    if let (Some(src), Some(calls)) = (source, &calls) {
        freeswitch::spawn(&target, src, Arc::clone(calls))?;
        thread::sleep(interval);
    }
    loop {
        let start = Instant::now();
        let mut figs = Round::default();
        let calls = calls.as_deref();
        let result = round(&w, &target, opts, &mut reported, &mut figs, calls);
        if let Ok(mut f) = figures.lock() {
            f.add_round(figs, start.elapsed().as_secs_f64());
        }
        if let Err(e) = result {
            // As the monitor: the next round tries again.
            if opts.once {
                return Err(e);
            }
            warn!("{target}: writing readings: {e:#}");
        }
        if opts.once {
            return Ok(());
        }
        thread::sleep(interval.saturating_sub(start.elapsed()));
    }
}

/// One round: read, group, write; what it found goes into `figs` as it goes.
fn round(
    w: &Writer,
    target: &str,
    opts: &ObserveOptions,
    reported: &mut Reported,
    figs: &mut Round,
    calls: Option<&Mutex<freeswitch::Calls>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // Read every round: an operator's new network applies without a restart.
    let mut networks = Metrics::default();
    let rows = w.networks()?;
    figs.known = Some(rows.iter().map(|(cidr, _)| cidr.clone()).collect());
    for (cidr, name) in rows {
        if let Err(e) = networks.add_network(&cidr, &name) {
            reported.problem(target, "ha_networks", &e.to_string());
        }
    }
    let networks = networks.finish();
    let samples = collect(target, opts, reported, figs);
    let policy = Policy {
        min_callers: opts.min_callers as usize,
        ..Policy::default()
    };
    let calls = calls.map(|c| freeswitch::round(w, target, &networks, &policy, c, figs));
    let (figures, dropped) = aggregate(
        &samples,
        |ip| networks.network_for(Subnet::host(ip)).map(|n| &*n.cidr),
        &policy,
    );
    if dropped.unknown_network > 0 {
        info!(
            "{target}: {} round trips from {} callers in no known network, ignored{}",
            dropped.unknown_network,
            dropped.unknown_callers,
            dropped.unknown_where()
        );
    }
    if dropped.implausible > 0 {
        info!(
            "{target}: {} round trips of 0 or over {} ms, ignored",
            dropped.implausible, policy.max_ms
        );
    }
    for (net, callers) in &dropped.too_few_callers {
        info!(
            "{target}: network {net}: {callers} callers, fewer than --min-callers {}: no reading",
            policy.min_callers
        );
    }
    figs.drop_samples("unknown_network", dropped.unknown_network);
    figs.drop_samples("implausible", dropped.implausible);
    figs.drop_samples("too_few_callers", dropped.too_few_samples);
    for (net, callers) in &dropped.too_few_callers {
        let n = figs.networks.entry(net.clone()).or_default();
        n.callers = *callers;
    }
    let stored = w.transaction(|w| {
        let mut stored = Vec::with_capacity(figures.len());
        for f in &figures {
            // The callers behind the figure are its weight when the pipe fuses
            // it with the other sources of this network.
            let callers = u32::try_from(f.callers).unwrap_or(u32::MAX);
            stored.push(w.latency(&f.network, target, Source::Observe, f.ms, Some(callers))?);
        }
        Ok(stored)
    })?;
    for (f, l) in figures.iter().zip(stored) {
        let NetworkRtt {
            network,
            ms,
            callers,
            ..
        } = f;
        figs.networks.insert(
            network.clone(),
            NetworkFigures {
                callers: *callers,
                round_ms: Some(*ms),
                stored: Some(l),
            },
        );
    }
    for f in &figures {
        info!(
            "{target}: network {}: {:.3} ms from {} callers ({} samples)",
            f.network, f.ms, f.callers, f.samples
        );
    }
    if opts.kamailio.is_some() || !opts.tcp_ports.is_empty() {
        info!(
            "{target}: {} samples, {} networks written in {:.0?}",
            samples.len(),
            figures.len(),
            started.elapsed()
        );
    }
    calls.unwrap_or(Ok(()))
}

/// Every source's round trips; a source that fails adds none and is reported.
fn collect(
    target: &str,
    opts: &ObserveOptions,
    reported: &mut Reported,
    figs: &mut Round,
) -> Vec<Sample> {
    let max_age = f64::from(opts.max_age.0);
    let mut samples = Vec::new();
    if let Some(url) = &opts.kamailio {
        match keepalive::read(
            url,
            opts.timeout,
            unix_now(),
            max_age,
            opts.require_received,
        ) {
            Ok(dump) => {
                reported.fine(target, "keepalives");
                let s = &dump.skipped;
                if dump.samples.is_empty() && s.unanswered > 0 {
                    // Every contact at 0: keepalives are off, or nobody answers them.
                    reported.problem(
                        target,
                        "keepalives",
                        &format!(
                            "none of {} contacts has answered a keepalive: is \
                             modparam(\"usrloc\", \"ka_mode\", 1) set?",
                            s.unanswered
                        ),
                    );
                }
                info!(
                    "{target}: ul.dump: {} round trips; skipped {} unanswered, {} stale, \
                     {} expired, {} unusable, {} without Received",
                    dump.samples.len(),
                    s.unanswered,
                    s.stale,
                    s.expired,
                    s.unusable,
                    s.no_received
                );
                figs.samples
                    .insert(openmetrics::KEEPALIVE, dump.samples.len() as u64);
                figs.drop_samples("unanswered", s.unanswered);
                figs.drop_samples("stale", s.stale);
                figs.drop_samples("expired", s.expired);
                figs.drop_samples("unusable", s.unusable);
                figs.drop_samples("no_received", s.no_received);
                samples.extend(dump.samples);
            }
            Err(e) => {
                let kind = openmetrics::keepalive_error(&e.kind);
                figs.errors.push((openmetrics::KEEPALIVE, kind));
                reported.problem(target, "keepalives", &e.to_string());
            }
        }
    }
    if !opts.tcp_ports.is_empty() {
        match tcp_rtt::established(&opts.tcp_ports) {
            Ok(conns) => {
                reported.fine(target, "tcp rtt");
                let before = samples.len();
                // An RTT is only as fresh as the last acknowledgement that updated it.
                let fresh = conns
                    .iter()
                    .filter(|c| f64::from(c.since_ack_ms) <= max_age * 1000.0);
                samples.extend(fresh.map(|c| Sample {
                    caller: c.remote,
                    subscriber: None,
                    rtt_ms: f64::from(c.rtt_us) / 1000.0,
                }));
                let fresh = samples.len() - before;
                info!(
                    "{target}: tcp: {} connections, {fresh} with a fresh round trip",
                    conns.len(),
                );
                figs.samples.insert(openmetrics::TCP, fresh as u64);
                figs.drop_samples("stale", conns.len() - fresh);
            }
            Err(e) => {
                figs.errors
                    .push((openmetrics::TCP, openmetrics::tcp_error(&e)));
                reported.problem(target, "tcp rtt", &e.to_string());
            }
        }
    }
    samples
}

/// CPU time of the calling thread: what a round costs, whatever else the machine is doing.
#[cfg(test)]
pub(crate) fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
