//! Test stand-in for FreeSWITCH's mod_event_socket, since Debian 12 has no FreeSWITCH package.
//!
//! It speaks the inbound dialogue byte for byte as the ESL reference (§2.3, §2.4, §2.6)
//! describes it: the unprompted `auth/request`, `+OK accepted` or `-ERR invalid` plus a
//! disconnect notice, `-ERR command not found` before auth, each `api/response` header block
//! and body in two separate writes, mod_commands' `status` text with its plural forms and
//! trailing spaces, and the unformatted `json status` object. Faults are injected per
//! instance. It can also be paused as `fsctl pause [inbound|outbound]` pauses FreeSWITCH:
//! `status` then says "is not ready" when both directions are paused (`switch_core_ready()`
//! in switch_core.c tests both flags), `json status` says `"systemStatus":"not ready"`, and
//! `fsctl pause_check [inbound|outbound]` answers a bare `true` or `false` with no newline,
//! as `ctl_function` in mod_commands.c writes it. It uses std only, so it can move into any test harness unchanged.
//!
//! Events, as `reference/freeswitch-call-quality.md` gives them: `event plain|json NAMES`
//! after auth subscribes a connection (`+OK event listener enabled plain`), and the test
//! then sends [`Event`]s to every subscriber ([`StandIn::emit`]), serialized as
//! `switch_event_serialize` (URL-encoded `plain`, with its `%XX` passthrough and uppercase
//! hex) or `switch_event_serialize_json` (cJSON's escapes, no trailing newline) write them,
//! framed `Content-Length` first. [`rtcp`] and [`hangup`] build RECV_RTCP_MESSAGE and
//! CHANNEL_HANGUP_COMPLETE with the header order of FreeSWITCH's source (13 standard
//! headers, the duplicate `Hangup-Cause`, the `variable_` prefix), and reproduce the
//! reference's examples byte for byte. Raw bytes ([`StandIn::emit_raw`]) make hostile
//! servers.
//!
//! One thread accepts; each connection gets its own thread, as in FreeSWITCH. Dropping the
//! [`StandIn`] stops and joins them all.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often blocked server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

const AUTH_REQUEST: &str = "Content-Type: auth/request\n\n";
const DISCONNECT_NOTICE: &str = "Content-Type: text/disconnect-notice\nContent-Length: 67\n\n";
const DISCONNECT_BODY: &str =
    "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
const RUDE_REJECTION: &str = "Content-Type: text/rude-rejection\nContent-Length: 24\n\n";
const RUDE_BODY: &str = "Access Denied, go away.\n";

/// A misbehaviour to inject; one per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Sleeps this long before every write.
    Slow(Duration),
    /// Accepts connections and never sends a byte.
    Silent,
    /// Closes the connection halfway through an `api/response` body.
    MidBodyClose,
    /// Sends `text/rude-rejection` instead of `auth/request` and closes, as an inbound ACL does.
    RudeRejection,
    /// `api status` answers `-ERR status Command not found!`; `api json` still works.
    ErrStatus,
    /// Every api command answers `-ERR <cmd> Command not found!`, as without mod_commands.
    ErrAll,
    /// Writes every byte separately.
    ByteWrites,
    /// Sends an unsolicited disconnect notice right after `+OK accepted`, then closes.
    DisconnectAfterAuth,
    /// Answers api commands with `Content-Length: -1`.
    BadContentLength,
    /// Sends 16 KiB of header lines that never end in a blank line, then waits.
    EndlessHeader,
    /// `api fsctl …` is refused as a `userauth` API allow-list without fsctl refuses it:
    /// `command/reply` with `-ERR permission denied` (`parse_command` in mod_event_socket.c).
    DenyFsctl,
}

/// What the stand-in reports. `Default` reproduces the reference's 340-byte `status` example.
#[derive(Debug, Clone)]
pub struct Config {
    pub password: String,
    pub sessions: u32,
    pub max_sessions: u32,
    pub fault: Fault,
    /// Uptime reported by `status`, fixed so that bodies are reproducible.
    pub uptime: Duration,
    pub since_startup: u64,
    pub peak: u32,
    pub peak_5min: u32,
    /// Events go out as json whatever format was asked for, as after another `event json`
    /// on the same listener (the format is per connection in mod_event_socket).
    pub json_events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            password: "ClueCon".to_string(),
            sessions: 42,
            max_sessions: 1000,
            fault: Fault::None,
            uptime: Duration::from_secs(3 * 86400 + 3600 + 2 * 60 + 5)
                + Duration::from_micros(417_011),
            since_startup: 1234,
            peak: 57,
            peak_5min: 44,
            json_events: false,
        }
    }
}

