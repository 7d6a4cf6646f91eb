//! Tests for the Event Socket framing: bytes in, frames and headers out. The three events
//! are the reference's examples byte for byte (`reference/freeswitch-call-quality.md` §4a-c).

use super::*;

const HANGUP_PLAIN: &str =
    include_str!("../../../pipe-abi-tests/fixtures/freeswitch-hangup-plain.txt");
const HANGUP_JSON: &str =
    include_str!("../../../pipe-abi-tests/fixtures/freeswitch-hangup-json.txt");
const RTCP_PLAIN: &str = include_str!("../../../pipe-abi-tests/fixtures/freeswitch-rtcp-plain.txt");

/// A reader that hands out `step` bytes per read, as a slow network does.
struct Drip<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Drip<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn frames(bytes: &[u8], step: usize, keep: usize) -> (Vec<Next>, WireError) {
    let mut r = Reader::new(Drip { data: bytes, step }, keep, 1 << 20);
    let mut got = Vec::new();
    loop {
        match r.read() {
            Ok(n) => got.push(n),
            Err(e) => return (got, e),
        }
    }
}

fn headers(format: Format, body: &[u8]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    each_header(format, body, |n, raw| {
        v.push((n.to_owned(), raw.decode().into_owned()))
    });
    v
}

fn body(next: &Next) -> &[u8] {
    match next {
        Next::Frame(f) => &f.body,
        other => panic!("not a frame: {other:?}"),
    }
}

#[test]
fn the_reference_events_frame_whole_in_any_split() {
    let stream = format!(
        "Content-Type: auth/request\n\n{HANGUP_PLAIN}{HANGUP_JSON}{RTCP_PLAIN}\
         Content-Type: command/reply\nReply-Text: +OK bye\n\n"
    );
    for step in [1, 2, 3, 7, 4096, 1 << 20] {
        let (got, end) = frames(stream.as_bytes(), step, 1 << 20);
        assert!(matches!(end, WireError::Closed), "{step}: {end}");
        assert_eq!(got.len(), 5, "{step}");
        let Next::Frame(auth) = &got[0] else { panic!() };
        assert_eq!(auth.content_type(), "auth/request");
        assert!(auth.body.is_empty());
        let Next::Frame(hangup) = &got[1] else {
            panic!()
        };
        assert_eq!(hangup.content_type(), "text/event-plain");
        assert_eq!(hangup.body.len(), 1293);
        assert!(hangup
            .body
            .ends_with(b"variable_rtp_audio_in_mos: 4.49\n\n"));
        assert_eq!(body(&got[2]).len(), 1369);
        assert!(
            body(&got[2]).ends_with(b"\"4.49\"}"),
            "json has no trailing newline"
        );
        assert_eq!(body(&got[3]).len(), 975);
        let Next::Frame(bye) = &got[4] else { panic!() };
        assert_eq!(bye.header("reply-text"), Some("+OK bye"));
    }
}

#[test]
fn plain_and_json_give_the_same_headers_duplicates_kept() {
    let (got, _) = frames(
        format!("{HANGUP_PLAIN}{HANGUP_JSON}").as_bytes(),
        4096,
        1 << 20,
    );
    let plain = headers(Format::Plain, body(&got[0]));
    let json = headers(Format::Json, body(&got[1]));
    assert_eq!(plain, json);
    assert_eq!(plain.len(), 34);
    let causes: Vec<&(String, String)> =
        plain.iter().filter(|(n, _)| n == "Hangup-Cause").collect();
    assert_eq!(causes.len(), 2, "the duplicate Hangup-Cause");
    let value = |n: &str| plain.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(value("FreeSWITCH-IPv6"), Some("::1"));
    assert_eq!(
        value("Event-Date-GMT"),
        Some("Wed, 15 Jan 2025 10:20:30 GMT")
    );
    assert_eq!(
        value("Channel-Name"),
        Some("sofia/internal/1001@192.0.2.10")
    );
    assert_eq!(value("variable_rtp_audio_in_mos"), Some("4.49"));
}

