//! Soft state as the pipe sees it: known client networks, target capacity,
//! operators' drains, and the latest health (one verdict per monitor), load
//! and latency readings with their timestamps. Loaded with the zones, looked
//! up by binary search without allocating.

use crate::dns::cmp_name;
use crate::dns::Subnet;
use crate::state::reading::Reading;
use crate::state::reading::{target_key, Drain, Health, Latency, Load, Source};
use crate::state::service::Service;

/// A known client network from `ha_networks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub subnet: Subnet,
    /// The CIDR as stored: the key of its latency samples.
    pub cidr: Box<str>,
    pub name: Box<str>,
}

/// (network, target, source), the key of a latency reading: each source
/// keeps its own, and the ranking fuses them.
type NetworkTarget = (Box<str>, Box<str>, Source);

/// (target, monitor), the key of a health verdict.
type TargetMonitor = (Box<str>, Box<str>);

/// (target, service, monitor), the key of an advertised service's verdict.
type ServiceMonitor = (Box<str>, Service, Box<str>);

#[derive(Default, Debug, Clone)]
pub struct Metrics {
    /// Every `ha_targets` name: what there is to fetch from memcached.
    targets: Vec<Box<str>>,
    /// Longest prefix first, so the first match is the best.
    networks: Vec<Network>,
    capacity: Vec<(Box<str>, u32)>,
    /// Sorted by target, then monitor: one target's verdicts are adjacent.
    health: Vec<(TargetMonitor, Health)>,
    /// Sorted by target, service, then monitor: one service's verdicts are adjacent.
    service_health: Vec<(ServiceMonitor, Health)>,
    drains: Vec<(Box<str>, Drain)>,
    load: Vec<(Box<str>, Load)>,
    /// Keyed by (network, target, source): one pair's sources are adjacent.
    latency: Vec<(NetworkTarget, Latency)>,
}

/// Looks up a target; SRV targets may come in any case.
fn find<'a, T>(v: &'a [(Box<str>, T)], target: &str) -> Option<&'a T> {
    v.binary_search_by(|(k, _)| cmp_name(k, target))
        .ok()
        .map(|i| &v[i].1)
}

impl Metrics {
    pub fn add_network(&mut self, cidr: &str, name: &str) -> Result<(), String> {
        let subnet = Subnet::parse(cidr.trim())
            .filter(|s| s.is_network())
            .ok_or_else(|| {
                format!(
                    "ha_networks: \"{}\" is not a network address/prefix",
                    crate::text::shown(cidr)
                )
            })?;
        self.networks.push(Network {
            subnet,
            cidr: cidr.into(),
            name: name.into(),
        });
        Ok(())
    }

    pub fn add_target(&mut self, target: &str) {
        self.targets.push(target_key(target).into());
    }

    pub fn add_capacity(&mut self, target: &str, max: u32) {
        self.capacity.push((target_key(target).into(), max));
    }

    pub fn add_health(&mut self, target: &str, monitor: &str, h: Health) {
        self.health
            .push(((target_key(target).into(), monitor.into()), h));
    }

    pub fn add_service_health(&mut self, target: &str, s: Service, monitor: &str, h: Health) {
        self.service_health
            .push(((target_key(target).into(), s, monitor.into()), h));
    }

    pub fn add_drain(&mut self, target: &str, d: Drain) {
        self.drains.push((target_key(target).into(), d));
    }

    pub fn add_load(&mut self, target: &str, l: Load) {
        self.load.push((target_key(target).into(), l));
    }

    pub fn add_latency(&mut self, network: &str, target: &str, source: Source, l: Latency) {
        self.latency
            .push(((network.into(), target_key(target).into(), source), l));
    }

