//! Harness for end-to-end tests: starts a real pdns_server on a free loopback port, queries it
//! with dig, and turns dig's output into comparable, order-independent text.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::in_ci;

const INSTALL_HINT: &str =
    "install pdns-server pdns-backend-pipe pdns-backend-sqlite3 dnsutils dnsdist prometheus";

/// pdns_server lives in /usr/sbin, which is not on an ordinary user's PATH.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Full path of an executable on PATH or in the sbin directories.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `tool` is installed. Locally a missing tool skips the test (returns false); under
/// CI (see [`in_ci`]) it is a failure, so that a broken CI image cannot turn the suite green by skipping.
pub fn require(tool: &str) -> bool {
    if find_tool(tool).is_some() {
        return true;
    }
    let message = format!("{tool} not found: {INSTALL_HINT}");
    if in_ci() {
        panic!("{message}");
    }
    eprintln!("{message} (test skipped)");
    false
}

/// Whether every tool a test needs is installed, each missing one named (see [`require`]):
/// the one check every test that starts outside programs makes first.
pub fn require_all(tools: &[&str]) -> bool {
    // Every tool is checked, so a local run names all that are missing at once.
    tools.iter().filter(|tool| !require(tool)).count() == 0
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("{name} not found: {INSTALL_HINT}"))
}

/// A scratch directory removed on drop. The pid keeps concurrent `cargo test` runs apart, the
/// counter keeps the tests of one run apart.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pdns-ha-{tag}-{}-{n}", std::process::id()));
        // A crashed earlier run with the same pid may have left it behind.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Debug)]
pub enum Backend {
    /// `command` is an absolute path plus space-separated arguments: pdns splits it on spaces
    /// and execs it without a shell.
    Pipe {
        command: String,
        abi: u8,
    },
    Gsqlite3 {
        db: PathBuf,
    },
}

impl Backend {
    /// This build's pdns-ha as pdns runs it, on `db`, with `args` after (ABI 3: the
    /// client's ECS subnet reaches the pipe).
    pub fn pdns_ha(db: &Path, args: &str) -> Backend {
        let bin = Path::new(crate::util::BIN).canonicalize().unwrap();
        let command = format!("{} --db {} {args}", bin.display(), db.display());
        Backend::Pipe { command, abi: 3 }
    }

