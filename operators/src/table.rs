//! Keyed state in the DSL: grouping, aggregations, and tables.
//!
//! `group_by_key` / `group_by` give a [`KGroupedStream`]. `count`, `reduce`,
//! `aggregate` and `latest_by_key` turn it into a [`KTable`] materialized in a store
//! (RocksDB under the runtime's shared cache by default, [`Materialized`] to choose).
//! Updates are compacted in the runtime's record cache and reach the table's
//! downstream as [`Change`]s when they leave the cache (eviction or commit), as with
//! Kafka Streams' caching.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::serde::{DefaultSerde, OptionSerde, Serde};
use weir_runtime::{Change, Data, SourceSpec, StoreKind, StoreSpec};

use crate::grouped::materialize;
pub use crate::grouped::{Grouped, KGroupedStream, Materialized};
use crate::ops;
use crate::stream::{ArcSerde, Consumed, KStream, StreamsBuilder};

/// A changelog table: each key's current value, as a stream of [`Change`]s.
pub struct KTable<K, V> {
    pub(crate) changes: KStream<K, Change<V>>,
    /// Whether the materialized store upstream must send old values (set by
    /// operators that need them to retract rows).
    pub(crate) send_old: Arc<AtomicBool>,
    /// Serdes and windowing the table is known to have (for suppression).
    pub(crate) meta: TableMeta<K, V>,
    _types: PhantomData<fn() -> (K, V)>,
}

/// What a table knows about itself: its serdes (from its store) and, for windowed
/// tables, the grace period of their windows.
pub(crate) struct TableMeta<K, V> {
    pub(crate) key_serde: Option<Arc<dyn Serde<K>>>,
    pub(crate) value_serde: Option<Arc<dyn Serde<V>>>,
    pub(crate) grace_ms: Option<i64>,
    /// The store holding exactly this table's rows, if it has one (joins read it).
    pub(crate) store: Option<TableStore>,
}

/// A table's own store: its name, and whether it is versioned (read with
/// `versioned_store`) or a timestamped key-value store.
#[derive(Clone, Debug)]
pub(crate) struct TableStore {
    pub(crate) name: Arc<str>,
    pub(crate) versioned: bool,
    /// A versioned store's history retention.
    pub(crate) history: Option<std::time::Duration>,
}

impl<K, V> Default for TableMeta<K, V> {
    fn default() -> Self {
        TableMeta {
            key_serde: None,
            value_serde: None,
            grace_ms: None,
            store: None,
        }
    }
}

impl<K, V> Clone for TableMeta<K, V> {
    fn clone(&self) -> Self {
        TableMeta {
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            grace_ms: self.grace_ms,
            store: self.store.clone(),
        }
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    pub(crate) fn new(changes: KStream<K, Change<V>>, send_old: Arc<AtomicBool>) -> Self {
        KTable {
            changes,
            send_old,
            meta: TableMeta::default(),
            _types: PhantomData,
        }
    }

    pub(crate) fn with_meta(mut self, meta: TableMeta<K, V>) -> Self {
        self.meta = meta;
        self
    }

    /// The name of the node this table's changes come out of.
    pub fn node_name(&self) -> &str {
        self.changes.node_name()
    }

    fn filtered<F>(&self, f: F, keep: bool) -> KTable<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        // Retracting a row that stops matching needs the value it had.
        self.send_old.store(true, Ordering::Release);
        let f = Arc::new(f);
        KTable::new(
            self.changes.add("KTABLE-FILTER", move || ops::TableFilter {
                f: f.clone(),
                keep,
            }),
            self.send_old.clone(),
        )
        // Same serdes; the rows filtered out are still in the parent's store.
        .with_meta(TableMeta {
            store: None,
            ..self.meta.clone()
        })
    }

