//! What a topology's ends and stores are made of: how a source reads, how a sink
//! writes, how a store is kept.

use std::sync::Arc;
use std::time::Duration;

use super::millis;
use crate::config::DeserializationHandler;
use crate::serde::Serde;
use crate::state::window::StoreType;

/// Chooses a sink partition for a record: `None` falls back to the default partitioner.
pub type StreamPartitioner<K, V> = Arc<dyn Fn(&K, &V, u32) -> Option<u32> + Send + Sync>;

/// How a source reads its topics.
#[must_use = "a builder does nothing until it is used"]
pub struct SourceSpec<K, V> {
    pub(super) key_serde: Arc<dyn Serde<K>>,
    pub(super) value_serde: Arc<dyn Serde<V>>,
    pub(super) handler: Option<DeserializationHandler>,
    pub(super) extractor: Option<TimestampExtractor<K, V>>,
}

/// Gives a record its event time from its key, value and the timestamp it was written
/// with (ms). A negative result drops the record (counted as skipped), as in Kafka
/// Streams.
pub type TimestampExtractor<K, V> = Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>;

impl<K, V> Clone for SourceSpec<K, V> {
    fn clone(&self) -> Self {
        SourceSpec {
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            handler: self.handler,
            extractor: self.extractor.clone(),
        }
    }
}

impl<K, V> SourceSpec<K, V> {
    /// A source deserializing with these serdes.
    pub fn new(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        SourceSpec {
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            handler: None,
            extractor: None,
        }
    }

    /// Takes each record's event time from `f(key, value, written_timestamp)` instead
    /// of the timestamp it was written with. Stream time, windows and punctuation all
    /// follow the extracted time.
    pub fn timestamp_extractor(
        mut self,
        f: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.extractor = Some(Arc::new(f));
        self
    }

    /// The timestamp extractor, if one is set.
    pub fn extractor(&self) -> Option<&TimestampExtractor<K, V>> {
        self.extractor.as_ref()
    }

    /// Overrides the runtime's default deserialization handler for this source.
    pub fn deserialization_handler(mut self, handler: DeserializationHandler) -> Self {
        self.handler = Some(handler);
        self
    }

    /// The key serde.
    pub fn key_serde(&self) -> &Arc<dyn Serde<K>> {
        &self.key_serde
    }

    /// The value serde.
    pub fn value_serde(&self) -> &Arc<dyn Serde<V>> {
        &self.value_serde
    }

    /// The deserialization handler this source overrides the runtime's with, if any.
    pub fn handler(&self) -> Option<DeserializationHandler> {
        self.handler
    }
}

/// How a sink writes its topic.
#[must_use = "a builder does nothing until it is used"]
pub struct SinkSpec<K, V> {
    pub(super) key_serde: Arc<dyn Serde<K>>,
    pub(super) value_serde: Arc<dyn Serde<V>>,
    pub(super) partitioner: Option<StreamPartitioner<K, V>>,
}

impl<K, V> Clone for SinkSpec<K, V> {
    fn clone(&self) -> Self {
        SinkSpec {
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            partitioner: self.partitioner.clone(),
        }
    }
}

impl<K, V> SinkSpec<K, V> {
    /// A sink serializing with these serdes and Kafka's default partitioner.
    pub fn new(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        SinkSpec {
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            partitioner: None,
        }
    }

    /// Chooses partitions with `f(key, value, partition_count)`; `None` falls back to the
    /// default partitioner.
    pub fn partitioner(
        mut self,
        f: impl Fn(&K, &V, u32) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        self.partitioner = Some(Arc::new(f));
        self
    }
}

/// Where a store keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// RocksDB under the runtime's shared cache (the default).
    RocksDb,
    /// A `BTreeMap` reserving from the runtime's in-memory store budget.
    InMemory,
}

/// A key-value store declaration: name, kind and serdes.
#[must_use = "a builder does nothing until it is used"]
pub struct StoreSpec<K, V> {
    pub(crate) name: String,
    pub(crate) kind: StoreKind,
    pub(crate) store_type: StoreType,
    pub(crate) caching: bool,
    pub(crate) timestamped: bool,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
}

