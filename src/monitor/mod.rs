//! `pdns-ha monitor`: polls every `ha_targets` row on an interval (health
//! and latency by SIP OPTIONS or TCP connect, load and readiness from
//! FreeSWITCH or Kamailio) and writes timestamped readings, each health
//! verdict under this monitor's id (`--monitor-id`, the host name by
//! default) so that several monitors vote instead of overwriting each other.
//! Latency is source `monitor`, under network `*` (this host's view) or,
//! with `--network`, under the known network this host sits in (a vantage
//! point, issue 11); health is global either way.
//!
//! A round: resolve every name within one probe timeout ([`resolve`]), run
//! the probes with bounded concurrency ([`pool`]), then write the round in
//! one transaction, so the pipe never reads half of one.
//!
//! What counts as a failed health check:
//! - a SIP answer whose code the target does not accept (`probe_ok_codes`,
//!   2xx by default), silence, or a refused connection;
//! - a FreeSWITCH that says it is not ready or has inbound calls paused.
//!
//! What does not: a name that does not resolve, or this host running out of
//! sockets or threads. Those are logged as what they are, and the target
//! keeps its last state (unknown once stale).

pub mod esl;
pub mod openmetrics;
pub mod pool;
pub mod resolve;
pub mod sip_options;
pub mod stream;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::MonitorOptions;
use crate::state::reading::{unix_now, Source, ANY_NETWORK};

/// Every latency reading the monitor writes is a probe's.
const MONITOR: Source = Source::Monitor;
use crate::state::writer::Writer;
use crate::text::{shown, Reported};
use openmetrics::{Figures, LatencyFigure, Stamped};

use self::pool::{Degraded, Done, Start};
use self::resolve::{Lookup, Resolver};
use self::sip_options::{AcceptCodes, Answer};
use self::stream::{StreamDone, StreamOk, StreamSpec};
use self::tls::{CertSeen, TlsSettings};
use crate::net::kamailio;
use crate::net::probe::{self, ProbeError};
use crate::state::service::{Service, Transport};

/// SIP's default port, for targets without a `probe_address`.
const SIP_PORT: u16 = 5060;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl LoadSource {
    /// The `host:port` to resolve before reading the load.
    fn connect_to(&self) -> Option<String> {
        match self {
            LoadSource::None => None,
            LoadSource::FreeSwitch { addr, .. } => Some(addr.clone()),
            LoadSource::Kamailio { url } => kamailio::connect_target(url),
        }
    }
}

/// One `ha_targets` row, as the monitor needs it.
#[derive(Clone)]
struct Target {
    name: String,
    probe: Probe,
    /// host:port.
    probe_address: String,
    accept: AcceptCodes,
    load: LoadSource,
    /// `ha_targets.max_sessions`: the capacity when the load source reports none.
    max_sessions: Option<u32>,
    /// The host its advertised services are probed at: `probe_address`'s host, else the
    /// name (IPv6 in brackets, ready for `:port`).
    host: String,
    /// `ha_targets.probe_ca_file`, for its TLS services.
    ca_file: Option<String>,
}

/// One advertised service of a target, probed as a client of that SRV record would.
struct ServiceProbe {
    /// Index into the round's targets.
    target: usize,
    service: Service,
    /// The SIP domains whose records name it (for the certificate's name).
    domains: Vec<String>,
    /// `host:port` to resolve.
    address: String,
}

/// What a service probe found, and for TLS what the certificate said.
struct ServiceReading {
    checked: Checked,
    cert: Option<CertSeen>,
}

/// What a health probe found: a SIP answer (accepted or not), a bare TCP
/// handshake's time, or why there was no answer.
#[derive(Clone)]
enum Checked {
    Sip(Answer),
    Connected(Duration),
    Failed(ProbeError),
}

/// What a load source said: FreeSWITCH's readiness comes with its load.
struct LoadReading {
    sessions: u32,
    max: Option<u32>,
    /// Why the server refuses new calls, if it does.
    refuses: Option<String>,
}

