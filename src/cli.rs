//! Command-line parsing into typed options, validated once. Hand-written to
//! keep the binary small: the grammar is `SUBCOMMAND [--flag VALUE]... [ARG]...`.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    CacheOptions, Command, Metric, MonitorOptions, ObserveOptions, PipeOptions, Secs,
};
use crate::dns::Subnet;
use crate::select::Algorithm;
use crate::state::validate::DEFAULT_MAX_SKEW;
use crate::state::writer::AntiFlap;

pub const USAGE: &str = "\
pdns-ha: PowerDNS pipe backend that orders SIP SRV/A/AAAA answers by live measurements

usage:
  pdns-ha [pipe] --db PATH [--algorithm static|least-latency|least-load]
                 [--dynamic-ttl SECS] [--stale-after SECS] [--max-clock-skew SECS]
                 [MEMCACHED]
  pdns-ha init    --db PATH [SQL_FILE...]     create the schema, then run the seed scripts
  pdns-ha monitor --db PATH [--interval SECS] [--timeout MS] [--down-after N] [--up-after N]
                  [--once] [--stale-after SECS] [--monitor-id ID] [--workers N]
                  [--metrics-listen ADDR:PORT] [MEMCACHED]
  pdns-ha observe --db PATH --target NAME [--kamailio URL] [--tcp-ports P,P...]
                  [--interval SECS] [--timeout MS] [--max-age SECS] [--min-callers N]
                  [--once] [--stale-after SECS] [--metrics-listen ADDR:PORT] [MEMCACHED]
                  round trips the server NAME sees (registrar keepalives from ul.dump,
                  the kernel's TCP RTT on its SIP ports) as latency per known network
  pdns-ha metric latency --db PATH --network CIDR|'*' --target NAME --ms FLOAT
  pdns-ha metric load    --db PATH --target NAME --sessions N [--max N]
  pdns-ha metric health  --db PATH --target NAME up|down
                 (metric also takes --stale-after SECS, --monitor-id ID and MEMCACHED)
  pdns-ha drain   --db PATH --target NAME [--reason TEXT] [MEMCACHED]
  pdns-ha undrain --db PATH --target NAME [MEMCACHED]
  pdns-ha status  --db PATH [--stale-after SECS] [--max-clock-skew SECS] [--all-networks]
                  [MEMCACHED]
  pdns-ha explain --db PATH [--algorithm ALG] [--client IP|CIDR] [--max-clock-skew SECS]
                  [MEMCACHED] QNAME [QTYPE]
  pdns-ha --help | --version
MEMCACHED (pipe, monitor, observe, metric, drain, undrain, status, explain):
  --memcached HOST:PORT[,HOST:PORT...] [--memcached-prefix P] [--memcached-key-file PATH]

pipe is what pdns.conf runs:
  pipe-command=/usr/local/bin/pdns-ha --db /var/lib/pdns-ha/ha.db --algorithm least-latency
Defaults: --algorithm static, --dynamic-ttl 30, --stale-after 30, --interval 5,
--timeout 1000, --down-after 3, --up-after 2, --max-clock-skew 5 (pipe, status, explain),
--monitor-id the host name, --workers 32;
observe: --interval 30, --timeout 5000, --max-age 180, --min-callers 3.
--memcached-key-file: a secret (16+ bytes, mode 0600) shared by every writer and pipe;
values are then sealed with HMAC-SHA256 and unsealed ones ignored.
Logs go to stderr; RUST_LOG=info (or debug) for more.
";

/// The memcached options, the same for every command that takes
/// `--memcached` (so a new command gets the key file with the rest).
const MEMCACHED_FLAGS: [&str; 3] = ["memcached", "memcached-prefix", "memcached-key-file"];

/// A whole number above zero, with the flag's name in the error.
fn positive(flag: &str, v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a whole number above 0, got {v:?}")),
    }
}

