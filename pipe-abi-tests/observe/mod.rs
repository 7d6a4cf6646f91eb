//! `pdns-ha observe` with real parts: the kernel's TCP RTT of connections from two client
//! networks at different distances (network namespaces joined by TUN delay lines), the
//! Montreal/Vancouver case end to end (two Kamailio registrars, sipp phones behind delaying
//! relays, pdns_server answering dig with ECS), and bad input that must write nothing.

mod freeswitch;
pub(crate) mod keepalive;
mod tcp_rtt;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::monitor::kamailio::{poll, tails, Server};
use crate::netns;
use crate::observe::keepalive::{start_phone, start_registrar};
use crate::pdns::{require_all, Backend, DigResult, Pdns, TempDir};
use crate::udp_relay::UdpRelay;
use crate::util::{init_db, run_ok, BIN};

/// `pdns-ha observe --once --db DB ARGS...`, with its log.
fn observe(db: &Path, args: &[&str]) -> Output {
    run_ok(&[&["observe", "--once", "--db", db.to_str().unwrap()], args].concat())
}

fn log(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (network, target, ewma_ms, samples) rows of ha_latency, sorted.
fn latency_rows(db: &Path) -> Vec<(String, String, f64, i64)> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare(
            "SELECT network, target, ewma_ms, samples FROM ha_latency ORDER BY network, target",
        )
        .unwrap();
    let rows = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn observe_writes_the_kernel_tcp_rtt_of_each_network() {
    if !netns::available() {
        return;
    }
    let _alone = crate::util::timing_lock();
    let dir = TempDir::new("observe-tcp");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    let ms = Duration::from_millis;
    let server = netns::server().unwrap();
    // site-b (198.51.100.0/24) is 10 ms away one way, site-c (203.0.113.0/24) 40 ms; the
    // third network gets two callers only, below --min-callers 3.
    let b_hosts = ["198.51.100.10", "198.51.100.11", "198.51.100.12"];
    let c_hosts = ["203.0.113.10", "203.0.113.11", "203.0.113.12"];
    let a_hosts = ["192.0.2.10", "192.0.2.11"];
    let b = netns::Site::new(&server, "pdhb", "198.51.100.0/24", &b_hosts, ms(10)).unwrap();
    let c = netns::Site::new(&server, "pdhc", "203.0.113.0/24", &c_hosts, ms(40)).unwrap();
    let a = netns::Site::new(&server, "pdha", "192.0.2.0/25", &a_hosts, ms(1)).unwrap();
    let listener = server.run(|| TcpListener::bind((netns::SERVER, 5060)).unwrap());
    let to: SocketAddr = format!("{}:5060", netns::SERVER).parse().unwrap();
    let mut pairs = Vec::new();
    for (site, hosts) in [(&b, &b_hosts[..]), (&c, &c_hosts[..]), (&a, &a_hosts[..])] {
        for h in hosts {
            let client = site.ns.run(|| connect_from(h, to));
            let (accepted, _) = listener.accept().unwrap();
            pairs.push((client, accepted));
        }
    }
    // SIP over TCP keeps talking; each exchange gives the server's kernel an RTT sample.
    for _ in 0..4 {
        for (client, accepted) in &mut pairs {
            accepted.write_all(b"\r\n\r\n").unwrap();
            let mut buf = [0u8; 4];
            client.read_exact(&mut buf).unwrap();
            client.write_all(b"\r\n").unwrap();
            let mut buf = [0u8; 2];
            accepted.read_exact(&mut buf).unwrap();
        }
    }
    // observe runs where the SIP server runs: in the server's namespace.
    let out = server.run(|| {
        observe(
            &db,
            &["--target", "sip4.example.com", "--tcp-ports", "5060,5061"],
        )
    });
    let rows = latency_rows(&db);
    eprintln!("{rows:?}\n{}", log(&out));
    let row = |net: &str| {
        rows.iter()
            .find(|r| r.0 == net && r.1 == "sip4.example.com")
    };
    let (b_ms, c_ms) = (
        row("198.51.100.0/24").unwrap().2,
        row("203.0.113.0/24").unwrap().2,
    );
    assert!((19.0..40.0).contains(&b_ms), "site-b {b_ms} ms");
    assert!((79.0..110.0).contains(&c_ms), "site-c {c_ms} ms");
    assert!(row("192.0.2.0/24").is_none(), "two callers are not enough");
    assert!(log(&out).contains("network 192.0.2.0/24: 2 callers, fewer than --min-callers 3"));
}

/// A TCP connection from `source` to `to`; the socket is bound first, which std cannot do.
pub(crate) fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let src: std::net::Ipv4Addr = source.parse().unwrap();
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor the returned TcpStream owns; the addresses
    // are valid sockaddr_in values that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let stream = TcpStream::from_raw_fd(fd);
        let a = sin(src, 0);
        assert_eq!(
            libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len),
            0
        );
        let b = sin(*to.ip(), to.port());
        let rc = libc::connect(fd, (&b as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        stream
    }
}

