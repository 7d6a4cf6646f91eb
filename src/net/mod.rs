//! Network code the daemons share, below both `monitor` and `observe` so that neither
//! imports the other: one deadline and one error type for every exchange with a peer
//! ([`probe`]), Kamailio's JSON-RPC client ([`kamailio`]), FreeSWITCH's Event Socket
//! framing ([`esl_wire`]), the metrics HTTP server ([`http`]) and the OpenMetrics text and
//! serving both exporters use ([`openmetrics`]).

pub mod esl_wire;
pub mod http;
pub mod kamailio;
pub mod openmetrics;
pub mod probe;