impl<K, V> Clone for StoreSpec<K, V> {
    fn clone(&self) -> Self {
        StoreSpec {
            name: self.name.clone(),
            kind: self.kind,
            store_type: self.store_type,
            caching: self.caching,
            timestamped: self.timestamped,
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

impl<K, V> StoreSpec<K, V> {
    /// A RocksDB store named `name` with these serdes.
    pub fn new(
        name: impl Into<String>,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Self {
        StoreSpec {
            name: name.into(),
            kind: StoreKind::RocksDb,
            store_type: StoreType::KeyValue,
            caching: true,
            timestamped: false,
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        }
    }

    /// Keeps the store in memory instead (bounded by the in-memory store budget).
    pub fn in_memory(mut self) -> Self {
        self.kind = StoreKind::InMemory;
        self
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes this a window store (see [`Window`](crate::Window)): windows of `size`, kept
    /// `retention` after their start. Processors reach it with
    /// `ProcessorContext::window_store`.
    pub fn windowed(mut self, size: Duration, retention: Duration) -> Self {
        self.store_type = StoreType::window(millis(size), millis(retention));
        self
    }

    /// Makes this a window store that keeps every value put, even several under one
    /// key and window start (Kafka Streams' `retainDuplicates`, as its stream-stream
    /// joins use): each is its own entry, under a sequence number, written without
    /// reading the window first; `fetch_range` returns them in the order they were
    /// put, and a `None` put does nothing (expiry removes entries). It does not go
    /// through the record cache (Kafka Streams too disables caching for a store
    /// retaining duplicates: no two writes share a key to compact). Instead a RocksDB
    /// store of this kind keeps its recent entries in memory, under the record
    /// cache's budget (at most 1/16 of it; all such stores together at most half),
    /// and writes them to RocksDB and its changelog at commits; entries that expire
    /// before a commit are never written.
    pub fn windowed_with_duplicates(mut self, size: Duration, retention: Duration) -> Self {
        self.store_type = StoreType::window_with_duplicates(millis(size), millis(retention));
        self.caching = false;
        self
    }

    /// Makes this a session store: sessions kept `retention` after their end.
    /// Processors reach it with `ProcessorContext::session_store`.
    pub fn sessions(mut self, retention: Duration) -> Self {
        self.store_type = StoreType::session(millis(retention));
        self
    }

    /// Makes this a versioned key-value store (Kafka Streams' KIP-889): each key's
    /// latest value, and its older versions for `history` after they were replaced.
    /// Processors reach it with `ProcessorContext::versioned_store`. It bypasses the
    /// record cache (reads of old versions scan the store).
    pub fn versioned(mut self, history: Duration) -> Self {
        self.store_type = StoreType::versioned(millis(history));
        self.caching = false;
        self
    }

    /// Key-value, window, session or versioned.
    pub fn store_type(&self) -> StoreType {
        self.store_type
    }

    /// The key serde.
    pub fn key_serde(&self) -> &Arc<dyn Serde<K>> {
        &self.key_serde
    }

    /// The value serde.
    pub fn value_serde(&self) -> &Arc<dyn Serde<V>> {
        &self.value_serde
    }

    /// Reads and writes bypass the record cache: every write reaches the store (and,
    /// for an aggregation, goes downstream) at once.
    pub fn without_caching(mut self) -> Self {
        self.caching = false;
        self
    }

    /// Stores a timestamp with every value (Kafka Streams' timestamped stores). A
    /// write carries the timestamp of the record being processed unless it gives one
    /// (`put_with_timestamp`); reads return the value alone unless they ask for both
    /// (`get_with_timestamp`); an aggregation's changes go downstream with the stored
    /// timestamp. The value bytes are the timestamp (8 bytes, big-endian) followed by
    /// the serialized value.
    pub fn timestamped(mut self) -> Self {
        self.timestamped = true;
        self
    }
}

impl<K, V> std::fmt::Debug for SourceSpec<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSpec")
            .field("handler", &self.handler)
            .field("extractor", &self.extractor.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for SinkSpec<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSpec")
            .field("partitioner", &self.partitioner.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for StoreSpec<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("store_type", &self.store_type)
            .field("caching", &self.caching)
            .field("timestamped", &self.timestamped)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::{I64Serde, StringSerde};

    #[test]
    fn a_store_retaining_duplicates_is_uncached_as_in_kafka_streams() {
        let spec = StoreSpec::<String, i64>::new("s", StringSerde, I64Serde);
        assert!(spec.caching);
        let spec = spec.windowed_with_duplicates(Duration::ZERO, Duration::from_secs(1));
        assert!(!spec.caching);
        assert!(matches!(
            spec.store_type,
            StoreType::Window {
                duplicates: true,
                ..
            }
        ));
    }
}
