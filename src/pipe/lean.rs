//! The pipe's heap without glibc's per-thread cache of freed chunks. Loading the database
//! allocates and frees a few hundred kilobytes; `malloc_trim` then returns the free pages,
//! except those holding the chunks the cache keeps (the last few freed of each size): in
//! a pipe process about 110 KiB stayed resident that way, private to each of the several
//! pipes pdns runs. The pipe allocates nothing per lookup, so the cache buys it nothing.
//! glibc reads its tunables only when a process starts, so the pipe starts itself again,
//! once, with the cache turned off (same process id, same standard streams).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

const TUNABLE: &str = "glibc.malloc.tcache_count=0";

/// Execs this program again with the cache off, unless the environment already says how
/// the cache is set (then it is the operator's choice, and there is no loop). Returns only
/// if the exec failed, and the pipe then runs as it is.
pub fn restart_without_malloc_cache() {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.to_string_lossy().contains("tcache_count") {
        return;
    }
    let mut value = tunables;
    if !value.is_empty() {
        value.push(":");
    }
    value.push(TUNABLE);
    // The program's own path, not /proc/self/exe: the process name (`ps`, `pgrep -x
    // pdns-ha`) is the executed file's name.
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("pdns-ha"));
    let err = std::process::Command::new(program)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .exec();
    log::debug!("running with glibc's malloc cache: exec failed: {err}");
}
