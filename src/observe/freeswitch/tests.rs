//! Tests for the FreeSWITCH call source: events in, calls and figures out.

use super::*;

const HANGUP_PLAIN: &str =
    include_str!("../../../pipe-abi-tests/fixtures/freeswitch-hangup-plain.txt");
const HANGUP_JSON: &str =
    include_str!("../../../pipe-abi-tests/fixtures/freeswitch-hangup-json.txt");
const RTCP_PLAIN: &str = include_str!("../../../pipe-abi-tests/fixtures/freeswitch-rtcp-plain.txt");

const UUID: &str = "7f4de4bc-1c2b-4b5a-9f1e-2a3b4c5d6e7f";

/// The body of a framed example.
fn body(framed: &str) -> &[u8] {
    framed.split_once("\n\n").unwrap().1.as_bytes()
}

/// A RECV_RTCP_MESSAGE body with the given blocks: (ssrc, fraction, rtt seconds).
fn rtcp(uuid: &str, rate: u32, blocks: &[(&str, u8, f64)]) -> String {
    let mut s = format!("Event-Name: RECV_RTCP_MESSAGE\nUnique-ID: {uuid}\nRTP-Rate: {rate}\n");
    for (i, (ssrc, fraction, rtt)) in blocks.iter().enumerate() {
        s += &format!(
            "Source{i}-SSRC: {ssrc}\nSource{i}-Fraction: {fraction}\nRtt{i}-Avg: {rtt:.6}\n"
        );
    }
    s + "\n"
}

fn hangup(uuid: &str, extra: &str) -> String {
    format!("Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: {uuid}\n{extra}\n")
}

fn add(calls: &mut Calls, body: &str, header: Option<&str>) {
    calls.add(parse(Format::Plain, body.as_bytes(), header));
}

#[test]
fn the_reference_events_parse_in_both_formats() {
    let e = parse(Format::Plain, body(RTCP_PLAIN), None);
    let mut blocks = [Block::default(); MAX_BLOCKS];
    blocks[0] = Block {
        ssrc: Some(0x1a2b3c4d),
        fraction: Some(0),
        rtt_s: Some(0.042114),
    };
    assert_eq!(
        e,
        Event::Rtcp {
            uuid: UUID.into(),
            rate: Some(8000),
            blocks
        }
    );
    let want = Event::Hangup {
        uuid: UUID.into(),
        // No auto-adjust, no caller header: the SDP address, not the SIP source.
        caller: Some("198.51.100.23".into()),
        mos: Some(4.49),
    };
    assert_eq!(parse(Format::Plain, body(HANGUP_PLAIN), None), want);
    assert_eq!(parse(Format::Json, body(HANGUP_JSON), None), want);
    assert_eq!(
        parse(Format::Json, b"{\"Event-Name\":\"HEARTBEAT\"}", None),
        Event::Other
    );
}

#[test]
fn the_caller_address_rule() {
    let nat = "variable_remote_media_ip: 10.0.0.9\nvariable_remote_audio_ip: 203.0.113.9\n";
    let caller = |extra: &str, header: Option<&str>| match parse(
        Format::Plain,
        hangup("u", extra).as_bytes(),
        header,
    ) {
        Event::Hangup { caller, .. } => caller.map(Cow::into_owned),
        e => panic!("{e:?}"),
    };
    // NAT latching on: the RTP peer; off: the SDP address.
    let latched = format!("{nat}variable_rtp_auto_adjust_audio: true\n");
    assert_eq!(caller(&latched, None).as_deref(), Some("203.0.113.9"));
    assert_eq!(caller(nat, None).as_deref(), Some("10.0.0.9"));
    // A Kamailio in front adds X-AUTH-IP; the header wins when configured and present.
    let proxied = format!(
        "{latched}Caller-Network-Addr: 192.0.2.1\nvariable_sip_h_X-AUTH-IP: 198.51.100.7\n"
    );
    let h = Some("variable_sip_h_X-AUTH-IP");
    assert_eq!(caller(&proxied, h).as_deref(), Some("198.51.100.7"));
    assert_eq!(caller(&proxied, None).as_deref(), Some("203.0.113.9"));
    assert_eq!(
        caller(&latched, h).as_deref(),
        Some("203.0.113.9"),
        "header absent"
    );
    // URL-encoded IPv6, as FreeSWITCH writes a colon.
    let v6 = "variable_remote_media_ip: 2001%3Adb8%3A%3A7\n";
    assert_eq!(caller(v6, None).as_deref(), Some("2001:db8::7"));
    assert_eq!(caller("", None), None);
}

