//! Streams joined with tables (Kafka Streams' `KStreamKTableJoin`): each record of
//! the stream is enriched with the table's row for its key.
//!
//! Why a join reads the table's store rather than keeping its own copy: the table's
//! rows are already materialized (and bounded with every other store by the runtime's
//! limit), so a join adds no state. The join's processor is connected to the store it
//! reads, which puts the stream and the table in one sub-topology: their input topics
//! must be co-partitioned, and the query refuses to start otherwise, naming the topics
//! and their partition counts.

use std::sync::Arc;

use weir_runtime::StoreSpec;
use weir_runtime::serde::{Bytes, BytesSerde, DefaultSerde, Serde};
use weir_runtime::{Data, Error, Processor, ProcessorContext, Record, Result};

use crate::join::{NoOp, read_row};
use crate::join_grace::GraceJoin;
use crate::stream::KStream;
use crate::stream::{ArcSerde, Repartitioned};
use crate::table::{KTable, TableStore};

/// How a stream is joined with a table (Kafka Streams' `Joined`): the stream's key and
/// value serdes, used when the stream must be repartitioned first (its key changed
/// upstream), and a name for that repartition topic (`<name>-repartition`).
pub struct Joined<K, V> {
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    name: Option<String>,
    grace: Option<std::time::Duration>,
}

