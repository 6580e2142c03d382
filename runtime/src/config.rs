//! Runtime configuration: a builder that validates everything before anything starts.
//!
//! The settings a user needs are the worker count, the memory limit and the state
//! directory. The rest have Kafka Streams' defaults (1000 records per partition,
//! 30 s commit interval) and exist so tests and benchmarks can tighten them.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::io::broker::Broker;
use crate::io::settings::TransportConfig;
pub use crate::io::settings::{OffsetReset, ProcessingGuarantee, ProductionExceptionHandler};
use crate::memory::Zone;

/// What to do with a record whose key or value cannot be deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeserializationHandler {
    /// Fail the query with an error naming topic, partition and offset (the default).
    #[default]
    Fail,
    /// Log a warning, count the record as skipped, and go on.
    LogAndContinue,
}

/// What to do when user code fails on one record: a processor (or a DSL operator's
/// closure) returns an error or panics, in `process` or in a punctuator — Kafka
/// Streams' `processing.exception.handler` (KIP-1033). Set the runtime's default with
/// [`RuntimeConfigBuilder::processing_exception_handler`] and override it per query
/// with [`Topology::processing_exception_handler`](crate::Topology::processing_exception_handler).
///
/// Only user code's failures reach the handler: an `Err` a processor returned
/// ([`Error::User`](crate::Error::User), [`Error::Serde`](crate::Error::Serde)) or a
/// panic. The engine's own failures (a store RocksDB refuses, the state budget, Kafka)
/// always fail the query: skipping those would lose records nobody chose to lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingExceptionHandler {
    /// Fail the query with the error, naming the processor (the default, Kafka's
    /// `LogAndFailProcessingExceptionHandler`). Nothing past the last commit is
    /// committed: a restart processes the record again.
    #[default]
    Fail,
    /// Log the error, count the record as dropped by that processor (Kafka's
    /// `dropped-records`, `weir_dropped_records_total`) and as skipped, and go on with
    /// the next record (Kafka's `LogAndContinueProcessingExceptionHandler`). What the
    /// record did before the failure (forwards to other children, store writes) stays.
    LogAndContinue,
}

/// Smallest memory limit the runtime accepts.
pub const MIN_MEMORY_LIMIT: usize = 16 << 20;

/// A validated runtime configuration. Build one with [`RuntimeConfig::builder`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub(crate) application_id: String,
    pub(crate) workers: usize,
    pub(crate) memory_limit: usize,
    pub(crate) state_dir: PathBuf,
    pub(crate) queue_max_records_per_partition: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) max_batch_records: usize,
    pub(crate) max_batch_time: Duration,
    pub(crate) commit_interval: Duration,
    /// Kafka Streams' `task.timeout.ms`.
    pub(crate) task_timeout: Duration,
    /// `None`: task idling disabled.
    pub(crate) max_task_idle: Option<Duration>,
    pub(crate) deserialization_handler: DeserializationHandler,
    pub(crate) production_exception_handler: ProductionExceptionHandler,
    pub(crate) processing_exception_handler: ProcessingExceptionHandler,
    /// Kafka Streams' `errors.dead.letter.queue.topic.name`.
    pub(crate) dead_letter_queue_topic: Option<String>,
    pub(crate) processing_guarantee: ProcessingGuarantee,
    pub(crate) offset_reset: OffsetReset,
    pub(crate) broker: Broker,
    #[cfg(feature = "kafka")]
    pub(crate) kafka: Option<crate::io::kafka::KafkaConfig>,
    pub(crate) state: StateConfig,
}

/// How the memory limit is divided among the state zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConfig {
    /// The one RocksDB block cache shared by every store: blocks, index and filter
    /// blocks, and (charged to it) memtables.
    pub rocksdb_cache_bytes: usize,
    /// The part of the cache memtables may take (the write buffer manager's bound).
    pub rocksdb_memtable_bytes: usize,
    /// RocksDB's shared compaction threads (plus one flush thread).
    pub rocksdb_background_threads: usize,
    /// Open files per RocksDB store (bounds table-reader memory, which sits outside the
    /// cache).
    pub rocksdb_max_open_files: usize,
    /// Whether the RocksDB cache refuses inserts past its capacity instead of
    /// overcommitting (see [`RuntimeConfigBuilder::rocksdb_strict_capacity`]).
    pub rocksdb_strict_capacity: bool,
    /// The record cache's one budget across all stores of all tasks.
    pub record_cache_bytes: usize,
    /// The budget every in-memory store reserves from.
    pub in_memory_store_bytes: usize,
    /// The one budget every suppression buffer of every query reserves from (on top
    /// of each operator's own bound).
    pub suppression_buffer_bytes: usize,
}

