//! FreeSWITCH Event Socket framing for a long-lived event stream, kept apart from both
//! users: `observe`'s call-quality listener reads events with it, and nothing in it knows
//! about probes, deadlines or readings. (The monitor's load probe, `monitor::esl`, frames
//! its short request/reply exchange itself; it could move onto [`Reader`] later.)
//!
//! What mod_event_socket writes (FreeSWITCH `mod_event_socket.c`, see
//! `reference/freeswitch-call-quality.md` §4): LF-only lines; every message a header block
//! ended by an empty line; with `Content-Length: n`, exactly n bytes of body after it,
//! often in a separate `send()`. An event arrives as
//!
//! ```text
//! Content-Length: 975\n
//! Content-Type: text/event-plain\n
//! \n
//! Event-Name: RECV_RTCP_MESSAGE\n        <- the body: the event's own headers,
//! Unique-ID: 7f4de4bc-…\n                   values URL-encoded (%3A%3A1 is "::1")
//! …
//! Rtt0-Avg: 0.042114\n
//! \n
//! ```
//!
//! or, after `event json …`, `Content-Type: text/event-json` and one unformatted JSON
//! object, every value a string, duplicate names kept, no trailing newline.
//!
//! Everything here is bounded: a header block over [`MAX_HEAD`] bytes is an error, a body
//! over the reader's limit is read past without being kept (and reported as
//! [`Next::Oversized`]), and one whose length is beyond any sane event ends the connection
//! ([`WireError::TooBig`]) rather than being read for minutes.

use std::borrow::Cow;
use std::io::{self, Read};

/// An event's outer header block is two lines (about 60 bytes); command replies a few more.
pub const MAX_HEAD: usize = 16 * 1024;

/// How an event body is written, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/event-plain`: `Name: url-encoded value` lines.
    Plain,
    /// `text/event-json`: one flat JSON object of strings.
    Json,
}

impl Format {
    /// The format of a `Content-Type`, if it is an event this module reads.
    pub fn of(content_type: &str) -> Option<Format> {
        match content_type {
            "text/event-plain" => Some(Format::Plain),
            "text/event-json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// One message: its outer headers and its body (empty without `Content-Length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Frame {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("Content-Type").unwrap_or("")
    }
}

/// What [`Reader::read`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Frame(Frame),
    /// A message whose body was longer than the reader keeps: read past, not kept.
    Oversized {
        content_type: String,
        len: usize,
    },
}

/// Why the stream cannot go on; after any of these the connection is done.
#[derive(Debug)]
pub enum WireError {
    Io(io::Error),
    /// The peer closed the connection (between messages, or in the middle of one).
    Closed,
    /// A header block longer than [`MAX_HEAD`]: not an Event Socket, or a broken one.
    HeadTooLong,
    /// A header line without a colon, or a `Content-Length` that is not a number.
    Malformed(String),
    /// A `Content-Length` beyond what the reader will even read past.
    TooBig(u64),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Closed => f.write_str("connection closed"),
            Self::HeadTooLong => write!(f, "header block longer than {MAX_HEAD} bytes"),
            Self::Malformed(why) => f.write_str(why),
            Self::TooBig(n) => write!(f, "content-length {n} is no event"),
        }
    }
}