/// Answers each connection with `replies[i]` (a whole HTTP response, or nothing), as long as
/// there are replies. Returns the URL.
pub(crate) fn stand_in(replies: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/RPC", listener.local_addr().unwrap());
    thread::spawn(move || {
        for reply in replies {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.strip_prefix("Content-Length: ") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let _ = s.write_all(reply.as_bytes());
        }
    });
    url
}

pub(crate) fn http(body: &str) -> String {
    format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The real ul.dump reply's m1 contact, `n` times, with callers and round trips chosen; each
/// address is its own subscriber (AOR `u` and the address), as one phone per address.
pub(crate) fn dump(contacts: &[(&str, i64)], last_keepalive: u64) -> String {
    let real = include_str!("../fixtures/kamailio-ul-dump.json");
    let start = real.find("{\n\t\t\t\t\t\t\t\"Info\"").unwrap();
    let end = real[start..].find("\n\t\t\t\t\t\t}").unwrap() + start + 8;
    let aor = &real[start..end];
    let aors: Vec<String> = contacts
        .iter()
        .map(|(ip, us)| {
            aor.replace("\"m1\"", &format!("\"u{ip}\""))
                .replace("127.1.0.21", ip)
                .replace("1168", &us.to_string())
                .replace("1795796565", &last_keepalive.to_string())
        })
        .collect();
    format!(
        "{{\"jsonrpc\":\"2.0\",\"result\":{{\"Domains\":[{{\"Domain\":{{\"Domain\":\"location\",\
         \"AoRs\":[{}]}}}}]}},\"id\":1}}",
        aors.join(",")
    )
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn observe_bad_input_writes_nothing_and_says_so_once() {
    let dir = TempDir::new("observe-bad");
    let db = dir.path().join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO ha_networks (cidr, name) VALUES ('127.1.0.0/16', 'montreal')")
        .unwrap();
    // The target's other readings, which observe must leave alone.
    for args in [
        &[
            "latency",
            "--network",
            "*",
            "--target",
            "sip7.example.com",
            "--ms",
            "7",
        ][..],
        &["health", "--target", "sip7.example.com", "up"],
    ] {
        run_ok(&[&["metric"], args, &["--db", db.to_str().unwrap()]].concat());
    }
    let before = latency_rows(&db);
    let health = || -> (i64, f64) {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT up, updated FROM ha_health WHERE target = 'sip7.example.com'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let health_before = health();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("kamailio down", format!("http://{closed}/RPC"), "connection refused"),
        ("garbage", stand_in(vec![http("<html>no</html>")]), "no result.Domains"),
        (
            "json-rpc error",
            stand_in(vec![http(
                "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":500,\"message\":\"Method Not Found\"},\"id\":1}",
            )]),
            "Method Not Found",
        ),
        ("cut short", stand_in(vec!["HTTP/1.0 200 OK\r\nContent-Length: 900\r\n\r\n{\"jsonrpc\"".into()]), "connection closed"),
        (
            "callers in no known network",
            stand_in(vec![http(&dump(&[("100.64.0.7", 5000), ("100.64.0.8", 5000), ("100.64.0.9", 5000)], t))]),
            "3 round trips from 3 callers in no known network",
        ),
        (
            "absurd round trips",
            stand_in(vec![http(&dump(&[("127.1.0.7", 20_000_000), ("127.1.0.8", 10_000_001), ("127.1.0.9", 0)], t))]),
            "2 round trips of 0 or over 10000 ms",
        ),
        (
            "stale keepalives",
            stand_in(vec![http(&dump(&[("127.1.0.7", 5000), ("127.1.0.8", 5000), ("127.1.0.9", 5000)], t - 3600))]),
            "3 stale",
        ),
        (
            "too few callers",
            stand_in(vec![http(&dump(&[("127.1.0.7", 5000), ("127.1.0.7", 6000), ("127.1.0.8", 5000)], t))]),
            "network 127.1.0.0/16: 2 callers, fewer than --min-callers 3",
        ),
    ];
    for (what, url, says) in cases {
        let out = observe(
            &db,
            &[
                "--target",
                "sip7.example.com",
                "--kamailio",
                &url,
                "--timeout",
                "2000",
            ],
        );
        let text = log(&out);
        eprintln!("--- {what}:\n{text}");
        assert!(text.contains(says), "{what}: {text}");
        let warnings = text.lines().filter(|l| l.contains(" WARN: ")).count();
        assert!(warnings <= 1, "{what}: one line per problem: {text}");
        assert_eq!(latency_rows(&db), before, "{what}: nothing written");
    }
    assert_eq!(health(), health_before, "health untouched");
    // Unknown target: a configuration error, said at once.
    let out = Command::new(BIN)
        .args([
            "observe",
            "--once",
            "--target",
            "nowhere.example.com",
            "--tcp-ports",
            "5060",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(log(&out).contains("not in ha_targets"), "{}", log(&out));
}

/// Phones per network and the two servers' distances, as in keepalive.rs.
const PHONES: [[&str; 3]; 2] = [
    ["127.1.0.11", "127.1.0.12", "127.1.0.13"],
    ["127.2.0.11", "127.2.0.12", "127.2.0.13"],
];
const NEAR: Duration = Duration::from_millis(5);
const FAR: Duration = Duration::from_millis(50);
const SRV: &str = "_sip._udp.example.com";

/// Which server a network is sent to first: by the priorities pdns answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    Montreal,
    Vancouver,
    /// Within the ranking's tolerance: the same priority.
    Tie,
    Neither,
}

fn first(r: &DigResult) -> First {
    let prio = |target: &str| {
        r.answer()
            .iter()
            .find_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
                [_, _, _, "SRV", p, _, _, t] if t == target => p.parse::<u16>().ok(),
                _ => None,
            })
    };
    match (prio("sip7.example.com."), prio("sip8.example.com.")) {
        (Some(m), Some(v)) if m < v => First::Montreal,
        (Some(m), Some(v)) if v < m => First::Vancouver,
        (Some(_), Some(_)) => First::Tie,
        _ => First::Neither,
    }
}

fn answers(pdns: &Pdns) -> [(First, Option<String>); 2] {
    ["127.1.0.0/16", "127.2.0.0/16"].map(|net| {
        let r = pdns.dig(&[&format!("+subnet={net}"), SRV, "SRV"]);
        (first(&r), r.client_subnet().map(str::to_owned))
    })
}

#[test]
fn observe_montreal_and_vancouver_end_to_end() {
    if !require_all(&["kamailio", "sipp", "pdns_server", "dig"]) {
        return;
    }
    let _alone = crate::util::timing_lock();
    let scratch = TempDir::new("observe-e2e");
    let dir = scratch.path();
    let db: PathBuf = dir.join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    // sip7 is the Montreal server, sip8 the Vancouver one (both in the first SRV tier); the
    // callers' networks are 127.1/16 (Montreal) and 127.2/16 (Vancouver).
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none';
             INSERT INTO ha_networks (cidr, name) VALUES
               ('127.1.0.0/16', 'montreal'), ('127.2.0.0/16', 'vancouver');",
        )
        .unwrap();
    let (montreal, m_sip, m_rpc) = start_registrar(dir, "kamailio-montreal");
    let (vancouver, v_sip, v_rpc) = start_registrar(dir, "kamailio-vancouver");
    let relays = [
        [UdpRelay::start(m_sip, NEAR), UdpRelay::start(v_sip, FAR)],
        [UdpRelay::start(m_sip, FAR), UdpRelay::start(v_sip, NEAR)],
    ];
    let ready = poll(Duration::from_secs(10), || {
        let up = |port| crate::observe::keepalive::rpc(port, "ul.dump").is_some();
        Some(()).filter(|_| up(m_rpc) && up(v_rpc))
    });
    assert!(ready.is_some(), "{}", tails(&[&montreal, &vancouver]));
    let mut phones: Vec<Server> = Vec::new();
    for (net, ips) in PHONES.iter().enumerate() {
        for (i, ip) in ips.iter().enumerate() {
            for (server, relay) in relays[net].iter().enumerate() {
                let name: &'static str = Box::leak(format!("sipp-{ip}-{server}").into_boxed_str());
                phones.push(start_phone(
                    dir,
                    name,
                    ip,
                    &format!("n{net}p{i}"),
                    relay.addr,
                ));
            }
        }
    }
    let m_url = format!("http://127.0.0.1:{m_rpc}/RPC");
    let v_url = format!("http://127.0.0.1:{v_rpc}/RPC");
    // One observe round per server, about as often as Kamailio sends keepalives (1 s).
    let round = || {
        let started = Instant::now();
        let m = observe(&db, &["--target", "sip7.example.com", "--kamailio", &m_url]);
        let v = observe(&db, &["--target", "sip8.example.com", "--kamailio", &v_url]);
        sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        format!("{}{}", log(&m), log(&v))
    };
    // Until every network has a reading from both servers (keepalives answered).
    let measured = poll(Duration::from_secs(20), || {
        round();
        let rows = latency_rows(&db);
        let mine = rows.iter().filter(|r| r.0.starts_with("127.")).count();
        (mine == 4).then_some(rows)
    });
    assert!(
        measured.is_some(),
        "no per-network readings: {:?}\n{}\n{}",
        latency_rows(&db),
        round(),
        tails(&[&montreal, &vancouver])
    );
    for _ in 0..3 {
        round();
    }
    let rows = latency_rows(&db);
    eprintln!("readings: {rows:?}");

    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm least-latency",
        bin.display(),
        db.display()
    );
    let pdns = Pdns::options(Backend::Pipe { command, abi: 3 })
        .setting("edns-subnet-processing", "yes")
        .start();
    // What an operator sees: docs/deployment.md shows it.
    let status = Command::new(BIN)
        .args(["status", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    let mut shown = format!(
        "$ pdns-ha status --db ha.db\n{}",
        crate::support::docs::target_rows(&status, &["sip7.example.com", "sip8.example.com"])
    );
    for net in ["127.1.0.0/16", "127.2.0.0/16"] {
        let r = pdns.dig(&[&format!("+subnet={net}"), SRV, "SRV"]);
        shown += &format!("$ dig +subnet={net} {SRV} SRV\n{}\n", r.normalized());
    }
    crate::support::docs::sample("observe", &shown);
    let scope = |net: &str| Some(format!("{net}/16"));
    assert_eq!(
        answers(&pdns),
        [
            (First::Montreal, scope("127.1.0.0/16")),
            (First::Vancouver, scope("127.2.0.0/16"))
        ],
        "each network its near server, scope = the network's prefix; readings {rows:?}"
    );

    // The networks trade places. Answers must follow within a bounded number of rounds,
    // each network changing once: near server, maybe a tie, then the other, never back.
    relays[0][0].set(FAR);
    relays[0][1].set(NEAR);
    relays[1][0].set(NEAR);
    relays[1][1].set(FAR);
    let mut seen: Vec<[First; 2]> = Vec::new();
    let mut rounds = 0;
    while rounds < 40 {
        round();
        rounds += 1;
        let a = answers(&pdns);
        seen.push([a[0].0, a[1].0]);
        if a[0].0 == First::Vancouver && a[1].0 == First::Montreal {
            break;
        }
    }
    eprintln!(
        "after the swap, rounds {rounds}: {seen:?}\nreadings {:?}",
        latency_rows(&db)
    );
    assert_eq!(
        seen.last(),
        Some(&[First::Vancouver, First::Montreal]),
        "answers did not swap in {rounds} rounds: {seen:?}"
    );
    let order = |f: First| match f {
        First::Montreal => 0,
        First::Tie => 1,
        First::Vancouver => 2,
        First::Neither => 9,
    };
    for net in 0..2 {
        let steps: Vec<i32> = seen.iter().map(|s| order(s[net])).collect();
        let monotone = match net {
            0 => steps.windows(2).all(|w| w[0] <= w[1]),
            _ => steps.windows(2).all(|w| w[0] >= w[1]),
        };
        assert!(monotone, "network {net} flapped: {seen:?}");
    }
}
