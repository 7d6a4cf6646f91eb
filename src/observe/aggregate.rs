//! From round trips per caller to one latency figure per known network.
//!
//! A round's samples, `(caller address, rtt)`, come from every contact or connection the SIP
//! server has. Each is matched to the `ha_networks` row that holds the caller (longest prefix,
//! the same lookup the pipe uses); then:
//!
//! 1. values that cannot be a network round trip are dropped: not finite, 0 or less (Kamailio
//!    reports 0 until the first keepalive reply), or above `max_ms` (10 s by default);
//! 2. callers in no known network are dropped;
//! 3. each caller gets the median of its own samples, so a PBX with a thousand contacts
//!    behind one address counts once, not a thousand times. A caller is a subscriber (the
//!    registrar's AOR) where the source knows one, else an address (an IPv6 /64 as one): one
//!    subscriber with four contacts, or four connections from one IPv6 /64, counts once (issue 19: four contacts at
//!    1 µs outvoted three honest callers);
//! 4. a network's figure is the median over its callers, and only if it has at least
//!    `min_callers` of them.
//!
//! Why the median and why three callers by default: with three or more callers, one broken
//! link (a phone on a congested Wi-Fi, a softphone behind a far VPN exit) cannot move the
//! median past the other callers' values, whatever its value; with two, the median is their
//! mean, so one bad caller moves the network halfway. A site with fewer callers gets no
//! passive reading and falls back to the other sources (vantage probes, `*`).

use std::net::IpAddr;

/// One round trip seen by the SIP server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The address the network is looked up by.
    pub caller: IpAddr,
    /// The subscriber behind the sample when the source knows one (a hash of the
    /// registrar's domain and AOR, [`subscriber`]): all its contacts and addresses count
    /// as one caller. `None`: the address is the caller (a TCP connection).
    pub subscriber: Option<u64>,
    pub rtt_ms: f64,
}

/// The identity of a subscriber: FNV-1a of `domain`, a NUL and `aor`, stable across runs.
pub fn subscriber(domain: &str, aor: &str) -> u64 {
    let bytes = domain.bytes().chain([0]).chain(aor.bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Who one caller is: the subscriber when known, else the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Subscriber(u64),
    Address(IpAddr),
}

/// The rules of a round; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub min_callers: usize,
    pub max_ms: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_callers: 3,
            max_ms: 10_000.0,
        }
    }
}

/// A network's figure for this round.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRtt {
    /// The network's key as `ha_networks` stores it (the CIDR).
    pub network: String,
    /// Median over callers of each caller's median, milliseconds.
    pub ms: f64,
    /// Distinct callers (subscribers, or addresses where none is known) that contributed.
    pub callers: usize,
    /// Samples behind them.
    pub samples: usize,
}

/// What a round left out, for one log line per kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dropped {
    /// Samples from callers in no known network.
    pub unknown_network: usize,
    /// Distinct callers among them.
    pub unknown_callers: usize,
    /// Where those callers are: each /24 (IPv4) or /48 (IPv6) with its distinct callers,
    /// most first, at most [`UNKNOWN_PREFIXES`]. What an operator adds to `ha_networks`.
    pub unknown_prefixes: Vec<(String, usize)>,
    /// Samples that cannot be a round trip (0, negative, not finite, above `max_ms`).
    pub implausible: usize,
    /// Networks with callers, but fewer than `min_callers`: (network, callers).
    pub too_few_callers: Vec<(String, usize)>,
    /// Samples from those networks.
    pub too_few_samples: usize,
}

/// How many prefixes of callers in no known network a round names.
pub const UNKNOWN_PREFIXES: usize = 10;

/// Callers' addresses counted per /24 (IPv4) or /48 (IPv6), most first (then by prefix),
/// the first [`UNKNOWN_PREFIXES`].
fn prefixes(addresses: impl Iterator<Item = IpAddr>) -> Vec<(String, usize)> {
    let mut count: std::collections::BTreeMap<String, usize> = Default::default();
    for a in addresses {
        let len = if a.is_ipv4() { 24 } else { 48 };
        let net = crate::dns::Subnet {
            addr: a,
            prefix: len,
        }
        .network();
        *count.entry(net.to_string()).or_default() += 1;
    }
    let mut by: Vec<(String, usize)> = count.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by.truncate(UNKNOWN_PREFIXES);
    by
}

