//! The pipe loop: read a line from pdns, answer it, end the answer with
//! exactly one terminator line, flush. Bad input is answered with `FAIL` and
//! never stops the loop; only end of input or a closed stdout does.

use std::io::{self, BufRead, Write};
use std::time::Instant;

use log::debug;

use crate::pipe::abi::{self, AbiVersion, ParseError, Question, Request, MAX_LINE};
use crate::pipe::answer::{as_stored, recycle, Ranker};
use crate::pipe::store::Store;
pub use crate::pipe::tally::Stats;
use crate::pipe::tally::Tally;
use crate::pipe::zone::Record;
use crate::select::Algorithm;
use crate::state::reading::unix_now;
use crate::text::Limited;

/// How an answer ends. Written by `run` alone, so that no path can send a
/// second terminator (pdns would read it as the answer to its next question).
enum Ending {
    End,
    Fail,
    Banner(AbiVersion),
}

pub struct Backend {
    store: Store,
    ranker: Ranker,
    abi: Option<AbiVersion>,
    stats: Stats,
    /// The same counts and more, by client network, for the monitor to export.
    tally: Tally,
    /// Scratch for one RRset, kept so that lookups do not allocate.
    rrset: Vec<Record<'static>>,
    started: Instant,
    /// Unix time for judging readings' age; fixed in golden tests.
    clock: fn() -> f64,
    /// pdns, or whatever writes to stdin, decides how often these happen:
    /// one line per kind of bad line (a few kinds) per 30 s.
    failed_log: Vec<(std::mem::Discriminant<ParseError>, Limited)>,
    axfr_log: Limited,
}

impl Backend {
    pub fn new(store: Store, ranker: Ranker) -> Self {
        Self {
            store,
            ranker,
            abi: None,
            stats: Stats::default(),
            tally: Tally::new(None, Instant::now()),
            started: Instant::now(),
            rrset: Vec::new(),
            clock: unix_now,
            failed_log: Vec::new(),
            axfr_log: Limited::default(),
        }
    }

    /// Continues a dialogue whose `HELO` was answered before the database
    /// could be read ([`crate::pipe::waiting`]).
    pub fn with_abi(mut self, abi: Option<AbiVersion>) -> Self {
        self.abi = abi;
        self
    }

    /// Writes the counters to a file of this process's in `dir` now and then, and at
    /// the end ([`crate::state::pipe_counters`]).
    pub fn with_counters(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.tally = Tally::new(dir, Instant::now());
        self
    }

    /// Judges readings' age by `clock` instead of the system's: golden
    /// transcripts pin ranked answers with readings of a known age.
    pub fn with_clock(mut self, clock: fn() -> f64) -> Self {
        self.clock = clock;
        self
    }

    /// Serves pdns until end of input. Returns the I/O error that ended it,
    /// if any; a closed stdout is left to the caller to treat as a clean end.
    pub fn run(&mut self, input: &mut dyn BufRead, out: &mut dyn Write) -> io::Result<()> {
        // What opening the store went through, deeper than any lookup goes, is not kept.
        crate::pipe::lean::give_back();
        let mut buf = Vec::with_capacity(MAX_LINE + 1);
        loop {
            let ending = match read_line(input, &mut buf)? {
                LineRead::Eof => {
                    self.tally.write(&self.stats, Instant::now());
                    return Ok(());
                }
                LineRead::TooLong => self.reject(&ParseError::TooLong, b""),
                LineRead::Line => match std::str::from_utf8(&buf) {
                    Err(_) => self.reject(&ParseError::NotUtf8, &buf),
                    Ok(line) => {
                        let line = line.strip_suffix('\r').unwrap_or(line);
                        match abi::parse(line, self.abi) {
                            Ok(req) => self.answer(req, out)?,
                            Err(e) => self.reject(&e, line.as_bytes()),
                        }
                    }
                },
            };
            match ending {
                Ending::End => out.write_all(b"END\n")?,
                Ending::Fail => {
                    self.stats.fails += 1;
                    out.write_all(b"FAIL\n")?;
                }
                Ending::Banner(abi) => banner(out, abi, self.ranker.algorithm, "")?,
            }
            out.flush()?;
        }
    }

