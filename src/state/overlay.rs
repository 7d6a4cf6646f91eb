//! The memcached overlay of a pipe process: which shared readings it
//! fetches, and the index it answers from (SQLite's readings with
//! memcached's newer ones laid over them).
//!
//! A fetch costs what was asked, not what exists (issue 22): every refresh
//! (once a second while the pipe answers) asks for each target's health
//! (one key per monitor), drain, load and `*` latency, and for the latency
//! of the networks whose clients this process answered in the last
//! [`ASKED_FOR`]; never for every known network. A lookup from a network
//! not fetched yet has its fetch brought forward to that lookup, so its
//! first answer already has memcached's readings; such early fetches are
//! at least `EARLY_FETCH` apart (a burst of new networks waits for the
//! next one, ranked from SQLite and `*` meanwhile, as while memcached is
//! down), and no lookup ever waits for more than one fetch (one batch per
//! server).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::state::index::Metrics;
use crate::state::memcached::{Cache, Reject};
use crate::state::reading::{drain_key, health_key, latency_key, load_key, Reading};
use crate::state::reading::{Source, ANY_NETWORK};

/// How often the shared readings are read: about as fresh as SQLite's, one
/// batch per server per second.
const FETCH_EVERY: Duration = Duration::from_secs(1);

/// A network asked for is fetched for this long after its last lookup:
/// the pipe's short list of what its clients need.
pub const ASKED_FOR: Duration = Duration::from_secs(10);

/// At most this many networks are fetched for (the most recently asked):
/// a pipe whose clients come from every one of 20,000 networks within
/// [`ASKED_FOR`] would otherwise fetch them all. The others are ranked
/// from SQLite and `*`, as while memcached is down.
pub const MAX_ASKED: usize = 1000;

/// A network asked for the first time brings the next fetch forward, but
/// fetches stay at least this far apart, so a burst of new networks costs
/// a few batches, not one per network.
const EARLY_FETCH: Duration = Duration::from_millis(100);

/// What the overlay did, for CMD `status` and the tests.
#[derive(Default, Debug, Clone, Copy)]
pub struct OverlayStats {
    pub fetches: u64,
    /// Keys asked of memcached, over all fetches.
    pub keys: u64,
    /// Keys of the last fetch.
    pub last_keys: u64,
}

pub struct Overlay {
    cache: Cache,
    /// The readings last fetched (drains seen before and missing now kept).
    readings: Vec<Reading>,
    /// The monitors publishing health, as last read from memcached; kept
    /// while the list's server is unreachable.
    monitors: Vec<String>,
    /// Networks (CIDR as stored) and when a client of theirs was last answered.
    asked: HashMap<Box<str>, Instant>,
    /// Every known network is fetched (`status`), not only those asked.
    all: bool,
    last_fetch: Option<Instant>,
    /// When a new network last brought a fetch forward.
    last_early: Option<Instant>,
    next_fetch: Instant,
    /// The base readings with `readings` laid over them.
    merged: Metrics,
    stats: OverlayStats,
}

