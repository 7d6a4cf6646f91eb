//! Bounded concurrency for a monitor round.
//!
//! - Every health probe (SIP OPTIONS over UDP as [`UdpProbe`], a TCP connect, OPTIONS over
//!   TCP or over TLS as [`StreamProbe`]) is a state machine on a non-blocking socket, all
//!   in flight at once on the calling thread ([`many`]), so 5,000 targets of which
//!   hundreds are silent still take about one timeout, with no thread per target. At most
//!   `max_open` sockets are open at a time; when the process runs out of file descriptors
//!   anyway, the window shrinks to what is open and the rest wait for a free slot.
//! - Blocking exchanges (Event Socket, JSON-RPC load reads) run on a fixed pool of worker
//!   threads ([`run_blocking`]). Silent load sources cost one timeout per worker, so they
//!   take about `ceil(silent / workers)` timeouts.
//! - A thread that cannot be started (a low `ulimit -u`, memory) makes the pool smaller; with
//!   none at all the calling thread does the work itself. The round is slower, never
//!   aborted, and [`Degraded`] says why.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::sip_options::{Answer, UdpProbe};
use super::stream::{StreamDone, StreamProbe, StreamSpec};
use crate::net::probe::ProbeError;

/// Stack for a worker thread: the probes keep their buffers on the heap, and threads that
/// ask for less address space are more likely to start when memory is tight.
const WORKER_STACK: usize = 256 * 1024;

/// What made a round slower than it should be; empty when nothing did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Degraded(pub Vec<String>);

/// The most sockets to keep open for UDP probes: well under the soft `RLIMIT_NOFILE`,
/// leaving room for SQLite, memcached, the workers' TCP connections and the resolver.
pub fn udp_window(workers: usize) -> usize {
    open_files_limit()
        .saturating_sub(64 + 2 * workers)
        .clamp(1, MAX_UDP_OPEN)
}

/// UDP probes in flight at most, whatever the limits: enough for thousands of targets with
/// hundreds silent, few enough for one `poll` to stay cheap.
const MAX_UDP_OPEN: usize = 4096;

fn open_files_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
        0 => usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX),
        _ => 1024,
    }
}

/// A probe to start: SIP OPTIONS over UDP, or a TCP or TLS exchange.
pub enum Start {
    Udp(SocketAddr),
    Stream(StreamSpec),
}

/// How a probe ended, by kind.
#[derive(Debug)]
pub enum Done {
    Udp(Result<Answer, ProbeError>),
    Stream(StreamDone),
}

enum Inflight {
    Udp(UdpProbe),
    Stream(Box<StreamProbe>),
}

impl Inflight {
    fn start(s: &Start, timeout: Duration) -> Result<Inflight, ProbeError> {
        match s {
            Start::Udp(a) => UdpProbe::start(*a, timeout).map(Inflight::Udp),
            Start::Stream(spec) => {
                StreamProbe::start(spec, timeout).map(|p| Inflight::Stream(Box::new(p)))
            }
        }
    }

    fn fd(&self) -> libc::c_int {
        match self {
            Inflight::Udp(p) => p.fd(),
            Inflight::Stream(p) => p.fd(),
        }
    }

    fn events(&self) -> i16 {
        match self {
            Inflight::Udp(_) => libc::POLLIN,
            Inflight::Stream(p) => p.events(),
        }
    }

    fn wake_at(&self) -> Instant {
        match self {
            Inflight::Udp(p) => p.wake_at(),
            Inflight::Stream(p) => p.wake_at(),
        }
    }

    fn ready(&mut self, revents: i16, buf: &mut [u8]) -> Option<Done> {
        match self {
            Inflight::Udp(p) => p.readable(buf).map(Done::Udp),
            Inflight::Stream(p) => p.ready(revents).map(Done::Stream),
        }
    }

    fn tick(&mut self, now: Instant) -> Option<Done> {
        match self {
            Inflight::Udp(p) => p.tick(now).map(Done::Udp),
            Inflight::Stream(p) => p.tick(now).map(Done::Stream),
        }
    }
}

/// Probes every address in `addrs` over UDP, at most `max_open` at once; results in order.
pub fn udp_many(
    addrs: &[SocketAddr],
    timeout: Duration,
    max_open: usize,
    degraded: &mut Degraded,
) -> Vec<Result<Answer, ProbeError>> {
    let starts = addrs.iter().map(|a| Start::Udp(*a)).collect();
    many(starts, timeout, max_open, degraded)
        .into_iter()
        .map(|d| match d {
            Done::Udp(r) => r,
            Done::Stream(_) => unreachable!("only udp probes were started"),
        })
        .collect()
}