#[test]
fn a_call_is_its_last_non_zero_audio_round_trip() {
    let mut c = Calls::default();
    let me = "1a2b3c4d";
    // A sender report without blocks comes first: it pins no stream.
    add(&mut c, &rtcp("a", 8000, &[]), None);
    add(&mut c, &rtcp("a", 8000, &[(me, 0, 0.0)]), None);
    add(&mut c, &rtcp("a", 8000, &[(me, 26, 0.040)]), None);
    // Video: the same call, another clock rate, ignored.
    add(&mut c, &rtcp("a", 90000, &[("99999999", 128, 0.500)]), None);
    // A receiver-only report repeats the last sender report's fields (not parsed) and keeps
    // FreeSWITCH's block; a later zero does not erase the round trip.
    add(&mut c, &rtcp("a", 8000, &[(me, 0, 0.050)]), None);
    add(&mut c, &rtcp("a", 8000, &[(me, 0, 0.0)]), None);
    // A report whose block 0 is about another stream: FreeSWITCH's block is found by SSRC.
    add(
        &mut c,
        &rtcp("a", 8000, &[("0badf00d", 255, 0.9), (me, 0, 0.052)]),
        None,
    );
    assert_eq!(c.in_flight(), 1);
    add(
        &mut c,
        &hangup(
            "a",
            "variable_remote_media_ip: 192.0.2.7\nvariable_rtp_audio_in_mos: 4.40\n",
        ),
        None,
    );
    let (done, counts) = c.take();
    assert_eq!(done.len(), 1);
    let d = done[0];
    assert_eq!(d.caller, "192.0.2.7".parse::<IpAddr>().unwrap());
    assert!((d.rtt_ms - 52.0).abs() < 1e-9, "{}", d.rtt_ms);
    assert_eq!(d.mos, Some(4.4));
    let loss = d.loss.unwrap();
    assert!((loss - 26.0 / 256.0 / 5.0).abs() < 1e-12, "{loss}");
    assert_eq!((counts.rtcp, counts.video, counts.measured), (6, 1, 1));
    assert_eq!(c.in_flight(), 0);
    assert!(c.take().0.is_empty(), "taken once");
}

#[test]
fn calls_without_a_round_trip_count_for_nothing() {
    let mut c = Calls::default();
    // No RTCP at all (rtcp-audio-interval-msec unset), and RTCP that never had an RTT.
    add(
        &mut c,
        &hangup("no-rtcp", "variable_remote_media_ip: 192.0.2.7\n"),
        None,
    );
    add(&mut c, &rtcp("zero", 8000, &[("1", 0, 0.0)]), None);
    add(
        &mut c,
        &hangup("zero", "variable_remote_media_ip: 192.0.2.7\n"),
        None,
    );
    // A round trip but no address to file it under.
    add(&mut c, &rtcp("lost", 8000, &[("1", 0, 0.02)]), None);
    add(
        &mut c,
        &hangup("lost", "variable_remote_media_ip: somewhere\n"),
        None,
    );
    let (done, counts) = c.take();
    assert!(done.is_empty());
    assert_eq!((counts.no_rtt, counts.no_caller, counts.hangups), (2, 1, 3));
}

