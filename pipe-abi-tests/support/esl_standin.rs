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
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
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