    pub fn targets(&self) -> &[Box<str>] {
        &self.targets
    }

    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// Lays a reading from memcached over this one where it is newer: the
    /// freshest word on a target wins, wherever it was written.
    pub fn overlay(&mut self, r: &Reading) {
        fn put<K: Ord, T>(
            v: &mut Vec<(K, T)>,
            key: K,
            new: Option<T>,
            updated: f64,
            at: impl Fn(&T) -> f64,
        ) {
            match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) if at(&v[i].1) >= updated => {}
                Ok(i) => match new {
                    Some(t) => v[i].1 = t,
                    None => drop(v.remove(i)),
                },
                Err(i) => {
                    if let Some(t) = new {
                        v.insert(i, (key, t));
                    }
                }
            }
        }
        match r {
            Reading::Health { target, monitor, h } => put(
                &mut self.health,
                (target_key(target).into(), monitor.as_str().into()),
                Some(*h),
                h.updated,
                |h| h.updated,
            ),
            Reading::Drain {
                target,
                reason,
                updated,
                ..
            } => put(
                &mut self.drains,
                target_key(target).into(),
                reason.as_deref().map(|r| Drain {
                    reason: r.into(),
                    since: *updated,
                }),
                *updated,
                |d| d.since,
            ),
            Reading::Load {
                target,
                load,
                updated,
            } => put(
                &mut self.load,
                target_key(target).into(),
                *load,
                *updated,
                |l| l.updated,
            ),
            Reading::Latency {
                network,
                target,
                source,
                l,
                ..
            } => {
                let key = (network.as_str().into(), target_key(target).into(), *source);
                put(&mut self.latency, key, Some(*l), l.updated, |l| l.updated)
            }
        }
    }

    pub fn finish(mut self) -> Self {
        self.targets.sort();
        self.networks
            .sort_by_key(|n| std::cmp::Reverse(n.subnet.prefix));
        self.capacity.sort_by(|a, b| a.0.cmp(&b.0));
        self.health.sort_by(|a, b| a.0.cmp(&b.0));
        self.service_health.sort_by(|a, b| a.0.cmp(&b.0));
        self.drains.sort_by(|a, b| a.0.cmp(&b.0));
        self.load.sort_by(|a, b| a.0.cmp(&b.0));
        self.latency.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }

    /// The most specific known network holding the whole client subnet.
    pub fn network_for(&self, client: Subnet) -> Option<&Network> {
        self.networks
            .iter()
            .find(|n| n.subnet.prefix <= client.prefix && n.subnet.contains(client.addr))
    }

    pub fn capacity(&self, target: &str) -> Option<u32> {
        find(&self.capacity, target).copied()
    }

    /// Every monitor's verdict on `target`, as (monitor, verdict).
    pub fn health<'a>(&'a self, target: &'a str) -> impl Iterator<Item = (&'a str, Health)> + 'a {
        let v = &self.health;
        let start = v.partition_point(|((t, _), _)| cmp_name(t, target).is_lt());
        v[start..]
            .iter()
            .take_while(move |((t, _), _)| cmp_name(t, target).is_eq())
            .map(|((_, m), h)| (&**m, *h))
    }

    /// Every monitor's verdict on one advertised service of `target`.
    pub fn service_health<'a>(
        &'a self,
        target: &'a str,
        s: Service,
    ) -> impl Iterator<Item = (&'a str, Health)> + 'a {
        let v = &self.service_health;
        let key = move |t: &str, k: Service| cmp_name(t, target).then(k.cmp(&s));
        let start = v.partition_point(|((t, k, _), _)| key(t, *k).is_lt());
        v[start..]
            .iter()
            .take_while(move |((t, k, _), _)| key(t, *k).is_eq())
            .map(|((_, _, m), h)| (&**m, *h))
    }

    pub fn drain(&self, target: &str) -> Option<&Drain> {
        find(&self.drains, target)
    }

    /// Whether any target is drained: the static answer's fast path.
    pub fn any_drained(&self) -> bool {
        !self.drains.is_empty()
    }

    pub fn load(&self, target: &str) -> Option<Load> {
        find(&self.load, target).copied()
    }

    /// Every source's reading of (network, target), fresh or not, in
    /// [`Source`] order; without allocating, as the ranking runs it per
    /// candidate.
    pub fn latency<'a>(
        &'a self,
        network: &'a str,
        target: &'a str,
    ) -> impl Iterator<Item = (Source, Latency)> + 'a {
        let v = &self.latency;
        let key = move |n: &str, t: &str| (*n).cmp(network).then_with(|| cmp_name(t, target));
        let start = v.partition_point(|((n, t, _), _)| key(n, t).is_lt());
        v[start..]
            .iter()
            .take_while(move |((n, t, _), _)| key(n, t).is_eq())
            .map(|((_, _, s), l)| (*s, *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut m = Metrics::default();
        m.add_network("192.0.2.0/24", "a").unwrap();
        m.add_network("192.0.2.128/25", "a-high").unwrap();
        m.add_network("0.0.0.0/0", "world").unwrap();
        m.add_network("2001:db8::/32", "v6").unwrap();
        let m = m.finish();
        let name = |c: &str| m.network_for(sn(c)).map(|n| &*n.name).unwrap_or("-");
        assert_eq!(name("192.0.2.200"), "a-high");
        assert_eq!(name("192.0.2.7"), "a");
        assert_eq!(name("192.0.2.0/24"), "a");
        // An ECS /16 is wider than either /24 or /25: only the /0 holds it.
        assert_eq!(name("192.0.0.0/16"), "world");
        assert_eq!(name("198.51.100.1"), "world");
        assert_eq!(name("::ffff:192.0.2.7"), "a");
        assert_eq!(name("2001:db8:1::1"), "v6");
        assert_eq!(name("2001:db9::1"), "-");
    }

    #[test]
    fn networks_must_be_networks() {
        let mut m = Metrics::default();
        assert!(m.add_network("192.0.2.1/24", "x").is_err());
        assert!(m.add_network("192.0.2.0/33", "x").is_err());
        assert!(m.add_network("nonsense", "x").is_err());
        assert!(m.add_network("192.0.2.1", "host").is_ok());
    }

    /// The one verdict of monitor `mon` on `target`.
    fn verdict(m: &Metrics, target: &str, mon: &str) -> Option<Health> {
        m.health(target).find(|(id, _)| *id == mon).map(|(_, h)| h)
    }

    #[test]
    fn overlay_keeps_the_newest() {
        let mut m = Metrics::default();
        let h = |up, updated| Health { up, updated };
        m.add_health("sip1.example.com", "a", h(true, 10.0));
        m.add_load(
            "sip1.example.com",
            Load {
                sessions: 5,
                max_sessions: None,
                updated: 10.0,
            },
        );
        let mut m = m.finish();
        let health = |target: &str, monitor: &str, h: Health| Reading::Health {
            target: target.into(),
            monitor: monitor.into(),
            h,
        };
        m.overlay(&health("sip1.example.com", "a", h(false, 9.0)));
        assert!(
            verdict(&m, "sip1.example.com", "a").unwrap().up,
            "older loses"
        );
        m.overlay(&health("SIP1.example.com.", "a", h(false, 11.0)));
        assert!(
            !verdict(&m, "sip1.example.com", "a").unwrap().up,
            "newer wins"
        );
        // Another monitor's verdict sits beside it, never over it.
        m.overlay(&health("sip1.example.com", "b", h(true, 12.0)));
        assert_eq!(m.health("sip1.example.com").count(), 2);
        assert!(!verdict(&m, "sip1.example.com", "a").unwrap().up);
        m.overlay(&health("sip2.example.com", "a", h(false, 11.0)));
        m.overlay(&health("a.example.com", "a", h(false, 11.0)));
        assert_eq!(m.health("sip2.example.com").count(), 1);
        assert_eq!(m.health("a.example.com").count(), 1);
        m.overlay(&Reading::Load {
            target: "sip1.example.com".into(),
            load: None,
            updated: 12.0,
        });
        assert!(
            m.load("sip1.example.com").is_none(),
            "a newer 'unknown' clears the load"
        );
        let l = Latency {
            ewma_ms: 1.0,
            mean_ms: 1.0,
            samples: 1,
            updated: 1.0,
            callers: None,
        };
        let latency = |source, l| Reading::Latency {
            network: "*".into(),
            target: "sip1.example.com".into(),
            source,
            l,
            timeouts: 0,
        };
        m.overlay(&latency(Source::Monitor, l));
        // Another source's reading sits beside it, never over it.
        let seen = Latency {
            callers: Some(3),
            ..l
        };
        m.overlay(&latency(Source::Observe, seen));
        let all: Vec<_> = m.latency("*", "sip1.example.com").collect();
        assert_eq!(all, [(Source::Observe, seen), (Source::Monitor, l)]);
    }

    #[test]
    fn drains_newest_word_wins() {
        let mut m = Metrics::default();
        m.add_drain(
            "sip1.example.com",
            Drain {
                reason: "disk".into(),
                since: 10.0,
            },
        );
        let mut m = m.finish();
        let drain = |reason: Option<&str>, updated| Reading::Drain {
            target: "sip1.example.com".into(),
            reason: reason.map(str::to_owned),
            updated,
            generation: 1,
        };
        m.overlay(&drain(None, 9.0));
        assert_eq!(
            &*m.drain("SIP1.example.com").unwrap().reason,
            "disk",
            "an older undrain loses"
        );
        m.overlay(&drain(None, 11.0));
        assert!(
            m.drain("sip1.example.com").is_none(),
            "a newer undrain wins"
        );
        m.overlay(&drain(Some("again"), 12.0));
        assert_eq!(&*m.drain("sip1.example.com").unwrap().reason, "again");
        assert!(m.any_drained());
    }

    #[test]
    fn service_verdicts_sit_apart_by_transport_and_port() {
        use crate::state::service::Transport;
        let mut m = Metrics::default();
        let h = |up| Health { up, updated: 1.0 };
        let udp = Service {
            transport: Transport::Udp,
            port: 5060,
        };
        let tls = Service {
            transport: Transport::Tls,
            port: 5061,
        };
        m.add_service_health("sip1.example.com", tls, "a", h(false));
        m.add_service_health("Sip1.example.com.", udp, "a", h(true));
        m.add_service_health("sip1.example.com", tls, "b", h(true));
        m.add_service_health("sip10.example.com", tls, "a", h(true));
        let m = m.finish();
        let ids = |t: &str, s| {
            m.service_health(t, s)
                .map(|(id, h)| format!("{id}:{}", h.up))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("SIP1.example.com", tls), ["a:false", "b:true"]);
        assert_eq!(ids("sip1.example.com", udp), ["a:true"]);
        assert!(ids("sip1.example.com", Service { port: 5062, ..tls }).is_empty());
        assert!(ids(
            "sip1.example.com",
            Service {
                transport: Transport::Tcp,
                port: 5061
            }
        )
        .is_empty());
    }

    #[test]
    fn lookups_by_target() {
        let mut m = Metrics::default();
        let h = |up, updated| Health { up, updated };
        m.add_health("Sip1.Example.com.", "a", h(false, 1.0));
        m.add_health("sip1.example.com", "b", h(true, 1.0));
        m.add_health("sip10.example.com", "a", h(true, 1.0));
        m.add_health("sip0.example.com", "a", h(true, 1.0));
        m.add_latency(
            "*",
            "sip2.example.com",
            Source::Metric,
            Latency {
                ewma_ms: 5.0,
                mean_ms: 6.0,
                samples: 3,
                updated: 2.0,
                callers: None,
            },
        );
        m.add_health("2001:DB8:0::1", "a", h(true, 1.0));
        let m = m.finish();
        let ids = |t: &str| {
            m.health(t)
                .map(|(id, h)| format!("{id}:{}", h.up))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("sip1.example.com"), ["a:false", "b:true"]);
        assert_eq!(ids("SIP1.example.COM"), ["a:false", "b:true"]);
        assert_eq!(ids("2001:db8::1"), ["a:true"]);
        assert!(ids("sip9.example.com").is_empty());
        let first = m.latency("*", "SIP2.example.com").next().unwrap();
        assert_eq!((first.0, first.1.samples), (Source::Metric, 3));
        assert_eq!(m.latency("192.0.2.0/24", "sip2.example.com").count(), 0);
    }
}
