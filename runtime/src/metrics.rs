//! Every metric weir emits, by name, in one place.
//!
//! weir emits through the [`metrics`](https://docs.rs/metrics) facade; the binary that
//! embeds it installs a recorder (the `prometheus` example serves them). The I/O
//! thread publishes the gauges once a second; counters move as records are processed.
//! Labels are given with each name.

/// Gauge `{zone}`: bytes in use in a zone of the memory limit (every
/// [`Zone`](crate::Zone)'s name, and `headroom`: what the process holds outside the
/// zones).
pub const MEMORY_USED_BYTES: &str = "weir_memory_used_bytes";
/// Gauge `{zone}`: a zone's bound (and `headroom`, and `total`: the limit).
pub const MEMORY_LIMIT_BYTES: &str = "weir_memory_limit_bytes";
/// Gauge: the process's resident set.
pub const PROCESS_RSS_BYTES: &str = "weir_process_rss_bytes";
/// Gauge: jemalloc's `stats.allocated` (feature `jemalloc`).
pub const JEMALLOC_ALLOCATED_BYTES: &str = "weir_jemalloc_allocated_bytes";
/// Gauge: jemalloc's `stats.active`.
pub const JEMALLOC_ACTIVE_BYTES: &str = "weir_jemalloc_active_bytes";
/// Gauge: jemalloc's `stats.resident`.
pub const JEMALLOC_RESIDENT_BYTES: &str = "weir_jemalloc_resident_bytes";
/// Gauge: jemalloc's `stats.retained`.
pub const JEMALLOC_RETAINED_BYTES: &str = "weir_jemalloc_retained_bytes";
/// Counter: purges of jemalloc's free pages near the memory limit.
pub const ALLOCATOR_PURGES_TOTAL: &str = "weir_allocator_purges_total";

/// Gauge `{kind}` (`worker`, `io`): the runtime's threads.
pub const THREADS: &str = "weir_threads";

/// Gauge: bytes in all partition queues.
pub const QUEUE_BYTES: &str = "weir_queue_bytes";
/// Gauge: the partition queues' byte cap.
pub const QUEUE_BYTES_LIMIT: &str = "weir_queue_bytes_limit";
/// Gauge: partitions held back because their queues are full.
pub const PARTITIONS_PAUSED: &str = "weir_partitions_paused";
/// Gauge `{query, topic, partition}`: records waiting in a task's input queue.
pub const PARTITION_QUEUE_RECORDS: &str = "weir_partition_queue_records";
/// Gauge `{query, topic, partition}`: bytes waiting in a task's input queue.
pub const PARTITION_QUEUE_BYTES: &str = "weir_partition_queue_bytes";
/// Gauge `{query, topic, partition}`: records not yet processed (end offset less the
/// query's position, plus what waits in its queue).
pub const CONSUMER_LAG_RECORDS: &str = "weir_consumer_lag_records";

/// Counter `{query}`: records run through the topology.
pub const RECORDS_PROCESSED_TOTAL: &str = "weir_records_processed_total";
/// Counter `{query}`: records skipped (deserialization handler, negative timestamp).
pub const RECORDS_SKIPPED_TOTAL: &str = "weir_records_skipped_total";
/// Counter `{query}`: records dropped because their window had closed.
pub const RECORDS_DROPPED_LATE_TOTAL: &str = "weir_records_dropped_late_total";
/// Counter `{query, task, processor}`: records an operator dropped (a window closed),
/// Kafka Streams' `dropped-records`.
pub const DROPPED_RECORDS_TOTAL: &str = "weir_dropped_records_total";
/// Gauge `{query, task}`: the largest lateness of a task's records so far (stream time
/// when the record arrived less its timestamp, zero if not behind), Kafka Streams'
/// `record-lateness-max`.
pub const RECORD_LATENESS_MAX_MS: &str = "weir_record_lateness_max_ms";
/// Gauge `{query, task}`: the average lateness of a task's records so far, Kafka
/// Streams' `record-lateness-avg`.
pub const RECORD_LATENESS_AVG_MS: &str = "weir_record_lateness_avg_ms";
/// Counter `{query, task}`: records a task processed although one of its inputs was
/// empty and its idle time had run out (task idling; Kafka Streams'
/// `enforced-processing-total`).
pub const ENFORCED_PROCESSING_TOTAL: &str = "weir_enforced_processing_total";
/// Counter `{query}`: records Kafka refused, with a log-and-continue production handler.
pub const PRODUCE_ERRORS_TOTAL: &str = "weir_produce_errors_total";
/// Counter `{query}`: commits put off because the cluster did not answer in time or
/// the group was rebalancing (the offsets stay at the last commit).
pub const COMMITS_DEFERRED_TOTAL: &str = "weir_commits_deferred_total";
/// Gauge `{query}`: how long the query's commits have been waiting for the cluster, in
/// ms (zero once one goes through).
pub const COMMIT_STALLED_MS: &str = "weir_commit_stalled_ms";
/// Counter `{query}`: exactly-once tasks closed without committing and built again from
/// the last commit, because a rebalance made the transaction's commit fail (Kafka
/// Streams' `TaskMigratedException`).
pub const TASKS_RESTARTED_TOTAL: &str = "weir_tasks_restarted_total";
/// Gauge `{query, store, task}`: records restored into a store from its changelog.
pub const RESTORED_RECORDS: &str = "weir_restored_records";

