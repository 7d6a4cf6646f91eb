//! Plumbing shared by the monitor's probe clients: one deadline per call, one error type.
//!
//! Every probe is a blocking exchange on a std socket. A probe must cost at most its
//! `timeout` however the peer misbehaves (silent, slow, drip-feeding bytes), so each
//! connect, read and write gets the time left until one overall deadline, never a fresh
//! per-step timeout.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Why a probe produced no reading. The monitor treats every error as "no data", never as
/// zero load.
#[derive(Debug, Clone)]
pub struct ProbeError {
    /// The target as configured (`host:port` or a URL without credentials); never a password.
    pub peer: String,
    pub kind: ProbeErrorKind,
}

#[derive(Debug)]
pub enum ProbeErrorKind {
    /// The target string cannot be used at all: a configuration mistake, not an outage.
    BadTarget(&'static str),
    /// A socket call failed, for example `connection refused`; `during` names the step.
    Io {
        during: &'static str,
        source: io::Error,
    },
    /// The overall deadline ran out during `during`.
    Timeout {
        during: &'static str,
        after: Duration,
    },
    /// The peer closed the connection (or said goodbye) before the answer was complete.
    Closed { during: &'static str },
    /// The peer sent something this client cannot parse.
    Protocol(String),
    /// The peer refused our credentials.
    AuthRejected,
    /// The peer understood and answered with an error (`-ERR …`, a JSON-RPC error, an HTTP
    /// status other than 200, an ACL rejection).
    Remote(String),
    /// The TLS handshake failed: `reason` is a label from a small fixed set (`expired`,
    /// `wrong_name`, `untrusted`, ...), `text` the words for the log and `status`.
    Tls { reason: &'static str, text: String },
}

/// One probe's result may stand for two readings (a target's own probe and the advertised
/// service at the same address), so errors are copied; an OS error keeps its errno, which
/// is what [`ProbeError::is_resource_shortage`] and the metrics' `kind` look at.
impl Clone for ProbeErrorKind {
    fn clone(&self) -> Self {
        match self {
            ProbeErrorKind::BadTarget(w) => ProbeErrorKind::BadTarget(w),
            ProbeErrorKind::Io { during, source } => ProbeErrorKind::Io {
                during,
                source: match source.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            ProbeErrorKind::Timeout { during, after } => ProbeErrorKind::Timeout {
                during,
                after: *after,
            },
            ProbeErrorKind::Closed { during } => ProbeErrorKind::Closed { during },
            ProbeErrorKind::Protocol(d) => ProbeErrorKind::Protocol(d.clone()),
            ProbeErrorKind::AuthRejected => ProbeErrorKind::AuthRejected,
            ProbeErrorKind::Remote(d) => ProbeErrorKind::Remote(d.clone()),
            ProbeErrorKind::Tls { reason, text } => ProbeErrorKind::Tls {
                reason,
                text: text.clone(),
            },
        }
    }
}

impl ProbeError {
    /// True when the peer is plainly not there: refused, unreachable or silent. The monitor
    /// counts these as latency timeouts; an answer that was wrong says nothing about the
    /// round trip. (Any failure, this kind or not, counts towards marking the target down.)
    pub fn is_unreachable(&self) -> bool {
        match &self.kind {
            ProbeErrorKind::Timeout { .. } => true,
            ProbeErrorKind::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            ),
            _ => false,
        }
    }
}

impl ProbeError {
    /// True when this host ran out of something (file descriptors, buffers, memory): the
    /// peer was never asked, so the probe says nothing about it.
    pub fn is_resource_shortage(&self) -> bool {
        match &self.kind {
            ProbeErrorKind::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
            ),
            _ => false,
        }
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = &self.peer;
        match &self.kind {
            ProbeErrorKind::BadTarget(why) => write!(f, "{peer}: unusable target: {why}"),
            ProbeErrorKind::Io { during, source } => {
                // OS messages start with a capital letter; our messages are lowercase.
                let text = source.to_string();
                let mut chars = text.chars();
                let first = chars.next().map(|c| c.to_lowercase().to_string());
                write!(
                    f,
                    "{peer}: {during}: {}{}",
                    first.unwrap_or_default(),
                    chars.as_str()
                )
            }
            ProbeErrorKind::Timeout { during, after } => {
                write!(f, "{peer}: {during}: timed out after {after:?}")
            }
            ProbeErrorKind::Closed { during } => {
                write!(f, "{peer}: {during}: connection closed by peer")
            }
            ProbeErrorKind::Protocol(detail) => write!(f, "{peer}: protocol error: {detail}"),
            ProbeErrorKind::AuthRejected => write!(f, "{peer}: authentication rejected"),
            ProbeErrorKind::Remote(detail) => write!(f, "{peer}: {detail}"),
            ProbeErrorKind::Tls { text, .. } => write!(f, "{peer}: {text}"),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ProbeErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One probe call: the peer it talks to and the instant by which it must be done.
pub(crate) struct Deadline<'a> {
    peer: &'a str,
    start: Instant,
    timeout: Duration,
}

impl<'a> Deadline<'a> {
    pub(crate) fn new(peer: &'a str, timeout: Duration) -> Self {
        Deadline {
            peer,
            start: Instant::now(),
            timeout,
        }
    }

    pub(crate) fn peer(&self) -> &str {
        self.peer
    }

    pub(crate) fn err(&self, kind: ProbeErrorKind) -> ProbeError {
        ProbeError {
            peer: self.peer.to_string(),
            kind,
        }
    }

    pub(crate) fn timeout_err(&self, during: &'static str) -> ProbeError {
        self.err(ProbeErrorKind::Timeout {
            during,
            after: self.timeout,
        })
    }

    /// Time left; an error once it is gone. Never returns zero, because std rejects a zero
    /// socket timeout (it would mean "block forever" to the OS).
    pub(crate) fn remaining(&self, during: &'static str) -> Result<Duration, ProbeError> {
        match self.timeout.checked_sub(self.start.elapsed()) {
            Some(left) if left >= Duration::from_micros(1) => Ok(left),
            _ => Err(self.timeout_err(during)),
        }
    }

    /// Maps a socket error to a probe error. Linux reports an expired `SO_RCVTIMEO` as
    /// `WouldBlock` (EAGAIN) and other systems as `TimedOut`; both mean our deadline hit.
    pub(crate) fn io_err(&self, during: &'static str, e: io::Error) -> ProbeError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout_err(during),
            io::ErrorKind::UnexpectedEof => self.err(ProbeErrorKind::Closed { during }),
            _ => self.err(ProbeErrorKind::Io { during, source: e }),
        }
    }

    /// Connects to `target` (`host:port`) within the deadline. Name resolution goes through
    /// the system resolver, which has no timeout of ours, so configure IP literals.
    pub(crate) fn connect(&self, target: &str) -> Result<TcpStream, ProbeError> {
        let addrs: Vec<SocketAddr> = match target.parse::<SocketAddr>() {
            Ok(addr) => vec![addr],
            Err(_) => target
                .to_socket_addrs()
                .map_err(|e| {
                    self.err(ProbeErrorKind::Io {
                        during: "resolving",
                        source: e,
                    })
                })?
                .collect(),
        };
        let mut last = None;
        for addr in addrs {
            let left = self.remaining("connecting")?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    // Small request/response exchanges: never wait for Nagle.
                    stream
                        .set_nodelay(true)
                        .map_err(|e| self.io_err("connecting", e))?;
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => self.io_err("connecting", e),
            None => self.err(ProbeErrorKind::BadTarget("name resolves to no address")),
        })
    }

    /// Connects to an address already resolved; `peer` still names it in messages.
    pub(crate) fn connect_addr(&self, addr: SocketAddr) -> Result<TcpStream, ProbeError> {
        let left = self.remaining("connecting")?;
        let stream =
            TcpStream::connect_timeout(&addr, left).map_err(|e| self.io_err("connecting", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| self.io_err("connecting", e))?;
        Ok(stream)
    }

    /// One `read` bounded by the time left. `Ok(0)` is end of stream.
    pub(crate) fn read(
        &self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        during: &'static str,
    ) -> Result<usize, ProbeError> {
        loop {
            let left = self.remaining(during)?;
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io_err(during, e))?;
            match stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(|e| self.io_err(during, e)),
            }
        }
    }

    /// Writes all of `bytes`, each `write` bounded by the time left, so a peer that stops
    /// reading cannot hold us past the deadline.
    pub(crate) fn write_all(
        &self,
        stream: &mut TcpStream,
        mut bytes: &[u8],
        during: &'static str,
    ) -> Result<(), ProbeError> {
        while !bytes.is_empty() {
            let left = self.remaining(during)?;
            stream
                .set_write_timeout(Some(left))
                .map_err(|e| self.io_err(during, e))?;
            match stream.write(bytes) {
                Ok(0) => return Err(self.err(ProbeErrorKind::Closed { during })),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(during, e)),
            }
        }
        Ok(())
    }
}

