//! `pdns-ha monitor`: polls every `ha_targets` row on an interval (health
//! and latency by SIP OPTIONS or TCP connect, load from FreeSWITCH or
//! Kamailio) and writes timestamped readings. Every probe of a round runs
//! in its own thread, so one slow or dead target delays the others by at
//! most one probe timeout; a round is written in one transaction, so the
//! pipe never reads half of one.

pub mod esl;
pub mod kamailio;
pub mod openmetrics;
pub mod probe;
pub mod sip_options;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::{CacheOptions, MonitorOptions};
use crate::state::reading::{unix_now, ANY_NETWORK};
use crate::state::writer::Writer;
use crate::text::shown;
use openmetrics::{Figures, LatencyFigure, Stamped};

/// SIP's default port, for targets without a `probe_address`.
const SIP_PORT: u16 = 5060;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    None,
    SipUdp,
    SipTcp,
    Tcp,
}

#[derive(Clone, PartialEq, Eq)]
enum LoadSource {
    None,
    FreeSwitch { addr: String, password: String },
    Kamailio { url: String },
}

/// One `ha_targets` row, as the monitor needs it.
#[derive(Clone)]
struct Target {
    name: String,
    probe: Probe,
    /// host:port.
    probe_address: String,
    load: LoadSource,
}

/// What one round found out about a target. `None`: not measured.
struct Reading {
    /// Round-trip time, or why the probe failed.
    health: Option<Result<Duration, probe::ProbeError>>,
    /// Sessions and, when the source reports it, capacity.
    load: Option<Result<(u32, Option<u32>), probe::ProbeError>>,
}

fn read_targets(w: &Writer, reported: &mut Reported) -> Result<Vec<Target>, String> {
    let rows = w.targets()?;
    let mut targets = Vec::with_capacity(rows.len());
    for r in rows {
        let probe = match r.probe.as_str() {
            "sip-udp" => Probe::SipUdp,
            "sip-tcp" => Probe::SipTcp,
            "tcp" => Probe::Tcp,
            _ => Probe::None,
        };
        let probe_address = r
            .probe_address
            .unwrap_or_else(|| match r.name.contains(':') {
                // A bare IPv6 target needs brackets before the port.
                true => format!("[{}]:{SIP_PORT}", r.name),
                false => format!("{}:{SIP_PORT}", r.name),
            });
        let load = match (r.load_source.as_str(), r.load_address) {
            ("freeswitch", Some(addr)) => LoadSource::FreeSwitch {
                addr,
                password: r.load_secret.unwrap_or_default(),
            },
            ("kamailio", Some(url)) => LoadSource::Kamailio { url },
            ("none", _) => LoadSource::None,
            (kind, None) => {
                reported.problem(
                    &r.name,
                    "load",
                    &format!("source {kind} has no load_address"),
                );
                LoadSource::None
            }
            _ => LoadSource::None,
        };
        targets.push(Target {
            name: r.name,
            probe,
            probe_address,
            load,
        });
    }
    Ok(targets)
}

fn resolve(addr: &str) -> Result<SocketAddr, probe::ProbeError> {
    let unusable = || probe::ProbeError {
        peer: addr.to_owned(),
        kind: probe::ProbeErrorKind::BadTarget("not an address:port that resolves"),
    };
    addr.to_socket_addrs()
        .map_err(|_| unusable())?
        .next()
        .ok_or_else(unusable)
}

fn check_health(t: &Target, timeout: Duration) -> Option<Result<Duration, probe::ProbeError>> {
    let run = |addr: SocketAddr| -> Result<Duration, probe::ProbeError> {
        match t.probe {
            Probe::SipUdp => sip_options::probe_udp(addr, timeout),
            Probe::SipTcp => sip_options::probe_tcp_sip(addr, timeout),
            _ => sip_options::probe_tcp_connect(addr, timeout),
        }
    };
    if t.probe == Probe::None {
        return None;
    }
    Some(resolve(&t.probe_address).and_then(run))
}

fn read_load(
    t: &Target,
    timeout: Duration,
) -> Option<Result<(u32, Option<u32>), probe::ProbeError>> {
    Some(match &t.load {
        LoadSource::None => return None,
        LoadSource::FreeSwitch { addr, password } => {
            esl::read_load(addr, password, timeout).map(|l| (l.sessions, l.max_sessions))
        }
        LoadSource::Kamailio { url } => {
            kamailio::read_active_dialogs(url, timeout).map(|n| (n, None))
        }
    })
}

/// Runs every probe of a round at once and waits for all of them.
fn poll(targets: &[Target], timeout: Duration) -> Vec<Reading> {
    thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| {
                (
                    s.spawn(move || check_health(t, timeout)),
                    s.spawn(move || read_load(t, timeout)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(h, l)| Reading {
                health: h.join().unwrap_or(None),
                load: l.join().unwrap_or_else(|_| {
                    Some(Err(probe::ProbeError {
                        peer: "load probe".into(),
                        kind: probe::ProbeErrorKind::Protocol("panicked".into()),
                    }))
                }),
            })
            .collect()
    })
}