impl Dropped {
    /// `; most from 192.0.2.0/24 (2 callers), 2001:db8:5::/48 (1 caller)` for a log line,
    /// empty when all callers were in known networks.
    pub fn unknown_where(&self) -> String {
        let parts: Vec<String> = self
            .unknown_prefixes
            .iter()
            .map(|(p, n)| format!("{p} ({n} caller{})", if *n == 1 { "" } else { "s" }))
            .collect();
        match parts.is_empty() {
            true => String::new(),
            false => format!("; most from {}", parts.join(", ")),
        }
    }
}

/// Groups `samples` by network. `network_of` is the longest-prefix lookup (the pipe's own,
/// `state::index::Metrics::network_for`), returning the network's key. The result is sorted by network.
pub fn aggregate<'n>(
    samples: &[Sample],
    network_of: impl Fn(IpAddr) -> Option<&'n str>,
    policy: &Policy,
) -> (Vec<NetworkRtt>, Dropped) {
    let mut dropped = Dropped::default();
    let mut unknown: Vec<(Who, IpAddr)> = Vec::new();
    let mut kept: Vec<(&str, Who, f64)> = Vec::with_capacity(samples.len());
    for s in samples {
        if !(s.rtt_ms > 0.0 && s.rtt_ms <= policy.max_ms) {
            dropped.implausible += 1;
            continue;
        }
        let address = canonical(s.caller);
        let who = s
            .subscriber
            .map_or(Who::Address(host_of(address)), Who::Subscriber);
        match network_of(address) {
            Some(net) => kept.push((net, who, s.rtt_ms)),
            None => {
                dropped.unknown_network += 1;
                unknown.push((who, address));
            }
        }
    }
    unknown.sort_unstable_by_key(|u| u.0);
    unknown.dedup_by(|a, b| a.0 == b.0);
    dropped.unknown_callers = unknown.len();
    dropped.unknown_prefixes = prefixes(unknown.iter().map(|(_, a)| *a));

    // Sorted by (network, caller), each caller's samples and each network's callers are runs.
    kept.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
    let mut out = Vec::new();
    let mut rest = &kept[..];
    let mut values = Vec::new();
    let mut caller_medians = Vec::new();
    while let Some(&(net, _, _)) = rest.first() {
        let n = rest.iter().take_while(|k| k.0 == net).count();
        let (this, tail) = rest.split_at(n);
        rest = tail;
        caller_medians.clear();
        let mut callers = this;
        while let Some(&(_, caller, _)) = callers.first() {
            let m = callers.iter().take_while(|k| k.1 == caller).count();
            values.clear();
            // Already in order: the sort's last key is the value.
            values.extend(callers[..m].iter().map(|k| k.2));
            caller_medians.push(median_sorted(&values));
            callers = &callers[m..];
        }
        if caller_medians.len() < policy.min_callers {
            dropped
                .too_few_callers
                .push((net.to_owned(), caller_medians.len()));
            dropped.too_few_samples += n;
            continue;
        }
        caller_medians.sort_unstable_by(f64::total_cmp);
        out.push(NetworkRtt {
            network: net.to_owned(),
            ms: median_sorted(&caller_medians),
            callers: caller_medians.len(),
            samples: n,
        });
    }
    (out, dropped)
}

/// IPv4-mapped IPv6 callers (a dual-stack socket) are IPv4 callers.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The host an address stands for when no subscriber is known: an IPv6 /64 is one host
/// (SLAAC and privacy addresses give one machine as many addresses as it likes).
fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Median of sorted, non-empty values: the middle one, or the mean of the two middle ones.
fn median_sorted(v: &[f64]) -> f64 {
    let mid = v.len() / 2;
    match v.len() % 2 {
        1 => v[mid],
        _ => (v[mid - 1] + v[mid]) / 2.0,
    }
}

#[cfg(test)]
mod tests;
