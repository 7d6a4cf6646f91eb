//! Typed options for every subcommand, validated once by `cli` and then
//! handed to the code that runs the subcommand. Nothing here parses.

use std::path::PathBuf;
use std::time::Duration;

use crate::dns::Subnet;
use crate::pipe::answer::Ranker;
use crate::select::Algorithm;
use crate::state::memcached::Cache;
use crate::state::writer::AntiFlap;

/// Seconds, as given to `--dynamic-ttl`, `--stale-after` and `--interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs(pub u32);

/// `--memcached HOST:PORT[,...]` with its prefix, the expiry of what is
/// published (the `--stale-after` of the command) and the shared secret
/// that seals values (`--memcached-key-file`). Every command that talks to
/// memcached takes all of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    pub servers: String,
    pub prefix: String,
    pub ttl: Secs,
    pub key_file: Option<PathBuf>,
}

impl CacheOptions {
    /// The memcached client these options describe: the one way every
    /// command connects, so none can forget the key file.
    pub fn connect(&self) -> Result<Cache, String> {
        Cache::open(
            &self.servers,
            &self.prefix,
            self.ttl.0,
            self.key_file.as_deref(),
        )
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
    pub cache: Option<CacheOptions>,
    /// Readings stamped further ahead of this host's clock are refused.
    pub max_clock_skew: u32,
}

impl PipeOptions {
    /// The ranker these options describe, as the pipe and `explain` use it.
    pub fn ranker(&self) -> Ranker {
        Ranker::new(self.algorithm, self.dynamic_ttl.0, self.stale_after.0)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct MonitorOptions {
    pub db: PathBuf,
    pub interval: Secs,
    /// Per probe: one slow target costs the others at most this.
    pub timeout: Duration,
    pub anti_flap: AntiFlap,
    pub once: bool,
    pub cache: Option<CacheOptions>,
    /// Whose verdicts these are: several monitors vote (`--monitor-id`).
    pub monitor_id: String,
    /// Threads for blocking probes (TCP, Event Socket, JSON-RPC); UDP
    /// probes all run on the main thread.
    pub workers: usize,
    /// Where to serve OpenMetrics (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--network`: the `ha_networks` name or CIDR this monitor's host sits
    /// in (a vantage point). Its latency readings are that network's; without
    /// it they are the monitor host's own (`*`). Health stays global.
    pub network: Option<String>,
}

/// `pdns-ha observe`: round trips one SIP server sees, grouped by client network, written as
/// latency readings for that server.
#[derive(Debug, PartialEq, Eq)]
pub struct ObserveOptions {
    pub db: PathBuf,
    /// The `ha_targets` row these round trips are latency to.
    pub target: String,
    /// Kamailio JSON-RPC URL for `ul.dump` (registrar keepalives).
    pub kamailio: Option<String>,
    /// Local ports whose established TCP connections are read (the kernel's RTT).
    pub tcp_ports: Vec<u16>,
    pub interval: Secs,
    /// For the JSON-RPC call: `ul.dump` of 10,000 contacts takes Kamailio seconds.
    pub timeout: Duration,
    /// A keepalive or a TCP acknowledgement older than this is not a current round trip.
    pub max_age: Secs,
    /// A network with fewer distinct callers gets no reading.
    pub min_callers: u32,
    pub once: bool,
    pub cache: Option<CacheOptions>,
    /// Where to serve OpenMetrics (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, PartialEq)]
pub enum Metric {
    Latency {
        network: String,
        target: String,
        ms: f64,
    },
    Load {
        target: String,
        sessions: u32,
        max: Option<u32>,
    },
    Health {
        target: String,
        up: bool,
    },
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Pipe(PipeOptions),
    Init {
        db: PathBuf,
        scripts: Vec<PathBuf>,
    },
    Monitor(MonitorOptions),
    Observe(ObserveOptions),
    Metric {
        db: PathBuf,
        metric: Metric,
        cache: Option<CacheOptions>,
        /// Whose verdict `metric health` is.
        monitor_id: String,
    },
    /// `drain`: `reason: Some`; `undrain`: `None`.
    Drain {
        db: PathBuf,
        target: String,
        reason: Option<String>,
        cache: Option<CacheOptions>,
    },
    /// `status` reads as the pipe does: `algorithm` and `dynamic_ttl` are
    /// left at their defaults. `true`: every network's latency is listed
    /// (`--all-networks`), not a summary.
    Status(PipeOptions, bool),
    Explain {
        opts: PipeOptions,
        all: bool,
        client: Option<Subnet>,
        qname: String,
        qtype: String,
    },
    Help,
    Version,
}
