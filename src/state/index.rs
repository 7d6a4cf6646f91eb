//! Soft state as the pipe sees it: known client networks, target capacity,
//! operators' drains, and the latest health (one verdict per monitor), load
//! and latency readings with their timestamps. Looked up by binary search
//! without allocating, and changed in place a row at a time
//! (`set_*`), so that a commit costs the rows it changed (issue 22).
//!
//! Compact on purpose, since every pdns pipe process holds its own copy:
//! targets, networks and monitors are interned once each (`Names`), and a
//! reading row is a fixed-size record of ids and numbers in one sorted
//! `Vec` per kind, with no heap allocation of its own. At 20,000 networks
//! × 8 targets (160,000 latency rows) that is about 9 MiB.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

use crate::dns::cmp_name;
use crate::dns::Subnet;
use crate::state::reading::Reading;
use crate::state::reading::{target_key, Drain, Health, Latency, Load, Source, ANY_NETWORK};
use crate::state::service::Service;

/// A known client network from `ha_networks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub subnet: Subnet,
    /// The CIDR as stored: the key of its latency samples.
    pub cidr: Box<str>,
    pub name: Box<str>,
    /// `cidr`'s id among the latency rows' network names, so that a lookup
    /// does not search 20,000 names for it once per candidate target.
    key: u32,
}

/// Strings kept once each in one arena, named by a `u32` id; ids never
/// change while the index lives, so rows can name them across changes.
#[derive(Default, Debug, Clone)]
struct Names {
    text: String,
    /// Id to (start, end) in `text`.
    spans: Vec<(u32, u32)>,
    /// Ids sorted by their text.
    sorted: Vec<u32>,
}

impl Names {
    fn get(&self, id: u32) -> &str {
        let (s, e) = self.spans[id as usize];
        &self.text[s as usize..e as usize]
    }

    /// The id of `s` under `cmp` (stored text, asked text).
    fn find(&self, s: &str, cmp: fn(&str, &str) -> Ordering) -> Option<u32> {
        self.sorted
            .binary_search_by(|&id| cmp(self.get(id), s))
            .ok()
            .map(|i| self.sorted[i])
    }

    fn intern(&mut self, s: &str) -> u32 {
        match self.sorted.binary_search_by(|&id| self.get(id).cmp(s)) {
            Ok(i) => self.sorted[i],
            Err(i) => {
                let id = self.spans.len() as u32;
                let start = self.text.len() as u32;
                self.text.push_str(s);
                self.spans.push((start, self.text.len() as u32));
                self.sorted.insert(i, id);
                id
            }
        }
    }
}

/// The id of `s` in shared `names`, added (to a copy of its own, when
/// another index shares them) if it is not there yet.
fn intern(names: &mut Arc<Names>, s: &str) -> u32 {
    match names.find(s, exact) {
        Some(id) => id,
        None => Arc::make_mut(names).intern(s),
    }
}

fn exact(stored: &str, asked: &str) -> Ordering {
    stored.cmp(asked)
}

/// A sorted table of `(key, value)` rows changed a row at a time: a row
/// already there changes in place; a new key waits in `pending`, and
/// `settle` merges all of them in one pass (a whole load adds 160,000 rows
/// at 20,000 networks; one at a time into a sorted table would be
/// quadratic).
#[derive(Debug)]
struct Table<K, T> {
    /// Sorted by key, one row per key.
    rows: Vec<(K, T)>,
    /// Keys not in `rows`, in the order set; `None`: set, then removed.
    pending: Vec<(K, Option<T>)>,
}

