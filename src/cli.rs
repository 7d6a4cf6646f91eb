//! Command-line parsing into typed options, validated once. Hand-written to
//! keep the binary small: the grammar is `SUBCOMMAND [--flag VALUE]... [ARG]...`.

use std::path::PathBuf;

use crate::select::Algorithm;

pub const USAGE: &str = "\
pdns-ha: PowerDNS pipe backend that orders SIP SRV/A/AAAA answers by live measurements

usage:
  pdns-ha [pipe] --db PATH [--algorithm static|least-latency|least-load]
                 [--dynamic-ttl SECS] [--stale-after SECS]
  pdns-ha init   --db PATH [SQL_FILE...]   create the schema, then run the seed scripts
  pdns-ha --help | --version

pipe is what pdns.conf runs:
  pipe-command=/usr/local/bin/pdns-ha --db /var/lib/pdns-ha/ha.db --algorithm static
Logs go to stderr; RUST_LOG=info (or debug) for more.
";

/// Seconds, as given to `--dynamic-ttl` and `--stale-after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs(pub u32);

impl Secs {
    fn parse(flag: &str, v: &str) -> Result<Self, String> {
        match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Self(n)),
            _ => Err(format!(
                "{flag} needs a whole number of seconds above 0, got {v:?}"
            )),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct PipeOptions {
    pub db: PathBuf,
    pub algorithm: Algorithm,
    /// Upper bound on the TTL of an answer whose order was computed.
    pub dynamic_ttl: Secs,
    /// Metrics older than this count as unknown.
    pub stale_after: Secs,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Pipe(PipeOptions),
    Init { db: PathBuf, scripts: Vec<PathBuf> },
    Help,
    Version,
}

/// Flags a subcommand accepts; all of them take a value.
struct Flags {
    known: &'static [&'static str],
    values: Vec<(&'static str, String)>,
    positional: Vec<String>,
}

impl Flags {
    fn parse(cmd: &str, known: &'static [&'static str], args: &[String]) -> Result<Self, String> {
        let mut f = Self {
            known,
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
            let Some(&flag) = f.known.iter().find(|k| **k == name) else {
                return Err(format!(
                    "unknown option --{name} for {cmd} (see pdns-ha --help)"
                ));
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{flag} needs a value"))?,
            };
            if f.values.iter().any(|(k, _)| *k == flag) {
                return Err(format!("--{flag} given twice"));
            }
            f.values.push((flag, value));
        }
        Ok(f)
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == flag)
            .map(|(_, v)| v.as_str())
    }

    fn db(&self) -> Result<PathBuf, String> {
        match self.get("db") {
            Some("") => Err("--db needs a path".into()),
            Some(p) => Ok(PathBuf::from(p)),
            None => Err("missing --db PATH (the SQLite database)".into()),
        }
    }

    fn no_positional(&self, cmd: &str) -> Result<(), String> {
        match self.positional.first() {
            Some(p) => Err(format!("unexpected argument {p:?} for {cmd}")),
            None => Ok(()),
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
    match cmd {
        "pipe" => {
            let f = Flags::parse(
                cmd,
                &["db", "algorithm", "dynamic-ttl", "stale-after"],
                rest,
            )?;
            f.no_positional(cmd)?;
            Ok(Command::Pipe(PipeOptions {
                db: f.db()?,
                algorithm: f
                    .get("algorithm")
                    .map_or(Ok(Algorithm::Static), str::parse)?,
                dynamic_ttl: f
                    .get("dynamic-ttl")
                    .map_or(Ok(Secs(30)), |v| Secs::parse("--dynamic-ttl", v))?,
                stale_after: f
                    .get("stale-after")
                    .map_or(Ok(Secs(30)), |v| Secs::parse("--stale-after", v))?,
            }))
        }
        "init" => {
            let f = Flags::parse(cmd, &["db"], rest)?;
            Ok(Command::Init {
                db: f.db()?,
                scripts: f.positional.iter().map(PathBuf::from).collect(),
            })
        }
        _ => Err(format!("unknown command {cmd:?} (see pdns-ha --help)")),
    }
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
        });
        assert_eq!(
            p("--db /x.db --algorithm least-load --dynamic-ttl 10"),
            Ok(want)
        );
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
}