#[test]
fn calls_in_flight_are_capped_oldest_first() {
    let mut c = Calls::with_caps(3, 2);
    for i in 0..5 {
        add(
            &mut c,
            &rtcp(&format!("c{i}"), 8000, &[("1", 0, 0.01)]),
            None,
        );
    }
    assert_eq!((c.in_flight(), c.counts.evicted), (3, 2));
    // c0 and c1 were dropped: their hangups find nothing.
    for i in 0..5 {
        add(
            &mut c,
            &hangup(&format!("c{i}"), "variable_remote_media_ip: 192.0.2.1\n"),
            None,
        );
    }
    let (done, counts) = c.take();
    assert_eq!(done.len(), 2, "the round keeps two");
    assert_eq!((counts.no_rtt, counts.done_dropped), (2, 1));
    // The order map shrinks with the calls: a long run does not grow it.
    assert!(c.order.is_empty() && c.live.is_empty());
}

#[test]
fn figures_are_medians_of_callers_with_quality_beside() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let call = |caller: &str, rtt_ms: f64, mos: Option<f64>, loss: Option<f64>| Done {
        caller: ip(caller),
        rtt_ms,
        mos,
        loss,
    };
    let done = [
        // One busy caller with three calls counts once, with its median.
        call("192.0.2.1", 10.0, Some(4.5), Some(0.0)),
        call("192.0.2.1", 11.0, Some(4.5), Some(0.125)),
        call("192.0.2.1", 500.0, Some(1.0), Some(0.5)),
        call("192.0.2.2", 20.0, Some(4.25), None),
        call("192.0.2.3", 30.0, None, Some(0.25)),
        // Too few callers in the other network; none at all in a third.
        call("198.51.100.1", 5.0, Some(4.5), Some(0.0)),
        call("203.0.113.1", 5.0, Some(4.5), Some(0.0)),
    ];
    let net = |a: IpAddr| match a.to_string() {
        s if s.starts_with("192.0.2.") => Some("192.0.2.0/24"),
        s if s.starts_with("198.51.100.") => Some("198.51.100.0/24"),
        _ => None,
    };
    let (nets, quality, dropped) = figures(&done, net, &Policy::default());
    assert_eq!(nets.len(), 1);
    assert_eq!((nets[0].ms, nets[0].callers, nets[0].samples), (20.0, 3, 5));
    assert_eq!(
        quality,
        [Quality {
            network: "192.0.2.0/24".into(),
            // Callers' medians 4.5 and 4.25: their mean.
            mos: Some(4.375),
            // Callers' medians 0.125 and 0.25.
            loss: Some(0.1875),
            callers: 3,
            calls: 5,
        }]
    );
    assert_eq!(dropped.too_few_callers, [("198.51.100.0/24".to_owned(), 1)]);
    assert_eq!(dropped.unknown_network, 1);
}

#[test]
fn the_password_file_is_its_first_line() {
    let dir = std::env::temp_dir().join(format!("pdns-ha-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("pw");
    std::fs::write(&f, "s3cret pass\nsecond line\n").unwrap();
    let e = Endpoint::new("127.0.0.1:8021", Some(&f), Some("X-AUTH-IP")).unwrap();
    assert_eq!(e.password, "s3cret pass");
    assert_eq!(
        e.caller_variable.as_deref(),
        Some("variable_sip_h_X-AUTH-IP")
    );
    assert!(
        !format!("{e:?}").contains("s3cret"),
        "never in a debug print"
    );
    std::fs::write(&f, "crlf\r\n").unwrap();
    assert_eq!(
        Endpoint::new("h:1", Some(&f), None).unwrap().password,
        "crlf"
    );
    std::fs::write(&f, "\nlater").unwrap();
    assert_eq!(
        Endpoint::new("h:1", Some(&f), None)
            .unwrap_err()
            .to_string(),
        format!(
            "--freeswitch-password-file {}: the first line is empty or not UTF-8",
            f.display()
        )
    );
    assert_eq!(
        Endpoint::new("h:1", None, None).unwrap().password,
        "ClueCon"
    );
    let e = Endpoint::new("h:1", Some(&dir), None).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "--freeswitch-password-file {0}: {0} is a directory, not a regular file",
            dir.display()
        )
    );
    assert!(Endpoint::new("h:1", None, Some("X-A: b")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