/// Flags a subcommand accepts. Those in `switches` take no value.
struct Flags {
    values: Vec<(&'static str, String)>,
    positional: Vec<String>,
}

impl Flags {
    fn parse(
        cmd: &str,
        known: &[&'static str],
        switches: &[&'static str],
        args: &[String],
    ) -> Result<Self, String> {
        let mut f = Self {
            values: Vec::new(),
            positional: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(body) = arg.strip_prefix("--") else {
                f.positional.push(arg.clone());
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            let value = if let Some(&flag) = switches.iter().find(|k| **k == name) {
                if inline.is_some() {
                    return Err(format!("--{flag} takes no value"));
                }
                (flag, String::new())
            } else if let Some(&flag) = known.iter().find(|k| **k == name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("--{flag} needs a value"))?,
                };
                (flag, v)
            } else {
                return Err(format!(
                    "unknown option --{name} for {cmd} (see pdns-ha --help)"
                ));
            };
            if f.values.iter().any(|(k, _)| *k == value.0) {
                return Err(format!("--{} given twice", value.0));
            }
            f.values.push(value);
        }
        Ok(f)
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == flag)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, flag: &str) -> bool {
        self.get(flag).is_some()
    }

    fn need(&self, flag: &str, what: &str) -> Result<&str, String> {
        match self.get(flag) {
            Some("") | None => Err(format!("missing --{flag} {what}")),
            Some(v) => Ok(v),
        }
    }

