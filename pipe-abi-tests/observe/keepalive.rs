//! Registrar keepalives as a latency source, with real parts: two Kamailio registrars (the
//! Montreal and the Vancouver server), phones (sipp) in two client networks, 127.1.0.0/16 and
//! 127.2.0.0/16, each registered with both servers through a relay that delays datagrams, so
//! that each network is near one server and far from the other. Kamailio's own keepalive
//! round trips (`KA-Roundtrip` in `ul.dump`) must show that geography, and follow it when the
//! delays are swapped.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::monitor::kamailio::{poll, tails, Server};
use crate::pdns::{find_tool, require_all, TempDir};
use crate::udp_relay::UdpRelay;

const CONFIG: &str = include_str!("../fixtures/kamailio-registrar.cfg");
const SCENARIO: &str = include_str!("../fixtures/sipp-register.xml");

/// Phones per network: the observer's default needs three distinct callers.
const PHONES: [[&str; 3]; 2] = [
    ["127.1.0.11", "127.1.0.12", "127.1.0.13"],
    ["127.2.0.11", "127.2.0.12", "127.2.0.13"],
];
const NEAR: Duration = Duration::from_millis(5);
const FAR: Duration = Duration::from_millis(50);

/// A Kamailio registrar on free ports: (server, SIP over UDP, JSON-RPC over HTTP).
pub fn start_registrar(dir: &Path, name: &'static str) -> (Server, SocketAddr, u16) {
    // Both sockets held until both ports are chosen (see kamailio.rs for why).
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sip, rpc) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap().port());
    let cfg = dir.join(format!("{name}.cfg"));
    let text = CONFIG
        .replace("@SIP_PORT@", &sip.port().to_string())
        .replace("@RPC_PORT@", &rpc.to_string());
    fs::write(&cfg, text).unwrap();
    drop((udp, tcp));
    let run = dir.join(name);
    fs::create_dir_all(&run).unwrap();
    let program = find_tool("kamailio").unwrap().display().to_string();
    let (cfg, run) = (cfg.display().to_string(), run.display().to_string());
    #[rustfmt::skip]
    let server = Server::start(name, dir, &program, &[
        "-f", &cfg, "-DD", "-E", "-m", "64", "-M", "8", "-Y", &run,
    ]);
    (server, sip, rpc)
}

/// A phone at `ip` registered as `user` through `via`, answering keepalives until killed.
pub fn start_phone(
    dir: &Path,
    name: &'static str,
    ip: &str,
    user: &str,
    via: SocketAddr,
) -> Server {
    let scenario = dir.join("sipp-register.xml");
    if !scenario.exists() {
        fs::write(&scenario, SCENARIO).unwrap();
    }
    // A free port on the phone's own address; sipp binds it a moment later.
    let port = UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sipp = find_tool("sipp").unwrap().display().to_string();
    let (scenario, via, port) = (
        scenario.display().to_string(),
        via.to_string(),
        port.to_string(),
    );
    #[rustfmt::skip]
    let phone = Server::start(name, dir, &sipp, &[
        "-sf", &scenario, &via, "-i", ip, "-p", &port, "-s", user, "-m", "1",
        "-d", "600000", "-aa", "-nostdin", "-timeout", "620s",
    ]);
    phone
}

/// One JSON-RPC call over HTTP; the body, or `None` if Kamailio does not answer (yet).
pub fn rpc(port: u16, method: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let body = format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":1}}"#);
    let req = format!(
        "POST /RPC HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    // Kamailio keeps the connection open after the reply: read up to Content-Length.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())?;
            if body.len() >= len {
                return Some(body[..len].to_string());
            }
        }
    }
    None
}