/// A running stand-in. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    cfg: Config,
    sessions: AtomicU32,
    max_sessions: AtomicU32,
    paused_inbound: AtomicBool,
    paused_outbound: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicU32,
    /// Every command received, in order, as its first line.
    commands: Mutex<Vec<String>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Connections subscribed to events, with the format each asked for.
    subscribers: Mutex<Vec<(EventFormat, TcpStream)>>,
}

/// `event plain …` or `event json …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Plain,
    Json,
}

/// Starts a stand-in on 127.0.0.1 with an ephemeral port.
pub fn start(cfg: Config) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the ESL stand-in");
    let addr = listener.local_addr().expect("stand-in address");
    let shared = Arc::new(Shared {
        sessions: AtomicU32::new(cfg.sessions),
        max_sessions: AtomicU32::new(cfg.max_sessions),
        paused_inbound: AtomicBool::new(false),
        paused_outbound: AtomicBool::new(false),
        cfg,
        stop: AtomicBool::new(false),
        accepted: AtomicU32::new(0),
        commands: Mutex::new(Vec::new()),
        workers: Mutex::new(Vec::new()),
        subscribers: Mutex::new(Vec::new()),
    });
    let sh = Arc::clone(&shared);
    let acceptor = thread::spawn(move || {
        for stream in listener.incoming() {
            if sh.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            sh.accepted.fetch_add(1, Ordering::SeqCst);
            let conn_sh = Arc::clone(&sh);
            // A client that hangs up early makes writes fail; that ends only its thread.
            let worker = thread::spawn(move || drop(serve(stream, &conn_sh)));
            sh.workers.lock().unwrap().push(worker);
        }
    });
    StandIn {
        addr,
        shared,
        acceptor: Some(acceptor),
    }
}

impl StandIn {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the current session count seen by later `status` and `json status` calls.
    pub fn set_sessions(&self, n: u32) {
        self.shared.sessions.store(n, Ordering::SeqCst);
    }

    pub fn set_max_sessions(&self, n: u32) {
        self.shared.max_sessions.store(n, Ordering::SeqCst);
    }

    /// As `fsctl pause inbound`, `fsctl pause outbound` (both: `fsctl pause`) and `fsctl
    /// resume …` would leave FreeSWITCH.
    pub fn set_paused(&self, inbound: bool, outbound: bool) {
        self.shared.paused_inbound.store(inbound, Ordering::SeqCst);
        self.shared
            .paused_outbound
            .store(outbound, Ordering::SeqCst);
    }

    /// The first line of every command received so far, across connections.
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u32 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections subscribed to events now.
    pub fn subscribed(&self) -> usize {
        self.shared.subscribers.lock().unwrap().len()
    }

    /// Sends each event to every subscriber, in its format; a subscriber that cannot take
    /// it any more is dropped. Returns how many subscribers got them all.
    pub fn emit(&self, events: &[Event]) -> usize {
        let json = self.shared.cfg.json_events;
        self.send_each(|format| {
            let mut bytes = Vec::new();
            for e in events {
                let framed = match (format, json) {
                    (EventFormat::Json, _) | (_, true) => e.json(),
                    (EventFormat::Plain, false) => e.plain(),
                };
                bytes.extend_from_slice(framed.as_bytes());
            }
            bytes
        })
    }

    /// Sends bytes as they are to every subscriber.
    pub fn emit_raw(&self, bytes: &[u8]) -> usize {
        self.send_each(|_| bytes.to_vec())
    }

    fn send_each(&self, bytes: impl Fn(EventFormat) -> Vec<u8>) -> usize {
        let mut subs = self.shared.subscribers.lock().unwrap();
        subs.retain_mut(|(format, stream)| {
            let b = bytes(*format);
            // mod_event_socket writes the frame header and the body separately.
            stream.write_all(&b).is_ok()
        });
        subs.len()
    }