    /// Keeps rows for which `f` holds; a row that stops matching is deleted downstream.
    pub fn filter<F>(&self, f: F) -> KTable<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        self.filtered(f, true)
    }

    /// Drops rows for which `f` holds.
    pub fn filter_not<F>(&self, f: F) -> KTable<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        self.filtered(f, false)
    }

    /// Maps every row's value.
    pub fn map_values<V2: Data, F>(&self, f: F) -> KTable<K, V2>
    where
        F: Fn(&V) -> V2 + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        KTable::new(
            self.changes
                .add("KTABLE-MAPVALUES", move || ops::TableMapValues(f.clone())),
            self.send_old.clone(),
        )
        .with_meta(TableMeta {
            key_serde: self.meta.key_serde.clone(),
            value_serde: None,
            grace_ms: self.meta.grace_ms,
            store: None,
        })
    }

    /// The table's updates as a stream: the new value, or `None` when a row is deleted
    /// (a tombstone when written to a topic).
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        self.changes.add("KTABLE-TOSTREAM", || ops::TableToStream)
    }

    /// The table's updates with the value each one replaced, as [`Change`]s (Kafka
    /// Streams' `sendOldValues`): `new` is `None` for a delete, `old` is `None` for a new
    /// row. The store upstream reads each row before writing it to give the old value
    /// (one more read per update).
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    ///
    /// let builder = StreamsBuilder::new();
    /// let changes: KStream<String, Change<i64>> = builder
    ///     .stream::<String, String>("clicks")
    ///     .group_by_key()
    ///     .count()
    ///     .to_change_stream();
    /// changes
    ///     .map_values(|c| c.new.unwrap_or(0) - c.old.unwrap_or(0))
    ///     .to("count-deltas");
    /// ```
    pub fn to_change_stream(&self) -> KStream<K, Change<V>> {
        self.send_old.store(true, Ordering::Release);
        self.changes.add("KTABLE-TOSTREAM", || ops::PassThrough)
    }

    /// Writes the table's updates to `topic` (deletes as null values).
    pub fn to(&self, topic: &str)
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.to_stream().to(topic)
    }
}

impl<K: Data, V: Data> KTable<K, Option<V>> {
    /// A table whose store holds `Option<V>` (reduce's "no value yet") seen as `V`,
    /// with `value_serde` for `V`.
    pub(crate) fn flatten(self, value_serde: Option<Arc<dyn Serde<V>>>) -> KTable<K, V> {
        let table = self.changes.add("KTABLE-MAPVALUES", || FlattenChange);
        KTable::new(table, self.send_old).with_meta(TableMeta {
            key_serde: self.meta.key_serde,
            value_serde,
            grace_ms: self.meta.grace_ms,
            store: None,
        })
    }
}

struct FlattenChange;

impl<K: Data, V: Data> weir_runtime::Processor<K, Change<Option<V>>, K, Change<V>>
    for FlattenChange
{
    fn process(
        &mut self,
        r: weir_runtime::Record<K, Change<Option<V>>>,
        ctx: &mut weir_runtime::ProcessorContext<'_, K, Change<V>>,
    ) -> weir_runtime::Result<()> {
        let change = Change {
            new: r.value.new.clone().flatten(),
            old: r.value.old.clone().flatten(),
        };
        ctx.forward(r.with_value(change))
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// The stream as a table (Kafka Streams' `toTable`): each record sets its key's row
    /// in a store, and the table's changes go downstream as the store takes them
    /// (compacted by the record cache). A value that serializes to null (`None` of an
    /// `Option` value) deletes the row. Repartitions first if an upstream operator
    /// changed the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    ///
    /// let builder = StreamsBuilder::new();
    /// let latest: KTable<String, i64> = builder.stream::<String, i64>("prices").to_table();
    /// latest.to("latest-prices");
    /// ```
    pub fn to_table(&self) -> KTable<K, V>
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.to_table_with(Materialized::default())
    }

    /// Like [`KStream::to_table`], stored as `materialized` says (its serdes default to
    /// the types' own).
    pub fn to_table_with(&self, materialized: Materialized<K, V>) -> KTable<K, V>
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        let stream = if self.repartition_required {
            self.repartition()
        } else {
            self.clone()
        };
        materialize(
            &stream,
            "KSTREAM-TOTABLE",
            "KSTREAM-TOTABLE-STATE-STORE",
            materialized,
            Arc::new(K::default_serde()),
            Some(Arc::new(V::default_serde())),
            |store, send_old| {
                move || ops::Latest {
                    store: store.clone(),
                    send_old: send_old.clone(),
                }
            },
        )
    }
}

