//! Typed options for every command, validated once by [`crate::cli`] and then handed to
//! the code that runs the command. Plain data: nothing here parses, opens or connects.

use std::path::PathBuf;
use std::time::Duration;

use crate::select::Algorithm;
use crate::state::estimate::AntiFlap;
pub use crate::state::memcached::CacheOptions;

/// Seconds, as given to `--dynamic-ttl`, `--stale-after` and `--interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs(pub u32);

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
    /// Where each pipe process writes its counters (`--pipe-counters`); `None`: nowhere.
    pub pipe_counters: Option<PathBuf>,
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
    /// Threads for load reads (Event Socket, JSON-RPC); every health
    /// probe (UDP, TCP, TLS) runs on the main thread.
    pub workers: usize,
    /// Where to serve OpenMetrics (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--network`: the `ha_networks` name or CIDR this monitor's host sits
    /// in (a vantage point). Its latency readings are that network's; without
    /// it they are the monitor host's own (`*`). Health stays global.
    pub network: Option<String>,
    /// A valid TLS certificate this close to its expiry is warned about (`--cert-warn-days`).
    pub cert_warn_days: u32,
    /// Client certificate chain and key (PEM) for mutual TLS with `_sips._tcp` services.
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    /// The pipe processes' counter files, exported with the monitor's figures.
    pub pipe_counters: Option<PathBuf>,
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
    /// `--freeswitch HOST:PORT` (RTCP round trips of calls), its password file and caller
    /// header.
    pub freeswitch: Option<FreeswitchOptions>,
    pub interval: Secs,
    /// For the JSON-RPC call: `ul.dump` of 10,000 contacts takes Kamailio seconds.
    pub timeout: Duration,
    /// A keepalive or a TCP acknowledgement older than this is not a current round trip.
    pub max_age: Secs,
    /// A network with fewer distinct callers (subscribers) gets no reading.
    pub min_callers: u32,
    /// `--require-received`: contacts without `Received` are left out.
    pub require_received: bool,
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

/// `observe --freeswitch HOST:PORT [--freeswitch-password-file FILE]
/// [--freeswitch-caller-header NAME]`: where the Event Socket is, and the file holding its
/// password (read when observe starts; FreeSWITCH's default without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeswitchOptions {
    pub addr: String,
    pub password_file: Option<PathBuf>,
    pub caller_header: Option<String>,
}