    /// `--metrics-listen ADDR:PORT`: an address, not a name (it is bound at start).
    fn metrics_listen(&self) -> Result<Option<std::net::SocketAddr>, String> {
        self.get("metrics-listen")
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--metrics-listen needs ADDR:PORT, got {v:?}"))
            })
            .transpose()
    }

    fn db(&self) -> Result<PathBuf, String> {
        self.need("db", "PATH (the SQLite database)")
            .map(PathBuf::from)
    }

    fn secs(&self, flag: &str, default: u32) -> Result<Secs, String> {
        self.get(flag)
            .map_or(Ok(default), |v| positive(&format!("--{flag}"), v))
            .map(Secs)
    }

    fn algorithm(&self) -> Result<Algorithm, String> {
        self.get("algorithm")
            .map_or(Ok(Algorithm::Static), str::parse)
    }

    fn pipe_options(&self) -> Result<PipeOptions, String> {
        let skew = DEFAULT_MAX_SKEW;
        let max_clock_skew = match self.get("max-clock-skew") {
            None => skew,
            Some(v) => v.parse::<u32>().map_err(|_| {
                format!("--max-clock-skew needs a whole number of seconds, got {v:?}")
            })?,
        };
        Ok(PipeOptions {
            db: self.db()?,
            algorithm: self.algorithm()?,
            dynamic_ttl: self.secs("dynamic-ttl", 30)?,
            stale_after: self.secs("stale-after", 30)?,
            cache: self.cache()?,
            max_clock_skew,
        })
    }

    fn monitor_id(&self) -> Result<String, String> {
        match self.get("monitor-id") {
            None => Ok(crate::state::writer::default_monitor_id()),
            Some(id) if crate::state::reading::valid_monitor_id(id) => Ok(id.to_owned()),
            Some(id) => Err(format!(
                "--monitor-id {id:?}: needs 1 to 64 visible characters, no '|'"
            )),
        }
    }

    fn cache(&self) -> Result<Option<CacheOptions>, String> {
        let prefix = self
            .get("memcached-prefix")
            .unwrap_or(crate::state::memcached::DEFAULT_PREFIX);
        match self.get("memcached") {
            None if self.has("memcached-prefix") => {
                Err("--memcached-prefix needs --memcached".into())
            }
            None if self.has("memcached-key-file") => {
                Err("--memcached-key-file needs --memcached".into())
            }
            None => Ok(None),
            Some(servers) => Ok(Some(CacheOptions {
                servers: servers.to_owned(),
                prefix: prefix.to_owned(),
                ttl: self.secs("stale-after", 30)?,
                key_file: self.get("memcached-key-file").map(PathBuf::from),
            })),
        }
    }

    /// The positional arguments, checked against how many are allowed.
    fn positional(
        &self,
        cmd: &str,
        min: usize,
        max: usize,
        what: &str,
    ) -> Result<&[String], String> {
        let n = self.positional.len();
        if n < min {
            return Err(format!("{cmd} needs {what}"));
        }
        match self.positional.get(max) {
            Some(extra) => Err(format!("unexpected argument {extra:?} for {cmd}")),
            None => Ok(&self.positional),
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => return Ok(Command::Help),
        Some("--version" | "-V") => return Ok(Command::Version),
        Some(c) if !c.starts_with('-') => (c, &args[1..]),
        _ => ("pipe", args),
    };
    let pipe_flags = [
        &[
            "db",
            "algorithm",
            "dynamic-ttl",
            "stale-after",
            "max-clock-skew",
        ][..],
        &MEMCACHED_FLAGS,
    ]
    .concat();
    match cmd {
        "pipe" => {
            let f = Flags::parse(cmd, &pipe_flags, &[], rest)?;
            f.positional(cmd, 0, 0, "")?;
            Ok(Command::Pipe(f.pipe_options()?))
        }
        "init" => {
            let f = Flags::parse(cmd, &["db"], &[], rest)?;
            Ok(Command::Init {
                db: f.db()?,
                scripts: f.positional.iter().map(PathBuf::from).collect(),
            })
        }
        "monitor" => {
            let known = [
                &[
                    "db",
                    "interval",
                    "timeout",
                    "down-after",
                    "up-after",
                    "stale-after",
                    "monitor-id",
                    "workers",
                    "metrics-listen",
                    "network",
                ][..],
                &MEMCACHED_FLAGS,
            ]
            .concat();
            let f = Flags::parse(cmd, &known, &["once"], rest)?;
            f.positional(cmd, 0, 0, "")?;
            let count = |flag: &str, default: u32| {
                f.get(flag)
                    .map_or(Ok(default), |v| positive(&format!("--{flag}"), v))
            };
            Ok(Command::Monitor(MonitorOptions {
                db: f.db()?,
                interval: f.secs("interval", 5)?,
                timeout: Duration::from_millis(u64::from(count("timeout", 1000)?)),
                anti_flap: AntiFlap {
                    down_after: count("down-after", 3)?,
                    up_after: count("up-after", 2)?,
                },
                once: f.has("once"),
                cache: f.cache()?,
                monitor_id: f.monitor_id()?,
                workers: count("workers", 32)? as usize,
                metrics_listen: f.metrics_listen()?,
                network: f.get("network").map(str::to_owned),
            }))
        }
        "observe" => parse_observe(rest),
        "drain" | "undrain" => {
            let mut own = [&["db", "target", "stale-after"][..], &MEMCACHED_FLAGS].concat();
            if cmd == "drain" {
                own.push("reason");
            }
            let f = Flags::parse(cmd, &own, &[], rest)?;
            f.positional(cmd, 0, 0, "")?;
            Ok(Command::Drain {
                db: f.db()?,
                target: f.need("target", "NAME")?.to_owned(),
                reason: (cmd == "drain").then(|| f.get("reason").unwrap_or("").to_owned()),
                cache: f.cache()?,
            })
        }
        "metric" => parse_metric(rest),
        "status" => {
            let known = [
                &["db", "stale-after", "max-clock-skew"][..],
                &MEMCACHED_FLAGS,
            ]
            .concat();
            let f = Flags::parse(cmd, &known, &["all-networks"], rest)?;
            f.positional(cmd, 0, 0, "")?;
            let all_networks = f.has("all-networks");
            Ok(Command::Status(f.pipe_options()?, all_networks))
        }
        "explain" => {
            let known = [
                &[
                    "db",
                    "algorithm",
                    "dynamic-ttl",
                    "stale-after",
                    "client",
                    "max-clock-skew",
                ][..],
                &MEMCACHED_FLAGS,
            ]
            .concat();
            let f = Flags::parse(cmd, &known, &[], rest)?;
            let pos = f.positional(cmd, 1, 2, "a name to explain (QNAME [QTYPE])")?;
            let client = match f.get("client") {
                None => None,
                Some(c) => Some(Subnet::parse(c).ok_or_else(|| {
                    format!("--client {c:?} is not an address or address/prefix")
                })?),
            };
            Ok(Command::Explain {
                opts: f.pipe_options()?,
                all: !f.has("algorithm"),
                client,
                qname: pos[0].clone(),
                qtype: pos
                    .get(1)
                    .cloned()
                    .unwrap_or_else(|| "ANY".into())
                    .to_ascii_uppercase(),
            })
        }
        _ => Err(format!("unknown command {cmd:?} (see pdns-ha --help)")),
    }
}

