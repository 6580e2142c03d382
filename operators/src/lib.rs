//! # weir
//!
//! Embedded stream processing in which one memory limit bounds the whole process and
//! the number of threads does not grow with the number of queries.
//!
//! Write queries with a Kafka Streams-style DSL ([`StreamsBuilder`], [`KStream`]), run
//! them on a [`Runtime`]: one fixed worker pool shared by every query, bounded
//! partition queues, and an in-process [`Broker`] as the embedded default.
//!
//! ```
//! use weir::prelude::*;
//!
//! # fn main() -> weir::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::builder().workers(2).build()?)?;
//! let broker = runtime.broker().clone();
//! broker.create_topic("orders", 2)?;
//! broker.create_topic("big-orders", 2)?;
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream::<String, i64>("orders")
//!     .filter(|_customer, amount| *amount >= 100)
//!     .map_values(|amount| amount * 100) // cents
//!     .to("big-orders");
//! let query = runtime.start_query("big-orders", builder.build()?)?;
//!
//! broker.send("orders", &"alice".to_string(), &250i64)?;
//! broker.send("orders", &"bob".to_string(), &20i64)?;
//! # while broker.read_all::<String, i64>("big-orders")?.is_empty() {
//! #     std::thread::sleep(std::time::Duration::from_millis(5));
//! # }
//! query.stop()?;
//! let out = broker.read_all::<String, i64>("big-orders")?;
//! assert_eq!(out.len(), 1);
//! assert_eq!((out[0].record.key.as_str(), out[0].record.value), ("alice", 25_000));
//! # Ok(())
//! # }
//! ```
//!
//! The engine lives in `weir-runtime` and is re-exported here whole ([`runtime`]), as
//! rayon re-exports rayon-core.

mod builder;
#[cfg(test)]
mod corruption;
mod fk_join;
mod global_table;
mod grouped;
mod grouped_table;
mod join;
mod join_grace;
mod ops;
mod printed;
mod stream;
mod stream_join;
mod stream_join_processor;
mod stream_table_join;
mod suppress;
mod table;
mod window;

pub use weir_runtime as runtime;
pub use weir_runtime::dead_letter;
pub use weir_runtime::serde;
pub use weir_runtime::testing;
pub use weir_runtime::{AllocatorStats, MemoryReport, ZoneUsage};
pub use weir_runtime::{
    Broker, CacheStats, Cancellable, Change, ConsumerRecord, Data, DeserializationHandler, Error,
    Header, Headers, OffsetReset, ProcessingExceptionHandler, ProcessingGuarantee, Processor,
    ProcessorContext, ProductionExceptionHandler, Punctuation, PunctuationType, PunctuatorId,
    QueryHandle, QueryState, QueryStats, RawRecord, Record, RecordField, RecordMetadata, Result,
    Runtime, RuntimeConfig, RuntimeConfigBuilder, SinkSpec, SourceSpec, StateUsage, StoreHandle,
    StoreKind, StoreSpec, TaskId, Topology, TopologyDescription,
};

/// Where the Kafka cluster is (feature `kafka`).
#[cfg(feature = "kafka")]
pub use weir_runtime::KafkaConfig;

/// jemalloc, re-exported for [`use_jemalloc!`] (feature `jemalloc`).
#[cfg(feature = "jemalloc")]
pub use weir_runtime::Jemalloc;

/// Runs the binary on jemalloc: `weir::use_jemalloc!();` at the top level of `main.rs`
/// (feature `jemalloc`). With the feature, jemalloc is also the process's `malloc`, so
/// RocksDB's and librdkafka's C and C++ allocations come from it and show in
/// [`Runtime::memory_report`]; this line makes Rust's allocations use it directly too.
/// While a runtime runs, memory freed goes back to the OS within one to two seconds
/// (`weir_runtime::JEMALLOC_DECAY_MS`).
#[cfg(feature = "jemalloc")]
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static WEIR_GLOBAL_ALLOCATOR: $crate::Jemalloc = $crate::Jemalloc;
    };
}

pub use fk_join::TableJoined;
pub use global_table::GlobalKTable;
pub use grouped_table::KGroupedTable;
pub use printed::Printed;
pub use stream::{
    Branched, BranchedKStream, Consumed, KStream, Produced, Repartitioned, StreamsBuilder,
};
pub use stream_join::{JoinWindows, StreamJoined};
pub use stream_table_join::Joined;
pub use suppress::{BufferConfig, Suppressed};
pub use table::{Grouped, KGroupedStream, KTable, Materialized};
pub use weir_runtime::{Window, Windowed, WindowedSerde};
pub use window::{
    EmitStrategy, SessionWindowedKStream, SessionWindows, SlidingWindows, TimeWindowedKStream,
    TimeWindows, WindowedBy,
};

/// Everything a query needs, in one `use weir::prelude::*`.
pub mod prelude {
    pub use crate::serde::{
        BytesSerde, DefaultSerde, I32Serde, I64Serde, OptionSerde, Serde, StringSerde, U64Serde,
        UnitSerde,
    };
    #[cfg(feature = "json")]
    pub use crate::serde::{Json, JsonSerde};
    pub use crate::{
        Branched, Broker, Change, Consumed, DeserializationHandler, Error, Grouped, Headers,
        KGroupedStream, KGroupedTable, KStream, KTable, Materialized, OffsetReset,
        ProcessingExceptionHandler, Processor, ProcessorContext, Produced, PunctuationType,
        QueryHandle, QueryState, Record, Repartitioned, Result, Runtime, RuntimeConfig,
        StreamsBuilder, Topology,
    };
    pub use crate::{
        BufferConfig, EmitStrategy, GlobalKTable, JoinWindows, Joined, SessionWindows,
        SlidingWindows, StreamJoined, Suppressed, TableJoined, TimeWindows, Window, Windowed,
        WindowedSerde,
    };
}
