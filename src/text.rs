//! Untrusted text made safe to print. Names and contents come from the
//! database, memcached and pdns; any of them may hold control characters
//! (which would forge log lines or move a terminal's cursor in `status`) or
//! be megabytes long (a 10 MB TXT must not become a 10 MB log line). Every
//! log line and report that shows such text goes through [`shown`], and
//! every warning that input can trigger at will goes through a [`Limited`],
//! so that 100 MB of garbage on the pipe costs a few lines of log, not 91 MB.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use log::{info, warn};

/// How often one kind of warning may speak: the same period as the other
/// repeated warnings (memcached rejections, the database outage).
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// One kind of warning, said at most once per [`LOG_EVERY`]; the lines left
/// out in between are counted and the count rides on the next line said.
#[derive(Debug, Default)]
pub struct Limited {
    said_at: Option<Instant>,
    suppressed: u64,
}

impl Limited {
    /// Logs `what` at warning level if this kind has been quiet for
    /// [`LOG_EVERY`], else only counts it.
    pub fn warn(&mut self, now: Instant, what: std::fmt::Arguments<'_>) {
        if let Some(n) = self.due(now) {
            match n {
                0 => log::warn!("{what}"),
                n => log::warn!("{what} (and {n} more like it since the last such line)"),
            }
        }
    }

    /// `Some(lines left out since the last one said)` when this kind may
    /// speak now; `None` (and one more left out) otherwise.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .said_at
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.said_at = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Longest text shown, in bytes before escaping: enough for any DNS name
/// (253) and the start of a record's content.
pub const SHOWN_MAX: usize = 256;

/// `s` with control characters, quotes and backslashes escaped as Rust
/// does (`\n`, `\u{1b}`), cut to [`SHOWN_MAX`] bytes at a character
/// boundary with the number of bytes left out, e.g. `aaa…(+9999744 bytes)`.
pub fn shown(s: &str) -> String {
    escaped(s, true)
}

/// As [`shown`] for a record's content, which `explain` prints in zone-file
/// form: quotes and backslashes stay as stored (a TXT reads `"v=spf1 …"`,
/// not `\"v=spf1 …\"`); control characters are still escaped and long
/// content is still cut, so a 10 MB TXT or an ESC sequence in a record
/// reaches no terminal.
pub fn shown_record(s: &str) -> String {
    escaped(s, false)
}

fn escaped(s: &str, quotes: bool) -> String {
    let mut cut = s.len().min(SHOWN_MAX);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 16);
    for c in s[..cut].chars() {
        match c {
            '\\' if quotes => out.push_str("\\\\"),
            '"' if quotes => out.push_str("\\\""),
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_default());
            }
            c => out.push(c),
        }
    }
    if cut < s.len() {
        let _ = write!(out, "…(+{} bytes)", s.len() - cut);
    }
    out
}

/// As [`shown`], for bytes that may not be UTF-8 (memcached values).
pub fn shown_bytes(b: &[u8]) -> String {
    let head = &b[..b.len().min(SHOWN_MAX)];
    let mut out = shown(&String::from_utf8_lossy(head));
    if head.len() < b.len() {
        let _ = write!(out, "…(+{} bytes)", b.len() - head.len());
    }
    out
}

/// Per-target problems already logged, so a dead target is reported when
/// it breaks and when it heals, not every round.
#[derive(Default)]
pub struct Reported(HashMap<(String, &'static str), String>);

impl Reported {
    pub fn problem(&mut self, target: &str, what: &'static str, msg: &str) {
        let key = (target.to_owned(), what);
        if self.0.get(&key).map(String::as_str) != Some(msg) {
            warn!("{}: {what}: {}", shown(target), shown(msg));
            self.0.insert(key, msg.to_owned());
        }
    }

    pub fn fine(&mut self, target: &str, what: &'static str) {
        if self.0.remove(&(target.to_owned(), what)).is_some() {
            info!("{}: {what} works again", shown(target));
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time, for messages: the day is what operators act on.
pub fn date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_truncates() {
        assert_eq!(shown("sip1.example.com"), "sip1.example.com");
        assert_eq!(shown("a\nb\x1b[2Jc\"\\"), "a\\nb\\u{1b}[2Jc\\\"\\\\");
        let big = "x".repeat(10_000_000);
        let s = shown(&big);
        assert!(s.len() < SHOWN_MAX + 30, "{}", s.len());
        assert!(s.ends_with("…(+9999744 bytes)"), "{s}");
        // A cut never splits a character.
        let wide = "é".repeat(200);
        assert!(shown(&wide).starts_with("éé"));
        assert!(shown_bytes(&[0xff, b'a', 0]).contains("\\u{0}"));
        assert!(shown_bytes(&vec![b'v'; 1 << 20]).ends_with("(+1048320 bytes)"));
        assert_eq!(
            shown_record("\"a\\b\"\x1b]0;x\x07"),
            "\"a\\b\"\\u{1b}]0;x\\u{7}"
        );
        assert!(shown_record(&big).ends_with("…(+9999744 bytes)"));
    }

    #[test]
    fn one_line_per_period_with_the_count_left_out() {
        let mut l = Limited::default();
        let t = Instant::now();
        assert_eq!(l.due(t), Some(0));
        for i in 1..=1000 {
            assert_eq!(l.due(t + Duration::from_millis(i)), None);
        }
        assert_eq!(l.due(t + LOG_EVERY - Duration::from_millis(1)), None);
        assert_eq!(l.due(t + LOG_EVERY), Some(1001));
        assert_eq!(l.due(t + LOG_EVERY), None);
    }
}
