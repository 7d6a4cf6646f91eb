//! memcached as the shared, disposable store of soft state: monitors and
//! `metric` publish every reading, pipe processes on every DNS node read
//! them back, so all nodes answer from one live view. Keys are spread over
//! the servers by hash, so losing one loses only its share; a server that
//! refuses, fails or hangs costs one short timeout and is then skipped
//! (back-off) until it answers again.
//!
//! Keys (PREFIX is `--memcached-prefix`, default `pdns-ha`), values are
//! space-separated text, `updated` in Unix seconds:
//!
//! ```text
//! PREFIX:health:TARGET            up(0|1) updated
//! PREFIX:load:TARGET              sessions max|- updated     (- - updated: unknown since then)
//! PREFIX:latency:NETWORK|TARGET   ewma_ms mean_ms samples timeouts updated
//! ```

use std::time::{Duration, Instant};

use log::warn;
use memcache::exp::{Get, MetaClient, Ttl};

use crate::metrics::{Health, Latency, Load};

/// Connect and exchange timeout per server. memcached answers in tens of
/// microseconds on a LAN; past this it is treated as down.
const TIMEOUT: Duration = Duration::from_millis(10);

/// A failed server is skipped for this long, doubling up to the maximum,
/// so an outage costs one timeout per back-off period, not one per query.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub const DEFAULT_PREFIX: &str = "pdns-ha";

/// One reading as it travels through memcached.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Health {
        target: String,
        h: Health,
    },
    /// `load: None`: the load became unknown at `updated` (the source could
    /// not be read), which must override older readings elsewhere.
    Load {
        target: String,
        load: Option<Load>,
        updated: f64,
    },
    Latency {
        network: String,
        target: String,
        l: Latency,
        timeouts: u64,
    },
}

impl Reading {
    pub fn key(&self, prefix: &str) -> String {
        match self {
            Self::Health { target, .. } => health_key(prefix, target),
            Self::Load { target, .. } => load_key(prefix, target),
            Self::Latency {
                network, target, ..
            } => latency_key(prefix, network, target),
        }
    }

    pub fn value(&self) -> String {
        match self {
            Self::Health { h, .. } => format!("{} {}", u8::from(h.up), h.updated),
            Self::Load { load: Some(l), .. } => {
                let max = l.max_sessions.map_or("-".to_owned(), |m| m.to_string());
                format!("{} {max} {}", l.sessions, l.updated)
            }
            Self::Load {
                load: None,
                updated,
                ..
            } => format!("- - {updated}"),
            Self::Latency { l, timeouts, .. } => {
                format!(
                    "{} {} {} {timeouts} {}",
                    l.ewma_ms, l.mean_ms, l.samples, l.updated
                )
            }
        }
    }

