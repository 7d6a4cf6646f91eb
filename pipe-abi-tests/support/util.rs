//! Test plumbing: seeded databases, `pdns-ha` commands run to their end, and pipe processes
//! driven over stdin/stdout with bounded waits.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_pdns-ha");
/// The daemons' binary, which `pdns-ha monitor|observe` hands over to.
pub const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_pdns-ha-daemon");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Longest any single pipe answer may take before a test gives up. Far
/// above what a lookup costs; it only keeps a hung binary from hanging CI.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this run is CI's: `CI` set to anything but empty, `false` or `0`
/// (CI services set `true`, `1` or their own name). Under CI a missing tool
/// fails the test instead of skipping it, and blessing goldens is refused.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

/// Runs `pdns-ha ARGS...` to its end, with `RUST_LOG=info` so that its log
/// can be read, and fails the test with that log unless it succeeded.
pub fn run_ok<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pdns-ha {:?}: {}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `pdns-ha init` on `db` with seed scripts given relative to the repo.
pub fn init_db(db: &Path, scripts: &[&str]) {
    let mut args = vec![OsString::from("init"), "--db".into(), db.into()];
    args.extend(scripts.iter().map(|s| Path::new(REPO).join(s).into()));
    run_ok(&args);
}

/// The example plus the edge-case zones, built once per test run and only
/// read by the tests that share it.
pub fn fixture_db() -> &'static Path {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fixture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("fixture.db");
        init_db(
            &db,
            &["sql/example.sql", "pipe-abi-tests/fixtures/edge.sql"],
        );
        db
    })
}

/// `pdns-ha --db DB ARGS...` with stdin and stdout piped, as pdns runs it.
fn pipe_command(db: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    c
}

/// Runs the pipe over a whole input and returns what it printed, or panics
/// if it does not finish in time.
pub fn run_pipe(db: &Path, args: &[&str], input: Vec<u8>) -> Output {
    let mut child = pipe_command(db, args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A writer thread, so that a binary that stops reading cannot deadlock
    // the test on a full pipe.
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            kill(pid);
            panic!("pdns-ha did not finish within 30 s");
        }
    }
}

pub fn kill(pid: u32) {
    // SAFETY: plain kill(2) on a child we started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A long-lived pipe process, asked one line at a time as pdns does.
pub struct Pipe {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Pipe {
    pub fn start(db: &Path, args: &[&str]) -> Self {
        Self::start_with_log(db, args, Stdio::inherit())
    }

    /// As `start`, with the process's stderr (its log) going to `log`.
    pub fn start_with_log(db: &Path, args: &[&str], log: Stdio) -> Self {
        let mut child = pipe_command(db, args).stderr(log).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin: Some(stdin),
            lines,
        }
    }

    /// Sends one line and returns the whole answer, terminator included.
    pub fn ask(&mut self, line: &str) -> Vec<String> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(ANSWER_TIMEOUT)
                .unwrap_or_else(|_| panic!("no answer to {line:?} within {ANSWER_TIMEOUT:?}"));
            let done = l == "END" || l == "FAIL" || l.starts_with("OK\t");
            answer.push(l);
            if done {
                return answer;
            }
        }
    }

    /// The DATA lines of an answer to `Q name IN type` (ABI 1 line format).
    pub fn query(&mut self, name: &str, qtype: &str) -> Vec<String> {
        let mut a = self.ask(&format!("Q\t{name}\tIN\t{qtype}\t-1\t127.0.0.1"));
        assert_eq!(a.pop().as_deref(), Some("END"), "answer to {name} {qtype}");
        a
    }

    /// Closes stdin and returns the exit status.
    pub fn finish(mut self) -> std::process::ExitStatus {
        self.stdin = None;
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            thread::sleep(Duration::from_millis(50));
        }
        kill(self.child.id());
        panic!("pdns-ha did not exit within 5 s of end of input");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.alive() {
            kill(self.child.id());
            let _ = self.child.wait();
        }
    }
}

/// A line-by-line diff for assertion messages.
pub fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
    let mut s = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => s += &format!("  {a}\n"),
            (a, b) => {
                if let Some(a) = a {
                    s += &format!("- {a}\n");
                }
                if let Some(b) = b {
                    s += &format!("+ {b}\n");
                }
            }
        }
    }
    s
}

/// Held by the tests that measure real round trips through userspace delays (relays, TUN
/// lines) or load the machine with real servers (Kamailio, sipp), so that they do not run at
/// the same time: two of them side by side on a 2-core machine turned a 10 ms keepalive round
/// trip into 95 ms and made a tie flap. A test that panicked leaves it usable.
pub fn timing_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
