//! The kernel's round-trip time of established TCP connections on the SIP ports, read through
//! `NETLINK_SOCK_DIAG` (what `ss -ti` shows as `rtt:<srtt>/<rttvar>`), without packet capture.
//!
//! One dump request per address family, answered by a stream of multipart messages:
//!
//! ```text
//! → nlmsghdr{type SOCK_DIAG_BY_FAMILY, flags REQUEST|DUMP, seq}
//!   inet_diag_req_v2{family AF_INET|AF_INET6, protocol TCP, ext 1<<(INET_DIAG_INFO-1),
//!                    states 1<<TCP_ESTABLISHED, id: all zero (a dump ignores it)}
//! ← nlmsghdr{type SOCK_DIAG_BY_FAMILY, flags MULTI} inet_diag_msg{id: sport dport src dst, …}
//!     rtattr{INET_DIAG_INFO} struct tcp_info{…, tcpi_rtt @68, tcpi_rttvar @72, …}  (µs)
//!   … as many per datagram as fit, as many datagrams as it takes …
//! ← nlmsghdr{type NLMSG_DONE}            (or NLMSG_ERROR with a negative errno)
//! ```
//!
//! Privilege: none. The kernel answers a dump for every socket in the caller's network
//! namespace, other users' included, and attaches `tcp_info` to each: checked on Linux 6.18 by
//! running the test binary as `nobody` (`setpriv --reuid nobody`), which read the RTT of a
//! root-owned server's connections. Only the socket mark and cgroup attributes need
//! `CAP_NET_ADMIN`, and they are not asked for. What does matter is the namespace: `observe`
//! must run in the SIP server's network namespace (on the host for a host-network container).
//!
//! `tcpi_rtt` is the smoothed RTT (RFC 6298 SRTT) of the server's side: the time from sending
//! a segment to the ACK coming back, so it measures the network path to the caller's kernel,
//! not the caller's SIP stack. It moves only when data is acknowledged, so an idle connection
//! keeps its last value; `since_ack_ms` says how old it is.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// One established connection whose local port was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRtt {
    /// The caller: the connection's remote address, IPv4-mapped IPv6 addresses as IPv4.
    pub remote: IpAddr,
    pub remote_port: u16,
    pub local_port: u16,
    /// Smoothed round-trip time, microseconds; 0 while the kernel has no sample yet.
    pub rtt_us: u32,
    /// Its mean deviation, microseconds.
    pub rttvar_us: u32,
    /// Milliseconds since the last ACK arrived: how old `rtt_us` may be.
    pub since_ack_ms: u32,
}

#[derive(Debug)]
pub enum DiagError {
    /// A socket call failed; `during` names it.
    Io {
        during: &'static str,
        source: io::Error,
    },
    /// The kernel answered the request with `NLMSG_ERROR`.
    Kernel(i32),
    /// A datagram longer than the receive buffer: messages would be lost.
    Truncated(usize),
    /// Bytes that are not what the protocol says.
    Malformed(&'static str),
    /// More connections than `MAX_CONNECTIONS`: a dump that never ends is refused.
    TooMany,
}

impl fmt::Display for DiagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiagError::Io { during, source } => write!(f, "sock_diag: {during}: {source}"),
            DiagError::Kernel(errno) => write!(
                f,
                "sock_diag: kernel refused the dump: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            DiagError::Truncated(len) => {
                write!(f, "sock_diag: datagram of {len} bytes exceeds the buffer")
            }
            DiagError::Malformed(what) => write!(f, "sock_diag: malformed reply: {what}"),
            DiagError::TooMany => {
                write!(
                    f,
                    "sock_diag: more than {MAX_CONNECTIONS} connections listed"
                )
            }
        }
    }
}

impl std::error::Error for DiagError {}

// From <linux/netlink.h>, <linux/sock_diag.h>, <linux/inet_diag.h>; not all are in `libc`.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const TCP_ESTABLISHED: u32 = 1;
/// `inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, then five u32.
const DIAG_MSG_LEN: usize = 72;
const REQ_LEN: usize = 56;
/// `tcpi_rtt`, `tcpi_rttvar` and `tcpi_last_ack_recv` in `struct tcp_info` (stable ABI).
const TCPI_LAST_ACK_RECV: usize = 56;
const TCPI_RTT: usize = 68;
const TCPI_RTTVAR: usize = 72;

/// The kernel fills dump datagrams up to about 32 KiB (`max(16 KiB, page)` in 6.x); twice that
/// leaves room, and `MSG_TRUNC` tells if it ever is not enough.
const RECV_BUF: usize = 64 * 1024;
/// A bound on one dump, far above any SIP server's connection count.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// How long one read may wait for the kernel, which answers from memory at once.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Established TCP connections, IPv4 and IPv6, whose local port is one of `ports`.
pub fn established(ports: &[u16]) -> Result<Vec<TcpRtt>, DiagError> {
    let sock = open()?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::new();
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        send(&sock, &request(family, seq))?;
        loop {
            let n = receive(&sock, &mut buf)?;
            match parse(&buf[..n], seq, ports, &mut out) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => break,
                // A kernel without IPv6 has no AF_INET6 handler: no IPv6 connections, not
                // an error (the IPv4 ones are already read).
                Err(DiagError::Kernel(libc::ENOENT | libc::EAFNOSUPPORT))
                    if family == libc::AF_INET6 as u8 =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
            if out.len() > MAX_CONNECTIONS {
                return Err(DiagError::TooMany);
            }
        }
    }
    Ok(out)
}