/// What one round found out about a target. `None`: not measured.
#[derive(Default)]
struct Reading {
    health: Option<Checked>,
    load: Option<Result<LoadReading, ProbeError>>,
}

fn read_targets(w: &Writer, reported: &mut Reported) -> Result<Vec<Target>, String> {
    let rows = w.targets()?;
    let mut targets = Vec::with_capacity(rows.len());
    for r in rows {
        let password = secret(&r);
        let probe = match r.probe.as_str() {
            "sip-udp" => Probe::SipUdp,
            "sip-tcp" => Probe::SipTcp,
            "tcp" => Probe::Tcp,
            _ => Probe::None,
        };
        let host = match &r.probe_address {
            Some(a) => host_of(a),
            None => bracketed(&r.name),
        };
        let probe_address = r
            .probe_address
            .unwrap_or_else(|| match r.name.contains(':') {
                // A bare IPv6 target needs brackets before the port.
                true => format!("[{}]:{SIP_PORT}", r.name),
                false => format!("{}:{SIP_PORT}", r.name),
            });
        let accept = match AcceptCodes::parse(r.probe_ok_codes.as_deref()) {
            Ok(a) => {
                reported.fine(&r.name, "configuration");
                a
            }
            Err(e) => {
                reported.problem(&r.name, "configuration", &format!("{e}; using 2xx"));
                AcceptCodes::default()
            }
        };
        let load = match (r.load_source.as_str(), r.load_address) {
            ("freeswitch", Some(addr)) => match password {
                Ok(password) => {
                    reported.fine(&r.name, "secret");
                    LoadSource::FreeSwitch { addr, password }
                }
                Err(e) => {
                    reported.problem(&r.name, "secret", &e);
                    LoadSource::None
                }
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
            accept,
            load,
            max_sessions: r.max_sessions,
            host,
            ca_file: r.probe_ca_file,
        });
    }
    Ok(targets)
}

/// The Event Socket password: from `load_secret_file` when set (read every
/// round, so a changed password needs no restart), else `load_secret`.
fn secret(r: &crate::state::writer::TargetRow) -> Result<String, String> {
    let Some(path) = &r.load_secret_file else {
        return Ok(r.load_secret.clone().unwrap_or_default());
    };
    let mut text = String::new();
    crate::files::open_regular(std::path::Path::new(path))
        .and_then(|f| {
            use std::io::Read;
            f.take(4096).read_to_string(&mut text)
        })
        .map_err(|e| {
            format!("load_secret_file {path}: {e} (it must be readable by the monitor's user)")
        })?;
    Ok(text.trim().to_owned())
}

/// A host ready for `:port`: an IPv6 literal in brackets.
fn bracketed(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host.to_owned(),
    }
}

/// The host part of a `probe_address` (`host:port`, `[v6]:port`, or a bare host).
fn host_of(address: &str) -> String {
    let a = address.trim();
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, _)) = rest.split_once(']') {
            return format!("[{h}]");
        }
    }
    if a.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{a}]");
    }
    match a.rsplit_once(':') {
        Some((h, _)) => h.to_owned(),
        None => a.to_owned(),
    }
}

