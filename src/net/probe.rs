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
/// The `kind` label of a failed probe: a small, fixed set, as labels must be.
pub fn error_kind(kind: &ProbeErrorKind) -> &'static str {
    match kind {
        ProbeErrorKind::BadTarget(_) => "bad_target",
        ProbeErrorKind::Io { .. } => "io",
        ProbeErrorKind::Timeout { .. } => "timeout",
        ProbeErrorKind::Closed { .. } => "closed",
        ProbeErrorKind::Protocol(_) => "protocol",
        ProbeErrorKind::AuthRejected => "auth_rejected",
        ProbeErrorKind::Remote(_) => "remote",
        ProbeErrorKind::Tls { .. } => "tls",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