    /// Closes every subscribed connection, as a FreeSWITCH restart would.
    pub fn drop_subscribers(&self) {
        for (_, s) in self.shared.subscribers.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.drop_subscribers();
        // Wake the acceptor, which is blocked in accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn serve(stream: TcpStream, sh: &Shared) -> io::Result<()> {
    // mod_event_socket sets TCP_NODELAY, which keeps header block and body in two segments.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut conn = Conn {
        stream,
        sh,
        buf: Vec::new(),
    };
    match sh.cfg.fault {
        Fault::Silent => return conn.linger(),
        Fault::RudeRejection => {
            conn.send(RUDE_REJECTION)?;
            return conn.send(RUDE_BODY);
        }
        Fault::EndlessHeader => {
            conn.send(&"X-Garbage: 0123456789abcdef0123456789abcdef\n".repeat(400))?;
            return conn.linger();
        }
        _ => {}
    }
    conn.send(AUTH_REQUEST)?;
    let mut authed = false;
    while let Some(command) = conn.read_command()? {
        sh.commands.lock().unwrap().push(command.clone());
        if command == "exit" {
            conn.reply("+OK bye")?;
            return conn.disconnect();
        }
        if !authed {
            match command.strip_prefix("auth ") {
                Some(pass) if pass == sh.cfg.password => {
                    conn.reply("+OK accepted")?;
                    authed = true;
                    if sh.cfg.fault == Fault::DisconnectAfterAuth {
                        return conn.disconnect();
                    }
                }
                Some(_) => {
                    conn.reply("-ERR invalid")?;
                    return conn.disconnect();
                }
                None => conn.reply("-ERR command not found")?,
            }
            continue;
        }
        if let Some(args) = command.strip_prefix("event ") {
            conn.subscribe(args)?;
            continue;
        }
        match command.strip_prefix("api ") {
            Some(api) if api.starts_with("fsctl ") && sh.cfg.fault == Fault::DenyFsctl => {
                conn.reply("-ERR permission denied")?
            }
            Some(api) => conn.api_response(&api_body(sh, api))?,
            None => conn.reply("-ERR command not found")?,
        }
    }
    Ok(())
}

struct Conn<'a> {
    stream: TcpStream,
    sh: &'a Shared,
    buf: Vec<u8>,
}

impl Conn<'_> {
    /// One `send()` on the server side, with the configured slowness or byte splitting.
    fn send(&mut self, text: &str) -> io::Result<()> {
        if let Fault::Slow(delay) = self.sh.cfg.fault {
            self.sleep(delay);
        }
        if self.sh.cfg.fault == Fault::ByteWrites {
            for byte in text.as_bytes() {
                self.stream.write_all(std::slice::from_ref(byte))?;
            }
            Ok(())
        } else {
            self.stream.write_all(text.as_bytes())
        }
    }

    fn reply(&mut self, reply_text: &str) -> io::Result<()> {
        self.send(&format!(
            "Content-Type: command/reply\nReply-Text: {reply_text}\n\n"
        ))
    }

    fn api_response(&mut self, body: &str) -> io::Result<()> {
        let length = match self.sh.cfg.fault {
            Fault::BadContentLength => "-1".to_string(),
            _ => body.len().to_string(),
        };
        self.send(&format!(
            "Content-Type: api/response\nContent-Length: {length}\n\n"
        ))?;
        if self.sh.cfg.fault == Fault::MidBodyClose {
            self.send(&body[..body.len() / 2])?;
            return self.stream.shutdown(Shutdown::Both);
        }
        self.send(body)
    }

    /// `event <format> <names>` as `parse_command` in mod_event_socket.c takes it: only the
    /// first word may be a format, and at least one name must be an event.
    fn subscribe(&mut self, args: &str) -> io::Result<()> {
        let mut words = args.split_whitespace().peekable();
        let format = match words.peek() {
            Some(&"plain") => Some(EventFormat::Plain),
            Some(&"json") => Some(EventFormat::Json),
            _ => None,
        };
        if format.is_some() {
            words.next();
        }
        const KNOWN: [&str; 5] = [
            "CHANNEL_HANGUP_COMPLETE",
            "RECV_RTCP_MESSAGE",
            "HEARTBEAT",
            "CHANNEL_CREATE",
            "ALL",
        ];
        if !words.any(|w| KNOWN.contains(&w)) {
            return self.reply("-ERR no keywords supplied");
        }
        let format = format.unwrap_or(EventFormat::Plain);
        let word = match format {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
        };
        self.reply(&format!("+OK event listener enabled {word}"))?;
        let clone = self.stream.try_clone()?;
        self.sh.subscribers.lock().unwrap().push((format, clone));
        Ok(())
    }

    fn disconnect(&mut self) -> io::Result<()> {
        self.send(DISCONNECT_NOTICE)?;
        self.send(DISCONNECT_BODY)?;
        self.stream.shutdown(Shutdown::Both)
    }

    /// Keeps the connection open, saying nothing, until the stand-in stops.
    fn linger(&mut self) -> io::Result<()> {
        while !self.sh.stop.load(Ordering::SeqCst) {
            thread::sleep(POLL);
        }
        Ok(())
    }

    fn sleep(&self, total: Duration) {
        let mut left = total;
        while !left.is_zero() && !self.sh.stop.load(Ordering::SeqCst) {
            let step = left.min(POLL);
            thread::sleep(step);
            left -= step;
        }
    }

    /// The first line of the next command (a header block ending in a blank line, `\n` or
    /// `\r\n`), or `None` at end of stream or when the stand-in stops.
    fn read_command(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some((head, consumed)) = command_end(&self.buf) {
                let text = String::from_utf8_lossy(&self.buf[..head]);
                let command = text.lines().next().unwrap_or("").trim().to_string();
                self.buf.drain(..consumed);
                return Ok(Some(command));
            }
            let mut chunk = [0u8; 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.sh.stop.load(Ordering::SeqCst) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Length of the command's header block and of the block plus its blank line.
fn command_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, i + 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, i + 4))
        } else {
            None
        }
    })
}

