//! The pipe-abi integration-test binary: golden pipe transcripts, fault
//! injection, and end-to-end runs under a real pdns_server.

mod dnsdist;
mod e2e;
mod esl;
mod esl_standin;
mod faults;
mod golden;
mod health;
mod kamailio;
mod keepalive;
mod live;
mod manpage;
mod memcached;
mod monitor;
mod netns;
mod networks;
mod observe;
mod openmetrics;
mod pdns;
mod reliability;
mod scale;
mod tcp_rtt;
mod trust;
mod udp_relay;
mod util;
mod vantage;