impl RuntimeConfig {
    /// What the transport needs of this configuration.
    pub(crate) fn transport(&self) -> TransportConfig<'_> {
        TransportConfig {
            application_id: &self.application_id,
            state_dir: &self.state_dir,
            offset_reset: self.offset_reset,
            production_exception_handler: self.production_exception_handler,
            processing_guarantee: self.processing_guarantee,
            task_timeout: self.task_timeout,
            broker: &self.broker,
            #[cfg(feature = "kafka")]
            kafka: self.kafka.as_ref(),
        }
    }

    /// A builder with defaults for everything.
    pub fn builder() -> RuntimeConfigBuilder {
        RuntimeConfigBuilder::default()
    }

    /// The application id (prefix of consumer groups and internal topics).
    pub fn application_id(&self) -> &str {
        &self.application_id
    }
    /// Number of worker threads in the pool.
    pub fn workers(&self) -> usize {
        self.workers
    }
    /// The process memory limit in bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }
    /// The state directory.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }
    /// Record cap of each partition queue.
    pub fn queue_max_records_per_partition(&self) -> usize {
        self.queue_max_records_per_partition
    }
    /// How long a task waits for an empty input partition
    /// ([`RuntimeConfigBuilder::max_task_idle`]); `None` if task idling is disabled.
    pub fn max_task_idle(&self) -> Option<Duration> {
        self.max_task_idle
    }
    /// Byte cap over all partition queues.
    pub fn queue_max_bytes(&self) -> usize {
        self.queue_max_bytes
    }
    /// The broker the runtime's sources and sinks attach to.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
    /// The Kafka cluster sources and sinks use instead of the in-process broker.
    #[cfg(feature = "kafka")]
    pub fn kafka(&self) -> Option<&crate::io::kafka::KafkaConfig> {
        self.kafka.as_ref()
    }
    /// How the memory limit is divided among the state zones.
    pub fn state(&self) -> &StateConfig {
        &self.state
    }
}

/// Builds a [`RuntimeConfig`]; [`RuntimeConfigBuilder::build`] validates it.
#[derive(Debug, Default, Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct RuntimeConfigBuilder {
    application_id: Option<String>,
    workers: Option<usize>,
    memory_limit: Option<usize>,
    state_dir: Option<PathBuf>,
    queue_max_records_per_partition: Option<usize>,
    queue_max_bytes: Option<usize>,
    max_batch_records: Option<usize>,
    max_batch_time: Option<Duration>,
    commit_interval: Option<Duration>,
    task_timeout: Option<Duration>,
    max_task_idle: Option<Duration>,
    task_idling_disabled: bool,
    deserialization_handler: DeserializationHandler,
    production_exception_handler: ProductionExceptionHandler,
    processing_exception_handler: ProcessingExceptionHandler,
    dead_letter_queue_topic: Option<String>,
    processing_guarantee: ProcessingGuarantee,
    offset_reset: OffsetReset,
    broker: Option<Broker>,
    #[cfg(feature = "kafka")]
    kafka: Option<crate::io::kafka::KafkaConfig>,
    rocksdb_cache_bytes: Option<usize>,
    rocksdb_memtable_bytes: Option<usize>,
    rocksdb_background_threads: Option<usize>,
    rocksdb_max_open_files: Option<usize>,
    rocksdb_strict_capacity: bool,
    record_cache_bytes: Option<usize>,
    in_memory_store_bytes: Option<usize>,
    suppression_buffer_bytes: Option<usize>,
}