    fn reject(&mut self, e: &ParseError, line: &[u8]) -> Ending {
        self.stats.failed_lines += 1;
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]);
        let kind = std::mem::discriminant(e);
        let at = match self.failed_log.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                self.failed_log.push((kind, Limited::default()));
                self.failed_log.len() - 1
            }
        };
        self.failed_log[at].1.warn(
            Instant::now(),
            format_args!("answered FAIL: {e} (line {shown:?})"),
        );
        Ending::Fail
    }

    fn answer(&mut self, req: Request<'_>, out: &mut dyn Write) -> io::Result<Ending> {
        let now = Instant::now();
        self.store.refresh(now);
        self.tally.maybe_write(&self.stats, now);
        Ok(match req {
            Request::Helo(abi) => {
                self.abi = Some(abi);
                Ending::Banner(abi)
            }
            Request::Query(q) => self.query(&q, out)?,
            Request::Axfr { id, zone } => {
                let ending = self.axfr(id, zone, out);
                self.store.end_axfr();
                ending?
            }
            Request::Cmd(cmd) => {
                self.command(cmd, out)?;
                Ending::End
            }
        })
    }

    fn axfr(&mut self, id: i64, zone: Option<&str>, out: &mut dyn Write) -> io::Result<Ending> {
        let abi = self.abi_or_v1();
        let records = match self.store.zone_for_axfr(id, zone) {
            Ok(zones) => zones.zone_records(id, zone).ok_or_else(String::new),
            Err(e) => Err(format!(": database not readable: {e}")),
        };
        let records = match records {
            Ok(records) => records,
            Err(why) => {
                let zone = zone.map(crate::text::shown);
                self.axfr_log.warn(
                    Instant::now(),
                    format_args!("AXFR of zone id {id} ({zone:?}) not served{why}: answered FAIL"),
                );
                self.stats.failed_lines += 1;
                return Ok(Ending::Fail);
            }
        };
        for r in records {
            abi::write_data(out, abi, &as_stored(&r))?;
        }
        self.stats.axfrs += 1;
        Ok(Ending::End)
    }

    fn abi_or_v1(&self) -> AbiVersion {
        self.abi.unwrap_or(AbiVersion::V1)
    }

    fn query(&mut self, q: &Question<'_>, out: &mut dyn Write) -> io::Result<Ending> {
        self.stats.questions += 1;
        let abi = self.abi_or_v1();
        let (client, now) = (q.client(), (self.clock)());
        if self.ranker.algorithm == crate::select::Algorithm::LeastLatency {
            self.store.asked_from(client);
        }
        let mut n = 0;
        // pdns asks class IN only; anything else has no data here.
        if q.qclass.eq_ignore_ascii_case("IN") {
            // A name that cannot be read is an outage, not "no such name",
            // which pdns would cache and hand to resolvers.
            if self.store.prepare(q.qname).is_err() {
                return Ok(Ending::Fail);
            }
            let (zones, metrics) = (self.store.zones(), self.store.metrics());
            // Records come sorted by type, so each RRset is one run.
            let mut records = zones.lookup(q.qname, q.qtype).peekable();
            let mut run = recycle(std::mem::take(&mut self.rrset));
            while let Some(first) = records.next() {
                run.clear();
                run.push(first);
                while let Some(r) = records.next_if(|r| r.rtype == first.rtype) {
                    run.push(r);
                }
                n += run.len();
                self.ranker.write(out, abi, &run, metrics, client, now)?;
            }
            self.rrset = recycle(run);
        }
        self.tally.count(self.store.metrics(), client, n > 0);
        if n == 0 {
            self.stats.empty += 1;
            debug!("no data for {} {}", q.qname, q.qtype);
        } else {
            self.stats.answered += 1;
        }
        Ok(Ending::End)
    }

    /// What the records index holds, in words.
    fn held(&self) -> String {
        let z = self.store.zones();
        match z.is_whole() {
            true => format!("{} zones, {} records", z.zone_count(), z.record_count()),
            false => format!(
                "records read per name as asked, {} names cached ({} records)",
                z.name_count(),
                z.record_count()
            ),
        }
    }

    /// `pdnsutil backend-cmd pipe CMD` (ABI 5). Every reply is lines of text
    /// then END; an unknown command says so in its text rather than FAIL,
    /// because pdnsutil shows the text to the operator who typed it.
    fn command(&mut self, cmd: &str, out: &mut dyn Write) -> io::Result<()> {
        let mut words = cmd.split_whitespace();
        match words.next().unwrap_or("") {
            "help" | "" => {
                out.write_all(
                    b"commands:\n\
                      help      this list\n\
                      status    database, algorithm, zones, records, lookups served\n\
                      reload    re-read the database now\n",
                )?;
            }
            "status" => {
                let s = self.stats;
                let st = self.store.stats();
                writeln!(
                    out,
                    "pdns-ha {}, pipe ABI {}",
                    env!("CARGO_PKG_VERSION"),
                    self.abi_or_v1()
                )?;
                writeln!(out, "database: {}", self.store.path().display())?;
                writeln!(out, "loaded: {:.1?} ago", self.store.loaded_at().elapsed())?;
                writeln!(out, "algorithm: {}", self.ranker.algorithm)?;
                writeln!(out, "{}", self.held())?;
                writeln!(
                    out,
                    "lookups: {} ({} with data, {} empty), axfr: {}, bad lines: {}",
                    s.questions, s.answered, s.empty, s.axfrs, s.failed_lines
                )?;
                writeln!(
                    out,
                    "zone loads: {}, reading loads: {}, names read: {}, read failures: {}",
                    st.zone_loads, st.reading_loads, st.name_reads, st.read_failures
                )?;
                writeln!(
                    out,
                    "reading rows read: {} (last load: {}), full reading loads: {}",
                    st.reading_rows, st.reading_rows_last, st.reading_full_loads
                )?;
                writeln!(out, "rows skipped: {}", self.store.skipped().0)?;
                if let Some(c) = self.store.cache() {
                    let auth = match c.authenticated() {
                        true => "sealed values only",
                        false => "unauthenticated",
                    };
                    writeln!(
                        out,
                        "memcached: {auth}; failed exchanges: {}; values ignored: {}",
                        c.failures(),
                        c.rejects()
                    )?;
                    if let Some(o) = self.store.overlay().map(|o| o.stats()) {
                        writeln!(
                            out,
                            "memcached fetches: {}, keys fetched: {} (last fetch: {})",
                            o.fetches, o.keys, o.last_keys
                        )?;
                    }
                }
                writeln!(out, "uptime: {:.0?}", self.started.elapsed())?;
            }
            "reload" => {
                self.store.expire();
                self.store.refresh(Instant::now());
                writeln!(out, "reloaded: {}", self.held())?;
            }
            other => writeln!(out, "unknown command {other:?}; try help")?,
        }
        Ok(())
    }
}

