//! The sock_diag reader on crafted datagrams (multipart, done, error, truncation) and against
//! real loopback connections from several source addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;

use super::*;

/// One `SOCK_DIAG_BY_FAMILY` message as the kernel builds it, with `tcp_info` unless
/// `info_len` is 0, plus an unrelated attribute first (the kernel adds INET_DIAG_SHUTDOWN).
fn diag_msg(
    seq: u32,
    family: u8,
    local: u16,
    remote: [u8; 16],
    rtt: u32,
    info_len: usize,
) -> Vec<u8> {
    let mut body = vec![0u8; DIAG_MSG_LEN];
    body[0] = family;
    body[1] = TCP_ESTABLISHED as u8;
    body[4..6].copy_from_slice(&local.to_be_bytes());
    body[6..8].copy_from_slice(&40000u16.to_be_bytes());
    body[24..40].copy_from_slice(&remote);
    // INET_DIAG_SHUTDOWN (8): one byte, padded to four.
    body.extend_from_slice(&5u16.to_ne_bytes());
    body.extend_from_slice(&8u16.to_ne_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]);
    if info_len > 0 {
        // A short tcp_info (an old kernel, or a broken one) is cut from a full one.
        let mut info = vec![0u8; info_len.max(TCPI_RTTVAR + 4)];
        info[TCPI_LAST_ACK_RECV..TCPI_LAST_ACK_RECV + 4].copy_from_slice(&7u32.to_ne_bytes());
        info[TCPI_RTT..TCPI_RTT + 4].copy_from_slice(&rtt.to_ne_bytes());
        info[TCPI_RTTVAR..TCPI_RTTVAR + 4].copy_from_slice(&(rtt / 2).to_ne_bytes());
        info.truncate(info_len);
        body.extend_from_slice(&((info_len + 4) as u16).to_ne_bytes());
        body.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        body.extend_from_slice(&info);
        body.resize(align4(body.len()), 0);
    }
    nl(SOCK_DIAG_BY_FAMILY, seq, &body)
}