impl<K: Clone, T: Clone> Clone for Table<K, T> {
    fn clone(&self) -> Self {
        Self {
            rows: self.rows.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Into the rows already allocated: the memcached overlay copies the
    /// index at every change, and must not hold three copies at once.
    fn clone_from(&mut self, source: &Self) {
        self.rows.clone_from(&source.rows);
        self.pending.clone_from(&source.pending);
    }
}

impl<K, T> Default for Table<K, T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl<K: Ord + Copy, T> Table<K, T> {
    fn find(&self, key: &K) -> Result<usize, usize> {
        self.rows.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The row of `key`, also among those set since the last `settle`.
    fn get(&self, key: &K) -> Option<&T> {
        match self.find(key) {
            Ok(i) => Some(&self.rows[i].1),
            Err(_) => self
                .pending
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.as_ref()),
        }
    }

    /// Sets or (`None`) removes the row of `key`. Call `settle` before
    /// the next lookup.
    fn set(&mut self, key: K, value: Option<T>) {
        match (self.find(&key), value) {
            (Ok(i), Some(v)) => self.rows[i].1 = v,
            (Ok(i), None) => drop(self.rows.remove(i)),
            (Err(_), v) => self.pending.push((key, v)),
        }
    }

    fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Stable: of one key set several times, the last comes last.
        pending.sort_by_key(|p| p.0);
        // Keeps the last of each run of one key (`dedup_by` drops the later
        // of two equal neighbours, so the later value moves back first).
        pending.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let new = pending.into_iter().filter_map(|(k, v)| Some((k, v?)));
        if self.rows.is_empty() {
            // A whole load: no second copy of the table at its peak.
            self.rows = new.collect();
            return;
        }
        let sorted = self.rows.len();
        self.rows.extend(new);
        let (last, first_new) = (self.rows[..sorted].last(), self.rows.get(sorted));
        if last.zip(first_new).is_some_and(|(a, b)| a.0 > b.0) {
            // Two sorted runs: the stable sort finds them and merges once.
            self.rows.sort_by_key(|r| r.0);
        }
    }

    /// The rows whose key starts with `prefix` (by `part`).
    fn run<P: Ord>(&self, prefix: &P, part: impl Fn(&K) -> P) -> &[(K, T)] {
        let v = &self.rows;
        let start = v.partition_point(|(k, _)| part(k) < *prefix);
        let len = v[start..].partition_point(|(k, _)| part(k) == *prefix);
        &v[start..start + len]
    }
}

/// The networks, grouped by (family, prefix length) longest first, each
/// group sorted by address: a lookup is one binary search per prefix
/// length in use, not a scan of every network.
#[derive(Default, Debug, Clone)]
struct NetworkIndex {
    /// In lookup order; `keys[i]` is `list[i]`'s network bits.
    list: Vec<Network>,
    keys: Vec<u128>,
    /// (IPv4?, prefix, start, end) into `list`.
    groups: Vec<(bool, u8, u32, u32)>,
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The network part of `a` at `prefix`, shifted down.
fn net_bits(a: IpAddr, prefix: u8) -> u128 {
    let width: u8 = if a.is_ipv4() { 32 } else { 128 };
    bits(a)
        .checked_shr(u32::from(width - prefix.min(width)))
        .unwrap_or(0)
}

impl NetworkIndex {
    fn build(mut list: Vec<Network>) -> Self {
        let key = |n: &Network| {
            (
                std::cmp::Reverse(n.subnet.prefix),
                !n.subnet.addr.is_ipv4(),
                net_bits(n.subnet.addr, n.subnet.prefix),
            )
        };
        // Stable: of two rows for one network, the first read wins, as
        // when the list was scanned in order.
        list.sort_by_key(key);
        let keys = list
            .iter()
            .map(|n| net_bits(n.subnet.addr, n.subnet.prefix))
            .collect();
        let mut groups: Vec<(bool, u8, u32, u32)> = Vec::new();
        for (i, n) in list.iter().enumerate() {
            let g = (n.subnet.addr.is_ipv4(), n.subnet.prefix);
            match groups.last_mut() {
                Some(last) if (last.0, last.1) == g => last.3 = i as u32 + 1,
                _ => groups.push((g.0, g.1, i as u32, i as u32 + 1)),
            }
        }
        Self { list, keys, groups }
    }

    fn lookup(&self, client: Subnet) -> Option<&Network> {
        self.position(client).map(|i| &self.list[i])
    }

    fn position(&self, client: Subnet) -> Option<usize> {
        // IPv4-mapped IPv6 clients count as IPv4 (`Subnet::contains`).
        let addr = match client.addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client.addr, IpAddr::V4),
            v4 => v4,
        };
        for &(v4, prefix, start, end) in &self.groups {
            if v4 != addr.is_ipv4() || prefix > client.prefix {
                continue;
            }
            let want = net_bits(addr, prefix);
            let keys = &self.keys[start as usize..end as usize];
            let i = keys.partition_point(|k| *k < want);
            if keys.get(i) == Some(&want) {
                return Some(start as usize + i);
            }
        }
        None
    }
}