/// The body mod_commands would produce for `api <api>`.
fn api_body(sh: &Shared, api: &str) -> String {
    let (name, arg) = api.split_once(' ').unwrap_or((api, ""));
    let missing =
        sh.cfg.fault == Fault::ErrAll || (name == "status" && sh.cfg.fault == Fault::ErrStatus);
    if missing {
        return format!("-ERR {name} Command not found!\n");
    }
    let sessions = sh.sessions.load(Ordering::SeqCst);
    let max = sh.max_sessions.load(Ordering::SeqCst);
    let paused_in = sh.paused_inbound.load(Ordering::SeqCst);
    let paused_out = sh.paused_outbound.load(Ordering::SeqCst);
    let ready = !(paused_in && paused_out);
    let word = |b: bool| if b { "true" } else { "false" }.to_string();
    match (name, arg) {
        ("status", _) => status_text_ready(&sh.cfg, sessions, max, ready),
        ("json", arg) if arg.contains(r#""command":"status""#) => {
            json_status(&sh.cfg, arg, sessions, max, ready)
        }
        ("fsctl", "max_sessions") => format!("+OK max sessions: {max}\n"),
        // SCSC_PAUSE_CHECK without an argument is true when either direction is paused.
        ("fsctl", "pause_check") => word(paused_in || paused_out),
        ("fsctl", "pause_check inbound") => word(paused_in),
        ("fsctl", "pause_check outbound") => word(paused_out),
        ("fsctl", "ready_check") => word(ready),
        ("show", "channels count") => format!("\n{sessions} total.\n"),
        ("show", "calls count") => format!("\n{} total.\n", sessions / 2),
        ("json", _) => "-ERR the stand-in knows only json status\n".to_string(),
        _ => format!("-ERR {name} Command not found!\n"),
    }
}

/// Uptime split as `switch_core_measure_time` does it.
struct Uptime {
    years: u64,
    days: u64,
    hours: u64,
    minutes: u64,
    seconds: u64,
    millis: u64,
    micros: u64,
}

fn uptime(d: Duration) -> Uptime {
    let secs = d.as_secs();
    Uptime {
        years: secs / (86400 * 365),
        days: (secs / 86400) % 365,
        hours: (secs / 3600) % 24,
        minutes: (secs / 60) % 60,
        seconds: secs % 60,
        millis: u64::from(d.subsec_millis()),
        micros: u64::from(d.subsec_micros() % 1000),
    }
}

/// `status_function` in mod_commands.c, with `nl` = "\n" as on the Event Socket, of a
/// server that is ready.
pub fn status_text(cfg: &Config, sessions: u32, max: u32) -> String {
    status_text_ready(cfg, sessions, max, true)
}

