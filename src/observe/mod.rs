//! `pdns-ha observe`: round-trip times that a SIP server already sees, turned into latency
//! per known client network. One file per source (registrar keepalives, kernel TCP RTT) and
//! one for the statistics that group callers into networks.

pub mod aggregate;
pub mod keepalive;
pub mod tcp_rtt;

/// CPU time of the calling thread: what a round costs, whatever else the machine is doing.
#[cfg(test)]
pub(crate) fn thread_cpu() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
