//! TCP and TLS probes as state machines on non-blocking sockets, so that one thread keeps
//! thousands in flight beside the UDP ones (`monitor::pool`): a round costs about one
//! timeout however many peers are silent, and needs no thread per target (issue 19,
//! item 8). Three kinds, by what is asked of the connection:
//!
//! - a bare connect (`ha_targets.probe = 'tcp'`): the handshake's time;
//! - SIP OPTIONS over TCP (`sip-tcp`, `_sip._tcp` records);
//! - a TLS handshake checked as a SIP client checks it ([`super::tls`]), then OPTIONS over
//!   it (`_sips._tcp` records).
//!
//! Every step shares one deadline, so a peer that never finishes the handshake, drips
//! bytes, sends a megabyte of certificates or garbage after the handshake costs at most
//! the timeout. The round trip of an OPTIONS probe is taken from the request's sending to
//! the final response, as over UDP, so the handshakes are not counted as latency.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use super::sip_options::{
    final_answer, options_request, sip_message_len, Answer, Ids, MAX_TCP_READ, WAITING,
};
use super::tls::{self, CertSeen};
use crate::net::probe::{printable, Deadline, ProbeError, ProbeErrorKind};

/// What to do once connected.
pub struct StreamSpec {
    pub addr: SocketAddr,
    /// Send OPTIONS (else the connect alone is the probe).
    pub sip: bool,
    pub tls: Option<tls::TlsSpec>,
    /// The names the certificate may carry, for messages.
    pub names: Vec<String>,
}

/// A finished stream probe.
#[derive(Debug)]
pub enum StreamOk {
    Sip(Answer),
    Connected(Duration),
}

/// The result, and for TLS what the peer's chain said (also when it was refused).
#[derive(Debug)]
pub struct StreamDone {
    pub result: Result<StreamOk, ProbeError>,
    pub cert: Option<CertSeen>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Connecting,
    Handshake,
    Sending,
    Waiting,
}

pub struct StreamProbe {
    sock: TcpStream,
    peer: String,
    phase: Phase,
    tls: Option<Box<ClientConnection>>,
    seen: Option<Arc<Mutex<CertSeen>>>,
    names: Vec<String>,
    sip: bool,
    ids: Option<Ids>,
    request: Vec<u8>,
    written: usize,
    buf: Vec<u8>,
    total: usize,
    start: Instant,
    sent_at: Option<Instant>,
    timeout: Duration,
}

