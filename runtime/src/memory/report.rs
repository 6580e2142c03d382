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

/// Sets the gauges: `weir_memory_used_bytes{zone}` and `weir_memory_limit_bytes{zone}`
/// for every zone and for `headroom` (its use: what the process holds outside the
/// zones), `weir_memory_limit_bytes{zone="total"}`, `weir_process_rss_bytes`, and
/// `weir_jemalloc_{allocated,active,resident,retained}_bytes`.
pub(crate) fn publish(report: &MemoryReport) {
    for z in &report.zones {
        metrics::gauge!(crate::metrics::MEMORY_USED_BYTES, "zone" => z.zone).set(z.used as f64);
        metrics::gauge!(crate::metrics::MEMORY_LIMIT_BYTES, "zone" => z.zone).set(z.bound as f64);
    }
    metrics::gauge!(crate::metrics::MEMORY_LIMIT_BYTES, "zone" => "headroom")
        .set(report.headroom as f64);
    if let Some(outside) = report.outside_zones() {
        metrics::gauge!(crate::metrics::MEMORY_USED_BYTES, "zone" => "headroom")
            .set(outside as f64);
    }
    metrics::gauge!(crate::metrics::MEMORY_LIMIT_BYTES, "zone" => "total").set(report.limit as f64);
    if let Some(rss) = report.rss {
        metrics::gauge!(crate::metrics::PROCESS_RSS_BYTES).set(rss as f64);
    }
    if let Some(a) = report.allocator {
        metrics::gauge!(crate::metrics::JEMALLOC_ALLOCATED_BYTES).set(a.allocated as f64);
        metrics::gauge!(crate::metrics::JEMALLOC_ACTIVE_BYTES).set(a.active as f64);
        metrics::gauge!(crate::metrics::JEMALLOC_RESIDENT_BYTES).set(a.resident as f64);
        metrics::gauge!(crate::metrics::JEMALLOC_RETAINED_BYTES).set(a.retained as f64);
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
}
