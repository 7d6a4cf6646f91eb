//! Untrusted text made safe to print. Names and contents come from the
//! database, memcached and pdns; any of them may hold control characters
//! (which would forge log lines or move a terminal's cursor in `status`) or
//! be megabytes long (a 10 MB TXT must not become a 10 MB log line). Every
//! log line and report that shows such text goes through [`shown`].

use std::fmt::Write as _;

/// Longest text shown, in bytes before escaping: enough for any DNS name
/// (253) and the start of a record's content.
pub const SHOWN_MAX: usize = 256;

/// `s` with control characters, quotes and backslashes escaped as Rust
/// does (`\n`, `\u{1b}`), cut to [`SHOWN_MAX`] bytes at a character
/// boundary with the number of bytes left out, e.g. `aaa…(+9999744 bytes)`.
pub fn shown(s: &str) -> String {
    let mut cut = s.len().min(SHOWN_MAX);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 16);
    for c in s[..cut].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
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
    }
}