/// Every service the SRV records advertise whose target has an `ha_targets` row.
fn read_services(w: &Writer, targets: &[Target]) -> Result<Vec<ServiceProbe>, String> {
    let index: HashMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut found: Vec<ServiceProbe> = Vec::new();
    let mut at: HashMap<(usize, Service), usize> = HashMap::new();
    for (owner, content) in w.srv_records()? {
        let Some((transport, domain)) = Transport::of_owner(&owner) else {
            continue;
        };
        let mut f = content.split_whitespace();
        let (Some(_weight), Some(port), Some(target), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(port) = port.parse::<u16>().ok().filter(|&p| p > 0) else {
            continue;
        };
        let key = crate::state::reading::target_key(target);
        // No row, no probe: the row is where an operator says how to reach it; and
        // `probe = 'none'` opts a target out of every probe, its services' too.
        let Some(&i) = index.get(key.as_str()) else {
            continue;
        };
        if targets[i].probe == Probe::None {
            continue;
        }
        let service = Service { transport, port };
        let domain = domain.to_ascii_lowercase();
        match at.get(&(i, service)) {
            Some(&k) => {
                if !found[k].domains.contains(&domain) {
                    found[k].domains.push(domain);
                }
            }
            None => {
                at.insert((i, service), found.len());
                found.push(ServiceProbe {
                    target: i,
                    service,
                    domains: vec![domain],
                    address: format!("{}:{port}", targets[i].host),
                });
            }
        }
    }
    Ok(found)
}

/// A service's key in the exported figures.
fn key_of(t: &Target, sp: &ServiceProbe) -> (String, &'static str, u16) {
    (
        t.name.clone(),
        sp.service.transport.as_str(),
        sp.service.port,
    )
}

/// The name a service goes by in logs and `Reported`: `target transport/port`.
fn service_label(t: &Target, s: Service) -> String {
    format!("{} {}/{}", t.name, s.transport, s.port)
}

/// A blocking load read for the worker pool: (target, resolved address).
#[derive(Clone, Copy)]
struct Job(usize, Option<SocketAddr>);

fn run_job(job: Job, targets: &[Target], timeout: Duration) -> Reading {
    let Job(i, via) = job;
    Reading {
        health: None,
        load: Some(read_load(&targets[i].load, via, timeout)),
    }
}

impl From<Done> for Checked {
    fn from(d: Done) -> Checked {
        match d {
            Done::Udp(Ok(a))
            | Done::Stream(StreamDone {
                result: Ok(StreamOk::Sip(a)),
                ..
            }) => Checked::Sip(a),
            Done::Stream(StreamDone {
                result: Ok(StreamOk::Connected(rtt)),
                ..
            }) => Checked::Connected(rtt),
            Done::Udp(Err(e)) | Done::Stream(StreamDone { result: Err(e), .. }) => {
                Checked::Failed(e)
            }
        }
    }
}

fn read_load(
    source: &LoadSource,
    via: Option<SocketAddr>,
    timeout: Duration,
) -> Result<LoadReading, ProbeError> {
    match source {
        LoadSource::None => Err(ProbeError {
            peer: String::new(),
            kind: probe::ProbeErrorKind::BadTarget("no load source"),
        }),
        LoadSource::FreeSwitch { addr, password } => esl::read_status(addr, via, password, timeout)
            .map(|s| LoadReading {
                sessions: s.load.sessions,
                max: s.load.max_sessions,
                refuses: s.refuses_calls(),
            }),
        LoadSource::Kamailio { url } => {
            kamailio::read_active_dialogs_via(url, via, timeout).map(|n| LoadReading {
                sessions: n,
                max: None,
                refuses: None,
            })
        }
    }
}

/// Everything a round probes, and with what.
struct Round<'a> {
    targets: &'a [Target],
    services: &'a [ServiceProbe],
    tls: Option<&'a TlsSettings>,
}