/// `status_function`; `ready` is `switch_core_ready()`.
pub fn status_text_ready(cfg: &Config, sessions: u32, max: u32, ready: bool) -> String {
    let u = uptime(cfg.uptime);
    let s = |n: u64| if n == 1 { "" } else { "s" };
    let peak = cfg.peak.max(sessions);
    format!(
        "UP {} year{}, {} day{}, {} hour{}, {} minute{}, {} second{}, \
         {} millisecond{}, {} microsecond{}\n\
         FreeSWITCH (Version 1.10.12-release 64bit) is {}\n\
         {} session(s) since startup\n\
         {sessions} session(s) - peak {peak}, last 5min {} \n\
         3 session(s) per Sec out of max 30, peak 9, last 5min 4 \n\
         {max} session(s) max\n\
         min idle cpu 0.00/97.53\n\
         Current Stack Size/Max 240K/8192K\n",
        u.years,
        s(u.years),
        u.days,
        s(u.days),
        u.hours,
        s(u.hours),
        u.minutes,
        s(u.minutes),
        u.seconds,
        s(u.seconds),
        u.millis,
        s(u.millis),
        u.micros,
        s(u.micros),
        if ready { "ready" } else { "not ready" },
        cfg.since_startup,
        cfg.peak_5min,
    )
}

/// `json {"command":"status",…}`: cJSON_PrintUnformatted of the request object with
/// `status` and `response` appended, as `json_status_function` builds it.
fn json_status(cfg: &Config, request: &str, sessions: u32, max: u32, ready: bool) -> String {
    let u = uptime(cfg.uptime);
    let echoed = request.trim().trim_end_matches('}');
    format!(
        concat!(
            r#"{},"status":"success","response":{{"systemStatus":"{}","#,
            r#""uptime":{{"years":{},"days":{},"hours":{},"minutes":{},"seconds":{},"#,
            r#""milliseconds":{},"microseconds":{}}},"version":"1.10.12-release 64bit","#,
            r#""sessions":{{"count":{{"total":{},"active":{},"peak":{},"peak5Min":{},"#,
            r#""limit":{}}},"rate":{{"current":3,"max":30,"peak":9,"peak5Min":4}}}},"#,
            r#""idleCPU":{{"used":0,"allowed":97.53}},"#,
            r#""stackSizeKB":{{"current":240,"max":8192}}}}}}"#,
        ),
        echoed,
        if ready { "ready" } else { "not ready" },
        u.years,
        u.days,
        u.hours,
        u.minutes,
        u.seconds,
        u.millis,
        u.micros,
        cfg.since_startup,
        sessions,
        cfg.peak.max(sessions),
        cfg.peak_5min,
        max,
    )
}

/// One event: its headers in order, duplicates kept, values as FreeSWITCH holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event(pub Vec<(String, String)>);

impl Event {
    fn push(&mut self, name: &str, value: impl ToString) {
        self.0.push((name.to_owned(), value.to_string()));
    }

    /// `text/event-plain`, framed: `switch_event_serialize(…, SWITCH_TRUE)`.
    pub fn plain(&self) -> String {
        let mut body = String::new();
        for (name, value) in &self.0 {
            let v = url_encode(value);
            let v = if v.is_empty() { "_undef_".into() } else { v };
            body += &format!("{name}: {v}\n");
        }
        body.push('\n');
        format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
            body.len()
        )
    }

    /// `text/event-json`, framed: `switch_event_serialize_json`, cJSON_PrintUnformatted.
    pub fn json(&self) -> String {
        let members: Vec<String> = self
            .0
            .iter()
            .map(|(n, v)| format!("\"{}\":\"{}\"", json_escape(n), json_escape(v)))
            .collect();
        let body = format!("{{{}}}", members.join(","));
        format!(
            "Content-Length: {}\nContent-Type: text/event-json\n\n{body}",
            body.len()
        )
    }
}

