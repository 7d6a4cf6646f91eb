//! What this pipe process answered, by client network: an array increment per lookup,
//! named and written to the process's counters file ([`crate::state::pipe_counters`])
//! at the first line, every [`WRITE_EVERY`] while pdns asks, and once more at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use log::warn;

use crate::dns::Subnet;
use crate::state::index::{Metrics, NetworkList};
use crate::state::pipe_counters::{self, Counts, Pair, WRITE_EVERY};

/// The totals the loop keeps (`CMD status` shows them too).
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub questions: u64,
    pub answered: u64,
    pub empty: u64,
    pub axfrs: u64,
    pub failed_lines: u64,
    /// Every FAIL sent.
    pub fails: u64,
}

pub struct Tally {
    /// `None`: counters are not written (`--pipe-counters none`).
    dir: Option<PathBuf>,
    started: u64,
    next_write: Instant,
    /// The list `by_position` counts in.
    list: NetworkList,
    /// The last client and its network's position: pdns asks several questions for one
    /// DNS query (its SOA, the name, additional records), all from the same client.
    last: Option<(Subnet, Option<usize>)>,
    by_position: Vec<Pair>,
    /// Networks counted under an earlier list (`ha_networks` changed since), by name.
    earlier: BTreeMap<String, Pair>,
    unknown: Pair,
    /// A directory that cannot be written is said once, not at every write.
    write_failed: bool,
    /// Whether the files of long-ended pipes were looked for (at the first write).
    swept: bool,
}

impl Tally {
    pub fn new(dir: Option<PathBuf>, now: Instant) -> Self {
        Self {
            dir,
            started: crate::state::reading::unix_now() as u64,
            next_write: now,
            list: NetworkList::default(),
            last: None,
            by_position: Vec::new(),
            earlier: BTreeMap::new(),
            unknown: Pair::default(),
            write_failed: false,
            swept: false,
        }
    }

    /// Counts one question from `client`, answered with data or not.
    pub fn count(&mut self, metrics: &Metrics, client: Subnet, answered: bool) {
        if !self.list.is_current(metrics) {
            self.fold();
            self.list = metrics.network_list();
            self.by_position = vec![Pair::default(); self.list.networks().len()];
            self.last = None;
        }
        let position = match self.last {
            Some((c, p)) if c == client => p,
            _ => {
                let p = self.list.position(client);
                self.last = Some((client, p));
                p
            }
        };
        match position {
            Some(i) => self.by_position[i].count(answered),
            None => self.unknown.count(answered),
        }
    }

    /// Moves the counts by position under their names, before the positions change.
    fn fold(&mut self) {
        for (n, p) in self.list.networks().iter().zip(&self.by_position) {
            if p.queries > 0 {
                self.earlier.entry(n.name.to_string()).or_default().add(*p);
            }
        }
    }

    pub fn counts(&self, s: &Stats) -> Counts {
        let mut c = Counts {
            lookups: s.questions,
            answered: s.answered,
            empty: s.empty,
            axfrs: s.axfrs,
            bad_lines: s.failed_lines,
            fails: s.fails,
            unknown: self.unknown,
            networks: BTreeMap::new(),
        };
        for (name, p) in &self.earlier {
            c.add_network(name, *p);
        }
        // Several CIDRs of one network count under its one name.
        for (n, p) in self.list.networks().iter().zip(&self.by_position) {
            if p.queries > 0 {
                c.add_network(&n.name, *p);
            }
        }
        c
    }

    /// Writes the file if it is time to; called with the time the loop took anyway.
    pub fn maybe_write(&mut self, s: &Stats, now: Instant) {
        if now >= self.next_write {
            self.write(s, now);
        }
    }

    pub fn write(&mut self, s: &Stats, now: Instant) {
        self.next_write = now + WRITE_EVERY;
        let Some(dir) = &self.dir else {
            return;
        };
        let text = self.counts(s).render(self.started);
        let written = pipe_counters::write(dir, std::process::id(), &text);
        drop(text);
        // The counts, their text and the paths were allocated and freed between lookups
        // that allocate nothing: every 5 s, pages the heap would otherwise keep.
        crate::pipe::lean::give_back();
        match written {
            Ok(()) => {
                self.write_failed = false;
                if !self.swept {
                    self.swept = true;
                    pipe_counters::remove_ended(dir);
                }
            }
            Err(e) if !self.write_failed => {
                self.write_failed = true;
                warn!(
                    "pipe counters not written to {}: {e} (answers are not affected; \
                     --pipe-counters DIR names another directory, --pipe-counters none \
                     turns them off)",
                    dir.display()
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(networks: &[(&str, &str)]) -> Metrics {
        let mut m = Metrics::default();
        for (cidr, name) in networks {
            m.add_network(cidr, name).unwrap();
        }
        m.finish()
    }

    fn client(ip: &str) -> Subnet {
        Subnet::parse(ip).unwrap()
    }

    #[test]
    fn counts_by_network_name_across_changes() {
        let mut t = Tally::new(None, Instant::now());
        let m = metrics(&[("10.1.0.0/16", "montreal"), ("10.2.0.0/16", "vancouver")]);
        t.count(&m, client("10.1.2.3"), true);
        t.count(&m, client("10.1.2.4"), false);
        t.count(&m, client("192.0.2.1"), false);
        // ha_networks changed: montreal gained a prefix, vancouver left.
        let m = metrics(&[("10.1.0.0/16", "montreal"), ("10.9.0.0/16", "montreal")]);
        t.count(&m, client("10.9.0.1"), true);
        t.count(&m, client("10.2.0.1"), true);
        let c = t.counts(&Stats::default());
        assert_eq!(
            c.networks.into_iter().collect::<Vec<_>>(),
            [(
                "montreal".to_owned(),
                Pair {
                    queries: 3,
                    answered: 2
                }
            )]
        );
        assert_eq!(
            c.unknown,
            Pair {
                queries: 2,
                answered: 1
            }
        );
        // The same client again once its prefix is known: the network remembered for
        // it under the earlier list is not used.
        let m = metrics(&[("10.2.0.0/16", "vancouver")]);
        t.count(&m, client("10.2.0.1"), true);
        let c = t.counts(&Stats::default());
        assert_eq!(c.unknown.queries, 2);
        assert_eq!(c.networks["vancouver"].queries, 1);
    }

    #[test]
    fn writes_when_due_and_says_a_failure_once() {
        let dir = std::env::temp_dir().join(format!("pdns-ha-tally-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let start = Instant::now();
        let mut t = Tally::new(Some(dir.clone()), start);
        let s = Stats {
            questions: 5,
            ..Stats::default()
        };
        t.maybe_write(&Stats::default(), start);
        let lookups = || pipe_counters::read_dir(&dir).unwrap().0[0].counts.lookups;
        assert_eq!(lookups(), 0, "the first line writes");
        t.maybe_write(&s, start + WRITE_EVERY / 2);
        assert_eq!(lookups(), 0, "written again before it was due");
        t.maybe_write(&s, start + WRITE_EVERY);
        let (files, _) = pipe_counters::read_dir(&dir).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].pid, std::process::id());
        assert_eq!(lookups(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
        // A path under a file cannot be made: said once, answers unaffected.
        let mut t = Tally::new(Some(PathBuf::from("/dev/null/x")), start);
        t.write(&s, start);
        assert!(t.write_failed);
    }
}
