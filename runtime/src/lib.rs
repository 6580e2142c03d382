//! # weir-runtime
//!
//! The engine under [weir](https://docs.rs/weir): the parts that make one memory limit
//! and one fixed thread pool hold for every query in a process. Most users depend on
//! the `weir` crate, which re-exports all of this and adds the DSL.
//!
//! ## The rooms
//!
//! The engine is organised in rooms, one concept each; every module is private and the
//! public API is the list of re-exports below. ARCHITECTURE.md has a section per room.
//!
//! - **`exec/`** — *who runs what, and when?* The [`Runtime`] façade (one rayon pool,
//!   one I/O thread), the query lifecycle ([`QueryHandle`]), the task factory, task
//!   scheduling and batches, the commit protocol, the consumer group seen from the
//!   engine.
//! - **`io/`** — *where do records come from and go to?* One `Transport` trait with
//!   two implementations, the in-process [`Broker`] and Kafka ([`KafkaConfig`],
//!   feature `kafka`), chosen in one place when a runtime starts; the I/O thread, the
//!   bounded partition queues and Kafka's default partitioner.
//! - **`state/`** — *how does a record reach RocksDB?* Stores (RocksDB under one shared
//!   cache, in-memory), the record cache, a task's store access and write-back path,
//!   changelogs and checkpoints, window key layout, suppression buffers.
//! - **`memory/`** — *where is the memory limit enforced?* The [`Zone`]s of the limit,
//!   byte budgets, the zones' owner, the [`MemoryReport`], jemalloc control and the RSS
//!   pressure check.
//! - **`topology/`** — *what does a query look like?* The [`Topology`] builder and its
//!   checks, [`Topology::describe`], the source and sink nodes, and the query plan
//!   (partition counts, internal topics) as a pure function.
//! - **`processor/`** — *what can user code do?* The Processor API: [`Processor`],
//!   [`ProcessorContext`], typed store handles; the engine's side of it (node arena,
//!   dispatch) in `processor/internals`.
//! - `config.rs`, `error.rs`, `record.rs`, `serde.rs`, `metrics.rs`, `sync.rs`: the
//!   configuration, the error type, records, serdes, every metric name, locks.
//!
//! Dependencies between rooms go one way: `exec` → `topology` → `processor` → `state`
//! → `io` → `memory`.
//!
//! ## Not API
//!
//! Items marked `#[doc(hidden)]` (the [`internals`] module, the `Internal*Context`
//! traits) serve weir's own DSL, tests and benchmarks. They are not part of the API
//! and may change in any release, as in tokio.

mod config;
mod error;
mod exec;
#[cfg(test)]
mod fuzz;
mod io;
mod memory;
pub mod metrics;
mod processor;
mod record;
pub mod serde;
mod state;
mod sync;
mod testkit;
mod topology;

// Running queries.
pub use config::{
    DeserializationHandler, MIN_MEMORY_LIMIT, OffsetReset, ProcessingExceptionHandler,
    ProcessingGuarantee, ProductionExceptionHandler, RuntimeConfig, RuntimeConfigBuilder,
    StateConfig,
};
pub use error::{Error, RecordField, Result};
pub use exec::{QueryHandle, QueryState, QueryStats, Runtime};
#[cfg(feature = "kafka")]
pub use io::kafka::KafkaConfig;

/// The headers of a dead letter (Kafka Streams' names, KIP-1034): see
/// [`RuntimeConfigBuilder::dead_letter_queue_topic`].
pub mod dead_letter {
    pub use crate::processor::internals::errors::{
        HEADER_ERRORS_EXCEPTION, HEADER_ERRORS_MESSAGE, HEADER_ERRORS_OFFSET,
        HEADER_ERRORS_PARTITION, HEADER_ERRORS_STACKTRACE, HEADER_ERRORS_TOPIC,
    };
}

// Records and the in-process broker.
pub use io::broker::Broker;
pub use io::partitioner::partition_for_key;
pub use record::{ConsumerRecord, Header, Headers, RawRecord, Record, RecordMetadata};

// Topologies and the Processor API.
pub use processor::{
    Cancellable, Change, Data, Processor, ProcessorContext, Punctuation, PunctuationType,
    PunctuatorId, SessionStoreHandle, StoreHandle, TaskId, VersionedRecord, VersionedStoreHandle,
    WindowStoreHandle,
};
pub use state::window::{StoreType, Window, Windowed, WindowedSerde};
pub use topology::{
    NodeId, SinkSpec, SourceSpec, StoreKind, StoreSpec, StreamPartitioner, TimestampExtractor,
    Topology, TopologyDescription,
};

/// Testing a topology without threads: Kafka Streams' `TopologyTestDriver`, its input
/// and output topics, and read access to its stores.
pub mod testing {
    pub use crate::testkit::{
        KeyValueStoreView, SessionStoreView, TestInputTopic, TestOutputTopic, TopologyTestDriver,
        VersionedStoreView, WindowStoreView,
    };
}

// Memory.
pub use memory::Zone;
#[cfg(feature = "jemalloc")]
pub use memory::allocator::Jemalloc;
pub use memory::allocator::{
    JEMALLOC_DECAY_MS, PURGE_AT_SIXTEENTHS, allocator_purges, allocator_stats, process_rss,
};
pub use memory::report::{AllocatorStats, MemoryReport, ZoneUsage};
pub use state::{CacheStats, StateUsage};

/// Not API: the engine's pieces that weir's own DSL, tests and benchmarks use. They may
/// change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::memory::ByteBudget;
    pub use crate::processor::{InternalContext, InternalForwardContext, InternalWindowedContext};
    /// rdkafka itself, for weir's own Kafka tests (so `weir` has no dev-dependency on it).
    #[cfg(feature = "kafka")]
    pub use rdkafka;

    /// Partition queues.
    pub mod queue {
        pub use crate::io::queue::{PartitionQueue, QueueItem, TryPushError};
        pub use crate::memory::ByteBudget;
    }

    /// Stores and the record cache.
    pub mod state {
        pub use crate::state::{
            BatchEntry, ENTRY_OVERHEAD, InMemoryStore, KeyValue, KeyValueStore, Lookup,
            RecordCache, RocksDbStore, StateEnv, TaskCache,
        };
    }

    /// Suppression buffers.
    pub mod suppress {
        pub use crate::state::suppress::{
            BufferBounds, Buffered, ENTRY_OVERHEAD, FullPolicy, SuppressionBuffer,
        };
    }
}