/// (received address, KA-Roundtrip in ms, Last-Keepalive) per contact, read from ul.dump with
/// plain string search: the test checks Kamailio, not the parser under test.
pub fn contacts(dump: &str) -> Vec<(String, f64, u64)> {
    let field = |chunk: &str, key: &str| -> Option<String> {
        let at = chunk.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = chunk[at..].trim_start();
        let end = rest.find([',', '\n', '}'])?;
        Some(rest[..end].trim().trim_matches('"').to_string())
    };
    dump.split("\"Contact\":")
        .skip(1)
        .filter_map(|c| {
            let received = field(c, "Received")?;
            let host = received
                .strip_prefix("sip:")?
                .split(':')
                .next()?
                .to_string();
            let rtt: f64 = field(c, "KA-Roundtrip")?.parse().ok()?;
            let last: u64 = field(c, "Last-Keepalive")?.parse().ok()?;
            Some((host, rtt / 1000.0, last))
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One phone's keepalives as seen: (Last-Keepalive, ms), oldest first.
type Answers = Vec<(u64, f64)>;

/// Keepalive round trips per server and phone, one per keepalive answered (a new
/// `Last-Keepalive`) at or after `since`.
struct Series {
    since: u64,
    /// [server][network][phone].
    seen: [[[Answers; 3]; 2]; 2],
}

impl Series {
    fn new(since: u64) -> Series {
        Series {
            since,
            seen: Default::default(),
        }
    }

    fn read(&mut self, server: usize, rpc_port: u16) {
        let Some(dump) = rpc(rpc_port, "ul.dump") else {
            return;
        };
        let c = contacts(&dump);
        for (net, phones) in PHONES.iter().enumerate() {
            for (i, ip) in phones.iter().enumerate() {
                let Some((_, ms, last)) = c.iter().find(|(h, _, _)| h == ip) else {
                    continue;
                };
                let v = &mut self.seen[server][net][i];
                if *ms > 0.0 && *last >= self.since && v.last().is_none_or(|(l, _)| l != last) {
                    v.push((*last, *ms));
                }
            }
        }
    }

    /// Per server and network, each phone's smallest round trip over its first `n`
    /// keepalives, once every phone has answered `n`. The smallest, because a busy machine
    /// only ever adds to a round trip: at load 13 on 2 cores, single keepalives of every
    /// phone at once came back 10 to 100 ms late.
    fn least_of(&self, n: usize) -> Option<[[Vec<f64>; 2]; 2]> {
        let mut out: [[Vec<f64>; 2]; 2] = Default::default();
        for (server, nets) in self.seen.iter().enumerate() {
            for (net, phones) in nets.iter().enumerate() {
                for v in phones {
                    let first = v.get(..n)?;
                    out[server][net].push(first.iter().map(|x| x.1).fold(f64::MAX, f64::min));
                }
            }
        }
        Some(out)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn keepalive_round_trips_follow_each_networks_distance() {
    if !require_all(&["kamailio", "sipp"]) {
        return;
    }
    let _alone = crate::util::timing_lock();
    // Declared first, so dropped last, after every process is gone.
    let scratch = TempDir::new("keepalive");
    let dir = scratch.path();
    let (montreal, m_sip, m_rpc) = start_registrar(dir, "kamailio-montreal");
    let (vancouver, v_sip, v_rpc) = start_registrar(dir, "kamailio-vancouver");
    // relays[network][server]: network 0 (127.1/16) is near Montreal, network 1 near Vancouver.
    let relays = [
        [UdpRelay::start(m_sip, NEAR), UdpRelay::start(v_sip, FAR)],
        [UdpRelay::start(m_sip, FAR), UdpRelay::start(v_sip, NEAR)],
    ];
    let ready = poll(Duration::from_secs(10), || {
        Some(()).filter(|_| rpc(m_rpc, "ul.dump").is_some() && rpc(v_rpc, "ul.dump").is_some())
    });
    assert!(ready.is_some(), "{}", tails(&[&montreal, &vancouver]));

    let mut phones = Vec::new();
    for (net, ips) in PHONES.iter().enumerate() {
        for (i, ip) in ips.iter().enumerate() {
            for (server, relay) in relays[net].iter().enumerate() {
                let name: &'static str = Box::leak(format!("sipp-{ip}-{server}").into_boxed_str());
                let user = format!("n{net}p{i}");
                phones.push(start_phone(dir, name, ip, &user, relay.addr));
            }
        }
    }
    let logs = || {
        let mut all: Vec<&Server> = vec![&montreal, &vancouver];
        all.extend(phones.iter().take(2));
        tails(&all)
    };

    // Registration plus three keepalive rounds (timer_interval 1 s).
    let mut series = Series::new(unix_now());
    let first = poll(Duration::from_secs(20), || {
        series.read(0, m_rpc);
        series.read(1, v_rpc);
        series.least_of(3)
    });
    let [m, v] = first.unwrap_or_else(|| {
        panic!(
            "no keepalive round trips: {:?} {:?}\n{}",
            rpc(m_rpc, "ul.dump").map(|d| contacts(&d)),
            rpc(v_rpc, "ul.dump").map(|d| contacts(&d)),
            logs()
        )
    });
    eprintln!("montreal: 127.1/16 {:?} ms, 127.2/16 {:?} ms", m[0], m[1]);
    eprintln!("vancouver: 127.1/16 {:?} ms, 127.2/16 {:?} ms", v[0], v[1]);
    // 2 x 5 ms and 2 x 50 ms of delay, plus the stacks.
    let near = |ms: f64| (9.5..30.0).contains(&ms);
    let far = |ms: f64| (99.5..130.0).contains(&ms);
    assert!(near(median(&m[0])) && far(median(&m[1])), "montreal {m:?}");
    assert!(far(median(&v[0])) && near(median(&v[1])), "vancouver {v:?}");

    // The networks trade places: Kamailio's figures follow at the next keepalive.
    relays[0][0].set(FAR);
    relays[0][1].set(NEAR);
    relays[1][0].set(NEAR);
    relays[1][1].set(FAR);
    let swapped_at = Instant::now();
    let mut series = Series::new(unix_now() + 1);
    let swapped = poll(Duration::from_secs(20), || {
        series.read(0, m_rpc);
        series.read(1, v_rpc);
        let [m, v] = series.least_of(2)?;
        let done = far(median(&m[0])) && near(median(&m[1]));
        let done = done && near(median(&v[0])) && far(median(&v[1]));
        done.then_some((m, v))
    });
    let (m, v) = swapped.unwrap_or_else(|| panic!("figures did not swap\n{}", logs()));
    eprintln!(
        "after the swap ({:?}): montreal {m:?}, vancouver {v:?}",
        swapped_at.elapsed()
    );
}
