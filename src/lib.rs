//! pdns-ha as a library: everything the binary runs, laid out by concern so
//! that the pipe's path is visible from the tree.
//!
//! - [`pipe`]: what PowerDNS talks to. Line framing and the ABI codec
//!   ([`pipe::abi`]), the dispatch loop ([`pipe::backend`]), the zone index
//!   ([`pipe::zone`]), the SQLite store ([`pipe::store`]) and ranking plus
//!   answer writing ([`pipe::answer`]).
//! - [`select`]: the three algorithms, pure functions over candidates,
//!   readings, the client and a clock.
//! - [`state`]: soft state. Reading types ([`state::reading`]), the pipe's
//!   index of them ([`state::index`]), memcached transport
//!   ([`state::memcached`]) and the writer used by `monitor` and `metric`
//!   ([`state::writer`]).
//! - [`monitor`]: active probes of the targets, one file per source.
//! - [`observe`]: round trips a SIP server already sees (registrar keepalives, kernel TCP
//!   RTT, FreeSWITCH's RTCP of calls), grouped by client network.
//! - [`esl_wire`]: FreeSWITCH Event Socket framing and event bodies, for any user.
//! - [`ops`]: the operator's commands: `init`, `status`, `explain`.
//! - [`config`] holds typed options; [`cli`] turns arguments into them.
//! - [`dns`]: the vocabulary every layer shares (subnets, name order).
//! - [`files`]: paths that must be regular files, checked without blocking;
//!   [`text`]: untrusted text escaped and cut short for logs and reports.

pub mod cli;
pub mod config;
pub mod dns;
pub mod esl_wire;
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
