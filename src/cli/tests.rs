//! The command lines of both binaries, parsed from words as a shell would pass them.

use clap::{CommandFactory, Parser};

use super::*;

fn words(args: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["pdns-ha".into()];
    v.extend(args.split_whitespace().map(OsString::from));
    v
}

fn p(args: &str) -> Result<PipeCommand, String> {
    PipeCli::try_parse_from(with_default_command(words(args)))
        .map(|c| c.command)
        .map_err(|e| e.to_string())
}

fn d(args: &str) -> Result<DaemonCommand, String> {
    DaemonCli::try_parse_from(words(args))
        .map(|c| c.command)
        .map_err(|e| e.to_string())
}

fn pipe(args: &str) -> PipeOptions {
    match p(args) {
        Ok(PipeCommand::Pipe(a)) => a.options(),
        other => panic!("{args}: {other:?}"),
    }
}

#[test]
fn definitions_are_consistent() {
    PipeCli::command().debug_assert();
    DaemonCli::command().debug_assert();
}

#[test]
fn pipe_is_the_default() {
    let want = PipeOptions {
        db: "/x.db".into(),
        algorithm: Algorithm::LeastLoad,
        dynamic_ttl: Secs(10),
        stale_after: Secs(30),
        cache: None,
        max_clock_skew: 5,
        pipe_counters: Some("/x.db.pipes".into()),
    };
    assert_eq!(
        pipe("--db /x.db --algorithm least-load --dynamic-ttl 10"),
        want
    );
    assert_eq!(pipe("--db /x.db --pipe-counters none").pipe_counters, None);
    assert_eq!(
        pipe("--db /x.db --pipe-counters /run/c").pipe_counters,
        Some("/run/c".into())
    );
    let o = pipe("--db x --memcached 127.0.0.1:11211,[::1]:11211 --stale-after 9");
    let want = CacheOptions {
        servers: "127.0.0.1:11211,[::1]:11211".into(),
        prefix: "pdns-ha".into(),
        ttl: 9,
        key_file: None,
    };
    assert_eq!(o.cache, Some(want));
    assert!(p("--db x --memcached-prefix y")
        .unwrap_err()
        .contains("--memcached <"));
    assert!(p("--db x --memcached-key-file k")
        .unwrap_err()
        .contains("--memcached <"));
    let o = pipe("pipe --db=/x.db");
    assert_eq!((o.algorithm, o.dynamic_ttl), (Algorithm::Static, Secs(30)));
    let Ok(PipeCommand::Status(s)) = p("status --db x --max-clock-skew 0") else {
        panic!()
    };
    assert_eq!(s.options().max_clock_skew, 0);
}

#[test]
fn every_memcached_command_takes_the_key_file() {
    let key = " --memcached 127.0.0.1:1 --memcached-key-file /k";
    for cmd in [
        "pipe --db x",
        "metric health --db x --target t up",
        "drain --db x --target t",
        "undrain --db x --target t",
        "status --db x",
        "explain --db x x",
    ] {
        let got = format!("{:?}", p(&format!("{cmd}{key}")));
        assert!(
            got.contains("memcached_key_file: Some(\"/k\")"),
            "{cmd}: {got}"
        );
    }
    for cmd in [
        "monitor --db x",
        "observe --db x --target t --tcp-ports 5060",
    ] {
        let got = format!("{:?}", d(&format!("{cmd}{key}")));
        assert!(
            got.contains("memcached_key_file: Some(\"/k\")"),
            "{cmd}: {got}"
        );
    }
}

#[test]
fn errors_name_the_problem() {
    let e = p("--algorithm static").unwrap_err();
    assert!(e.contains("--db <PATH>"), "{e}");
    assert!(p("--db x --algorithm fastest")
        .unwrap_err()
        .contains("\"fastest\""));
    assert!(p("--db x --bogus 1").unwrap_err().contains("--bogus"));
    assert!(p("--db").unwrap_err().contains("value is required"));
    assert!(p("--db x --db y")
        .unwrap_err()
        .contains("cannot be used multiple times"));
    assert!(p("--db x --stale-after -5").unwrap_err().contains("'-5'"));
    assert!(p("--db x --stale-after 0").unwrap_err().contains("above 0"));
    assert!(p("--db x --max-clock-skew soon")
        .unwrap_err()
        .contains("--max-clock-skew"));
    assert!(p("--db x stray").unwrap_err().contains("stray"));
    assert!(p("frobnicate").unwrap_err().contains("frobnicate"));
    assert!(d("monitor --db x --once=yes")
        .unwrap_err()
        .contains("--once"));
}

#[test]
fn daemons_are_handed_over_unparsed() {
    let Ok(PipeCommand::Monitor(h)) = p("monitor --db x --once --help") else {
        panic!()
    };
    assert_eq!(h.args, words("--db x --once --help")[1..].to_vec());
    let Ok(PipeCommand::Observe(h)) = p("observe") else {
        panic!()
    };
    assert!(h.args.is_empty());
}

#[test]
fn drain_and_undrain() {
    let Ok(PipeCommand::Drain(a)) = p("drain --db d --target sip1 --reason maintenance") else {
        panic!()
    };
    assert_eq!(
        (a.target.target.target.as_str(), a.reason.as_str()),
        ("sip1", "maintenance")
    );
    let Ok(PipeCommand::Drain(a)) = p("drain --db d --target sip1") else {
        panic!()
    };
    assert_eq!(a.reason, "");
    assert!(matches!(
        p("undrain --db d --target sip1"),
        Ok(PipeCommand::Undrain(_))
    ));
    assert!(p("undrain --db d --target sip1 --reason x")
        .unwrap_err()
        .contains("--reason"));
    assert!(p("drain --db d").unwrap_err().contains("--target"));
}

