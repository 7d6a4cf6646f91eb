//! Health and latency of a SIP target: one OPTIONS request over UDP or TCP, or a bare TCP
//! connect. Averaging and anti-flap are applied where the result is written, by
//! [`crate::state::writer::Writer`].
//!
//! The request, with a fresh branch, tag and Call-ID per probe:
//!
//! ```text
//! OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n
//! Via: SIP/2.0/UDP 127.0.0.1:40312;branch=z9hG4bK3f9c2a7d1e5b8046;rport\r\n
//! Max-Forwards: 70\r\n
//! From: <sip:pdns-ha@127.0.0.1>;tag=8a1c6e0f\r\n
//! To: <sip:127.0.0.1:5060>\r\n
//! Call-ID: 5d07e1b9c4a2f863@127.0.0.1\r\n
//! CSeq: 1 OPTIONS\r\n
//! User-Agent: pdns-ha\r\n
//! Content-Length: 0\r\n
//! \r\n
//! ```
//!
//! The probe returns the first final response (200 to 699) whose Call-ID and CSeq match, with
//! its code and reason phrase; 1xx responses only mean "wait". Whether that answer means "up"
//! is the target's [`AcceptCodes`] (`ha_targets.probe_ok_codes`): 2xx by default, as
//! Kamailio's dispatcher counts only 200 unless `ds_ping_reply_codes` adds more. A 503 is a
//! server saying "not me now" (FreeSWITCH sends `503 Maximum Calls In Progress` when full,
//! paused or its profile is down), and RFC 3263 sends clients on to the next server, so it
//! is never up unless listed. The round trip is measured from the first send to the final
//! response, so a retransmission shows up as latency.
//!
//! [`UdpProbe`] is the UDP probe as a state machine on a non-blocking socket, so that one
//! thread can keep thousands of probes in flight (`monitor::pool`); [`probe_udp`] drives one.

use std::fmt;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::net::probe::{printable, Deadline, ProbeError};
pub use crate::state::codes::AcceptCodes;

/// RFC 3261 timers for retransmitting a non-INVITE request over UDP: first after T1, then
/// doubling up to T2. Only probes with a timeout above T1 ever retransmit.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// A TCP peer that streams more than this without our answer is not answering OPTIONS.
pub(crate) const MAX_TCP_READ: usize = 64 * 1024;

pub(crate) const WAITING: &str = "waiting for a final response";

/// A final response to our OPTIONS: how long it took, and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rtt: Duration,
    pub code: u16,
    /// The reason phrase, made printable (peer text).
    pub reason: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// Probes `addr` with SIP OPTIONS over UDP and returns the final answer.
