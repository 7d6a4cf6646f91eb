//! The pipe-abi integration-test binary: golden pipe transcripts, fault
//! injection, and end-to-end runs under a real pdns_server.

mod e2e;
mod faults;
mod golden;
mod live;
mod pdns;
mod util;