/// Peer-supplied text made safe for an error message: one line, escaped, at most `max`
/// characters, so a hostile peer cannot forge log lines or flood them.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// The raw text of the JSON value at `path` (object keys only), e.g. `["result", "all"]`.
///
/// The documents read here are small and of a known shape, so a scanner that skips what it
/// does not need is enough; it does not validate the parts it skips. Keys are compared
/// without unescaping, which is fine for the plain ASCII keys we look up.
pub(crate) fn json_lookup<'t>(text: &'t str, path: &[&str]) -> Option<&'t str> {
    let b = text.as_bytes();
    let pos = value_at(text, path)?;
    let end = skip_value(b, pos)?;
    Some(&text[pos..end])
}

/// Where the value at `path` starts, without skipping over it.
fn value_at(text: &str, path: &[&str]) -> Option<usize> {
    let b = text.as_bytes();
    let mut pos = skip_ws(b, 0);
    for key in path {
        if b.get(pos) != Some(&b'{') {
            return None;
        }
        pos = skip_ws(b, pos + 1);
        loop {
            if b.get(pos) != Some(&b'"') {
                return None; // `}` of an object without the key, or garbage
            }
            let key_end = skip_string(b, pos)?;
            let this = &text[pos + 1..key_end - 1];
            pos = skip_ws(b, key_end);
            if b.get(pos) != Some(&b':') {
                return None;
            }
            pos = skip_ws(b, pos + 1);
            if this == *key {
                break;
            }
            pos = skip_ws(b, skip_value(b, pos)?);
            if b.get(pos) != Some(&b',') {
                return None;
            }
            pos = skip_ws(b, pos + 1);
        }
    }
    Some(pos)
}