/// Runs every probe in `starts` on this thread, at most `max_open` sockets at once, all
/// sharing one `poll`; results in order. Silent peers cost one timeout in all, not each.
pub fn many(
    starts: Vec<Start>,
    timeout: Duration,
    max_open: usize,
    degraded: &mut Degraded,
) -> Vec<Done> {
    let total = starts.len();
    if max_open < total.min(MAX_UDP_OPEN) {
        degraded.0.push(format!(
            "at most {max_open} probes in flight for {total} (open files limit {}); \
             silent targets beyond that cost another timeout each (raise ulimit -n)",
            open_files_limit()
        ));
    }
    let mut results: Vec<Option<Done>> = Vec::new();
    results.resize_with(total, || None);
    let mut window = max_open.max(1);
    let mut next = 0;
    let mut active: Vec<(usize, Inflight)> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut shortage: Option<String> = None;
    loop {
        while active.len() < window && next < total {
            match Inflight::start(&starts[next], timeout) {
                Ok(p) => active.push((next, p)),
                Err(e) if e.is_resource_shortage() && !active.is_empty() => {
                    // Wait for a slot: the probes in flight free theirs within a timeout.
                    window = active.len();
                    shortage.get_or_insert_with(|| e.to_string());
                    break;
                }
                Err(e) => {
                    results[next] = Some(match starts[next] {
                        Start::Udp(_) => Done::Udp(Err(e)),
                        Start::Stream(_) => Done::Stream(StreamDone {
                            result: Err(e),
                            cert: None,
                        }),
                    })
                }
            }
            next += 1;
        }
        if active.is_empty() {
            break;
        }
        fds.clear();
        fds.extend(active.iter().map(|(_, p)| libc::pollfd {
            fd: p.fd(),
            events: p.events(),
            revents: 0,
        }));
        let wake = active.iter().map(|(_, p)| p.wake_at()).min();
        let wait = wake.map_or(Duration::ZERO, |w| {
            w.saturating_duration_since(Instant::now())
        });
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let now = Instant::now();
        let mut i = 0;
        while i < active.len() {
            let (idx, p) = &mut active[i];
            let mut done = None;
            if ready > 0 && fds[i].revents != 0 {
                done = p.ready(fds[i].revents, &mut buf);
            }
            if done.is_none() {
                done = p.tick(now);
            }
            match done {
                Some(r) => {
                    results[*idx] = Some(r);
                    // swap_remove moves the last probe here; its pollfd moves with it.
                    active.swap_remove(i);
                    fds.swap_remove(i);
                }
                None => i += 1,
            }
        }
    }
    if let Some(e) = shortage {
        degraded.0.push(format!(
            "probes limited to {window} at once ({e}); raise the open files limit (ulimit -n)"
        ));
    }
    results
        .into_iter()
        .map(|r| r.expect("every probe ends with a result"))
        .collect()
}

/// Runs `work(i)` for every `i` in `0..n` on up to `workers` threads while `alongside` runs
/// on the calling thread; returns the results in order and what `alongside` returned.
pub fn run_blocking<T: Send, A>(
    n: usize,
    workers: usize,
    work: impl Fn(usize) -> T + Sync,
    alongside: impl FnOnce() -> A,
    degraded: &mut Degraded,
) -> (Vec<T>, A) {
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let drain = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        let r = work(i);
        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
    };
    let wanted = workers.min(n);
    let side = thread::scope(|s| {
        let mut started = 0;
        for k in 0..wanted {
            let spawned = thread::Builder::new()
                .name(format!("probe-{k}"))
                .stack_size(WORKER_STACK)
                .spawn_scoped(s, drain);
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    degraded.0.push(format!(
                        "started {started} of {wanted} probe threads ({e}); \
                         the round takes longer"
                    ));
                    break;
                }
            }
        }
        let side = alongside();
        // With no worker at all (or to help the few there are), this thread works too.
        drain();
        side
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    (
        results
            .into_iter()
            .map(|r| r.expect("every job ran"))
            .collect(),
        side,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn blocking_jobs_all_run_even_without_threads() {
        let mut d = Degraded::default();
        let (out, side) = run_blocking(50, 0, |i| i * 2, || "side", &mut d);
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(side, "side");
        let (out, _) = run_blocking(50, 8, |i| i + 1, || (), &mut d);
        assert_eq!(out[49], 50);
        assert_eq!(d, Degraded::default());
    }

    #[test]
    fn udp_window_one_still_probes_everything() {
        // Bound and never read: silent. Closed: refused at once.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let addrs = [silent.local_addr().unwrap(), closed, closed];
        let mut d = Degraded::default();
        let start = Instant::now();
        let out = udp_many(&addrs, Duration::from_millis(200), 1, &mut d);
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
        assert!(out.iter().all(Result::is_err));
        assert!(out[1].as_ref().unwrap_err().is_unreachable());
    }
}
