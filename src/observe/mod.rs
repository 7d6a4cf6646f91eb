//! `pdns-ha observe`: round-trip times that a SIP server already sees, turned into latency
//! per known client network. One file per source (registrar keepalives, kernel TCP RTT) and
//! one for the statistics that group callers into networks.

// Not yet reachable from the command line: `pdns-ha observe` is wired after the layout change.
#![allow(dead_code)]

pub mod aggregate;
pub mod keepalive;
pub mod tcp_rtt;
