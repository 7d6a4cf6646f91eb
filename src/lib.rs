//! pdns-ha as a library, under two binaries: `pdns-ha` (src/main.rs: the pipe pdns runs,
//! and the offline commands) and `pdns-ha-daemon` (src/bin/pdns-ha-daemon.rs: `monitor`
//! and `observe`). Each binary links only what it calls: the pipe none of [`monitor`],
//! [`observe`] or [`net`] (scripts/test-deb.sh checks the release binary).
//!
//! - [`pipe`]: what PowerDNS talks to. The ABI codec ([`pipe::abi`]), the dispatch loop
//!   ([`pipe::backend`]), the zone index ([`pipe::zone`]), the SQLite store
//!   ([`pipe::store`]: change watch, whole load, what changed), ranking plus answer
//!   writing ([`pipe::answer`]) and the wait for a database that cannot be read yet
//!   ([`pipe::waiting`]).
//! - [`select`]: the three algorithms, pure functions over candidates, readings, the
//!   client and a clock.
//! - [`state`]: soft state. Reading types ([`state::reading`]), the pipe's compact index
//!   of them ([`state::index`]), memcached transport ([`state::memcached`]) and the
//!   overlay of what it fetched ([`state::overlay`]), advertised services
//!   ([`state::service`]) and the writer used by the daemons and `metric`
//!   ([`state::writer`]).
//! - [`ops`]: the operator's commands: `init`, `check`, `network`, `target`, `metric`,
//!   `drain`, `status`, `explain`.
//! - [`monitor`] (daemon): active probes of the targets' services, one file per source.
//! - [`observe`] (daemon): round trips a SIP server already sees (registrar keepalives,
//!   kernel TCP RTT, FreeSWITCH's RTCP of calls), grouped by client network.
//! - [`net`] (daemon): what both daemons share: deadlines and errors of exchanges with
//!   peers, Kamailio's JSON-RPC, Event Socket framing, the metrics HTTP server.
//! - [`cli`] defines both command lines; [`config`] holds the typed options they give.
//! - [`dns`]: the vocabulary every layer shares (subnets, name order).
//! - [`files`]: paths that must be regular files, checked without blocking; [`text`]:
//!   untrusted text escaped and cut short for logs and reports, and warnings said once;
//!   [`logging`]: stderr only, for both binaries.

pub mod cli;
pub mod config;
pub mod dns;
pub mod files;
pub mod logging;
pub mod monitor;
pub mod net;
pub mod observe;
pub mod ops;
pub mod pipe;
pub mod select;
pub mod state;
pub mod text;

#[cfg(test)]
mod fuzz;
