//! pdns-ha: a PowerDNS pipe backend for VoIP high availability. `main` only
//! wires: parse the command line, set up logging, run the subcommand.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use pdns_ha::config::{CacheOptions, Command, Metric, PipeOptions};
use pdns_ha::pipe::{backend, store};
use pdns_ha::state::reading::Source;
use pdns_ha::state::{memcached, validate, writer};
use pdns_ha::{cli, monitor, observe, ops};

fn main() -> ExitCode {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match cli::parse(&args) {
        Err(e) => Err(format!("{e}\n\n{}", cli::USAGE)),
        Ok(Command::Help) => {
            let _ = io::stdout().write_all(cli::USAGE.as_bytes());
            Ok(())
        }
        Ok(Command::Version) => {
            let _ = writeln!(io::stdout(), "pdns-ha {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Ok(Command::Init { db, scripts }) => ops::init::run(&db, &scripts),
        Ok(Command::Pipe(opts)) => pipe(&opts),
        Ok(Command::Metric {
            db,
            metric,
            cache,
            monitor_id,
        }) => push_metric(&db, &metric, cache.as_ref(), &monitor_id),
        Ok(Command::Drain {
            db,
            target,
            reason,
            cache,
        }) => drain(&db, &target, reason.as_deref(), cache.as_ref()),
        Ok(Command::Status(opts, all_networks)) => {
            validate::set_max_skew(opts.max_clock_skew);
            ops::report::status(&opts, all_networks)
        }
        Ok(Command::Explain {
            opts,
            all,
            client,
            qname,
            qtype,
        }) => {
            validate::set_max_skew(opts.max_clock_skew);
            ops::report::explain(&opts, all, client, &qname, &qtype)
        }
        Ok(Command::Monitor(opts)) => monitor::run(&opts),
        Ok(Command::Observe(opts)) => observe::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdns-ha: {e}");
            ExitCode::FAILURE
        }
    }
}

/// stdout belongs to the pipe protocol, so the log goes to stderr, which
/// pdns passes through to its own log. pdns stamps the time itself.
fn init_logging() {
    let pid = std::process::id();
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_default_env()
        .target(env_logger::Target::Stderr)
        .format(move |f, r| writeln!(f, "pdns-ha[{pid}] {}: {}", r.level(), r.args()))
        .init();
}

fn pipe(opts: &PipeOptions) -> Result<(), String> {
    validate::set_max_skew(opts.max_clock_skew);
    let mut store = store::Store::open(&opts.db).map_err(|e| e.to_string())?;
    if let Some(c) = cache(opts.cache.as_ref())? {
        store = store.with_cache(c);
    }
    let mut backend = backend::Backend::new(store, opts.ranker());
    let mut input = io::stdin().lock();
    let mut out = BufWriter::with_capacity(16 * 1024, io::stdout().lock());
    match backend.run(&mut input, &mut out) {
        Ok(()) => Ok(()),
        // pdns closed our stdout (it killed or replaced this coprocess):
        // nobody is left to answer.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("pipe i/o: {e}")),
    }
}

/// The memcached client for `--memcached`, if given.
fn cache(opts: Option<&CacheOptions>) -> Result<Option<memcached::Cache>, String> {
    opts.map(CacheOptions::connect).transpose()
}

/// `drain` (with a reason) or `undrain` (without); says what it did, since
/// an operator runs it by hand.
fn drain(
    db: &std::path::Path,
    target: &str,
    reason: Option<&str>,
    cache_opts: Option<&CacheOptions>,
) -> Result<(), String> {
    let w = writer::Writer::open(db, cache(cache_opts)?)?;
    let target = w.target(target)?;
    let shared = if cache_opts.is_some() {
        " here and in memcached"
    } else {
        ""
    };
    let line = match reason {
        Some(reason) => {
            w.drain(&target, reason)?;
            format!("{target}: drained{shared}; every answer leaves it out until undrain")
        }
        None => match w.undrain(&target)? {
            true => format!("{target}: undrained{shared}; probes decide again"),
            false if cache_opts.is_some() => {
                format!("{target}: was not drained here; undrain sent to memcached anyway")
            }
            false => format!("{target}: was not drained; nothing to do"),
        },
    };
    writeln!(io::stdout(), "{line}").map_err(|e| e.to_string())
}

fn push_metric(
    db: &std::path::Path,
    m: &Metric,
    cache_opts: Option<&CacheOptions>,
    monitor_id: &str,
) -> Result<(), String> {
    let w = writer::Writer::open(db, cache(cache_opts)?)?.with_monitor(monitor_id);
    match m {
        Metric::Latency {
            network,
            target,
            ms,
        } => {
            let (network, target) = (w.network(network)?, w.target(target)?);
            w.latency(&network, &target, Source::Metric, *ms, None)
                .map(drop)
        }
        Metric::Load {
            target,
            sessions,
            max,
        } => w.load(&w.target(target)?, *sessions, *max),
        Metric::Health { target, up } => w.health(&w.target(target)?, *up),
    }
}
