//! Event Socket client tests against the byte-exact stand-in, one instance per case.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pdns_ha::monitor::esl::{read_load, read_status, Load};
use pdns_ha::net::probe::{ProbeError, ProbeErrorKind};

use crate::esl_standin::{self, Config, Fault, StandIn};

const T: Duration = Duration::from_millis(1000);

fn standin(fault: Fault) -> StandIn {
    esl_standin::start(Config {
        fault,
        ..Config::default()
    })
}

fn read(s: &StandIn) -> Result<Load, ProbeError> {
    read_load(&s.addr().to_string(), "ClueCon", T)
}

/// The stand-in logs commands from its own thread; `exit` may land just after we return.
fn commands_after(s: &StandIn, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(2);
    while s.commands().len() < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.commands()
}

#[test]
fn reads_sessions_and_max_from_api_status() {
    let s = standin(Fault::None);
    assert_eq!(
        read(&s).unwrap(),
        Load {
            sessions: 42,
            max_sessions: Some(1000)
        }
    );
    assert_eq!(
        commands_after(&s, 3),
        ["auth ClueCon", "api status", "exit"]
    );
}

#[test]
fn sees_load_changes_between_readings() {
    let s = standin(Fault::None);
    s.set_sessions(0);
    assert_eq!(read(&s).unwrap().sessions, 0);
    s.set_sessions(1);
    s.set_max_sessions(5000);
    assert_eq!(
        read(&s).unwrap(),
        Load {
            sessions: 1,
            max_sessions: Some(5000)
        }
    );
    s.set_max_sessions(0);
    assert_eq!(
        read(&s).unwrap(),
        Load {
            sessions: 1,
            max_sessions: None
        }
    );
}

#[test]
fn falls_back_to_json_status_when_status_fails() {
    let s = standin(Fault::ErrStatus);
    s.set_sessions(17);
    assert_eq!(
        read(&s).unwrap(),
        Load {
            sessions: 17,
            max_sessions: Some(1000)
        }
    );
    assert_eq!(
        commands_after(&s, 4),
        [
            "auth ClueCon",
            "api status",
            r#"api json {"command":"status","data":""}"#,
            "exit"
        ]
    );
}

#[test]
fn err_from_both_apis_is_an_error_naming_both() {
    let s = standin(Fault::ErrAll);
    let e = read(&s).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Remote(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: api status answered \"-ERR status Command not found!\"; \
             api json status answered \"-ERR json Command not found!\"",
            s.addr()
        )
    );
}

#[test]
fn wrong_password_is_rejected_and_never_shown() {
    let s = standin(Fault::None);
    let e = read_load(&s.addr().to_string(), "s3cret-Pa55", T).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::AuthRejected), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{}: authentication rejected", s.addr())
    );
    assert!(!format!("{e:?}").contains("s3cret"));
}

#[test]
fn password_with_a_line_break_is_refused_before_connecting() {
    let s = standin(Fault::None);
    let e = read_load(&s.addr().to_string(), "pw\n\napi fsctl shutdown", T).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::BadTarget(_)), "{e:?}");
    assert!(!e.to_string().contains("pw"));
    assert_eq!(s.accepted(), 0);
}

#[test]
fn silent_server_costs_one_timeout() {
    let s = standin(Fault::Silent);
    let started = Instant::now();
    let e = read_load(&s.addr().to_string(), "ClueCon", Duration::from_millis(200)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e.kind, ProbeErrorKind::Timeout { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: waiting for auth/request: timed out after 200ms",
            s.addr()
        )
    );
    // Well below three timeouts (one per step), with room for a loaded machine.
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(550),
        "{took:?}"
    );
}

#[test]
fn slow_server_is_bounded_by_the_overall_deadline_not_per_read() {
    // Each write is late by 80 ms: every single read would fit a 200 ms per-read timeout,
    // but the exchange (banner, auth reply, header, body) does not fit 200 ms overall.
    // So a timeout, not an answer, shows the deadline is overall.
    let s = standin(Fault::Slow(Duration::from_millis(80)));
    let e = read_load(&s.addr().to_string(), "ClueCon", Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Timeout { .. }), "{e:?}");
    // With enough time the same server answers.
    assert_eq!(read(&s).unwrap().sessions, 42);
}