/// Reads messages from `inner`, keeping at most one header block and one kept body.
pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    /// How far `buf` was searched for the blank line, so a drip of single bytes costs
    /// linear time, not quadratic.
    scanned: usize,
    /// Bodies up to this are kept.
    keep: usize,
    /// Bodies up to this are read past; longer ones end the connection.
    skip: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R, keep: usize, skip: u64) -> Self {
        Reader {
            inner,
            buf: Vec::new(),
            scanned: 0,
            keep,
            skip,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next message. Stray line ends between messages are skipped, as libesl does.
    pub fn read(&mut self) -> Result<Next, WireError> {
        let (head_len, sep) = loop {
            let stray = self
                .buf
                .iter()
                .take_while(|c| matches!(c, b'\n' | b'\r'))
                .count();
            if stray > 0 {
                self.buf.drain(..stray);
                self.scanned = 0;
            }
            if let Some(found) = blank_line(&self.buf, self.scanned) {
                break found;
            }
            // The next search starts where a `\n\r\n` split by the read could begin.
            self.scanned = self.buf.len().saturating_sub(2);
            if self.buf.len() > MAX_HEAD {
                return Err(WireError::HeadTooLong);
            }
            self.fill()?;
        };
        if head_len > MAX_HEAD {
            return Err(WireError::HeadTooLong);
        }
        let mut headers = Vec::new();
        for line in String::from_utf8_lossy(&self.buf[..head_len]).lines() {
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                let shown = crate::text::shown(line);
                return Err(WireError::Malformed(format!("header line \"{shown}\"")));
            };
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        self.buf.drain(..head_len + sep);
        self.scanned = 0;
        let mut frame = Frame {
            headers,
            body: Vec::new(),
        };
        let Some(len) = frame.header("Content-Length") else {
            return Ok(Next::Frame(frame));
        };
        let len: u64 = len.parse().map_err(|_| {
            WireError::Malformed(format!("content-length \"{}\"", crate::text::shown(len)))
        })?;
        if len > self.skip {
            return Err(WireError::TooBig(len));
        }
        if len > self.keep as u64 {
            self.discard(len)?;
            return Ok(Next::Oversized {
                content_type: frame.content_type().to_owned(),
                len: len as usize,
            });
        }
        let len = len as usize;
        while self.buf.len() < len {
            self.fill()?;
        }
        frame.body = self.buf.drain(..len).collect();
        Ok(Next::Frame(frame))
    }

    /// Reads `len` body bytes and drops them, holding at most one chunk.
    fn discard(&mut self, len: u64) -> Result<(), WireError> {
        let held = (self.buf.len() as u64).min(len);
        self.buf.drain(..held as usize);
        let mut left = len - held;
        let mut chunk = [0u8; 16 * 1024];
        while left > 0 {
            let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = read_some(&mut self.inner, &mut chunk[..want])?;
            left -= n as u64;
        }
        self.buf.shrink_to(MAX_HEAD);
        Ok(())
    }

    fn fill(&mut self) -> Result<(), WireError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = read_some(&mut self.inner, &mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, WireError> {
    loop {
        match r.read(buf) {
            Ok(0) => return Err(WireError::Closed),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
}

/// Where the header block ends, searching from `from`: its length (through its last line
/// end) and the separator's length. `\n\n` as FreeSWITCH writes it; `\n\r\n` accepted.
fn blank_line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let from = from.min(buf.len());
    buf[from..].iter().enumerate().find_map(|(i, &c)| {
        let i = from + i;
        if c != b'\n' {
            None
        } else if buf.get(i + 1) == Some(&b'\n') {
            Some((i + 1, 1))
        } else if buf.get(i + 1..i + 3) == Some(b"\r\n") {
            Some((i + 1, 2))
        } else {
            None
        }
    })
}

/// One header value as it stands in the body, decoded on demand: most headers of an event
/// are never looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw<'a> {
    /// URL-encoded (`plain`).
    Url(&'a str),
    /// The inside of a JSON string, escapes still in.
    Json(&'a str),
}

impl<'a> Raw<'a> {
    pub fn decode(self) -> Cow<'a, str> {
        match self {
            Raw::Url(s) => url_decode(s),
            Raw::Json(s) => json_unescape(s),
        }
    }
}

/// Calls `f(name, value)` for each of an event's headers, in order, duplicates included.
/// A `plain` body ends at its first empty line (what may follow is the event's own body);
/// a `json` body's non-string members (arrays of a multi-valued header, nested objects)
/// are passed over. Malformed text ends the walk early: what was read stays read.
pub fn each_header<'a>(format: Format, body: &'a [u8], f: impl FnMut(&'a str, Raw<'a>)) {
    // Header names are ASCII; a body that is not UTF-8 gets nothing past the bad byte.
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            // Up to the last whole line before the bad byte.
            let valid = &body[..e.valid_up_to()];
            let end = valid.iter().rposition(|&c| c == b'\n').unwrap_or(0);
            std::str::from_utf8(&valid[..end]).unwrap_or("")
        }
    };
    match format {
        Format::Plain => each_plain(text, f),
        Format::Json => each_json(text, f),
    }
}

fn each_plain<'a>(text: &'a str, mut f: impl FnMut(&'a str, Raw<'a>)) {
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return;
        }
        if let Some((name, value)) = line.split_once(':') {
            f(name, Raw::Url(value.strip_prefix(' ').unwrap_or(value)));
        }
    }
}

fn each_json<'a>(text: &'a str, mut f: impl FnMut(&'a str, Raw<'a>)) {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'"') => {}
            _ => return,
        }
        let Some(end) = string_end(b, i + 1) else {
            return;
        };
        let name = &text[i + 1..end];
        i = skip_ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return;
        }
        i = skip_ws(b, i + 1);
        match b.get(i) {
            Some(b'"') => {
                let Some(end) = string_end(b, i + 1) else {
                    return;
                };
                f(name, Raw::Json(&text[i + 1..end]));
                i = end + 1;
            }
            Some(_) => match value_end(b, i) {
                Some(end) => i = end,
                None => return,
            },
            None => return,
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The index of the quote that closes a string whose text starts at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match b.get(i)? {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Past a non-string value (number, literal, array, object) starting at `i`: brackets are
/// counted, strings inside them skipped whole. Nesting is bounded by the body's length.
fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *b.get(i)? {
            b'"' => i = string_end(b, i + 1)? + 1,
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' if depth == 0 => return Some(i),
            b']' | b'}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
    }
}

/// `%XX` (either case of hex) becomes the byte; anything else, a lone `%` included, stays.
/// `+` stays `+`: FreeSWITCH writes a plus as `%2B` and a space as `%20`
/// (`switch_url_encode`), so a raw `+` can only be one it did not encode.
pub fn url_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// A JSON string's inside with its escapes resolved (`\uXXXX` pairs included); a broken
/// escape is kept as written.
pub fn json_unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex = |cs: &mut std::str::Chars| -> Option<u32> {
                    let h: String = cs.by_ref().take(4).collect();
                    (h.len() == 4).then(|| u32::from_str_radix(&h, 16).ok())?
                };
                let Some(hi) = hex(&mut chars) else {
                    out.push('\u{fffd}');
                    continue;
                };
                let code = if (0xd800..0xdc00).contains(&hi) {
                    let rest = chars.as_str();
                    match rest.strip_prefix("\\u").and_then(|r| {
                        let lo = u32::from_str_radix(r.get(..4)?, 16).ok()?;
                        (0xdc00..0xe000).contains(&lo).then_some(lo)
                    }) {
                        Some(lo) => {
                            chars.nth(5);
                            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                        }
                        None => 0xfffd,
                    }
                } else {
                    hi
                };
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
