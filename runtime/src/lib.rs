//! # weir-runtime
//!
//! The engine under [weir](https://docs.rs/weir): the parts that make one memory limit
//! and one fixed thread pool hold for every query in a process.
//!
//! - [`Runtime`]: one rayon worker pool plus one I/O thread, whatever the number of
//!   queries. Queries compile into tasks (sub-topology × partition) that run a bounded
//!   batch and yield.
//! - [`queue`]: partition queues bounded in records per partition and in bytes across
//!   the runtime; full partitions are paused, empty ones never are.
//! - [`broker::Broker`]: the in-process broker, the embedded default for examples,
//!   tests and benchmarks; or a Kafka cluster ([`KafkaConfig`]) through one shared
//!   rdkafka consumer and producer.
//! - [`processor`]: the Processor API every DSL operator compiles into.
//! - [`serde`]: key and value serdes.
//!
//! Most users depend on the `weir` crate, which re-exports all of this and adds the DSL.

#![warn(missing_docs)]

pub mod config;
pub mod error;
mod exec;
mod io;
mod memory;
pub mod processor;
pub mod record;
pub mod serde;
pub mod state;
pub mod topology;

pub use io::{broker, partitioner, queue};
pub use memory::report;
pub use state::{suppress, window};

pub use broker::Broker;
pub use config::{
    DeserializationHandler, OffsetReset, ProcessingGuarantee, ProductionExceptionHandler,
    RuntimeConfig, RuntimeConfigBuilder, StateConfig,
};
pub use error::{Error, RecordField, Result};
pub use exec::runtime::{QueryHandle, QueryState, QueryStats, Runtime};
pub use io::kafka::KafkaConfig;
pub use processor::{
    Cancellable, Data, Processor, ProcessorContext, Punctuation, PunctuationType, PunctuatorId,
    TaskId,
};
pub use processor::{Change, SessionStoreHandle, StoreHandle, WindowStoreHandle};
pub use record::{ConsumerRecord, Header, Headers, RawRecord, Record, RecordMetadata};
#[cfg(feature = "jemalloc")]
pub use report::Jemalloc;
pub use report::{AllocatorStats, MemoryReport, ZoneUsage};
pub use state::{CacheStats, StateUsage};
pub use topology::{
    SinkSpec, SourceSpec, StoreKind, StoreSpec, StreamPartitioner, TimestampExtractor, Topology,
    TopologyDescription,
};
pub use window::{StoreType, Window, Windowed, WindowedSerde};
