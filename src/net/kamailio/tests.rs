//! JSON-RPC client tests against a scripted one-connection HTTP server. The replies are the
//! bytes Kamailio 5.6.3 sent; the live test in `kamailio_live.rs` checks the real thing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const T: Duration = Duration::from_millis(1000);

/// What `read_active_dialogs` sends, byte for byte.
const REQUEST_BODY: &str = r#"{"jsonrpc":"2.0","method":"dlg.stats_active","params":[1],"id":1}"#;

const KAMAILIO_OK: &str = "HTTP/1.0 200 OK\r\nSia: SIP/2.0/TCP 127.0.0.1:44068\r\n\
    Content-Type: application/json\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\n\
    Content-Length: 129\r\n\r\n{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t\t\"starting\":\t0,\
    \n\t\t\"connecting\":\t0,\n\t\t\"answering\":\t0,\n\t\t\"ongoing\":\t0,\n\t\t\"all\":\t0\n\t},\
    \n\t\"id\":\t1\n}";

const KAMAILIO_NO_METHOD: &str = "HTTP/1.0 500 Method Not Found\r\nSia: SIP/2.0/TCP \
    127.0.0.1:32860\r\nContent-Type: application/json\r\nServer: kamailio (5.6.3 \
    (x86_64/linux))\r\nContent-Length: 94\r\n\r\n{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"error\":\t{\n\
    \t\t\"code\":\t500,\n\t\t\"message\":\t\"Method Not Found\"\n\t},\n\t\"id\":\t1\n}";

const KAMAILIO_404: &str = "HTTP/1.0 404 Not Found\r\nSia: SIP/2.0/TCP 127.0.0.1:32876\r\n\
    Content-Type: text/plain\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\n\
    Content-Length: 10\r\n\r\nnot found\n";

/// How the scripted server ends the exchange.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Keep the connection open until the client leaves, as Kamailio does.
    HoldOpen,
    Close,
}

/// Serves one connection: reads the request, writes `reply` in pieces `gap` apart, then
/// holds or closes. Returns the URL to use and a receiver for the request bytes.
fn serve(reply: &str, gap: Duration, then: Then) -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/RPC", listener.local_addr().unwrap());
    let reply = reply.as_bytes().to_vec();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.ends_with(REQUEST_BODY.as_bytes()) {
            match conn.read(&mut chunk) {
                Ok(n) if n > 0 => request.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let _ = tx.send(request);
        let pieces: Vec<&[u8]> = if gap.is_zero() {
            vec![&reply]
        } else {
            reply.chunks(16).collect()
        };
        for piece in pieces {
            if conn.write_all(piece).is_err() {
                return;
            }
            thread::sleep(gap);
        }
        if then == Then::HoldOpen {
            // Until the client hangs up, bounded so the thread always ends.
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = conn.read(&mut chunk);
        }
    });
    (url, rx)
}

#[test]
fn reads_all_from_kamailios_exact_reply_without_waiting_for_close() {
    let (url, request) = serve(
        &KAMAILIO_OK.replace("\"all\":\t0", "\"all\":\t7"),
        Duration::ZERO,
        Then::HoldOpen,
    );
    // The server never closes: a reader waiting for the close would time out, not answer.
    assert_eq!(read_active_dialogs(&url, T).unwrap(), 7);
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/RPC");
    assert_eq!(
        String::from_utf8(request.recv().unwrap()).unwrap(),
        format!(
            "POST /RPC HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: 65\r\nConnection: close\r\n\r\n\
             {{\"jsonrpc\":\"2.0\",\"method\":\"dlg.stats_active\",\"params\":[1],\"id\":1}}"
        )
    );
}

#[test]
fn zero_is_a_reading_not_an_error() {
    let (url, _) = serve(KAMAILIO_OK, Duration::ZERO, Then::Close);
    assert_eq!(read_active_dialogs(&url, T).unwrap(), 0);
}

#[test]
fn reply_in_small_pieces_is_reassembled() {
    let (url, _) = serve(KAMAILIO_OK, Duration::from_millis(1), Then::HoldOpen);
    assert_eq!(read_active_dialogs(&url, T).unwrap(), 0);
}

#[test]
fn body_without_content_length_ends_at_close() {
    let reply = "HTTP/1.0 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"result\":{\"all\":3},\"id\":1}";
    let (url, _) = serve(reply, Duration::ZERO, Then::Close);
    assert_eq!(read_active_dialogs(&url, T).unwrap(), 3);
}

#[test]
fn json_rpc_error_is_reported_with_its_message() {
    let (url, _) = serve(KAMAILIO_NO_METHOD, Duration::ZERO, Then::HoldOpen);
    let e = read_active_dialogs(&url, T).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{url}: json-rpc error 500 Method Not Found")
    );
}