fn io_err(during: &'static str) -> impl FnOnce(rustix::io::Errno) -> DiagError {
    move |e| DiagError::Io {
        during,
        source: e.into(),
    }
}

fn open() -> Result<OwnedFd, DiagError> {
    use rustix::net::{netlink, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};
    let sock = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )
    .map_err(io_err("opening a netlink socket"))?;
    sockopt::set_socket_timeout(&sock, sockopt::Timeout::Recv, Some(RECV_TIMEOUT))
        .map_err(io_err("setting the receive timeout"))?;
    Ok(sock)
}

/// The dump request: every established TCP socket of `family`, with `tcp_info` attached.
fn request(family: u8, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut m = [0u8; NLMSG_HDRLEN + REQ_LEN];
    m[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel. Then inet_diag_req_v2; the socket id stays zero.
    m[16] = family;
    m[17] = libc::IPPROTO_TCP as u8;
    m[18] = 1 << (INET_DIAG_INFO - 1);
    m[20..24].copy_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
    m
}

fn send(sock: &OwnedFd, msg: &[u8]) -> Result<(), DiagError> {
    use rustix::net::{netlink::SocketAddrNetlink, sendto, SendFlags};
    // Port id 0 addresses the kernel.
    let kernel = SocketAddrNetlink::new(0, 0);
    sendto(sock, msg, SendFlags::empty(), &kernel).map_err(io_err("sending the dump request"))?;
    Ok(())
}

/// One datagram. `MSG_TRUNC` makes the kernel return the datagram's real length, so a
/// datagram that did not fit is an error instead of silently lost connections.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> Result<usize, DiagError> {
    use rustix::net::{recv, RecvFlags};
    loop {
        match recv(sock, &mut *buf, RecvFlags::TRUNC) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err("reading the dump")(e)),
            Ok((_, n)) if n > buf.len() => return Err(DiagError::Truncated(n)),
            Ok((_, n)) => return Ok(n),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Netlink aligns every message and attribute to 4 bytes.
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walks one datagram of the dump answering request `seq`, appending the connections on
/// `ports`. Messages of other sequence numbers (none are expected) are skipped.
fn parse(
    datagram: &[u8],
    seq: u32,
    ports: &[u16],
    out: &mut Vec<TcpRtt>,
) -> Result<Progress, DiagError> {
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDRLEN {
            return Err(DiagError::Malformed("short netlink header"));
        }
        let len = u32_ne(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DiagError::Malformed("netlink length out of bounds"));
        }
        let (kind, msg_seq) = (u16_ne(rest, 4), u32_ne(rest, 8));
        let body = &rest[NLMSG_HDRLEN..len];
        rest = &rest[align4(len).min(rest.len())..];
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Progress::Done),
            NLMSG_ERROR => {
                // struct nlmsgerr: a negative errno, then the offending request's header.
                if body.len() < 4 {
                    return Err(DiagError::Malformed("short error message"));
                }
                let errno = -(u32_ne(body, 0) as i32);
                return match errno {
                    0 => Ok(Progress::Done), // an ACK; not asked for, but harmless
                    e => Err(DiagError::Kernel(e)),
                };
            }
            NLMSG_NOOP => {}
            SOCK_DIAG_BY_FAMILY => {
                if let Some(c) = connection(body, ports)? {
                    out.push(c);
                }
            }
            _ => {}
        }
    }
    Ok(Progress::More)
}

/// One `inet_diag_msg` and its attributes; `None` when the local port was not asked for.
fn connection(body: &[u8], ports: &[u16]) -> Result<Option<TcpRtt>, DiagError> {
    if body.len() < DIAG_MSG_LEN {
        return Err(DiagError::Malformed("short inet_diag_msg"));
    }
    let family = body[0];
    // The socket id: ports in network order, addresses as four 32-bit words.
    let local_port = u16::from_be_bytes([body[4], body[5]]);
    let remote_port = u16::from_be_bytes([body[6], body[7]]);
    if !ports.contains(&local_port) {
        return Ok(None);
    }
    let dst: [u8; 16] = body[24..40].try_into().expect("16 bytes");
    let remote = match family as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])),
        libc::AF_INET6 => {
            let v6 = Ipv6Addr::from(dst);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return Err(DiagError::Malformed("address family")),
    };
    let mut attrs = &body[DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let alen = u16_ne(attrs, 0) as usize;
        let atype = u16_ne(attrs, 2);
        if alen < 4 || alen > attrs.len() {
            return Err(DiagError::Malformed("attribute length out of bounds"));
        }
        let value = &attrs[4..alen];
        if atype == INET_DIAG_INFO {
            // Older kernels send a shorter tcp_info; these fields have been there since 2.6.
            if value.len() < TCPI_RTTVAR + 4 {
                return Err(DiagError::Malformed("short tcp_info"));
            }
            return Ok(Some(TcpRtt {
                remote,
                remote_port,
                local_port,
                rtt_us: u32_ne(value, TCPI_RTT),
                rttvar_us: u32_ne(value, TCPI_RTTVAR),
                since_ack_ms: u32_ne(value, TCPI_LAST_ACK_RECV),
            }));
        }
        attrs = &attrs[align4(alen).min(attrs.len())..];
    }
    // Asked for, but no tcp_info: nothing to measure (the kernel omits it only on failure).
    Ok(None)
}

#[cfg(test)]
mod tests;
