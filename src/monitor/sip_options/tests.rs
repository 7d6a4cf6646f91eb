//! SIP probe tests against scripted UDP and TCP responders on loopback, plus the averaging
//! and anti-flap arithmetic.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::*;
use crate::monitor::stream::{probe_tcp_connect, probe_tcp_sip};
use crate::net::probe::ProbeErrorKind;

const T: Duration = Duration::from_millis(1000);
const MS: Duration = Duration::from_millis(1);

/// What the UDP responder does with each request.
#[derive(Clone, Copy)]
enum Script {
    /// Answers `code` after a delay.
    Answer(u16, Duration),
    /// 100 Trying at once, 200 OK after the delay.
    TryingThen(Duration),
    /// 100 Trying, then nothing.
    TryingOnly,
    /// A 200 for another Call-ID and one for another CSeq at once, ours after the delay.
    DecoysFirst(Duration),
    /// Ignores the first request, as if it were lost, and answers the retransmission.
    DropFirst,
}

struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn udp_responder(script: Script) -> Responder {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(20 * MS)).unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (stop2, requests2) = (Arc::clone(&stop), Arc::clone(&requests));
    let thread = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop2.load(Ordering::SeqCst) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let nth = {
                let mut all = requests2.lock().unwrap();
                all.push(request.clone());
                all.len()
            };
            let send = |text: String| drop(sock.send_to(text.as_bytes(), from));
            match script {
                Script::Answer(code, delay) => {
                    thread::sleep(delay);
                    send(response(&request, code, None, None));
                }
                Script::TryingThen(delay) => {
                    send(response(&request, 100, None, None));
                    thread::sleep(delay);
                    send(response(&request, 200, None, None));
                }
                Script::TryingOnly => send(response(&request, 100, None, None)),
                Script::DecoysFirst(delay) => {
                    send(response(&request, 200, Some("decoy@127.0.0.1"), None));
                    send(response(&request, 200, None, Some("2 OPTIONS")));
                    send("OPTIONS sip:x SIP/2.0\r\n\r\n".to_string());
                    thread::sleep(delay);
                    send(response(&request, 200, None, None));
                }
                Script::DropFirst if nth == 1 => {}
                Script::DropFirst => send(response(&request, 200, None, None)),
            }
        }
    });
    Responder {
        addr,
        stop,
        requests,
        thread: Some(thread),
    }
}

/// A response to `request` built the way a UAS does: Via, From, Call-ID and CSeq copied,
/// a tag added to To.
fn response(request: &str, code: u16, call_id: Option<&str>, cseq: Option<&str>) -> String {
    let header = |name: &str| {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let line = request
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix));
        line.unwrap_or_else(|| panic!("no {name} in {request}"))
            .trim_end()
            .to_string()
    };
    let call_id = call_id.map_or_else(|| header("Call-ID"), |c| format!("Call-ID: {c}"));
    let cseq = cseq.map_or_else(|| header("CSeq"), |c| format!("CSeq: {c}"));
    format!(
        "SIP/2.0 {code} Scripted\r\n{}\r\n{}\r\n{};tag=responder\r\n{call_id}\r\n{cseq}\r\n\
         Content-Length: 0\r\n\r\n",
        header("Via"),
        header("From"),
        header("To"),
    )
}

fn closed_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn udp_answer_gives_the_round_trip() {
    let r = udp_responder(Script::Answer(200, 30 * MS));
    let rtt = probe_udp(r.addr, T).unwrap().rtt;
    // The upper bound only says the probe stopped at the answer, not at its timeout.
    assert!(rtt >= 30 * MS && rtt < T / 2, "{rtt:?}");
}

