//! The memory report: one limit divided into zones, each zone's use next to its bound,
//! and (on jemalloc, which the workspace's tests run on) the allocator's counters.

use weir::prelude::*;

#[test]
fn the_report_divides_the_limit_into_zones_and_measures_them() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 256 << 20;
    let config = RuntimeConfig::builder()
        .memory_limit(limit)
        .state_dir(dir.path())
        .build()
        .unwrap();
    let state = *config.state();
    let queues = config.queue_max_bytes();
    let rt = Runtime::new(config).unwrap();
    let report = rt.memory_report();
    let bound = |zone: &str| {
        report
            .zones
            .iter()
            .find(|z| z.zone == zone)
            .unwrap_or_else(|| panic!("no zone {zone}: {report}"))
            .bound
    };
    assert_eq!(bound("rocksdb"), state.rocksdb_cache_bytes);
    assert_eq!(bound("record_cache"), state.record_cache_bytes);
    assert_eq!(bound("partition_queues"), queues);
    assert_eq!(bound("suppression"), state.suppression_buffer_bytes);
    assert_eq!(bound("in_memory_stores"), state.in_memory_store_bytes);
    let bounds: usize = report.zones.iter().map(|z| z.bound).sum();
    assert_eq!(report.limit, limit);
    assert_eq!(report.headroom, limit - bounds);
    assert!(report.headroom > 0);
    // Nothing runs: the zones are empty, and the process is measured.
    assert_eq!(report.zones_used(), 0, "{report}");
    assert!(report.rss.is_some_and(|r| r > 1 << 20), "{report}");
    #[cfg(feature = "jemalloc")]
    assert!(
        report
            .allocator
            .is_some_and(|a| a.allocated > 0 && a.resident >= a.active),
        "{report}"
    );
    let table = report.to_string();
    for zone in [
        "rocksdb",
        "record_cache",
        "partition_queues",
        "suppression",
        "in_memory_stores",
        "headroom (other)",
        "total",
    ] {
        assert!(table.contains(zone), "{zone} missing from\n{table}");
    }
}

#[test]
fn zones_over_the_limit_or_a_limit_too_small_are_refused_when_built() {
    let e = RuntimeConfig::builder()
        .memory_limit(64 << 20)
        .record_cache_bytes(60 << 20)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("over memory_limit"), "{e}");
    let e = RuntimeConfig::builder()
        .memory_limit(1 << 20)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory"), "{e}");
}