#[test]
fn close_in_the_middle_of_the_body_is_an_error() {
    let s = standin(Fault::MidBodyClose);
    let e = read(&s).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Closed { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: waiting for api/response: connection closed by peer",
            s.addr()
        )
    );
}

#[test]
fn rude_rejection_is_reported() {
    let s = standin(Fault::RudeRejection);
    let e = read(&s).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: rejected: Access Denied, go away.", s.addr())
    );
}

#[test]
fn disconnect_notice_after_auth_is_an_error() {
    let s = standin(Fault::DisconnectAfterAuth);
    let e = read(&s).unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Closed { .. }), "{e:?}");
}

#[test]
fn one_byte_writes_are_reassembled() {
    let s = standin(Fault::ByteWrites);
    assert_eq!(
        read(&s).unwrap(),
        Load {
            sessions: 42,
            max_sessions: Some(1000)
        }
    );
}

#[test]
fn bad_content_length_is_a_protocol_error() {
    let s = standin(Fault::BadContentLength);
    let e = read(&s).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: protocol error: bad content-length \"-1\"", s.addr())
    );
}

#[test]
fn endless_header_block_is_cut_off() {
    let s = standin(Fault::EndlessHeader);
    let e = read(&s).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: protocol error: header block longer than 8192 bytes",
            s.addr()
        )
    );
}

#[test]
fn oversized_body_is_refused() {
    let e = scripted(&[
        "Content-Type: auth/request\n\n",
        "Content-Type: command/reply\nReply-Text: +OK accepted\n\n",
        "Content-Type: api/response\nContent-Length: 70000\n\n",
    ]);
    assert!(
        e.to_string()
            .ends_with("protocol error: body of 70000 bytes exceeds 65536"),
        "{e}"
    );
}

#[test]
fn unexpected_auth_reply_is_a_protocol_error() {
    let e = scripted(&[
        "Content-Type: auth/request\n\n",
        "Content-Type: command/reply\nReply-Text: maybe\n\n",
    ]);
    assert!(
        e.to_string()
            .ends_with("protocol error: unexpected auth reply \"maybe\""),
        "{e}"
    );
}

#[test]
fn permission_denied_for_api_is_a_remote_error() {
    let e = scripted(&[
        "Content-Type: auth/request\n\n",
        "Content-Type: command/reply\nReply-Text: +OK accepted\n\n",
        "Content-Type: command/reply\nReply-Text: -ERR permission denied\n\n",
    ]);
    assert!(
        e.to_string()
            .ends_with("waiting for api/response: got command/reply \"-ERR permission denied\""),
        "{e}"
    );
}

#[test]
fn events_and_crlf_framing_are_tolerated() {
    let body = "1 session(s) - peak 1, last 5min 1 \r\n20 session(s) max\r\n";
    let api = format!(
        "Content-Type: api/response\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let e = scripted(&[
        "\nContent-Type: auth/request\r\n\r\n",
        "Content-Type: command/reply\nReply-Text: +OK accepted\n\n",
        "Content-Type: text/event-plain\nContent-Length: 3\n\nx\ny",
        &api,
    ]);
    // `scripted` returns the error; here there must be none, so it reports the load instead.
    assert_eq!(
        e.to_string(),
        "ok: Load { sessions: 1, max_sessions: Some(20) }"
    );
}

#[test]
fn refused_port_fails_fast() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let e = read_load(&format!("127.0.0.1:{port}"), "ClueCon", T).unwrap_err();
    // Far below the timeout, with room for a loaded machine: refused is not waited for.
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());
    assert_eq!(
        e.to_string(),
        format!("127.0.0.1:{port}: connecting: connection refused (os error 111)")
    );
    assert!(e.is_unreachable());
}

