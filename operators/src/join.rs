//! Two tables joined on their key (Kafka Streams' `KTableKTableJoin` and its left and
//! outer forms), and what every join with a table shares: reading a table's row, and
//! giving a table without a store one.
//!
//! Why a join reads the other side's store rather than keeping its own copy: the
//! table's rows are already materialized (and bounded with every other store by the
//! runtime's limit), so a join adds no state. The join's processors are connected to
//! the store they read, which puts both sides in one sub-topology: their input topics
//! must be co-partitioned, and the query refuses to start otherwise, naming the
//! topics and their partition counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::{Change, Data, Error, Processor, ProcessorContext, Record, Result};

use crate::grouped::{Materialized, materialize};
use crate::stream::KStream;
use crate::table::{KTable, TableMeta, TableStore};

/// A table-table join's function of the left and right values (either may be absent,
/// as the join kind allows); `None` for no result.
type PairJoiner<V1, V2, VR> = Arc<dyn Fn(Option<&V1>, Option<&V2>) -> Option<VR> + Send + Sync>;

/// Reads `key`'s row of a table's store, with its timestamp.
pub(crate) fn read_row<KO, VO, K: Data, V: Data>(
    ctx: &mut ProcessorContext<'_, KO, VO>,
    store: &TableStore,
    key: &K,
) -> Result<Option<(V, i64)>> {
    if store.versioned {
        Ok(ctx
            .versioned_store::<K, V>(&store.name)?
            .get(key)?
            .map(|v| (v.value, v.timestamp)))
    } else {
        ctx.store::<K, V>(&store.name)?.get_with_timestamp(key)
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// This table with a store of its own rows: itself if it has one, else the table
    /// materialized into a new store (a filtered or mapped table has none).
    pub(crate) fn with_store(&self) -> (KTable<K, V>, Option<TableStore>) {
        if let Some(store) = &self.meta.store {
            return (self.clone_table(), Some(store.clone()));
        }
        let (Some(key_serde), Some(value_serde)) =
            (self.meta.key_serde.clone(), self.meta.value_serde.clone())
        else {
            self.changes.builder.borrow_mut().check::<()>(Err(Error::Topology(format!(
                "table '{}' has no store and no known value serde to give it one: materialize it first (to_stream().to_table_with(Materialized::as_(..).with_value_serde(..)))",
                self.node_name()
            ))));
            return (self.clone_table(), None);
        };
        let table = materialize(
            &self.changes,
            "KTABLE-MATERIALIZE",
            "KTABLE-JOIN-STATE-STORE",
            Materialized::default(),
            key_serde,
            Some(value_serde),
            |store, send_old| {
                move || Materializer {
                    store: store.clone(),
                    send_old: send_old.clone(),
                }
            },
        );
        let store = table.meta.store.clone();
        (table, store)
    }

    fn clone_table(&self) -> KTable<K, V> {
        KTable::new(self.changes.clone(), self.send_old.clone()).with_meta(self.meta.clone())
    }

    /// Joins this table with `other` on the key (Kafka Streams' `KTable#join`): a row
    /// for each key present in both, `joiner(left, right)`, updated when either side
    /// changes and deleted when either side's row goes. Each update carries the larger
    /// of the two rows' timestamps. Both tables' topics must be co-partitioned.
    ///
    /// ```
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// let names = builder.table::<String, String>("names");
    /// let cities = builder.table::<String, String>("cities");
    /// names
    ///     .join(&cities, |name, city| format!("{name} in {city}"))
    ///     .to("people");
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// driver.create_input_topic::<String, String>("names")?.pipe_input_at("u1", "Ann", 1)?;
    /// driver.create_input_topic::<String, String>("cities")?.pipe_input_at("u1", "Oslo", 2)?;
    /// let people = driver.create_output_topic::<String, Option<String>>("people")?;
    /// let r = people.read_record()?;
    /// assert_eq!((r.key.as_str(), r.value.as_deref(), r.timestamp), ("u1", Some("Ann in Oslo"), 2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn join<V2: Data, VR: Data, F>(&self, other: &KTable<K, V2>, joiner: F) -> KTable<K, VR>
    where
        F: Fn(&V, &V2) -> VR + Send + Sync + 'static,
    {
        let joiner: PairJoiner<V, V2, VR> = Arc::new(move |l, r| match (l, r) {
            (Some(l), Some(r)) => Some(joiner(l, r)),
            _ => None,
        });
        self.table_join(other, "KTABLE-JOIN", JoinKind::Inner, joiner)
    }

    /// Left join with `other` (Kafka Streams' `KTable#leftJoin`): a row for every key of
    /// this table, `joiner(left, right)` with `None` while `other` has no row for it.
    pub fn left_join<V2: Data, VR: Data, F>(
        &self,
        other: &KTable<K, V2>,
        joiner: F,
    ) -> KTable<K, VR>
    where
        F: Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
    {
        let joiner: PairJoiner<V, V2, VR> = Arc::new(move |l, r| l.map(|l| joiner(l, r)));
        self.table_join(other, "KTABLE-LEFTJOIN", JoinKind::Left, joiner)
    }

    /// Outer join with `other` (Kafka Streams' `KTable#outerJoin`): a row for every key
    /// of either table, `joiner(left, right)` with `None` for the side that has no row.
    pub fn outer_join<V2: Data, VR: Data, F>(
        &self,
        other: &KTable<K, V2>,
        joiner: F,
    ) -> KTable<K, VR>
    where
        F: Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
    {
        let joiner: PairJoiner<V, V2, VR> =
            Arc::new(move |l, r| (l.is_some() || r.is_some()).then(|| joiner(l, r)));
        self.table_join(other, "KTABLE-OUTERJOIN", JoinKind::Outer, joiner)
    }

    fn table_join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        prefix: &str,
        kind: JoinKind,
        joiner: PairJoiner<V, V2, VR>,
    ) -> KTable<K, VR> {
        let (left, left_store) = self.with_store();
        let (right, right_store) = other.with_store();
        // Each side's update is joined with the other side's row as it was before and
        // after: the join needs both sides' old values.
        left.send_old.store(true, Ordering::Release);
        right.send_old.store(true, Ordering::Release);
        let builder = left.changes.builder.clone();
        let (this_name, other_name, merge_name) = {
            let mut inner = builder.borrow_mut();
            let this = inner.next_name(&format!("{prefix}-THIS"));
            let other = inner.next_name(&format!("{prefix}-OTHER"));
            let merge = inner.next_name("KTABLE-MERGE");
            (this, other, merge)
        };
        let (Some(left_store), Some(right_store)) = (left_store, right_store) else {
            // with_store recorded why.
            return KTable::new(
                left.changes.add("KTABLE-JOIN-FAILED", || NoOp),
                Arc::default(),
            );
        };
        let j = joiner.clone();
        let rs = right_store.clone();
        let this: KStream<K, Change<VR>> =
            left.changes.add_named(this_name.clone(), move || LeftSide {
                right: rs.clone(),
                kind,
                joiner: j.clone(),
            });
        let ls = left_store.clone();
        let other_side: KStream<K, Change<VR>> =
            right
                .changes
                .add_named(other_name.clone(), move || RightSide {
                    left: ls.clone(),
                    kind,
                    joiner: joiner.clone(),
                });
        {
            let mut inner = builder.borrow_mut();
            let r = inner
                .topology
                .connect_store(&this_name, &right_store.name)
                .and_then(|t| t.connect_store(&other_name, &left_store.name))
                .map(|_| ());
            inner.check(r);
        }
        let merged = this.merge_named(&other_side, merge_name);
        KTable::new(merged, Arc::new(AtomicBool::new(false))).with_meta(TableMeta::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Inner,
    Left,
    Outer,
}

/// The left side of a table-table join: a left update joined with the right row
/// (Kafka Streams' `KTableKTable{Inner,Left,Outer}Join` processors).
struct LeftSide<V1, V2, VR> {
    right: TableStore,
    kind: JoinKind,
    joiner: PairJoiner<V1, V2, VR>,
}

impl<K: Data, V1: Data, V2: Data, VR: Data> Processor<K, Change<V1>, K, Change<VR>>
    for LeftSide<V1, V2, VR>
{
    fn process(
        &mut self,
        r: Record<K, Change<V1>>,
        ctx: &mut ProcessorContext<'_, K, Change<VR>>,
    ) -> Result<()> {
        let right = read_row::<K, Change<VR>, K, V2>(ctx, &self.right, &r.key)?;
        // Without a right row an inner join has no row; nothing to retract either.
        let change = &r.value;
        if right.is_none()
            && (self.kind == JoinKind::Inner || (change.new.is_none() && change.old.is_none()))
        {
            return Ok(());
        }
        let ts = right
            .as_ref()
            .map_or(r.timestamp, |(_, t)| r.timestamp.max(*t));
        let rv = right.as_ref().map(|(v, _)| v);
        let joined = Change {
            new: (self.joiner)(change.new.as_ref(), rv),
            old: (self.joiner)(change.old.as_ref(), rv),
        };
        ctx.forward(Record::new(r.key, joined, ts).with_headers(r.headers))
    }
}

/// The right side of a table-table join: a right update joined with the left row
/// (Kafka Streams' `KTableKTableRightJoin` and the others' "other" processors).
struct RightSide<V1, V2, VR> {
    left: TableStore,
    kind: JoinKind,
    joiner: PairJoiner<V1, V2, VR>,
}

impl<K: Data, V1: Data, V2: Data, VR: Data> Processor<K, Change<V2>, K, Change<VR>>
    for RightSide<V1, V2, VR>
{
    fn process(
        &mut self,
        r: Record<K, Change<V2>>,
        ctx: &mut ProcessorContext<'_, K, Change<VR>>,
    ) -> Result<()> {
        let left = read_row::<K, Change<VR>, K, V1>(ctx, &self.left, &r.key)?;
        // Without a left row only an outer join has a row (nothing to retract without
        // a right value either).
        let change = &r.value;
        if left.is_none()
            && (self.kind != JoinKind::Outer || (change.new.is_none() && change.old.is_none()))
        {
            return Ok(());
        }
        let ts = left
            .as_ref()
            .map_or(r.timestamp, |(_, t)| r.timestamp.max(*t));
        let lv = left.as_ref().map(|(v, _)| v);
        let joined = Change {
            new: (self.joiner)(lv, change.new.as_ref()),
            old: (self.joiner)(lv, change.old.as_ref()),
        };
        ctx.forward(Record::new(r.key, joined, ts).with_headers(r.headers))
    }
}

/// Forwards nothing: stands in for a join that could not be built (the builder holds
/// the error `build` returns).
pub(crate) struct NoOp;

impl<KI: Data, VI: Data, KO: Data, VO: Data> Processor<KI, VI, KO, VO> for NoOp {
    fn process(
        &mut self,
        _r: Record<KI, VI>,
        _ctx: &mut ProcessorContext<'_, KO, VO>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Writes a table's changes into a store of its own, whose changes then go downstream
/// (a filtered or mapped table materialized for a join).
struct Materializer {
    store: Arc<str>,
    send_old: Arc<AtomicBool>,
}

impl<K: Data, V: Data> Processor<K, Change<V>, K, Change<V>> for Materializer {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        use weir_runtime::internals::InternalForwardContext;
        ctx.forward_store_changes::<K, V>(&self.store, self.send_old.load(Ordering::Acquire))
    }

    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        let mut store = ctx.store::<K, V>(&self.store)?;
        match &r.value.new {
            Some(v) => store.put_with_timestamp(&r.key, v, r.timestamp),
            None => store.delete(&r.key),
        }
    }
}
