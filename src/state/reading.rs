//! Soft-state readings (health, load, latency) as every part of pdns-ha
//! passes them around: the monitor and `metric` write them, memcached
//! carries them, the pipe's index holds them. Their text form in memcached
//! is defined here, next to the types, so that writer and reader agree.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub up: bool,
    pub updated: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub sessions: u32,
    /// Capacity reported with the reading (FreeSWITCH's max-sessions).
    pub max_sessions: Option<u32>,
    pub updated: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Short-term EWMA: what ranking uses, so a target that slows down
    /// drops within a few samples.
    pub ewma_ms: f64,
    /// Long-run mean, shown by `status`.
    pub mean_ms: f64,
    pub samples: u64,
    pub updated: f64,
    /// Distinct callers behind the latest figure (`observe`); `None` for
    /// probes and pushes, whose weight is their sample count.
    pub callers: Option<u32>,
}

/// Who measured a latency reading. Several sources may describe the same
/// (network, target); the pipe fuses their fresh readings
/// ([`crate::select::latency::fuse`]), and `status` and `explain` name each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// `pdns-ha observe`: round trips real callers saw (registrar
    /// keepalives, the kernel's TCP RTT), next to the server.
    Observe,
    /// `pdns-ha monitor`: active probes, from a vantage host inside the
    /// network (`--network`) or from the monitor's own host (`*`).
    Monitor,
    /// `pdns-ha metric latency`, or a row written by hand: the operator's
    /// own agents.
    Metric,
    /// `pdns-ha observe --freeswitch`: RTCP round trips of real calls, as
    /// FreeSWITCH computed them, per caller network.
    Freeswitch,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Observe,
        Source::Monitor,
        Source::Metric,
        Source::Freeswitch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Monitor => "monitor",
            Self::Metric => "metric",
            Self::Freeswitch => "freeswitch",
        }
    }

    /// The source `s` names, as `as_str` writes it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Network key for samples measured from the monitor's own host, which
/// stand in for networks that have none of their own.
pub const ANY_NETWORK: &str = "*";

/// Now in Unix seconds, the clock every reading's `updated` is on.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Targets are keyed as records name them: host names lowercase without
/// the trailing dot, addresses in canonical form (as `zone` stores A/AAAA
/// content), so `2001:DB8:0::1` in `ha_targets` matches `2001:db8::1`.
pub fn target_key(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

/// An operator's drain (`pdns-ha drain`): hard state that beats every probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub reason: Box<str>,
    /// When it was set, Unix seconds: the newer of a drain and an undrain
    /// wins between SQLite and memcached.
    pub since: f64,
}

/// Monitor ids and drain reasons travel inside keys and space-separated
/// values: one line of visible characters, no `|` (the key separator).
pub fn valid_monitor_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'|')
}

/// One reading as it travels through memcached.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// One monitor's verdict on a target (after its anti-flap).
    Health {
        target: String,
        monitor: String,
        h: Health,
    },
    /// `reason: Some`: drained since `updated`; `None`: undrained at
    /// `updated`, which must override an older drain anywhere.
    /// `generation` counts the target's drains and undrains: each takes the
    /// next, so a copy of an older one written back is known for a replay
    /// wherever the newer one was seen (issue 19).
    Drain {
        target: String,
        reason: Option<String>,
        updated: f64,
        generation: u64,
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
        source: Source,
        l: Latency,
        timeouts: u64,
    },
}

impl Reading {
    pub fn key(&self, prefix: &str) -> String {
        match self {
            Self::Health {
                target, monitor, ..
            } => health_key(prefix, target, monitor),
            Self::Drain { target, .. } => drain_key(prefix, target),
            Self::Load { target, .. } => load_key(prefix, target),
            Self::Latency {
                network,
                target,
                source,
                ..
            } => latency_key(prefix, network, target, *source),
        }
    }

