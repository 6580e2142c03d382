//! Global tables: [`StreamsBuilder::global_table`] and the stream–global-table joins.
//!
//! A global table holds every partition of its topic in every process (Kafka Streams'
//! `GlobalKTable`): a stream joins it by any key computed from its records, with no
//! co-partitioning and no repartition topic. Its store is the query's one global store
//! (see `weir_runtime::Topology::add_global_store`): kept up to date by a task of its
//! own on the worker pool, loaded to its topic's end before the query's other tasks
//! start, under the same memory bound as any store.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use weir_runtime::internals::InternalContext;
use weir_runtime::serde::{DefaultSerde, OptionSerde};
use weir_runtime::{
    Data, Processor, ProcessorContext, Record, Result, SourceSpec, StoreKind, StoreSpec,
};

use crate::builder::{ArcSerde, Consumed, Inner, StreamsBuilder};
use crate::stream::KStream;
use crate::table::Materialized;

/// A table replicated in full in every process (Kafka Streams' `GlobalKTable`): made
/// by [`StreamsBuilder::global_table`], joined by [`KStream::join_global`] and
/// [`KStream::left_join_global`].
pub struct GlobalKTable<K, V> {
    store: Arc<str>,
    _types: PhantomData<fn() -> (K, V)>,
    _builder: Rc<RefCell<Inner>>,
}

impl<K, V> GlobalKTable<K, V> {
    /// The name of its store (Kafka Streams' `queryableStoreName`).
    pub fn queryable_store_name(&self) -> &str {
        &self.store
    }
}

impl<K, V> Clone for GlobalKTable<K, V> {
    fn clone(&self) -> Self {
        GlobalKTable {
            store: self.store.clone(),
            _types: PhantomData,
            _builder: self._builder.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for GlobalKTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalKTable")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl StreamsBuilder {
    /// A global table of `topic` (Kafka Streams' `StreamsBuilder#globalTable`): every
    /// partition, in every process, deserialized with the types' default serdes; a
    /// record with a null value deletes its key. See [`KStream::join_global`].
    pub fn global_table<K, V>(&self, topic: &str) -> GlobalKTable<K, V>
    where
        K: Data + DefaultSerde,
        V: Data + DefaultSerde,
    {
        self.global_table_with(topic, Consumed::defaults(), Materialized::default())
    }

    /// Like [`StreamsBuilder::global_table`] with explicit serdes and store (its name,
    /// serdes, RocksDB or in memory). The store has no changelog (its topic is one) and
    /// bypasses the record cache; a versioned store is refused.
    pub fn global_table_with<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> GlobalKTable<K, V> {
        let key_serde = consumed.spec.key_serde().clone();
        let value_serde = consumed.spec.value_serde().clone();
        let mut source = SourceSpec::new(
            ArcSerde(key_serde.clone()),
            OptionSerde(ArcSerde(value_serde.clone())),
        );
        if let Some(h) = consumed.spec.handler() {
            source = source.deserialization_handler(h);
        }
        if let Some(f) = consumed.spec.extractor().cloned() {
            source = source.timestamp_extractor(move |k: &K, v: &Option<V>, ts| match v {
                Some(v) => f(k, v, ts),
                None => ts,
            });
        }
        let mut inner = self.inner.borrow_mut();
        let source_name = consumed
            .name
            .unwrap_or_else(|| inner.next_name("KSTREAM-SOURCE"));
        let store = materialized
            .name
            .clone()
            .unwrap_or_else(|| inner.next_name(&format!("{topic}-STATE-STORE")));
        let processor = inner.next_name("KTABLE-SOURCE");
        if materialized.versioned.is_some() {
            inner.check::<()>(Err(weir_runtime::Error::Topology(format!(
                "global table '{store}': weir's global tables are not versioned (a stream-global-table join reads the latest row)"
            ))));
        }
        let mut spec = StoreSpec::new(
            store.clone(),
            ArcSerde(materialized.key_serde.clone().unwrap_or(key_serde)),
            ArcSerde(materialized.value_serde.clone().unwrap_or(value_serde)),
        )
        .timestamped();
        if materialized.kind == StoreKind::InMemory {
            spec = spec.in_memory();
        }
        let name: Arc<str> = Arc::from(store.as_str());
        let n = name.clone();
        let r = inner
            .topology
            .add_global_store(spec, &source_name, topic, source, &processor, move || {
                GlobalTableSource { store: n.clone() }
            })
            .map(|_| ());
        inner.check(r);
        GlobalKTable {
            store: name,
            _types: PhantomData,
            _builder: self.inner.clone(),
        }
    }
}

/// Keeps a global table's store: puts rows, deletes on a null value (Kafka Streams'
/// `KTableSource` under a global store). Forwards nothing.
struct GlobalTableSource {
    store: Arc<str>,
}

impl<K: Data, V: Data> Processor<K, Option<V>, K, Option<V>> for GlobalTableSource {
    fn process(
        &mut self,
        r: Record<K, Option<V>>,
        ctx: &mut ProcessorContext<'_, K, Option<V>>,
    ) -> Result<()> {
        let mut store = ctx.store::<K, V>(&self.store)?;
        match &r.value {
            Some(v) => store.put(&r.key, v),
            None => store.delete(&r.key),
        }
    }
}

/// Computes the global table's key of a stream record; `None`: no key (no match).
type KeyMapper<K, V, KG> = Arc<dyn Fn(&K, &V) -> Option<KG> + Send + Sync>;
/// Joins a record's value with the row found (if any); `None`: nothing goes out.
type GlobalJoiner<V, VG, VR> = Arc<dyn Fn(&V, Option<&VG>) -> Option<VR> + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Joins each record with `table`'s row for the key `key_mapper(key, value)` picks
    /// (Kafka Streams' `KStream#join(GlobalKTable, KeyValueMapper, ValueJoiner)`):
    /// `joiner(value, row)` goes downstream with the record's key and timestamp. A
    /// record whose mapped key has no row is dropped; so is one the mapper gives no
    /// key (`None`: the mapper may return `KG` or `Option<KG>`), counted in the
    /// dropped-records metric as Kafka does. Only stream records trigger output. No
    /// co-partitioning and no repartitioning: the table is whole in every process.
    ///
    /// ```
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// let products = builder.global_table::<String, String>("products"); // sku -> name
    /// builder
    ///     .stream::<String, String>("orders") // order id -> sku
    ///     .join_global(&products, |_order, sku| sku.clone(), |sku, name| format!("{sku}: {name}"))
    ///     .to("named-orders");
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// driver.create_input_topic::<String, String>("products")?.pipe_input_at("s1", "tea", 1)?;
    /// let orders = driver.create_input_topic::<String, String>("orders")?;
    /// orders.pipe_input_at("o1", "s1", 5)?;
    /// orders.pipe_input_at("o2", "s9", 6)?; // no such product: dropped by the inner join
    /// let out = driver.create_output_topic::<String, String>("named-orders")?;
    /// assert_eq!(out.read_key_values_to_list()?, vec![("o1".to_string(), "s1: tea".to_string())]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_global<KG, VG, VR, R, M, F>(
        &self,
        table: &GlobalKTable<KG, VG>,
        key_mapper: M,
        joiner: F,
    ) -> KStream<K, VR>
    where
        KG: Data,
        VG: Data,
        VR: Data,
        R: Into<Option<KG>>,
        M: Fn(&K, &V) -> R + Send + Sync + 'static,
        F: Fn(&V, &VG) -> VR + Send + Sync + 'static,
    {
        let mapper: KeyMapper<K, V, KG> = Arc::new(move |k, v| key_mapper(k, v).into());
        let joiner: GlobalJoiner<V, VG, VR> = Arc::new(move |v, g| g.map(|g| joiner(v, g)));
        self.global_join(table, "KSTREAM-JOIN", mapper, joiner, false)
    }

