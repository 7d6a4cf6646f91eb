//! Soft state as the pipe sees it: known client networks, target capacity,
//! and the latest health, load and latency readings with their timestamps.
//! Loaded with the zones, looked up by binary search without allocating.

use crate::dns::cmp_name;
use crate::dns::Subnet;
use crate::state::reading::Reading;
use crate::state::reading::{target_key, Health, Latency, Load};

/// A known client network from `ha_networks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub subnet: Subnet,
    /// The CIDR as stored: the key of its latency samples.
    pub cidr: Box<str>,
    pub name: Box<str>,
}

/// (network, target), the key of a latency reading.
type NetworkTarget = (Box<str>, Box<str>);

#[derive(Default, Debug, Clone)]
pub struct Metrics {
    /// Every `ha_targets` name: what there is to fetch from memcached.
    targets: Vec<Box<str>>,
    /// Longest prefix first, so the first match is the best.
    networks: Vec<Network>,
    capacity: Vec<(Box<str>, u32)>,
    health: Vec<(Box<str>, Health)>,
    load: Vec<(Box<str>, Load)>,
    /// Keyed by (network, target).
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

    pub fn add_health(&mut self, target: &str, h: Health) {
        self.health.push((target_key(target).into(), h));
    }

    pub fn add_load(&mut self, target: &str, l: Load) {
        self.load.push((target_key(target).into(), l));
    }

    pub fn add_latency(&mut self, network: &str, target: &str, l: Latency) {
        self.latency
            .push(((network.into(), target_key(target).into()), l));
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
            Reading::Health { target, h } => put(
                &mut self.health,
                target_key(target).into(),
                Some(*h),
                h.updated,
                |h| h.updated,
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
                network, target, l, ..
            } => {
                let key = (network.as_str().into(), target_key(target).into());
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

    pub fn health(&self, target: &str) -> Option<Health> {
        find(&self.health, target).copied()
    }

    pub fn load(&self, target: &str) -> Option<Load> {
        find(&self.load, target).copied()
    }

    pub fn latency(&self, network: &str, target: &str) -> Option<Latency> {
        let v = &self.latency;
        v.binary_search_by(|((n, t), _)| (**n).cmp(network).then_with(|| cmp_name(t, target)))
            .ok()
            .map(|i| v[i].1)
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

    #[test]
    fn overlay_keeps_the_newest() {
        let mut m = Metrics::default();
        m.add_health(
            "sip1.example.com",
            Health {
                up: true,
                updated: 10.0,
            },
        );
        m.add_load(
            "sip1.example.com",
            Load {
                sessions: 5,
                max_sessions: None,
                updated: 10.0,
            },
        );
        let mut m = m.finish();
        let older = Health {
            up: false,
            updated: 9.0,
        };
        m.overlay(&Reading::Health {
            target: "sip1.example.com".into(),
            h: older,
        });
        assert!(m.health("sip1.example.com").unwrap().up, "older loses");
        let newer = Health {
            up: false,
            updated: 11.0,
        };
        m.overlay(&Reading::Health {
            target: "SIP1.example.com.".into(),
            h: newer,
        });
        assert!(!m.health("sip1.example.com").unwrap().up, "newer wins");
        m.overlay(&Reading::Health {
            target: "sip2.example.com".into(),
            h: newer,
        });
        m.overlay(&Reading::Health {
            target: "a.example.com".into(),
            h: newer,
        });
        assert!(m.health("sip2.example.com").is_some() && m.health("a.example.com").is_some());
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
        };
        m.overlay(&Reading::Latency {
            network: "*".into(),
            target: "sip1.example.com".into(),
            l,
            timeouts: 0,
        });
        assert_eq!(m.latency("*", "sip1.example.com"), Some(l));
    }

    #[test]
    fn lookups_by_target() {
        let mut m = Metrics::default();
        m.add_health(
            "Sip1.Example.com.",
            Health {
                up: false,
                updated: 1.0,
            },
        );
        m.add_latency(
            "*",
            "sip2.example.com",
            Latency {
                ewma_ms: 5.0,
                mean_ms: 6.0,
                samples: 3,
                updated: 2.0,
            },
        );
        let up = Health {
            up: true,
            updated: 1.0,
        };
        m.add_health("2001:DB8:0::1", up);
        let m = m.finish();
        assert!(!m.health("sip1.example.com").unwrap().up);
        assert!(!m.health("SIP1.example.COM").unwrap().up);
        assert!(m.health("2001:db8::1").unwrap().up);
        assert_eq!(m.latency("*", "sip2.example.com").unwrap().samples, 3);
        assert!(m.latency("192.0.2.0/24", "sip2.example.com").is_none());
    }
}