    pub fn value(&self) -> String {
        match self {
            Self::Health { h, .. } => format!("{} {}", u8::from(h.up), h.updated),
            Self::Drain {
                reason: Some(reason),
                updated,
                generation,
                ..
            } => format!("1 {updated} {generation} {reason}"),
            Self::Drain {
                reason: None,
                updated,
                generation,
                ..
            } => format!("0 {updated} {generation}"),
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
                let callers = l.callers.map_or("-".to_owned(), |c| c.to_string());
                format!(
                    "{} {} {} {timeouts} {} {callers}",
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
        if let Some(target) = rest.strip_prefix("drain:") {
            let mut parts = value.splitn(3, ' ');
            let (flag, updated) = (parts.next()?, num(parts.next()?)?);
            // Written before drains had generations (`1 UPDATED REASON`,
            // `0 UPDATED`): generation 0, older than any written since, so
            // a drain shared before an upgrade still holds on every node.
            let rest = parts.next();
            let (generation, rest) = match rest.map(|r| r.split_once(' ').unwrap_or((r, ""))) {
                Some((g, reason)) if g.bytes().all(|b| b.is_ascii_digit()) && !g.is_empty() => (
                    g.parse::<u64>().ok()?,
                    (flag == "1" || !reason.is_empty()).then_some(reason),
                ),
                _ => (0, rest),
            };
            let mut parts = rest.into_iter();
            let reason = match (flag, parts.next()) {
                ("1", reason) => Some(reason.unwrap_or("").to_owned()),
                ("0", None) => None,
                _ => return None,
            };
            return Some(Self::Drain {
                target: target.into(),
                reason,
                updated,
                generation,
            });
        }
        if let Some(key) = rest.strip_prefix("health:") {
            let (target, monitor) = key.split_once('|')?;
            let [up, updated] = f[..] else { return None };
            let up = match up {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            return Some(Self::Health {
                target: target.into(),
                monitor: monitor.into(),
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
        let (network, rest) = rest.strip_prefix("latency:")?.split_once('|')?;
        let (target, source) = rest.split_once('|')?;
        let [ewma, mean, samples, timeouts, updated, callers] = f[..] else {
            return None;
        };
        let l = Latency {
            ewma_ms: num(ewma)?,
            mean_ms: num(mean)?,
            samples: samples.parse().ok()?,
            updated: num(updated)?,
            callers: match callers {
                "-" => None,
                c => Some(c.parse().ok()?),
            },
        };
        Some(Self::Latency {
            network: network.into(),
            target: target.into(),
            source: Source::parse(source)?,
            l,
            timeouts: timeouts.parse().ok()?,
        })
    }
}

pub fn health_key(prefix: &str, target: &str, monitor: &str) -> String {
    format!("{prefix}:health:{target}|{monitor}")
}

pub fn drain_key(prefix: &str, target: &str) -> String {
    format!("{prefix}:drain:{target}")
}

/// The ids of the monitors that publish health, space-separated: the pipe
/// reads it to know which `health:TARGET|MONITOR` keys to fetch.
pub fn monitors_key(prefix: &str) -> String {
    format!("{prefix}:monitors")
}

pub fn load_key(prefix: &str, target: &str) -> String {
    format!("{prefix}:load:{target}")
}

/// One key per source, so that sources never overwrite each other.
pub fn latency_key(prefix: &str, network: &str, target: &str, source: Source) -> String {
    format!("{prefix}:latency:{network}|{target}|{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip() {
        let readings = [
            Reading::Health {
                target: "sip1.example.com".into(),
                monitor: "mon-a.example.net".into(),
                h: Health {
                    up: false,
                    updated: 1.5,
                },
            },
            Reading::Drain {
                target: "sip2.example.com".into(),
                reason: Some("kernel upgrade, ticket 42".into()),
                updated: 7.0,
                generation: 3,
            },
            Reading::Drain {
                target: "sip2.example.com".into(),
                reason: None,
                updated: 8.0,
                generation: 4,
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
                source: Source::Observe,
                l: Latency {
                    ewma_ms: 1.25,
                    mean_ms: 2.5,
                    samples: 9,
                    updated: 5.0,
                    callers: Some(4),
                },
                timeouts: 3,
            },
            Reading::Latency {
                network: "*".into(),
                target: "sip1.example.com".into(),
                source: Source::Monitor,
                l: Latency {
                    ewma_ms: 1.0,
                    mean_ms: 2.0,
                    samples: 1,
                    updated: 5.0,
                    callers: None,
                },
                timeouts: 0,
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
        assert_eq!(health_key("p", "a", "m"), "p:health:a|m");
        // Drains written before generations: generation 0.
        let legacy = |v: &str| match Reading::parse("p", "p:drain:a", v) {
            Some(Reading::Drain {
                reason, generation, ..
            }) => Some((reason, generation)),
            _ => None,
        };
        assert_eq!(legacy("1 7 disk swap"), Some((Some("disk swap".into()), 0)));
        assert_eq!(legacy("1 7"), Some((Some(String::new()), 0)));
        assert_eq!(legacy("0 8"), Some((None, 0)));
        assert_eq!(legacy("1 7 3 disk"), Some((Some("disk".into()), 3)));
        assert_eq!(legacy("1 7 3"), Some((Some(String::new()), 3)));
        assert_eq!(legacy("0 8 4"), Some((None, 4)));
    }

    #[test]
    fn malformed_values_are_misses() {
        for (key, value) in [
            ("p:health:a|m", "2 1.0"),
            ("p:health:a|m", "1"),
            ("p:health:a", "1 1.0"),
            ("p:drain:a", "0 1.0 2 reason"),
            ("p:drain:a", "0 1.0 x"),
            ("p:drain:a", "0 1.0 99999999999999999999999"),
            ("p:drain:a", "2 1.0"),
            ("p:drain:a", "1"),
            ("p:load:a", "x - 1"),
            ("p:load:a", "1 2 -5"),
            ("p:latency:*|a|monitor", "1 2 3 4 5"),
            ("p:latency:*|a|monitor", "nan 2 3 4 5 -"),
            ("p:latency:*|a|monitor", "1 2 3 4 5 x"),
            ("p:latency:*|a|probe", "1 2 3 4 5 -"),
            ("p:latency:*|a", "1 2 3 4 5 -"),
            ("p:latency:*:a|monitor", "1 2 3 4 5 -"),
            ("q:health:a|m", "1 1"),
            ("p:other:a", "1 1"),
        ] {
            assert_eq!(Reading::parse("p", key, value), None, "{key} = {value}");
        }
    }
}
