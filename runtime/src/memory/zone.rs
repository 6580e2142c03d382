//! The zones of the memory limit: the one list of them.

/// A zone of the memory limit: bytes of one kind, held under a bound of their own. The
/// bounds add up to at most the limit; the rest is headroom for what no zone owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Zone {
    /// RocksDB's shared block cache, which is also its blob cache and is charged with
    /// the memtables (the write buffer manager) and index and filter blocks.
    RocksDb,
    /// The record cache in front of every store.
    RecordCache,
    /// Records fetched and waiting in partition queues (and, on Kafka, beside them).
    PartitionQueues,
    /// Suppression buffers of every query.
    Suppression,
    /// In-memory stores of every query.
    InMemoryStores,
}

impl Zone {
    /// Every zone, in the order of the memory report's table.
    pub const ALL: [Zone; 5] = [
        Zone::RocksDb,
        Zone::RecordCache,
        Zone::PartitionQueues,
        Zone::Suppression,
        Zone::InMemoryStores,
    ];

    /// The zone's name: its row in the report and its `zone` label in
    /// `weir_memory_used_bytes` and `weir_memory_limit_bytes`.
    pub fn name(self) -> &'static str {
        match self {
            Zone::RocksDb => "rocksdb",
            Zone::RecordCache => "record_cache",
            Zone::PartitionQueues => "partition_queues",
            Zone::Suppression => "suppression",
            Zone::InMemoryStores => "in_memory_stores",
        }
    }

    /// The [`RuntimeConfigBuilder`](crate::RuntimeConfigBuilder) setting of its bound.
    pub fn setting(self) -> &'static str {
        match self {
            Zone::RocksDb => "rocksdb_cache_bytes",
            Zone::RecordCache => "record_cache_bytes",
            Zone::PartitionQueues => "queue_max_bytes",
            Zone::Suppression => "suppression_buffer_bytes",
            Zone::InMemoryStores => "in_memory_store_bytes",
        }
    }

    /// Its bound when the setting is left out: a share of the limit (3/8, 1/4, 1/16,
    /// 1/16 and 1/16; the remaining 3/16 is headroom).
    pub fn default_bound(self, limit: usize) -> usize {
        match self {
            Zone::RocksDb => limit / 8 * 3,
            Zone::RecordCache => limit / 4,
            Zone::PartitionQueues | Zone::Suppression | Zone::InMemoryStores => limit / 16,
        }
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bounds_leave_headroom_and_names_are_distinct() {
        let limit = 1 << 30;
        let sum: usize = Zone::ALL.iter().map(|z| z.default_bound(limit)).sum();
        assert_eq!(limit - sum, limit / 16 * 3);
        let names: std::collections::HashSet<_> = Zone::ALL.iter().map(|z| z.name()).collect();
        let settings: std::collections::HashSet<_> =
            Zone::ALL.iter().map(|z| z.setting()).collect();
        assert_eq!((names.len(), settings.len()), (5, 5));
    }
}