    /// Left join with `table` (Kafka Streams' `KStream#leftJoin(GlobalKTable, ..)`):
    /// every record goes downstream as `joiner(value, row)`, with `None` when the
    /// mapped key has no row or the mapper gives no key.
    pub fn left_join_global<KG, VG, VR, R, M, F>(
        &self,
        table: &GlobalKTable<KG, VG>,
        key_mapper: M,
        joiner: F,
    ) -> KStream<K, VR>
    where
        KG: Data,
        VG: Data,
        VR: Data,
        R: Into<Option<KG>>,
        M: Fn(&K, &V) -> R + Send + Sync + 'static,
        F: Fn(&V, Option<&VG>) -> VR + Send + Sync + 'static,
    {
        let mapper: KeyMapper<K, V, KG> = Arc::new(move |k, v| key_mapper(k, v).into());
        let joiner: GlobalJoiner<V, VG, VR> = Arc::new(move |v, g| Some(joiner(v, g)));
        self.global_join(table, "KSTREAM-LEFTJOIN", mapper, joiner, true)
    }

    fn global_join<KG: Data, VG: Data, VR: Data>(
        &self,
        table: &GlobalKTable<KG, VG>,
        prefix: &str,
        mapper: KeyMapper<K, V, KG>,
        joiner: GlobalJoiner<V, VG, VR>,
        left: bool,
    ) -> KStream<K, VR> {
        let store = table.store.clone();
        // The global store needs no connection: every processor may read it.
        self.add(prefix, move || StreamGlobalJoin {
            store: store.clone(),
            mapper: mapper.clone(),
            joiner: joiner.clone(),
            left,
        })
    }
}

/// Joins stream records with a global table's rows (Kafka Streams'
/// `KStreamGlobalKTableJoin`).
struct StreamGlobalJoin<K, V, KG, VG, VR> {
    store: Arc<str>,
    mapper: KeyMapper<K, V, KG>,
    joiner: GlobalJoiner<V, VG, VR>,
    left: bool,
}

impl<K: Data, V: Data, KG: Data, VG: Data, VR: Data> Processor<K, V, K, VR>
    for StreamGlobalJoin<K, V, KG, VG, VR>
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        let row = match (self.mapper)(&r.key, &r.value) {
            Some(key) => ctx.store::<KG, VG>(&self.store)?.get(&key)?,
            None if self.left => None,
            None => {
                // Kafka: "Skipping record due to null key or value" (dropped-records).
                ctx.record_dropped_late();
                return Ok(());
            }
        };
        let Some(joined) = (self.joiner)(&r.value, row.as_ref()) else {
            return Ok(());
        };
        let Record {
            key,
            timestamp,
            headers,
            ..
        } = r;
        ctx.forward(Record::new(key, joined, timestamp).with_headers(headers))
    }
}