/// The JSON number at `path` if it is a non-negative integer that fits in `u32`.
pub(crate) fn json_u32(text: &str, path: &[&str]) -> Option<u32> {
    json_lookup(text, path)?.parse().ok()
}

/// The JSON string at `path`, still escaped; used for error messages only.
pub(crate) fn json_str<'t>(text: &'t str, path: &[&str]) -> Option<&'t str> {
    let raw = json_lookup(text, path)?;
    raw.strip_prefix('"')?.strip_suffix('"')
}

/// The raw text of each element of the JSON array at `path` (`&[]`: `text` itself), or `None`
/// if there is no well-formed array there. One pass over the array; the elements are not
/// validated beyond their extent, like everything else here.
pub(crate) fn json_items<'t>(text: &'t str, path: &[&str]) -> Option<Vec<&'t str>> {
    let b = text.as_bytes();
    let mut pos = value_at(text, path)?;
    if b.get(pos) != Some(&b'[') {
        return None;
    }
    let mut items = Vec::new();
    pos = skip_ws(b, pos + 1);
    if b.get(pos) == Some(&b']') {
        return Some(items);
    }
    loop {
        let end = skip_value(b, pos)?;
        items.push(&text[pos..end]);
        pos = skip_ws(b, end);
        match b.get(pos)? {
            b',' => pos = skip_ws(b, pos + 1),
            b']' => return Some(items),
            _ => return None,
        }
    }
}

