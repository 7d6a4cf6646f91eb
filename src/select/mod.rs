//! Selection algorithms: how an RRset is ordered for the client asking.

use std::fmt;
use std::str::FromStr;

/// The `--algorithm` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The records as stored: plain RFC 2782, clients choose.
    #[default]
    Static,
    /// Best measured latency from the client's network first.
    LeastLatency,
    /// Weights within each priority tier follow free capacity.
    LeastLoad,
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "static" => Ok(Self::Static),
            "least-latency" => Ok(Self::LeastLatency),
            "least-load" => Ok(Self::LeastLoad),
            _ => Err(format!(
                "unknown algorithm {s:?} (expected static, least-latency or least-load)"
            )),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Static => "static",
            Self::LeastLatency => "least-latency",
            Self::LeastLoad => "least-load",
        })
    }
}