fn parse_observe(args: &[String]) -> Result<Command, String> {
    let cmd = "observe";
    let known = [
        &[
            "db",
            "target",
            "kamailio",
            "tcp-ports",
            "interval",
            "timeout",
            "max-age",
            "min-callers",
            "stale-after",
            "metrics-listen",
        ][..],
        &MEMCACHED_FLAGS,
    ]
    .concat();
    let f = Flags::parse(cmd, &known, &["once"], args)?;
    f.positional(cmd, 0, 0, "")?;
    let count = |flag: &str, default: u32| {
        f.get(flag)
            .map_or(Ok(default), |v| positive(&format!("--{flag}"), v))
    };
    let tcp_ports = match f.get("tcp-ports") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|p| match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("--tcp-ports needs ports like 5060,5061, got {p:?}")),
            })
            .collect::<Result<_, _>>()?,
    };
    let kamailio = f.get("kamailio").map(str::to_owned);
    if kamailio.is_none() && tcp_ports.is_empty() {
        return Err("observe needs a source: --kamailio URL and/or --tcp-ports P,P...".into());
    }
    Ok(Command::Observe(ObserveOptions {
        db: f.db()?,
        target: f
            .need("target", "NAME (the ha_targets row of this server)")?
            .to_owned(),
        kamailio,
        tcp_ports,
        interval: f.secs("interval", 30)?,
        timeout: Duration::from_millis(u64::from(count("timeout", 5000)?)),
        max_age: f.secs("max-age", 180)?,
        min_callers: count("min-callers", 3)?,
        once: f.has("once"),
        cache: f.cache()?,
        metrics_listen: f.metrics_listen()?,
    }))
}

