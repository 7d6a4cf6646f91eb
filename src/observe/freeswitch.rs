//! Round trips of real calls, from FreeSWITCH's RTCP, per caller: `observe --freeswitch`.
//!
//! A listener thread keeps one Event Socket connection open (reconnecting with back-off)
//! and subscribes to two events (`reference/freeswitch-call-quality.md` §2, §4):
//!
//! ```text
//! ← Content-Type: auth/request\n\n
//! → auth ClueCon\n\n                            (the password file's first line)
//! ← Content-Type: command/reply\nReply-Text: +OK accepted\n\n
//! → event plain CHANNEL_HANGUP_COMPLETE RECV_RTCP_MESSAGE\n\n
//! ← Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n
//! ← Content-Length: 975\nContent-Type: text/event-plain\n\n<RECV_RTCP_MESSAGE>
//!     Unique-ID: 7f4de4bc-…   RTP-Rate: 8000   Source0-SSRC: 1a2b3c4d
//!     Source0-Fraction: 0     Rtt0-Avg: 0.042114   (smoothed RTT, seconds; 0.000000 = none yet)
//! ← …more reports while the call runs…
//! ← Content-Length: 1293\nContent-Type: text/event-plain\n\n<CHANNEL_HANGUP_COMPLETE>
//!     Unique-ID: 7f4de4bc-…   variable_remote_media_ip: 198.51.100.23
//!     variable_rtp_auto_adjust_audio: true   variable_remote_audio_ip: 203.0.113.9
//!     variable_sip_h_X-AUTH-IP: 203.0.113.9  variable_rtp_audio_in_mos: 4.49
//! ```
//!
//! An RTCP report carries the round trip but no address; the hangup carries the address and
//! the call's MOS. So each call in flight keeps, by `Unique-ID`, its last non-zero audio
//! round trip and its reported loss, and at hangup becomes one finished call of the caller
//! address: the header `--freeswitch-caller-header` names (as `variable_sip_h_<NAME>`, for a
//! Kamailio in front that adds it; the SIP source address is Kamailio's own), else the RTP
//! peer after NAT latching (`variable_remote_audio_ip` when `variable_rtp_auto_adjust_audio`
//! is `true`), else the SDP address (`variable_remote_media_ip`). A call that never got a
//! round trip (no RTCP, or the phone never echoes a sender report) counts for nothing.
//!
//! Which report block: each block reports on one SSRC's stream; FreeSWITCH computes a round
//! trip only for blocks that echo one of its own sender reports, which is FreeSWITCH's own
//! stream, normally block 0. A call pins the SSRC of block 0 of its first audio report and
//! reads that SSRC's block from then on. Video reports (same `Unique-ID`, `RTP-Rate: 90000`)
//! are counted and passed over: a voice call's latency is its audio's.
//!
//! Memory is bounded: calls in flight are capped at [`MAX_CALLS`] (the oldest dropped first,
//! counted as evicted), finished calls per round at [`MAX_DONE`], an event body at
//! [`MAX_EVENT`] (a longer one is read past and counted), and a `Content-Length` past
//! [`MAX_SKIP`] ends the connection. The round loop only takes the finished calls under a
//! lock, so a slow or hostile Event Socket never delays a round.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use log::{info, warn};

use super::aggregate::{aggregate, Dropped, NetworkRtt, Policy, Sample};
use super::openmetrics::{CallFigures, Counts, Listener, Round};
use crate::dns::Subnet;
use crate::net::esl_wire::{each_header, Format, Next, Raw, Reader, WireError};
use crate::state::index::Metrics;
use crate::state::reading::Source;
use crate::state::writer::Writer;
use crate::text::shown;

