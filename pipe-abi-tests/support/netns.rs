//! Network namespaces joined by TUN delay lines, so that TCP connections from different client
//! networks get real, different kernel round-trip times (tc netem is not available here).
//!
//! ```text
//!   ns "a" (198.51.100.0/24)            ns "server" (192.0.2.1 on lo)
//!   tun "pdh0" ─read─▶ [queue, +delay] ─write─▶ tun "pdha" ──▶ server socket
//!              ◀─write─ [queue, +delay] ◀─read─  (route 198.51.100.0/24 dev pdha)
//! ```
//!
//! A TUN device hands every IP packet routed to it to the process that holds it, and a packet
//! written to it is received by its namespace as if it came off a wire. Copying packets
//! between a TUN in a client namespace and one in the server namespace, each after a delay,
//! is a wire with that latency: the server's kernel sees its SYN-ACK and data acknowledged
//! one round trip later, so `tcpi_rtt` is the delay line's round trip (a userspace TCP relay
//! would not do: its own kernel acknowledges at once). Addresses are unchanged, so no
//! checksums are touched.
//!
//! Needs CAP_SYS_ADMIN (unshare) and CAP_NET_ADMIN (TUN, addresses), i.e. root, and `ip` from
//! iproute2. A namespace lives as long as its `Netns` (the file descriptor keeps it), and a
//! TUN device as long as its delay line; nothing is left behind in the host namespace.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A network namespace created by the test.
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// A new namespace with its loopback up. Errors (say, no privilege) are returned as text
    /// so that the caller can skip or fail as CI requires.
    pub fn new() -> Result<Netns, String> {
        // unshare(CLONE_NEWNET) moves only the calling thread, so do it on a throwaway one.
        let fd = thread::spawn(|| -> Result<OwnedFd, String> {
            // SAFETY: unshare(2) with a constant flag; affects only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNET): {}",
                    io::Error::last_os_error()
                ));
            }
            let f = File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
            Ok(OwnedFd::from(f))
        })
        .join()
        .expect("namespace thread")?;
        let ns = Netns { fd };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside this namespace: sockets it creates, and processes it
    /// starts, belong to the namespace for good.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let fd = self.fd.as_raw_fd();
        thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns(2) on a namespace descriptor we own; affects only this thread.
                let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in namespace")
        })
    }

    /// `ip ARGS` in this namespace.
    pub fn ip(&self, args: &str) -> Result<(), String> {
        let out = self.run(|| Command::new("ip").args(args.split(' ')).output());
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "ip {args}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("ip {args}: {e}")),
        }
    }

    /// Creates TUN device `name` in this namespace; it goes away when the descriptor closes.
    fn tun(&self, name: &str) -> Result<OwnedFd, String> {
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        const IFF_TUN: i16 = 0x0001;
        const IFF_NO_PI: i16 = 0x1000;
        let name = name.to_owned();
        self.run(move || {
            let f = File::options()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map_err(|e| format!("/dev/net/tun: {e}"))?;
            // struct ifreq: the name in 16 bytes, then the flags (a union, 24 bytes).
            let mut ifr = [0u8; 40];
            ifr[..name.len()].copy_from_slice(name.as_bytes());
            ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
            // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is big enough for.
            let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
            if rc != 0 {
                return Err(format!("TUNSETIFF {name}: {}", io::Error::last_os_error()));
            }
            Ok(OwnedFd::from(f))
        })
    }
}

/// A client network: a namespace whose every packet goes through a delay line to the server
/// namespace.
pub struct Site {
    pub ns: Netns,
    pub line: DelayLine,
}

/// The server namespace and its address.
pub const SERVER: &str = "192.0.2.1";

impl Site {
    /// Namespace with `hosts` (addresses in `cidr`, e.g. 198.51.100.0/24) joined to `server`
    /// through TUN devices `server_dev` (in the server namespace) and `pdh0` (in the site).
    pub fn new(
        server: &Netns,
        server_dev: &str,
        cidr: &str,
        hosts: &[&str],
        one_way: Duration,
    ) -> Result<Site, String> {
        let ns = Netns::new()?;
        let near = ns.tun("pdh0")?;
        let far = server.tun(server_dev)?;
        for h in hosts {
            ns.ip(&format!("addr add {h}/32 dev pdh0"))?;
        }
        ns.ip("link set pdh0 up")?;
        ns.ip("route add default dev pdh0")?;
        server.ip(&format!("link set {server_dev} up"))?;
        server.ip(&format!("route add {cidr} dev {server_dev}"))?;
        let line = DelayLine::new(near, far, one_way);
        Ok(Site { ns, line })
    }
}

/// The server namespace: `SERVER` on its loopback.
pub fn server() -> Result<Netns, String> {
    let ns = Netns::new()?;
    ns.ip(&format!("addr add {SERVER}/32 dev lo"))?;
    Ok(ns)
}

/// Copies packets both ways between two TUN devices, each after `one_way`.
pub struct DelayLine {
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayLine {
    pub fn new(a: OwnedFd, b: OwnedFd, one_way: Duration) -> DelayLine {
        let delay_us = Arc::new(AtomicU64::new(one_way.as_micros() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b) = (Arc::new(a), Arc::new(b));
        let threads = [(a.clone(), b.clone()), (b, a)]
            .into_iter()
            .map(|(from, to)| {
                let (delay_us, stop) = (delay_us.clone(), stop.clone());
                thread::spawn(move || pump(&from, &to, &delay_us, &stop))
            })
            .collect();
        DelayLine {
            delay_us,
            stop,
            threads,
        }
    }

    /// Takes effect for packets read from now on; packets already queued keep their time.
    pub fn set(&self, one_way: Duration) {
        self.delay_us
            .store(one_way.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Longest a queue may grow; a test that floods the line loses packets, as a wire would.
const MAX_QUEUED: usize = 10_000;

fn pump(from: &OwnedFd, to: &OwnedFd, delay_us: &AtomicU64, stop: &AtomicBool) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, packet) = queue.pop_front().expect("front");
            // SAFETY: writes one packet from a valid buffer to a TUN descriptor we hold.
            unsafe { libc::write(to.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        }
        // Wake for the next due packet, and at least every 20 ms to see `stop`.
        let wait = queue
            .front()
            .map_or(Duration::from_millis(20), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(20));
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up, so a packet due in 300 µs does not spin on a 0 ms poll.
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 || queue.len() >= MAX_QUEUED {
            continue;
        }
        // Keep packets in order when the delay is lowered while some are queued.
        let delay = Duration::from_micros(delay_us.load(Ordering::Relaxed));
        let due = (Instant::now() + delay).max(queue.back().map_or(now, |(d, _)| *d));
        queue.push_back((due, buf[..n as usize].to_vec()));
    }
}

/// Whether the namespace rig can run here. Locally a missing privilege or tool skips (false);
/// under CI (set, not empty, false or 0) it fails.
pub fn available() -> bool {
    let ip = Command::new("ip").arg("-V").output();
    let why = if !ip.is_ok_and(|o| o.status.success()) {
        Some("ip (iproute2) not found".to_string())
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun missing".to_string())
    } else {
        Netns::new()
            .err()
            .map(|e| format!("cannot create a network namespace: {e}"))
    };
    let Some(why) = why else { return true };
    let ci = std::env::var("CI").unwrap_or_default();
    if !ci.is_empty() && ci != "false" && ci != "0" {
        panic!("{why} (the TUN delay rig needs root and iproute2)");
    }
    eprintln!("{why} (test skipped; the TUN delay rig needs root and iproute2)");
    false
}