/// Calls `f(key, raw value)` for each member of the JSON object at `path` (`&[]`: `text`
/// itself), in one pass (keys still escaped). `None` if there is no well-formed object there.
pub(crate) fn json_members<'t>(
    text: &'t str,
    path: &[&str],
    mut f: impl FnMut(&'t str, &'t str),
) -> Option<()> {
    let b = text.as_bytes();
    let mut pos = value_at(text, path)?;
    if b.get(pos) != Some(&b'{') {
        return None;
    }
    pos = skip_ws(b, pos + 1);
    if b.get(pos) == Some(&b'}') {
        return Some(());
    }
    loop {
        if b.get(pos) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, pos)?;
        let key = &text[pos + 1..key_end - 1];
        pos = skip_ws(b, key_end);
        if b.get(pos) != Some(&b':') {
            return None;
        }
        pos = skip_ws(b, pos + 1);
        let end = skip_value(b, pos)?;
        f(key, &text[pos..end]);
        pos = skip_ws(b, end);
        match b.get(pos)? {
            b',' => pos = skip_ws(b, pos + 1),
            b'}' => return Some(()),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        pos += 1;
    }
    pos
}

/// `pos` is at an opening quote; returns the index just past the closing quote.
fn skip_string(b: &[u8], mut pos: usize) -> Option<usize> {
    pos += 1;
    loop {
        // A tight search for the two bytes that matter; most of a document is string text.
        pos += b
            .get(pos..)?
            .iter()
            .position(|&c| c == b'"' || c == b'\\')?;
        match b[pos] {
            b'"' => return Some(pos + 1),
            _ => pos += 2,
        }
    }
}

/// Index of the first byte at or after `from` that is in `set`. Skipping is most of the work
/// on a large reply (an `ul.dump` of 10,000 contacts is 9 MB, half of it Kamailio's tabs), so
/// it looks at eight bytes at a time: a byte equal to `c` is a zero byte of `x ^ c*0x01…01`,
/// and `(y - 0x01…01) & !y & 0x80…80` marks zero bytes, exactly at the lowest one.
fn find_any(b: &[u8], from: usize, set: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let mut hits = 0;
        for &c in set {
            let y = x ^ (u64::from(c) * LO);
            hits |= y.wrapping_sub(LO) & !y & HI;
        }
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|c| set.contains(c))
        .map(|n| i + n)
}

