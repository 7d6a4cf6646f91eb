//! The metrics server against well-behaved and hostile clients on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

fn start(limits: Limits) -> SocketAddr {
    serve("127.0.0.1:0".parse().unwrap(), limits, |req| {
        match req.path {
            "/metrics" => Response::new(200, "text/plain", format!("up 1 {:?}\n", req.accept)),
            _ => Response::new(404, "text/plain", "not here\n"),
        }
    })
    .unwrap()
}

/// One exchange; the server closes after its answer.
fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn answers_get_head_and_refuses_the_rest() {
    let addr = start(Limits::default());
    let got = ask(
        addr,
        b"GET /metrics?x=1 HTTP/1.1\r\nAccept: text/plain\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("Content-Length: 24\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\nup 1 Some(\"text/plain\")\n"),
        "{got}"
    );
    let got = ask(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("\r\n\r\n"),
        "{got}"
    );
    let got = ask(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
    let got = ask(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(
        got.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD")
            || got.contains("Allow: GET, HEAD"),
        "{got}"
    );
    let got = ask(addr, b"\x16\x03\x01 not http\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
    long.extend(std::iter::repeat_n(b"X-Pad: 0123456789\r\n".iter().copied(), 1000).flatten());
    let got = ask(addr, &long);
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
}

/// A client that drips a byte now and then and a thousand that send nothing hold no scrape
/// up: the scrape is answered while they are all still connected (past the cap, the
/// oldest of them were closed to make room).
#[test]
fn slow_and_idle_clients_do_not_block_a_scrape() {
    let addr = start(Limits {
        deadline: Duration::from_secs(30),
        ..Limits::default()
    });
    let mut drip = TcpStream::connect(addr).unwrap();
    drip.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let idle: Vec<TcpStream> = (0..1000)
        .map_while(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(idle.len() >= 500, "only {} idle connections", idle.len());
    let _ = drip.write_all(b"X");
    let got = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
}

/// At the connection cap a new client closes the oldest, and a client past its deadline
/// is closed, so neither a flood nor a drip holds a slot for long.
#[test]
fn the_cap_closes_the_oldest_and_the_deadline_the_slow() {
    let addr = start(Limits {
        max_connections: 3,
        deadline: Duration::from_secs(30),
        ..Limits::default()
    });
    let mut oldest = TcpStream::connect(addr).unwrap();
    oldest
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Accepted in order: the server has seen the first before the others connect.
    oldest.write_all(b"G").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let _b = TcpStream::connect(addr).unwrap();
    let _c = TcpStream::connect(addr).unwrap();
    let got = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    let mut b = [0u8; 16];
    assert!(
        matches!(oldest.read(&mut b), Ok(0) | Err(_)),
        "the oldest should be closed"
    );

    let addr = start(Limits {
        deadline: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    assert!(matches!(slow.read(&mut b), Ok(0) | Err(_)));
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_bad_address_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    assert!(serve(addr, Limits::default(), |_| Response::new(200, "x", "")).is_err());
}
