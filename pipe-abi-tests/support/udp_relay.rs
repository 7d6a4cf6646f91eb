//! A UDP relay that delays every datagram, both ways: the distance between a test phone and a
//! SIP server, changeable while the test runs (tc netem is not available here).
//!
//! ```text
//!  sipp 127.1.0.11:p ──▶ relay 127.0.0.1:r ──(+delay)──▶ from 127.1.0.11:q ──▶ Kamailio
//!                   ◀──                    ◀──(+delay)──                   ◀──
//! ```
//!
//! Each phone gets its own upstream socket, bound to the phone's own address on another port,
//! so the server sees the phone's address as a NAT would show it (the server records
//! `127.1.0.11:q` as the contact's received address) and its keepalives come back through the
//! relay. A keepalive's round trip is then twice the one-way delay plus the stacks' own time.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Phones per relay; more are ignored (the tests use a handful).
const MAX_PHONES: usize = 64;
/// Datagrams in flight per relay; more are dropped, as a full link would.
const MAX_QUEUED: usize = 10_000;

pub struct UdpRelay {
    /// Where phones send: the server as they see it.
    pub addr: SocketAddr,
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpRelay {
    /// A relay on 127.0.0.1 to `server`, `one_way` each way.
    pub fn start(server: SocketAddr, one_way: Duration) -> UdpRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
        front.set_nonblocking(true).unwrap();
        let addr = front.local_addr().unwrap();
        let delay_us = Arc::new(AtomicU64::new(one_way.as_micros() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (delay_us.clone(), stop.clone());
        let thread = thread::spawn(move || run(front, server, &d, &s));
        UdpRelay {
            addr,
            delay_us,
            stop,
            thread: Some(thread),
        }
    }

    /// Applies to datagrams that arrive from now on.
    pub fn set(&self, one_way: Duration) {
        self.delay_us
            .store(one_way.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a queued datagram goes: up to the server through phone `i`'s socket, or down to a
/// phone through the front socket.
enum To {
    Server(usize),
    Phone(SocketAddr),
}

fn run(front: UdpSocket, server: SocketAddr, delay_us: &AtomicU64, stop: &AtomicBool) {
    let mut phones: Vec<(SocketAddr, UdpSocket)> = Vec::new();
    let mut queue: VecDeque<(Instant, To, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, to, data) = queue.pop_front().expect("front");
            // A lost datagram is what UDP does; SIP retransmits.
            let _ = match to {
                To::Server(i) => phones[i].1.send(&data),
                To::Phone(addr) => front.send_to(&data, addr),
            };
        }
        let wait = queue
            .front()
            .map_or(Duration::from_millis(20), |(due, _, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(20));
        let mut fds: Vec<libc::pollfd> = std::iter::once(&front)
            .chain(phones.iter().map(|(_, s)| s))
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of pollfd of the length given.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) } <= 0 {
            continue;
        }
        let delay = Duration::from_micros(delay_us.load(Ordering::Relaxed));
        let mut push = |to: To, data: &[u8]| {
            if queue.len() < MAX_QUEUED {
                // Never before the datagram ahead of it: no reordering when the delay drops.
                let at = Instant::now() + delay;
                let due = queue.back().map_or(at, |(d, _, _)| at.max(*d));
                queue.push_back((due, to, data.to_vec()));
            }
        };
        if fds[0].revents != 0 {
            loop {
                let (n, from) = match front.recv_from(&mut buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let i = match phones.iter().position(|(a, _)| *a == from) {
                    Some(i) => i,
                    None if phones.len() < MAX_PHONES => {
                        let Ok(up) = UdpSocket::bind((from.ip(), 0)) else {
                            continue;
                        };
                        if up.connect(server).is_err() || up.set_nonblocking(true).is_err() {
                            continue;
                        }
                        phones.push((from, up));
                        phones.len() - 1
                    }
                    None => continue,
                };
                push(To::Server(i), &buf[..n]);
            }
        }
        for (i, fd) in fds.iter().enumerate().skip(1) {
            if fd.revents == 0 {
                continue;
            }
            let phone = phones[i - 1].0;
            // Connected: only the server's datagrams arrive here. ICMP errors are ignored.
            while let Ok(n) = phones[i - 1].1.recv(&mut buf) {
                push(To::Phone(phone), &buf[..n]);
            }
        }
    }
}