/// `switch_url_encode` (switch_utils.c): bytes below 0x20 or above 0x7E and
/// `SWITCH_URL_UNSAFE` become `%XX` in uppercase hex, except a `%` already followed by two
/// uppercase hex digits, which is copied as it is.
pub fn url_encode(s: &str) -> String {
    const UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";
    const HEX: &[u8] = b"0123456789ABCDEF";
    let b = s.as_bytes();
    let mut out = String::new();
    for (i, &c) in b.iter().enumerate() {
        let escaped = c == b'%'
            && b.get(i + 1).is_some_and(|x| HEX.contains(x))
            && b.get(i + 2).is_some_and(|x| HEX.contains(x));
        if escaped || ((0x20..=0x7e).contains(&c) && !UNSAFE.contains(&c)) {
            out.push(c as char);
        } else {
            out += &format!("%{c:02X}");
        }
    }
    out
}

/// cJSON's string escapes: `\" \\ \b \f \n \r \t`, other control bytes `\u00xx`; `/` and
/// bytes from 0x80 up as they are.
fn json_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\u{8}' => out += "\\b",
            '\u{c}' => out += "\\f",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            '\t' => out += "\\t",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out
}

/// The FreeSWITCH host of the reference's examples.
pub const CORE_UUID: &str = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";

/// The 13 headers `switch_event_prep_for_delivery_detailed` puts first, for an event made
/// at `micros` (Unix time, UTC: the stand-in's local time is UTC).
fn standard(name: &str, micros: u64, at: (&str, &str, u32), seq: u64) -> Event {
    let mut e = Event(Vec::new());
    let (date, time) = civil(micros / 1_000_000);
    e.push("Event-Name", name);
    e.push("Core-UUID", CORE_UUID);
    e.push("FreeSWITCH-Hostname", "media1");
    e.push("FreeSWITCH-Switchname", "media1");
    e.push("FreeSWITCH-IPv4", "10.0.0.5");
    e.push("FreeSWITCH-IPv6", "::1");
    e.push("Event-Date-Local", format!("{date} {time}"));
    e.push("Event-Date-GMT", gmt(micros / 1_000_000));
    e.push("Event-Date-Timestamp", micros);
    e.push("Event-Calling-File", at.0);
    e.push("Event-Calling-Function", at.1);
    e.push("Event-Calling-Line-Number", at.2);
    e.push("Event-Sequence", seq);
    e
}

/// (`YYYY-MM-DD`, `HH:MM:SS`) of Unix seconds, and the weekday (0 = Sunday).
fn civil_parts(secs: u64) -> (i64, u32, u32, u64, usize) {
    let days = (secs / 86400) as i64;
    let tod = secs % 86400;
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, tod, ((days + 4).rem_euclid(7)) as usize)
}

fn civil(secs: u64) -> (String, String) {
    let (y, m, d, tod, _) = civil_parts(secs);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", tod / 3600, tod / 60 % 60, tod % 60),
    )
}

/// APR's RFC 822 date: `Wed, 15 Jan 2025 10:20:30 GMT`.
fn gmt(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, _, wd) = civil_parts(secs);
    let (_, time) = civil(secs);
    format!(
        "{}, {d:02} {} {y} {time} GMT",
        DAYS[wd],
        MONTHS[m as usize - 1]
    )
}

/// The last sender report FreeSWITCH received from the peer: repeated unchanged by every
/// later receiver-only report (only the SR path of `process_rtcp_report` writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    pub ntp_msw: u32,
    pub ntp_lsw: u32,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One report block, as `switch_core_media_read_frame` prints it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction: u8,
    pub lost: i32,
    pub loss_avg: u32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
    /// Smoothed round trip in seconds, printed `%f`; 0 until a valid sample.
    pub rtt: f64,
}

/// A RECV_RTCP_MESSAGE.
#[derive(Debug, Clone, PartialEq)]
pub struct Rtcp {
    pub uuid: String,
    pub micros: u64,
    pub seq: u64,
    pub sender: SenderInfo,
    pub last_rtp_timestamp: u32,
    /// 8000 for audio at 8 kHz, 90000 for video.
    pub rate: u32,
    pub blocks: Vec<ReportBlock>,
}

