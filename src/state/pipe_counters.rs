//! The pipe processes' own counters, shared through small files: each pipe writes what it
//! answered (lookups, FAILs, queries by client network) to a file of its own now and then
//! and when it ends; the monitor sums them for Prometheus and `status` shows them.
//! `pdnsutil backend-cmd pipe status` cannot: pdns starts a fresh pipe process for it,
//! which has answered nothing.
//!
//! The files sit in a directory beside the database (`ha.db.pipes/` for `ha.db`), one per
//! process, named by its process id and replaced whole (written aside, then renamed), so
//! a reader sees one version or the next, never half of one:
//!
//! ```text
//! pdns-ha pipe counters 1
//! started 1764680000
//! lookups 1200 answered 1100 empty 100 axfrs 0 bad_lines 2 fails 3
//! unknown 40 38
//! network 700 690 montreal
//! network 460 372 vancouver
//! ```
//!
//! `unknown` and `network` lines give queries, then queries answered with data; a
//! network's name is the rest of its line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a busy pipe writes its file (and once at its first line, pdns's `HELO`, so
/// that every running pipe has one). An idle one writes nothing: it only wakes for pdns's
/// questions.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);

const HEADER: &str = "pdns-ha pipe counters 1";

/// A file larger than this is not a pipe's: 20,000 networks write about 600 KB.
const MAX_FILE: u64 = 4 << 20;

/// Files read from the directory at most; pdns runs a few pipes per thread setting.
const MAX_FILES: usize = 1024;

/// Queries from a client network, and how many of them had data.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Pair {
    pub queries: u64,
    pub answered: u64,
}

impl Pair {
    pub fn count(&mut self, answered: bool) {
        self.queries += 1;
        self.answered += u64::from(answered);
    }

    pub fn add(&mut self, o: Pair) {
        self.queries += o.queries;
        self.answered += o.answered;
    }
}

/// What one pipe, or several summed, answered.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Questions (Q lines).
    pub lookups: u64,
    /// Questions answered with data, and with none.
    pub answered: u64,
    pub empty: u64,
    pub axfrs: u64,
    /// Lines that were not a question pdns-ha understands.
    pub bad_lines: u64,
    /// Every `FAIL` sent: bad lines, unreadable names, AXFRs not served.
    pub fails: u64,
    /// Queries from clients in no known network. Under `static` and `least-load` too:
    /// the network is looked up for counting alone.
    pub unknown: Pair,
    /// By `ha_networks` name.
    pub networks: BTreeMap<String, Pair>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.lookups += o.lookups;
        self.answered += o.answered;
        self.empty += o.empty;
        self.axfrs += o.axfrs;
        self.bad_lines += o.bad_lines;
        self.fails += o.fails;
        self.unknown.add(o.unknown);
        for (name, p) in &o.networks {
            self.add_network(name, *p);
        }
    }

    pub fn add_network(&mut self, name: &str, p: Pair) {
        match self.networks.get_mut(name) {
            Some(have) => have.add(p),
            None => {
                self.networks.insert(name.to_owned(), p);
            }
        }
    }

    /// The file's text, for a process started at `started` (Unix seconds).
    pub fn render(&self, started: u64) -> String {
        let mut out = String::with_capacity(128 + self.networks.len() * 32);
        let _ = writeln!(out, "{HEADER}\nstarted {started}");
        let _ = writeln!(
            out,
            "lookups {} answered {} empty {} axfrs {} bad_lines {} fails {}",
            self.lookups, self.answered, self.empty, self.axfrs, self.bad_lines, self.fails
        );
        let _ = writeln!(
            out,
            "unknown {} {}",
            self.unknown.queries, self.unknown.answered
        );
        for (name, p) in &self.networks {
            // A name is the rest of its line: a line break in it (SQL allows one) would
            // start a line of its own.
            let name: String = name
                .chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect();
            let _ = writeln!(out, "network {} {} {name}", p.queries, p.answered);
        }
        out
    }

    /// Reads what [`Self::render`] wrote: the start time and the counts.
    pub fn parse(text: &str) -> Result<(u64, Counts), CountsError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        if lines.next().map(|(_, l)| l) != Some(HEADER) {
            return Err(CountsError::Header);
        }
        let bad = |line: usize| CountsError::Line(line);
        let mut started = None;
        let mut c = Counts::default();
        for (at, line) in lines {
            let (kind, rest) = line.split_once(' ').ok_or(bad(at))?;
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad(at));
            match kind {
                "started" => started = Some(num(rest)?),
                "lookups" => {
                    let mut w = rest.split(' ');
                    for (name, field) in [
                        ("lookups", &mut c.lookups),
                        ("answered", &mut c.answered),
                        ("empty", &mut c.empty),
                        ("axfrs", &mut c.axfrs),
                        ("bad_lines", &mut c.bad_lines),
                        ("fails", &mut c.fails),
                    ] {
                        if name != "lookups" && w.next() != Some(name) {
                            return Err(bad(at));
                        }
                        *field = num(w.next().ok_or(bad(at))?)?;
                    }
                }
                "unknown" | "network" => {
                    let mut w = rest.splitn(3, ' ');
                    let p = Pair {
                        queries: num(w.next().ok_or(bad(at))?)?,
                        answered: num(w.next().ok_or(bad(at))?)?,
                    };
                    match (kind, w.next()) {
                        ("unknown", None) => c.unknown.add(p),
                        ("network", Some(name)) if !name.is_empty() => c.add_network(name, p),
                        _ => return Err(bad(at)),
                    }
                }
                _ => return Err(bad(at)),
            }
        }
        Ok((started.ok_or(CountsError::Started)?, c))
    }
}

