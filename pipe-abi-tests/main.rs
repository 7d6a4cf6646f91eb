//! The pipe-abi integration-test binary: golden pipe transcripts, fault
//! injection, and end-to-end runs under a real pdns_server.

mod e2e;
mod esl;
mod esl_standin;
mod faults;
mod golden;
mod health;
mod kamailio;
mod live;
mod memcached;
mod monitor;
mod pdns;
mod reliability;
mod scale;
mod trust;
mod util;
