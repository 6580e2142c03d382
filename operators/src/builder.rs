//! The DSL's entry point, [`StreamsBuilder`], and how streams read and write topics:
//! [`Consumed`], [`Produced`], [`Repartitioned`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use weir_runtime::serde::{DefaultSerde, Serde};
use weir_runtime::{
    Data, DeserializationHandler, Error, Result, SinkSpec, SourceSpec, StoreSpec, Topology,
};

use crate::stream::KStream;

pub(crate) struct Inner {
    pub(crate) topology: Topology,
    pub(crate) index: usize,
    pub(crate) errors: Vec<Error>,
}

impl Inner {
    pub(crate) fn next_name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{:010}", self.index);
        self.index += 1;
        name
    }

    pub(crate) fn check<T>(&mut self, r: Result<T>) {
        if let Err(e) = r {
            self.errors.push(e);
        }
    }

    /// Adds `spec`'s store, used by processor `node` (an error is kept for `build`).
    pub(crate) fn add_store<K: Data, V: Data>(&mut self, spec: StoreSpec<K, V>, node: &str) {
        let r = self.topology.add_state_store(spec, &[node]).map(|_| ());
        self.check(r);
    }
}

/// Builds a topology with the DSL. `build()` returns it for `Runtime::start_query`.
pub struct StreamsBuilder {
    pub(crate) inner: Rc<RefCell<Inner>>,
}

impl Default for StreamsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        StreamsBuilder {
            inner: Rc::new(RefCell::new(Inner {
                topology: Topology::new(),
                index: 0,
                errors: Vec::new(),
            })),
        }
    }

    /// Adds a key-value store for processors added with
    /// [`KStream::process_with_stores`] (Kafka Streams' `addStateStore`). Each task gets
    /// its own instance, under the runtime's shared bounds.
    pub fn add_state_store<K: Data, V: Data>(&self, spec: StoreSpec<K, V>) -> &Self {
        let mut inner = self.inner.borrow_mut();
        let r = inner.topology.add_state_store(spec, &[]).map(|_| ());
        inner.check(r);
        drop(inner);
        self
    }

    /// A stream of `topic`, deserialized with the types' default serdes (Kafka
    /// Streams' `StreamsBuilder#stream`). [`StreamsBuilder::stream_with`] takes a
    /// [`Consumed`] for other serdes, a timestamp extractor or several topics.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    /// # fn main() -> weir::Result<()> {
    /// # let runtime = Runtime::new(RuntimeConfig::builder().workers(1).build()?)?;
    /// # let broker = runtime.broker().clone();
    /// broker.create_topic("in", 2)?;
    /// broker.create_topic("out", 2)?;
    /// let builder = StreamsBuilder::new();
    /// builder.stream::<String, i64>("in").to("out");
    /// let query = runtime.start_query("copy", builder.build()?)?;
    /// broker.send("in", &"k".to_string(), &1i64)?;
    /// # let read = |n: usize| -> weir::Result<Vec<_>> { loop {
    /// #     let out = broker.read_all::<String, i64>("out")?;
    /// #     if out.len() >= n { return Ok(out); }
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # } };
    /// assert_eq!(read(1)?[0].record.value, 1);
    /// # query.stop()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream<K, V>(&self, topic: &str) -> KStream<K, V>
    where
        K: Data + DefaultSerde,
        V: Data + DefaultSerde,
    {
        self.stream_with(&[topic], Consumed::defaults())
    }

    /// A stream of one or more topics with explicit serdes and options.
    pub fn stream_with<K: Data, V: Data>(
        &self,
        topics: &[&str],
        consumed: Consumed<K, V>,
    ) -> KStream<K, V> {
        let mut inner = self.inner.borrow_mut();
        let name = consumed
            .name
            .unwrap_or_else(|| inner.next_name("KSTREAM-SOURCE"));
        let r = inner
            .topology
            .add_source(&name, topics, consumed.spec)
            .map(|_| ());
        inner.check(r);
        KStream::new(&self.inner, name)
    }

    /// The topology, or the first error any operator hit while it was built.
    pub fn build(self) -> Result<Topology> {
        let mut inner = self.inner.borrow_mut();
        if let Some(e) = inner.errors.drain(..).next() {
            return Err(e);
        }
        Ok(std::mem::take(&mut inner.topology))
    }
}

