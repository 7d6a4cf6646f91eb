//! FreeSWITCH load over the Event Socket (inbound mode): current and maximum sessions.
//!
//! One short connection per reading. The dialogue, as mod_event_socket and mod_commands
//! write it (`→` client to server, `←` server to client; see the ESL reference, §2.3):
//!
//! ```text
//! ← Content-Type: auth/request\n\n                      (unprompted, on connect)
//! → auth ClueCon\n\n
//! ← Content-Type: command/reply\nReply-Text: +OK accepted\n\n
//! → api status\n\n
//! ← Content-Type: api/response\nContent-Length: 340\n\n  (one write…)
//! ← UP 0 years, 3 days, 1 hour, …\n                       (…the body in another)
//!   FreeSWITCH (Version 1.10.12-release 64bit) is ready\n
//!   1234 session(s) since startup\n
//!   42 session(s) - peak 57, last 5min 44 \n              <- current sessions; note the space
//!   3 session(s) per Sec out of max 30, peak 9, last 5min 4 \n
//!   1000 session(s) max\n                                 <- max-sessions
//!   …
//! → exit\n\n
//! ```
//!
//! [`read_status`] then asks whether inbound calls are paused (`fsctl pause inbound`, which
//! `status` does not show: it says "not ready" only when inbound *and* outbound are paused,
//! `switch_core_ready()` in switch_core.c). mod_commands answers with a bare word, no newline:
//!
//! ```text
//! → api fsctl pause_check inbound\n\n
//! ← Content-Type: api/response\nContent-Length: 5\n\n
//! ← false                                                 (or "true", Content-Length 4)
//! ```
//!
//! A wrong password gets `Reply-Text: -ERR invalid`, a `text/disconnect-notice`, and a close.
//! An inbound ACL that refuses us sends `text/rude-rejection` instead of `auth/request`.
//! When `status` answers `-ERR …` or text without the session line, the same connection asks
//! `api json {"command":"status","data":""}` and reads `response.sessions.count.active` (the
//! current count; `total` is the count since startup) and `.limit`.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::net::probe::{printable, Deadline, ProbeError, ProbeErrorKind};

/// Real header blocks are under 200 bytes; anything near this is not an ESL server.
const MAX_HEADER: usize = 8 * 1024;
/// `status` is about 340 bytes and `json status` about 600; a huge body is a fault.
const MAX_BODY: usize = 64 * 1024;

/// FreeSWITCH's load as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Sessions up now. A session is a call leg, so a bridged call counts twice.
    pub sessions: u32,
    /// `max-sessions` from switch.conf.xml or `fsctl`. `None` when the server did not report
    /// it, or reported 0, so callers never divide by zero.
    pub max_sessions: Option<u32>,
}

/// Whether FreeSWITCH takes new calls, besides its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub load: Load,
    /// `status` said "is ready": not shutting down, not paused both ways (`fsctl pause`).
    pub ready: bool,
    /// `fsctl pause_check inbound`; `None` when the server would not say (an API allow-list
    /// without fsctl, an old version): then only `ready` counts.
    pub paused_inbound: Option<bool>,
}

impl Status {
    /// Why new calls would be refused, if they would: not ready, paused, or full.
    pub fn refuses_calls(&self) -> Option<String> {
        if !self.ready {
            Some("freeswitch says it is not ready (paused or shutting down)".into())
        } else if self.paused_inbound == Some(true) {
            Some("freeswitch has inbound calls paused (fsctl pause inbound)".into())
        } else {
            None
        }
    }
}

/// Reads the current load from the Event Socket at `addr` (`host:port`, usually port 8021).
///
/// The whole exchange, connect included, takes at most `timeout`. Every failure is an
/// error, never a zero load.
pub fn read_load(addr: &str, password: &str, timeout: Duration) -> Result<Load, ProbeError> {
    exchange(addr, None, password, timeout, false).map(|s| s.load)
}

/// As [`read_load`], and also whether the server takes new calls. `via` is the address to
/// connect to when the caller resolved `addr` itself (within its own deadline).
pub fn read_status(
    addr: &str,
    via: Option<SocketAddr>,
    password: &str,
    timeout: Duration,
) -> Result<Status, ProbeError> {
    exchange(addr, via, password, timeout, true)
}

fn exchange(
    addr: &str,
    via: Option<SocketAddr>,
    password: &str,
    timeout: Duration,
    pause_check: bool,
) -> Result<Status, ProbeError> {
    let d = Deadline::new(addr, timeout);
    if password.contains(['\n', '\r']) {
        // A line break would end the `auth` command early and send the rest as commands.
        return Err(d.err(ProbeErrorKind::BadTarget("password contains a line break")));
    }
    let stream = match via {
        Some(a) => d.connect_addr(a)?,
        None => d.connect(addr)?,
    };
    let mut conn = Conn {
        d,
        stream,
        buf: Vec::new(),
    };
    let status = conn
        .authenticate(password)
        .and_then(|()| conn.status(pause_check));
    // Polite goodbye so the server logs a clean exit; whether it arrives changes nothing.
    let _ = conn.send("exit\n\n", "sending exit");
    status
}

