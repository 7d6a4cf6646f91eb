//! The OpenMetrics side both daemons share: the exposition formats and how a client picks
//! one, the few text helpers every family is written with, the counters every collector
//! exports, and [`serve`], which answers `GET /metrics` from the shared figures through the
//! daemons' HTTP server ([`super::http`]). Each daemon keeps its own figures and renderer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::http;

/// What Prometheus expects for OpenMetrics 1.0 (it negotiates the format by this header).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The older Prometheus text format, for clients that do not ask for OpenMetrics.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which exposition format to write. Prometheus asks for OpenMetrics first in its
/// `Accept` header; curl and `promtool check metrics` (which lints the older format:
/// there a counter's `# TYPE` names its `_total` series, and `# UNIT` and `# EOF` do not
/// exist) get the older one. The figures are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    /// From a request's `Accept` header value (absent: the older format).
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => CONTENT_TYPE,
            Format::PrometheusText => CONTENT_TYPE_TEXT,
        }
    }
}

/// The latency families both daemons write (the stored averages the pipe ranks by), so
/// that one dashboard reads either.
pub const TARGET_LATENCY: &str = "pdns_ha_target_latency_seconds";
pub const LATENCY_AGE: &str = "pdns_ha_latency_age_seconds";
pub const ROUNDS: &str = "pdns_ha_rounds";

pub const ROUND_DURATION: &str = "pdns_ha_round_duration_seconds";

/// A label value with `\`, `"` and line feeds escaped (OpenMetrics ABNF).
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// `# TYPE`, `# UNIT` (for names ending in a unit) and `# HELP` of one family.
pub fn family(out: &mut String, fmt: Format, name: &str, kind: &str, help: &str) {
    let total = if fmt == Format::PrometheusText && kind == "counter" {
        "_total"
    } else {
        ""
    };
    let _ = writeln!(out, "# TYPE {name}{total} {kind}");
    if fmt == Format::OpenMetrics && name.ends_with("_seconds") {
        let _ = writeln!(out, "# UNIT {name} seconds");
    }
    let _ = writeln!(out, "# HELP {name}{total} {help}");
}

/// Seconds since `at`, never negative (a clock step back is not a negative age).
pub fn age(now: f64, at: f64) -> f64 {
    (now - at).max(0.0)
}

/// The round counter and the last round's duration, which every collector
/// exports (each with its own help text), then the end marker OpenMetrics
/// requires.
pub fn rounds_and_end(
    out: &mut String,
    fmt: Format,
    (rounds, rounds_help): (u64, &str),
    (seconds, seconds_help): (Option<f64>, &str),
) {
    family(out, fmt, ROUNDS, "counter", rounds_help);
    let _ = writeln!(out, "{ROUNDS}_total {rounds}");
    family(out, fmt, ROUND_DURATION, "gauge", seconds_help);
    if let Some(s) = seconds {
        let _ = writeln!(out, "{ROUND_DURATION} {s}");
    }
    if fmt == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
}

/// Binds `addr` now (so a bad address stops the command at start, with the address in
/// the message) and serves `GET /metrics` from the daemons' HTTP server
/// ([`crate::net::http`]): `render` turns the shared figures into text, under their lock,
/// with the clock of the scrape. The monitor and `observe` each pass their own figures and
/// renderer; neither holds the lock for longer than it takes to copy a round's figures in.
pub fn serve<F, R>(
    addr: SocketAddr,
    figures: Arc<Mutex<F>>,
    render: R,
) -> anyhow::Result<SocketAddr>
where
    F: Send + 'static,
    R: Fn(&F, f64, Format) -> String + Send + 'static,
{
    let handler = move |req: &http::Request<'_>| match req.path {
        "/metrics" => {
            let fmt = Format::negotiate(req.accept);
            let f = figures.lock().unwrap_or_else(|p| p.into_inner());
            let text = render(&f, crate::state::reading::unix_now(), fmt);
            http::Response::new(200, fmt.content_type(), text)
        }
        _ => http::Response::new(
            404,
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n",
        ),
    };
    http::serve(addr, http::Limits::default(), handler)
        .with_context(|| format!("--metrics-listen {addr}"))
}