/// Gauge: the record cache's bytes.
pub const RECORD_CACHE_BYTES: &str = "weir_record_cache_bytes";
/// Gauge: the record cache's budget.
pub const RECORD_CACHE_LIMIT_BYTES: &str = "weir_record_cache_limit_bytes";
/// Gauge: entries in the record cache.
pub const RECORD_CACHE_ENTRIES: &str = "weir_record_cache_entries";
/// Gauge: entries evicted from the record cache so far.
pub const RECORD_CACHE_EVICTIONS: &str = "weir_record_cache_evictions";
/// Gauge: the record cache's hits over lookups so far.
pub const RECORD_CACHE_HIT_RATIO: &str = "weir_record_cache_hit_ratio";

/// Gauge: capacity of RocksDB's shared cache (the RocksDB zone's bound).
pub const ROCKSDB_CACHE_CAPACITY_BYTES: &str = "weir_rocksdb_cache_capacity_bytes";
/// Gauge: RocksDB's shared cache in use (blocks, memtables, index and filters).
pub const ROCKSDB_CACHE_USAGE_BYTES: &str = "weir_rocksdb_cache_usage_bytes";
/// Gauge: entries pinned in RocksDB's shared cache.
pub const ROCKSDB_CACHE_PINNED_BYTES: &str = "weir_rocksdb_cache_pinned_bytes";
/// Gauge: memtable bytes of every store.
pub const ROCKSDB_MEMTABLE_BYTES: &str = "weir_rocksdb_memtable_bytes";
/// Gauge: the write buffer manager's limit.
pub const ROCKSDB_MEMTABLE_LIMIT_BYTES: &str = "weir_rocksdb_memtable_limit_bytes";
/// Gauge: table readers' memory (outside the cache, growing with data).
pub const ROCKSDB_TABLE_READERS_BYTES: &str = "weir_rocksdb_table_readers_bytes";
/// Gauge: open RocksDB instances.
pub const ROCKSDB_OPEN_STORES: &str = "weir_rocksdb_open_stores";

/// Gauge `{query, operator, task}`: bytes in one suppression buffer (emitted by the
/// DSL's `suppress`).
pub const SUPPRESSION_BUFFER_BYTES: &str = "weir_suppression_buffer_bytes";
/// Gauge `{query, operator, task}`: records in one suppression buffer.
pub const SUPPRESSION_BUFFER_RECORDS: &str = "weir_suppression_buffer_records";

/// Every name above, for tests and exporters.
pub const ALL: &[&str] = &[
    MEMORY_USED_BYTES,
    MEMORY_LIMIT_BYTES,
    PROCESS_RSS_BYTES,
    JEMALLOC_ALLOCATED_BYTES,
    JEMALLOC_ACTIVE_BYTES,
    JEMALLOC_RESIDENT_BYTES,
    JEMALLOC_RETAINED_BYTES,
    ALLOCATOR_PURGES_TOTAL,
    THREADS,
    QUEUE_BYTES,
    QUEUE_BYTES_LIMIT,
    PARTITIONS_PAUSED,
    PARTITION_QUEUE_RECORDS,
    PARTITION_QUEUE_BYTES,
    CONSUMER_LAG_RECORDS,
    RECORDS_PROCESSED_TOTAL,
    RECORDS_SKIPPED_TOTAL,
    RECORDS_DROPPED_LATE_TOTAL,
    DROPPED_RECORDS_TOTAL,
    RECORD_LATENESS_MAX_MS,
    RECORD_LATENESS_AVG_MS,
    ENFORCED_PROCESSING_TOTAL,
    PRODUCE_ERRORS_TOTAL,
    COMMITS_DEFERRED_TOTAL,
    COMMIT_STALLED_MS,
    TASKS_RESTARTED_TOTAL,
    RESTORED_RECORDS,
    RECORD_CACHE_BYTES,
    RECORD_CACHE_LIMIT_BYTES,
    RECORD_CACHE_ENTRIES,
    RECORD_CACHE_EVICTIONS,
    RECORD_CACHE_HIT_RATIO,
    ROCKSDB_CACHE_CAPACITY_BYTES,
    ROCKSDB_CACHE_USAGE_BYTES,
    ROCKSDB_CACHE_PINNED_BYTES,
    ROCKSDB_MEMTABLE_BYTES,
    ROCKSDB_MEMTABLE_LIMIT_BYTES,
    ROCKSDB_TABLE_READERS_BYTES,
    ROCKSDB_OPEN_STORES,
    SUPPRESSION_BUFFER_BYTES,
    SUPPRESSION_BUFFER_RECORDS,
];