#[test]
fn http_error_status_is_reported() {
    let (url, _) = serve(KAMAILIO_404, Duration::ZERO, Then::HoldOpen);
    let e = read_active_dialogs(&url, T).unwrap_err();
    assert_eq!(e.to_string(), format!("{url}: http status 404 Not Found"));
}

#[test]
fn garbage_and_missing_fields_are_protocol_errors() {
    let cases = [
        (
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "protocol error: bad http status line \"SSH-2.0-OpenSSH_9.2\"",
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n{\"id\":1}   ",
            "protocol error: no result.all in \"{\\\"id\\\":1}\"",
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: -4\r\n\r\n",
            "protocol error: bad content-length \"-4\"",
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 999999\r\n\r\n",
            "protocol error: body of 999999 bytes exceeds 65536",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "protocol error: unexpected transfer-encoding \"chunked\"",
        ),
        (
            "HTTP/1.0 200 OK\r\n\r\n{\"result\":{\"all\":-1}}",
            "protocol error: no result.all in \"{\\\"result\\\":{\\\"all\\\":-1}}\"",
        ),
    ];
    for (reply, want) in cases {
        let (url, _) = serve(reply, Duration::ZERO, Then::Close);
        let e = read_active_dialogs(&url, T).unwrap_err();
        assert_eq!(e.to_string(), format!("{url}: {want}"));
    }
}

#[test]
fn endless_header_block_is_cut_off() {
    let reply = format!(
        "HTTP/1.0 200 OK\r\n{}",
        "X-Filler: 0123456789abcdef\r\n".repeat(600)
    );
    let (url, _) = serve(&reply, Duration::ZERO, Then::HoldOpen);
    let e = read_active_dialogs(&url, T).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Protocol(_)), "{e:?}");
}

#[test]
fn close_without_reply_and_mid_body_close_are_errors() {
    let (url, _) = serve("", Duration::ZERO, Then::Close);
    let e = read_active_dialogs(&url, T).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{url}: waiting for the http reply: connection closed by peer")
    );

    let (url, _) = serve(
        &KAMAILIO_OK[..KAMAILIO_OK.len() - 20],
        Duration::ZERO,
        Then::Close,
    );
    let e = read_active_dialogs(&url, T).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{url}: reading the http body: connection closed by peer")
    );
}

#[test]
fn slow_drip_is_bounded_by_the_overall_deadline() {
    // 16 bytes every 30 ms: each read succeeds quickly, the whole reply takes ~600 ms.
    // A per-read timeout would let it through; only an overall deadline makes it a timeout.
    let (url, _) = serve(KAMAILIO_OK, Duration::from_millis(30), Then::HoldOpen);
    let e = read_active_dialogs(&url, Duration::from_millis(150)).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Timeout { .. }), "{e:?}");
}

#[test]
fn silent_server_costs_one_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/RPC", listener.local_addr().unwrap());
    let started = Instant::now();
    // The kernel completes the handshake from the backlog; nobody ever answers.
    let e = read_active_dialogs(&url, Duration::from_millis(400)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        e.to_string(),
        format!("{url}: waiting for the http reply: timed out after 400ms")
    );
    // Below two timeouts: the rest of the 400 ms is room for a loaded machine.
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_millis(800),
        "{took:?}"
    );
    drop(listener);
}

#[test]
fn refused_port_fails_fast() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/RPC");
    let started = Instant::now();
    let e = read_active_dialogs(&url, T).unwrap_err();
    // Far below the timeout, with room for a loaded machine: refused is not waited for.
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());
    assert!(e.is_unreachable(), "{e:?}");
}

#[test]
fn url_forms() {
    let t = Target::parse("http://127.0.0.1:5060/RPC").ok().unwrap();
    assert_eq!(
        (t.host.as_str(), t.connect_to.as_str(), t.path.as_str()),
        ("127.0.0.1:5060", "127.0.0.1:5060", "/RPC")
    );
    let t = Target::parse("http://[::1]").ok().unwrap();
    assert_eq!(
        (t.host.as_str(), t.connect_to.as_str(), t.path.as_str()),
        ("[::1]", "[::1]:80", "/")
    );
    let t = Target::parse("http://[::1]:5060/jsonrpc").ok().unwrap();
    assert_eq!(t.connect_to, "[::1]:5060");

    let e = read_active_dialogs("https://k.example/RPC", T).unwrap_err();
    assert_eq!(
        e.to_string(),
        "https://…: unusable target: only http:// urls are supported"
    );
    let e = read_active_dialogs("http://admin:hunter2@127.0.0.1:5060/RPC", T).unwrap_err();
    assert_eq!(
        e.to_string(),
        "http://127.0.0.1:5060/RPC: unusable target: credentials in the url are not supported"
    );
    assert!(!format!("{e:?}").contains("hunter2"));
    let e = read_active_dialogs("http:///RPC", T).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::BadTarget(_)), "{e:?}");
}