/// The known networks as one list, shared by every copy of the index and the same
/// until `ha_networks` changes: the pipe counts queries by position in it, and names
/// the positions only when it writes its counters ([`crate::pipe::tally`]).
#[derive(Clone, Debug, Default)]
pub struct NetworkList(Arc<NetworkIndex>);

impl NetworkList {
    /// Whether `m` still looks networks up in this list.
    pub fn is_current(&self, m: &Metrics) -> bool {
        Arc::ptr_eq(&self.0, &m.networks)
    }

    /// The position in [`Self::networks`] of the network `client` is in.
    pub fn position(&self, client: Subnet) -> Option<usize> {
        self.0.position(client)
    }

    pub fn networks(&self) -> &[Network] {
        &self.0.list
    }
}

/// Names and networks are shared between copies (the memcached overlay's
/// copy of the index), copied only when one of them changes.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Every `ha_targets` name: what there is to fetch from memcached.
    targets: Vec<Box<str>>,
    /// Networks as added, until `finish` indexes them.
    adding: Vec<Network>,
    networks: Arc<NetworkIndex>,
    /// Target keys (lower case, as `target_key` makes them) of every row.
    target_names: Arc<Names>,
    /// Network keys (CIDRs as stored, and `*`) of latency rows.
    network_names: Arc<Names>,
    /// The id of `*` among them, the fallback every ranking looks up.
    any: Option<u32>,
    monitor_names: Arc<Names>,
    capacity: Table<u32, u32>,
    /// By (target, monitor): one target's verdicts are adjacent.
    health: Table<(u32, u32), Health>,
    /// By (target, service, monitor): one advertised service's verdicts are adjacent.
    service_health: Table<(u32, Service, u32), Health>,
    drains: Table<u32, Drain>,
    /// From SQLite: the generation of each target's last drain or undrain. A
    /// drain from memcached of an older one is a copy written back after an
    /// undrain or a newer drain, and is refused.
    drain_generations: Table<u32, u64>,
    load: Table<u32, Load>,
    /// By (network, target, source): one pair's sources are adjacent.
    latency: Table<(u32, u32, Source), Latency>,
}

impl Clone for Metrics {
    fn clone(&self) -> Self {
        let mut m = Self::default();
        m.clone_from(self);
        m
    }

    fn clone_from(&mut self, source: &Self) {
        self.targets.clone_from(&source.targets);
        self.adding.clone_from(&source.adding);
        self.networks = source.networks.clone();
        self.target_names = source.target_names.clone();
        self.network_names = source.network_names.clone();
        self.any = source.any;
        self.monitor_names = source.monitor_names.clone();
        self.capacity.clone_from(&source.capacity);
        self.health.clone_from(&source.health);
        self.service_health.clone_from(&source.service_health);
        self.drains.clone_from(&source.drains);
        self.drain_generations.clone_from(&source.drain_generations);
        self.load.clone_from(&source.load);
        self.latency.clone_from(&source.latency);
    }
}

/// An `ha_networks` CIDR that is no network: the row is left out, and the observer
/// names it.
#[derive(Debug, thiserror::Error)]
#[error("ha_networks: \"{}\" is not a network address/prefix", crate::text::shown(.0))]
pub struct BadNetwork(pub String);

impl Metrics {
    pub fn add_network(&mut self, cidr: &str, name: &str) -> Result<(), BadNetwork> {
        let subnet = Subnet::parse(cidr.trim())
            .filter(|s| s.is_network())
            .ok_or_else(|| BadNetwork(cidr.to_owned()))?;
        let key = intern(&mut self.network_names, cidr);
        self.adding.push(Network {
            subnet,
            cidr: cidr.into(),
            name: name.into(),
            key,
        });
        Ok(())
    }

    /// Forgets the networks, to add them again (`ha_networks` changed).
    pub fn clear_networks(&mut self) {
        self.adding.clear();
        self.networks = Arc::default();
    }

