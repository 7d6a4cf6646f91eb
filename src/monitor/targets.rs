//! What the monitor probes, read from the database: each `ha_targets` row as a target
//! (its own probe, its load source, the host its services are probed at) and each service
//! an SRV record advertises (`_sip._udp`, `_sip._tcp`, `_sips._tcp`).

use std::collections::HashMap;

use super::tls::TlsSettings;
use crate::net::kamailio;
use crate::state::codes::AcceptCodes;
use crate::state::service::{Service, Transport};
use crate::state::writer::{WriteError, Writer};
use crate::text::Reported;

/// SIP's default port, for targets without a `probe_address`.
pub(super) const SIP_PORT: u16 = 5060;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    None,
    SipUdp,
    SipTcp,
    Tcp,
}

#[derive(Clone, PartialEq, Eq)]
pub(super) enum LoadSource {
    None,
    FreeSwitch { addr: String, password: String },
    Kamailio { url: String },
}

impl LoadSource {
    /// The `host:port` to resolve before reading the load.
    pub(super) fn connect_to(&self) -> Option<String> {
        match self {
            LoadSource::None => None,
            LoadSource::FreeSwitch { addr, .. } => Some(addr.clone()),
            LoadSource::Kamailio { url } => kamailio::connect_target(url),
        }
    }
}

/// One `ha_targets` row, as the monitor needs it.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) name: String,
    pub(super) probe: Probe,
    /// host:port.
    pub(super) probe_address: String,
    pub(super) accept: AcceptCodes,
    pub(super) load: LoadSource,
    /// `ha_targets.max_sessions`: the capacity when the load source reports none.
    pub(super) max_sessions: Option<u32>,
    /// The host its advertised services are probed at: `probe_address`'s host, else the
    /// name (IPv6 in brackets, ready for `:port`).
    pub(super) host: String,
    /// `ha_targets.probe_ca_file`, for its TLS services.
    pub(super) ca_file: Option<String>,
}

/// One advertised service of a target, probed as a client of that SRV record would.
pub(super) struct ServiceProbe {
    /// Index into the round's targets.
    pub(super) target: usize,
    pub(super) service: Service,
    /// The SIP domains whose records name it (for the certificate's name).
    pub(super) domains: Vec<String>,
    /// `host:port` to resolve.
    pub(super) address: String,
}

pub(super) fn read_targets(w: &Writer, reported: &mut Reported) -> Result<Vec<Target>, WriteError> {
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
                    reported.problem(&r.name, "secret", &format!("{e:#}"));
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
pub(super) fn secret(r: &crate::state::writer::TargetRow) -> anyhow::Result<String> {
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
            anyhow::anyhow!(
                "load_secret_file {path}: {e} (it must be readable by the monitor's user)"
            )
        })?;
    Ok(text.trim().to_owned())
}

/// A host ready for `:port`: an IPv6 literal in brackets.
pub(super) fn bracketed(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host.to_owned(),
    }
}

/// The host part of a `probe_address` (`host:port`, `[v6]:port`, or a bare host).
pub(super) fn host_of(address: &str) -> String {
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
pub(super) fn read_services(
    w: &Writer,
    targets: &[Target],
) -> Result<Vec<ServiceProbe>, WriteError> {
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
pub(super) fn key_of(t: &Target, sp: &ServiceProbe) -> (String, &'static str, u16) {
    (
        t.name.clone(),
        sp.service.transport.as_str(),
        sp.service.port,
    )
}

/// The name a service goes by in logs and `Reported`: `target transport/port`.
pub(super) fn service_label(t: &Target, s: Service) -> String {
    format!("{} {}/{}", t.name, s.transport, s.port)
}

/// Everything a round probes, and with what.
pub(super) struct Round<'a> {
    pub(super) targets: &'a [Target],
    pub(super) services: &'a [ServiceProbe],
    pub(super) tls: Option<&'a TlsSettings>,
}
