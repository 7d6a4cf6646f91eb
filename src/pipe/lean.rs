//! The pipe's memory kept to what it holds. pdns runs several pipes for as long as it runs,
//! and whatever one process touched once (the heap and stack a load went through) stays
//! private to it unless it is given back: glibc's per-thread cache of freed chunks is turned
//! off, SQLite's slabs are not set up, SQLite allocates in a region of its own that goes
//! back whole when its connection closes, and after a load the free heap pages and the
//! stack below the current frame go back to the kernel.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};

const TUNABLE: &str = "glibc.malloc.tcache_count=0";

/// Loading the database allocates and frees a few hundred kilobytes; `malloc_trim` then
/// returns the free pages, except those holding the chunks glibc's per-thread cache keeps
/// (the last few freed of each size): about 110 KiB in a pipe process. The pipe allocates
/// nothing per lookup, so the cache buys it nothing. glibc reads its tunables only when a
/// process starts, so the pipe starts itself again, once, with the cache turned off (same
/// process id, same standard streams).
///
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

/// SQLite's per-process memory, set before the first connection opens: no lookaside
/// buffer (48 KB per connection, every slot written when it is set up) and no bulk
/// page-cache slab (20 pages, one header written in each), so only what a load really
/// holds stays resident, and `PRAGMA shrink_memory` gives pages back one by one. Both
/// speed up the many small allocations of preparing statements; the pipe prepares a few,
/// once, and asks SQLite nothing on a lookup.
pub fn small_sqlite() {
    use rusqlite::ffi;
    // SAFETY: sqlite3_config is called before any connection exists (SQLite refuses it
    // with SQLITE_MISUSE otherwise, and nothing changes); the variadic arguments have the
    // types these two options take (int, int; pointer, int, int).
    let (lookaside, page_cache) = unsafe {
        (
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_LOOKASIDE, 0i32, 0i32),
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<std::ffi::c_void>(),
                0i32,
                0i32,
            ),
        )
    };
    if lookaside != ffi::SQLITE_OK || page_cache != ffi::SQLITE_OK {
        log::debug!("SQLite memory left as it is: sqlite3_config {lookaside}, {page_cache}");
    }
}

/// The stack below this function's frame that stays untouched: its callees (`madvise`,
/// the libc wrapper around the system call) run within it.
const STACK_MARGIN: usize = 8 * 1024;