    /// Forgets the targets and their capacity (`ha_targets` changed).
    pub fn clear_targets(&mut self) {
        self.targets.clear();
        self.capacity = Table::default();
    }

    pub fn add_target(&mut self, target: &str) {
        self.targets.push(target_key(target).into());
    }

    pub fn add_capacity(&mut self, target: &str, max: u32) {
        let t = intern(&mut self.target_names, &target_key(target));
        self.capacity.set(t, Some(max));
    }

    pub fn add_health(&mut self, target: &str, monitor: &str, h: Health) {
        self.set_health(target, monitor, Some(h));
    }

    pub fn add_service_health(&mut self, target: &str, s: Service, monitor: &str, h: Health) {
        self.set_service_health(target, s, monitor, Some(h));
    }

    pub fn add_drain(&mut self, target: &str, d: Drain) {
        self.set_drain(target, Some(d));
    }

    pub fn add_load(&mut self, target: &str, l: Load) {
        self.set_load(target, Some(l));
    }

    pub fn add_latency(&mut self, network: &str, target: &str, source: Source, l: Latency) {
        self.set_latency(network, target, source, Some(l));
    }

    /// Sets or (`None`) removes one monitor's verdict on `target`.
    pub fn set_health(&mut self, target: &str, monitor: &str, h: Option<Health>) {
        let t = intern(&mut self.target_names, &target_key(target));
        let m = intern(&mut self.monitor_names, monitor);
        self.health.set((t, m), h);
    }

    /// Sets or (`None`) removes one monitor's verdict on one advertised service of `target`.
    pub fn set_service_health(
        &mut self,
        target: &str,
        s: Service,
        monitor: &str,
        h: Option<Health>,
    ) {
        let t = intern(&mut self.target_names, &target_key(target));
        let m = intern(&mut self.monitor_names, monitor);
        self.service_health.set((t, s, m), h);
    }

    pub fn set_drain(&mut self, target: &str, d: Option<Drain>) {
        let t = intern(&mut self.target_names, &target_key(target));
        self.drains.set(t, d);
    }

    /// The generation of `target`'s last drain or undrain written to SQLite.
    pub fn set_drain_generation(&mut self, target: &str, generation: Option<u64>) {
        let t = intern(&mut self.target_names, &target_key(target));
        self.drain_generations.set(t, generation);
    }

    /// Whether `r` is a drain or undrain older than the generation SQLite holds for its
    /// target: a copy written back to memcached after a newer word, refused.
    pub fn superseded(&self, r: &Reading) -> bool {
        let Reading::Drain {
            target, generation, ..
        } = r
        else {
            return false;
        };
        let newest = self
            .target_id(&target_key(target))
            .and_then(|t| self.drain_generations.get(&t));
        newest.is_some_and(|g| generation < g)
    }

    pub fn set_load(&mut self, target: &str, l: Option<Load>) {
        let t = intern(&mut self.target_names, &target_key(target));
        self.load.set(t, l);
    }

    pub fn set_latency(&mut self, network: &str, target: &str, source: Source, l: Option<Latency>) {
        let n = intern(&mut self.network_names, network);
        let t = intern(&mut self.target_names, &target_key(target));
        self.latency.set((n, t, source), l);
    }

    pub fn targets(&self) -> &[Box<str>] {
        &self.targets
    }

    /// Longest prefix first.
    pub fn networks(&self) -> &[Network] {
        &self.networks.list
    }

    /// Lays a reading from memcached over this one where it is newer: the
    /// freshest word on a target wins, wherever it was written.
    pub fn overlay(&mut self, r: &Reading) {
        self.overlay_one(r);
        self.settle();
    }

    /// As `overlay` for each of `readings`, merging once at the end.
    pub fn overlay_all(&mut self, readings: &[Reading]) {
        for r in readings {
            self.overlay_one(r);
        }
        self.settle();
    }