/// Why a counters file was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum CountsError {
    Header,
    Started,
    Line(usize),
}

impl std::fmt::Display for CountsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header => write!(f, "does not start with \"{HEADER}\""),
            Self::Started => f.write_str("has no start time"),
            Self::Line(n) => write!(f, "line {n} is not a counter"),
        }
    }
}

impl std::error::Error for CountsError {}

/// Where the pipes of database `db` write their counters: `ha.db.pipes` beside `ha.db`.
pub fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(".pipes");
    db.with_file_name(name)
}

/// Writes process `pid`'s file in `dir` (made if missing, group-writable: the pipes run
/// as pdns, and the monitor, in pdns's group, removes the files of ended ones).
pub fn write(dir: &Path, pid: u32, text: &str) -> io::Result<()> {
    if !dir.is_dir() {
        fs::DirBuilder::new().mode(0o770).create(dir).or_else(|e| {
            // Another pipe made it meanwhile.
            match e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() {
                true => Ok(()),
                false => Err(e),
            }
        })?;
        // The umask takes group write away; set it as the directory's owner.
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o770));
    }
    let aside = dir.join(format!(".{pid}.new"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        // The directory is writable by pdns's group: a link put at the name is refused,
        // never followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&aside)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    fs::rename(&aside, dir.join(pid.to_string()))
}

/// One process's file as read.
#[derive(Debug, PartialEq)]
pub struct PipeFile {
    pub pid: u32,
    pub started: u64,
    pub counts: Counts,
}

/// A file in the directory that could not be read: its name, and why.
pub type Unreadable = (String, String);

/// Every pipe's file in `dir`, and those that could not be read. A missing directory
/// holds none: no pipe has written yet.
pub fn read_dir(dir: &Path) -> io::Result<(Vec<PipeFile>, Vec<Unreadable>)> {
    let (mut files, mut bad) = (Vec::new(), Vec::new());
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((files, bad)),
        r => r?,
    };
    for entry in entries.take(MAX_FILES) {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // `.PID.new` is a file being written.
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let read = || -> Result<(u64, Counts), Box<dyn std::error::Error>> {
            let f = crate::files::open_regular(&dir.join(&name))?;
            let mut text = String::new();
            f.take(MAX_FILE).read_to_string(&mut text)?;
            Ok(Counts::parse(&text)?)
        };
        match read() {
            Ok((started, counts)) => files.push(PipeFile {
                pid,
                started,
                counts,
            }),
            Err(why) => bad.push((name, why.to_string())),
        }
    }
    files.sort_by_key(|f| f.pid);
    Ok((files, bad))
}