    /// Parses a value fetched for `key`; `None` for anything malformed,
    /// which then simply counts as a miss.
    pub fn parse(prefix: &str, key: &str, value: &str) -> Option<Self> {
        let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
        let f: Vec<&str> = value.split(' ').collect();
        let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        let int = |s: &str| s.parse::<u32>().ok();
        if let Some(target) = rest.strip_prefix("health:") {
            let [up, updated] = f[..] else { return None };
            let up = match up {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            return Some(Self::Health {
                target: target.into(),
                h: Health {
                    up,
                    updated: num(updated)?,
                },
            });
        }
        if let Some(target) = rest.strip_prefix("load:") {
            let [sessions, max, updated] = f[..] else {
                return None;
            };
            let updated = num(updated)?;
            let load = match (sessions, max) {
                ("-", "-") => None,
                (s, "-") => Some(Load {
                    sessions: int(s)?,
                    max_sessions: None,
                    updated,
                }),
                (s, m) => Some(Load {
                    sessions: int(s)?,
                    max_sessions: Some(int(m)?),
                    updated,
                }),
            };
            return Some(Self::Load {
                target: target.into(),
                load,
                updated,
            });
        }
        // `|` appears in no CIDR, host name or address, unlike `:`.
        let (network, target) = rest.strip_prefix("latency:")?.split_once('|')?;
        let [ewma, mean, samples, timeouts, updated] = f[..] else {
            return None;
        };
        let l = Latency {
            ewma_ms: num(ewma)?,
            mean_ms: num(mean)?,
            samples: samples.parse().ok()?,
            updated: num(updated)?,
        };
        Some(Self::Latency {
            network: network.into(),
            target: target.into(),
            l,
            timeouts: timeouts.parse().ok()?,
        })
    }
}

pub fn health_key(prefix: &str, target: &str) -> String {
    format!("{prefix}:health:{target}")
}

pub fn load_key(prefix: &str, target: &str) -> String {
    format!("{prefix}:load:{target}")
}

pub fn latency_key(prefix: &str, network: &str, target: &str) -> String {
    format!("{prefix}:latency:{network}|{target}")
}

struct Server {
    addr: String,
    client: MetaClient,
    /// Skipped until then after a failure.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Server {
    fn usable(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    fn failed(&mut self, now: Instant, what: &str) {
        if self.retry_at.is_none() {
            warn!(
                "memcached {}: {what}; using SQLite alone, retrying in the background",
                self.addr
            );
        }
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn worked(&mut self) {
        // At the outage's level, so whoever saw it go sees it come back.
        if self.retry_at.take().is_some() {
            warn!("memcached {} is back", self.addr);
        }
        self.backoff = BACKOFF_START;
    }
}

pub struct Cache {
    servers: Vec<Server>,
    pub prefix: String,
    /// Expiry of published readings: past it they would be stale anyway.
    ttl: Duration,
}

/// FNV-1a: stable across processes and versions, which key placement
/// must be, since monitors and pipes on different hosts compute it apart.
fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Cache {
    /// `list` is `HOST:PORT[,HOST:PORT...]`. Nothing is dialed here.
    pub fn new(list: &str, prefix: &str, stale_after: u32) -> Result<Self, String> {
        if prefix.is_empty() || prefix.bytes().any(|b| b <= b' ' || b == 0x7f) || prefix.len() > 64
        {
            return Err(format!(
                "--memcached-prefix {prefix:?}: needs 1 to 64 visible characters"
            ));
        }
        let mut servers = Vec::new();
        for addr in list.split(',').map(str::trim) {
            let client = MetaClient::builder()
                .connect_timeout(Some(TIMEOUT))
                .io_timeout(Some(TIMEOUT))
                .max_idle(1)
                .connect(addr)
                .map_err(|e| format!("--memcached {addr:?}: {e}"))?;
            servers.push(Server {
                addr: addr.to_owned(),
                client,
                retry_at: None,
                backoff: BACKOFF_START,
            });
        }
        if servers.is_empty() || list.trim().is_empty() {
            return Err("--memcached needs HOST:PORT[,HOST:PORT...]".into());
        }
        Ok(Self {
            servers,
            prefix: prefix.to_owned(),
            ttl: Duration::from_secs(u64::from(stale_after)),
        })
    }

    fn server_of(&self, key: &str) -> usize {
        (fnv1a(key.as_bytes()) % self.servers.len() as u64) as usize
    }

    /// Stores a reading on its server. Failures are logged once per outage
    /// and never reach the caller: memcached is only a copy.
    pub fn publish(&mut self, r: &Reading) {
        let key = r.key(&self.prefix);
        let now = Instant::now();
        let s = self.server_of(&key);
        let server = &mut self.servers[s];
        if !server.usable(now) {
            return;
        }
        match server
            .client
            .set(&key, r.value())
            .ttl(Ttl::from(self.ttl))
            .send()
        {
            Ok(_) => server.worked(),
            Err(e) => server.failed(now, &e.to_string()),
        }
    }

    /// Fetches `keys`, one pipelined round trip per usable server, and
    /// returns the readings found. Servers in back-off are skipped.
    pub fn fetch(&mut self, keys: &[String]) -> Vec<Reading> {
        let now = Instant::now();
        let mut found = Vec::new();
        for s in 0..self.servers.len() {
            if !self.servers[s].usable(now) {
                continue;
            }
            let mine: Vec<&String> = keys.iter().filter(|k| self.server_of(k) == s).collect();
            if mine.is_empty() {
                continue;
            }
            let server = &mut self.servers[s];
            match server.client.run_many(mine.iter().map(Get::new)) {
                Err(e) => server.failed(now, &e.to_string()),
                Ok(results) => {
                    let mut broke = None;
                    for (key, r) in mine.iter().zip(results) {
                        match r {
                            Ok(g) => {
                                let value =
                                    g.value.as_deref().and_then(|v| std::str::from_utf8(v).ok());
                                if let Some(r) =
                                    value.and_then(|v| Reading::parse(&self.prefix, key, v))
                                {
                                    found.push(r);
                                }
                            }
                            Err(e) => broke = Some(e.to_string()),
                        }
                    }
                    match broke {
                        Some(e) => server.failed(now, &e),
                        None => server.worked(),
                    }
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip() {
        let readings = [
            Reading::Health {
                target: "sip1.example.com".into(),
                h: Health {
                    up: false,
                    updated: 1.5,
                },
            },
            Reading::Load {
                target: "sip1.example.com".into(),
                load: Some(Load {
                    sessions: 42,
                    max_sessions: Some(1000),
                    updated: 2.0,
                }),
                updated: 2.0,
            },
            Reading::Load {
                target: "sip2.example.com".into(),
                load: Some(Load {
                    sessions: 7,
                    max_sessions: None,
                    updated: 3.0,
                }),
                updated: 3.0,
            },
            Reading::Load {
                target: "sip3.example.com".into(),
                load: None,
                updated: 4.0,
            },
            Reading::Latency {
                network: "2001:db8::/48".into(),
                target: "2001:db8::5".into(),
                l: Latency {
                    ewma_ms: 1.25,
                    mean_ms: 2.5,
                    samples: 9,
                    updated: 5.0,
                },
                timeouts: 3,
            },
        ];
        for r in readings {
            let (key, value) = (r.key("p"), r.value());
            assert_eq!(
                Reading::parse("p", &key, &value),
                Some(r),
                "{key} = {value}"
            );
        }
        assert_eq!(health_key("p", "a"), "p:health:a");
    }

    #[test]
    fn malformed_values_are_misses() {
        for (key, value) in [
            ("p:health:a", "2 1.0"),
            ("p:health:a", "1"),
            ("p:load:a", "x - 1"),
            ("p:load:a", "1 2 -5"),
            ("p:latency:*|a", "1 2 3 4"),
            ("p:latency:*|a", "nan 2 3 4 5"),
            ("p:latency:*:a", "1 2 3 4 5"),
            ("q:health:a", "1 1"),
            ("p:other:a", "1 1"),
        ] {
            assert_eq!(Reading::parse("p", key, value), None, "{key} = {value}");
        }
    }

    #[test]
    fn placement_is_stable_and_spread() {
        // The published FNV-1a 64 test vectors: placement must never drift.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let cache = Cache::new("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "p", 30).unwrap();
        let mut per = [0; 3];
        for i in 0..300 {
            per[cache.server_of(&format!("p:health:sip{i}.example.com"))] += 1;
        }
        assert!(per.iter().all(|&n| n > 60), "{per:?}");
    }

    #[test]
    fn a_dead_server_costs_one_timeout_then_is_skipped() {
        let mut cache = Cache::new("127.0.0.1:1", "p", 30).unwrap();
        let keys = vec!["p:health:a".to_owned()];
        assert!(cache.fetch(&keys).is_empty());
        assert!(!cache.servers[0].usable(Instant::now()));
        for _ in 0..100 {
            cache.fetch(&keys);
            cache.publish(&Reading::Health {
                target: "a".into(),
                h: Health {
                    up: true,
                    updated: 1.0,
                },
            });
        }
        // Each attempt doubles the back-off: one attempt was made in all.
        assert_eq!(cache.servers[0].backoff, BACKOFF_START * 2);
    }
}