impl Rtcp {
    /// The reference's example (§4c): one block, 42.114 ms.
    pub fn example() -> Rtcp {
        Rtcp {
            uuid: "7f4de4bc-1c2b-4b5a-9f1e-2a3b4c5d6e7f".into(),
            micros: 1_736_936_342_500_000,
            seq: 4650,
            sender: SenderInfo {
                ssrc: 0x5e3a1b7c,
                ntp_msw: 3_945_925_142,
                ntp_lsw: 2_147_483_648,
                rtp_timestamp: 704_000,
                packets: 4400,
                octets: 704_000,
            },
            last_rtp_timestamp: 3_521_440,
            rate: 8000,
            blocks: vec![ReportBlock {
                ssrc: 0x1a2b3c4d,
                fraction: 0,
                lost: 2,
                loss_avg: 0,
                highest_seq: 23811,
                jitter: 37,
                lsr: 169_211_199,
                dlsr: 32768,
                rtt: 0.042114,
            }],
        }
    }

    /// A report of `uuid` with FreeSWITCH's own block at `rtt` seconds and `fraction` lost.
    pub fn of(uuid: &str, seq: u64, rtt: f64, fraction: u8) -> Rtcp {
        let mut r = Rtcp::example();
        r.uuid = uuid.into();
        r.seq = seq;
        r.micros += seq * 1000;
        r.blocks[0].rtt = rtt;
        r.blocks[0].fraction = fraction;
        r
    }

    pub fn event(&self) -> Event {
        let at = ("switch_core_media.c", "switch_core_media_read_frame", 2960);
        let mut e = standard("RECV_RTCP_MESSAGE", self.micros, at, self.seq);
        let s = &self.sender;
        e.push("Unique-ID", &self.uuid);
        e.push("SSRC", format!("{:08x}", s.ssrc));
        e.push("NTP-Most-Significant-Word", s.ntp_msw);
        e.push("NTP-Least-Significant-Word", s.ntp_lsw);
        e.push("RTP-Timestamp", s.rtp_timestamp);
        e.push("Sender-Packet-Count", s.packets);
        e.push("Octect-Packet-Count", s.octets);
        e.push("Last-RTP-Timestamp", self.last_rtp_timestamp);
        e.push("RTP-Rate", self.rate);
        e.push("Capture-Time", self.micros + 123);
        for (i, b) in self.blocks.iter().enumerate() {
            e.push(&format!("Source{i}-SSRC"), format!("{:08x}", b.ssrc));
            e.push(&format!("Source{i}-Fraction"), b.fraction);
            // int32 printed %u: -1 is 4294967295.
            e.push(&format!("Source{i}-Lost"), b.lost as u32);
            e.push(&format!("Source{i}-Loss-Avg"), b.loss_avg);
            e.push(
                &format!("Source{i}-Highest-Sequence-Number-Received"),
                b.highest_seq,
            );
            e.push(&format!("Source{i}-Jitter"), b.jitter);
            e.push(&format!("Source{i}-LSR"), b.lsr);
            e.push(&format!("Source{i}-DLSR"), b.dlsr);
            e.push(&format!("Rtt{i}-Avg"), format!("{:.6}", b.rtt));
        }
        e
    }
}

/// A CHANNEL_HANGUP_COMPLETE.
#[derive(Debug, Clone, PartialEq)]
pub struct Hangup {
    pub uuid: String,
    pub micros: u64,
    pub seq: u64,
    pub channel_name: String,
    /// The SIP source: the phone, or the proxy in front of FreeSWITCH.
    pub network_addr: String,
    /// `X-`/`P-` headers of the INVITE (`variable_sip_h_<name>`).
    pub sip_headers: Vec<(String, String)>,
    /// SDP `c=` address and port.
    pub media: (String, u16),
    /// The RTP source after NAT latching (`rtp_auto_adjust_audio`), if it differed.
    pub latched: Option<(String, u16)>,
    /// `variable_rtp_audio_*` as (stat, value), in `set_stats` order.
    pub stats: Vec<(&'static str, String)>,
}

impl Hangup {
    /// The reference's example (§4a), abridged as it is there.
    pub fn example() -> Hangup {
        Hangup {
            uuid: "7f4de4bc-1c2b-4b5a-9f1e-2a3b4c5d6e7f".into(),
            micros: 1_736_936_430_123_456,
            seq: 4711,
            channel_name: "sofia/internal/1001@192.0.2.10".into(),
            network_addr: "203.0.113.7".into(),
            sip_headers: Vec::new(),
            media: ("198.51.100.23".into(), 40000),
            latched: None,
            stats: vec![
                ("in_packet_count", "9004".into()),
                ("in_skip_packet_count", "12".into()),
                ("in_jitter_min_variance", "0.41".into()),
                ("in_jitter_max_variance", "12.87".into()),
                ("in_jitter_loss_rate", "0.00".into()),
                ("in_mean_interval", "20.01".into()),
                ("in_flaw_total", "3".into()),
                ("in_quality_percentage", "99.00".into()),
                ("in_mos", "4.49".into()),
            ],
        }
    }