/// FreeSWITCH's default Event Socket password (`mod_event_socket.c`, `config()`).
pub const DEFAULT_PASSWORD: &str = "ClueCon";
/// `MAX_REPORT_BLOCKS` in `switch_rtcp_frame.h`: blocks past it are never reported.
pub const MAX_BLOCKS: usize = 5;
/// A real CHANNEL_HANGUP_COMPLETE is 5 to 20 kB (some 200 headers); with an XML CDR
/// attached (`hangup_complete_with_xml`) tens of kB more.
pub const MAX_EVENT: usize = 1 << 20;
/// Longer bodies are read past; past this, the stream is not an event stream.
pub const MAX_SKIP: u64 = 64 << 20;
/// Calls in flight with a round trip: about 200 bytes each, so 10 MB at most.
pub const MAX_CALLS: usize = 50_000;
/// Finished calls kept for one round.
pub const MAX_DONE: usize = 200_000;
/// Connect, authentication and subscription each get this long.
const HANDSHAKE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `--freeswitch HOST:PORT` with its password and caller header.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: String,
    pub password: String,
    /// `variable_sip_h_<NAME>`, when `--freeswitch-caller-header NAME` is given.
    pub caller_variable: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: options end up in logs and panics.
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("caller_variable", &self.caller_variable)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The source `--freeswitch`, `--freeswitch-password-file` and
    /// `--freeswitch-caller-header` describe. The password is the file's first line without
    /// its line end, as `echo secret > file` writes it and FreeSWITCH compares it.
    pub fn new(
        addr: &str,
        password_file: Option<&Path>,
        header: Option<&str>,
    ) -> anyhow::Result<Self> {
        let password = match password_file {
            None => DEFAULT_PASSWORD.to_owned(),
            Some(p) => {
                // The first line is all that counts; a huge file is not read whole.
                let mut text = Vec::new();
                crate::files::open_regular(p)
                    .and_then(|f| f.take(4096).read_to_end(&mut text))
                    .with_context(|| format!("--freeswitch-password-file {}", p.display()))?;
                let line = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                match std::str::from_utf8(line) {
                    Ok(l) if !l.is_empty() => l.to_owned(),
                    _ => bail!(
                        "--freeswitch-password-file {}: the first line is empty or not UTF-8",
                        p.display()
                    ),
                }
            }
        };
        let caller_variable = match header {
            None => None,
            Some(h)
                if !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(format!("variable_sip_h_{h}"))
            }
            Some(h) => bail!(
                "--freeswitch-caller-header needs a SIP header name like X-AUTH-IP, got \"{}\"",
                shown(h)
            ),
        };
        Ok(Endpoint {
            addr: addr.to_owned(),
            password,
            caller_variable,
        })
    }
}

/// One report block of a `RECV_RTCP_MESSAGE`, as far as it matters here.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Block {
    /// `Source<i>-SSRC`: whose stream the block reports on.
    pub ssrc: Option<u32>,
    /// `Source<i>-Fraction`: RFC 3550 fraction lost, 0-255 (/256).
    pub fraction: Option<u8>,
    /// `Rtt<i>-Avg` in seconds; `None` for `0.000000` (no sample yet) and nonsense.
    pub rtt_s: Option<f64>,
}

/// What one event says, borrowed from its body where nothing needed decoding.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<'a> {
    Rtcp {
        uuid: Cow<'a, str>,
        /// `RTP-Rate`: 90000 for video, the codec's clock rate for audio.
        rate: Option<u32>,
        blocks: [Block; MAX_BLOCKS],
    },
    Hangup {
        uuid: Cow<'a, str>,
        /// The caller address this call is filed under, by the rule of the module docs.
        caller: Option<Cow<'a, str>>,
        /// `variable_rtp_audio_in_mos`.
        mos: Option<f64>,
    },
    /// Another event, or one without a `Unique-ID`.
    Other,
}

