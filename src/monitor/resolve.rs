//! Name resolution for probe and load addresses, bounded by the probe timeout.
//!
//! The system resolver (`getaddrinfo`) has no timeout of ours: with an unreachable DNS
//! server it blocks for `timeout:5 attempts:2` per nameserver from resolv.conf. So each
//! name is looked up in a thread of its own, and the round waits for all of them until one
//! probe timeout has passed. A lookup still running then is left to finish (at most one per
//! name, at most [`MAX_IN_FLIGHT`] in all) and its answer is used by a later round.
//!
//! Good answers are kept for [`REFRESH`]; when a lookup fails or times out, the last good
//! addresses are probed meanwhile (as a resolver serves stale data), and a name that never
//! resolved is not probed at all: the target keeps its last state until its readings go
//! stale. Either way the failure is a configuration or resolver problem, reported as such,
//! never a down server.
//!
//! A name with several addresses is probed on the first one `getaddrinfo` returns (RFC 6724
//! order: what a SIP client on this host would try first); the log says which, once per
//! change.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use log::info;

/// How long a good answer is used before it is looked up again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Lookups running at once, across rounds: a bound on threads when the resolver hangs.
pub const MAX_IN_FLIGHT: usize = 64;

type Answer = io::Result<Vec<SocketAddr>>;

#[derive(Default)]
struct Entry {
    /// The last good answer and when it came.
    addrs: Vec<SocketAddr>,
    at: Option<Instant>,
    pending: Option<Receiver<Answer>>,
}

/// Where to probe a `host:port`, and what went wrong finding out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// `None`: no address known, so no probe this round.
    pub addr: Option<SocketAddr>,
    /// Set when this round's lookup failed (`addr` is then the last good one, if any).
    pub problem: Option<String>,
}

#[derive(Default)]
pub struct Resolver {
    cache: HashMap<String, Entry>,
}

impl Resolver {
    /// Resolves every `host:port` in `names` within `timeout` in all.
    pub fn resolve_all(&mut self, names: &[&str], timeout: Duration) -> HashMap<String, Lookup> {
        let start = Instant::now();
        let mut out = HashMap::new();
        let mut problems: HashMap<String, String> = HashMap::new();
        let in_flight = self.cache.values().filter(|e| e.pending.is_some()).count();
        let mut started = 0;
        for &name in names {
            if out.contains_key(name) {
                continue;
            }
            if let Ok(addr) = name.parse::<SocketAddr>() {
                let lookup = Lookup {
                    addr: Some(addr),
                    problem: None,
                };
                out.insert(name.to_owned(), lookup);
                continue;
            }
            let entry = self.cache.entry(name.to_owned()).or_default();
            // A lookup left running by an earlier round may have finished.
            if let Some(rx) = &entry.pending {
                match rx.try_recv() {
                    Ok(answer) => {
                        entry.pending = None;
                        if let Err(e) = store(name, entry, answer, start) {
                            problems.insert(name.to_owned(), e.to_string());
                        }
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => entry.pending = None,
                }
            }
            let fresh = entry
                .at
                .is_some_and(|at| start.duration_since(at) < REFRESH);
            if fresh || entry.pending.is_some() || problems.contains_key(name) {
                out.insert(name.to_owned(), Lookup::default());
                continue;
            }
            if in_flight + started >= MAX_IN_FLIGHT {
                problems.insert(
                    name.to_owned(),
                    format!("{MAX_IN_FLIGHT} lookups already running; resolving later"),
                );
            } else {
                let (tx, rx) = mpsc::channel();
                let owned = name.to_owned();
                let spawned = thread::Builder::new()
                    .name("resolve".into())
                    .spawn(move || {
                        let _ = tx.send(owned.to_socket_addrs().map(Iterator::collect));
                    });
                match spawned {
                    Ok(_) => {
                        entry.pending = Some(rx);
                        started += 1;
                    }
                    Err(e) => {
                        problems.insert(name.to_owned(), format!("no thread to resolve it: {e}"));
                    }
                }
            }
            out.insert(name.to_owned(), Lookup::default());
        }
        // Wait for this round's lookups, all within the one timeout.
        let deadline = start + timeout;
        for (name, entry) in &mut self.cache {
            let Some(rx) = &entry.pending else { continue };
            if !out.contains_key(name) {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(answer) => {
                    entry.pending = None;
                    if let Err(e) = store(name, entry, answer, Instant::now()) {
                        problems.insert(name.clone(), e.to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let fresh = entry
                        .at
                        .is_some_and(|at| start.duration_since(at) < REFRESH);
                    if !fresh {
                        problems.insert(name.clone(), format!("no answer within {timeout:?}"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    entry.pending = None;
                    problems.insert(name.clone(), "the lookup thread died".into());
                }
            }
        }
        for (name, lookup) in &mut out {
            if let Some(entry) = self.cache.get(name) {
                lookup.addr = entry.addrs.first().copied();
            }
            lookup.problem = problems.remove(name);
        }
        out
    }
}

/// Keeps a lookup's answer; an error leaves the last good addresses in place.
fn store(name: &str, entry: &mut Entry, answer: Answer, now: Instant) -> anyhow::Result<()> {
    match answer {
        Ok(addrs) if !addrs.is_empty() => {
            if addrs != entry.addrs {
                let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let name = crate::text::shown(name);
                info!("{name} resolves to {}; probing {}", all.join(", "), all[0]);
            }
            entry.addrs = addrs;
            entry.at = Some(now);
            Ok(())
        }
        Ok(_) => Err(anyhow::anyhow!("resolves to no address")),
        Err(e) => {
            // OS messages start with a capital letter; ours are lowercase.
            let text = e.to_string();
            let mut chars = text.chars();
            let first = chars.next().map(|c| c.to_lowercase().to_string());
            Err(anyhow::anyhow!(
                "{}{}",
                first.unwrap_or_default(),
                chars.as_str()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_lookup() {
        let mut r = Resolver::default();
        let got = r.resolve_all(&["127.0.0.1:5060", "[::1]:5061"], Duration::from_millis(10));
        assert_eq!(
            got["127.0.0.1:5060"].addr,
            Some("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(got["[::1]:5061"].addr, Some("[::1]:5061".parse().unwrap()));
        assert!(r.cache.is_empty());
    }

    #[test]
    fn localhost_resolves_and_a_bad_name_is_a_problem_not_an_address() {
        let mut r = Resolver::default();
        let names = ["localhost:5060", "no-such-host.invalid:5060", "bad name:x"];
        let got = r.resolve_all(&names, Duration::from_secs(5));
        let local = &got["localhost:5060"];
        assert!(
            local.addr.is_some_and(|a| a.ip().is_loopback()),
            "{local:?}"
        );
        assert_eq!(local.problem, None);
        for bad in &names[1..] {
            assert_eq!(got[*bad].addr, None, "{bad}");
            assert!(got[*bad].problem.is_some(), "{bad}");
        }
        // Cached: the second round starts no lookup for localhost.
        let again = r.resolve_all(&names[..1], Duration::from_millis(1));
        assert_eq!(again["localhost:5060"], *local);
    }
}