/// An ended pipe's file older than this is nobody's to sum (a monitor with
/// `--metrics-listen` sums and removes them within a round): a pipe starting removes it,
/// so that restarts of pdns without such a monitor do not pile files up.
pub const ENDED_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Removes the files in `dir` of pipes that ended more than [`ENDED_KEPT`] ago.
pub fn remove_ended(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.take(MAX_FILES).flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > ENDED_KEPT));
        if old && !alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` still runs (as any user: a process of another user answers
/// "not permitted", a gone one "no such process").
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counts {
        let mut c = Counts {
            lookups: 12,
            answered: 10,
            empty: 2,
            axfrs: 1,
            bad_lines: 3,
            fails: 4,
            unknown: Pair {
                queries: 5,
                answered: 4,
            },
            networks: BTreeMap::new(),
        };
        c.add_network(
            "montreal",
            Pair {
                queries: 7,
                answered: 6,
            },
        );
        c.add_network(
            "new york city",
            Pair {
                queries: 1,
                answered: 0,
            },
        );
        c
    }

    #[test]
    fn render_and_parse_agree() {
        let c = sample();
        let text = c.render(1_764_680_000);
        assert!(text.contains("\nnetwork 1 0 new york city\n"), "{text}");
        assert_eq!(Counts::parse(&text), Ok((1_764_680_000, c)));
    }

    #[test]
    fn a_line_break_in_a_name_stays_in_its_line() {
        let mut c = Counts::default();
        c.add_network(
            "evil\nlookups 9",
            Pair {
                queries: 1,
                answered: 1,
            },
        );
        let (_, back) = Counts::parse(&c.render(1)).unwrap();
        assert_eq!(back.lookups, 0);
        assert_eq!(
            back.networks.keys().collect::<Vec<_>>(),
            ["evil\u{fffd}lookups 9"]
        );
    }

    #[test]
    fn garbage_is_refused_with_the_line() {
        assert_eq!(Counts::parse("hello"), Err(CountsError::Header));
        let text = format!("{HEADER}\nstarted 1\nlookups 1 answered x\n");
        assert_eq!(Counts::parse(&text), Err(CountsError::Line(3)));
        let text = format!("{HEADER}\nnetwork 1 1\nstarted 1\n");
        assert_eq!(Counts::parse(&text), Err(CountsError::Line(2)));
        assert_eq!(Counts::parse(HEADER), Err(CountsError::Started));
    }

    #[test]
    fn sums_add_networks_by_name() {
        let mut total = sample();
        total.add(&sample());
        assert_eq!(total.lookups, 24);
        assert_eq!(
            total.unknown,
            Pair {
                queries: 10,
                answered: 8
            }
        );
        assert_eq!(
            total.networks["montreal"],
            Pair {
                queries: 14,
                answered: 12
            }
        );
    }

    #[test]
    fn files_are_written_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pdns-ha-counters-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let sub = dir_for(&dir.join("ha.db"));
        assert_eq!(sub, dir.join("ha.db.pipes"));
        fs::create_dir(&dir).unwrap();
        write(&sub, 41, &sample().render(7)).unwrap();
        write(&sub, 41, &sample().render(8)).unwrap();
        fs::write(sub.join("42"), "not counters").unwrap();
        fs::write(sub.join(".43.new"), "half").unwrap();
        let (files, bad) = read_dir(&sub).unwrap();
        assert_eq!(
            files,
            [PipeFile {
                pid: 41,
                started: 8,
                counts: sample()
            }]
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].0, "42");
        assert_eq!(read_dir(&dir.join("none")).unwrap().0, []);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_of_long_ended_pipes_are_removed() {
        let dir = std::env::temp_dir().join(format!("pdns-ha-ended-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let me = std::process::id();
        // Ids above the kernel's pid_max: no process has them.
        for pid in [me, 4_194_305, 4_194_306] {
            write(&dir, pid, &sample().render(1)).unwrap();
        }
        let day_ago = std::time::SystemTime::now() - ENDED_KEPT - Duration::from_secs(60);
        for pid in [me, 4_194_305] {
            let f = fs::File::options()
                .write(true)
                .open(dir.join(pid.to_string()))
                .unwrap();
            f.set_modified(day_ago).unwrap();
        }
        remove_ended(&dir);
        let mut left: Vec<u32> = read_dir(&dir).unwrap().0.iter().map(|f| f.pid).collect();
        left.sort();
        // This process runs, and 4194306 ended only now: both kept.
        assert_eq!(left, [me, 4_194_306]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(0));
        assert!(!alive(u32::MAX));
    }
}
