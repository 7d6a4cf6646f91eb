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
//! Any final response (200 to 699) whose Call-ID and CSeq match means the SIP stack is alive
//! and answering, so 404, 483 or 501 count as up, as for Kamailio's dispatcher with
//! `ds_ping_reply_codes` open. 1xx responses only mean "wait". The round trip is measured
//! from the first send to the final response, so a retransmission shows up as latency.

use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::probe::{printable, Deadline, ProbeError, ProbeErrorKind};

/// RFC 3261 timers for retransmitting a non-INVITE request over UDP: first after T1, then
/// doubling up to T2. Only probes with a timeout above T1 ever retransmit.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// A TCP peer that streams more than this without our answer is not answering OPTIONS.
const MAX_TCP_READ: usize = 64 * 1024;

const WAITING: &str = "waiting for a final response";

/// Probes `addr` with SIP OPTIONS over UDP and returns the round-trip time.
///
/// The socket is connected, so an ICMP port-unreachable comes back as `connection refused`
/// at once and a closed port is "down" without waiting for the timeout. A connected socket
/// also only accepts datagrams from `addr`: a server that answers from another address or
/// port (allowed by RFC 3261 §18.2.2, rare in practice) looks dead to this probe.
pub fn probe_udp(addr: SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let peer = addr.to_string();
    let d = Deadline::new(&peer, timeout);
    let any: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).map_err(|e| d.io_err("binding", e))?;
    sock.connect(addr).map_err(|e| d.io_err("connecting", e))?;
    let local = sock.local_addr().map_err(|e| d.io_err("connecting", e))?;
    let ids = Ids::new(local);
    let request = options_request("UDP", local, addr, &ids);

    let start = Instant::now();
    let mut next_send = start;
    let mut interval = T1;
    let mut buf = vec![0u8; 65536];
    loop {
        if Instant::now() >= next_send {
            sock.send(request.as_bytes())
                .map_err(|e| d.io_err("sending options", e))?;
            next_send += interval;
            interval = (interval * 2).min(T2);
        }
        let left = d.remaining(WAITING)?;
        let wait = left.min(next_send.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            continue;
        }
        sock.set_read_timeout(Some(wait))
            .map_err(|e| d.io_err(WAITING, e))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                if is_final_answer(&buf[..n], &ids) {
                    return Ok(start.elapsed());
                }
            }
            // Retransmission time or the deadline; the loop head sorts out which.
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => {}
            Err(e) => return Err(d.io_err(WAITING, e)),
        }
    }
}

/// Probes `addr` with SIP OPTIONS over TCP. The round trip excludes the TCP handshake, so it
/// compares with [`probe_udp`]; use [`probe_tcp_connect`] for the handshake alone.
pub fn probe_tcp_sip(addr: SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let peer = addr.to_string();
    let d = Deadline::new(&peer, timeout);
    let mut stream = d.connect(&peer)?;
    let local = stream.local_addr().map_err(|e| d.io_err("connecting", e))?;
    let ids = Ids::new(local);
    let request = options_request("TCP", local, addr, &ids);

    let start = Instant::now();
    d.write_all(&mut stream, request.as_bytes(), "sending options")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    loop {
        // Each complete message is taken off the front; others (keep-alive CRLFs, stray
        // responses) are skipped.
        while let Some(len) = sip_message_len(&buf) {
            let message: Vec<u8> = buf.drain(..len).collect();
            if is_final_answer(&message, &ids) {
                return Ok(start.elapsed());
            }
        }
        let n = d.read(&mut stream, &mut chunk, WAITING)?;
        if n == 0 {
            return Err(d.err(ProbeErrorKind::Closed { during: WAITING }));
        }
        total += n;
        if total > MAX_TCP_READ {
            let shown = printable(&buf, 60);
            let detail = format!("{MAX_TCP_READ} bytes without our response, starting \"{shown}\"");
            return Err(d.err(ProbeErrorKind::Protocol(detail)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Times a TCP handshake with `addr`; about one network round trip. A refused connection is
/// an error, though the RST was also a round trip: the port is closed, so the target is down.
pub fn probe_tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let peer = addr.to_string();
    let d = Deadline::new(&peer, timeout);
    let start = Instant::now();
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| d.io_err("connecting", e))?;
    Ok(start.elapsed())
}

/// The identifiers that make one probe's request unique and let us match its response.
struct Ids {
    branch: String,
    tag: String,
    call_id: String,
}

impl Ids {
    fn new(local: SocketAddr) -> Ids {
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

fn options_request(transport: &str, local: SocketAddr, remote: SocketAddr, ids: &Ids) -> String {
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

/// True if `message` is a final response (200–699) to our request. Responses to other
/// requests (a late answer to an earlier probe from the same port, a confused peer) carry
/// another Call-ID or CSeq and are ignored, as are requests and garbage.
fn is_final_answer(message: &[u8], ids: &Ids) -> bool {
    let text = String::from_utf8_lossy(message);
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status_line = lines.next().unwrap_or("");
    let Some(rest) = status_line.strip_prefix("SIP/2.0 ") else {
        return false;
    };
    let code: u16 = match rest.get(..3).map(str::parse) {
        Some(Ok(code)) => code,
        _ => return false,
    };
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
    (200..700).contains(&code) && call_id_ok && cseq_ok
}

/// Length of the first complete SIP message in a TCP stream buffer (header block plus
/// `Content-Length` body), counting leading keep-alive CRLFs, or `None` if incomplete.
fn sip_message_len(buf: &[u8]) -> Option<usize> {
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