#[test]
fn udp_request_is_well_formed_and_unique() {
    let r = udp_responder(Script::Answer(200, Duration::ZERO));
    probe_udp(r.addr, T).unwrap();
    probe_udp(r.addr, T).unwrap();
    let requests = r.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let port = r.addr.port();
    let first = &requests[0];
    let lines: Vec<&str> = first.split("\r\n").collect();
    assert_eq!(lines[0], format!("OPTIONS sip:127.0.0.1:{port} SIP/2.0"));
    assert!(
        lines[1].starts_with("Via: SIP/2.0/UDP 127.0.0.1:"),
        "{first}"
    );
    assert!(
        lines[1].contains(";branch=z9hG4bK") && lines[1].ends_with(";rport"),
        "{first}"
    );
    assert_eq!(lines[2], "Max-Forwards: 70");
    assert!(
        lines[3].starts_with("From: <sip:pdns-ha@127.0.0.1>;tag="),
        "{first}"
    );
    assert_eq!(lines[4], format!("To: <sip:127.0.0.1:{port}>"));
    assert!(
        lines[5].starts_with("Call-ID: ") && lines[5].ends_with("@127.0.0.1"),
        "{first}"
    );
    assert_eq!(
        lines[6..],
        [
            "CSeq: 1 OPTIONS",
            "User-Agent: pdns-ha",
            "Content-Length: 0",
            "",
            ""
        ]
    );
    // Branch, tag and Call-ID differ between probes.
    let differing = first
        .lines()
        .zip(requests[1].lines())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 3, "{requests:?}");
}

#[test]
fn any_final_response_is_an_answer_with_its_code() {
    for code in [200, 404, 483, 501, 503, 603] {
        let r = udp_responder(Script::Answer(code, Duration::ZERO));
        assert_eq!(probe_udp(r.addr, T).unwrap().code, code);
    }
}

#[test]
fn accepted_codes() {
    let default = AcceptCodes::parse(None).unwrap();
    assert_eq!(default, AcceptCodes::default());
    assert!(default.accepts(200) && default.accepts(202) && !default.accepts(503));
    assert!(!default.accepts(404));
    let listed = AcceptCodes::parse(Some(" 200, 401,404 ")).unwrap();
    assert!(listed.accepts(401) && listed.accepts(404) && !listed.accepts(202));
    assert_eq!(listed.to_string(), "200,401,404");
    let classes = AcceptCodes::parse(Some("2xx,4XX")).unwrap();
    assert!(classes.accepts(299) && classes.accepts(486) && !classes.accepts(503));
    assert_eq!(AcceptCodes::parse(Some("  ")).unwrap(), default);
    for bad in ["200,abc", "1xx", "100", "700", "2x", "7xx", "200,,404"] {
        assert!(AcceptCodes::parse(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn provisional_response_keeps_waiting() {
    let r = udp_responder(Script::TryingThen(50 * MS));
    let rtt = probe_udp(r.addr, T).unwrap().rtt;
    assert!(rtt >= 50 * MS, "{rtt:?}");
}

#[test]
fn only_100_trying_is_a_timeout() {
    let r = udp_responder(Script::TryingOnly);
    let started = Instant::now();
    let e = probe_udp(r.addr, 200 * MS).unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        e.to_string(),
        format!("{}: {WAITING}: timed out after 200ms", r.addr)
    );
    // A 100 Trying must not restart the clock; the margin is for a loaded machine.
    assert!(took >= 190 * MS && took < 600 * MS, "{took:?}");
}

#[test]
fn responses_to_other_requests_are_ignored() {
    let r = udp_responder(Script::DecoysFirst(40 * MS));
    let rtt = probe_udp(r.addr, T).unwrap().rtt;
    assert!(rtt >= 40 * MS, "answered by a decoy after {rtt:?}");
}

#[test]
fn lost_request_is_retransmitted_after_t1() {
    let r = udp_responder(Script::DropFirst);
    let rtt = probe_udp(r.addr, T).unwrap().rtt;
    // Once, at T1, not at a later backoff step; the margin is for a loaded machine.
    assert!(rtt >= T1 && rtt < T1 + 400 * MS, "{rtt:?}");
    assert_eq!(r.requests.lock().unwrap().len(), 2);
    // Below T1 there is no retransmission: the loss costs the probe.
    let r = udp_responder(Script::DropFirst);
    assert!(probe_udp(r.addr, 300 * MS).is_err());
}

#[test]
fn closed_udp_port_is_refused_at_once() {
    let addr = closed_udp_port();
    let started = Instant::now();
    let e = probe_udp(addr, T).unwrap_err();
    // Far below the timeout, with room for a loaded machine: refused is not waited for.
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());
    assert!(e.is_unreachable(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{addr}: {WAITING}: connection refused (os error 111)")
    );
}

#[test]
fn silent_udp_peer_is_a_timeout() {
    // Bound and never read: no ICMP, no answer.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let e = probe_udp(silent.local_addr().unwrap(), 400 * MS).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < 800 * MS, "{:?}", started.elapsed());
}

/// Serves one TCP connection: reads one request, writes `replies(request)` one by one.
fn tcp_responder(replies: fn(&str) -> Vec<String>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(T)).unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            match conn.read(&mut chunk) {
                Ok(n) if n > 0 => request.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        for reply in replies(&String::from_utf8_lossy(&request)) {
            if conn.write_all(reply.as_bytes()).is_err() {
                return;
            }
            thread::sleep(5 * MS);
        }
        let _ = conn.read(&mut chunk); // until the client leaves
    });
    (addr, thread)
}

#[test]
fn tcp_sip_skips_keepalives_provisionals_and_bodies() {
    let (addr, server) = tcp_responder(|request| {
        let decoy = response(request, 200, Some("decoy@127.0.0.1"), None).replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Length: 14\r\n\r\nv=0\r\nCSeq: 1\r\n",
        );
        vec![
            "\r\n\r\n".to_string(),
            response(request, 100, None, None),
            decoy,
            response(request, 404, None, None),
        ]
    });
    let rtt = probe_tcp_sip(addr, T).unwrap().rtt;
    assert!(rtt >= 15 * MS && rtt < T / 2, "{rtt:?}");
    server.join().unwrap();
}

