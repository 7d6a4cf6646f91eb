//! Round trips from Kamailio's registrar keepalives: usrloc with `ka_mode` sends an OPTIONS to
//! every registered contact once per `timer_interval` and records how long the reply took.
//! `ul.dump` over JSON-RPC (jsonrpcs over xhttp, as for the monitor's load reading) shows it.
//!
//! What Kamailio 5.6.3 (Debian 12) sends, trimmed to one contact (the whole real reply, four
//! contacts over UDP and TCP, is `pipe-abi-tests/fixtures/kamailio-ul-dump.json`):
//!
//! ```text
//! → POST /RPC  {"jsonrpc":"2.0","method":"ul.dump","id":1}
//! ← {"jsonrpc": "2.0", "result": {"Domains": [{"Domain": {"Domain": "location", "Size": 1024,
//!     "AoRs": [{"Info": {"AoR": "m1", "HashID": 24742, "Contacts": [{"Contact": {
//!       "Address": "sip:m1@127.1.0.21:6000",       the Contact URI as registered
//!       "Expires": 3576,                           seconds left, or "permanent", "expired", "deleted"
//!       "Received": "sip:127.1.0.21:6000",         source address (nathelper's fix_nated_register),
//!                                                  "[not set]" without it; ";transport=tcp" for TCP
//!       "Socket": "udp:127.0.0.1:35060", "Ruid": "uloc-6b09ae40-1b35-1", "Tcpconn-Id": -1,
//!       "Last-Keepalive": 1795796565,              Unix time of the last reply (or registration)
//!       "KA-Roundtrip": 1168,                      microseconds; 0 until the first reply
//!       "Last-Modified": 1795796546, …}}]}}],
//!     "Stats": {"Records": 1, "Max-Slots": 1}}}]}, "id": 1}
//! ```
//!
//! (pretty-printed by Kamailio with tabs and newlines). The round trip is measured in
//! `ul_keepalive.c`: the From tag of the keepalive carries the send time, and the time a
//! worker handles the reply minus that is stored, in microseconds. So it includes the phone's
//! SIP stack and any wait for a Kamailio worker: a busy server reads high for every caller at
//! once (seen on a loaded test machine: single rounds 10 to 100 ms late for all phones). The keepalive goes to `Received` when it is set, else to the first
//! `Path` hop, else to the Contact URI; the caller's address is taken from the same place
//! (`Received`, else `Address`). Behind an edge proxy (Path) without `Received`, the Contact
//! URI may be a private address that matches no known network; such callers are dropped as
//! unknown, never misfiled.
//!
//! Who the caller is: the AOR (`Info.AoR`, within its usrloc domain), so that one subscriber
//! counts once however many contacts it registers ([`mod@super::aggregate`]). Which network it is
//! in: the address in `Received` when set, else the Contact URI's host. `Received` is the
//! source address Kamailio saw (with nathelper's `fix_nated_register`), which a phone cannot
//! choose past its own connection; the Contact URI is whatever the phone wrote, so without
//! `Received` a phone picks its own network. `--require-received` ignores such contacts
//! (counted as `no_received`); docs/trust.md says when to use it.
//!
//! `KA-Roundtrip` keeps its last value when a phone stops answering, so a contact counts only
//! if `Last-Keepalive` is recent (`max_age`, compared with this host's clock: run `observe` on
//! or beside the Kamailio host, with synchronised clocks).

use std::net::IpAddr;
use std::time::Duration;

use super::aggregate::{subscriber, Sample};
use crate::net::kamailio;
use crate::net::probe::{ProbeError, ProbeErrorKind};
use serde::Deserialize;

/// An `ul.dump` reply is about 890 bytes per contact (8.9 MB for 10,000 measured); this
/// allows some 70,000.
pub const MAX_DUMP: usize = 64 << 20;

/// One round's contacts: the round trips, and what was left out and why.
#[derive(Debug, Default, PartialEq)]
pub struct Dump {
    pub samples: Vec<Sample>,
    pub skipped: Skipped,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Contacts whose registration has expired or been deleted.
    pub expired: usize,
    /// `KA-Roundtrip` 0: no keepalive answered yet (or `ka_mode` is off).
    pub unanswered: usize,
    /// `Last-Keepalive` older than `max_age`: the phone stopped answering.
    pub stale: usize,
    /// No usable address (a host name, garbage) or fields missing.
    pub unusable: usize,
    /// No `Received` while `--require-received` is given.
    pub no_received: usize,
}

/// Reads `ul.dump` from `url` (`http://host:port/RPC`) and returns the round trips. `now` is
/// Unix time in seconds; `require_received` leaves out contacts without `Received`.
pub fn read(
    url: &str,
    timeout: Duration,
    now: f64,
    max_age: f64,
    require_received: bool,
) -> Result<Dump, ProbeError> {
    let body = kamailio::call(url, "ul.dump", MAX_DUMP, timeout)?;
    parse(&body, now, max_age, require_received).map_err(|e| ProbeError {
        peer: url.to_owned(),
        kind: ProbeErrorKind::Protocol(format!(
            "no result.Domains array in the ul.dump reply ({e})"
        )),
    })
}