impl<K, V> Joined<K, V> {
    /// Explicit serdes for the stream's keys and values.
    pub fn with(key_serde: impl Serde<K>, value_serde: impl Serde<V>) -> Self {
        Joined {
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            name: None,
            grace: None,
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

    /// Names the join's repartition topic `<name>-repartition` (Kafka Streams'
    /// `Joined#as`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Delays each stream record until stream time has passed it by `grace`, then
    /// joins it with the table's row *as of its own timestamp* (KIP-923, Kafka
    /// Streams' `Joined#withGracePeriod`), so a table update that arrives a little
    /// after the record it should have enriched is still seen. The table must be a
    /// versioned source table (`Materialized::as_versioned`); unlike Kafka Streams,
    /// weir refuses a filtered or mapped table of one (it keeps no history for a
    /// derived table): join the source table and filter the joined stream. The
    /// waiting records live in a store
    /// (`<join>-buffer`) under the memory limit. Records older than `stream time −
    /// grace` on arrival are joined at once. Zero means no buffering.
    pub fn with_grace_period(mut self, grace: std::time::Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// The stream's repartitioning, as this `Joined` describes it.
    fn repartitioned(&self) -> Repartitioned<K, V>
    where
        K: 'static,
        V: 'static,
    {
        let r = Repartitioned::with(
            ArcSerde(self.key_serde.clone()),
            ArcSerde(self.value_serde.clone()),
        );
        match &self.name {
            Some(n) => r.with_name(n.clone()),
            None => r,
        }
    }
}

impl<K, V> std::fmt::Debug for Joined<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("name", &self.name)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// A stream-table join's function of the record's value and the row (absent for a
/// left join's miss); `None` for no result.
type RowJoiner<V, VT, VR> = Arc<dyn Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Joins each record with `table`'s row for its key (Kafka Streams'
    /// `KStream#join(KTable)`): `joiner(value, row)` goes downstream with the record's
    /// timestamp; a record whose key has no row is dropped. Only stream records
    /// trigger output; table updates never do. The stream and the table must be
    /// co-partitioned (the query refuses to start otherwise); a stream whose key was
    /// changed upstream (`map`, `select_key`, ...) is repartitioned first, through an
    /// internal topic with as many partitions as the table's topic, as Kafka Streams
    /// does.
    ///
    /// ```
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// let customers = builder.table::<String, String>("customers"); // id -> name
    /// builder
    ///     .stream::<String, i64>("orders") // customer id -> amount
    ///     .join(&customers, |amount, name| format!("{name}: {amount}"))
    ///     .to("enriched");
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// driver.create_input_topic::<String, String>("customers")?.pipe_input_at("c1", "Ann", 1)?;
    /// let orders = driver.create_input_topic::<String, i64>("orders")?;
    /// orders.pipe_input_at("c1", 250, 5)?;
    /// orders.pipe_input_at("c2", 10, 6)?; // no such customer: dropped by the inner join
    /// let out = driver.create_output_topic::<String, String>("enriched")?;
    /// assert_eq!(out.read_key_values_to_list()?, vec![("c1".to_string(), "Ann: 250".to_string())]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn join<VT: Data, VR: Data, F>(&self, table: &KTable<K, VT>, joiner: F) -> KStream<K, VR>
    where
        K: DefaultSerde,
        V: DefaultSerde,
        F: Fn(&V, &VT) -> VR + Send + Sync + 'static,
    {
        self.join_with(table, joiner, Joined::defaults())
    }

    /// Like [`KStream::join`], with the serdes (and name) to repartition the stream by,
    /// if its key changed upstream (Kafka Streams' `join(KTable, ValueJoiner, Joined)`).
    pub fn join_with<VT: Data, VR: Data, F>(
        &self,
        table: &KTable<K, VT>,
        joiner: F,
        joined: Joined<K, V>,
    ) -> KStream<K, VR>
    where
        F: Fn(&V, &VT) -> VR + Send + Sync + 'static,
    {
        let joiner = Arc::new(move |v: &V, t: Option<&VT>| t.map(|t| joiner(v, t)));
        self.stream_table_join(table, "KSTREAM-JOIN", joiner, joined)
    }

    /// Left join with `table` (Kafka Streams' `KStream#leftJoin(KTable)`): every record
    /// goes downstream as `joiner(value, row)`, with `None` when its key has no row.
    pub fn left_join<VT: Data, VR: Data, F>(
        &self,
        table: &KTable<K, VT>,
        joiner: F,
    ) -> KStream<K, VR>
    where
        K: DefaultSerde,
        V: DefaultSerde,
        F: Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    {
        self.left_join_with(table, joiner, Joined::defaults())
    }

    /// Like [`KStream::left_join`], with the serdes (and name) to repartition the
    /// stream by, if its key changed upstream.
    pub fn left_join_with<VT: Data, VR: Data, F>(
        &self,
        table: &KTable<K, VT>,
        joiner: F,
        joined: Joined<K, V>,
    ) -> KStream<K, VR>
    where
        F: Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    {
        let joiner = Arc::new(move |v: &V, t: Option<&VT>| Some(joiner(v, t)));
        self.stream_table_join(table, "KSTREAM-LEFTJOIN", joiner, joined)
    }

    fn stream_table_join<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        prefix: &str,
        joiner: RowJoiner<V, VT, VR>,
        joined: Joined<K, V>,
    ) -> KStream<K, VR> {
        // A stream whose key changed upstream goes through a repartition topic first,
        // sized like the table's topic, so each key meets its row.
        let stream = if self.repartition_required {
            self.repartition_with(joined.repartitioned())
        } else {
            self.clone()
        };
        if let Some(grace) = joined.grace.filter(|g| !g.is_zero())
            && table.meta.store.is_none()
        {
            // Kafka Streams reads a filtered or mapped table of a versioned table
            // through its parent's versioned store; weir materializes such a table
            // into a plain store of its own, which has no history to join as of.
            stream.builder.borrow_mut().check::<()>(Err(Error::Topology(format!(
                "the join at '{}' has a grace period of {grace:?}, which needs the table's own versioned store (KIP-923); table '{}' is filtered or mapped, and weir keeps no history for a derived table (Kafka Streams reads its versioned parent): join the versioned source table with the grace period and filter or map the joined stream",
                stream.node_name(),
                table.node_name()
            ))));
            return stream.add(prefix, || NoOp);
        }
        let (_, store) = table.with_store();
        let Some(store) = store else {
            return stream.add(prefix, || NoOp);
        };
        if let Some(grace) = joined.grace.filter(|g| !g.is_zero()) {
            return stream.grace_join(prefix, &store, grace, joiner, joined);
        }
        let name = stream.builder.borrow_mut().next_name(prefix);
        let st = store.clone();
        let out = stream.add_named(name.clone(), move || StreamTableJoin {
            table: st.clone(),
            joiner: joiner.clone(),
        });
        let mut inner = stream.builder.borrow_mut();
        let r = inner.topology.connect_store(&name, &store.name).map(|_| ());
        inner.check(r);
        drop(inner);
        out
    }

    /// The stream-table join with a grace period (`join_grace.rs`).
    fn grace_join<VT: Data, VR: Data>(
        &self,
        prefix: &str,
        store: &TableStore,
        grace: std::time::Duration,
        joiner: RowJoiner<V, VT, VR>,
        joined: Joined<K, V>,
    ) -> KStream<K, VR> {
        if !store.versioned {
            self.builder.borrow_mut().check::<()>(Err(Error::Topology(format!(
                "the join at '{}' has a grace period, which needs a versioned table (KIP-923): materialize table store '{}' with Materialized::as_versioned",
                self.node_name(),
                store.name
            ))));
            return self.add(prefix, || NoOp);
        }
        if store.history.is_some_and(|h| h < grace) {
            self.builder.borrow_mut().check::<()>(Err(Error::Topology(format!(
                "the join at '{}' has a grace period of {grace:?}, longer than the history retention of table store '{}' ({:?}): history retention must be at least the grace period, or records would be joined as of a time the table no longer remembers",
                self.node_name(),
                store.name,
                store.history.unwrap_or_default()
            ))));
            return self.add(prefix, || NoOp);
        }
        let name = self.builder.borrow_mut().next_name(prefix);
        let buffer = format!("{name}-buffer");
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let (table, buf) = (store.clone(), buffer.clone());
        let out = self.add_named(name.clone(), move || GraceJoin {
            table: table.clone(),
            buffer: buf.clone(),
            grace_ms,
            joiner: joiner.clone(),
            key_serde: joined.key_serde.clone(),
            value_serde: joined.value_serde.clone(),
            stream_time: i64::MIN,
            seq: 0,
            min_buffered: i64::MAX,
        });
        let mut inner = self.builder.borrow_mut();
        let r = inner.topology.connect_store(&name, &store.name).map(|_| ());
        inner.check(r);
        inner.add_store(
            StoreSpec::<Bytes, Bytes>::new(buffer, BytesSerde, BytesSerde).without_caching(),
            &name,
        );
        drop(inner);
        out
    }
}

/// Joins stream records with a table's rows (Kafka Streams' `KStreamKTableJoin`).
struct StreamTableJoin<V, VT, VR> {
    table: TableStore,
    joiner: RowJoiner<V, VT, VR>,
}

impl<K: Data, V: Data, VT: Data, VR: Data> Processor<K, V, K, VR> for StreamTableJoin<V, VT, VR> {
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        let row = read_row::<K, VR, K, VT>(ctx, &self.table, &r.key)?;
        let Some(joined) = (self.joiner)(&r.value, row.as_ref().map(|(v, _)| v)) else {
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