/// Serves one connection with `writes`, one write each, then holds the socket open briefly.
/// Returns the client's error, or "ok: <load>" when it succeeded.
fn scripted(writes: &[&str]) -> Box<dyn std::fmt::Display> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writes: Vec<String> = writes.iter().map(|w| w.to_string()).collect();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        for w in writes {
            conn.write_all(w.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut sink = [0u8; 256];
        while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    });
    let result = read_load(&addr.to_string(), "ClueCon", Duration::from_millis(250));
    server.join().unwrap();
    match result {
        Ok(load) => Box::new(format!("ok: {load:?}")),
        Err(e) => Box::new(e),
    }
}

#[test]
fn standin_status_is_the_reference_example_byte_for_byte() {
    let body = esl_standin::status_text(&Config::default(), 42, 1000);
    assert_eq!(
        body,
        "UP 0 years, 3 days, 1 hour, 2 minutes, 5 seconds, 417 milliseconds, 11 microseconds\n\
         FreeSWITCH (Version 1.10.12-release 64bit) is ready\n\
         1234 session(s) since startup\n\
         42 session(s) - peak 57, last 5min 44 \n\
         3 session(s) per Sec out of max 30, peak 9, last 5min 4 \n\
         1000 session(s) max\n\
         min idle cpu 0.00/97.53\n\
         Current Stack Size/Max 240K/8192K\n"
    );
    assert_eq!(body.len(), 340);
}

#[test]
fn standin_status_uses_singular_forms_for_one() {
    let one =
        Duration::from_secs(365 * 86400 + 86400 + 3600 + 60 + 1) + Duration::from_micros(1001);
    let body = esl_standin::status_text(
        &Config {
            uptime: one,
            ..Config::default()
        },
        1,
        1,
    );
    assert!(body.starts_with(
        "UP 1 year, 1 day, 1 hour, 1 minute, 1 second, 1 millisecond, 1 microsecond\n"
    ));
    assert!(body.contains("\n1 session(s) - peak 57, last 5min 44 \n3 session(s) per"));
}

#[test]
fn standin_dialogue_is_byte_exact() {
    let s = standin(Fault::None);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut expect = |send: &str, want: &str| {
        c.write_all(send.as_bytes()).unwrap();
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "after sending {send:?}"
        );
    };
    expect("", "Content-Type: auth/request\n\n");
    expect(
        "api status\n\n",
        "Content-Type: command/reply\nReply-Text: -ERR command not found\n\n",
    );
    expect(
        "auth ClueCon\n\n",
        "Content-Type: command/reply\nReply-Text: +OK accepted\n\n",
    );
    let status = esl_standin::status_text(&Config::default(), 42, 1000);
    expect(
        "api status\n\n",
        &format!("Content-Type: api/response\nContent-Length: 340\n\n{status}"),
    );
    expect(
        "api fsctl max_sessions\n\n",
        "Content-Type: api/response\nContent-Length: 23\n\n+OK max sessions: 1000\n",
    );
    expect(
        "api show channels count\n\n",
        "Content-Type: api/response\nContent-Length: 11\n\n\n42 total.\n",
    );
    expect(
        "api nosuch\n\n",
        "Content-Type: api/response\nContent-Length: 31\n\n-ERR nosuch Command not found!\n",
    );
    expect(
        "exit\n\n",
        "Content-Type: command/reply\nReply-Text: +OK bye\n\n\
         Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
         Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
    );
}

#[test]
fn standin_wrong_password_gets_err_invalid_then_disconnect() {
    let s = standin(Fault::None);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"auth nope\n\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(
        all,
        "Content-Type: auth/request\n\n\
         Content-Type: command/reply\nReply-Text: -ERR invalid\n\n\
         Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
         Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    );
}