/// The reply as far as it matters, read by serde: one level of types per level of the
/// dump. Contacts stay loose values, so that one unreadable contact is skipped and counted
/// rather than failing the whole round.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    result: Dumped<'a>,
}

#[derive(Deserialize)]
struct Dumped<'a> {
    #[serde(rename = "Domains", borrow)]
    domains: Vec<DomainItem<'a>>,
}

#[derive(Deserialize)]
struct DomainItem<'a> {
    #[serde(rename = "Domain", borrow)]
    domain: Domain<'a>,
}

#[derive(Deserialize)]
struct Domain<'a> {
    /// The usrloc table, e.g. `location`.
    #[serde(rename = "Domain", default)]
    table: String,
    #[serde(rename = "AoRs", borrow)]
    aors: Vec<AorItem<'a>>,
}

#[derive(Deserialize)]
struct AorItem<'a> {
    #[serde(rename = "Info", borrow)]
    info: Info<'a>,
}

#[derive(Deserialize)]
struct Info<'a> {
    #[serde(rename = "AoR")]
    aor: Option<String>,
    /// Absent in `ul.dump brief`: nothing to measure. Kept as raw text, read one by one.
    #[serde(rename = "Contacts", borrow)]
    contacts: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// One `{"Contact": {…}}`: the fields that matter.
#[derive(Deserialize)]
struct ContactItem {
    #[serde(rename = "Contact")]
    contact: Contact,
}

#[derive(Deserialize)]
struct Contact {
    #[serde(rename = "Address")]
    address: Option<String>,
    #[serde(rename = "Received")]
    received: Option<String>,
    /// Seconds left as a number; "permanent", "expired" or "deleted" as a string.
    #[serde(rename = "Expires")]
    expires: Option<serde_json::Value>,
    #[serde(rename = "Last-Keepalive")]
    last_keepalive: Option<i64>,
    #[serde(rename = "KA-Roundtrip")]
    ka_roundtrip: Option<i64>,
}

/// Parses an `ul.dump` JSON-RPC reply. A reply without the `result.Domains[].Domain.AoRs`
/// structure is an error; a contact that cannot be read is skipped and counted.
pub fn parse(
    body: &str,
    now: f64,
    max_age: f64,
    require_received: bool,
) -> serde_json::Result<Dump> {
    let reply: Reply = serde_json::from_str(body)?;
    let mut dump = Dump::default();
    for DomainItem { domain } in reply.result.domains {
        for AorItem { info } in domain.aors {
            let who = info.aor.as_deref().map(|a| subscriber(&domain.table, a));
            for c in info.contacts.into_iter().flatten() {
                let parsed =
                    serde_json::from_str::<ContactItem>(c.get()).map_err(|_| Skip::Unusable);
                match parsed.and_then(|c| contact(&c.contact, now, max_age, require_received)) {
                    Ok(s) => dump.samples.push(Sample {
                        subscriber: who,
                        ..s
                    }),
                    Err(Skip::Expired) => dump.skipped.expired += 1,
                    Err(Skip::Unanswered) => dump.skipped.unanswered += 1,
                    Err(Skip::Stale) => dump.skipped.stale += 1,
                    Err(Skip::Unusable) => dump.skipped.unusable += 1,
                    Err(Skip::NoReceived) => dump.skipped.no_received += 1,
                }
            }
        }
    }
    Ok(dump)
}

enum Skip {
    Expired,
    Unanswered,
    Stale,
    Unusable,
    NoReceived,
}

fn contact(c: &Contact, now: f64, max_age: f64, require_received: bool) -> Result<Sample, Skip> {
    if c.expires
        .as_ref()
        .and_then(|e| e.as_str())
        .is_some_and(|state| state != "permanent")
    {
        return Err(Skip::Expired);
    }
    let rtt_us = c.ka_roundtrip.ok_or(Skip::Unusable)?;
    let last = c.last_keepalive.ok_or(Skip::Unusable)?;
    let received = c.received.as_deref().filter(|r| *r != "[not set]");
    if require_received && received.is_none() {
        return Err(Skip::NoReceived);
    }
    let uri = received.or(c.address.as_deref());
    let caller = uri.and_then(uri_host).ok_or(Skip::Unusable)?;
    if rtt_us <= 0 {
        return Err(Skip::Unanswered);
    }
    if (now - last as f64).abs() > max_age {
        return Err(Skip::Stale);
    }
    Ok(Sample {
        caller,
        subscriber: None,
        rtt_ms: rtt_us as f64 / 1000.0,
    })
}

/// The host of a SIP URI when it is an IP address: `sip:user@192.0.2.1:5060;transport=tcp`,
/// `sips:[2001:db8::1]:5061`, `sip:192.0.2.1`. Host names give `None`: resolving them would
/// be a guess about what Kamailio resolved.
fn uri_host(uri: &str) -> Option<IpAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = rest.split([';', '?']).next()?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => hostport.split(':').next()?,
    };
    host.parse().ok()
}

#[cfg(test)]
mod tests;
