//! The memory report: every zone's bytes next to its bound, with the allocator's and
//! the operating system's view of the whole process.
//!
//! weir's promise is one memory limit for the process. The zones (RocksDB's shared
//! cache, the record cache, partition queues, suppression buffers, in-memory stores)
//! each hold their own bytes under their own bound; what none of them owns (decoded
//! records in flight, librdkafka's buffers, RocksDB's table readers, the allocator's
//! slack) lives in the headroom. The report puts the zones next to what the allocator
//! has handed out and what the process holds, so the headroom's real use shows too.
//! The same figures go out as gauges once a second (see [`publish`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::io::queue::ByteBudget;
use crate::state::{RecordCache, StateEnv};

/// One zone: its bytes in use and its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneUsage {
    /// The zone's name, as in the `zone` label of `weir_memory_used_bytes`.
    pub zone: &'static str,
    /// Bytes in use now.
    pub used: usize,
    /// The zone's bound.
    pub bound: usize,
}

/// jemalloc's counters (`stats.*`), when the process runs on jemalloc and weir was
/// built with the `jemalloc` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes handed out to the application.
    pub allocated: usize,
    /// Bytes in active pages (allocated, rounded up to pages).
    pub active: usize,
    /// Bytes in physically resident pages mapped by the allocator.
    pub resident: usize,
    /// Bytes in virtual memory kept for reuse, not returned to the OS.
    pub retained: usize,
}

/// What [`crate::Runtime::memory_report`] returns; `Display`s as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryReport {
    /// The runtime's memory limit.
    pub limit: usize,
    /// Every zone, in the order of the table.
    pub zones: Vec<ZoneUsage>,
    /// The limit less every zone's bound: room for what no zone owns.
    pub headroom: usize,
    /// jemalloc's counters, if available.
    pub allocator: Option<AllocatorStats>,
    /// The process's resident set (`VmRSS`), if readable.
    pub rss: Option<usize>,
}

impl MemoryReport {
    /// Bytes in use in all zones.
    pub fn zones_used(&self) -> usize {
        self.zones.iter().map(|z| z.used).sum()
    }

    /// What the process holds beyond the zones' use: the allocator's allocated bytes
    /// (or, without jemalloc's counters, the resident set) less the zones' use.
    pub fn outside_zones(&self) -> Option<usize> {
        let total = self.allocator.map(|a| a.allocated).or(self.rss)?;
        Some(total.saturating_sub(self.zones_used()))
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>12} {:>12} {:>6}",
            "zone", "used", "bound", "use"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, used: usize, bound: usize| {
            let pct = if bound == 0 {
                0.0
            } else {
                100.0 * used as f64 / bound as f64
            };
            writeln!(
                f,
                "{name:<24} {:>12} {:>12} {pct:>5.0}%",
                mib(used),
                mib(bound)
            )
        };
        for z in &self.zones {
            row(f, z.zone, z.used, z.bound)?;
        }
        match self.outside_zones() {
            Some(outside) => row(f, "headroom (other)", outside, self.headroom)?,
            None => writeln!(
                f,
                "{:<24} {:>12} {:>12}",
                "headroom (other)",
                "?",
                mib(self.headroom)
            )?,
        }
        let total = self.zones_used() + self.outside_zones().unwrap_or(0);
        row(f, "total", total, self.limit)?;
        if let Some(a) = self.allocator {
            writeln!(
                f,
                "jemalloc: allocated {}, active {}, resident {}, retained {}",
                mib(a.allocated),
                mib(a.active),
                mib(a.resident),
                mib(a.retained)
            )?;
        }
        match self.rss {
            Some(rss) => writeln!(f, "process RSS: {}", mib(rss)),
            None => writeln!(f, "process RSS: unknown"),
        }
    }
}

/// The zones' accounts, as the runtime keeps them (shared with the I/O thread, which
/// publishes the gauges).
#[derive(Clone)]
pub(crate) struct Zones {
    pub(crate) limit: usize,
    pub(crate) state: StateEnv,
    pub(crate) record_cache: Arc<RecordCache>,
    pub(crate) queues: Arc<ByteBudget>,
    pub(crate) suppression: Arc<ByteBudget>,
    pub(crate) in_memory: Arc<ByteBudget>,
}