/// Reads one event body. `caller_variable` is `variable_sip_h_<NAME>` when configured.
pub fn parse<'a>(format: Format, body: &'a [u8], caller_variable: Option<&str>) -> Event<'a> {
    let mut name: Option<Cow<str>> = None;
    let mut uuid: Option<Cow<str>> = None;
    let mut rate = None;
    let mut blocks = [Block::default(); MAX_BLOCKS];
    let (mut header_ip, mut audio_ip, mut media_ip) = (None, None, None);
    let mut auto_adjust = false;
    let mut mos = None;
    each_header(format, body, |n: &'a str, v: Raw<'a>| match n {
        "Event-Name" if name.is_none() => name = Some(v.decode()),
        "Unique-ID" if uuid.is_none() => uuid = Some(v.decode()),
        "RTP-Rate" => rate = v.decode().parse().ok(),
        "variable_remote_audio_ip" => audio_ip = Some(v.decode()),
        "variable_remote_media_ip" => media_ip = Some(v.decode()),
        "variable_rtp_auto_adjust_audio" => auto_adjust = v.decode() == "true",
        "variable_rtp_audio_in_mos" => {
            mos = v
                .decode()
                .parse::<f64>()
                .ok()
                .filter(|m| (1.0..=5.0).contains(m))
        }
        n if caller_variable.is_some_and(|c| c.eq_ignore_ascii_case(n)) => {
            header_ip = Some(v.decode())
        }
        n => {
            if let Some((i, field)) = block_field(n) {
                let b = &mut blocks[i];
                let v = v.decode();
                match field {
                    Field::Ssrc => b.ssrc = u32::from_str_radix(&v, 16).ok(),
                    Field::Fraction => b.fraction = v.parse().ok(),
                    Field::Rtt => {
                        b.rtt_s = v.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0)
                    }
                }
            }
        }
    });
    let (Some(name), Some(uuid)) = (name, uuid) else {
        return Event::Other;
    };
    if uuid.is_empty() {
        return Event::Other;
    }
    match &*name {
        "RECV_RTCP_MESSAGE" => Event::Rtcp { uuid, rate, blocks },
        "CHANNEL_HANGUP_COMPLETE" => {
            let latched = audio_ip.filter(|_| auto_adjust);
            let nonempty = |v: &Option<Cow<str>>| v.as_ref().is_some_and(|s| !s.trim().is_empty());
            let caller = [header_ip, latched, media_ip]
                .into_iter()
                .find(|v| nonempty(v))
                .flatten();
            Event::Hangup { uuid, caller, mos }
        }
        _ => Event::Other,
    }
}

enum Field {
    Ssrc,
    Fraction,
    Rtt,
}

/// `Source<i>-SSRC`, `Source<i>-Fraction`, `Rtt<i>-Avg` with `i` below [`MAX_BLOCKS`].
fn block_field(name: &str) -> Option<(usize, Field)> {
    let index = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|&i| i < MAX_BLOCKS && s.len() == 1)
    };
    if let Some(rest) = name.strip_prefix("Source") {
        let (i, field) = rest.split_once('-')?;
        let field = match field {
            "SSRC" => Field::Ssrc,
            "Fraction" => Field::Fraction,
            _ => return None,
        };
        return Some((index(i)?, field));
    }
    let i = name.strip_prefix("Rtt")?.strip_suffix("-Avg")?;
    Some((index(i)?, Field::Rtt))
}

/// A call that finished with a round trip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Done {
    pub caller: IpAddr,
    /// The last non-zero audio `Rtt<i>-Avg`, milliseconds.
    pub rtt_ms: f64,
    pub mos: Option<f64>,
    /// Mean of the call's reported `Source<i>-Fraction`, as a ratio (0 to 1).
    pub loss: Option<f64>,
}

struct Live {
    seq: u64,
    /// The SSRC whose block this call reads (block 0's in its first audio report).
    own: Option<u32>,
    rtt_s: f64,
    loss_sum: f64,
    loss_n: u32,
}

/// Calls in flight and calls finished since the last round.
pub struct Calls {
    live: HashMap<Box<str>, Live>,
    /// Calls in flight by age, for eviction.
    order: BTreeMap<u64, Box<str>>,
    next: u64,
    cap: usize,
    done: Vec<Done>,
    done_cap: usize,
    pub counts: Counts,
    /// Whether the listener is subscribed right now.
    pub connected: bool,
}