/// Runs every probe of a round: names first (bounded by one timeout), then every health
/// probe (UDP, TCP and TLS alike) at once on this thread while the pool reads loads.
fn poll(
    round: &Round<'_>,
    opts: &MonitorOptions,
    resolver: &mut Resolver,
    reported: &mut Reported,
    degraded: &mut Degraded,
) -> (Vec<Reading>, Vec<Option<ServiceReading>>) {
    let Round {
        targets,
        services,
        tls,
    } = *round;
    let timeout = opts.timeout;
    let mut names: Vec<&str> = Vec::new();
    let load_to: Vec<Option<String>> = targets.iter().map(|t| t.load.connect_to()).collect();
    for (t, l) in targets.iter().zip(&load_to) {
        if t.probe != Probe::None {
            names.push(&t.probe_address);
        }
        if let Some(l) = l {
            names.push(l);
        }
    }
    names.extend(services.iter().map(|s| s.address.as_str()));
    let found = resolver.resolve_all(&names, timeout);
    let lookup = |reported: &mut Reported, who: &str, name: &str, what: &'static str| {
        let Lookup { addr, problem } = found.get(name).cloned().unwrap_or_default();
        match problem {
            Some(p) => {
                let kept = match addr {
                    Some(a) => format!("probing the last address it had, {a}"),
                    None => "keeping the last state".into(),
                };
                let msg = format!(
                    "resolving {name}: {p} (a resolver or configuration problem, not the \
                     server; {kept})"
                );
                reported.problem(who, what, &msg);
            }
            None => reported.fine(who, what),
        }
        addr
    };

    let mut readings: Vec<Reading> = targets.iter().map(|_| Reading::default()).collect();
    // What each started probe is for: a target's row probe or an advertised service.
    enum For {
        Row(usize),
        Service(usize),
    }
    let mut starts: Vec<Start> = Vec::new();
    let mut purposes: Vec<For> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    // A target's own SIP probe and its advertised service at the same address and
    // transport are one probe: a server is asked once a round, not twice.
    let mut row_at: HashMap<(usize, SocketAddr), Probe> = HashMap::new();
    let mut shared: Vec<(usize, usize)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if t.probe != Probe::None {
            if let Some(a) = lookup(reported, &t.name, &t.probe_address, "resolving") {
                row_at.insert((i, a), t.probe);
                starts.push(match t.probe {
                    Probe::SipUdp => Start::Udp(a),
                    p => Start::Stream(StreamSpec {
                        addr: a,
                        sip: p == Probe::SipTcp,
                        tls: None,
                        names: Vec::new(),
                    }),
                });
                purposes.push(For::Row(i));
            }
        }
        match &load_to[i] {
            // Not resolved within the timeout: no reading this round, so the
            // last load stands until it is stale.
            Some(l) => {
                if let Some(via) = lookup(reported, &t.name, l, "resolving load") {
                    jobs.push(Job(i, Some(via)));
                }
            }
            // A URL the client refuses: it says why.
            None if t.load != LoadSource::None => jobs.push(Job(i, None)),
            None => {}
        }
    }
    // Verifiers by CA file, read once a round (an operator may replace a file).
    let mut verifiers: HashMap<Option<&str>, Result<_, String>> = HashMap::new();
    for (k, sp) in services.iter().enumerate() {
        let t = &targets[sp.target];
        let label = service_label(t, sp.service);
        let Some(a) = lookup(reported, &label, &sp.address, "resolving") else {
            continue;
        };
        let same = matches!(
            (sp.service.transport, row_at.get(&(sp.target, a))),
            (Transport::Udp, Some(Probe::SipUdp)) | (Transport::Tcp, Some(Probe::SipTcp))
        );
        if same {
            shared.push((k, sp.target));
            continue;
        }
        let mut names = vec![t.name.clone()];
        names.extend(sp.domains.iter().cloned());
        let start = match sp.service.transport {
            Transport::Udp => Start::Udp(a),
            Transport::Tcp => Start::Stream(StreamSpec {
                addr: a,
                sip: true,
                tls: None,
                names,
            }),
            Transport::Tls => {
                let Some(settings) = tls else { continue };
                let v = verifiers
                    .entry(t.ca_file.as_deref())
                    .or_insert_with(|| settings.verifier_for(t.ca_file.as_deref()));
                // A CA file that cannot be read is the configuration's fault: no verdict.
                let spec = v
                    .clone()
                    .and_then(|(inner, trust)| settings.spec(inner, &trust, &t.name, &sp.domains));
                match spec {
                    Ok(spec) => {
                        reported.fine(&label, "tls set-up");
                        Start::Stream(StreamSpec {
                            addr: a,
                            sip: true,
                            tls: Some(spec),
                            names,
                        })
                    }
                    Err(e) => {
                        reported.problem(&label, "tls set-up", &format!("not probed: {e}"));
                        continue;
                    }
                }
            }
        };
        starts.push(start);
        purposes.push(For::Service(k));
    }
    let window = pool::udp_window(opts.workers);
    let mut probe_degraded = Degraded::default();
    let (done, probed) = pool::run_blocking(
        jobs.len(),
        opts.workers,
        |k| run_job(jobs[k], targets, timeout),
        || pool::many(starts, timeout, window, &mut probe_degraded),
        degraded,
    );
    degraded.0.extend(probe_degraded.0);
    let mut service_readings: Vec<Option<ServiceReading>> = services.iter().map(|_| None).collect();
    for (purpose, d) in purposes.into_iter().zip(probed) {
        match purpose {
            For::Row(i) => readings[i].health = Some(d.into()),
            For::Service(k) => {
                let cert = match &d {
                    Done::Stream(s) => s.cert.clone(),
                    Done::Udp(_) => None,
                };
                service_readings[k] = Some(ServiceReading {
                    checked: d.into(),
                    cert,
                });
            }
        }
    }
    for (k, i) in shared {
        service_readings[k] = readings[i].health.clone().map(|checked| ServiceReading {
            checked,
            cert: None,
        });
    }
    for (Job(i, _), r) in jobs.iter().zip(done) {
        if r.load.is_some() {
            readings[*i].load = r.load;
        }
    }
    (readings, service_readings)
}

