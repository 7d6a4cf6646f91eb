//! The pipe-abi integration-test binary, one module per subject:
//! - [`protocol`]: the pipe protocol as pdns speaks it (golden transcripts, faults, large
//!   zones) and the command line (man pages and reference generated from the parser);
//! - [`monitor`]: the monitor against real and stand-in peers (SIP OPTIONS, Kamailio,
//!   the Event Socket), health, vantage points, OpenMetrics;
//! - [`observe`]: round trips a SIP server sees (registrar keepalives, TCP RTT);
//! - [`e2e`]: a real pdns_server (and dnsdist, memcached) answering dig;
//! - [`support`]: what the tests start and share (pdns, stand-ins, namespaces, the tools
//!   check). The Debian package has its own test, `scripts/test-deb.sh`.

mod e2e;
mod monitor;
mod observe;
mod protocol;
mod support;

// The helpers every subject uses, by their short paths (`crate::util::BIN`).
use support::{esl_standin, netns, pdns, udp_relay, util};