    fn overlay_one(&mut self, r: &Reading) {
        // Also here: an undrain written to SQLite since the last fetch ends
        // the drain fetched before it at once.
        if self.superseded(r) {
            return;
        }
        match r {
            Reading::Health { target, monitor, h } => {
                let t = intern(&mut self.target_names, &target_key(target));
                let m = intern(&mut self.monitor_names, monitor);
                if self
                    .health
                    .get(&(t, m))
                    .is_none_or(|o| o.updated < h.updated)
                {
                    self.health.set((t, m), Some(*h));
                }
            }
            Reading::Drain {
                target,
                reason,
                updated,
                ..
            } => {
                let t = intern(&mut self.target_names, &target_key(target));
                if self.drains.get(&t).is_none_or(|d| d.since < *updated) {
                    let d = reason.as_deref().map(|r| Drain {
                        reason: r.into(),
                        since: *updated,
                    });
                    self.drains.set(t, d);
                }
            }
            Reading::Load {
                target,
                load,
                updated,
            } => {
                let t = intern(&mut self.target_names, &target_key(target));
                if self.load.get(&t).is_none_or(|l| l.updated < *updated) {
                    self.load.set(t, *load);
                }
            }
            Reading::Latency {
                network,
                target,
                source,
                l,
                ..
            } => {
                let n = intern(&mut self.network_names, network);
                let t = intern(&mut self.target_names, &target_key(target));
                let key = (n, t, *source);
                if self.latency.get(&key).is_none_or(|o| o.updated < l.updated) {
                    self.latency.set(key, Some(*l));
                }
            }
        }
    }

    /// Merges what `set_*` added: every lookup needs it first.
    pub fn settle(&mut self) {
        self.any = self.network_names.find(ANY_NETWORK, exact);
        self.capacity.settle();
        self.health.settle();
        self.service_health.settle();
        self.drains.settle();
        self.drain_generations.settle();
        self.load.settle();
        self.latency.settle();
    }

    pub fn finish(mut self) -> Self {
        self.finish_in_place();
        self
    }

    /// As `finish`, for an index changed where it lies.
    pub fn finish_in_place(&mut self) {
        self.targets.sort();
        self.targets.dedup();
        if !self.adding.is_empty() {
            let mut all = self.networks.list.clone();
            all.append(&mut self.adding);
            self.networks = Arc::new(NetworkIndex::build(all));
        }
        self.settle();
    }

    /// The networks as they are looked up now.
    pub fn network_list(&self) -> NetworkList {
        NetworkList(self.networks.clone())
    }

    /// The most specific known network holding the whole client subnet.
    pub fn network_for(&self, client: Subnet) -> Option<&Network> {
        self.networks.lookup(client)
    }

    fn target_id(&self, target: &str) -> Option<u32> {
        self.target_names.find(target, cmp_name)
    }

    pub fn capacity(&self, target: &str) -> Option<u32> {
        self.capacity.get(&self.target_id(target)?).copied()
    }

    /// Every monitor's verdict on `target`, as (monitor, verdict), in
    /// monitor order.
    pub fn health<'a>(&'a self, target: &'a str) -> impl Iterator<Item = (&'a str, Health)> + 'a {
        let run = match self.target_id(target) {
            Some(t) => self.health.run(&t, |k| k.0),
            None => &[],
        };
        HealthIter {
            names: &self.monitor_names,
            run,
            last: None,
        }
    }

    /// Every monitor's verdict on one advertised service of `target`.
    pub fn service_health<'a>(
        &'a self,
        target: &'a str,
        s: Service,
    ) -> impl Iterator<Item = (&'a str, Health)> + 'a {
        let run = match self.target_id(target) {
            Some(t) => self.service_health.run(&(t, s), |k| (k.0, k.1)),
            None => &[],
        };
        let names = &self.monitor_names;
        run.iter().map(move |((_, _, m), h)| (names.get(*m), *h))
    }

    pub fn drain(&self, target: &str) -> Option<&Drain> {
        self.drains.get(&self.target_id(target)?)
    }

    /// Whether any target is drained: the static answer's fast path.
    pub fn any_drained(&self) -> bool {
        !self.drains.rows.is_empty()
    }

    pub fn load(&self, target: &str) -> Option<Load> {
        self.load.get(&self.target_id(target)?).copied()
    }

    /// Every source's reading of (network, target), fresh or not, in
    /// [`Source`] order; without allocating, as the ranking runs it per
    /// candidate.
    pub fn latency<'a>(
        &'a self,
        network: &'a str,
        target: &'a str,
    ) -> impl Iterator<Item = (Source, Latency)> + 'a {
        let id = match network == ANY_NETWORK {
            true => self.any,
            false => self.network_names.find(network, exact),
        };
        self.latency_of(id, target)
    }

    /// As `latency`, for a network `network_for` found.
    pub fn network_latency<'a>(
        &'a self,
        network: &Network,
        target: &'a str,
    ) -> impl Iterator<Item = (Source, Latency)> + 'a {
        self.latency_of(Some(network.key), target)
    }

    fn latency_of<'a>(
        &'a self,
        network: Option<u32>,
        target: &'a str,
    ) -> impl Iterator<Item = (Source, Latency)> + 'a {
        let run = match (network, self.target_id(target)) {
            (Some(n), Some(t)) => self.latency.run(&(n, t), |k| (k.0, k.1)),
            _ => &[],
        };
        run.iter().map(|((_, _, s), l)| (*s, *l))
    }
}

