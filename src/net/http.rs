//! The daemons' HTTP server for `--metrics-listen`: `GET /metrics` answered to many
//! scrapers at once, on one thread that multiplexes every connection (mio), with requests
//! parsed by httparse.
//!
//! What it guards against, since a scraper's network is not always a trusted one: a client
//! that sends a byte now and then, or thousands that connect and send nothing, must not
//! keep Prometheus from its scrape. So every connection has one deadline for the whole
//! exchange ([`Limits::deadline`], not a timeout per read that a drip resets), and at most
//! [`Limits::max_connections`] are open: a new connection beyond that closes the oldest,
//! so a flood of idle connections cannot lock a fresh scraper out (the flood itself is cut
//! by its own deadlines). Nothing blocks: a slow reader of a large answer holds memory for
//! its answer until its deadline, not the thread.
//!
//! Why not tiny_http (the well-kept blocking server): it runs one thread per connection
//! with no limit and no deadline, which is the attack above; hyper needs an async runtime.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// How much of the server one client may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most; one more closes the oldest.
    pub max_connections: usize,
    /// From accept to the last byte of the answer.
    pub deadline: Duration,
    /// A request head longer than this is not a scraper's (answered 431).
    pub max_head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            deadline: Duration::from_secs(2),
            max_head: 8192,
        }
    }
}

/// One request, as the handler sees it.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub accept: Option<&'a str>,
}

/// One answer. The connection closes after it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// The bytes on the wire; `HEAD` gets the head alone.
    fn encode(&self, with_body: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if with_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

const LISTENER: Token = Token(usize::MAX);

/// Binds `addr` now, so a bad address stops the command at start with the address in the
/// message, and serves on a thread of its own: `handler` answers each request.
pub fn serve<H>(addr: SocketAddr, limits: Limits, handler: H) -> io::Result<SocketAddr>
where
    H: Fn(&Request<'_>) -> Response + Send + 'static,
{
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    info!("serving OpenMetrics on http://{bound}/metrics");
    let poll = Poll::new()?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            if let Err(e) = Server::new(poll, listener, limits).run(&handler) {
                warn!("metrics listener stopped: {e}");
            }
        })?;
    Ok(bound)
}

enum Phase {
    /// Reading the request head.
    Head(Vec<u8>),
    /// Writing the answer from this offset.
    Answer(Vec<u8>, usize),
    /// Answer sent and our side shut: reading what the client still sends until it closes,
    /// since closing with unread input would reset the connection and could lose the answer.
    Closing,
}

struct Conn {
    stream: TcpStream,
    until: Instant,
    phase: Phase,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    limits: Limits,
    conns: HashMap<Token, Conn>,
    next: usize,
}

impl Server {
    fn new(poll: Poll, listener: TcpListener, limits: Limits) -> Self {
        Self {
            poll,
            listener,
            limits,
            conns: HashMap::new(),
            next: 0,
        }
    }