/// Per-target problems already logged, so a dead target is reported when
/// it breaks and when it heals, not every round.
#[derive(Default)]
pub(crate) struct Reported(HashMap<(String, &'static str), String>);

impl Reported {
    pub(crate) fn problem(&mut self, target: &str, what: &'static str, msg: &str) {
        let key = (target.to_owned(), what);
        if self.0.get(&key).map(String::as_str) != Some(msg) {
            warn!("{}: {what}: {}", shown(target), shown(msg));
            self.0.insert(key, msg.to_owned());
        }
    }

    pub(crate) fn fine(&mut self, target: &str, what: &'static str) {
        if self.0.remove(&(target.to_owned(), what)).is_some() {
            info!("{}: {what} works again", shown(target));
        }
    }
}

fn write_round(
    w: &Writer,
    targets: &[Target],
    readings: &[Reading],
    opts: &MonitorOptions,
    reported: &mut Reported,
    figures: &Mutex<Figures>,
) -> Result<(), String> {
    let now = unix_now();
    let mut f = figures.lock().unwrap_or_else(|p| p.into_inner());
    f.retain_targets(targets.iter().map(|t| t.name.as_str()));
    w.transaction(|w| {
        for (t, r) in targets.iter().zip(readings) {
            match &r.health {
                None => {}
                Some(Ok(rtt)) => {
                    reported.fine(&t.name, "health");
                    let up = w.probe(&t.name, true, opts.anti_flap)?;
                    w.latency(ANY_NETWORK, &t.name, rtt.as_secs_f64() * 1000.0)?;
                    let x = f.targets.entry(t.name.clone()).or_default();
                    x.health = Some(Stamped { value: up, at: now });
                    // The round trip just measured (the pipe ranks by the stored EWMA).
                    x.latency = vec![LatencyFigure {
                        network: ANY_NETWORK.into(),
                        source: "monitor".into(),
                        seconds: rtt.as_secs_f64(),
                        at: now,
                    }];
                }
                Some(Err(e)) => {
                    reported.problem(&t.name, "health", &e.to_string());
                    f.probe_error(&t.name, "health", &e.kind);
                    let up = w.probe(&t.name, false, opts.anti_flap)?;
                    if !up {
                        info!("{}: down", shown(&t.name));
                    }
                    let x = f.targets.entry(t.name.clone()).or_default();
                    x.health = Some(Stamped { value: up, at: now });
                    // Only silence counts as a timeout; a wrong answer is
                    // a failure but says nothing about the round trip.
                    if e.is_unreachable() {
                        w.latency_timeout(ANY_NETWORK, &t.name)?;
                    }
                }
            }
            match &r.load {
                None => {}
                Some(Ok((sessions, max))) => {
                    reported.fine(&t.name, "load");
                    w.load(&t.name, *sessions, *max)?;
                    let x = f.targets.entry(t.name.clone()).or_default();
                    x.sessions = Some(Stamped {
                        value: *sessions,
                        at: now,
                    });
                    x.capacity = max.or(x.capacity);
                }
                // Unknown, never zero: an unreadable server is not idle.
                Some(Err(e)) => {
                    reported.problem(&t.name, "load", &e.to_string());
                    f.probe_error(&t.name, "load", &e.kind);
                    w.clear_load(&t.name)?;
                    f.targets.entry(t.name.clone()).or_default().sessions = None;
                }
            }
        }
        Ok(())
    })
}

pub fn run(opts: &MonitorOptions) -> Result<(), String> {
    let cache = opts.cache.as_ref().map(CacheOptions::connect).transpose()?;
    let w = Writer::open(&opts.db, cache)?;
    let mut reported = Reported::default();
    let figures = Arc::new(Mutex::new(Figures::default()));
    if let Some(addr) = opts.metrics_listen {
        openmetrics::serve(addr, Arc::clone(&figures))?;
    }
    let interval = Duration::from_secs(u64::from(opts.interval.0));
    loop {
        let start = Instant::now();
        let targets = read_targets(&w, &mut reported)?;
        let readings = poll(&targets, opts.timeout);
        if let Err(e) = write_round(&w, &targets, &readings, opts, &mut reported, &figures) {
            // The next round tries again; a monitor that stops is worse
            // than one that missed a write.
            if opts.once {
                return Err(e);
            }
            warn!("writing readings: {e}");
        }
        info!(
            "polled {} targets in {:.0?}",
            targets.len(),
            start.elapsed()
        );
        if let Ok(mut f) = figures.lock() {
            f.rounds += 1;
            f.last_round_seconds = Some(start.elapsed().as_secs_f64());
        }
        if opts.once {
            return Ok(());
        }
        thread::sleep(interval.saturating_sub(start.elapsed()));
    }
}