/// One target's verdicts in monitor-name order (ids are in order of first
/// sight): a target has a handful of monitors, so each step scans them.
struct HealthIter<'a> {
    names: &'a Names,
    run: &'a [((u32, u32), Health)],
    last: Option<&'a str>,
}

impl<'a> Iterator for HealthIter<'a> {
    type Item = (&'a str, Health);

    fn next(&mut self) -> Option<Self::Item> {
        let names = self.names;
        let next = self
            .run
            .iter()
            .map(|((_, m), h)| (names.get(*m), *h))
            .filter(|(m, _)| self.last.is_none_or(|l| *m > l))
            .min_by(|a, b| a.0.cmp(b.0))?;
        self.last = Some(next.0);
        Some(next)
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

    /// Rows set before `settle` wait and are merged once: the last word on
    /// a key wins, a removal included; rows already held change in place.
    #[test]
    fn set_rows_are_merged_and_the_last_word_wins() {
        let l = |ms: f64| Latency {
            ewma_ms: ms,
            mean_ms: ms,
            samples: 1,
            updated: 1.0,
            callers: None,
        };
        let net = |i: u32| format!("10.{}.{}.0/24", i / 256, i % 256);
        let ewma =
            |m: &Metrics, i: u32, t: &str| m.latency(&net(i), t).next().map(|(_, l)| l.ewma_ms);
        let mut m = Metrics::default();
        for i in (0..2000).rev() {
            m.add_latency(
                &net(i),
                "sip1.example.com",
                Source::Observe,
                l(f64::from(i)),
            );
        }
        m.add_latency(&net(7), "sip1.example.com", Source::Observe, l(70.0));
        m.set_latency(&net(8), "SIP1.example.com.", Source::Observe, None);
        let mut m = m.finish();
        assert_eq!(ewma(&m, 7, "sip1.example.com"), Some(70.0));
        assert_eq!(ewma(&m, 8, "sip1.example.com"), None);
        assert_eq!(ewma(&m, 1999, "Sip1.Example.Com"), Some(1999.0));
        // Held rows change in place, new ones are merged between them.
        m.set_latency(&net(9), "sip1.example.com", Source::Observe, Some(l(0.5)));
        m.set_latency(&net(10), "sip1.example.com", Source::Observe, None);
        m.set_latency(&net(8), "sip1.example.com", Source::Observe, Some(l(8.5)));
        m.set_latency(&net(5), "sip2.example.com", Source::Monitor, Some(l(5.5)));
        m.settle();
        assert_eq!(ewma(&m, 9, "sip1.example.com"), Some(0.5));
        assert_eq!(ewma(&m, 10, "sip1.example.com"), None);
        assert_eq!(ewma(&m, 8, "sip1.example.com"), Some(8.5));
        assert_eq!(ewma(&m, 5, "sip2.example.com"), Some(5.5));
        assert_eq!(ewma(&m, 5, "sip1.example.com"), Some(5.0));
        let all: usize = (0..2000)
            .map(|i| m.latency(&net(i), "sip1.example.com").count())
            .sum();
        assert_eq!(all, 1999);
    }
}