/// Gives back the free heap pages, and the main thread's stack pages below the caller's
/// frame: parsing the command line and a load (SQLite's parser, the zone builder) run
/// deeper than a lookup ever does, and the kernel keeps every stack page once touched.
/// Called after a load, where nothing below the caller is in use. On any other thread
/// (the stack is not the process's `[stack]` mapping) the stack is left alone.
pub fn give_back() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Some(bottom) = main_stack_bottom(sp) else {
        return;
    };
    // SAFETY: sysconf only reads a system setting.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        // madvise rounds its length up to whole pages, so the range must end on a boundary
        // of the real page size (64 KiB on some arm64 kernels), or its last page could
        // reach into live frames.
        p if p > 0 && (p as usize).is_power_of_two() => p as usize,
        _ => return,
    };
    let top = sp.saturating_sub(STACK_MARGIN) & !(page - 1);
    if top > bottom {
        // SAFETY: [bottom, top) lies in the main thread's stack mapping, below this frame
        // by more than the margin its callees use: no frame lives there, so the pages hold
        // nothing anyone reads before writing, and they come back zeroed when touched.
        unsafe {
            libc::madvise(
                bottom as *mut libc::c_void,
                top - bottom,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// The lowest address of the `[stack]` mapping, if `sp` lies in it. Read once: by the first
/// call the command line and the first load have taken the stack as deep as it goes (a
/// mapping that grew further later only leaves those pages kept).
fn main_stack_bottom(sp: usize) -> Option<usize> {
    static RANGE: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    let (low, high) = (*RANGE.get_or_init(stack_mapping))?;
    (low..high).contains(&sp).then_some(low)
}

fn stack_mapping() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (range, _) = line.split_once(' ')?;
    let (low, high) = range.split_once('-')?;
    Some((
        usize::from_str_radix(low, 16).ok()?,
        usize::from_str_radix(high, 16).ok()?,
    ))
}

/// Where SQLite's heap is while it is apart from the pipe's: the address of its region, 0
/// while SQLite allocates from the process heap.
static SQLITE_HEAP: AtomicUsize = AtomicUsize::new(0);

/// SQLite's region, reserved, not committed: only the pages SQLite touches cost memory. A
/// load of the largest database held whole takes a few MiB of it.
pub const SQLITE_HEAP_BYTES: usize = 64 << 20;

/// SQLite's smallest allocation in its region (memsys5 rounds every size up to a power of
/// two of this).
const SQLITE_HEAP_ATOM: i32 = 64;

/// Gives SQLite a heap of its own, a region mapped for it alone, before the first
/// connection opens. A load allocates and frees thousands of SQLite's chunks between the
/// pipe's long-lived ones; in one heap those few kilobytes of live data end up spread over
/// some twenty pages that `malloc_trim` cannot return (four pipes on the example: 84 KiB of
/// heap each, 36 with SQLite apart). Apart, SQLite's whole region goes back when the
/// connection closes ([`sqlite_heap_give_back`]). Anything that fails leaves SQLite on the
/// process heap, as it was.
///
/// # Safety
///
/// Called before any SQLite connection opens, in a process where SQLite is used from one
/// thread and only through one [`crate::pipe::store::Store`]: the store shuts SQLite down
/// whenever it has closed its connection, which must then be the only one.
pub unsafe fn sqlite_heap_apart() {
    use rusqlite::ffi;
    // SAFETY: a new anonymous private mapping, used by nothing else.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SQLITE_HEAP_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        log::debug!("SQLite's heap left in the process heap: no region mapped");
        return;
    }
    // SAFETY: called before any connection exists (SQLite refuses it with SQLITE_MISUSE
    // otherwise, and nothing changes); the arguments are what the option takes (pointer,
    // int, int), and the region stays mapped while SQLite may use it.
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_HEAP,
            base,
            SQLITE_HEAP_BYTES as i32,
            SQLITE_HEAP_ATOM,
        )
    };
    if rc != ffi::SQLITE_OK {
        log::debug!("SQLite's heap left in the process heap: sqlite3_config {rc}");
        // SAFETY: the mapping made above, which SQLite did not take.
        unsafe { libc::munmap(base, SQLITE_HEAP_BYTES) };
        return;
    }
    SQLITE_HEAP.store(base as usize, Ordering::Relaxed);
}

/// Whether SQLite allocates from its own region.
pub fn sqlite_heap_is_apart() -> bool {
    SQLITE_HEAP.load(Ordering::Relaxed) != 0
}

/// Returns all of SQLite's region to the kernel: SQLite is shut down (it then holds
/// nothing) and sets its heap up afresh at the next open.
///
/// # Safety
///
/// No SQLite connection, statement or other object is open in the process.
pub unsafe fn sqlite_heap_give_back() {
    let base = SQLITE_HEAP.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: nothing of SQLite's is open (the caller's promise), so once it is shut down
    // nothing lives in the region.
    unsafe {
        rusqlite::ffi::sqlite3_shutdown();
        libc::madvise(
            base as *mut libc::c_void,
            SQLITE_HEAP_BYTES,
            libc::MADV_DONTNEED,
        );
    }
}

/// Moves SQLite back to the process heap for good, before a connection is kept open for
/// hours (records read per name): in its region, freed memory is returned only all at
/// once, so a long-lived page cache would stay at its high-water mark, twice its size
/// (every chunk rounded up to a power of two); the process heap returns it page by page.
///
/// # Safety
///
/// As for [`sqlite_heap_give_back`]: no SQLite object is open in the process.
pub unsafe fn sqlite_heap_join() {
    let base = SQLITE_HEAP.swap(0, Ordering::Relaxed);
    if base == 0 {
        return;
    }
    use rusqlite::ffi;
    // SAFETY: as in `sqlite_heap_give_back`; once shut down SQLite may be configured
    // again, and a null heap puts it back on the system's malloc.
    unsafe {
        ffi::sqlite3_shutdown();
        let rc = ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_HEAP,
            std::ptr::null_mut::<libc::c_void>(),
            0i32,
            0i32,
        );
        if rc == ffi::SQLITE_OK {
            libc::munmap(base as *mut libc::c_void, SQLITE_HEAP_BYTES);
        } else {
            // Still SQLite's heap: it stays, given back between connections.
            SQLITE_HEAP.store(base, Ordering::Relaxed);
        }
    }
}