#[test]
fn url_decoding_as_freeswitch_encodes() {
    assert_eq!(url_decode("%3A%3A1"), "::1");
    assert_eq!(url_decode("caf%C3%A9"), "café");
    assert_eq!(url_decode("a%2Bb%20c"), "a+b c");
    // Left alone: a lone or broken escape, and a plus FreeSWITCH would have written %2B.
    assert_eq!(url_decode("100%"), "100%");
    assert_eq!(url_decode("%zz%4"), "%zz%4");
    assert_eq!(url_decode("a+b"), "a+b");
    assert_eq!(url_decode("%3a"), ":");
    assert!(matches!(url_decode("plain"), Cow::Borrowed("plain")));
}

#[test]
fn json_escapes_and_non_string_members() {
    let body = br#"{"A":"x\"y\\z\n\u00e9\ud83d\ude00","Multi":["1","2"],"N":{"k":"]"},"B":"b\/c","_body":"x"}"#;
    assert_eq!(
        headers(Format::Json, body),
        [
            ("A".to_owned(), "x\"y\\z\né😀".to_owned()),
            ("B".to_owned(), "b/c".to_owned()),
            ("_body".to_owned(), "x".to_owned()),
        ]
    );
    // Broken JSON: what came before the break is read, nothing after.
    assert_eq!(
        headers(Format::Json, br#"{"A":"1","B":"#),
        [("A".to_owned(), "1".to_owned())]
    );
    assert!(headers(Format::Json, b"[1,2]").is_empty());
    assert_eq!(json_unescape(r"\u12"), "\u{fffd}");
}

#[test]
fn a_plain_body_ends_at_its_blank_line() {
    let body = b"Event-Name: CUSTOM\nContent-Length: 5\n\nA: b\n";
    assert_eq!(
        headers(Format::Plain, body),
        [
            ("Event-Name".to_owned(), "CUSTOM".to_owned()),
            ("Content-Length".to_owned(), "5".to_owned())
        ]
    );
    // Bytes that are not UTF-8 end the walk there.
    assert_eq!(headers(Format::Plain, b"A: 1\nB: \xff\nC: 3\n").len(), 1);
}

#[test]
fn an_oversized_body_is_read_past_and_the_stream_goes_on() {
    let big = "x".repeat(5000);
    let stream =
        format!("Content-Length: 5000\nContent-Type: text/event-plain\n\n{big}{RTCP_PLAIN}");
    for step in [1, 100, 1 << 20] {
        let (got, end) = frames(stream.as_bytes(), step, 1000);
        assert!(matches!(end, WireError::Closed));
        assert_eq!(
            got[0],
            Next::Oversized {
                content_type: "text/event-plain".into(),
                len: 5000
            }
        );
        assert_eq!(body(&got[1]).len(), 975, "{step}");
    }
}

#[test]
fn hostile_streams_end_with_a_reason() {
    // A gibibyte announced: refused at once, not read for minutes.
    let (_, e) = frames(b"Content-Length: 1073741824\n\n", 64, 1000);
    assert!(matches!(e, WireError::TooBig(1_073_741_824)), "{e}");
    // A header block that never ends.
    let endless = "X: y\n".repeat(10_000);
    let (got, e) = frames(endless.as_bytes(), 4096, 1000);
    assert!(got.is_empty());
    assert!(matches!(e, WireError::HeadTooLong), "{e}");
    // One endless line, dripped.
    let line = "A".repeat(MAX_HEAD + 10);
    let (_, e) = frames(line.as_bytes(), 3, 1000);
    assert!(matches!(e, WireError::HeadTooLong), "{e}");
    for bad in [
        "Content-Length: -1\n\n",
        "Content-Length: 1e3\n\n",
        "no colon here\n\n",
    ] {
        let (_, e) = frames(bad.as_bytes(), 4096, 1000);
        assert!(matches!(e, WireError::Malformed(_)), "{bad:?}: {e}");
    }
    // Cut short in the body.
    let (_, e) = frames(&RTCP_PLAIN.as_bytes()[..500], 4096, 1 << 20);
    assert!(matches!(e, WireError::Closed));
}

#[test]
fn crlf_and_stray_line_ends_are_tolerated() {
    let (got, _) = frames(
        b"\n\r\nContent-Type: command/reply\r\nReply-Text: +OK\r\n\r\n",
        1,
        100,
    );
    let Next::Frame(f) = &got[0] else { panic!() };
    assert_eq!(f.header("Reply-Text"), Some("+OK"));
}
