//! The pipe processes' counters ([`crate::state::pipe_counters`]) summed for the
//! monitor's `/metrics`, read once a round. A pipe that ended leaves its last counts to
//! the sum of ended ones and its file is removed, so the totals only grow while the
//! monitor runs (Prometheus reads a drop as a counter reset and would count it twice).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::state::pipe_counters::{self, alive, Counts};
use crate::text::{shown, Reported};

/// What the pipes answered, as of the last round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipeFigures {
    /// Pipe processes running that wrote counters.
    pub running: usize,
    /// Running and ended pipes together, since this monitor started.
    pub counts: Counts,
}

/// A process is its id and start time: an id the kernel hands out again is another pipe.
type Key = (u32, u64);

pub struct PipeTotals {
    dir: PathBuf,
    running: BTreeMap<Key, Counts>,
    ended: Counts,
    /// Ended pipes already summed whose files could not be removed (they are read
    /// again each round, and must not be summed again).
    summed: BTreeSet<Key>,
}

impl PipeTotals {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            running: BTreeMap::new(),
            ended: Counts::default(),
            summed: BTreeSet::new(),
        }
    }

    /// Reads the directory and returns the totals; problems are logged when they start
    /// and when they end.
    pub fn read(&mut self, reported: &mut Reported) -> PipeFigures {
        self.read_with(reported, alive)
    }

    fn read_with(&mut self, reported: &mut Reported, alive: impl Fn(u32) -> bool) -> PipeFigures {
        let what = "pipe counters";
        let dir = self.dir.display().to_string();
        let (files, bad) = match pipe_counters::read_dir(&self.dir) {
            Ok(read) => {
                reported.fine(&dir, what);
                read
            }
            Err(e) => {
                reported.problem(&dir, what, &e.to_string());
                (Vec::new(), Vec::new())
            }
        };
        match bad.first() {
            Some((name, why)) => reported.problem(
                &dir,
                "pipe counters file",
                &format!("{} {why} ({} unreadable)", shown(name), bad.len()),
            ),
            None => reported.fine(&dir, "pipe counters file"),
        }
        let mut running = BTreeMap::new();
        for f in files {
            let key = (f.pid, f.started);
            if alive(f.pid) {
                running.insert(key, f.counts);
            } else if self.summed.insert(key) {
                self.running.remove(&key);
                self.ended.add(&f.counts);
                if std::fs::remove_file(self.dir.join(f.pid.to_string())).is_ok() {
                    self.summed.remove(&key);
                }
            }
        }
        // A running pipe whose file went (or whose id another process took) ended
        // with the counts last read.
        for (key, counts) in std::mem::replace(&mut self.running, running) {
            if !self.running.contains_key(&key) && !self.summed.contains(&key) {
                self.ended.add(&counts);
            }
        }
        let mut counts = self.ended.clone();
        for c in self.running.values() {
            counts.add(c);
        }
        PipeFigures {
            running: self.running.len(),
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::pipe_counters::{write, Pair};
    use std::cell::RefCell;

    fn counts(lookups: u64, montreal: u64) -> Counts {
        let mut c = Counts {
            lookups,
            ..Counts::default()
        };
        c.add_network(
            "montreal",
            Pair {
                queries: montreal,
                answered: montreal,
            },
        );
        c
    }

    #[test]
    fn totals_only_grow_as_pipes_end_and_start() {
        let dir = std::env::temp_dir().join(format!("pdns-ha-pipes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dead = RefCell::new(BTreeSet::<u32>::new());
        let alive = |pid: u32| !dead.borrow().contains(&pid);
        let mut totals = PipeTotals::new(dir.clone());
        let mut reported = Reported::default();
        assert_eq!(
            totals.read_with(&mut reported, alive),
            PipeFigures::default()
        );

        write(&dir, 11, &counts(5, 2).render(100)).unwrap();
        write(&dir, 12, &counts(7, 0).render(100)).unwrap();
        let f = totals.read_with(&mut reported, alive);
        assert_eq!((f.running, f.counts.lookups), (2, 12));

        // 11 answers more, then ends; its last file is summed once and removed.
        write(&dir, 11, &counts(9, 3).render(100)).unwrap();
        dead.borrow_mut().insert(11);
        let f = totals.read_with(&mut reported, alive);
        assert_eq!((f.running, f.counts.lookups), (1, 16));
        assert_eq!(f.counts.networks["montreal"].queries, 3);
        assert!(!dir.join("11").exists());
        assert_eq!(totals.read_with(&mut reported, alive).counts.lookups, 16);

        // 12's file is taken away while it runs: its last counts stay counted.
        std::fs::remove_file(dir.join("12")).unwrap();
        assert_eq!(totals.read_with(&mut reported, alive).counts.lookups, 16);

        // Id 11 again, another process: counted from its own zero.
        dead.borrow_mut().remove(&11);
        write(&dir, 11, &counts(1, 1).render(200)).unwrap();
        let f = totals.read_with(&mut reported, alive);
        assert_eq!((f.running, f.counts.lookups), (1, 17));
        assert_eq!(f.counts.networks["montreal"].queries, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