///
/// The socket is connected, so an ICMP port-unreachable comes back as `connection refused`
/// at once and a closed port is "down" without waiting for the timeout. A connected socket
/// also only accepts datagrams from `addr`: a server that answers from another address or
/// port (allowed by RFC 3261 §18.2.2, rare in practice) looks dead to this probe.
pub fn probe_udp(addr: SocketAddr, timeout: Duration) -> Result<Answer, ProbeError> {
    let mut probe = UdpProbe::start(addr, timeout)?;
    let mut buf = vec![0u8; 65536];
    loop {
        let wait = probe.wake_at().saturating_duration_since(Instant::now());
        let mut fds = [libc::pollfd {
            fd: probe.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = wait.as_millis().clamp(0, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms.max(1)) };
        if ready > 0 {
            if let Some(done) = probe.readable(&mut buf) {
                return done;
            }
        }
        if let Some(done) = probe.tick(Instant::now()) {
            return done;
        }
    }
}

/// One UDP OPTIONS probe in flight on a non-blocking connected socket: the caller polls
/// [`fd`](Self::fd) and calls [`readable`](Self::readable) when it is, and
/// [`tick`](Self::tick) by [`wake_at`](Self::wake_at) for retransmissions and the deadline.
pub struct UdpProbe {
    sock: UdpSocket,
    peer: String,
    request: String,
    ids: Ids,
    timeout: Duration,
    start: Instant,
    next_send: Instant,
    interval: Duration,
}

impl UdpProbe {
    /// Opens the socket and sends the first request. Fails at once for a socket that cannot
    /// be had (`too many open files` among others: the caller may retry later).
    pub fn start(addr: SocketAddr, timeout: Duration) -> Result<UdpProbe, ProbeError> {
        let peer = addr.to_string();
        let d = Deadline::new(&peer, timeout);
        let any: IpAddr = match addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let sock = UdpSocket::bind((any, 0)).map_err(|e| d.io_err("binding", e))?;
        sock.connect(addr).map_err(|e| d.io_err("connecting", e))?;
        sock.set_nonblocking(true)
            .map_err(|e| d.io_err("connecting", e))?;
        let local = sock.local_addr().map_err(|e| d.io_err("connecting", e))?;
        let ids = Ids::new(local);
        let request = options_request("UDP", local, addr, &ids);
        let start = Instant::now();
        let mut probe = UdpProbe {
            sock,
            peer,
            request,
            ids,
            timeout,
            start,
            next_send: start,
            interval: T1,
        };
        match probe.tick(start) {
            Some(Err(e)) => Err(e),
            _ => Ok(probe),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The next moment [`tick`](Self::tick) has something to do.
    pub fn wake_at(&self) -> Instant {
        self.next_send.min(self.start + self.timeout)
    }

    fn deadline(&self) -> Deadline<'_> {
        Deadline::new(&self.peer, self.timeout)
    }

    /// Sends when a (re)transmission is due; ends the probe at its deadline.
    pub fn tick(&mut self, now: Instant) -> Option<Result<Answer, ProbeError>> {
        if now >= self.start + self.timeout {
            return Some(Err(self.deadline().timeout_err(WAITING)));
        }
        if now >= self.next_send {
            if let Err(e) = self.sock.send(self.request.as_bytes()) {
                if e.kind() != WouldBlock {
                    return Some(Err(self.deadline().io_err("sending options", e)));
                }
            }
            self.next_send += self.interval;
            self.interval = (self.interval * 2).min(T2);
        }
        None
    }

    /// Reads every datagram waiting; the final answer to our request ends the probe.
    pub fn readable(&mut self, buf: &mut [u8]) -> Option<Result<Answer, ProbeError>> {
        loop {
            match self.sock.recv(buf) {
                Ok(n) => {
                    if let Some((code, reason)) = final_answer(&buf[..n], &self.ids) {
                        let rtt = self.start.elapsed();
                        return Some(Ok(Answer { rtt, code, reason }));
                    }
                }
                Err(e) if matches!(e.kind(), WouldBlock) => return None,
                Err(e) if matches!(e.kind(), Interrupted) => {}
                Err(e) => return Some(Err(self.deadline().io_err(WAITING, e))),
            }
        }
    }
}

/// The identifiers that make one probe's request unique and let us match its response.
pub(crate) struct Ids {
    branch: String,
    tag: String,
    call_id: String,
}

impl Ids {
    pub(crate) fn new(local: SocketAddr) -> Ids {
        Ids {
            branch: format!("z9hG4bK{:016x}", token()),
            tag: format!("{:08x}", token() as u32),
            call_id: format!("{:016x}@{}", token(), uri_host(local.ip())),
        }
    }
}

/// A value unique per call in this process and unlikely to repeat across processes or
/// restarts: wall clock, process id and a counter, mixed. Not a secret, so no RNG needed.
fn token() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = nanos ^ (u64::from(std::process::id()) << 40) ^ count.rotate_left(17);
    // splitmix64's finaliser, so consecutive tokens share no visible digits.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An IP as it appears in a SIP URI host: IPv6 in brackets.
fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

pub(crate) fn options_request(
    transport: &str,
    local: SocketAddr,
    remote: SocketAddr,
    ids: &Ids,
) -> String {
    let local_host = uri_host(local.ip());
    // `rport` asks the server to answer the address and port it saw, which is where a
    // connected UDP socket listens even behind NAT.
    format!(
        "OPTIONS sip:{remote} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch={};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pdns-ha@{local_host}>;tag={}\r\n\
         To: <sip:{remote}>\r\n\
         Call-ID: {}\r\n\
         CSeq: 1 OPTIONS\r\n\
         User-Agent: pdns-ha\r\n\
         Content-Length: 0\r\n\
         \r\n",
        ids.branch, ids.tag, ids.call_id
    )
}

/// The code and reason phrase if `message` is a final response (200–699) to our request.
/// Responses to other requests (a late answer to an earlier probe from the same port, a
/// confused peer) carry another Call-ID or CSeq and are ignored, as are requests and garbage.
pub(crate) fn final_answer(message: &[u8], ids: &Ids) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(message);
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status_line = lines.next().unwrap_or("");
    let rest = status_line.strip_prefix("SIP/2.0 ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    let reason = printable(rest.get(3..).unwrap_or("").as_bytes(), 60);
    let mut call_id_ok = false;
    let mut cseq_ok = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        // `i` is the compact form of Call-ID (RFC 3261 §7.3.3).
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            call_id_ok = value == ids.call_id;
        } else if name.eq_ignore_ascii_case("cseq") {
            let mut words = value.split_whitespace();
            cseq_ok = words.next() == Some("1") && words.next() == Some("OPTIONS");
        }
    }
    ((200..700).contains(&code) && call_id_ok && cseq_ok).then_some((code, reason))
}

/// Length of the first complete SIP message in a TCP stream buffer (header block plus
/// `Content-Length` body), counting leading keep-alive CRLFs, or `None` if incomplete.
pub(crate) fn sip_message_len(buf: &[u8]) -> Option<usize> {
    let skip = buf
        .iter()
        .take_while(|c| matches!(c, b'\r' | b'\n'))
        .count();
    if skip > 0 {
        return Some(skip);
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let body_len = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + body_len).then_some(head_end + body_len)
}

#[cfg(test)]
mod tests;
