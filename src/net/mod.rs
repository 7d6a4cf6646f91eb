//! Network code the daemons share, below both `monitor` and `observe` so that neither
//! imports the other: the metrics HTTP server ([`http`]) and the OpenMetrics text and
//! serving both exporters use ([`openmetrics`]).

pub mod http;
pub mod openmetrics;
