//! A real Kamailio (Debian's, dialog-tracking proxy in front of a sipp UAS) loaded with real
//! calls from sipp: `pdns-ha monitor` reads its dialogs over JSON-RPC and probes it with SIP
//! OPTIONS, and pdns_server's least-load answer follows. Everything listens on 127.0.0.1.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::pdns::{require_all, Backend, Pdns, TempDir};
use crate::util::{init_db, run_ok, BIN};

const CONFIG: &str = include_str!("../fixtures/kamailio-test.cfg");
const CALLS: u32 = 30;

/// A server started by this test, in its own process group so that stopping it also stops
/// the workers it forked, and only those.
pub struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    pub fn start(name: &'static str, dir: &Path, program: &str, args: &[&str]) -> Server {
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

    pub fn log_tail(&self) -> String {
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

pub fn tails(servers: &[&Server]) -> String {
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
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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

/// `pdns-ha monitor --once`; its log (stderr) is returned for the messages.
fn monitor_once(db: &Path) -> String {
    let out = run_ok(&[
        "monitor",
        "--once",
        "--timeout",
        "1000",
        "--db",
        db.to_str().unwrap(),
    ]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the monitor last wrote for sip4: (sessions, health).
fn sip4(db: &Path) -> (Option<i64>, Option<bool>) {
    let c = Connection::open(db).unwrap();
    let sessions = "SELECT sessions FROM ha_load WHERE target = 'sip4.example.com'";
    let up = "SELECT up FROM ha_health WHERE target = 'sip4.example.com'";
    (
        c.query_row(sessions, [], |r| r.get(0)).ok(),
        c.query_row(up, [], |r| r.get(0)).ok(),
    )
}

/// sip4's (priority, weight) in pdns's least-load answer.
fn sip4_place(pdns: &Pdns) -> Option<(u16, u16)> {
    let r = pdns.dig(&["_sip._udp.example.com", "SRV"]);
    r.answer()
        .iter()
        .find_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [_, _, _, "SRV", p, w, _, "sip4.example.com."] => {
                Some((p.parse().ok()?, w.parse().ok()?))
            }
            _ => None,
        })
}

#[test]
fn kamailio_load_from_real_calls_reaches_the_answer() {
    if !require_all(&["kamailio", "sipp", "pdns_server", "dig"]) {
        return;
    }
    // Its calls load the machine; the latency tests must not run beside it.
    let _alone = crate::util::timing_lock();
    // Declared before the servers, so dropped after them, also when an assertion fails.
    let scratch = TempDir::new("kamailio");
    let dir = scratch.path();
    let [sip_port, rpc_port, uas_port, uac_port] = free_ports();
    let cfg = dir.join("kamailio.cfg");
    let text = CONFIG
        .replace("@SIP_PORT@", &sip_port.to_string())
        .replace("@RPC_PORT@", &rpc_port.to_string())
        .replace("@UAS_PORT@", &uas_port.to_string());
    fs::write(&cfg, text).unwrap();

    // sip4 is this Kamailio (capacity 100, health by OPTIONS); sip5, in the
    // same tier, has a fixed reading to be weighed against.
    let db = dir.join("ha.db");
    init_db(&db, &["sql/example.sql"]);
    crate::monitor::srv_ports_follow_probes(&db);
    Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "UPDATE ha_targets SET probe = 'none', load_source = 'none';
             UPDATE ha_targets SET probe = 'sip-udp', probe_address = '127.0.0.1:{sip_port}',
               max_sessions = 100, load_source = 'kamailio',
               load_address = 'http://127.0.0.1:{rpc_port}/RPC'
             WHERE name = 'sip4.example.com';"
        ))
        .unwrap();
    let load5 = |db: &Path| {
        run_ok(&[
            "metric",
            "load",
            "--target",
            "sip5.example.com",
            "--sessions",
            "50",
            "--max",
            "100",
            "--db",
            db.to_str().unwrap(),
        ]);
    };

    let (cfg_path, dir_path) = (cfg.display().to_string(), dir.display().to_string());
    let kamailio = Server::start(
        "kamailio",
        dir,
        &crate::pdns::find_tool("kamailio")
            .unwrap()
            .display()
            .to_string(),
        &[
            "-f", &cfg_path, "-DD", "-E", "-m", "64", "-M", "8", "-Y", &dir_path,
        ],
    );
    // Generous: all tests run in parallel on two cores next to kamailio and sipp.
    let idle = poll(Duration::from_secs(10), || {
        monitor_once(&db);
        Some(sip4(&db)).filter(|s| *s == (Some(0), Some(true)))
    });
    assert!(
        idle.is_some(),
        "monitor never read kamailio: {:?}\n{}",
        sip4(&db),
        kamailio.log_tail()
    );
    load5(&db);

    let bin = Path::new(BIN).canonicalize().unwrap();
    let command = format!(
        "{} --db {} --algorithm least-load",
        bin.display(),
        db.display()
    );
    let pdns = Pdns::options(Backend::Pipe { command, abi: 3 }).start();
    assert_eq!(
        sip4_place(&pdns),
        Some((20, 100)),
        "idle: all 100 sessions free"
    );

    let sipp = crate::pdns::find_tool("sipp")
        .unwrap()
        .display()
        .to_string();
    let (uas_port, uac_port, calls) = (
        uas_port.to_string(),
        uac_port.to_string(),
        CALLS.to_string(),
    );
    #[rustfmt::skip]
    let uas = Server::start("sipp-uas", dir, &sipp, &[
        "-sn", "uas", "-i", "127.0.0.1", "-p", &uas_port, "-nostdin", "-timeout", "60s",
    ]);
    thread::sleep(Duration::from_millis(300));
    let kamailio_sip = format!("127.0.0.1:{sip_port}");
    #[rustfmt::skip]
    let mut uac = Server::start("sipp-uac", dir, &sipp, &[
        "-sn", "uac", &kamailio_sip, "-i", "127.0.0.1", "-p", &uac_port,
        "-m", &calls, "-l", &calls, "-r", &calls, "-d", "4000",
        "-nostdin", "-timeout", "30s",
    ]);

    // While the calls are up, the monitor sees all of them and the weight
    // is what is left.
    let mut seen = Vec::new();
    let busy = poll(Duration::from_secs(6), || {
        monitor_once(&db);
        seen.push(sip4(&db).0);
        Some(()).filter(|_| sip4(&db).0 == Some(i64::from(CALLS)))
    });
    assert!(
        busy.is_some(),
        "readings {seen:?}\n{}",
        tails(&[&kamailio, &uas, &uac])
    );
    let free = 100 - CALLS as u16;
    let placed = poll(Duration::from_secs(3), || {
        Some(()).filter(|_| sip4_place(&pdns) == Some((20, free)))
    });
    assert!(
        placed.is_some(),
        "sip4 in the answer: {:?}",
        sip4_place(&pdns)
    );

    let status = uac.wait(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp uac: {status:?}\n{}",
        tails(&[&kamailio, &uas, &uac])
    );
    let after = poll(Duration::from_secs(5), || {
        monitor_once(&db);
        Some(()).filter(|_| sip4(&db).0 == Some(0))
    });
    assert!(after.is_some(), "dialogs did not drain: {:?}", sip4(&db));

    // Kamailio stops: its load becomes unknown (never zero) at once, and it
    // leaves the answer after --down-after (3) failed probes.
    drop(kamailio);
    let log = monitor_once(&db);
    assert_eq!(sip4(&db).0, None, "{log}");
    assert!(log.contains("sip4.example.com: load"), "{log}");
    monitor_once(&db);
    monitor_once(&db);
    assert_eq!(sip4(&db).1, Some(false));
    let gone = poll(Duration::from_secs(3), || {
        Some(()).filter(|_| sip4_place(&pdns).is_none())
    });
    assert!(
        gone.is_some(),
        "sip4 still answered: {:?}",
        sip4_place(&pdns)
    );
}