/// The health verdict of one round for one target: `Some((ok, why))`, or
/// `None` when nothing was learnt (not probed, or the failure was ours).
fn verdict(t: &Target, r: &Reading, reported: &mut Reported) -> Option<(bool, String)> {
    let mut v = match &r.health {
        None => None,
        Some(Checked::Sip(a)) if t.accept.accepts(a.code) => {
            reported.fine(&t.name, "health");
            Some((true, format!("answered {a}")))
        }
        Some(Checked::Sip(a)) => {
            let why = format!(
                "{}: answered {a}, not in the accepted codes ({})",
                t.probe_address, t.accept
            );
            reported.problem(&t.name, "health", &why);
            Some((false, why))
        }
        Some(Checked::Connected(_)) => {
            reported.fine(&t.name, "health");
            Some((true, "connected".into()))
        }
        Some(Checked::Failed(e)) if e.is_resource_shortage() => {
            reported.problem(&t.name, "health", &format!("not probed: {e}"));
            None
        }
        Some(Checked::Failed(e)) => {
            let why = e.to_string();
            reported.problem(&t.name, "health", &why);
            Some((false, why))
        }
    };
    // A server that refuses new calls is unavailable, whatever OPTIONS says.
    if let Some(Ok(LoadReading {
        refuses: Some(why), ..
    })) = &r.load
    {
        reported.problem(&t.name, "availability", why);
        v = Some((false, why.clone()));
    } else if matches!(r.load, Some(Ok(_))) {
        reported.fine(&t.name, "availability");
        v = v.or(Some((true, "takes calls".into())));
    }
    v
}

/// One service's verdict of a round: up or down, why, and what its certificate said.
struct ServiceVerdict {
    ok: bool,
    why: String,
    cert_expiry: Option<i64>,
    expiring: bool,
}

