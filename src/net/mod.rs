//! Network code the daemons share, below both `monitor` and `observe` so that neither
//! imports the other: the metrics HTTP server ([`http`]).

pub mod http;
