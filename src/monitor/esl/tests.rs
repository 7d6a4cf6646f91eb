//! Event Socket reply parsing on exact bytes; the dialogue itself is tested
//! against the stand-in in `pipe-abi-tests/esl.rs`.

use super::*;

#[test]
fn parse_status_uses_the_current_line_not_since_startup() {
    let body = "UP 0 years, 0 days, 0 hours, 0 minutes, 1 second, 0 milliseconds, 0 microseconds\n\
                FreeSWITCH (Version 1.10.12-release 64bit) is ready\n\
                999 session(s) since startup\n\
                0 session(s) - peak 0, last 5min 0 \n\
                0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n\
                1000 session(s) max\n";
    let load = parse_status(body.as_bytes()).unwrap();
    assert_eq!(
        load,
        Load {
            sessions: 0,
            max_sessions: Some(1000)
        }
    );
    assert_eq!(
        parse_status(b"999 session(s) since startup\n1000 session(s) max\n"),
        None
    );
    assert_eq!(parse_status(b"-ERR no reply\n"), None);
    assert_eq!(
        parse_status(b"-1 session(s) - peak 0, last 5min 0 \n"),
        None
    );
    // Without the max line the load is still known.
    assert_eq!(
        parse_status(b"5 session(s) - peak 9, last 5min 6 \n"),
        Some(Load {
            sessions: 5,
            max_sessions: None
        })
    );
}

#[test]
fn parse_json_status_reads_active_not_total() {
    let body = concat!(
        r#"{"command":"status","data":"","status":"success","response":{"sessions":{"count":"#,
        r#"{"total":7437938,"active":2886,"peak":4969,"peak5Min":2934,"limit":10000}}}}"#
    )
    .as_bytes();
    assert_eq!(
        parse_json_status(body).unwrap(),
        Load {
            sessions: 2886,
            max_sessions: Some(10000)
        }
    );
    let err = br#"{"command":"status","data":"","status":"error","message":"Invalid Command"}"#;
    assert_eq!(
        parse_json_status(err).unwrap_err().to_string(),
        "api json status answered \"error Invalid Command\""
    );
    assert!(parse_json_status(b"{\"status\":\"success\"}").is_err());
    assert!(parse_json_status(b"garbage").is_err());
}

// The stand-in itself: byte-exact bodies and dialogue.

#[test]
fn ready_line_decides_readiness() {
    let ready = b"FreeSWITCH (Version 1.10.12-release 64bit) is ready\n";
    let not_ready = b"FreeSWITCH (Version 1.10.12-release 64bit) is not ready\n";
    assert!(says_ready(ready));
    assert!(!says_ready(not_ready));
    assert!(says_ready(b"42 session(s) - peak 57, last 5min 44 \n"));
}