/// How a stream reads its topics: serdes, deserialization handler, source name.
#[must_use = "a builder does nothing until it is used"]
pub struct Consumed<K, V> {
    pub(crate) spec: SourceSpec<K, V>,
    pub(crate) name: Option<String>,
}

impl<K, V> Consumed<K, V> {
    /// Explicit serdes.
    pub fn with(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        Consumed {
            spec: SourceSpec::new(key_serde, value_serde),
            name: None,
        }
    }

    /// The types' default serdes.
    pub fn defaults() -> Self
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        Self::with(K::default_serde(), V::default_serde())
    }

    /// What to do with records that fail to deserialize (default: the runtime's).
    pub fn with_deserialization_handler(mut self, handler: DeserializationHandler) -> Self {
        self.spec = self.spec.deserialization_handler(handler);
        self
    }

    /// Names the source node.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Takes each record's event time from `f(key, value, written_timestamp)` (Kafka
    /// Streams' `TimestampExtractor`); windows, stream time and punctuation follow it.
    /// A negative result skips the record (counted in `QueryStats::records_skipped`).
    pub fn with_timestamp_extractor(
        mut self,
        f: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.spec = self.spec.timestamp_extractor(f);
        self
    }
}

/// How a stream writes a topic: serdes, partitioner, sink name.
#[must_use = "a builder does nothing until it is used"]
pub struct Produced<K, V> {
    pub(crate) spec: SinkSpec<K, V>,
    pub(crate) name: Option<String>,
}

impl<K, V> Produced<K, V> {
    /// Explicit serdes, default partitioner.
    pub fn with(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        Produced {
            spec: SinkSpec::new(key_serde, value_serde),
            name: None,
        }
    }

    /// The types' default serdes.
    pub fn defaults() -> Self
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        Self::with(K::default_serde(), V::default_serde())
    }

    /// Picks partitions with `f(key, value, partitions)`; `None` means default.
    pub fn with_partitioner(
        mut self,
        f: impl Fn(&K, &V, u32) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        self.spec = self.spec.partitioner(f);
        self
    }

    /// Names the sink node.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How `repartition` writes and reads its internal topic.
#[must_use = "a builder does nothing until it is used"]
pub struct Repartitioned<K, V> {
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    pub(crate) name: Option<String>,
    pub(crate) partitions: Option<u32>,
}

impl<K, V> Repartitioned<K, V> {
    /// Explicit serdes.
    pub fn with(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        Repartitioned {
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            name: None,
            partitions: None,
        }
    }

    /// The types' default serdes.
    pub fn defaults() -> Self
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        Self::with(K::default_serde(), V::default_serde())
    }

    /// Names the topic `<application>-<query>-<name>-repartition`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Partition count of the internal topic (default: as many as the input).
    pub fn with_partitions(mut self, n: u32) -> Self {
        self.partitions = Some(n);
        self
    }
}

pub(crate) struct ArcSerde<T>(pub(crate) Arc<dyn Serde<T>>);

impl<T: 'static> Serde<T> for ArcSerde<T> {
    fn serialize(&self, value: &T) -> Result<Option<weir_runtime::serde::Bytes>> {
        self.0.serialize(value)
    }
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<bool> {
        self.0.serialize_into(value, out)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<T> {
        self.0.deserialize(data)
    }
}

impl std::fmt::Debug for StreamsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsBuilder").finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for Consumed<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumed")
            .field("spec", &self.spec)
            .field("name", &self.name)
            .finish()
    }
}

impl<K, V> std::fmt::Debug for Produced<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Produced")
            .field("spec", &self.spec)
            .field("name", &self.name)
            .finish()
    }
}

impl<K, V> std::fmt::Debug for Repartitioned<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repartitioned")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}