    fn run<H: Fn(&Request<'_>) -> Response>(mut self, handler: &H) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(256);
        loop {
            let wait = self
                .conns
                .values()
                .map(|c| c.until.saturating_duration_since(Instant::now()))
                .min();
            if let Err(e) = self.poll.poll(&mut events, wait) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    token => self.step(token, handler),
                }
            }
            let now = Instant::now();
            let expired: Vec<Token> = self
                .conns
                .iter()
                .filter(|(_, c)| c.until <= now)
                .map(|(t, _)| *t)
                .collect();
            for token in expired {
                debug!("metrics: a client ran out of time");
                self.close(token);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.limits.max_connections {
                        let oldest = self.conns.iter().min_by_key(|(_, c)| c.until);
                        if let Some(token) = oldest.map(|(t, _)| *t) {
                            self.close(token);
                        }
                    }
                    // Tokens count up and wrap below LISTENER; a connection lives seconds.
                    let token = Token(self.next % (usize::MAX - 1));
                    self.next = self.next.wrapping_add(1);
                    let interest = Interest::READABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, interest)
                        .is_ok()
                    {
                        let conn = Conn {
                            stream,
                            until: Instant::now() + self.limits.deadline,
                            phase: Phase::Head(Vec::with_capacity(512)),
                        };
                        self.conns.insert(token, conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of file descriptors and the like: the connections we hold will
                // time out and free them; try again on the next readiness.
                Err(e) => {
                    warn!("metrics listener: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Moves one connection as far as its socket allows now.
    fn step<H: Fn(&Request<'_>) -> Response>(&mut self, token: Token, handler: &H) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let max_head = self.limits.max_head;
        let done = loop {
            match advance(conn, max_head, handler) {
                Ok(Progress::Again) => continue,
                Ok(Progress::Wait) => break false,
                Ok(Progress::Done) => break true,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) {
                        debug!("metrics: {e}");
                    }
                    break true;
                }
            }
        };
        if done {
            self.close(token);
        } else if matches!(conn.phase, Phase::Answer(..)) {
            let interest = Interest::WRITABLE;
            let _ = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, interest);
        } else if matches!(conn.phase, Phase::Closing) {
            let _ = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, Interest::READABLE);
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

enum Progress {
    /// The phase changed: try the next one at once.
    Again,
    /// The socket has nothing more now.
    Wait,
    /// Finished (or given up): close.
    Done,
}

fn advance<H: Fn(&Request<'_>) -> Response>(
    conn: &mut Conn,
    max_head: usize,
    handler: &H,
) -> io::Result<Progress> {
    let mut buf = [0u8; 4096];
    match &mut conn.phase {
        Phase::Head(head) => {
            let n = match conn.stream.read(&mut buf) {
                Ok(0) => return Ok(Progress::Done),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Progress::Again),
                Err(e) => return Err(e),
            };
            head.extend_from_slice(&buf[..n]);
            let answer = match parse(head, max_head) {
                Parsed::Partial => return Ok(Progress::Again),
                Parsed::TooLong => Response::new(431, "text/plain", "").encode(true),
                Parsed::Bad => Response::new(400, "text/plain", "").encode(true),
                Parsed::Request {
                    method,
                    path,
                    accept,
                } => {
                    let req = Request {
                        method: &method,
                        path: &path,
                        accept: accept.as_deref(),
                    };
                    answer(&req, handler)
                }
            };
            conn.phase = Phase::Answer(answer, 0);
            Ok(Progress::Again)
        }
        Phase::Answer(bytes, at) => {
            while *at < bytes.len() {
                match conn.stream.write(&bytes[*at..]) {
                    Ok(0) => return Ok(Progress::Done),
                    Ok(n) => *at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let _ = conn.stream.flush();
            conn.stream.shutdown(Shutdown::Write)?;
            conn.phase = Phase::Closing;
            Ok(Progress::Again)
        }
        Phase::Closing => loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => return Ok(Progress::Done),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(Progress::Done),
            }
        },
    }
}

/// The handler's answer, or the server's own for what only `/metrics` readers may ask.
fn answer<H: Fn(&Request<'_>) -> Response>(req: &Request<'_>, handler: &H) -> Vec<u8> {
    let with_body = req.method != "HEAD";
    match req.method {
        "GET" | "HEAD" => handler(req).encode(with_body),
        _ => Response::new(405, "text/plain", "").encode(true),
    }
}

enum Parsed {
    Partial,
    TooLong,
    Bad,
    Request {
        method: String,
        path: String,
        accept: Option<String>,
    },
}

fn parse(head: &[u8], max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n > max_head => Parsed::TooLong,
        Ok(httparse::Status::Complete(_)) => {
            let accept = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("accept"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            let target = req.path.unwrap_or("");
            Parsed::Request {
                method: req.method.unwrap_or("").to_owned(),
                path: target.split('?').next().unwrap_or("").to_owned(),
                accept,
            }
        }
        Ok(httparse::Status::Partial) if head.len() > max_head => Parsed::TooLong,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooLong,
        Err(_) => Parsed::Bad,
    }
}

#[cfg(test)]
mod tests;
