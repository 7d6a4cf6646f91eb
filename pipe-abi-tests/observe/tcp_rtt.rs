//! The sock_diag reader against real TCP connections: on loopback from
//! several source addresses, and from callers in network namespaces behind
//! TUN delay lines, where the kernel's RTT is each network's round trip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use pdns_ha::observe::tcp_rtt::established;

use crate::netns;
use crate::observe::connect_from;

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