/// The `OK` line that answers `HELO`; `note` (no TAB or line break) is
/// appended for pdns's log ("Backend launched with banner: ...").
pub(super) fn banner(
    out: &mut dyn Write,
    abi: AbiVersion,
    algorithm: Algorithm,
    note: &str,
) -> io::Result<()> {
    writeln!(
        out,
        "OK\tpdns-ha {} ({algorithm} algorithm), pipe ABI {abi}{note}",
        env!("CARGO_PKG_VERSION")
    )
}

pub(super) enum LineRead {
    Eof,
    Line,
    TooLong,
}

/// Reads one line into `buf` without its `\n`, holding at most `MAX_LINE`
/// bytes: the rest of an over-long line is consumed and dropped, so one
/// huge line costs one `FAIL` and no memory. A last line without `\n`
/// still counts as a line.
pub(super) fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = match input.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => LineRead::TooLong,
                (false, true) => LineRead::Eof,
                (false, false) => LineRead::Line,
            });
        }
        let newline = avail.iter().position(|&b| b == b'\n');
        let chunk = &avail[..newline.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(avail.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut r = input;
        let mut buf = Vec::new();
        let mut v = Vec::new();
        loop {
            match read_line(&mut r, &mut buf).unwrap() {
                LineRead::Eof => return v,
                LineRead::TooLong => v.push("<too long>".into()),
                LineRead::Line => v.push(String::from_utf8_lossy(&buf).into_owned()),
            }
        }
    }

    #[test]
    fn line_reader() {
        assert_eq!(lines(b"a\nb\n\nc"), ["a", "b", "", "c"]);
        let mut long = vec![b'x'; MAX_LINE + 1];
        long.extend_from_slice(b"\nok\n");
        assert_eq!(lines(&long), ["<too long>", "ok"]);
        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(lines(&exact)[0].len(), MAX_LINE);
        assert_eq!(lines(b""), Vec::<String>::new());
    }
}
