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
//! one transaction, so the pipe never reads half of one. With `--metrics-listen`, each
//! round also sums what this host's pipe processes answered ([`pipes`]).
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
pub mod pipes;
pub mod pool;
mod record;
pub mod resolve;
pub mod sip_options;
pub mod stream;
mod targets;
pub mod tls;
mod verdict;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::MonitorOptions;
use crate::state::reading::ANY_NETWORK;

use crate::state::writer::Writer;
use crate::text::{shown, Reported};
use openmetrics::Figures;

use self::pipes::PipeTotals;
use self::pool::{Degraded, Done, Start};
use self::record::*;
use self::resolve::{Lookup, Resolver};
use self::stream::{StreamDone, StreamOk, StreamSpec};
use self::targets::*;
use self::tls::TlsSettings;
use self::verdict::*;
use crate::net::kamailio;
use crate::net::probe::{self, ProbeError};
use crate::state::service::Transport;

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
    let mut verifiers: HashMap<Option<&str>, anyhow::Result<_>> = HashMap::new();
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
                let spec = match v {
                    Ok((inner, trust)) => {
                        settings.spec(Arc::clone(inner), trust, &t.name, &sp.domains)
                    }
                    // Said for every service that names the file: one error, many probes.
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                };
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
                        reported.problem(&label, "tls set-up", &format!("not probed: {e:#}"));
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

pub fn run(opts: &MonitorOptions) -> anyhow::Result<()> {
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
    // Only worth reading for a scraper.
    let mut pipes = match opts.metrics_listen {
        Some(_) => opts.pipe_counters.clone().map(PipeTotals::new),
        None => None,
    };
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
                return Err(e.into());
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
        let pipe_figures = pipes.as_mut().map(|p| p.read(&mut reported));
        if let Ok(mut f) = figures.lock() {
            if pipe_figures.is_some() {
                f.pipes = pipe_figures;
            }
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

    use super::sip_options::{AcceptCodes, Answer};

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
