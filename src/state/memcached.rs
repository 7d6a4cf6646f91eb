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
//! PREFIX:monitors                 MONITOR_ID MONITOR_ID ...  (who publishes health; no expiry)
//! PREFIX:health:TARGET|MONITOR    up(0|1) updated           (one monitor's verdict)
//! PREFIX:drain:TARGET             1 since REASON...|0 updated (no expiry: hard state)
//! PREFIX:load:TARGET              sessions max|- updated     (- - updated: unknown since then)
//! PREFIX:latency:NETWORK|TARGET   ewma_ms mean_ms samples timeouts updated
//! ```

use std::time::{Duration, Instant};

use log::warn;
use memcache::exp::{Get, MetaClient, Ttl};

use crate::state::reading::{monitors_key, valid_monitor_id, Reading};

/// Connect and exchange timeout per server. memcached answers in tens of
/// microseconds on a LAN; past this it is treated as down.
const TIMEOUT: Duration = Duration::from_millis(10);

/// A failed server is skipped for this long, doubling up to the maximum,
/// so an outage costs one timeout per back-off period, not one per query.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub const DEFAULT_PREFIX: &str = "pdns-ha";

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
        // A drain is the operator's word and holds until undrained; an
        // undrain must outlive any copy of the drain it overrides.
        let ttl = match r {
            Reading::Drain { .. } => Ttl::NEVER,
            _ => Ttl::from(self.ttl),
        };
        match server.client.set(&key, r.value()).ttl(ttl).send() {
            Ok(_) => server.worked(),
            Err(e) => server.failed(now, &e.to_string()),
        }
    }

    /// Adds `id` to the list of monitors that publish health, unless it is
    /// there. Run every round, so a restarted memcached learns it again.
    pub fn register_monitor(&mut self, id: &str) {
        let key = monitors_key(&self.prefix);
        let now = Instant::now();
        let s = self.server_of(&key);
        let server = &mut self.servers[s];
        if !server.usable(now) {
            return;
        }
        let listed = match server.client.get(&key).send() {
            Ok(g) => g.value.unwrap_or_default(),
            Err(e) => return server.failed(now, &e.to_string()),
        };
        if String::from_utf8_lossy(&listed).split(' ').any(|m| m == id) {
            return server.worked();
        }
        // `add` when the list is missing, `append` when another monitor
        // created it first: ids are never lost to a race, at worst listed
        // twice, which readers ignore.
        let added = server.client.set(&key, id).ttl(Ttl::NEVER).add().send();
        let result = match added {
            Ok(r) if r.applied() => Ok(()),
            Ok(_) => server
                .client
                .set(&key, format!(" {id}"))
                .append()
                .send()
                .map(drop),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => server.worked(),
            Err(e) => server.failed(now, &e.to_string()),
        }
    }

    /// The monitors that publish health, as listed in memcached; `None`
    /// when the list cannot be read (its server is down), so the caller can
    /// keep the last list rather than forget every monitor's verdicts.
    pub fn monitors(&mut self) -> Option<Vec<String>> {
        let key = monitors_key(&self.prefix);
        let now = Instant::now();
        let s = self.server_of(&key);
        let server = &mut self.servers[s];
        if !server.usable(now) {
            return None;
        }
        let listed = match server.client.get(&key).send() {
            Ok(g) => {
                server.worked();
                g.value.unwrap_or_default()
            }
            Err(e) => {
                server.failed(now, &e.to_string());
                return None;
            }
        };
        let mut ids: Vec<String> = String::from_utf8_lossy(&listed)
            .split(' ')
            .filter(|m| valid_monitor_id(m))
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids.dedup();
        Some(ids)
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
    use crate::state::reading::Health;

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
                monitor: "m".into(),
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
