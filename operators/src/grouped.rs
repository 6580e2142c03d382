//! Grouping a stream and aggregating it into a table: [`Grouped`], [`Materialized`],
//! `group_by_key` / `group_by`, and [`KGroupedStream`]'s `count`, `reduce`, `aggregate`
//! and `latest_by_key`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use weir_runtime::serde::{DefaultSerde, I64Serde, OptionSerde, Serde};
use weir_runtime::{Change, Data, StoreKind, StoreSpec};

use crate::ops;
use crate::stream::{ArcSerde, Inner, KStream, Repartitioned};
use crate::table::{KTable, TableMeta, TableStore};

/// Serdes for a grouping (and its repartition topic, if one is needed).
#[must_use = "a builder does nothing until it is used"]
pub struct Grouped<K, V> {
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    pub(crate) name: Option<String>,
}

impl<K, V> Grouped<K, V> {
    /// Explicit serdes.
    pub fn with(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        Grouped {
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
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

    /// Names the repartition topic (`<application>-<query>-<name>-repartition`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How an aggregation or table is stored: name, kind, caching, serdes.
#[must_use = "a builder does nothing until it is used"]
pub struct Materialized<K, V> {
    pub(crate) name: Option<String>,
    pub(crate) kind: StoreKind,
    pub(crate) caching: bool,
    pub(crate) key_serde: Option<Arc<dyn Serde<K>>>,
    pub(crate) value_serde: Option<Arc<dyn Serde<V>>>,
    pub(crate) retention: Option<std::time::Duration>,
    /// A versioned store keeping old versions this long (source tables).
    pub(crate) versioned: Option<std::time::Duration>,
}

impl<K, V> Default for Materialized<K, V> {
    fn default() -> Self {
        Materialized {
            name: None,
            kind: StoreKind::RocksDb,
            caching: true,
            key_serde: None,
            value_serde: None,
            retention: None,
            versioned: None,
        }
    }
}

impl<K, V> Materialized<K, V> {
    /// A store named `name` (it names a directory under the state dir).
    pub fn as_(name: impl Into<String>) -> Self {
        Materialized {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// A versioned store named `name` (Kafka Streams' KIP-889), for a source table
    /// ([`StreamsBuilder::table_with`](crate::StreamsBuilder::table_with)): besides each
    /// key's latest value it keeps the older ones for `history_retention` after they
    /// were replaced, readable as of any time within it
    /// ([`weir_runtime::VersionedStoreHandle::get_as_of`]). An update older than the
    /// key's latest one goes into the history and is not forwarded (the table's latest
    /// value does not go back in time). In RocksDB under the shared cache, or in
    /// memory; not through the record cache.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .table_with(
    ///         "prices",
    ///         Consumed::<String, i64>::defaults(),
    ///         Materialized::as_versioned("prices-store", Duration::from_secs(3600)),
    ///     )
    ///     .to("latest-prices");
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// let prices = driver.create_input_topic::<String, i64>("prices")?;
    /// prices.pipe_input_at("apple", 100, 1_000)?;
    /// prices.pipe_input_at("apple", 120, 3_000)?;
    /// prices.pipe_input_at("apple", 90, 2_000)?; // late: history only
    /// let store = driver.versioned_store::<String, i64>("prices-store")?;
    /// assert_eq!(store.get(&"apple".to_string())?.map(|v| v.value), Some(120));
    /// assert_eq!(store.get_as_of(&"apple".to_string(), 2_500)?.map(|v| v.value), Some(90));
    /// let out = driver.create_output_topic::<String, Option<i64>>("latest-prices")?;
    /// assert_eq!(out.read_values_to_list()?, vec![Some(100), Some(120)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn as_versioned(name: impl Into<String>, history_retention: std::time::Duration) -> Self {
        Materialized {
            name: Some(name.into()),
            versioned: Some(history_retention),
            caching: false,
            ..Self::default()
        }
    }

    /// Keeps the table in memory (bounded by the runtime's in-memory store budget).
    pub fn in_memory(mut self) -> Self {
        self.kind = StoreKind::InMemory;
        self
    }

    /// Every update reaches the store and goes downstream at once (no record cache).
    pub fn without_caching(mut self) -> Self {
        self.caching = false;
        self
    }

    /// The key serde of the store.
    pub fn with_key_serde(mut self, serde: impl Serde<K>) -> Self {
        self.key_serde = Some(Arc::new(serde));
        self
    }

    /// The value serde of the store.
    pub fn with_value_serde(mut self, serde: impl Serde<V>) -> Self {
        self.value_serde = Some(Arc::new(serde));
        self
    }

    /// Window and session stores: how long windows are kept (at least window size
    /// plus grace, which is also the default; for sliding windows twice the time
    /// difference plus grace), e.g. to query them after they close.
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The same store settings for values of another type, stored with `value_serde`.
    pub(crate) fn retyped<W>(self, value_serde: Option<Arc<dyn Serde<W>>>) -> Materialized<K, W> {
        Materialized {
            name: self.name,
            kind: self.kind,
            caching: self.caching,
            key_serde: self.key_serde,
            value_serde,
            retention: self.retention,
            versioned: self.versioned,
        }
    }

    pub(crate) fn spec(
        self,
        inner: &mut Inner,
        prefix: &str,
        key_serde: Arc<dyn Serde<K>>,
        value_serde: Option<Arc<dyn Serde<V>>>,
    ) -> Option<StoreSpec<K, V>>
    where
        K: 'static,
        V: 'static,
    {
        if self.versioned.is_some() {
            inner.check::<()>(Err(weir_runtime::Error::Topology(format!(
                "store '{}': a versioned store (Materialized::as_versioned) materializes a source table (StreamsBuilder::table_with), not an aggregation or a derived table",
                self.name.as_deref().unwrap_or(prefix)
            ))));
            return None;
        }
        let name = self.name.unwrap_or_else(|| inner.next_name(prefix));
        let Some(value_serde) = self.value_serde.or(value_serde) else {
            inner.check::<()>(Err(weir_runtime::Error::Topology(format!(
                "store '{name}' needs a value serde: use Materialized::with_value_serde"
            ))));
            return None;
        };
        let mut spec = StoreSpec::new(
            name,
            ArcSerde(self.key_serde.unwrap_or(key_serde)),
            ArcSerde(value_serde),
        );
        if self.kind == StoreKind::InMemory {
            spec = spec.in_memory();
        }
        if !self.caching {
            spec = spec.without_caching();
        }
        Some(spec)
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Groups by the current key, repartitioning first if an upstream operator changed
    /// keys (`map`, `select_key`, `flat_map`, `process`).
    pub fn group_by_key(&self) -> KGroupedStream<K, V>
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.group_by_key_with(Grouped::defaults())
    }

    /// Like [`KStream::group_by_key`] with explicit serdes.
    pub fn group_by_key_with(&self, grouped: Grouped<K, V>) -> KGroupedStream<K, V> {
        let stream = if self.repartition_required {
            let mut r = Repartitioned::with(
                ArcSerde(grouped.key_serde.clone()),
                ArcSerde(grouped.value_serde.clone()),
            );
            if let Some(n) = &grouped.name {
                r = r.with_name(n.clone());
            }
            self.repartition_with(r)
        } else {
            self.clone()
        };
        KGroupedStream {
            stream,
            key_serde: grouped.key_serde,
            value_serde: grouped.value_serde,
        }
    }

    /// Groups by a new key computed from each record (always repartitions, through an
    /// internal topic `<application>-<query>-<name>-repartition`).
    ///
    /// # Examples
    ///
    /// Counting orders per customer, from orders keyed by order id:
    ///
    /// ```
    /// use weir::prelude::*;
    /// # fn main() -> weir::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap(); // a fresh state directory per run
    /// # let runtime = Runtime::new(RuntimeConfig::builder().workers(1).state_dir(dir.path())
    /// #     .commit_interval(std::time::Duration::from_millis(50)).build()?)?;
    /// # let broker = runtime.broker().clone();
    /// # broker.create_topic("orders", 2)?;
    /// # broker.create_topic("out", 2)?;
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream::<String, String>("orders") // order id -> customer
    ///     .group_by(|_order, customer| customer.clone())
    ///     .count()
    ///     .to("out");
    /// # let query = runtime.start_query("per-customer", builder.build()?)?;
    /// # for (order, customer) in [("o1", "ann"), ("o2", "bob"), ("o3", "ann")] {
    /// #     broker.send("orders", &order.to_string(), &customer.to_string())?;
    /// # }
    /// # // Counts go out at each commit (every 50 ms here) or cache eviction.
    /// # while !broker.read_all::<String, i64>("out")?.iter().any(|r| r.record.key == "ann" && r.record.value == 2) {
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// # query.stop()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_by<K2, F>(&self, f: F) -> KGroupedStream<K2, V>
    where
        K2: Data + DefaultSerde,
        V: DefaultSerde,
        F: Fn(&K, &V) -> K2 + Send + Sync + 'static,
    {
        self.select_key(f).group_by_key()
    }
}

/// Adds the processor that materializes `input` into a table: its store (as
/// `materialized` says, falling back to the given serdes), the processor `make` builds
/// from the store's name and the send-old flag, and the connection between them.
pub(crate) fn materialize<KI: Data, VI: Data, K: Data, V: Data, P, S>(
    input: &KStream<KI, VI>,
    prefix: &str,
    store_prefix: &str,
    materialized: Materialized<K, V>,
    key_serde: Arc<dyn Serde<K>>,
    default_value_serde: Option<Arc<dyn Serde<V>>>,
    make: impl FnOnce(Arc<str>, Arc<AtomicBool>) -> S,
) -> KTable<K, V>
where
    P: weir_runtime::Processor<KI, VI, K, Change<V>>,
    S: Fn() -> P + Send + Sync + 'static,
{
    let builder: Rc<RefCell<Inner>> = input.builder.clone();
    let send_old = Arc::new(AtomicBool::new(false));
    // Every table's store keeps each row's timestamp, as Kafka Streams' do: an
    // aggregation's update carries the largest timestamp it has folded in.
    let spec = materialized
        .spec(
            &mut builder.borrow_mut(),
            store_prefix,
            key_serde,
            default_value_serde,
        )
        .map(StoreSpec::timestamped);
    let store: Arc<str> = Arc::from(spec.as_ref().map_or("?", |s| s.name()));
    let meta = spec
        .as_ref()
        .map_or_else(TableMeta::default, |s| TableMeta {
            key_serde: Some(s.key_serde().clone()),
            value_serde: Some(s.value_serde().clone()),
            grace_ms: None,
            store: Some(TableStore {
                name: Arc::from(s.name()),
                versioned: false,
                history: None,
            }),
        });
    let node = builder.borrow_mut().next_name(prefix);
    let changes: KStream<K, Change<V>> =
        input.add_named(node.clone(), make(store, send_old.clone()));
    if let Some(spec) = spec {
        builder.borrow_mut().add_store(spec, &node);
    }
    KTable::new(changes, send_old).with_meta(meta)
}

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    fn aggregate_node<VA: Data, P, S>(
        &self,
        prefix: &str,
        materialized: Materialized<K, VA>,
        default_value_serde: Option<Arc<dyn Serde<VA>>>,
        make: impl FnOnce(Arc<str>, Arc<AtomicBool>) -> S,
    ) -> KTable<K, VA>
    where
        P: weir_runtime::Processor<K, V, K, Change<VA>>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        materialize(
            &self.stream,
            prefix,
            "KSTREAM-AGGREGATE-STATE-STORE",
            materialized,
            self.key_serde.clone(),
            default_value_serde,
            make,
        )
    }

    /// Counts records per key into a RocksDB store (through the record cache: a key's
    /// updates are compacted until its entry is evicted or committed).
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    /// # fn main() -> weir::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap(); // a fresh state directory per run
    /// # let runtime = Runtime::new(RuntimeConfig::builder().workers(1).state_dir(dir.path())
    /// #     .commit_interval(std::time::Duration::from_millis(50)).build()?)?;
    /// # let broker = runtime.broker().clone();
    /// # broker.create_topic("words", 1)?;
    /// # broker.create_topic("out", 1)?;
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream::<String, String>("words")
    ///     .group_by_key()
    ///     .count()
    ///     .to("out");
    /// # let query = runtime.start_query("counts", builder.build()?)?;
    /// # broker.send("words", &"weir".to_string(), &String::new())?;
    /// # broker.send("words", &"weir".to_string(), &String::new())?;
    /// # while broker.read_all::<String, i64>("out")?.last().map(|r| r.record.value) != Some(2) {
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// # query.stop()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn count(&self) -> KTable<K, i64> {
        self.count_with(Materialized::default())
    }

    /// Counts records per key, stored as `materialized` says.
    pub fn count_with(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        let init = Arc::new(|| 0i64);
        let agg = Arc::new(|_: &K, _: V, n: i64| n + 1);
        self.aggregate_node(
            "KSTREAM-AGGREGATE",
            materialized,
            Some(Arc::new(I64Serde)),
            move |store, send_old| {
                move || ops::Aggregate {
                    store: store.clone(),
                    init: init.clone(),
                    agg: agg.clone(),
                    send_old: send_old.clone(),
                }
            },
        )
    }

    /// Combines each key's values with `f(aggregate, value)`; the first value starts
    /// the aggregate.
    pub fn reduce<F>(&self, f: F) -> KTable<K, V>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.reduce_with(f, Materialized::default())
    }