/// A service's verdict: as a row probe's (accepted codes, our own shortage is none), and
/// for TLS the certificate's expiry, warned about within `warn_days`.
fn service_verdict(
    t: &Target,
    sp: &ServiceProbe,
    r: &ServiceReading,
    warn_days: u32,
    now: f64,
    reported: &mut Reported,
) -> Option<ServiceVerdict> {
    let label = service_label(t, sp.service);
    let (ok, mut why) = match &r.checked {
        Checked::Sip(a) if t.accept.accepts(a.code) => (true, format!("answered {a}")),
        Checked::Sip(a) => (
            false,
            format!(
                "{}: answered {a}, not in the accepted codes ({})",
                sp.address, t.accept
            ),
        ),
        Checked::Connected(_) => (true, "connected".to_owned()),
        Checked::Failed(e) if e.is_resource_shortage() => {
            reported.problem(&label, "health", &format!("not probed: {e}"));
            return None;
        }
        Checked::Failed(e) => (false, e.to_string()),
    };
    match ok {
        true => reported.fine(&label, "health"),
        false => reported.problem(&label, "health", &why),
    }
    let cert_expiry = r.cert.as_ref().and_then(|c| c.earliest_expiry);
    let left = cert_expiry.map(|e| e as f64 - now);
    let expiring = ok && left.is_some_and(|l| l < f64::from(warn_days) * 86_400.0);
    match (expiring, cert_expiry, left) {
        (true, Some(e), Some(l)) => {
            // The words change once a day, so the warning is logged once a day.
            let within = match l < 86_400.0 {
                true => format!("{} hours", (l / 3600.0).floor().max(0.0)),
                false => format!("{} days", (l / 86_400.0).round()),
            };
            let msg = format!("certificate expires in {within} ({})", tls::date(e));
            reported.problem(&label, "certificate", &msg);
            why = format!("{why}; {msg}");
        }
        _ if ok => reported.fine(&label, "certificate"),
        _ => {}
    }
    Some(ServiceVerdict {
        ok,
        why,
        cert_expiry,
        expiring,
    })
}