/// A non-blocking TCP socket with its connect under way (std has no non-blocking connect).
fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let (domain, storage, len) = sockaddr(addr);
    // SAFETY: plain socket(2); the fd is owned by the TcpStream made below or closed here.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let sock = unsafe { TcpStream::from_raw_fd(fd) };
    // SAFETY: `storage` holds a sockaddr of `len` bytes for this family.
    let rc = unsafe { libc::connect(fd, (&raw const storage).cast(), len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(sock)
}

fn sockaddr(addr: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            (libc::AF_INET, storage, len)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            (libc::AF_INET6, storage, len)
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl StreamProbe {
    /// Opens the socket and starts connecting. Fails at once when no socket can be had.
    pub fn start(spec: &StreamSpec, timeout: Duration) -> Result<StreamProbe, ProbeError> {
        let peer = spec.addr.to_string();
        let d = Deadline::new(&peer, timeout);
        let sock = connect_nonblocking(spec.addr).map_err(|e| d.io_err("connecting", e))?;
        let (tls, seen) = match &spec.tls {
            None => (None, None),
            Some(t) => {
                let (config, name) = (Arc::clone(&t.config), t.server_name.clone());
                let conn = ClientConnection::new(config, name).map_err(|e| {
                    d.err(ProbeErrorKind::Tls {
                        reason: "other",
                        text: format!("tls: {e}"),
                    })
                })?;
                (Some(Box::new(conn)), Some(Arc::clone(&t.seen)))
            }
        };
        Ok(StreamProbe {
            sock,
            peer,
            phase: Phase::Connecting,
            tls,
            seen,
            names: spec.names.clone(),
            sip: spec.sip,
            ids: None,
            request: Vec::new(),
            written: 0,
            buf: Vec::new(),
            total: 0,
            start: Instant::now(),
            sent_at: None,
            timeout,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The poll events this probe waits for now.
    pub fn events(&self) -> i16 {
        let tls_write = self.tls.as_ref().is_some_and(|c| c.wants_write());
        match self.phase {
            Phase::Connecting => libc::POLLOUT,
            Phase::Sending if self.tls.is_none() => libc::POLLOUT,
            _ if tls_write => libc::POLLOUT | libc::POLLIN,
            _ => libc::POLLIN,
        }
    }

    pub fn wake_at(&self) -> Instant {
        self.start + self.timeout
    }

    fn deadline(&self) -> Deadline<'_> {
        Deadline::new(&self.peer, self.timeout)
    }

    fn cert(&self) -> Option<CertSeen> {
        let s = self.seen.as_ref()?;
        let seen = s.lock().map(|g| g.clone()).unwrap_or_default();
        Some(seen)
    }

    fn finish(&self, result: Result<StreamOk, ProbeError>) -> Option<StreamDone> {
        Some(StreamDone {
            result,
            cert: self.cert(),
        })
    }

    /// Ends the probe at its deadline.
    pub fn tick(&mut self, now: Instant) -> Option<StreamDone> {
        if now < self.start + self.timeout {
            return None;
        }
        let during = match self.phase {
            Phase::Connecting => "connecting",
            Phase::Handshake => "tls handshake",
            Phase::Sending => "sending options",
            Phase::Waiting => WAITING,
        };
        self.finish(Err(self.deadline().timeout_err(during)))
    }

    /// Moves on as far as the socket lets it; `Some` once the probe is over.
    pub fn ready(&mut self, revents: i16) -> Option<StreamDone> {
        match self.step(revents) {
            Ok(None) => None,
            Ok(Some(ok)) => self.finish(Ok(ok)),
            Err(e) => self.finish(Err(e)),
        }
    }

    fn step(&mut self, revents: i16) -> Result<Option<StreamOk>, ProbeError> {
        loop {
            match self.phase {
                Phase::Connecting => {
                    if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
                        return Ok(None);
                    }
                    if let Some(e) = self
                        .sock
                        .take_error()
                        .map_err(|e| self.deadline().io_err("connecting", e))?
                    {
                        return Err(self.deadline().io_err("connecting", e));
                    }
                    let _ = self.sock.set_nodelay(true);
                    if !self.sip && self.tls.is_none() {
                        return Ok(Some(StreamOk::Connected(self.start.elapsed())));
                    }
                    let d = self.deadline();
                    let local = self
                        .sock
                        .local_addr()
                        .map_err(|e| d.io_err("connecting", e))?;
                    let remote = self
                        .sock
                        .peer_addr()
                        .map_err(|e| d.io_err("connecting", e))?;
                    let ids = Ids::new(local);
                    let transport = if self.tls.is_some() { "TLS" } else { "TCP" };
                    self.request = options_request(transport, local, remote, &ids).into_bytes();
                    self.ids = Some(ids);
                    self.phase = match self.tls {
                        Some(_) => Phase::Handshake,
                        None => Phase::Sending,
                    };
                }
                Phase::Handshake => {
                    if !self.pump_tls("tls handshake")? {
                        return Ok(None);
                    }
                    let conn = self.tls.as_mut().expect("tls phase has a connection");
                    if conn.is_handshaking() {
                        continue;
                    }
                    if !self.sip {
                        return Ok(Some(StreamOk::Connected(self.start.elapsed())));
                    }
                    conn.writer().write_all(&self.request).map_err(|e| {
                        Deadline::new(&self.peer, self.timeout).io_err("sending", e)
                    })?;
                    self.sent_at = Some(Instant::now());
                    self.phase = Phase::Waiting;
                }
                Phase::Sending => {
                    // Plain TCP only: TLS hands the request to rustls at the handshake's end.
                    while self.written < self.request.len() {
                        match self.sock.write(&self.request[self.written..]) {
                            Ok(0) => {
                                let during = "sending options";
                                return Err(self.deadline().err(ProbeErrorKind::Closed { during }));
                            }
                            Ok(n) => self.written += n,
                            Err(e) if would_block(&e) => return Ok(None),
                            Err(e) => return Err(self.deadline().io_err("sending options", e)),
                        }
                    }
                    self.sent_at = Some(Instant::now());
                    self.phase = Phase::Waiting;
                }
                Phase::Waiting => return self.read_answer(),
            }
        }
    }

    /// Moves TLS records both ways. `Ok(false)`: nothing more until the socket is ready.
    fn pump_tls(&mut self, during: &'static str) -> Result<bool, ProbeError> {
        let d = Deadline::new(&self.peer, self.timeout);
        let conn = self.tls.as_mut().expect("tls phase has a connection");
        while conn.wants_write() {
            match conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(d.io_err(during, e)),
            }
        }
        if !conn.wants_read() {
            return Ok(true);
        }
        match conn.read_tls(&mut self.sock) {
            Ok(0) => Err(d.err(ProbeErrorKind::Closed { during })),
            Ok(n) => {
                self.total += n;
                if let Err(e) = conn.process_new_packets() {
                    // Tell the peer why, as a client would; it may be gone already.
                    let _ = conn.write_tls(&mut self.sock);
                    let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
                    let r = tls::refusal(&e, &names);
                    return Err(d.err(ProbeErrorKind::Tls {
                        reason: r.reason,
                        text: r.text,
                    }));
                }
                Ok(true)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(d.io_err(during, e)),
        }
    }

    fn read_answer(&mut self) -> Result<Option<StreamOk>, ProbeError> {
        let mut chunk = [0u8; 4096];
        loop {
            // Complete messages first: keep-alive CRLFs and stray responses are skipped.
            let ids = self.ids.as_ref().expect("ids are set before sending");
            while let Some(len) = sip_message_len(&self.buf) {
                let message: Vec<u8> = self.buf.drain(..len).collect();
                if let Some((code, reason)) = final_answer(&message, ids) {
                    let rtt = self.sent_at.map_or(Duration::ZERO, |t| t.elapsed());
                    return Ok(Some(StreamOk::Sip(Answer { rtt, code, reason })));
                }
            }
            if self.total > MAX_TCP_READ {
                let shown = printable(&self.buf, 60);
                let detail =
                    format!("{MAX_TCP_READ} bytes without our response, starting \"{shown}\"");
                return Err(self.deadline().err(ProbeErrorKind::Protocol(detail)));
            }
            let got = match self.tls.is_some() {
                false => match self.sock.read(&mut chunk) {
                    Ok(n) => {
                        self.total += n;
                        Ok(n)
                    }
                    Err(e) => Err(e),
                },
                true => {
                    if !self.pump_tls(WAITING)? {
                        return Ok(None);
                    }
                    let conn = self.tls.as_mut().expect("tls phase has a connection");
                    match conn.reader().read(&mut chunk) {
                        // Nothing decrypted yet: more records to read.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => other,
                    }
                }
            };
            match got {
                Ok(0) => {
                    let during = WAITING;
                    return Err(self.deadline().err(ProbeErrorKind::Closed { during }));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) => return Err(self.deadline().io_err(WAITING, e)),
            }
        }
    }
}

/// Drives one stream probe to its end on this thread.
pub fn probe_one(spec: StreamSpec, timeout: Duration) -> StreamDone {
    let mut p = match StreamProbe::start(&spec, timeout) {
        Ok(p) => p,
        Err(e) => {
            return StreamDone {
                result: Err(e),
                cert: None,
            }
        }
    };
    loop {
        let wait = p.wake_at().saturating_duration_since(Instant::now());
        let mut fds = [libc::pollfd {
            fd: p.fd(),
            events: p.events(),
            revents: 0,
        }];
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd for the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if ready > 0 {
            if let Some(done) = p.ready(fds[0].revents) {
                return done;
            }
        }
        if let Some(done) = p.tick(Instant::now()) {
            return done;
        }
    }
}

/// Probes `addr` with SIP OPTIONS over TCP. The round trip excludes the TCP handshake, so it
/// compares with [`super::sip_options::probe_udp`]; use [`probe_tcp_connect`] for the handshake alone. The same
/// non-blocking state machine the monitor's rounds run by the thousand
/// (this module), driven alone.
pub fn probe_tcp_sip(addr: SocketAddr, timeout: Duration) -> Result<Answer, ProbeError> {
    let spec = StreamSpec {
        addr,
        sip: true,
        tls: None,
        names: Vec::new(),
    };
    match probe_one(spec, timeout).result? {
        StreamOk::Sip(a) => Ok(a),
        StreamOk::Connected(_) => unreachable!("a sip probe ends with an answer"),
    }
}

/// Times a TCP handshake with `addr`; about one network round trip. A refused connection is
/// an error, though the RST was also a round trip: the port is closed, so the target is down.
pub fn probe_tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let spec = StreamSpec {
        addr,
        sip: false,
        tls: None,
        names: Vec::new(),
    };
    match probe_one(spec, timeout).result? {
        StreamOk::Connected(rtt) => Ok(rtt),
        StreamOk::Sip(_) => unreachable!("a connect probe sends nothing"),
    }
}

#[cfg(test)]
mod tests;