impl Overlay {
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            readings: Vec::new(),
            monitors: Vec::new(),
            asked: HashMap::new(),
            all: false,
            last_fetch: None,
            last_early: None,
            next_fetch: Instant::now(),
            merged: Metrics::default(),
            stats: OverlayStats::default(),
        }
    }

    /// Fetches every known network's latency, as `status` shows them all.
    pub fn fetching_all(mut self) -> Self {
        self.all = true;
        self
    }

    /// Fetched readings stamped further ahead of this host's clock are refused.
    pub fn with_max_skew(mut self, secs: u32) -> Self {
        self.cache = self.cache.with_max_skew(secs);
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn stats(&self) -> OverlayStats {
        self.stats
    }

    /// What answers: SQLite's readings with memcached's newer ones.
    pub fn metrics(&self) -> &Metrics {
        &self.merged
    }

    /// The readings taken from memcached.
    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_fetch
    }

    /// Whether the last fetch was at `now` (this lookup's refresh).
    pub fn fetched_at(&self, now: Instant) -> bool {
        self.last_fetch == Some(now)
    }

    /// A client of `network` is being answered: its readings are fetched
    /// from now on, at once if it is new and no other new network brought
    /// a fetch forward in the last `EARLY_FETCH`. No I/O here.
    pub fn asked(&mut self, network: &str, now: Instant) {
        match self.asked.get_mut(network) {
            Some(at) => *at = now,
            None => {
                self.asked.insert(network.into(), now);
                let soon = self.last_early.map_or(now, |t| (t + EARLY_FETCH).max(now));
                if soon == now {
                    self.last_early = Some(now);
                }
                self.next_fetch = self.next_fetch.min(soon);
            }
        }
    }

    /// The keys one fetch asks for, given the targets and networks of `base`.
    pub fn keys(&mut self, base: &Metrics, now: Instant) -> Vec<String> {
        self.asked
            .retain(|_, at| now.saturating_duration_since(*at) < ASKED_FOR);
        if self.asked.len() > MAX_ASKED {
            let mut times: Vec<Instant> = self.asked.values().copied().collect();
            let (_, &mut cut, _) = times.select_nth_unstable_by(MAX_ASKED, |a, b| b.cmp(a));
            self.asked.retain(|_, at| *at > cut);
        }
        let p = &self.cache.prefix;
        let mut keys = Vec::new();
        for t in base.targets() {
            keys.extend(self.monitors.iter().map(|m| health_key(p, t, m)));
            keys.push(drain_key(p, t));
            keys.push(load_key(p, t));
        }
        let mut networks: Vec<&str> = match self.all {
            true => base.networks().iter().map(|n| &*n.cidr).collect(),
            false => self.asked.keys().map(|n| &**n).collect(),
        };
        networks.sort_unstable();
        networks.push(ANY_NETWORK);
        for n in networks {
            for t in base.targets() {
                keys.extend(Source::ALL.map(|s| latency_key(p, n, t, s)));
            }
        }
        keys
    }

    /// One batch per server: the keys of [`Self::keys`], then the index
    /// rebuilt over `base`.
    pub fn fetch(&mut self, base: &Metrics, now: Instant) {
        self.next_fetch = now + FETCH_EVERY;
        self.last_fetch = Some(now);
        if let Some(ids) = self.cache.monitors() {
            self.monitors = ids;
        }
        let keys = self.keys(base, now);
        self.stats.fetches += 1;
        self.stats.keys += keys.len() as u64;
        self.stats.last_keys = keys.len() as u64;
        let mut fresh = self.cache.fetch(&keys);
        // A drain or undrain older than the generation in SQLite is a copy
        // written back after a newer word (issue 19): refused and counted.
        fresh.retain(|r| match base.superseded(r) {
            true => {
                let key = r.key(&self.cache.prefix);
                self.cache.refuse(&key, Reject::Replayed);
                false
            }
            false => true,
        });
        // A drain is hard state: a miss (memcached restarted, or down and in
        // back-off) never undoes one seen before; only an undrain does.
        let kept: Vec<Reading> = std::mem::take(&mut self.readings)
            .into_iter()
            .filter(|old| match old {
                Reading::Drain { target, .. } => !fresh
                    .iter()
                    .any(|r| matches!(r, Reading::Drain { target: t, .. } if t == target)),
                _ => false,
            })
            .collect();
        self.readings = fresh;
        self.readings.extend(kept);
        self.rebuild(base);
    }

    /// Lays the fetched readings over `base` (after a change of `base`).
    pub fn rebuild(&mut self, base: &Metrics) {
        self.merged.clone_from(base);
        self.merged.overlay_all(&self.readings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(networks: u32) -> Metrics {
        let mut m = Metrics::default();
        for t in ["sip1.example.com", "sip2.example.com"] {
            m.add_target(t);
        }
        for i in 0..networks {
            m.add_network(&format!("10.{}.{}.0/24", i / 256, i % 256), "n")
                .unwrap();
        }
        m.finish()
    }

    fn latency_networks(keys: &[String]) -> Vec<&str> {
        let mut n: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("p:latency:")?.split('|').next())
            .collect();
        n.dedup();
        n
    }

    /// Per target its drain, load and `*` latency; per network asked in the
    /// last ten seconds its latency; never the networks nobody asked for.
    #[test]
    fn a_fetch_asks_for_what_was_asked() {
        let cache = Cache::new("127.0.0.1:1", "p", 30).unwrap();
        let mut o = Overlay::new(cache);
        let m = base(3000);
        let t0 = Instant::now();
        let sources = Source::ALL.len();
        assert_eq!(o.keys(&m, t0).len(), 2 * 2 + 2 * sources);
        o.asked("10.0.7.0/24", t0);
        o.asked("10.1.1.0/24", t0 + Duration::from_secs(5));
        let keys = o.keys(&m, t0 + Duration::from_secs(6));
        assert_eq!(keys.len(), 2 * 2 + 3 * 2 * sources);
        assert_eq!(latency_networks(&keys), ["10.0.7.0/24", "10.1.1.0/24", "*"]);
        assert!(keys.contains(&"p:drain:sip2.example.com".to_owned()));
        // Ten seconds without a lookup from it: no longer fetched.
        let keys = o.keys(&m, t0 + Duration::from_secs(11));
        assert_eq!(latency_networks(&keys), ["10.1.1.0/24", "*"]);
        // At most MAX_ASKED, the most recent.
        let t1 = t0 + Duration::from_secs(12);
        for i in 0..1500u32 {
            let at = t1 + Duration::from_millis(u64::from(i));
            o.asked(&format!("10.{}.{}.0/24", i / 256, i % 256), at);
        }
        let keys = o.keys(&m, t1 + Duration::from_secs(2));
        let nets = latency_networks(&keys);
        assert_eq!(nets.len(), MAX_ASKED + 1);
        assert!(!nets.contains(&"10.0.0.0/24"), "the oldest went first");
        assert!(nets.contains(&"10.5.219.0/24"), "the newest stays");
        // `status` fetches every known network.
        let cache = Cache::new("127.0.0.1:1", "p", 30).unwrap();
        let mut all = Overlay::new(cache).fetching_all();
        assert_eq!(latency_networks(&all.keys(&m, t0)).len(), 3001);
    }
}