/// One parsed server message: its header block and, if `Content-Length` was given, its body.
struct Message {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    fn content_type(&self) -> &str {
        self.header("Content-Type").unwrap_or("")
    }
}

struct Conn<'a> {
    d: Deadline<'a>,
    stream: TcpStream,
    /// Bytes received but not yet parsed; a read can end in the middle of a message or hold
    /// the start of the next one.
    buf: Vec<u8>,
}

impl Conn<'_> {
    fn authenticate(&mut self, password: &str) -> Result<(), ProbeError> {
        self.expect("auth/request", "waiting for auth/request")?;
        self.send(&format!("auth {password}\n\n"), "sending auth")?;
        let reply = self.expect("command/reply", "waiting for the auth reply")?;
        match reply.header("Reply-Text") {
            Some("+OK accepted") => Ok(()),
            Some(text) if text.starts_with("-ERR") => Err(self.d.err(ProbeErrorKind::AuthRejected)),
            other => Err(self.protocol(format!(
                "unexpected auth reply \"{}\"",
                printable(other.unwrap_or("").as_bytes(), 80)
            ))),
        }
    }

    fn status(&mut self, pause_check: bool) -> Result<Status, ProbeError> {
        let (load, ready) = self.load()?;
        // The load is read by now: a server that will not answer this (a
        // `userauth` API allow-list without fsctl answers a command/reply
        // `-ERR permission denied`, an old version `-ERR …`) still gave it.
        let paused_inbound = match pause_check {
            true => match self.api("fsctl pause_check inbound") {
                Ok(body) if body == b"true" => Some(true),
                Ok(body) if body == b"false" => Some(false),
                Ok(other) => {
                    let shown = printable(&other, 80);
                    log::debug!("{}: pause_check answered \"{shown}\"", self.d.peer());
                    None
                }
                Err(e) => {
                    log::debug!("{}: pause_check: {e}", self.d.peer());
                    None
                }
            },
            false => None,
        };
        Ok(Status {
            load,
            ready,
            paused_inbound,
        })
    }

    fn load(&mut self) -> Result<(Load, bool), ProbeError> {
        let status = self.api("status")?;
        if let Some(load) = parse_status(&status) {
            return Ok((load, says_ready(&status)));
        }
        let status_said = if status.starts_with(b"-") {
            format!("api status answered \"{}\"", printable(&status, 80))
        } else {
            "api status output has no session count".to_string()
        };
        log::debug!("{}: {status_said}; trying api json status", self.d.peer());
        let json = self.api(r#"json {"command":"status","data":""}"#)?;
        let doc = serde_json::from_slice::<Value>(&json).ok();
        let ready = doc
            .as_ref()
            .and_then(|d| d.pointer("/response/systemStatus")?.as_str())
            .is_none_or(|s| s == "ready");
        parse_json_status(&json)
            .map(|l| (l, ready))
            .map_err(|json_said| {
                let kind = if status.starts_with(b"-") || json.starts_with(b"-") {
                    ProbeErrorKind::Remote
                } else {
                    ProbeErrorKind::Protocol
                };
                self.d.err(kind(format!("{status_said}; {json_said}")))
            })
    }

    /// Runs `api <command>` and returns the body of its `api/response`.
    fn api(&mut self, command: &str) -> Result<Vec<u8>, ProbeError> {
        self.send(&format!("api {command}\n\n"), "sending api")?;
        Ok(self
            .expect("api/response", "waiting for api/response")?
            .body)
    }

    fn send(&mut self, text: &str, during: &'static str) -> Result<(), ProbeError> {
        self.d.write_all(&mut self.stream, text.as_bytes(), during)
    }

    /// Reads messages until one of type `want` arrives. The server may interleave others: a
    /// disconnect notice or ACL rejection ends the probe, a `command/reply` where we wait for
    /// an api response is a refusal (`-ERR permission denied`), and anything else (events,
    /// log lines) is skipped.
    fn expect(&mut self, want: &str, during: &'static str) -> Result<Message, ProbeError> {
        loop {
            let msg = self.read_message(during)?;
            match msg.content_type() {
                ct if ct == want => return Ok(msg),
                "text/disconnect-notice" => {
                    // With `Content-Disposition: linger` the server keeps the socket open
                    // (sessions in linger mode); any other notice ends the connection.
                    if msg.header("Content-Disposition") != Some("linger") {
                        return Err(self.d.err(ProbeErrorKind::Closed { during }));
                    }
                }
                "text/rude-rejection" => {
                    let why = printable(&msg.body, 80);
                    return Err(self
                        .d
                        .err(ProbeErrorKind::Remote(format!("rejected: {why}"))));
                }
                "command/reply" => {
                    let text = printable(msg.header("Reply-Text").unwrap_or("").as_bytes(), 80);
                    let detail = format!("{during}: got command/reply \"{text}\"");
                    return Err(self.d.err(ProbeErrorKind::Remote(detail)));
                }
                other => log::debug!("{}: skipping a {other} message", self.d.peer()),
            }
        }
    }

    fn read_message(&mut self, during: &'static str) -> Result<Message, ProbeError> {
        let (head_len, sep_len) = loop {
            // Tolerate stray line breaks between messages.
            let stray = self
                .buf
                .iter()
                .take_while(|c| matches!(c, b'\n' | b'\r'))
                .count();
            self.buf.drain(..stray);
            if let Some(found) = find_blank_line(&self.buf) {
                break found;
            }
            if self.buf.len() > MAX_HEADER {
                return Err(self.protocol(format!("header block longer than {MAX_HEADER} bytes")));
            }
            self.fill(during)?;
        };
        if head_len > MAX_HEADER {
            return Err(self.protocol(format!("header block longer than {MAX_HEADER} bytes")));
        }
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        self.buf.drain(..head_len + sep_len);

        let mut headers = Vec::new();
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else {
                let shown = printable(line.as_bytes(), 80);
                return Err(self.protocol(format!("malformed header line \"{shown}\"")));
            };
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut msg = Message {
            headers,
            body: Vec::new(),
        };

        if let Some(value) = msg.header("Content-Length") {
            let len: usize = value.parse().map_err(|_| {
                let shown = printable(value.as_bytes(), 40);
                self.protocol(format!("bad content-length \"{shown}\""))
            })?;
            if len > MAX_BODY {
                return Err(self.protocol(format!("body of {len} bytes exceeds {MAX_BODY}")));
            }
            // mod_event_socket writes the header block and the body in separate sends.
            while self.buf.len() < len {
                self.fill(during)?;
            }
            msg.body = self.buf.drain(..len).collect();
        }
        Ok(msg)
    }

    fn fill(&mut self, during: &'static str) -> Result<(), ProbeError> {
        let mut chunk = [0u8; 4096];
        let n = self.d.read(&mut self.stream, &mut chunk, during)?;
        if n == 0 {
            return Err(self.d.err(ProbeErrorKind::Closed { during }));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn protocol(&self, detail: String) -> ProbeError {
        self.d.err(ProbeErrorKind::Protocol(detail))
    }
}

/// Where the header block ends: its length (up to and including its last `\n`) and the
/// length of the separator after it. The server sends `\n\n`; `\r\n` line ends are accepted
/// too, as mod_event_socket itself accepts them.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    buf.iter().enumerate().find_map(|(i, &c)| {
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

/// The second line of `api status`: `FreeSWITCH (Version …) is ready` or `… is not ready`.
/// Without the line (a changed format) the server counts as ready: only an explicit "not
/// ready" takes it out.
fn says_ready(body: &[u8]) -> bool {
    !String::from_utf8_lossy(body)
        .lines()
        .any(|l| l.starts_with("FreeSWITCH (Version ") && l.trim_end().ends_with(" is not ready"))
}

/// Reads `api status` output (`status_function` in mod_commands.c). Only two lines matter,
/// matched after trimming the trailing space FreeSWITCH leaves on some of them:
/// `N session(s) - peak P, last 5min Q` and `M session(s) max`. The "since startup" line is
/// a cumulative counter, not load.
fn parse_status(body: &[u8]) -> Option<Load> {
    let text = std::str::from_utf8(body).ok()?;
    let mut sessions = None;
    let mut max = None;
    for line in text.lines() {
        let Some((number, rest)) = line.trim_end().split_once(' ') else {
            continue;
        };
        if rest.starts_with("session(s) - peak ") {
            sessions = number.parse().ok();
        } else if rest == "session(s) max" {
            max = number.parse().ok();
        }
    }
    Some(Load {
        sessions: sessions?,
        max_sessions: max.filter(|&m| m > 0),
    })
}

/// Reads `api json {"command":"status"}` output: the request echoed back with `"status"` and
/// `"response"` added. The error text describes the failure for the caller's message.
fn parse_json_status(body: &[u8]) -> anyhow::Result<Load> {
    if body.starts_with(b"-") {
        bail!("api json status answered \"{}\"", printable(body, 80));
    }
    let doc = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let text = |pointer: &str| doc.pointer(pointer).and_then(Value::as_str);
    match text("/status") {
        Some("success") => {}
        Some(status) => {
            let message = text("/message").unwrap_or("");
            let shown = printable(format!("{status} {message}").as_bytes(), 80);
            bail!("api json status answered \"{shown}\"");
        }
        None => {
            let shown = printable(body, 80);
            bail!("api json status output is not a status reply: \"{shown}\"");
        }
    }
    let count = |field: &str| {
        let n = doc.pointer(&format!("/response/sessions/count/{field}"))?;
        u32::try_from(n.as_u64()?).ok()
    };
    let sessions = count("active").context("api json status has no sessions.count.active")?;
    Ok(Load {
        sessions,
        max_sessions: count("limit").filter(|&m| m > 0),
    })
}

#[cfg(test)]
mod tests;