    /// Like [`KGroupedStream::reduce`], stored as `materialized` says.
    pub fn reduce_with<F>(&self, f: F, materialized: Materialized<K, V>) -> KTable<K, V>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        // `None` marks "no value yet"; the store only ever holds reduced values.
        let f = Arc::new(f);
        let vs = self.value_serde.clone();
        let agg = Arc::new(move |_: &K, v: V, acc: Option<V>| {
            Some(match acc {
                Some(a) => f(a, v),
                None => v,
            })
        });
        let value_serde = materialized.value_serde.clone().unwrap_or(vs.clone());
        let table: KTable<K, Option<V>> = self.aggregate_node(
            "KSTREAM-REDUCE",
            Materialized {
                name: materialized.name,
                kind: materialized.kind,
                caching: materialized.caching,
                key_serde: materialized.key_serde,
                value_serde: Some(Arc::new(OptionSerde(ArcSerde(
                    materialized.value_serde.unwrap_or(vs),
                )))),
                retention: materialized.retention,
                versioned: materialized.versioned,
            },
            None,
            move |store, send_old| {
                let init = Arc::new(|| None::<V>);
                move || ops::Aggregate {
                    store: store.clone(),
                    init: init.clone(),
                    agg: agg.clone(),
                    send_old: send_old.clone(),
                }
            },
        );
        table.flatten(Some(value_serde))
    }

    /// Folds each key's values into an aggregate, starting from `init()`.
    pub fn aggregate<VA, I, A>(&self, init: I, agg: A) -> KTable<K, VA>
    where
        VA: Data + DefaultSerde,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    {
        self.aggregate_with(
            init,
            agg,
            Materialized::default().with_value_serde(VA::default_serde()),
        )
    }

    /// Like [`KGroupedStream::aggregate`], stored as `materialized` says (it must give a
    /// value serde unless `VA` has a default one).
    pub fn aggregate_with<VA, I, A>(
        &self,
        init: I,
        agg: A,
        materialized: Materialized<K, VA>,
    ) -> KTable<K, VA>
    where
        VA: Data,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    {
        let (init, agg) = (Arc::new(init), Arc::new(agg));
        self.aggregate_node(
            "KSTREAM-AGGREGATE",
            materialized,
            None,
            move |store, send_old| {
                move || ops::Aggregate {
                    store: store.clone(),
                    init: init.clone(),
                    agg: agg.clone(),
                    send_old: send_old.clone(),
                }
            },
        )
    }

    /// The latest value of each key (ksqlDB's `LATEST_BY_OFFSET`). A blind write per
    /// record: no read of the previous value.
    pub fn latest_by_key(&self) -> KTable<K, V> {
        self.latest_by_key_with(Materialized::default())
    }

    /// Like [`KGroupedStream::latest_by_key`], stored as `materialized` says.
    pub fn latest_by_key_with(&self, materialized: Materialized<K, V>) -> KTable<K, V> {
        self.aggregate_node(
            "KSTREAM-LATEST",
            materialized,
            Some(self.value_serde.clone()),
            move |store, send_old| {
                move || ops::Latest {
                    store: store.clone(),
                    send_old: send_old.clone(),
                }
            },
        )
    }
}

impl<K, V> std::fmt::Debug for Grouped<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for Materialized<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materialized")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("caching", &self.caching)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for KGroupedStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KGroupedStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}
