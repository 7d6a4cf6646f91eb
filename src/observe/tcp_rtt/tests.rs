//! The sock_diag reader on crafted datagrams (multipart, done, error, truncation); real
//! connections, on loopback and through delay lines, are in `pipe-abi-tests/tcp_rtt.rs`.

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
    // The cost is printed, never asserted: CI machines are shared and slow (docs/performance.md).
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
}
