//! Live test against Debian's Kamailio and sipp: real dialogs seen by `read_active_dialogs`,
//! and the SIP probes answered by a real SIP stack. Everything listens on 127.0.0.1 only.
//!
//! Skipped, with a note on stderr, where `kamailio` or `sipp` is not installed
//! (`apt-get install kamailio kamailio-json-modules sip-tester`).

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::kamailio::read_active_dialogs;
use super::sip_options::{probe_tcp_connect, probe_tcp_sip, probe_udp};

const KAMAILIO: &str = "/usr/sbin/kamailio";
const SIPP: &str = "/usr/bin/sipp";
const CONFIG: &str = include_str!("testdata/kamailio-test.cfg");
const CALLS: u32 = 30;

/// A server started by this test, in its own process group so that stopping it also stops
/// the workers it forked, and only those.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(name: &'static str, dir: &Path, program: &str, args: &[&str]) -> Server {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Server { name, child, log }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} log tail ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Waits up to `limit` for the process to exit by itself.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) with the negated pid of a group this test created; no memory involved.
        unsafe { libc::kill(group, libc::SIGTERM) };
        if self.wait(Duration::from_secs(5)).is_none() {
            // SAFETY: as above.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// A scratch directory for config and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("pdns-ha-kamailio-{}", std::process::id()));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tails(servers: &[&Server]) -> String {
    servers
        .iter()
        .map(|s| s.log_tail())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Four distinct free ports: SIP over UDP, HTTP and SIP over TCP, the UAS, the UAC. All are
/// held until all are chosen; picking them one at a time (bind to port 0, drop) can hand out
/// the same port twice, and a UAS port equal to Kamailio's makes it proxy calls to itself
/// until its shared memory runs out (seen once: "bogus event 6 in state 1", then
/// "could not allocate shared memory").
fn free_ports() -> [u16; 4] {
    let udp = || UdpSocket::bind("127.0.0.1:0").unwrap();
    let held = (
        udp(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
        udp(),
        udp(),
    );
    [
        held.0.local_addr().unwrap().port(),
        held.1.local_addr().unwrap().port(),
        held.2.local_addr().unwrap().port(),
        held.3.local_addr().unwrap().port(),
    ]
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(found) = f() {
            return Some(found);
        }
        if Instant::now() >= until {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kamailio_counts_real_dialogs_from_sipp() {
    if !Path::new(KAMAILIO).exists() || !Path::new(SIPP).exists() {
        eprintln!("skipping: {KAMAILIO} or {SIPP} is not installed");
        return;
    }
    // Declared before the servers, so dropped after them, also when an assertion fails.
    let scratch = TempDir::new();
    let dir = scratch.0.as_path();
    let [sip_port, rpc_port, uas_port, uac_port] = free_ports();
    let cfg = dir.join("kamailio.cfg");
    let text = CONFIG
        .replace("@SIP_PORT@", &sip_port.to_string())
        .replace("@RPC_PORT@", &rpc_port.to_string())
        .replace("@UAS_PORT@", &uas_port.to_string());
    fs::write(&cfg, text).unwrap();

    let (cfg_path, dir_path) = (cfg.display().to_string(), dir.display().to_string());
    let kamailio = Server::start(
        "kamailio",
        dir,
        KAMAILIO,
        &[
            "-f", &cfg_path, "-DD", "-E", "-m", "64", "-M", "8", "-Y", &dir_path,
        ],
    );
    let url = format!("http://127.0.0.1:{rpc_port}/RPC");
    // Generous: all tests run in parallel on two cores next to kamailio and sipp.
    let t = Duration::from_secs(1);
    let idle = poll(Duration::from_secs(10), || {
        read_active_dialogs(&url, t).ok()
    });
    assert_eq!(
        idle,
        Some(0),
        "kamailio did not answer JSON-RPC\n{}",
        kamailio.log_tail()
    );

    // The probes against a real SIP stack.
    let sip: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let tcp: SocketAddr = format!("127.0.0.1:{rpc_port}").parse().unwrap();
    let udp_rtt = probe_udp(sip, t).unwrap();
    let tcp_rtt = probe_tcp_sip(tcp, t).unwrap();
    let connect_rtt = probe_tcp_connect(tcp, t).unwrap();
    eprintln!(
        "kamailio: options/udp {udp_rtt:?}, options/tcp {tcp_rtt:?}, connect {connect_rtt:?}"
    );
    let e = read_active_dialogs(&format!("http://127.0.0.1:{rpc_port}/other"), t).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("http://127.0.0.1:{rpc_port}/other: http status 404 Not Found")
    );

    let (uas_port, uac_port, calls) = (
        uas_port.to_string(),
        uac_port.to_string(),
        CALLS.to_string(),
    );
    let mut uas = Server::start(
        "sipp-uas",
        dir,
        SIPP,
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port,
            "-nostdin",
            "-timeout",
            "60s",
        ],
    );
    thread::sleep(Duration::from_millis(300));
    assert!(
        uas.child.try_wait().unwrap().is_none(),
        "sipp uas exited\n{}",
        uas.log_tail()
    );
    let kamailio_sip = sip.to_string();
    #[rustfmt::skip]
    let mut uac = Server::start("sipp-uac", dir, SIPP, &[
        "-sn", "uac", &kamailio_sip, "-i", "127.0.0.1", "-p", &uac_port,
        "-m", &calls, "-l", &calls, "-r", &calls, "-d", "3000",
        "-nostdin", "-timeout", "30s",
    ]);

    // While the calls are up (3 s each), the count must rise to all of them.
    let mut seen = Vec::new();
    let peak = poll(Duration::from_secs(5), || {
        // A reading may fail under load (every test runs in parallel); it must not stick.
        let reading = read_active_dialogs(&url, t);
        let peak = reading.as_ref().ok().filter(|&&n| n == CALLS).copied();
        seen.push(reading.map_err(|e| e.to_string()));
        peak
    });
    assert_eq!(
        peak,
        Some(CALLS),
        "readings {seen:?}\n{}",
        tails(&[&kamailio, &uas, &uac])
    );
    eprintln!("kamailio: dialog readings while sipp ran: {seen:?}");

    let status = uac.wait(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp uac: {status:?}\n{}",
        tails(&[&kamailio, &uas, &uac])
    );
    let after = poll(Duration::from_secs(5), || {
        read_active_dialogs(&url, t).ok().filter(|&n| n == 0)
    });
    assert_eq!(
        after,
        Some(0),
        "dialogs left after the calls ended\n{}",
        tails(&[&kamailio, &uas, &uac])
    );

    // How long one reading takes against the real server.
    let mut took: Vec<Duration> = (0..50)
        .map(|_| {
            let started = Instant::now();
            read_active_dialogs(&url, t).unwrap();
            started.elapsed()
        })
        .collect();
    took.sort();
    eprintln!(
        "kamailio: read_active_dialogs median {:?}, max {:?}",
        took[25], took[49]
    );
}
