//! The SIP response codes a target accepts as "up" (`ha_targets.probe_ok_codes`): parsed
//! where the monitor probes and where `check` and `target set` validate what an operator
//! wrote, so both read the column the same way.

use std::fmt;

/// The response codes that mean "up" for one target: single codes and whole classes
/// (`2xx`), written `200,401,404` or `2xx,405` in `ha_targets.probe_ok_codes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptCodes {
    /// Inclusive ranges; `2xx` is 200..=299.
    ranges: Vec<(u16, u16)>,
    text: String,
}

impl Default for AcceptCodes {
    fn default() -> Self {
        AcceptCodes {
            ranges: vec![(200, 299)],
            text: "2xx".into(),
        }
    }
}

/// An item of `probe_ok_codes` that is no code or class, named with its list.
/// Single quotes: the log escapes double ones.
#[derive(Debug, thiserror::Error)]
#[error("probe_ok_codes '{list}': '{item}' is not a code 200-699 or a class like 2xx")]
pub struct BadCode {
    pub list: String,
    pub item: String,
}

impl AcceptCodes {
    /// Parses a list; `None` or blank is the default, 2xx.
    pub fn parse(list: Option<&str>) -> Result<AcceptCodes, BadCode> {
        let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
            return Ok(AcceptCodes::default());
        };
        let mut ranges = Vec::new();
        for item in list.split(',').map(str::trim) {
            let bad = || BadCode {
                list: list.to_owned(),
                item: item.to_owned(),
            };
            let range = match item.as_bytes() {
                [c @ b'2'..=b'6', b'x' | b'X', b'x' | b'X'] => {
                    let base = u16::from(c - b'0') * 100;
                    (base, base + 99)
                }
                _ => {
                    let code: u16 = item.parse().map_err(|_| bad())?;
                    if !(200..700).contains(&code) {
                        return Err(bad());
                    }
                    (code, code)
                }
            };
            ranges.push(range);
        }
        Ok(AcceptCodes {
            ranges,
            text: list.split(',').map(str::trim).collect::<Vec<_>>().join(","),
        })
    }

    pub fn accepts(&self, code: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

impl fmt::Display for AcceptCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