impl Default for Calls {
    fn default() -> Self {
        Calls::with_caps(MAX_CALLS, MAX_DONE)
    }
}

impl Calls {
    pub fn with_caps(cap: usize, done_cap: usize) -> Self {
        Calls {
            live: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
            done: Vec::new(),
            done_cap,
            counts: Counts::default(),
            connected: false,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.live.len()
    }

    /// Files one event.
    pub fn add(&mut self, e: Event<'_>) {
        match e {
            Event::Rtcp { uuid, rate, blocks } => self.rtcp(&uuid, rate, &blocks),
            Event::Hangup { uuid, caller, mos } => self.hangup(&uuid, caller.as_deref(), mos),
            Event::Other => {}
        }
    }

    fn rtcp(&mut self, uuid: &str, rate: Option<u32>, blocks: &[Block; MAX_BLOCKS]) {
        if rate == Some(90_000) {
            self.counts.video += 1;
            return;
        }
        self.counts.rtcp += 1;
        if !self.live.contains_key(uuid) {
            while self.live.len() >= self.cap {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.live.remove(&oldest);
                self.counts.evicted += 1;
            }
            let seq = self.next;
            self.next += 1;
            self.order.insert(seq, uuid.into());
            self.live.insert(
                uuid.into(),
                Live {
                    seq,
                    own: None,
                    rtt_s: 0.0,
                    loss_sum: 0.0,
                    loss_n: 0,
                },
            );
        }
        let Some(call) = self.live.get_mut(uuid) else {
            return;
        };
        // A sender report with no blocks pins nothing: the first block 0 seen does.
        if call.own.is_none() {
            call.own = blocks[0].ssrc;
        }
        let block = match call.own {
            Some(own) => blocks.iter().find(|b| b.ssrc == Some(own)),
            None => blocks.first(),
        };
        let Some(b) = block else {
            return;
        };
        if let Some(rtt) = b.rtt_s {
            call.rtt_s = rtt;
        }
        if let Some(f) = b.fraction {
            call.loss_sum += f64::from(f) / 256.0;
            call.loss_n += 1;
        }
    }

    fn hangup(&mut self, uuid: &str, caller: Option<&str>, mos: Option<f64>) {
        self.counts.hangups += 1;
        let Some(call) = self.live.remove(uuid) else {
            self.counts.no_rtt += 1;
            return;
        };
        self.order.remove(&call.seq);
        if call.rtt_s <= 0.0 {
            self.counts.no_rtt += 1;
            return;
        }
        let Some(caller) = caller.and_then(address) else {
            self.counts.no_caller += 1;
            return;
        };
        if self.done.len() >= self.done_cap {
            self.counts.done_dropped += 1;
            return;
        }
        self.counts.measured += 1;
        self.done.push(Done {
            caller,
            rtt_ms: call.rtt_s * 1000.0,
            mos,
            loss: (call.loss_n > 0).then(|| call.loss_sum / f64::from(call.loss_n)),
        });
    }

    /// The calls finished since the last call, and the counters as they stand.
    pub fn take(&mut self) -> (Vec<Done>, Counts) {
        (std::mem::take(&mut self.done), self.counts)
    }
}

/// An address as FreeSWITCH writes it (`198.51.100.23`, `2001:db8::1`, maybe bracketed).
fn address(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Starts the listener thread; it runs until the process ends.
pub fn spawn(target: &str, src: Endpoint, calls: Arc<Mutex<Calls>>) -> anyhow::Result<()> {
    let target = target.to_owned();
    thread::Builder::new()
        .name("freeswitch".into())
        .spawn(move || listen(&target, &src, &calls))
        .map(drop)
        .context("starting the freeswitch listener")
}

fn listen(target: &str, src: &Endpoint, calls: &Mutex<Calls>) {
    let mut backoff = BACKOFF_MIN;
    let mut said: Option<String> = None;
    loop {
        let mut subscribed = false;
        let why = session(src, calls, &mut subscribed);
        if let Ok(mut c) = calls.lock() {
            c.connected = false;
            if matches!(why, SessionEnd::Framing(_)) {
                c.counts.malformed += 1;
            }
        }
        let why = why.to_string();
        if subscribed {
            backoff = BACKOFF_MIN;
        }
        // One line per problem until it changes, as the other sources do.
        if said.as_deref() != Some(&why) {
            warn!(
                "{}: freeswitch {}: {}; retrying",
                shown(target),
                shown(&src.addr),
                why
            );
            said = Some(why);
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if subscribed {
            said = None;
        }
    }
}

enum SessionEnd {
    /// Could not connect, or the server closed or refused.
    Down(String),
    /// The stream broke the framing rules.
    Framing(String),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down(s) | Self::Framing(s) => f.write_str(s),
        }
    }
}

impl From<WireError> for SessionEnd {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(_) | WireError::Closed => SessionEnd::Down(e.to_string()),
            _ => SessionEnd::Framing(e.to_string()),
        }
    }
}