/// Flags every `metric` takes besides its own.
fn metric_flags(own: &[&'static str]) -> Vec<&'static str> {
    [own, &["db", "stale-after", "monitor-id"], &MEMCACHED_FLAGS].concat()
}

fn parse_metric(args: &[String]) -> Result<Command, String> {
    let kind = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    let cmd = format!("metric {kind}");
    let (f, metric) = match kind {
        "latency" => {
            let f = Flags::parse(&cmd, &metric_flags(&["network", "target", "ms"]), &[], rest)?;
            f.positional(&cmd, 0, 0, "")?;
            // The range is checked where every reading is stored (`Writer`).
            let ms = f.need("ms", "FLOAT (milliseconds)")?;
            let ms = ms
                .parse::<f64>()
                .map_err(|_| format!("--ms needs a number, got {ms:?}"))?;
            let m = Metric::Latency {
                network: f.need("network", "CIDR or '*'")?.to_owned(),
                target: f.need("target", "NAME")?.to_owned(),
                ms,
            };
            (f, m)
        }
        "load" => {
            let f = Flags::parse(
                &cmd,
                &metric_flags(&["target", "sessions", "max"]),
                &[],
                rest,
            )?;
            f.positional(&cmd, 0, 0, "")?;
            let sessions = f.need("sessions", "N")?;
            let sessions = sessions
                .parse::<u32>()
                .map_err(|_| format!("--sessions needs a whole number, got {sessions:?}"))?;
            let max = f.get("max").map(|v| positive("--max", v)).transpose()?;
            let m = Metric::Load {
                target: f.need("target", "NAME")?.to_owned(),
                sessions,
                max,
            };
            (f, m)
        }
        "health" => {
            let f = Flags::parse(&cmd, &metric_flags(&["target"]), &[], rest)?;
            let pos = f.positional(&cmd, 1, 1, "up or down")?;
            let up = match pos[0].as_str() {
                "up" => true,
                "down" => false,
                other => return Err(format!("metric health needs up or down, got {other:?}")),
            };
            let m = Metric::Health {
                target: f.need("target", "NAME")?.to_owned(),
                up,
            };
            (f, m)
        }
        _ => {
            return Err(format!(
                "unknown metric {kind:?} (expected latency, load or health)"
            ))
        }
    };
    Ok(Command::Metric {
        db: f.db()?,
        metric,
        cache: f.cache()?,
        monitor_id: f.monitor_id()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &str) -> Result<Command, String> {
        parse(
            &args
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn pipe_is_the_default() {
        let want = Command::Pipe(PipeOptions {
            db: "/x.db".into(),
            algorithm: Algorithm::LeastLoad,
            dynamic_ttl: Secs(10),
            stale_after: Secs(30),
            cache: None,
            max_clock_skew: 5,
        });
        assert_eq!(
            p("--db /x.db --algorithm least-load --dynamic-ttl 10"),
            Ok(want)
        );
        let args = "--db x --memcached 127.0.0.1:11211,[::1]:11211 --stale-after 9";
        let Ok(Command::Pipe(o)) = p(args) else {
            panic!()
        };
        let want = CacheOptions {
            servers: "127.0.0.1:11211,[::1]:11211".into(),
            prefix: "pdns-ha".into(),
            ttl: Secs(9),
            key_file: None,
        };
        assert_eq!(o.cache, Some(want));
        assert!(p("--db x --memcached-prefix y")
            .unwrap_err()
            .contains("needs --memcached"));
        assert!(p("--db x --memcached-key-file k")
            .unwrap_err()
            .contains("needs --memcached"));
        // Every command that takes --memcached takes the key file too.
        for cmd in [
            "pipe --db x",
            "monitor --db x",
            "metric health --db x --target t up",
            "status --db x",
            "explain --db x x",
        ] {
            let args = format!("{cmd} --memcached 127.0.0.1:1 --memcached-key-file /k");
            let got = format!("{:?}", p(&args));
            assert!(got.contains("key_file: Some(\"/k\")"), "{cmd}: {got}");
        }
        let Ok(Command::Status(o, _)) = p("status --db x --max-clock-skew 0") else {
            panic!()
        };
        assert_eq!(o.max_clock_skew, 0);
        assert!(p("--db x --max-clock-skew soon")
            .unwrap_err()
            .contains("--max-clock-skew"));
        let Ok(Command::Pipe(o)) = p("pipe --db=/x.db") else {
            panic!()
        };
        assert_eq!((o.algorithm, o.dynamic_ttl), (Algorithm::Static, Secs(30)));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            p("--algorithm static"),
            Err("missing --db PATH (the SQLite database)".into())
        );
        assert!(p("--db x --algorithm fastest")
            .unwrap_err()
            .contains("\"fastest\""));
        assert!(p("--db x --bogus 1").unwrap_err().contains("--bogus"));
        assert!(p("--db").unwrap_err().contains("needs a value"));
        assert!(p("--db x --db y").unwrap_err().contains("twice"));
        assert!(p("--db x --stale-after -5")
            .unwrap_err()
            .contains("--stale-after"));
        assert!(p("--db x stray").unwrap_err().contains("stray"));
        assert!(p("frobnicate").unwrap_err().contains("frobnicate"));
        assert!(p("monitor --db x --once=yes")
            .unwrap_err()
            .contains("takes no value"));
    }

    #[test]
    fn drain_and_undrain() {
        assert_eq!(
            p("drain --db d --target sip1 --reason maintenance"),
            Ok(Command::Drain {
                db: "d".into(),
                target: "sip1".into(),
                reason: Some("maintenance".into()),
                cache: None,
            })
        );
        let Ok(Command::Drain { reason, .. }) = p("drain --db d --target sip1") else {
            panic!()
        };
        assert_eq!(reason.as_deref(), Some(""));
        let Ok(Command::Drain { reason, .. }) = p("undrain --db d --target sip1") else {
            panic!()
        };
        assert_eq!(reason, None);
        assert!(p("undrain --db d --target sip1 --reason x")
            .unwrap_err()
            .contains("--reason"));
        assert!(p("drain --db d").unwrap_err().contains("--target"));
    }

    #[test]
    fn init_takes_scripts() {
        assert_eq!(
            p("init --db d.db a.sql b.sql"),
            Ok(Command::Init {
                db: "d.db".into(),
                scripts: vec!["a.sql".into(), "b.sql".into()]
            })
        );
    }

    #[test]
    fn metrics_are_validated() {
        assert_eq!(
            p("metric latency --db d --network * --target sip1 --ms 12.5"),
            Ok(Command::Metric {
                db: "d".into(),
                metric: Metric::Latency {
                    network: "*".into(),
                    target: "sip1".into(),
                    ms: 12.5
                },
                cache: None,
                monitor_id: crate::state::writer::default_monitor_id(),
            })
        );
        // Ranges are the Writer's (metric.rs tests); here, only numbers.
        for bad in ["fast", "", "1,5"] {
            let e = p(&format!(
                "metric latency --db d --network * --target t --ms={bad}"
            ))
            .unwrap_err();
            assert!(e.contains("--ms"), "{bad}: {e}");
        }
        assert!(p("metric load --db d --target t --sessions -3")
            .unwrap_err()
            .contains("--sessions"));
        assert!(p("metric load --db d --target t --sessions 3 --max 0")
            .unwrap_err()
            .contains("--max"));
        assert!(p("metric health --db d --target t sideways")
            .unwrap_err()
            .contains("up or down"));
        assert!(p("metric health --db d --target t")
            .unwrap_err()
            .contains("up or down"));
        assert!(p("metric speed --db d")
            .unwrap_err()
            .contains("unknown metric"));
        assert!(p("metric load --db d --sessions 1")
            .unwrap_err()
            .contains("--target"));
    }

    #[test]
    fn observe_needs_a_target_and_a_source() {
        let Ok(Command::Observe(o)) = p(
            "observe --db d --target sip1.example.com --kamailio http://127.0.0.1:5060/RPC \
             --tcp-ports 5060,5061 --once",
        ) else {
            panic!()
        };
        assert_eq!(o.target, "sip1.example.com");
        assert_eq!(o.kamailio.as_deref(), Some("http://127.0.0.1:5060/RPC"));
        assert_eq!(o.tcp_ports, [5060, 5061]);
        assert_eq!(
            (o.interval, o.max_age, o.min_callers),
            (Secs(30), Secs(180), 3)
        );
        assert_eq!(o.timeout, Duration::from_millis(5000));
        assert!(o.once);
        assert_eq!(o.metrics_listen, None);
        let Ok(Command::Observe(o)) =
            p("observe --db d --target t --tcp-ports 5060 --metrics-listen 127.0.0.1:9772")
        else {
            panic!()
        };
        assert_eq!(o.metrics_listen, Some("127.0.0.1:9772".parse().unwrap()));
        assert!(
            p("observe --db d --target t --tcp-ports 5060 --metrics-listen :9772")
                .unwrap_err()
                .contains("--metrics-listen needs ADDR:PORT")
        );
        assert!(p("observe --db d --target t")
            .unwrap_err()
            .contains("needs a source"));
        assert!(p("observe --db d --tcp-ports 5060")
            .unwrap_err()
            .contains("--target"));
        for bad in ["0", "5060,x", "70000", ""] {
            let e = p(&format!("observe --db d --target t --tcp-ports={bad}")).unwrap_err();
            assert!(e.contains("--tcp-ports"), "{bad}: {e}");
        }
        assert!(
            p("observe --db d --target t --tcp-ports 5060 --min-callers 0")
                .unwrap_err()
                .contains("--min-callers")
        );
    }

    #[test]
    fn explain_and_monitor() {
        let Ok(Command::Explain {
            all, client, qtype, ..
        }) = p("explain --db d --client 198.51.100.7 _sip._udp.example.com srv")
        else {
            panic!()
        };
        assert!(all);
        assert_eq!(client.unwrap().to_string(), "198.51.100.7/32");
        assert_eq!(qtype, "SRV");
        assert!(p("explain --db d").unwrap_err().contains("needs a name"));
        assert!(p("explain --db d --client nowhere x")
            .unwrap_err()
            .contains("--client"));
        let Ok(Command::Monitor(m)) = p("monitor --db d --once --timeout 200") else {
            panic!()
        };
        assert!(m.once);
        assert_eq!(m.workers, 32);
        let Ok(Command::Monitor(m2)) = p("monitor --db d --monitor-id site-b --workers 4") else {
            panic!()
        };
        assert_eq!((m2.monitor_id.as_str(), m2.workers), ("site-b", 4));
        assert!(p("monitor --db d --monitor-id a|b")
            .unwrap_err()
            .contains("--monitor-id"));
        assert_eq!(m.timeout, Duration::from_millis(200));
        assert_eq!(
            m.anti_flap,
            AntiFlap {
                down_after: 3,
                up_after: 2
            }
        );
        assert_eq!((m.metrics_listen, m.network), (None, None));
        let Ok(Command::Monitor(m)) = p("monitor --db d --network site-b") else {
            panic!()
        };
        assert_eq!(m.network.as_deref(), Some("site-b"));
        let Ok(Command::Monitor(m)) = p("monitor --db d --metrics-listen [::1]:9771") else {
            panic!()
        };
        assert_eq!(m.metrics_listen, Some("[::1]:9771".parse().unwrap()));
        // An address, not a name: the listener binds it as given.
        assert!(p("monitor --db d --metrics-listen localhost:9771")
            .unwrap_err()
            .contains("--metrics-listen needs ADDR:PORT, got \"localhost:9771\""));
    }
}