    fn settings(&self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self {
            Backend::Pipe { command, abi } => vec![
                ("launch", "pipe".into()),
                ("pipe-command", command.clone()),
                ("pipe-abi-version", abi.to_string()),
            ],
            Backend::Gsqlite3 { db } => vec![
                ("launch", "gsqlite3".into()),
                ("gsqlite3-database", db.display().to_string()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn describe(&self) -> String {
        match self {
            Backend::Pipe { abi, .. } => format!("pipe ABI {abi}"),
            Backend::Gsqlite3 { .. } => "gsqlite3".to_string(),
        }
    }
}

/// How to start a pdns_server; `start` does it.
#[derive(Clone, Debug)]
pub struct Options {
    backend: Backend,
    distributor_threads: u32,
    settings: Vec<(String, String)>,
}

impl Options {
    /// Any pdns setting; it overrides a default of the same name.
    pub fn setting(mut self, key: &str, value: &str) -> Options {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// One coprocess per distributor thread; 1 (the default here) keeps logs in order.
    pub fn distributor_threads(mut self, n: u32) -> Options {
        self.distributor_threads = n;
        self
    }

    pub fn start(self) -> Pdns {
        Pdns::start(self)
    }

    fn config(&self, port: u16, dir: &Path) -> String {
        // Every cache off: the tests check what the backend answers now, and per-client or
        // freshly changed answers are wrong under any of the three caches (reference §4).
        // zone-cache-refresh-interval=0 is mandatory for pipe (reference §0.1).
        let defaults = [
            ("zone-cache-refresh-interval", "0".to_string()),
            ("cache-ttl", "0".to_string()),
            ("query-cache-ttl", "0".to_string()),
            ("negquery-cache-ttl", "0".to_string()),
            ("local-address", "127.0.0.1".to_string()),
            ("local-port", port.to_string()),
            ("daemon", "no".to_string()),
            ("guardian", "no".to_string()),
            ("disable-syslog", "yes".to_string()),
            // Empty: no security-status query leaves the machine at startup.
            ("security-poll-suffix", String::new()),
            ("socket-dir", dir.display().to_string()),
            ("query-logging", "yes".to_string()),
            ("loglevel", "6".to_string()),
            ("distributor-threads", self.distributor_threads.to_string()),
            ("pipe-timeout", "2000".to_string()),
        ];
        let mut all: Vec<(String, String)> = defaults
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        all.extend(self.backend.settings());
        for (key, value) in &self.settings {
            match all.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => all.push((key.clone(), value.clone())),
            }
        }
        // pdns exits on a setting no loaded module declares ("unknown setting 'pipe-timeout'").
        if matches!(self.backend, Backend::Gsqlite3 { .. }) {
            all.retain(|(k, _)| !k.starts_with("pipe-"));
        }
        all.iter().fold(String::new(), |mut out, (k, v)| {
            let _ = writeln!(out, "{k}={v}");
            out
        })
    }
}

/// A running pdns_server, stopped on drop.
pub struct Pdns {
    child: Child,
    port: u16,
    dig: PathBuf,
    dir: TempDir,
    what: String,
}

const START_ATTEMPTS: usize = 3;
const READY_WITHIN: Duration = Duration::from_secs(10);
const POLL_STEP: Duration = Duration::from_millis(100);
/// For one dig process, a whole batch included.
const DIG_LIMIT: Duration = Duration::from_secs(60);

impl Pdns {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pipe coprocesses pdns_server runs right now (its children).
    pub fn coprocesses(&self) -> Vec<u32> {
        let parent = self.child.id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // The fields after the command name, which may hold spaces.
                let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
                rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
            })
            .collect()
    }

    pub fn options(backend: Backend) -> Options {
        Options {
            backend,
            distributor_threads: 1,
            settings: Vec::new(),
        }
    }

    /// Starts several servers at once: each start mostly waits for readiness.
    pub fn start_all(options: Vec<Options>) -> Vec<Pdns> {
        thread::scope(|s| {
            let handles: Vec<_> = options
                .into_iter()
                .map(|o| s.spawn(move || o.start()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    fn start(options: Options) -> Pdns {
        if let Backend::Pipe { command, .. } = &options.backend {
            let program = command.split(' ').next().unwrap_or_default();
            assert!(
                Path::new(program).is_absolute(),
                "pipe-command must start with an absolute path (pdns does no PATH lookup): {command}"
            );
        }
        let pdns_server = tool("pdns_server");
        let dig = tool("dig");
        let what = options.backend.describe();

        let mut last_log = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let dir = TempDir::new("pdns");
            let conf_dir = dir.path().join("conf");
            fs::create_dir_all(&conf_dir).expect("create pdns config dir");
            fs::write(conf_dir.join("pdns.conf"), options.config(port, dir.path()))
                .expect("write pdns.conf");
            let log = File::create(dir.path().join("pdns.log")).expect("create pdns.log");
            let child = Command::new(&pdns_server)
                .arg(format!("--config-dir={}", conf_dir.display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup pdns.log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", pdns_server.display()));
            let mut pdns = Pdns {
                child,
                port,
                dig: dig.clone(),
                dir,
                what: what.clone(),
            };
            match pdns.wait_ready() {
                Ok(()) => return pdns,
                Err(Readiness::Exited(status)) => {
                    // Most likely another test took the port between our probe and pdns's
                    // bind; a new port usually fixes it.
                    last_log = pdns.log();
                    eprintln!(
                        "pdns_server ({what}) on port {port} exited early ({status}), \
                         attempt {attempt}/{START_ATTEMPTS}"
                    );
                }
                Err(Readiness::Timeout) => {
                    panic!(
                        "pdns_server ({what}) on port {port} not answering after {READY_WITHIN:?}\n\
                         --- pdns log ---\n{}",
                        pdns.log()
                    );
                }
            }
        }
        panic!(
            "pdns_server ({what}) failed to start {START_ATTEMPTS} times\n--- last pdns log ---\n\
             {last_log}"
        );
    }

    fn wait_ready(&mut self) -> Result<(), Readiness> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for pdns_server") {
                return Err(Readiness::Exited(status.to_string()));
            }
            let probe = self.run_dig(&["+time=1", "+tries=1", "example.com", "SOA"]);
            if probe.status().is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Readiness::Timeout);
            }
            thread::sleep(POLL_STEP);
        }
    }

    /// Everything pdns_server and its coprocesses wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(self.dir.path().join("pdns.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no pdns log: {e})"))
    }

    /// The end of `log()`, enough to see the questions pdns sent for the last queries.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Which backend this server runs, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// `dig @127.0.0.1 -p PORT +time=3 +tries=1 ARGS...` (UDP unless ARGS say otherwise).
    pub fn dig(&self, args: &[&str]) -> DigResult {
        let mut all = vec!["+time=3", "+tries=1"];
        all.extend_from_slice(args);
        self.run_dig(&all)
    }

    pub fn dig_tcp(&self, args: &[&str]) -> DigResult {
        let mut all = vec!["+tcp"];
        all.extend_from_slice(args);
        self.dig(&all)
    }

    /// One dig process for many queries (dig's batch mode), in order: much faster than one
    /// process per query. Each query is a line of dig arguments, e.g. `+tcp example.com ANY`.
    pub fn dig_batch(&self, queries: &[String]) -> Vec<DigResult> {
        static BATCH: AtomicUsize = AtomicUsize::new(0);
        let n = BATCH.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.path().join(format!("batch-{n}.txt"));
        fs::write(&file, queries.join("\n") + "\n").expect("write dig batch file");
        let output = self.dig_output(&["+time=3", "+tries=1", "-f", &file.display().to_string()]);
        let mut blocks: Vec<String> = Vec::new();
        for line in output.stdout.lines() {
            if line.starts_with("; <<>> DiG ") || blocks.is_empty() {
                blocks.push(String::new());
            }
            let block = blocks.last_mut().expect("a block was pushed");
            block.push_str(line);
            block.push('\n');
        }
        blocks.retain(|b| b.contains("; <<>> DiG "));
        assert_eq!(
            blocks.len(),
            queries.len(),
            "dig batch printed {} answers for {} queries\n{}\n{}",
            blocks.len(),
            queries.len(),
            output.stdout,
            output.stderr
        );
        queries
            .iter()
            .zip(blocks)
            .map(|(q, block)| DigResult::parse(q.clone(), block, output.stderr.clone()))
            .collect()
    }

    fn run_dig(&self, args: &[&str]) -> DigResult {
        let output = self.dig_output(args);
        DigResult::parse(args.join(" "), output.stdout, output.stderr)
    }

    /// dig bounds each query (+time, +tries), but a batch of slow answers could still take
    /// minutes; `DIG_LIMIT` turns that into a prompt failure.
    fn dig_output(&self, args: &[&str]) -> DigOutput {
        let port = self.port.to_string();
        let mut child = Command::new(&self.dig)
            .args(["@127.0.0.1", "-p", &port])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.dig.display()));
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        let deadline = Instant::now() + DIG_LIMIT;
        while child.try_wait().expect("wait for dig").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "[{}] dig {} still running after {DIG_LIMIT:?}\n--- pdns log ---\n{}",
                    self.what,
                    args.join(" "),
                    self.log_tail(100)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        DigOutput {
            stdout: stdout.join().expect("read dig stdout"),
            stderr: stderr.join().expect("read dig stderr"),
        }
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SIGTERM first: pdns then closes its coprocesses' stdin and they exit on EOF.
        // SAFETY: kill(2) with a pid we spawned and have not yet reaped, so it is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Readiness {
    Exited(String),
    Timeout,
}

/// Reading in threads keeps a chatty dig from blocking on a full pipe while we wait for it.
fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

struct DigOutput {
    stdout: String,
    stderr: String,
}

/// A port free for both UDP and TCP right now. Another process may still take it before pdns
/// binds; `Pdns::start` retries for that.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port on 127.0.0.1");
        let port = udp.local_addr().expect("local UDP address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// Record sections of a response, in dig's order.
const SECTIONS: [&str; 3] = ["ANSWER", "AUTHORITY", "ADDITIONAL"];

/// One dig response (or its failure), parsed.
#[derive(Clone, Debug)]
pub struct DigResult {
    /// The dig arguments, for messages.
    pub query: String,
    /// dig's stdout for this query.
    pub raw: String,
    pub stderr: String,
    status: Option<String>,
    flags: Vec<String>,
    client_subnet: Option<String>,
    sections: [Vec<String>; 3],
}

impl DigResult {
    pub fn parse(query: String, raw: String, stderr: String) -> DigResult {
        let mut status = None;
        let mut flags = Vec::new();
        let mut client_subnet = None;
        let mut sections: [Vec<String>; 3] = Default::default();
        // An AXFR prints records without section headers: they count as answers.
        let mut current = Some(0);
        for line in raw.lines() {
            if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
                status = rest
                    .split(',')
                    .find_map(|part| part.trim().strip_prefix("status: "))
                    .map(str::to_string);
            } else if let Some(rest) = line.strip_prefix(";; flags:") {
                let names = rest.split(';').next().unwrap_or_default();
                flags = names.split_whitespace().map(str::to_string).collect();
            } else if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET: ") {
                client_subnet = Some(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix(";; ") {
                if let Some(name) = rest.strip_suffix(" SECTION:") {
                    current = SECTIONS.iter().position(|s| *s == name);
                } else if rest.ends_with("PSEUDOSECTION:") {
                    current = None;
                }
            } else if !line.starts_with(';') && !line.trim().is_empty() {
                if let Some(i) = current {
                    sections[i].push(line.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
        }
        // RRset order carries no meaning in DNS, and pdns shuffles it.
        for section in &mut sections {
            section.sort();
        }
        DigResult {
            query,
            raw,
            stderr,
            status,
            flags,
            client_subnet,
            sections,
        }
    }

    /// NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...; None when no response arrived.
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// The `CLIENT-SUBNET` option of the response, as dig prints it:
    /// `address/source/scope`.
    pub fn client_subnet(&self) -> Option<&str> {
        self.client_subnet.as_deref()
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Sorted `name ttl class type rdata` lines, whitespace collapsed.
    pub fn answer(&self) -> &[String] {
        &self.sections[0]
    }

    pub fn authority(&self) -> &[String] {
        &self.sections[1]
    }

    pub fn additional(&self) -> &[String] {
        &self.sections[2]
    }

    /// Everything that must match between two servers giving the same answer: status, header
    /// flags, the ECS option's scope (it tells resolvers how widely they may cache) and the
    /// sorted record sections. Query id, timing, server, size and the rest of EDNS (cookies,
    /// buffer size) are left out.
    pub fn normalized(&self) -> String {
        let mut out = match &self.status {
            Some(status) => format!("status: {status}\nflags: {}\n", self.flags.join(" ")),
            // A zone transfer has records but no header.
            None if self.sections.iter().any(|s| !s.is_empty()) => "status: (no header)\n".into(),
            None => {
                // dig's error lines, minus the ones that differ between any two runs.
                let noise = [";; Query time", ";; SERVER", ";; WHEN", ";; MSG SIZE"];
                let why: Vec<&str> = (self.raw.lines())
                    .filter(|l| l.starts_with(";; ") && !noise.iter().any(|n| l.starts_with(n)))
                    .collect();
                format!("no response: {}\n", why.join(" | "))
            }
        };
        if let Some(ecs) = &self.client_subnet {
            let _ = writeln!(out, "client-subnet: {ecs}");
        }
        for (name, records) in SECTIONS.iter().zip(&self.sections) {
            if !records.is_empty() {
                let _ = writeln!(out, "{name}:");
                for record in records {
                    let _ = writeln!(out, "  {record}");
                }
            }
        }
        out
    }
}

/// A readable difference between two normalized responses: the lines only one side has.
pub fn diff(left_name: &str, left: &str, right_name: &str, right: &str) -> String {
    let left_lines: Vec<&str> = left.lines().collect();
    let right_lines: Vec<&str> = right.lines().collect();
    let mut out = String::new();
    for line in &left_lines {
        if !right_lines.contains(line) {
            let _ = writeln!(out, "  - {line}   [only {left_name}]");
        }
    }
    for line in &right_lines {
        if !left_lines.contains(line) {
            let _ = writeln!(out, "  + {line}   [only {right_name}]");
        }
    }
    if out.is_empty() {
        out.push_str("  (same lines, in another order or repeated)\n");
    }
    let _ = write!(
        out,
        "  --- {left_name} ---\n{left}  --- {right_name} ---\n{right}"
    );
    out
}
