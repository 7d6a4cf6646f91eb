//! `pdns-ha`: what PowerDNS runs as `pipe-command`, plus the offline commands that work on
//! the database. `main` only wires: parse the command line, set up logging, run the
//! command. `monitor` and `observe` are handed over to `pdns-ha-daemon`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::{BorrowedFd, RawFd};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pdns_ha::cli::{NetworkCommand, PipeCli, PipeCommand, TargetCommand};
use pdns_ha::config::PipeOptions;
use pdns_ha::ops::edit;
use pdns_ha::pipe::answer::Ranker;
use pdns_ha::pipe::{backend, lean, store, waiting};
use pdns_ha::state::memcached::Cache;
use pdns_ha::{cli, logging, ops};

fn main() -> ExitCode {
    let command = parse();
    logging::init();
    let result = match command {
        PipeCommand::Pipe(a) => pipe(&a.options()),
        other => offline(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdns-ha: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, parsed in a frame of its own: clap's frames are deep, and once this
/// returns they lie below the pipe's, where [`lean::give_back`] returns them.
#[inline(never)]
fn parse() -> PipeCommand {
    PipeCli::parse_from(cli::with_default_command(std::env::args_os().collect())).command
}

/// Every command but the pipe, apart from it: inlined into `main`, their locals would
/// make `main`'s frame (live under every lookup) several kilobytes deep.
#[inline(never)]
fn offline(command: PipeCommand) -> anyhow::Result<()> {
    match command {
        PipeCommand::Pipe(a) => pipe(&a.options()),
        PipeCommand::Init(a) => ops::init::run(&a.db.db, &a.scripts),
        PipeCommand::Check(a) => ops::check::run(&a.db),
        PipeCommand::Metric(m) => {
            let (metric, write, monitor_id) = m.split();
            ops::write::metric(&write.db.db, &metric, write.cache().as_ref(), &monitor_id)
        }
        PipeCommand::Drain(a) => {
            let w = &a.target.write;
            let target = &a.target.target.target;
            ops::write::drain(&w.db.db, target, Some(&a.reason), w.cache().as_ref())
        }
        PipeCommand::Undrain(a) => ops::write::drain(
            &a.write.db.db,
            &a.target.target,
            None,
            a.write.cache().as_ref(),
        ),
        PipeCommand::Network(n) => match n {
            NetworkCommand::Add { db, name, cidrs } => edit::network_add(&db.db, &name, &cidrs),
            NetworkCommand::Rm { db, which } => edit::network_rm(&db.db, &which),
            NetworkCommand::List { db } => edit::network_list(&db.db),
        },
        PipeCommand::Target(t) => match t {
            TargetCommand::Add { db, name, fields } => {
                edit::target_write(&db.db, &name, &fields.fields(), false)
            }
            TargetCommand::Set { db, name, fields } => {
                edit::target_write(&db.db, &name, &fields.fields(), true)
            }
            TargetCommand::Rm { db, name } => edit::target_rm(&db.db, &name),
            TargetCommand::List { db } => edit::target_list(&db.db),
        },
        PipeCommand::Status(a) => {
            let opts = a.options();
            ops::report::status(&opts, a.all_networks)
        }
        PipeCommand::Explain(a) => {
            let opts = a.options();
            let qtype = a.qtype.to_ascii_uppercase();
            match a.networks {
                true => ops::networks::explain_networks(&opts, &a.qname, &qtype, a.limit),
                false => {
                    let all = a.algorithm.is_none();
                    ops::report::explain(&opts, all, a.client, &a.qname, &qtype)
                }
            }
        }
        PipeCommand::Monitor(h) => hand_over("monitor", h.args),
        PipeCommand::Observe(h) => hand_over("observe", h.args),
    }
}

#[inline(never)]
fn pipe(opts: &PipeOptions) -> anyhow::Result<()> {
    lean::restart_without_malloc_cache();
    lean::small_sqlite();
    // SAFETY: no connection is open yet; the pipe is one thread, and its store is all that
    // opens connections.
    unsafe { lean::sqlite_heap_apart() };
    // std's stdin and stdout would each keep a buffer of their own (8 KiB and 1 KiB) in
    // every pipe beside these: the pipe reads and writes its own copies of the descriptors.
    // A question is one line of at most 2 KiB. An answer is flushed whole; one page holds
    // dozens of records, and a larger answer (an AXFR) goes out in several writes rather
    // than keeping more pages in every pipe.
    let mut input = io::BufReader::with_capacity(4 * 1024, standard(0).context("stdin")?);
    let mut out = BufWriter::with_capacity(4 * 1024, standard(1).context("stdout")?);
    let served = match start(opts, &mut input, &mut out) {
        Ok(Some((mut backend, pending))) => {
            backend.run(&mut io::Cursor::new(pending).chain(input), &mut out)
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => Ok(()),
        // pdns closed our stdout (it killed or replaced this coprocess):
        // nobody is left to answer.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("pipe i/o"),
    }
}

/// A file over a copy of standard input (0) or output (1).
fn standard(fd: RawFd) -> io::Result<File> {
    // SAFETY: descriptors 0 and 1 are open for the whole life of the process (pdns gives
    // them to its coprocess; a shell, to a command); only a duplicate is kept.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// The backend over the opened database, with what pdns sent while the pipe waited for it
/// (`None`: pdns hung up first). Built in this frame, which is gone before the first
/// lookup, and kept on the heap: the moves of a value as large as the backend would
/// otherwise leave several copies of it in `pipe`'s frame, under every lookup.
#[inline(never)]
fn start(
    opts: &PipeOptions,
    input: &mut dyn io::BufRead,
    out: &mut dyn io::Write,
) -> io::Result<Option<(Box<backend::Backend>, Vec<u8>)>> {
    // The reason is a sentence for the operator (with the fix), logged while the pipe
    // waits; nothing branches on it.
    let mut open = || -> Result<store::Store, String> {
        let at = pdns_ha::state::reading::unix_now;
        let store = store::Store::open_with(&opts.db, at, opts.max_clock_skew)
            .map_err(|e| waiting::diagnose(&opts.db, &e))?;
        let cache = opts.cache.as_ref().map(Cache::connect).transpose();
        Ok(match cache.map_err(|e| e.to_string())? {
            Some(c) => store.with_cache(c),
            None => store,
        })
    };
    let (store, abi, pending) = match open() {
        Ok(store) => (store, None, Vec::new()),
        // Exiting would make pdns_server exit, and every zone it serves with it: wait for
        // the database instead.
        Err(why) => match waiting::serve(why, opts.algorithm, &mut open, input, out)? {
            Some(w) => (w.store, w.abi, w.pending),
            None => return Ok(None),
        },
    };
    let backend = backend::Backend::new(store, Ranker::from_options(opts))
        .with_counters(opts.pipe_counters.clone())
        .with_abi(abi);
    Ok(Some((Box::new(backend), pending)))
}

/// The name of the daemon binary, installed beside this one.
const DAEMON: &str = "pdns-ha-daemon";

/// Runs `pdns-ha-daemon COMMAND ARGS...` in this process's place, as git and cargo run their
/// subcommands: same process id (units and scripts that track it keep working), same
/// stdin/stdout/stderr, and usage shown as `pdns-ha COMMAND`. Beside this binary first,
/// so an installed pair stays a pair; else on `PATH`.
fn hand_over(command: &str, args: Vec<OsString>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(DAEMON)))
        .filter(|p| p.is_file());
    let program = beside.clone().map_or_else(|| DAEMON.into(), OsString::from);
    let err = std::process::Command::new(&program)
        .arg0("pdns-ha")
        .arg(command)
        .args(args)
        .exec();
    let looked = match beside {
        Some(p) => p.display().to_string(),
        None => format!("{DAEMON} beside this binary and on PATH"),
    };
    anyhow::bail!("{command} runs in {DAEMON}, which could not be started ({looked}): {err}")
}