/// `network`: where the latency readings belong, `*` or the vantage
/// network of `--network`.
fn write_round(
    w: &Writer,
    network: &str,
    round: &Round<'_>,
    (readings, service_readings): (&[Reading], &[Option<ServiceReading>]),
    opts: &MonitorOptions,
    reported: &mut Reported,
    figures: &Mutex<Figures>,
) -> Result<(), String> {
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

pub fn run(opts: &MonitorOptions) -> Result<(), String> {
    let cache = opts
        .cache
        .as_ref()
        .map(crate::state::memcached::Cache::connect)
        .transpose()?;
    let w = Writer::open(&opts.db, cache)?.with_monitor(&opts.monitor_id);
    // A vantage point: latency (and timeouts) from inside a known network.
    // Checked once, at start: a typo must stop the monitor, not write `*`.
    let network = match &opts.network {
        Some(name) => w.vantage(name)?,
        None => ANY_NETWORK.to_owned(),
    };
    info!(
        "monitor {} starting, latency from {}",
        shown(w.monitor()),
        shown(&network)
    );
    let mut reported = Reported::default();
    let mut resolver = Resolver::default();
    let figures = Arc::new(Mutex::new(Figures::default()));
    if let Some(addr) = opts.metrics_listen {
        openmetrics::serve(addr, Arc::clone(&figures), openmetrics::render)?;
    }
    let interval = Duration::from_secs(u64::from(opts.interval.0));
    // Loaded once: a bad client certificate stops the monitor at start; missing system
    // roots only stop TLS probes of targets without a CA file (logged).
    let tls = TlsSettings::load(
        opts.tls_client_cert.as_deref(),
        opts.tls_client_key.as_deref(),
    )?;
    loop {
        let start = Instant::now();
        w.register_monitor();
        let targets = read_targets(&w, &mut reported)?;
        let services = read_services(&w, &targets)?;
        let round = Round {
            targets: &targets,
            services: &services,
            tls: Some(&tls),
        };
        let mut degraded = Degraded::default();
        let (readings, service_readings) =
            poll(&round, opts, &mut resolver, &mut reported, &mut degraded);
        let probed = start.elapsed();
        match degraded.0.is_empty() {
            true => reported.fine("monitor", "round"),
            false => reported.problem("monitor", "round", &degraded.0.join("; ")),
        }
        let written = write_round(
            &w,
            &network,
            &round,
            (&readings, &service_readings),
            opts,
            &mut reported,
            &figures,
        );
        if let Err(e) = written {
            // The next round tries again; a monitor that stops is worse
            // than one that missed a write.
            if opts.once {
                return Err(e);
            }
            warn!("writing readings: {e}");
        }
        info!(
            "polled {} targets in {:.2?} (written after {:.2?}), {} advertised services with them",
            targets.len(),
            probed,
            start.elapsed(),
            services.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn target(codes: Option<&str>) -> Target {
        Target {
            name: "sip1.example.com".into(),
            probe: Probe::SipUdp,
            probe_address: "192.0.2.11:5060".into(),
            accept: AcceptCodes::parse(codes).unwrap(),
            load: LoadSource::None,
            max_sessions: None,
            host: "192.0.2.11".into(),
            ca_file: None,
        }
    }

    fn sip(code: u16, reason: &str) -> Option<Checked> {
        Some(Checked::Sip(Answer {
            rtt: Duration::from_millis(3),
            code,
            reason: reason.into(),
        }))
    }

    fn failed(kind: io::ErrorKind, raw: Option<i32>) -> Option<Checked> {
        let source = match raw {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::from(kind),
        };
        Some(Checked::Failed(ProbeError {
            peer: "192.0.2.11:5060".into(),
            kind: probe::ProbeErrorKind::Io {
                during: "binding",
                source,
            },
        }))
    }

    fn load(refuses: Option<&str>) -> Option<Result<LoadReading, ProbeError>> {
        Some(Ok(LoadReading {
            sessions: 3,
            max: Some(10),
            refuses: refuses.map(str::to_owned),
        }))
    }

    fn verdict_of(
        t: &Target,
        health: Option<Checked>,
        load: Option<Result<LoadReading, ProbeError>>,
    ) -> Option<(bool, String)> {
        verdict(t, &Reading { health, load }, &mut Reported::default())
    }

    #[test]
    fn a_verdict_follows_the_accepted_codes() {
        let strict = target(None);
        let lenient = target(Some("200,401,404"));
        assert_eq!(
            verdict_of(&strict, sip(200, "OK"), None).map(|v| v.0),
            Some(true)
        );
        let (up, why) = verdict_of(&strict, sip(503, "Maximum Calls In Progress"), None).unwrap();
        assert!(!up);
        assert_eq!(
            why,
            "192.0.2.11:5060: answered 503 Maximum Calls In Progress, not in the accepted codes (2xx)"
        );
        assert_eq!(
            verdict_of(&strict, sip(404, "Not Found"), None).map(|v| v.0),
            Some(false)
        );
        assert_eq!(
            verdict_of(&lenient, sip(404, "Not Found"), None).map(|v| v.0),
            Some(true)
        );
        assert_eq!(
            verdict_of(&lenient, sip(503, "Busy"), None).map(|v| v.0),
            Some(false)
        );
    }

    #[test]
    fn our_own_shortage_is_no_verdict_but_a_refusal_is_down() {
        let t = target(None);
        assert_eq!(
            verdict_of(&t, failed(io::ErrorKind::Other, Some(libc::EMFILE)), None),
            None
        );
        let refused = verdict_of(&t, failed(io::ErrorKind::ConnectionRefused, None), None);
        assert_eq!(refused.map(|v| v.0), Some(false));
        assert_eq!(verdict_of(&t, None, None), None);
    }

    #[test]
    fn a_server_refusing_calls_is_down_whatever_options_says() {
        let t = target(None);
        let paused = verdict_of(&t, sip(200, "OK"), load(Some("paused"))).unwrap();
        assert_eq!(paused, (false, "paused".to_owned()));
        // Load alone (probe 'none'): taking calls is up.
        assert_eq!(verdict_of(&t, None, load(None)).map(|v| v.0), Some(true));
        // An unreadable load source says nothing about health.
        let refused = ProbeError {
            peer: "192.0.2.11:8021".into(),
            kind: probe::ProbeErrorKind::AuthRejected,
        };
        assert_eq!(verdict_of(&t, None, Some(Err(refused))), None);
    }
}