impl StreamsBuilder {
    /// A table of `topic`: each record sets its key's row, a null value deletes it.
    pub fn table<K, V>(&self, topic: &str) -> KTable<K, V>
    where
        K: Data + DefaultSerde,
        V: Data + DefaultSerde,
    {
        self.table_with(topic, Consumed::defaults(), Materialized::default())
    }

    /// Like [`StreamsBuilder::table`] with explicit serdes (of keys and of non-null
    /// values; a null value is a delete) and store.
    pub fn table_with<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let key_serde = consumed.spec.key_serde().clone();
        let value_serde = consumed.spec.value_serde().clone();
        let mut spec = SourceSpec::new(
            ArcSerde(key_serde.clone()),
            OptionSerde(ArcSerde(value_serde.clone())),
        );
        if let Some(h) = consumed.spec.handler() {
            spec = spec.deserialization_handler(h);
        }
        let nullable = Consumed {
            spec,
            name: consumed.name,
        };
        let stream: KStream<K, Option<V>> = self.stream_with(&[topic], nullable);
        if let Some(history) = materialized.versioned {
            return versioned_source(&stream, materialized, history, key_serde, value_serde);
        }
        materialize(
            &stream,
            "KTABLE-SOURCE",
            "KTABLE-SOURCE-STATE-STORE",
            materialized,
            key_serde,
            Some(value_serde),
            |store, send_old| {
                move || ops::TableSource {
                    store: store.clone(),
                    send_old: send_old.clone(),
                }
            },
        )
    }
}

/// A source table in a versioned store: the store keeps every version for `history`;
/// only updates that become the latest go downstream.
fn versioned_source<K: Data, V: Data>(
    stream: &KStream<K, Option<V>>,
    materialized: Materialized<K, V>,
    history: std::time::Duration,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
) -> KTable<K, V> {
    let builder = stream.builder.clone();
    let name = materialized
        .name
        .clone()
        .unwrap_or_else(|| builder.borrow_mut().next_name("KTABLE-SOURCE-STATE-STORE"));
    let key_serde = materialized.key_serde.clone().unwrap_or(key_serde);
    let value_serde = materialized.value_serde.clone().unwrap_or(value_serde);
    let mut spec = StoreSpec::new(
        name.clone(),
        ArcSerde(key_serde.clone()),
        ArcSerde(value_serde.clone()),
    )
    .versioned(history);
    if materialized.kind == StoreKind::InMemory {
        spec = spec.in_memory();
    }
    let send_old = Arc::new(AtomicBool::new(false));
    let node = builder.borrow_mut().next_name("KTABLE-SOURCE");
    let store: Arc<str> = Arc::from(name.as_str());
    let so = send_old.clone();
    let changes = stream.add_named(node.clone(), move || ops::VersionedTableSource {
        store: store.clone(),
        send_old: so.clone(),
    });
    builder.borrow_mut().add_store(spec, &node);
    KTable::new(changes, send_old).with_meta(TableMeta {
        key_serde: Some(key_serde),
        value_serde: Some(value_serde),
        grace_ms: None,
        store: Some(TableStore {
            name: Arc::from(name.as_str()),
            versioned: true,
            history: Some(history),
        }),
    })
}

impl<K, V> std::fmt::Debug for KTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KTable")
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}