#[test]
fn init_takes_scripts() {
    let Ok(PipeCommand::Init(a)) = p("init --db d.db a.sql b.sql") else {
        panic!()
    };
    assert_eq!(a.scripts, vec![PathBuf::from("a.sql"), "b.sql".into()]);
}

#[test]
fn metrics_are_validated() {
    let Ok(PipeCommand::Metric(m)) =
        p("metric latency --db d --network * --target sip1 --ms 12.5 --monitor-id m")
    else {
        panic!()
    };
    let (metric, write, id) = m.split();
    let want = Metric::Latency {
        network: "*".into(),
        target: "sip1".into(),
        ms: 12.5,
    };
    assert_eq!((metric, write.db.db, id), (want, "d".into(), "m".into()));
    let Ok(PipeCommand::Metric(m)) = p("metric load --db d --target t --sessions 3 --max 9") else {
        panic!()
    };
    let want = Metric::Load {
        target: "t".into(),
        sessions: 3,
        max: Some(9),
    };
    assert_eq!(m.split().0, want);
    assert!(p("metric load --db d --target t --sessions -3")
        .unwrap_err()
        .contains("--sessions"));
    assert!(p("metric load --db d --target t --sessions 3 --max 0")
        .unwrap_err()
        .contains("--max"));
    assert!(p("metric health --db d --target t sideways")
        .unwrap_err()
        .contains("sideways"));
    assert!(p("metric health --db d --target t")
        .unwrap_err()
        .contains("up|down"));
    assert!(p("metric speed --db d").unwrap_err().contains("speed"));
    assert!(p("metric load --db d --sessions 1")
        .unwrap_err()
        .contains("--target"));
    assert!(p("metric health --db d --target t up --monitor-id a|b")
        .unwrap_err()
        .contains("no '|'"));
}

#[test]
fn observe_needs_a_target_and_a_source() {
    let Ok(DaemonCommand::Observe(o)) =
        d("observe --db d --target t --tcp-ports 5060,5061 --metrics-listen 127.0.0.1:9772")
    else {
        panic!()
    };
    let o = o.options();
    assert_eq!(o.tcp_ports, vec![5060, 5061]);
    assert_eq!(o.metrics_listen, Some("127.0.0.1:9772".parse().unwrap()));
    assert_eq!((o.interval, o.min_callers), (Secs(30), 3));
    assert!(
        d("observe --db d --target t --tcp-ports 5060 --metrics-listen :9772")
            .unwrap_err()
            .contains("--metrics-listen")
    );
    assert!(d("observe --db d --target t")
        .unwrap_err()
        .contains("--kamailio"));
    assert!(d("observe --db d --tcp-ports 5060")
        .unwrap_err()
        .contains("--target"));
    assert!(
        d("observe --db d --target t --tcp-ports 5060 --min-callers 0")
            .unwrap_err()
            .contains("--min-callers")
    );
    assert!(d("observe --db d --target t --tcp-ports 0")
        .unwrap_err()
        .contains("5060,5061"));
}

#[test]
fn explain_and_monitor() {
    let Ok(PipeCommand::Explain(e)) =
        p("explain --db d --client 198.51.100.7 _sip._udp.example.com SRV")
    else {
        panic!()
    };
    assert_eq!(e.client, Subnet::parse("198.51.100.7"));
    assert_eq!(
        (e.qname.as_str(), e.qtype.as_str(), e.algorithm),
        ("_sip._udp.example.com", "SRV", None)
    );
    assert!(p("explain --db d").unwrap_err().contains("QNAME"));
    assert!(p("explain --db d --client nowhere x")
        .unwrap_err()
        .contains("nowhere"));
    let Ok(DaemonCommand::Monitor(m)) = d("monitor --db d --once --timeout 200") else {
        panic!()
    };
    let m = m.options();
    assert!(m.once);
    assert_eq!(m.timeout, Duration::from_millis(200));
    assert_eq!(
        m.anti_flap,
        AntiFlap {
            down_after: 3,
            up_after: 2
        }
    );
    let Ok(DaemonCommand::Monitor(m)) =
        d("monitor --db d --monitor-id site-b --workers 4 --network site-b")
    else {
        panic!()
    };
    let m = m.options();
    assert_eq!((m.monitor_id.as_str(), m.workers), ("site-b", 4));
    assert_eq!(m.network.as_deref(), Some("site-b"));
    assert!(d("monitor --db d --monitor-id a|b")
        .unwrap_err()
        .contains("no '|'"));
    let Ok(DaemonCommand::Monitor(m)) = d("monitor --db d --metrics-listen [::1]:9771") else {
        panic!()
    };
    assert_eq!(m.metrics_listen, Some("[::1]:9771".parse().unwrap()));
    assert!(d("monitor --db d --metrics-listen localhost:9771")
        .unwrap_err()
        .contains("--metrics-listen"));
}

/// Every option a parser accepts is in its command's `--help`: nothing is hidden but the
/// hand-over's pass-through arguments.
#[test]
fn help_names_every_option() {
    fn walk(cmd: &mut clap::Command, path: &str) {
        let help = cmd.render_long_help().to_string();
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    help.contains(&format!("--{long}")),
                    "{path}: --{long} missing from --help:\n{help}"
                );
            }
            if arg.is_positional() && !arg.is_hide_set() {
                let name = arg.get_value_names().unwrap_or_default().join(" ");
                assert!(help.contains(&name), "{path}: {name} missing from --help");
            }
        }
        for sub in cmd.get_subcommands_mut() {
            let name = format!("{path} {}", sub.get_name());
            walk(sub, &name);
        }
    }
    walk(&mut PipeCli::command(), "pdns-ha");
    walk(&mut DaemonCli::command(), "pdns-ha-daemon");
}