/// Returns the index just past the value starting at `pos`. Iterative, so deeply nested
/// input cannot overflow the stack.
fn skip_value(b: &[u8], pos: usize) -> Option<usize> {
    match b.get(pos)? {
        b'"' => skip_string(b, pos),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = pos;
            loop {
                i = find_any(b, i, b"\"{}[]")?;
                match b[i] {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let end = b[pos..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(b.len(), |n| pos + n);
            (end > pos).then_some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lookup_walks_nested_objects_and_skips_the_rest() {
        let doc = concat!(
            r#"{"command":"status","data":"","status":"success","response":{"#,
            r#""systemStatus":"ready","uptime":{"years":0},"version":"1.10 \"x\" {","#,
            r#""sessions":{"count":{"total":1234,"active":42,"peak":57,"peak5Min":44,"#,
            r#""limit":1000},"rate":{"current":3}},"list":[1,[2,{"a":"]"}]]}}"#
        );
        assert_eq!(
            json_u32(doc, &["response", "sessions", "count", "active"]),
            Some(42)
        );
        assert_eq!(
            json_u32(doc, &["response", "sessions", "count", "limit"]),
            Some(1000)
        );
        assert_eq!(json_str(doc, &["status"]), Some("success"));
        assert_eq!(
            json_lookup(doc, &["response", "list"]),
            Some(r#"[1,[2,{"a":"]"}]]"#)
        );
        assert_eq!(json_lookup(doc, &["response", "nope"]), None);
        assert_eq!(json_lookup(doc, &["status", "deeper"]), None);
    }

    #[test]
    fn json_lookup_accepts_kamailio_pretty_printing() {
        let doc = "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t\t\"starting\":\t0,\n\
                   \t\t\"all\":\t7\n\t},\n\t\"id\":\t1\n}";
        assert_eq!(json_u32(doc, &["result", "all"]), Some(7));
        assert_eq!(json_lookup(doc, &["id"]), Some("1"));
    }

    #[test]
    fn json_lookup_rejects_garbage_without_panicking() {
        for doc in [
            "",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1,",
            "[1,2]",
            "{\"a\":\"unterminated",
            "}}}}",
            "{{{{",
            "{\"a\":[[[[[[",
            "{\"result\":{\"all\":-3}}",
            "{\"result\":{\"all\":1e3}}",
            "null",
        ] {
            assert_eq!(json_u32(doc, &["result", "all"]), None, "{doc:?}");
        }
        let deep = format!("{{\"b\":{},\"a\":1}}", "[".repeat(100_000));
        assert_eq!(json_u32(&deep, &["a"]), None);
    }

    #[test]
    fn json_items_splits_arrays() {
        let doc = "{\"a\":\t[ {\"x\":[1,2]} ,\n\"s,]\" , 3 ],\"e\":[],\"n\":[1,,2],\"o\":{}}";
        let items = json_items(doc, &["a"]).unwrap();
        assert_eq!(items, ["{\"x\":[1,2]}", "\"s,]\"", "3"]);
        assert_eq!(json_items(doc, &["e"]), Some(vec![]));
        assert_eq!(json_items(doc, &["n"]), None);
        assert_eq!(json_items(doc, &["o"]), None);
        assert_eq!(json_items(doc, &["missing"]), None);
        assert_eq!(json_items(" [1, 2]", &[]), Some(vec!["1", "2"]));
        for bad in ["", "[", "[1", "[1,", "[1 2]", "[\"x]"] {
            assert_eq!(json_items(bad, &[]), None, "{bad:?}");
        }
    }

    #[test]
    fn json_members_walks_one_object() {
        let mut seen = Vec::new();
        let doc = "{\"a\":\t1, \"b\\\"\": {\"c\":[2]},\n\"d\":\"x\"}";
        assert_eq!(json_members(doc, &[], |k, v| seen.push((k, v))), Some(()));
        assert_eq!(seen, [("a", "1"), ("b\\\"", "{\"c\":[2]}"), ("d", "\"x\"")]);
        assert_eq!(json_members("{}", &[], |_, _| panic!()), Some(()));
        let mut inner = Vec::new();
        let nested = "{\"x\":1,\"c\":{\"k\":2}}";
        assert_eq!(
            json_members(nested, &["c"], |k, v| inner.push((k, v))),
            Some(())
        );
        assert_eq!(inner, [("k", "2")]);
        assert_eq!(json_members(nested, &["x"], |_, _| {}), None);
        for bad in [
            "",
            "[]",
            "{",
            "{\"a\"",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
        ] {
            assert_eq!(json_members(bad, &[], |_, _| {}), None, "{bad:?}");
        }
    }

    #[test]
    fn find_any_agrees_with_a_plain_search() {
        let text = b"ab\"cd\\ef{gh}ij[kl]mn\x80\xff\"\x00\x22\x5c";
        for from in 0..=text.len() + 1 {
            for set in [&b"\"\\"[..], b"\"{}[]", b"\xff"] {
                let want = text
                    .get(from..)
                    .and_then(|t| t.iter().position(|c| set.contains(c)).map(|n| from + n));
                assert_eq!(find_any(text, from, set), want, "{from} {set:?}");
            }
        }
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable(b"-ERR no reply\n", 80), "-ERR no reply");
        assert_eq!(printable(b"a\nb\x1b[31m", 80), "a\\nb\\u{1b}[31m");
        assert_eq!(printable(b"abcdef", 3), "abc…");
    }

    #[test]
    fn display_is_lowercase_and_names_the_peer() {
        let d = Deadline::new("127.0.0.1:8021", Duration::from_millis(250));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = d.err(ProbeErrorKind::Io {
            during: "connecting",
            source: refused,
        });
        assert_eq!(
            e.to_string(),
            "127.0.0.1:8021: connecting: connection refused"
        );
        assert!(e.is_unreachable());
        let e = d.timeout_err("waiting for auth/request");
        assert_eq!(
            e.to_string(),
            "127.0.0.1:8021: waiting for auth/request: timed out after 250ms"
        );
        assert_eq!(
            d.err(ProbeErrorKind::AuthRejected).to_string(),
            "127.0.0.1:8021: authentication rejected"
        );
    }
}