    /// A call of `uuid` from a phone at `phone`, signalled directly, all 27 stats with the
    /// MOS of quality `r` (`do_mos` in switch_rtp.c).
    pub fn of(uuid: &str, seq: u64, phone: &str, r: u32, with_rtcp: bool) -> Hangup {
        let mut h = Hangup::example();
        h.uuid = uuid.into();
        h.seq = seq;
        h.micros += seq * 1000;
        h.channel_name = format!("sofia/internal/1001@{phone}");
        h.network_addr = phone.into();
        h.media = (phone.into(), 40000);
        let r = f64::from(r);
        let mos = 1.0 + 0.035 * r + 0.000007 * r * (r - 60.0) * (100.0 - r);
        let rtcp = if with_rtcp { "4400" } else { "0" };
        h.stats = vec![
            ("in_raw_bytes", "1548720".into()),
            ("in_media_bytes", "1548000".into()),
            ("in_packet_count", "9004".into()),
            ("in_media_packet_count", "9000".into()),
            ("in_skip_packet_count", "12".into()),
            ("in_jitter_packet_count", "0".into()),
            ("in_dtmf_packet_count", "4".into()),
            ("in_cng_packet_count", "0".into()),
            ("in_flush_packet_count", "0".into()),
            ("in_largest_jb_size", "0".into()),
            ("in_jitter_min_variance", "0.41".into()),
            ("in_jitter_max_variance", "12.87".into()),
            ("in_jitter_loss_rate", "0.00".into()),
            ("in_jitter_burst_rate", "0.00".into()),
            ("in_mean_interval", "20.01".into()),
            ("in_flaw_total", "3".into()),
            ("in_quality_percentage", format!("{r:.2}")),
            ("in_mos", format!("{mos:.2}")),
            ("out_raw_bytes", "1549408".into()),
            ("out_media_bytes", "1548688".into()),
            ("out_packet_count", "9008".into()),
            ("out_media_packet_count", "9004".into()),
            ("out_skip_packet_count", "0".into()),
            ("out_dtmf_packet_count", "0".into()),
            ("out_cng_packet_count", "0".into()),
            ("rtcp_packet_count", rtcp.into()),
            (
                "rtcp_octet_count",
                if with_rtcp { "704000" } else { "0" }.into(),
            ),
        ];
        h
    }

    pub fn event(&self) -> Event {
        let at = (
            "switch_core_state_machine.c",
            "switch_core_session_reporting_state",
            943,
        );
        let mut e = standard("CHANNEL_HANGUP_COMPLETE", self.micros, at, self.seq);
        e.push("Hangup-Cause", "NORMAL_CLEARING");
        e.push("Channel-State", "CS_REPORTING");
        e.push("Channel-Name", &self.channel_name);
        e.push("Unique-ID", &self.uuid);
        e.push("Call-Direction", "inbound");
        e.push("Answer-State", "hangup");
        // Again, from switch_channel_event_set_basic_data.
        e.push("Hangup-Cause", "NORMAL_CLEARING");
        e.push("Caller-Network-Addr", &self.network_addr);
        e.push("variable_sip_network_ip", &self.network_addr);
        e.push("variable_sip_received_ip", &self.network_addr);
        for (name, value) in &self.sip_headers {
            e.push(&format!("variable_sip_h_{name}"), value);
        }
        e.push("variable_remote_media_ip", &self.media.0);
        e.push("variable_remote_media_port", self.media.1);
        if let Some((ip, port)) = &self.latched {
            e.push("variable_remote_audio_ip_reported", &self.media.0);
            e.push("variable_remote_audio_ip", ip);
            e.push("variable_remote_audio_port_reported", self.media.1);
            e.push("variable_remote_audio_port", port);
            e.push("variable_rtp_auto_adjust_audio", "true");
        }
        for (stat, value) in &self.stats {
            e.push(&format!("variable_rtp_audio_{stat}"), value);
        }
        e
    }
}