#[test]
fn standin_json_status_echoes_the_request() {
    let s = standin(Fault::None);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"auth ClueCon\n\napi json {\"command\":\"status\",\"data\":\"\"}\n\nexit\n\n")
        .unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    let json = concat!(
        r#"{"command":"status","data":"","status":"success","response":{"systemStatus":"ready","#,
        r#""uptime":{"years":0,"days":3,"hours":1,"minutes":2,"seconds":5,"milliseconds":417,"#,
        r#""microseconds":11},"version":"1.10.12-release 64bit","sessions":{"count":{"#,
        r#""total":1234,"active":42,"peak":57,"peak5Min":44,"limit":1000},"#,
        r#""rate":{"current":3,"max":30,"peak":9,"peak5Min":4}},"#,
        r#""idleCPU":{"used":0,"allowed":97.53},"stackSizeKB":{"current":240,"max":8192}}}"#
    );
    assert!(
        all.contains(&format!(
            "Content-Type: api/response\nContent-Length: {}\n\n{json}",
            json.len()
        )),
        "{all}"
    );
}

#[test]
fn pause_and_readiness_are_read_as_freeswitch_writes_them() {
    let s = standin(Fault::None);
    let status = |s: &StandIn| read_status(&s.addr().to_string(), None, "ClueCon", T).unwrap();
    let ready = status(&s);
    assert!(ready.ready && ready.paused_inbound == Some(false));
    assert_eq!(ready.refuses_calls(), None);
    // `fsctl pause inbound`: status still says ready, pause_check says true.
    s.set_paused(true, false);
    let paused = status(&s);
    assert!(paused.ready && paused.paused_inbound == Some(true));
    assert_eq!(
        paused.refuses_calls().as_deref(),
        Some("freeswitch has inbound calls paused (fsctl pause inbound)")
    );
    // `fsctl pause`: both ways, and status says "not ready".
    s.set_paused(true, true);
    let stopped = status(&s);
    assert!(!stopped.ready);
    assert!(stopped.refuses_calls().unwrap().contains("not ready"));
    // Outbound only: still takes calls.
    s.set_paused(false, true);
    assert_eq!(status(&s).refuses_calls(), None);
    // Four readings, each asking pause_check after status (connections
    // interleave in the stand-in's log, so count rather than compare order).
    let cmds = commands_after(&s, 16);
    let asked = |c: &str| cmds.iter().filter(|x| *x == c).count();
    assert_eq!(
        (asked("api status"), asked("api fsctl pause_check inbound")),
        (4, 4),
        "{cmds:?}"
    );

    // On the wire: a bare word without a newline, and "is not ready".
    s.set_paused(true, true);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut expect = |send: &str, want: &str| {
        c.write_all(send.as_bytes()).unwrap();
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want, "after {send:?}");
    };
    expect(
        "auth ClueCon\n\n",
        "Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: +OK accepted\n\n",
    );
    expect(
        "api fsctl pause_check inbound\n\n",
        "Content-Type: api/response\nContent-Length: 4\n\ntrue",
    );
    s.set_paused(false, false);
    expect(
        "api fsctl pause_check\n\n",
        "Content-Type: api/response\nContent-Length: 5\n\nfalse",
    );
    s.set_paused(true, true);
    let not_ready = esl_standin::status_text_ready(&Config::default(), 42, 1000, false);
    assert!(not_ready.contains("\nFreeSWITCH (Version 1.10.12-release 64bit) is not ready\n"));
    expect(
        "api status\n\n",
        &format!(
            "Content-Type: api/response\nContent-Length: {}\n\n{not_ready}",
            not_ready.len()
        ),
    );
}

#[test]
fn a_refused_pause_check_keeps_the_load() {
    let s = standin(Fault::DenyFsctl);
    let status = read_status(&s.addr().to_string(), None, "ClueCon", T).unwrap();
    assert_eq!(status.load.sessions, 42);
    assert_eq!(status.paused_inbound, None);
    assert_eq!(status.refuses_calls(), None);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let want =
        "Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: +OK accepted\n\n\
                Content-Type: command/reply\nReply-Text: -ERR permission denied\n\n";
    c.write_all(b"auth ClueCon\n\napi fsctl pause_check inbound\n\n")
        .unwrap();
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), want);
}
