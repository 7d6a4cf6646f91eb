//! The pipe-abi integration-test binary: golden pipe transcripts, fault
//! injection, and end-to-end runs under a real pdns_server.

mod dnsdist;
mod e2e;
// Shared with the unit tests of src/monitor/esl.rs, which use more of it.
#[allow(dead_code)]
mod esl_standin;
mod faults;
mod golden;
mod kamailio;
mod live;
mod memcached;
mod monitor;
mod openmetrics;
mod pdns;
mod reliability;
mod util;