impl RuntimeConfigBuilder {
    /// Application id: consumer groups are `<id>-<query>`, internal topics
    /// `<id>-<query>-<name>-repartition`. Default `weir`.
    pub fn application_id(mut self, id: impl Into<String>) -> Self {
        self.application_id = Some(id.into());
        self
    }
    /// Worker threads in the one pool that runs every query. Default: available cores.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }
    /// The memory limit for the whole process, in bytes. Default 1 GiB.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
    /// Where stores keep their files. Default `<tmp>/weir/<application id>`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    /// Record cap of each partition queue. Default 1000 (Kafka Streams'
    /// `buffered.records.per.partition`).
    pub fn queue_max_records_per_partition(mut self, n: usize) -> Self {
        self.queue_max_records_per_partition = Some(n);
        self
    }
    /// Byte cap over all partition queues of the runtime. Default: 1/16 of the memory
    /// limit.
    pub fn queue_max_bytes(mut self, bytes: usize) -> Self {
        self.queue_max_bytes = Some(bytes);
        self
    }
    /// Most records a task processes before it yields the worker. Default 1000.
    pub fn max_batch_records(mut self, n: usize) -> Self {
        self.max_batch_records = Some(n);
        self
    }
    /// Longest a task runs before it yields the worker. Default 5 ms.
    pub fn max_batch_time(mut self, d: Duration) -> Self {
        self.max_batch_time = Some(d);
        self
    }
    /// How often tasks commit their progress. Default 30 s (Kafka Streams' at-least-once
    /// default).
    pub fn commit_interval(mut self, d: Duration) -> Self {
        self.commit_interval = Some(d);
        self
    }
    /// How long a query's commits may wait for a cluster that does not answer (a
    /// broker down or restarting) before the query fails — Kafka Streams'
    /// `task.timeout.ms` (KIP-572). Meanwhile tasks go on processing until the
    /// producer's queue is full, then stall; their offsets stay at the last commit, and
    /// [`QueryStats::commits_deferred`](crate::QueryStats::commits_deferred) and
    /// `commit_stalled_ms` say so. Default 5 minutes (Kafka's).
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = Some(d);
        self
    }
    /// How long a task that reads several partitions (a join, a merge) waits for one of
    /// them that is empty before it processes the others regardless of timestamp order
    /// — Kafka Streams' `max.task.idle.ms`. Default zero: a task never waits for a
    /// partition with nothing more to fetch, but always waits for records the fetcher
    /// knows are there (the partition's end offset is past what it has fetched), so a
    /// stream-table join started over two full topics reads them in timestamp order.
    /// Larger values also wait for records that have not been produced yet, up to this
    /// long, which orders records produced late; each time the wait runs out and the
    /// task goes on without a partition counts as one `weir_enforced_processing_total`.
    /// One exception: a partition whose records the runtime-wide queue byte budget
    /// refused is never waited for (only processing what is queued elsewhere frees it).
    pub fn max_task_idle(mut self, d: Duration) -> Self {
        self.max_task_idle = Some(d);
        self.task_idling_disabled = false;
        self
    }
    /// Never wait for an empty partition, not even one known to hold records: a task
    /// processes whatever it has (Kafka Streams' `max.task.idle.ms = -1`).
    pub fn disable_task_idling(mut self) -> Self {
        self.task_idling_disabled = true;
        self
    }
    /// Default handler for records that fail to deserialize. Default: fail the query.
    pub fn deserialization_handler(mut self, h: DeserializationHandler) -> Self {
        self.deserialization_handler = h;
        self
    }
    /// What a record that cannot be written does: a key or value a sink's serde
    /// cannot serialize, or a delivery Kafka refuses. Default: fail the query.
    pub fn production_exception_handler(mut self, h: ProductionExceptionHandler) -> Self {
        self.production_exception_handler = h;
        self
    }
    /// Default handler for user code that fails on a record (an `Err` or a panic in a
    /// processor or an operator's closure); queries override it with
    /// [`Topology::processing_exception_handler`](crate::Topology::processing_exception_handler).
    /// Default: fail the query.
    ///
    /// ```
    /// use weir_runtime::{ProcessingExceptionHandler, RuntimeConfig};
    /// let config = RuntimeConfig::builder()
    ///     .processing_exception_handler(ProcessingExceptionHandler::LogAndContinue)
    ///     .dead_letter_queue_topic("orders-dlq")
    ///     .build()?;
    /// # Ok::<(), weir_runtime::Error>(())
    /// ```
    pub fn processing_exception_handler(mut self, h: ProcessingExceptionHandler) -> Self {
        self.processing_exception_handler = h;
        self
    }
    /// The dead-letter topic (Kafka Streams' `errors.dead.letter.queue.topic.name`,
    /// KIP-1034): every record a handler deals with — one that fails to deserialize,
    /// one user code fails on, one a sink cannot serialize, one Kafka refuses — is also
    /// written there, whether the handler goes on or fails the query. A dead letter
    /// holds the source record's key and value bytes as read (for a refused delivery:
    /// the bytes that were refused), its timestamp, and Kafka's headers
    /// `__streams.errors.exception`, `.message`, `.stacktrace` (weir: the processor that
    /// failed), `.topic`, `.partition` and `.offset` (the source record's). The topic
    /// must exist; weir does not create it. Queries override it with
    /// [`Topology::dead_letter_queue_topic`](crate::Topology::dead_letter_queue_topic).
    /// Default: none.
    pub fn dead_letter_queue_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_queue_topic = Some(topic.into());
        self
    }
    /// At-least-once (the default) or exactly-once processing; exactly-once needs
    /// [`RuntimeConfigBuilder::kafka`].
    pub fn processing_guarantee(mut self, g: ProcessingGuarantee) -> Self {
        self.processing_guarantee = g;
        self
    }
    /// Where to start without a committed offset. Default: earliest.
    pub fn offset_reset(mut self, r: OffsetReset) -> Self {
        self.offset_reset = r;
        self
    }
    /// The in-process broker to attach to. Default: a new, empty one.
    pub fn broker(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }
    /// Reads and writes topics on a Kafka cluster instead of the in-process broker,
    /// through one consumer (group = the application id) and one producer shared by
    /// every query. Queries' source and sink topics must exist on the cluster.
    #[cfg(feature = "kafka")]
    pub fn kafka(mut self, kafka: crate::io::kafka::KafkaConfig) -> Self {
        self.kafka = Some(kafka);
        self
    }

    /// The RocksDB block cache shared by all stores (memtables are charged to it).
    /// Default: 3/8 of the memory limit.
    pub fn rocksdb_cache_bytes(mut self, bytes: usize) -> Self {
        self.rocksdb_cache_bytes = Some(bytes);
        self
    }
    /// How much of the RocksDB cache memtables may take. Default: 1/4 of the cache.
    pub fn rocksdb_memtable_bytes(mut self, bytes: usize) -> Self {
        self.rocksdb_memtable_bytes = Some(bytes);
        self
    }
    /// RocksDB's shared compaction threads (one flush thread comes on top). Default 2.
    pub fn rocksdb_background_threads(mut self, n: usize) -> Self {
        self.rocksdb_background_threads = Some(n);
        self
    }
    /// Open files per RocksDB store. Default 256.
    pub fn rocksdb_max_open_files(mut self, n: usize) -> Self {
        self.rocksdb_max_open_files = Some(n);
        self
    }
    /// Makes the RocksDB cache's capacity a hard limit. Default off: RocksDB then lets
    /// the cache go over its capacity while every entry is pinned (blocks held by
    /// running reads and iterators, pinned top-level index and filter blocks), and
    /// evicts back under it as they are released.
    ///
    /// With the strict limit, a block read that cannot be cached because everything
    /// left in the cache is pinned FAILS: the store returns
    /// [`Error::Store`](crate::Error::Store) ("Insert failed due to LRU cache being
    /// full"), and the query that read goes to `Failed` with that error (other queries
    /// keep running; restarting it after raising the cache resumes from its last
    /// commit). Memtable reservations of the write buffer manager are charged to the
    /// cache but never refused. Choose it when exceeding the limit is worse than
    /// failing a query; size the cache well above the pinned working set (top-level
    /// index/filter partitions of all stores plus the blocks of concurrent reads).
    pub fn rocksdb_strict_capacity(mut self, strict: bool) -> Self {
        self.rocksdb_strict_capacity = strict;
        self
    }
    /// The record cache's budget across all stores. Default: 1/4 of the memory limit.
    ///
    /// Byte for byte, the record cache does more for a write-heavy aggregation than the
    /// block cache: it keeps single entries (a block cache keeps 16 KiB blocks) and
    /// absorbs repeated updates before they reach RocksDB. W1 at 512 MiB: 395 k
    /// records/s with 1/8 here and 1/2 for RocksDB, 453 k with the defaults.
    pub fn record_cache_bytes(mut self, bytes: usize) -> Self {
        self.record_cache_bytes = Some(bytes);
        self
    }
    /// The budget of all in-memory stores. Default: 1/16 of the memory limit.
    pub fn in_memory_store_bytes(mut self, bytes: usize) -> Self {
        self.in_memory_store_bytes = Some(bytes);
        self
    }

    /// The budget all suppression buffers share. Default: 1/16 of the memory limit.
    /// A buffer that cannot reserve from it applies its own full-buffer policy (emit
    /// early, shut its query down, or spill to disk).
    pub fn suppression_buffer_bytes(mut self, bytes: usize) -> Self {
        self.suppression_buffer_bytes = Some(bytes);
        self
    }

    /// Validates and returns the configuration, creating the state directory.
    pub fn build(self) -> Result<RuntimeConfig> {
        let application_id = self.application_id.unwrap_or_else(|| "weir".to_string());
        if application_id.is_empty()
            || !application_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(Error::Config(format!(
                "application_id '{application_id}' must be non-empty ASCII letters, digits, '.', '_' or '-' (it names topics and groups)"
            )));
        }
        let workers = match self.workers {
            Some(0) => return Err(Error::Config("workers must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        #[cfg(feature = "kafka")]
        if let Some(k) = &self.kafka {
            k.validate()?;
        }
        #[cfg(feature = "kafka")]
        let on_kafka = self.kafka.is_some();
        #[cfg(not(feature = "kafka"))]
        let on_kafka = false;
        let memory_limit = self.memory_limit.unwrap_or(1 << 30);
        if memory_limit < MIN_MEMORY_LIMIT {
            return Err(Error::Config(format!(
                "memory_limit {memory_limit} bytes is below the minimum of {MIN_MEMORY_LIMIT} bytes"
            )));
        }
        let queue_max_bytes = self
            .queue_max_bytes
            .unwrap_or(Zone::PartitionQueues.default_bound(memory_limit));
        if queue_max_bytes == 0 || queue_max_bytes > memory_limit {
            return Err(Error::Config(format!(
                "queue_max_bytes {queue_max_bytes} must be between 1 and memory_limit ({memory_limit})"
            )));
        }
        let queue_max_records_per_partition = self.queue_max_records_per_partition.unwrap_or(1000);
        if queue_max_records_per_partition == 0 {
            return Err(Error::Config(
                "queue_max_records_per_partition must be at least 1".into(),
            ));
        }
        let max_batch_records = self.max_batch_records.unwrap_or(1000);
        if max_batch_records == 0 {
            return Err(Error::Config("max_batch_records must be at least 1".into()));
        }
        let max_batch_time = self.max_batch_time.unwrap_or(Duration::from_millis(5));
        if max_batch_time.is_zero() {
            return Err(Error::Config("max_batch_time must be positive".into()));
        }
        let commit_interval = self.commit_interval.unwrap_or(Duration::from_secs(30));
        if commit_interval.is_zero() {
            return Err(Error::Config("commit_interval must be positive".into()));
        }
        let task_timeout = self.task_timeout.unwrap_or(Duration::from_secs(300));
        if task_timeout.is_zero() {
            return Err(Error::Config("task_timeout must be positive".into()));
        }
        let rocksdb_cache_bytes = self
            .rocksdb_cache_bytes
            .unwrap_or(Zone::RocksDb.default_bound(memory_limit));
        let state = StateConfig {
            rocksdb_cache_bytes,
            rocksdb_memtable_bytes: self
                .rocksdb_memtable_bytes
                .unwrap_or(rocksdb_cache_bytes / 4),
            rocksdb_background_threads: self.rocksdb_background_threads.unwrap_or(2),
            rocksdb_max_open_files: self.rocksdb_max_open_files.unwrap_or(256),
            rocksdb_strict_capacity: self.rocksdb_strict_capacity,
            record_cache_bytes: self
                .record_cache_bytes
                .unwrap_or(Zone::RecordCache.default_bound(memory_limit)),
            in_memory_store_bytes: self
                .in_memory_store_bytes
                .unwrap_or(Zone::InMemoryStores.default_bound(memory_limit)),
            suppression_buffer_bytes: self
                .suppression_buffer_bytes
                .unwrap_or(Zone::Suppression.default_bound(memory_limit)),
        };
        let zones = [
            (Zone::RocksDb, state.rocksdb_cache_bytes),
            (Zone::RecordCache, state.record_cache_bytes),
            (Zone::PartitionQueues, queue_max_bytes),
            (Zone::Suppression, state.suppression_buffer_bytes),
            (Zone::InMemoryStores, state.in_memory_store_bytes),
        ];
        let total: usize = zones.iter().map(|(_, b)| b).sum();
        if total > memory_limit {
            let list: Vec<String> = zones
                .iter()
                .map(|(z, b)| format!("{} {b}", z.setting()))
                .collect();
            return Err(Error::Config(format!(
                "the memory zones add up to {total} bytes, over memory_limit {memory_limit} ({})",
                list.join(" + ")
            )));
        }
        if state.rocksdb_memtable_bytes == 0
            || state.rocksdb_memtable_bytes > state.rocksdb_cache_bytes
        {
            return Err(Error::Config(format!(
                "rocksdb_memtable_bytes {} must be between 1 and rocksdb_cache_bytes {} (memtables are charged to the cache)",
                state.rocksdb_memtable_bytes, state.rocksdb_cache_bytes
            )));
        }
        if state.rocksdb_background_threads == 0 {
            return Err(Error::Config(
                "rocksdb_background_threads must be at least 1".into(),
            ));
        }
        if state.rocksdb_max_open_files < 16 {
            return Err(Error::Config(
                "rocksdb_max_open_files must be at least 16".into(),
            ));
        }
        if self.processing_guarantee == ProcessingGuarantee::ExactlyOnce && !on_kafka {
            return Err(Error::Config(
                "exactly_once needs Kafka (RuntimeConfigBuilder::kafka): its transactions are what make a commit atomic".into(),
            ));
        }
        let dead_letter_queue_topic = self.dead_letter_queue_topic;
        if dead_letter_queue_topic.as_deref() == Some("") {
            return Err(Error::Config(
                "dead_letter_queue_topic must not be empty".into(),
            ));
        }
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| std::env::temp_dir().join("weir").join(&application_id));
        std::fs::create_dir_all(&state_dir).map_err(|e| {
            Error::io(
                format!("cannot create state directory {}", state_dir.display()),
                e,
            )
        })?;
        Ok(RuntimeConfig {
            application_id,
            workers,
            memory_limit,
            state_dir,
            queue_max_records_per_partition,
            queue_max_bytes,
            max_batch_records,
            max_batch_time,
            commit_interval,
            task_timeout,
            max_task_idle: (!self.task_idling_disabled)
                .then(|| self.max_task_idle.unwrap_or(Duration::ZERO)),
            deserialization_handler: self.deserialization_handler,
            production_exception_handler: self.production_exception_handler,
            processing_exception_handler: self.processing_exception_handler,
            dead_letter_queue_topic,
            processing_guarantee: self.processing_guarantee,
            offset_reset: self.offset_reset,
            broker: self.broker.unwrap_or_default(),
            #[cfg(feature = "kafka")]
            kafka: self.kafka,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = RuntimeConfig::builder().build().unwrap();
        assert!(c.workers() >= 1);
        assert_eq!(c.memory_limit(), 1 << 30);
        assert_eq!(c.queue_max_bytes(), 64 << 20);
        assert_eq!(c.queue_max_records_per_partition(), 1000);
        assert_eq!(c.state().rocksdb_cache_bytes, 384 << 20);
        assert_eq!(c.state().rocksdb_memtable_bytes, 96 << 20);
        assert_eq!(c.state().record_cache_bytes, 256 << 20);
        assert!(!c.state().rocksdb_strict_capacity);
        assert_eq!(c.state().in_memory_store_bytes, 64 << 20);
        assert_eq!(c.state().suppression_buffer_bytes, 64 << 20);
        assert!(c.state_dir().is_dir());
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |b: RuntimeConfigBuilder| b.build().unwrap_err().to_string();
        assert!(err(RuntimeConfig::builder().workers(0)).contains("workers"));
        assert!(err(RuntimeConfig::builder().memory_limit(1024)).contains("memory_limit"));
        assert!(
            err(RuntimeConfig::builder()
                .memory_limit(32 << 20)
                .queue_max_bytes(64 << 20))
            .contains("queue_max_bytes")
        );
        assert!(err(RuntimeConfig::builder().application_id("a b")).contains("application_id"));
        let over = err(RuntimeConfig::builder()
            .memory_limit(64 << 20)
            .rocksdb_cache_bytes(60 << 20));
        assert!(over.contains("over memory_limit 67108864"), "{over}");
        assert!(over.contains("rocksdb_cache_bytes 62914560"), "{over}");
        assert!(
            err(RuntimeConfig::builder()
                .rocksdb_cache_bytes(1 << 20)
                .rocksdb_memtable_bytes(2 << 20))
            .contains("rocksdb_memtable_bytes")
        );
        assert!(
            err(RuntimeConfig::builder().commit_interval(Duration::ZERO))
                .contains("commit_interval")
        );
        assert!(
            err(RuntimeConfig::builder().state_dir("/proc/weir-cannot-exist"))
                .contains("cannot create state directory")
        );
    }
}