fn nl(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m.resize(align4(m.len()), 0);
    m
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

const INET: u8 = libc::AF_INET as u8;
const INET6: u8 = libc::AF_INET6 as u8;

#[test]
fn multipart_dump_then_done() {
    let mut first = diag_msg(1, INET, 5060, v4([127, 1, 0, 5]), 20_000, 232);
    first.extend(diag_msg(1, INET, 22, v4([192, 0, 2, 1]), 1, 232));
    first.extend(diag_msg(
        1,
        INET6,
        5061,
        v6("::ffff:127.2.0.5"),
        60_000,
        232,
    ));
    first.extend(diag_msg(1, INET6, 5061, v6("2001:db8::7"), 3_000, 104));
    let mut out = Vec::new();
    assert_eq!(
        parse(&first, 1, &[5060, 5061], &mut out).unwrap(),
        Progress::More
    );
    let remotes: Vec<(String, u16, u32, u32)> = out
        .iter()
        .map(|c| (c.remote.to_string(), c.local_port, c.rtt_us, c.rttvar_us))
        .collect();
    assert_eq!(
        remotes,
        [
            ("127.1.0.5".into(), 5060, 20_000, 10_000),
            ("127.2.0.5".into(), 5061, 60_000, 30_000),
            ("2001:db8::7".into(), 5061, 3_000, 1_500),
        ],
        "port 22 left out, v4-mapped shown as IPv4, an older short tcp_info read"
    );
    assert_eq!(out[0].remote_port, 40000);
    assert_eq!(out[0].since_ack_ms, 7);

    let mut second = diag_msg(1, INET, 5060, v4([127, 1, 0, 6]), 21_000, 232);
    second.extend(nl(NLMSG_DONE, 1, &0i32.to_ne_bytes()));
    assert_eq!(
        parse(&second, 1, &[5060], &mut out).unwrap(),
        Progress::Done
    );
    assert_eq!(out.len(), 4);
}

#[test]
fn other_sequence_numbers_and_noops_are_skipped() {
    let mut d = nl(NLMSG_DONE, 7, &[0; 4]);
    d.extend(diag_msg(7, INET, 5060, v4([127, 1, 0, 5]), 1, 232));
    d.extend(nl(NLMSG_NOOP, 2, &[]));
    let mut out = Vec::new();
    assert_eq!(parse(&d, 2, &[5060], &mut out).unwrap(), Progress::More);
    assert!(out.is_empty());
}

#[test]
fn kernel_errors_are_reported() {
    let mut body = (-libc::EINVAL).to_ne_bytes().to_vec();
    body.extend_from_slice(&[0u8; 16]);
    let mut out = Vec::new();
    let e = parse(&nl(NLMSG_ERROR, 1, &body), 1, &[5060], &mut out).unwrap_err();
    assert!(matches!(e, DiagError::Kernel(libc::EINVAL)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "sock_diag: kernel refused the dump: Invalid argument (os error 22)"
    );
    // An ACK (error 0) ends the exchange without an error.
    assert_eq!(
        parse(&nl(NLMSG_ERROR, 1, &[0u8; 20]), 1, &[5060], &mut out).unwrap(),
        Progress::Done
    );
}

#[test]
fn truncated_and_malformed_input_is_an_error_never_a_panic() {
    let good = diag_msg(1, INET, 5060, v4([127, 1, 0, 5]), 20_000, 232);
    let mut out = Vec::new();
    for cut in 1..good.len() {
        // Any prefix is an error (or, cut at a message boundary, fine); never a panic.
        let _ = parse(&good[..cut], 1, &[5060], &mut out);
    }
    assert!(matches!(
        parse(&good[..10], 1, &[5060], &mut out),
        Err(DiagError::Malformed("short netlink header"))
    ));
    assert!(matches!(
        parse(&good[..good.len() - 8], 1, &[5060], &mut out),
        Err(DiagError::Malformed("netlink length out of bounds"))
    ));
    let short_info = diag_msg(1, INET, 5060, v4([127, 1, 0, 5]), 20_000, 40);
    assert!(matches!(
        parse(&short_info, 1, &[5060], &mut out),
        Err(DiagError::Malformed("short tcp_info"))
    ));
    let mut bad_family = good.clone();
    bad_family[NLMSG_HDRLEN] = 99;
    assert!(matches!(
        parse(&bad_family, 1, &[5060], &mut out),
        Err(DiagError::Malformed("address family"))
    ));
    let mut zero_len = good.clone();
    zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
    assert!(
        parse(&zero_len, 1, &[5060], &mut out).is_err(),
        "no endless loop"
    );
    // Without tcp_info there is nothing to report.
    let no_info = diag_msg(1, INET, 5060, v4([127, 1, 0, 5]), 0, 0);
    out.clear();
    assert_eq!(
        parse(&no_info, 1, &[5060], &mut out).unwrap(),
        Progress::More
    );
    assert!(out.is_empty());
    // Random bytes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let len = (x % 300) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = parse(&bytes, 1, &[5060], &mut out);
    }
}

/// A TCP connection from `source` (any 127.x address on lo) to `to`.
pub(crate) fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let src: Ipv4Addr = source.parse().unwrap();
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by the returned TcpStream; the
    // addresses are valid sockaddr_in values that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let stream = TcpStream::from_raw_fd(fd);
        let a = sin(src, 0);
        assert_eq!(
            libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len),
            0
        );
        let b = sin(*to.ip(), to.port());
        assert_eq!(
            libc::connect(fd, (&b as *const libc::sockaddr_in).cast(), len),
            0,
            "{}",
            io::Error::last_os_error()
        );
        stream
    }
}

#[test]
fn real_loopback_connections_from_two_networks() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let listener6 = TcpListener::bind("[::1]:0").ok();
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    for source in ["127.1.0.5", "127.1.0.6", "127.2.0.5"] {
        let mut c = connect_from(source, server);
        let (mut s, _) = listener.accept().unwrap();
        // Data both ways, so that both kernels have an RTT sample from acknowledged data.
        s.write_all(b"OPTIONS").unwrap();
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        clients.push(c);
        accepted.push(s);
    }
    let mut ports = vec![server.port()];
    if let Some(l6) = &listener6 {
        let a = l6.local_addr().unwrap();
        clients.push(TcpStream::connect(a).unwrap());
        accepted.push(l6.accept().unwrap().0);
        ports.push(a.port());
    }
    let found = established(&ports).unwrap();
    let mut remotes: Vec<String> = found.iter().map(|c| c.remote.to_string()).collect();
    remotes.sort();
    let mut want = vec!["127.1.0.5", "127.1.0.6", "127.2.0.5"];
    if listener6.is_some() {
        want.push("::1");
    }
    assert_eq!(
        remotes, want,
        "only the server side of each connection: {found:?}"
    );
    for c in &found {
        assert!(c.rtt_us > 0 && c.rtt_us < 1_000_000, "{c:?}");
    }
}

// Shared with the integration tests (pipe-abi-tests/observe.rs).
#[allow(dead_code)]
#[path = "../../../pipe-abi-tests/netns.rs"]
mod netns;