/// One connection: handshake, then events until it breaks.
fn session(src: &Endpoint, calls: &Mutex<Calls>, subscribed: &mut bool) -> SessionEnd {
    let down = |what: &str, e: &dyn std::fmt::Display| SessionEnd::Down(format!("{what}: {e}"));
    let addrs: Vec<SocketAddr> = match src.addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return down("resolving", &e),
    };
    let mut last = SessionEnd::Down("no address".into());
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, HANDSHAKE) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = down("connecting", &e),
        }
    }
    let Some(stream) = stream else {
        return last;
    };
    if let Err(e) = stream.set_read_timeout(Some(HANDSHAKE)) {
        return down("socket", &e);
    }
    let mut r = Reader::new(stream, MAX_EVENT, MAX_SKIP);
    let expect = |r: &mut Reader<TcpStream>, want: &str| -> Result<String, SessionEnd> {
        loop {
            match r.read()? {
                Next::Frame(f) if f.content_type() == want => {
                    return Ok(f.header("Reply-Text").unwrap_or("").to_owned())
                }
                Next::Frame(f) if f.content_type() == "text/rude-rejection" => {
                    let why = String::from_utf8_lossy(&f.body);
                    return Err(SessionEnd::Down(format!("rejected: {}", shown(why.trim()))));
                }
                Next::Frame(f) if f.content_type() == "text/disconnect-notice" => {
                    return Err(SessionEnd::Down("disconnected by the server".into()));
                }
                _ => {}
            }
        }
    };
    let send = |r: &mut Reader<TcpStream>, text: &str| {
        r.get_mut()
            .write_all(text.as_bytes())
            .map_err(|e| down("sending", &e))
    };
    let handshake = (|| {
        expect(&mut r, "auth/request")?;
        send(&mut r, &format!("auth {}\n\n", src.password))?;
        match expect(&mut r, "command/reply")?.as_str() {
            "+OK accepted" => {}
            other => {
                return Err(SessionEnd::Down(format!(
                    "authentication refused (\"{}\"): check --freeswitch-password-file",
                    shown(other)
                )))
            }
        }
        send(
            &mut r,
            "event plain CHANNEL_HANGUP_COMPLETE RECV_RTCP_MESSAGE\n\n",
        )?;
        match expect(&mut r, "command/reply")? {
            ok if ok.starts_with("+OK") => Ok(()),
            other => Err(SessionEnd::Down(format!(
                "subscribing refused (\"{}\")",
                shown(&other)
            ))),
        }
    })();
    if let Err(e) = handshake {
        return e;
    }
    // Quiet hours are normal: no read timeout from here on; a dead peer is found by TCP
    // keepalives.
    if let Err(e) = r.get_mut().set_read_timeout(None) {
        return down("socket", &e);
    }
    keepalive(r.get_mut());
    *subscribed = true;
    if let Ok(mut c) = calls.lock() {
        c.connected = true;
        c.counts.connects += 1;
    }
    info!("freeswitch {}: subscribed to call events", shown(&src.addr));
    let caller_variable = src.caller_variable.as_deref();
    loop {
        match r.read() {
            Ok(Next::Frame(f)) => {
                let ct = f.content_type();
                if let Some(format) = Format::of(ct) {
                    let e = parse(format, &f.body, caller_variable);
                    if !matches!(e, Event::Other) {
                        if let Ok(mut c) = calls.lock() {
                            c.add(e);
                        }
                    }
                } else if ct == "text/disconnect-notice"
                    && f.header("Content-Disposition") != Some("linger")
                {
                    return SessionEnd::Down("disconnected by the server".into());
                }
            }
            Ok(Next::Oversized { .. }) => {
                if let Ok(mut c) = calls.lock() {
                    c.counts.oversized += 1;
                }
            }
            Err(e) => return e.into(),
        }
    }
}