#[test]
fn tcp_sip_via_says_tcp() {
    let (addr, server) = tcp_responder(|request| {
        assert!(
            request.contains("\r\nVia: SIP/2.0/TCP 127.0.0.1:"),
            "{request}"
        );
        vec![response(request, 200, None, None)]
    });
    probe_tcp_sip(addr, T).unwrap();
    server.join().unwrap();
}

#[test]
fn tcp_sip_silence_is_a_timeout() {
    let (addr, server) = tcp_responder(|_| vec![]);
    let e = probe_tcp_sip(addr, 100 * MS).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Timeout { .. }), "{e:?}");
    server.join().unwrap();
}

#[test]
fn tcp_sip_close_before_answer_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let _ = conn.read(&mut [0u8; 1024]);
    });
    let e = probe_tcp_sip(addr, T).unwrap_err();
    server.join().unwrap();
    assert_eq!(
        e.to_string(),
        format!("{addr}: {WAITING}: connection closed by peer")
    );
}

#[test]
fn tcp_connect_times_the_handshake_and_sees_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(probe_tcp_connect(addr, T).unwrap() < T / 2);
    drop(listener);
    let e = probe_tcp_connect(addr, T).unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    let e = probe_tcp_sip(addr, T).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{addr}: connecting: connection refused (os error 111)")
    );
}

#[test]
fn final_answer_matching() {
    let local: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let ids = Ids::new(local);
    let request = options_request("UDP", local, "127.0.0.1:5060".parse().unwrap(), &ids);
    let ok = response(&request, 200, None, None);
    assert_eq!(
        final_answer(ok.as_bytes(), &ids),
        Some((200, "Scripted".into()))
    );
    // Compact Call-ID and spaced CSeq are the same thing.
    let compact = ok
        .replace("Call-ID:", "i:")
        .replace("CSeq: 1 OPTIONS", "CSeq:  1   OPTIONS");
    assert!(final_answer(compact.as_bytes(), &ids).is_some());
    assert!(final_answer(response(&request, 180, None, None).as_bytes(), &ids).is_none());
    assert!(final_answer(
        response(&request, 200, None, Some("1 INVITE")).as_bytes(),
        &ids
    )
    .is_none());
    assert!(final_answer(b"SIP/2.0 2", &ids).is_none());
    assert!(final_answer(b"\xff\xfe garbage", &ids).is_none());
    assert!(final_answer(request.as_bytes(), &ids).is_none());
}

#[test]
fn sip_message_len_frames_a_tcp_stream() {
    assert_eq!(sip_message_len(b"\r\n\r\nSIP"), Some(4));
    assert_eq!(sip_message_len(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nab"), None);
    assert_eq!(
        sip_message_len(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabcSIP"),
        Some(27)
    );
    assert_eq!(sip_message_len(b"SIP/2.0 200 OK\r\n\r\n"), Some(18));
}