/// Callers in two networks, 10 ms and 40 ms away one way, connect to a server in its own
/// namespace: the kernel's RTT for each connection is the network's round trip.
#[test]
fn kernel_rtt_differs_by_network_through_tun_delay_lines() {
    use std::time::{Duration, Instant};
    if !netns::available() {
        return;
    }
    let ms = Duration::from_millis;
    let server = netns::server().unwrap();
    let near_hosts = ["198.51.100.10", "198.51.100.11"];
    let far_hosts = ["203.0.113.10", "203.0.113.11"];
    let near = netns::Site::new(&server, "pdha", "198.51.100.0/24", &near_hosts, ms(10)).unwrap();
    let far = netns::Site::new(&server, "pdhb", "203.0.113.0/24", &far_hosts, ms(40)).unwrap();
    let listener = server.run(|| TcpListener::bind((netns::SERVER, 5060)).unwrap());
    let to: SocketAddr = format!("{}:5060", netns::SERVER).parse().unwrap();

    let mut pairs = Vec::new();
    for (site, hosts) in [(&near, near_hosts), (&far, far_hosts)] {
        for h in hosts {
            let c = site.ns.run(|| connect_from(h, to));
            let (s, _) = listener.accept().unwrap();
            pairs.push((c, s));
        }
    }
    // A few request/response exchanges: each gives the server's kernel an RTT sample.
    for _ in 0..5 {
        for (c, s) in &mut pairs {
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).unwrap();
            c.write_all(b"pong").unwrap();
            s.read_exact(&mut buf).unwrap();
        }
    }
    let started = Instant::now();
    let found = server.run(|| established(&[5060])).unwrap();
    let cost = started.elapsed();
    let rtt = |host: &str| -> u32 {
        let c = found.iter().find(|c| c.remote.to_string() == host);
        c.unwrap_or_else(|| panic!("{host} not in {found:?}"))
            .rtt_us
    };
    eprintln!(
        "kernel rtt per caller (µs): {:?}, read in {cost:?}",
        found
            .iter()
            .map(|c| (c.remote, c.rtt_us, c.rttvar_us))
            .collect::<Vec<_>>()
    );
    assert_eq!(found.len(), 4, "{found:?}");
    // Round trips of 20 ms and 80 ms, plus scheduling on a busy machine.
    for h in near_hosts {
        assert!((19_000..40_000).contains(&rtt(h)), "{h}: {found:?}");
    }
    for h in far_hosts {
        assert!((79_000..130_000).contains(&rtt(h)), "{h}: {found:?}");
    }

    // The networks trade distances: the smoothed RTT follows within a few exchanges (the
    // kernel gives each new sample 1/8 of the weight).
    near.line.set(ms(40));
    far.line.set(ms(10));
    for _ in 0..12 {
        for (c, s) in &mut pairs {
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).unwrap();
            c.write_all(b"pong").unwrap();
            s.read_exact(&mut buf).unwrap();
        }
    }
    let found = server.run(|| established(&[5060])).unwrap();
    let rtt = |host: &str| {
        found
            .iter()
            .find(|c| c.remote.to_string() == host)
            .unwrap()
            .rtt_us
    };
    eprintln!(
        "after the swap (µs): {:?}",
        found
            .iter()
            .map(|c| (c.remote, c.rtt_us))
            .collect::<Vec<_>>()
    );
    let slowest_now_far = far_hosts.iter().map(|h| rtt(h)).max().unwrap();
    for h in near_hosts {
        assert!(rtt(h) > slowest_now_far.max(50_000), "{h}: {found:?}");
    }
}

/// 10,000 connections' worth of dump datagrams, as the kernel packs them (about 100 per
/// 32 KiB datagram), parsed with the port filter on: well under 100 ms of CPU.
#[test]
fn ten_thousand_connections_cost() {
    let mut datagrams = Vec::new();
    let mut d = Vec::new();
    for i in 0..10_000u32 {
        let remote = v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let port = if i % 10 == 0 { 22 } else { 5060 };
        d.extend(diag_msg(1, INET, port, remote, 1000 + i, 232));
        if d.len() > 32 * 1024 - 400 {
            datagrams.push(std::mem::take(&mut d));
        }
    }
    d.extend(nl(NLMSG_DONE, 1, &[0; 4]));
    datagrams.push(d);
    let started = crate::observe::thread_cpu();
    let mut out = Vec::new();
    let mut done = false;
    for d in &datagrams {
        done = parse(d, 1, &[5060, 5061], &mut out).unwrap() == Progress::Done;
    }
    let cost = crate::observe::thread_cpu() - started;
    eprintln!(
        "sock_diag dump of 10,000 connections ({} datagrams) parsed in {cost:?} of CPU",
        datagrams.len()
    );
    assert!(done);
    assert_eq!(out.len(), 9_000);
    assert!(cost.as_millis() < 100, "{cost:?}");
}