/// TCP keepalives after a minute of silence, so that a peer that vanished without a reset
/// is noticed within about two minutes rather than never.
fn keepalive(s: &TcpStream) {
    use rustix::net::sockopt;
    // Best effort: without keepalives a vanished peer is noticed at the next reconnect.
    let _ = sockopt::set_socket_keepalive(s, true);
    let _ = sockopt::set_tcp_keepidle(s, Duration::from_secs(60));
    let _ = sockopt::set_tcp_keepintvl(s, Duration::from_secs(15));
    let _ = sockopt::set_tcp_keepcnt(s, 4);
}

/// One network's call quality in a round, beside its latency figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    pub network: String,
    /// Median over callers of each caller's median `variable_rtp_audio_in_mos`.
    pub mos: Option<f64>,
    /// The same for each call's mean RTCP fraction lost, as a ratio.
    pub loss: Option<f64>,
    pub callers: usize,
    pub calls: usize,
}

/// A round's figures from finished calls: latency per network as [`aggregate`] makes it for
/// the other sources, and quality for the networks that got a latency figure.
pub fn figures<'n>(
    done: &[Done],
    network_of: impl Fn(IpAddr) -> Option<&'n str>,
    policy: &Policy,
) -> (Vec<NetworkRtt>, Vec<Quality>, Dropped) {
    let samples: Vec<Sample> = done
        .iter()
        // A call's caller is its media address (IPv6 grouped by /64 in `aggregate`): the
        // hangup event names no registered subscriber to count once.
        .map(|d| Sample {
            caller: d.caller,
            subscriber: None,
            rtt_ms: d.rtt_ms,
        })
        .collect();
    let (nets, dropped) = aggregate(&samples, &network_of, policy);
    // One lookup per call, grouped by network: thousands of networks cost no more.
    let mut by_network: HashMap<&str, Vec<&Done>> = HashMap::new();
    for d in done {
        if d.rtt_ms > 0.0 && d.rtt_ms <= policy.max_ms {
            if let Some(net) = network_of(canonical(d.caller)) {
                by_network.entry(net).or_default().push(d);
            }
        }
    }
    let quality = nets
        .iter()
        .map(|n| {
            let mine = by_network
                .get(n.network.as_str())
                .map_or(&[][..], Vec::as_slice);
            Quality {
                network: n.network.clone(),
                mos: median_of_callers(mine, |d| d.mos),
                loss: median_of_callers(mine, |d| d.loss),
                callers: n.callers,
                calls: mine.len(),
            }
        })
        .collect();
    (nets, quality, dropped)
}

