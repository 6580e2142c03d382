//! jemalloc as the process's malloc, and returning freed memory to the OS.
//!
//! A Rust `#[global_allocator]` does not reach RocksDB's C++ allocations; with the
//! `jemalloc` feature jemalloc replaces `malloc` itself, so every byte of the process
//! is jemalloc's and shows in its counters. Freed pages go back to the OS by decay
//! (about a second, advanced by the I/O thread) or at once by a purge when the RSS
//! nears the limit (`pressure.rs`). Without the feature these are no-ops.

use std::sync::atomic::{AtomicU64, Ordering};

use super::report::AllocatorStats;

/// jemalloc, for `#[global_allocator]` (with the `jemalloc` feature, jemalloc is also
/// the process's `malloc`, so C and C++ code allocates from it too).
#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed ("dirty") pages before returning them to the OS: 1 s
/// instead of its default 10 s, so memory freed by a stopped query or an evicted cache
/// shows as a smaller RSS within about a second of allocator activity.
pub const JEMALLOC_DECAY_MS: isize = 1000;

/// Applies [`JEMALLOC_DECAY_MS`] to jemalloc's existing arenas and to those it makes
/// later, and keeps the muzzy stage off (with the `jemalloc` feature; a no-op without
/// it). Called by [`crate::Runtime::new`].
///
/// Muzzy decay stays 0 (jemalloc's default): a muzzy page is one returned with
/// `MADV_FREE`, which Linux counts in the RSS until it needs the memory, so a second
/// stage would keep freed pages in the resident set a decay period longer. With it
/// off, dirty pages are returned with `MADV_DONTNEED` and leave the RSS at once.
pub(crate) fn configure_allocator() {
    #[cfg(feature = "jemalloc")]
    {
        use std::ffi::{CString, c_int};
        let set = |name: &str, ms: isize| {
            mallctl(
                &CString::new(name).expect("no NUL in a setting's name"),
                Some(ms),
            )
        };
        /// What `arena.<i>.*` answers for an arena index not initialized yet.
        const EFAULT: c_int = 14;
        let warn = |name: &str, rc: c_int| {
            log::warn!(
                "cannot set jemalloc's {name}: {}",
                std::io::Error::from_raw_os_error(rc)
            )
        };
        let settings = [("dirty_decay_ms", JEMALLOC_DECAY_MS), ("muzzy_decay_ms", 0)];
        // Arenas made from now on.
        for (setting, ms) in settings {
            let name = format!("arenas.{setting}");
            if let Err(rc) = set(&name, ms) {
                warn(&name, rc);
            }
        }
        // Arenas that exist already, one by one: jemalloc's `arena.4096.*` (all arenas)
        // is only for `decay`, `purge` and statistics, not for these settings.
        // SAFETY: `arenas.narenas` is an `unsigned`.
        let narenas = unsafe { tikv_jemalloc_ctl::raw::read::<u32>(b"arenas.narenas\0") };
        for i in 0..narenas.unwrap_or(0) {
            for (setting, ms) in settings {
                let name = format!("arena.{i}.{setting}");
                match set(&name, ms) {
                    Ok(()) | Err(EFAULT) => {}
                    Err(rc) => warn(&name, rc),
                }
            }
        }
    }
}

/// Returns to the OS the freed pages whose decay period has passed, in every arena (with
/// the `jemalloc` feature; a no-op without it). jemalloc decays an arena only when it
/// allocates past its thread caches, so a process that went quiet, or allocates little,
/// kept freed memory resident indefinitely (256 MiB freed stayed in the RSS for as long
/// as it was watched); the runtime's I/O thread calls this once a second.
pub(crate) fn advance_allocator_decay() {
    // It only try-locks each arena's decay state, so it never waits for an allocation.
    #[cfg(feature = "jemalloc")]
    if let Err(rc) = mallctl(c"arena.4096.decay", None) {
        log::warn!(
            "jemalloc's arena decay failed: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
}

/// jemalloc's `mallctl` writing an `ssize_t` setting, or (with `None`) running a
/// command that takes and returns nothing, such as `arena.4096.purge` (4096 is
/// MALLCTL_ARENAS_ALL); jemalloc's error code on failure. (tikv-jemalloc-ctl can do
/// neither: it cannot pass no value, and its errors hide the code.)
#[cfg(feature = "jemalloc")]
fn mallctl(
    name: &std::ffi::CStr,
    value: Option<isize>,
) -> std::result::Result<(), std::ffi::c_int> {
    let mut value = value;
    let (new, len) = match &mut value {
        Some(v) => ((v as *mut isize).cast(), std::mem::size_of::<isize>()),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `name` is NUL-terminated; `new` is null or points at an `ssize_t` alive
    // for the call, which is what the settings written here take; nothing is read back.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            new,
            len,
        )
    };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// The I/O thread returns every free page jemalloc holds to the OS at once when the
/// process's RSS is above this many sixteenths of the memory limit (15/16: 960 MiB of
/// 1 GiB). Decay returns them a second or two after they are freed; when many stores
/// close or many queries start together, the pages freed in that second are enough to
/// carry the RSS over the limit while the zones' own use stays under their bounds.
/// (With several runtimes in one process, each compares the process's RSS with its own
/// limit.)
pub const PURGE_AT_SIXTEENTHS: usize = 15;

static PURGES: AtomicU64 = AtomicU64::new(0);

/// Returns every free page jemalloc holds to the OS now (`arena.<all>.purge`), and
/// counts it in [`allocator_purges`] and `weir_allocator_purges_total`. Without the
/// `jemalloc` feature it does nothing and returns false.
pub(crate) fn purge_allocator() -> bool {
    #[cfg(feature = "jemalloc")]
    match mallctl(c"arena.4096.purge", None) {
        Ok(()) => {
            PURGES.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::ALLOCATOR_PURGES_TOTAL).increment(1);
            return true;
        }
        Err(rc) => log::warn!(
            "jemalloc's arena purge failed: {}",
            std::io::Error::from_raw_os_error(rc)
        ),
    }
    false
}

/// How many times the I/O thread returned the allocator's free pages in this
/// process.
pub fn allocator_purges() -> u64 {
    PURGES.load(Ordering::Relaxed)
}

/// The process's resident set size, from `/proc/self/status` (Linux).
pub fn process_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// jemalloc's counters, refreshed (with the `jemalloc` feature; `None` without it, or
/// if jemalloc cannot be read).
pub fn allocator_stats() -> Option<AllocatorStats> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        Some(AllocatorStats {
            allocated: stats::allocated::read().ok()?,
            active: stats::active::read().ok()?,
            resident: stats::resident::read().ok()?,
            retained: stats::retained::read().ok()?,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_on_linux() {
        let rss = process_rss().expect("/proc/self/status");
        assert!(rss > 1 << 20, "{rss}");
    }
}
