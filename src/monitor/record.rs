//! Persistence of a round: verdicts through anti-flap, latency and load written in one
//! transaction, and the exporter's figures filled in a copy swapped in after the commit.

use std::sync::Mutex;

use log::warn;

use super::openmetrics::{Figures, LatencyFigure, Stamped};
use super::targets::{key_of, service_label, LoadSource, Round};
use super::verdict::{service_verdict, verdict, Checked, Reading, ServiceReading};
use crate::config::MonitorOptions;
use crate::net::probe;
use crate::state::reading::{unix_now, Source};
use crate::state::service::Service;
use crate::state::writer::{WriteError, Writer};
use crate::text::{shown, Reported};

/// Every latency reading the monitor writes is a probe's.
const MONITOR: Source = Source::Monitor;

/// `network`: where the latency readings belong, `*` or the vantage
/// network of `--network`.
pub(super) fn write_round(
    w: &Writer,
    network: &str,
    round: &Round<'_>,
    (readings, service_readings): (&[Reading], &[Option<ServiceReading>]),
    opts: &MonitorOptions,
    reported: &mut Reported,
    figures: &Mutex<Figures>,
) -> Result<(), WriteError> {
    let Round {
        targets, services, ..
    } = *round;
    let now = unix_now();
    // Decided before the transaction, which holds the write lock.
    let verdicts: Vec<_> = targets
        .iter()
        .zip(readings)
        .map(|(t, r)| verdict(t, r, reported))
        .collect();
    let service_verdicts: Vec<_> = services
        .iter()
        .zip(service_readings)
        .map(|(sp, r)| {
            let t = &targets[sp.target];
            r.as_ref()
                .and_then(|r| service_verdict(t, sp, r, opts.cert_warn_days, now, reported))
        })
        .collect();
    let drained: std::collections::HashSet<String> =
        w.drains()?.into_iter().map(|d| d.target).collect();
    // A copy, put back after the commit: a scrape never waits on SQLite's write lock.
    let mut f = figures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    f.retain_targets(targets.iter().map(|t| t.name.as_str()));
    let advertised: std::collections::HashSet<_> = services
        .iter()
        .map(|sp| key_of(&targets[sp.target], sp))
        .collect();
    f.services.retain(|k, _| advertised.contains(k));
    let changes = w.transaction(|w| {
        let mut changes = Vec::new();
        for ((t, r), v) in targets.iter().zip(readings).zip(&verdicts) {
            let x = f.targets.entry(t.name.clone()).or_default();
            x.drained = drained.contains(&t.name);
            if let Some((ok, why)) = v {
                let (before, after) = w.probe(&t.name, *ok, opts.anti_flap)?;
                x.health = Some(Stamped {
                    value: after,
                    at: now,
                });
                if before.is_some_and(|b| b != after) || (before.is_none() && !after) {
                    changes.push((t.name.clone(), after, why.clone()));
                }
            }
            match &r.health {
                Some(Checked::Sip(a)) if !t.accept.accepts(a.code) => {
                    let kind = probe::ProbeErrorKind::Remote(format!("answered {a}"));
                    f.probe_error(&t.name, "health", &kind);
                }
                Some(Checked::Failed(e)) => f.probe_error(&t.name, "health", &e.kind),
                _ => {}
            }
            let rtt = match &r.health {
                Some(Checked::Sip(a)) if t.accept.accepts(a.code) => Some(a.rtt),
                Some(Checked::Connected(rtt)) => Some(*rtt),
                _ => None,
            };
            match (rtt, &r.health) {
                (Some(rtt), _) => {
                    let ms = rtt.as_secs_f64() * 1000.0;
                    let stored = w.latency(network, &t.name, MONITOR, ms, None)?;
                    // The stored average the pipe ranks by, not this one round trip.
                    f.targets.entry(t.name.clone()).or_default().latency = vec![LatencyFigure {
                        network: network.into(),
                        source: "monitor".into(),
                        seconds: stored.ewma_ms / 1000.0,
                        at: stored.updated,
                    }];
                }
                // Only silence counts as a timeout; a wrong answer is a
                // failure but says nothing about the round trip.
                (None, Some(Checked::Failed(e))) if e.is_unreachable() => {
                    w.latency_timeout(network, &t.name, MONITOR)?;
                }
                _ => {}
            }
            // Capacity as the pipe takes it: the load source's figure, else the
            // operator's `ha_targets.max_sessions`.
            let x = f.targets.entry(t.name.clone()).or_default();
            match &r.load {
                None if t.load == LoadSource::None => x.capacity = t.max_sessions,
                // Not read this round: the last figures stand until read again.
                None => {}
                Some(Ok(l)) => {
                    reported.fine(&t.name, "load");
                    w.load(&t.name, l.sessions, l.max)?;
                    let x = f.targets.entry(t.name.clone()).or_default();
                    x.sessions = Some(Stamped {
                        value: l.sessions,
                        at: now,
                    });
                    x.capacity = l.max.or(t.max_sessions);
                }
                // Unknown, never zero: an unreadable server is not idle.
                Some(Err(e)) => {
                    reported.problem(&t.name, "load", &e.to_string());
                    f.probe_error(&t.name, "load", &e.kind);
                    w.clear_load(&t.name)?;
                    let x = f.targets.entry(t.name.clone()).or_default();
                    x.sessions = None;
                    x.capacity = t.max_sessions;
                }
            }
        }
        let keys: Vec<(String, Service)> = services
            .iter()
            .map(|sp| (targets[sp.target].name.clone(), sp.service))
            .collect();
        w.retain_services(&keys)?;
        for ((sp, r), v) in services.iter().zip(service_readings).zip(&service_verdicts) {
            let t = &targets[sp.target];
            f.services.entry(key_of(t, sp)).or_default();
            if let Some(Checked::Failed(e)) = r.as_ref().map(|r| &r.checked) {
                f.probe_error(&t.name, sp.service.transport.as_str(), &e.kind);
                if let probe::ProbeErrorKind::Tls { reason, .. } = &e.kind {
                    let x = f.services.entry(key_of(t, sp)).or_default();
                    *x.tls_failures.entry(reason).or_default() += 1;
                }
            }
            let Some(v) = v else { continue };
            let expiry = v.cert_expiry.map(|e| e as f64);
            let (before, after) =
                w.service_probe(&t.name, sp.service, v.ok, &v.why, expiry, opts.anti_flap)?;
            let x = f.services.entry(key_of(t, sp)).or_default();
            x.health = Some(Stamped {
                value: after,
                at: now,
            });
            if v.cert_expiry.is_some() {
                x.cert_expiry = v.cert_expiry;
                x.cert_expiring = v.expiring;
            }
            if before.is_some_and(|b| b != after) || (before.is_none() && !after) {
                changes.push((service_label(t, sp.service), after, v.why.clone()));
            }
        }
        Ok(changes)
    })?;
    *figures.lock().unwrap_or_else(|p| p.into_inner()) = f;
    for (name, up, why) in changes {
        match up {
            true => warn!("{}: up again ({})", shown(&name), shown(&why)),
            false => warn!("{}: down ({})", shown(&name), shown(&why)),
        }
    }
    Ok(())
}