/// The calls part of an `observe` round: takes the calls finished since the last round,
/// writes a `freeswitch` latency reading and the call quality for every known network with
/// enough callers, and notes it all in `figs`.
pub(super) fn round(
    w: &Writer,
    target: &str,
    networks: &Metrics,
    policy: &Policy,
    calls: &Mutex<Calls>,
    figs: &mut Round,
) -> anyhow::Result<()> {
    let (done, listener) = match calls.lock() {
        Ok(mut c) => {
            let (done, counts) = c.take();
            let l = Listener {
                counts,
                in_flight: c.in_flight(),
                connected: c.connected,
            };
            (done, l)
        }
        Err(_) => bail!("the freeswitch listener failed"),
    };
    figs.freeswitch = Some(listener);
    let (nets, quality, dropped) = figures(
        &done,
        |ip| networks.network_for(Subnet::host(ip)).map(|n| &*n.cidr),
        policy,
    );
    let c = listener.counts;
    info!(
        "{target}: freeswitch: {} measured calls ended ({} in flight; so far {} rtcp reports, \
         {} hangups, {} without a round trip, {} without an address, {} evicted, \
         {} oversized events)",
        done.len(),
        listener.in_flight,
        c.rtcp,
        c.hangups,
        c.no_rtt,
        c.no_caller,
        c.evicted,
        c.oversized
    );
    if dropped.unknown_network > 0 {
        info!(
            "{target}: freeswitch: {} calls from {} callers in no known network, ignored{}",
            dropped.unknown_network,
            dropped.unknown_callers,
            dropped.unknown_where()
        );
    }
    for (net, callers) in &dropped.too_few_callers {
        info!(
            "{target}: freeswitch: network {net}: {callers} callers, fewer than --min-callers {}: \
             no reading",
            policy.min_callers
        );
        figs.calls.entry(net.clone()).or_default().callers = *callers;
    }
    figs.samples
        .insert(super::openmetrics::FREESWITCH, done.len() as u64);
    let stored = w.transaction(|w| {
        let mut stored = Vec::with_capacity(nets.len());
        for (n, q) in nets.iter().zip(&quality) {
            let callers = u32::try_from(n.callers).unwrap_or(u32::MAX);
            stored.push(w.latency(&n.network, target, Source::Freeswitch, n.ms, Some(callers))?);
            w.quality(&n.network, target, q.mos, q.loss, (q.callers, q.calls))?;
        }
        Ok(stored)
    })?;
    for ((n, q), l) in nets.iter().zip(&quality).zip(stored) {
        info!(
            "{target}: freeswitch: network {}: {:.3} ms from {} callers ({} calls), MOS {}, \
             loss {}",
            n.network,
            n.ms,
            n.callers,
            n.samples,
            q.mos.map_or("-".into(), |m| format!("{m:.2}")),
            q.loss.map_or("-".into(), |x| format!("{:.2} %", x * 100.0)),
        );
        figs.calls.insert(
            n.network.clone(),
            CallFigures {
                callers: n.callers,
                calls: q.calls,
                round_ms: Some(n.ms),
                mos: q.mos,
                loss: q.loss,
                stored: Some(l),
            },
        );
    }
    Ok(())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Each caller's median of `value`, then the median over callers; `None` without values.
fn median_of_callers(calls: &[&Done], value: impl Fn(&Done) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<(IpAddr, f64)> = calls
        .iter()
        .filter_map(|d| Some((canonical(d.caller), value(d).filter(|x| x.is_finite())?)))
        .collect();
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut medians = Vec::new();
    let mut rest = &v[..];
    while let Some(&(caller, _)) = rest.first() {
        let n = rest.iter().take_while(|x| x.0 == caller).count();
        let values: Vec<f64> = rest[..n].iter().map(|x| x.1).collect();
        medians.push(median_sorted(&values));
        rest = &rest[n..];
    }
    medians.sort_unstable_by(f64::total_cmp);
    (!medians.is_empty()).then(|| median_sorted(&medians))
}

fn median_sorted(v: &[f64]) -> f64 {
    let mid = v.len() / 2;
    match v.len() % 2 {
        1 => v[mid],
        _ => (v[mid - 1] + v[mid]) / 2.0,
    }
}

#[cfg(test)]
mod tests;
