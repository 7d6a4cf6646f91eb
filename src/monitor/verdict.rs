//! The verdict policy: what one round's probe results mean for a target and for each of
//! its advertised services (accepted codes, a server that refuses calls, what says nothing
//! about health), apart from how they are probed and how they are stored.

use std::time::Duration;

use super::sip_options::Answer;
use super::targets::{service_label, ServiceProbe, Target};
use super::tls::{self, CertSeen};
use crate::net::probe::ProbeError;
use crate::text::Reported;

/// What a service probe found, and for TLS what the certificate said.
pub(super) struct ServiceReading {
    pub(super) checked: Checked,
    pub(super) cert: Option<CertSeen>,
}

/// What a health probe found: a SIP answer (accepted or not), a bare TCP
/// handshake's time, or why there was no answer.
#[derive(Clone)]
pub(super) enum Checked {
    Sip(Answer),
    Connected(Duration),
    Failed(ProbeError),
}

/// What a load source said: FreeSWITCH's readiness comes with its load.
pub(super) struct LoadReading {
    pub(super) sessions: u32,
    pub(super) max: Option<u32>,
    /// Why the server refuses new calls, if it does.
    pub(super) refuses: Option<String>,
}

/// What one round found out about a target. `None`: not measured.
#[derive(Default)]
pub(super) struct Reading {
    pub(super) health: Option<Checked>,
    pub(super) load: Option<Result<LoadReading, ProbeError>>,
}

/// The health verdict of one round for one target: `Some((ok, why))`, or
/// `None` when nothing was learnt (not probed, or the failure was ours).
pub(super) fn verdict(t: &Target, r: &Reading, reported: &mut Reported) -> Option<(bool, String)> {
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
pub(super) struct ServiceVerdict {
    pub(super) ok: bool,
    pub(super) why: String,
    pub(super) cert_expiry: Option<i64>,
    pub(super) expiring: bool,
}

/// A service's verdict: as a row probe's (accepted codes, our own shortage is none), and
/// for TLS the certificate's expiry, warned about within `warn_days`.
pub(super) fn service_verdict(
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