impl Zones {
    /// The report now.
    pub(crate) fn report(&self) -> MemoryReport {
        let u = self.state.usage();
        let cache = self.record_cache.stats();
        let budget = |zone, b: &ByteBudget| ZoneUsage {
            zone,
            used: b.used(),
            bound: b.cap(),
        };
        let zones = vec![
            ZoneUsage {
                zone: "rocksdb",
                used: u.cache_usage,
                bound: u.cache_capacity,
            },
            ZoneUsage {
                zone: "record_cache",
                used: cache.used,
                bound: cache.cap,
            },
            budget("partition_queues", &self.queues),
            budget("suppression", &self.suppression),
            budget("in_memory_stores", &self.in_memory),
        ];
        let bounds: usize = zones.iter().map(|z| z.bound).sum();
        MemoryReport {
            limit: self.limit,
            headroom: self.limit.saturating_sub(bounds),
            zones,
            allocator: allocator_stats(),
            rss: process_rss(),
        }
    }
}

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
pub fn configure_allocator() {
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
pub fn advance_allocator_decay() {
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
pub fn purge_allocator() -> bool {
    #[cfg(feature = "jemalloc")]
    match mallctl(c"arena.4096.purge", None) {
        Ok(()) => {
            PURGES.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("weir_allocator_purges_total").increment(1);
            return true;
        }
        Err(rc) => log::warn!(
            "jemalloc's arena purge failed: {}",
            std::io::Error::from_raw_os_error(rc)
        ),
    }
    false
}

/// How many times [`purge_allocator`] returned the allocator's free pages in this
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

/// Sets the gauges: `weir_memory_used_bytes{zone}` and `weir_memory_limit_bytes{zone}`
/// for every zone and for `headroom` (its use: what the process holds outside the
/// zones), `weir_memory_limit_bytes{zone="total"}`, `weir_process_rss_bytes`, and
/// `weir_jemalloc_{allocated,active,resident,retained}_bytes`.
pub fn publish(report: &MemoryReport) {
    for z in &report.zones {
        metrics::gauge!("weir_memory_used_bytes", "zone" => z.zone).set(z.used as f64);
        metrics::gauge!("weir_memory_limit_bytes", "zone" => z.zone).set(z.bound as f64);
    }
    metrics::gauge!("weir_memory_limit_bytes", "zone" => "headroom").set(report.headroom as f64);
    if let Some(outside) = report.outside_zones() {
        metrics::gauge!("weir_memory_used_bytes", "zone" => "headroom").set(outside as f64);
    }
    metrics::gauge!("weir_memory_limit_bytes", "zone" => "total").set(report.limit as f64);
    if let Some(rss) = report.rss {
        metrics::gauge!("weir_process_rss_bytes").set(rss as f64);
    }
    if let Some(a) = report.allocator {
        metrics::gauge!("weir_jemalloc_allocated_bytes").set(a.allocated as f64);
        metrics::gauge!("weir_jemalloc_active_bytes").set(a.active as f64);
        metrics::gauge!("weir_jemalloc_resident_bytes").set(a.resident as f64);
        metrics::gauge!("weir_jemalloc_retained_bytes").set(a.retained as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(allocated: Option<usize>, rss: Option<usize>) -> MemoryReport {
        MemoryReport {
            limit: 100 << 20,
            zones: vec![
                ZoneUsage {
                    zone: "rocksdb",
                    used: 10 << 20,
                    bound: 40 << 20,
                },
                ZoneUsage {
                    zone: "record_cache",
                    used: 5 << 20,
                    bound: 25 << 20,
                },
            ],
            headroom: 35 << 20,
            allocator: allocated.map(|a| AllocatorStats {
                allocated: a,
                active: a,
                resident: a,
                retained: 0,
            }),
            rss,
        }
    }

    #[test]
    fn what_no_zone_owns_is_measured_against_the_headroom() {
        let r = report(Some(20 << 20), Some(30 << 20));
        assert_eq!(r.zones_used(), 15 << 20);
        // The allocator's view wins over the resident set.
        assert_eq!(r.outside_zones(), Some(5 << 20));
        assert_eq!(report(None, Some(30 << 20)).outside_zones(), Some(15 << 20));
        assert_eq!(report(None, None).outside_zones(), None);
        // Zones using more than the allocator reports (estimates): nothing outside.
        assert_eq!(report(Some(1 << 20), None).outside_zones(), Some(0));
    }

    #[test]
    fn the_table_shows_every_zone_next_to_its_bound() {
        let text = report(Some(20 << 20), Some(30 << 20)).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("zone"), "{text}");
        assert!(
            lines[1].starts_with("rocksdb")
                && lines[1].contains("10.0 MiB")
                && lines[1].contains("40.0 MiB")
                && lines[1].ends_with("25%"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("headroom (other)") && lines[3].contains("5.0 MiB"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("total")
                && lines[4].contains("20.0 MiB")
                && lines[4].contains("100.0 MiB"),
            "{text}"
        );
        assert!(text.contains("jemalloc: allocated 20.0 MiB"), "{text}");
        assert!(text.contains("process RSS: 30.0 MiB"), "{text}");
        let unknown = report(None, None).to_string();
        assert!(unknown.contains("process RSS: unknown"), "{unknown}");
    }

    #[test]
    fn rss_is_read_on_linux() {
        let rss = process_rss().expect("/proc/self/status");
        assert!(rss > 1 << 20, "{rss}");
    }
}
