//! Regrouping a table (Kafka Streams' `KTable#groupBy` and `KGroupedTable`): each
//! update of a row leaves its old group and joins its new one, through a repartition
//! topic carrying (new, old) pairs, and the aggregation subtracts and adds.
//!
//! Why (new, old) pairs: a table row that changes must be taken out of the aggregate
//! it was counted in before it is counted again, and that aggregate may live in
//! another partition. The selector runs on the row's new and old values; if both land
//! in the same group the pair travels as one change (the aggregation subtracts, then
//! adds, and emits once), otherwise as a retraction to the old group and an addition
//! to the new one (Kafka Streams' `KTableRepartitionMap`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::internals::InternalForwardContext;
use weir_runtime::serde::{Bytes, DefaultSerde, I64Serde, Serde};
use weir_runtime::{Change, Data, Error, Processor, ProcessorContext, Record, Result};

use crate::grouped::{Grouped, Materialized, materialize};
use crate::stream::{ArcSerde, KStream, Repartitioned};
use crate::table::KTable;

type Adder<K, V, VA> = Arc<dyn Fn(&K, V, VA) -> VA + Send + Sync>;
/// Adds a value to a group's aggregate, `None` before the group's first value.
type AddTo<K, V, VA> = Arc<dyn Fn(&K, V, Option<VA>) -> VA + Send + Sync>;

/// A table regrouped by [`KTable::group_by`], ready to aggregate: Kafka Streams'
/// `KGroupedTable`.
pub struct KGroupedTable<K, V> {
    /// (new, old) values per new key, after the repartition topic.
    changes: KStream<K, Change<V>>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

impl<K: Data, V: Data> KTable<K, V> {
    /// Regroups the table by the key (and value) `selector` picks for each row: Kafka
    /// Streams' `groupBy`. Every update subtracts the row's old value from its old
    /// group and adds its new value to its new group (one combined update when the
    /// group is unchanged); a delete only subtracts; a selected key or value that
    /// serializes to null (`None` of an `Option`, `()`) drops the row, as Kafka
    /// Streams drops null keys and values. Always repartitions, through an
    /// internal topic `<application>-<query>-<name>-repartition`.
    ///
    /// # Examples
    ///
    /// Users per region, from a table of user → region that changes:
    ///
    /// ```
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .table::<String, String>("user-regions")
    ///     .group_by(|user, region| (region.clone(), user.clone()))
    ///     .count()
    ///     .to("users-per-region");
    ///
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// let input = driver.create_input_topic::<String, String>("user-regions")?;
    /// let output = driver.create_output_topic::<String, Option<i64>>("users-per-region")?;
    /// input.pipe_input_at("alice", "eu", 1)?;
    /// input.pipe_input_at("bob", "eu", 2)?;
    /// input.pipe_input_at("alice", "us", 3)?; // alice moves: eu loses one, us gains one
    /// let last = output.read_key_values_to_map()?;
    /// assert_eq!(last["eu"], Some(1));
    /// assert_eq!(last["us"], Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_by<K2, V2, F>(&self, selector: F) -> KGroupedTable<K2, V2>
    where
        K2: Data + DefaultSerde,
        V2: Data + DefaultSerde,
        F: Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
    {
        self.group_by_with(selector, Grouped::defaults())
    }

    /// Like [`KTable::group_by`] with explicit serdes (and a name for the repartition
    /// topic).
    pub fn group_by_with<K2, V2, F>(
        &self,
        selector: F,
        grouped: Grouped<K2, V2>,
    ) -> KGroupedTable<K2, V2>
    where
        K2: Data,
        V2: Data,
        F: Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
    {
        // The old value of every update is needed to retract it.
        self.send_old.store(true, Ordering::Release);
        let selector = Arc::new(selector);
        let key_serde = grouped.key_serde.clone();
        let (ks, vs) = (key_serde.clone(), grouped.value_serde.clone());
        let selected: KStream<K2, Change<V2>> =
            self.changes.add("KTABLE-SELECT", move || RepartitionMap {
                selector: selector.clone(),
                key_serde: ks.clone(),
                value_serde: vs.clone(),
            });
        let mut r = Repartitioned::with(
            ArcSerde(key_serde.clone()),
            ChangeSerde(grouped.value_serde.clone()),
        );
        if let Some(n) = &grouped.name {
            r = r.with_name(n.clone());
        }
        KGroupedTable {
            changes: selected.repartition_with(r),
            key_serde,
            value_serde: grouped.value_serde,
        }
    }
}

impl<K: Data, V: Data> KGroupedTable<K, V> {
    /// Counts the rows per group.
    pub fn count(&self) -> KTable<K, i64> {
        self.count_with(Materialized::default())
    }

    /// Like [`KGroupedTable::count`], stored as `materialized` says.
    pub fn count_with(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        self.aggregate_node(
            materialized,
            Some(Arc::new(I64Serde)),
            Arc::new(|| 0i64),
            Arc::new(|_: &K, _: V, n: i64| n + 1),
            Arc::new(|_: &K, _: V, n: i64| n - 1),
        )
    }

    /// Combines the rows of each group with `adder(aggregate, value)`, taking a row's
    /// old value back out with `subtractor(aggregate, old)`: Kafka Streams'
    /// `reduce(adder, subtractor)`. A group's first row is its aggregate.
    pub fn reduce<A, S>(&self, adder: A, subtractor: S) -> KTable<K, V>
    where
        A: Fn(V, V) -> V + Send + Sync + 'static,
        S: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.reduce_with(adder, subtractor, Materialized::default())
    }

    /// Like [`KGroupedTable::reduce`], stored as `materialized` says.
    pub fn reduce_with<A, S>(
        &self,
        adder: A,
        subtractor: S,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V>
    where
        A: Fn(V, V) -> V + Send + Sync + 'static,
        S: Fn(V, V) -> V + Send + Sync + 'static,
    {
        let default_value_serde = Some(self.value_serde.clone());
        self.fold(
            "KTABLE-REDUCE",
            "KTABLE-REDUCE-STATE-STORE",
            materialized,
            default_value_serde,
            Arc::new(move |_: &K, v: V, agg: Option<V>| match agg {
                Some(a) => adder(a, v),
                None => v,
            }),
            Arc::new(move |_: &K, v: V, agg: V| subtractor(agg, v)),
        )
    }

    /// Folds the rows of each group into an aggregate starting from `init()` with
    /// `adder(key, value, aggregate)`, taking a row's old value back out with
    /// `subtractor(key, old, aggregate)`: Kafka Streams' `aggregate(initializer, adder,
    /// subtractor)`.
    pub fn aggregate<VA, I, A, S>(&self, init: I, adder: A, subtractor: S) -> KTable<K, VA>
    where
        VA: Data + DefaultSerde,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        S: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    {
        self.aggregate_with(
            init,
            adder,
            subtractor,
            Materialized::default().with_value_serde(VA::default_serde()),
        )
    }

    /// Like [`KGroupedTable::aggregate`], stored as `materialized` says (it must give a
    /// value serde unless `VA` has a default one).
    pub fn aggregate_with<VA, I, A, S>(
        &self,
        init: I,
        adder: A,
        subtractor: S,
        materialized: Materialized<K, VA>,
    ) -> KTable<K, VA>
    where
        VA: Data,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        S: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    {
        self.aggregate_node(
            materialized,
            None,
            Arc::new(init),
            Arc::new(adder),
            Arc::new(subtractor),
        )
    }

    fn aggregate_node<VA: Data>(
        &self,
        materialized: Materialized<K, VA>,
        default_value_serde: Option<Arc<dyn Serde<VA>>>,
        init: Arc<dyn Fn() -> VA + Send + Sync>,
        adder: Adder<K, V, VA>,
        subtractor: Adder<K, V, VA>,
    ) -> KTable<K, VA> {
        self.fold(
            "KTABLE-AGGREGATE",
            "KTABLE-AGGREGATE-STATE-STORE",
            materialized,
            default_value_serde,
            Arc::new(move |k: &K, v: V, agg: Option<VA>| {
                adder(k, v, agg.unwrap_or_else(|| init()))
            }),
            subtractor,
        )
    }

    /// The node folding the regrouped changes into a table, and its store.
    fn fold<VA: Data>(
        &self,
        prefix: &str,
        store_prefix: &str,
        materialized: Materialized<K, VA>,
        default_value_serde: Option<Arc<dyn Serde<VA>>>,
        add: AddTo<K, V, VA>,
        subtract: Adder<K, V, VA>,
    ) -> KTable<K, VA> {
        materialize(
            &self.changes,
            prefix,
            store_prefix,
            materialized,
            self.key_serde.clone(),
            default_value_serde,
            move |store, send_old| {
                move || TableFold {
                    store: store.clone(),
                    send_old: send_old.clone(),
                    add: add.clone(),
                    subtract: subtract.clone(),
                }
            },
        )
    }
}

impl<K, V> std::fmt::Debug for KGroupedTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KGroupedTable")
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

/// Maps each (new, old) of a table to its groups (Kafka Streams' `KTableRepartitionMap`).
struct RepartitionMap<F, K2, V2> {
    selector: Arc<F>,
    key_serde: Arc<dyn Serde<K2>>,
    value_serde: Arc<dyn Serde<V2>>,
}

impl<F, K2: 'static, V2: 'static> RepartitionMap<F, K2, V2> {
    /// A selected key or value that serializes to null drops the pair (as Kafka
    /// Streams skips null keys and values); the others come with the key's bytes (to
    /// tell whether old and new land in the same group).
    fn keep(&self, pair: Option<(K2, V2)>) -> Result<Option<(Vec<u8>, K2, V2)>> {
        let Some((k, v)) = pair else { return Ok(None) };
        let mut key = Vec::new();
        let mut value = Vec::new();
        let keep = self.key_serde.serialize_into(&k, &mut key)?
            && self.value_serde.serialize_into(&v, &mut value)?;
        Ok(keep.then_some((key, k, v)))
    }
}

impl<K, V, K2, V2, F> Processor<K, Change<V>, K2, Change<V2>> for RepartitionMap<F, K2, V2>
where
    K: Data,
    V: Data,
    K2: Data,
    V2: Data,
    F: Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
{
    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K2, Change<V2>>,
    ) -> Result<()> {
        let Record {
            key,
            value,
            timestamp,
            headers,
        } = r;
        let new = self.keep(value.new.as_ref().map(|v| (self.selector)(&key, v)))?;
        let old = self.keep(value.old.as_ref().map(|v| (self.selector)(&key, v)))?;
        let forward = |ctx: &mut ProcessorContext<'_, K2, Change<V2>>, k, change| {
            ctx.forward(Record::new(k, change, timestamp).with_headers(headers.clone()))
        };
        match (new, old) {
            (Some((nb, nk, nv)), Some((ob, _, ov))) if nb == ob => forward(
                ctx,
                nk,
                Change {
                    new: Some(nv),
                    old: Some(ov),
                },
            ),
            (new, old) => {
                // The retraction first, as Kafka Streams sends it.
                if let Some((_, ok, ov)) = old {
                    forward(
                        ctx,
                        ok,
                        Change {
                            new: None,
                            old: Some(ov),
                        },
                    )?;
                }
                if let Some((_, nk, nv)) = new {
                    forward(
                        ctx,
                        nk,
                        Change {
                            new: Some(nv),
                            old: None,
                        },
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Folds a regrouped table's changes into its groups' aggregates (Kafka Streams'
/// `KTableAggregate` and `KTableReduce`): the old value is subtracted, then the new one
/// added; the result carries the largest timestamp involved, and an aggregate that
/// ends with nothing in it is deleted.
struct TableFold<K, V, VA> {
    store: Arc<str>,
    send_old: Arc<AtomicBool>,
    /// Adds a value to the aggregate (`None` before the group's first value).
    add: AddTo<K, V, VA>,
    subtract: Adder<K, V, VA>,
}

impl<K: Data, V: Data, VA: Data> Processor<K, Change<V>, K, Change<VA>> for TableFold<K, V, VA> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<()> {
        ctx.forward_store_changes::<K, VA>(&self.store, self.send_old.load(Ordering::Acquire))
    }

    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<VA>>,
    ) -> Result<()> {
        let mut store = ctx.store::<K, VA>(&self.store)?;
        let old = store.get_with_timestamp(&r.key)?;
        let old_ts = old.as_ref().map(|(_, t)| *t);
        let mut ts = r.timestamp;
        let Change { new, old: retract } = r.value;
        let intermediate = match (retract, old) {
            (Some(v), Some((agg, t))) => {
                ts = ts.max(t);
                Some((self.subtract)(&r.key, v, agg))
            }
            (_, old) => old.map(|(agg, _)| agg),
        };
        let result = match new {
            Some(v) => {
                if let Some(t) = old_ts {
                    ts = ts.max(t);
                }
                Some((self.add)(&r.key, v, intermediate))
            }
            None => intermediate,
        };
        match result {
            Some(agg) => store.put_with_timestamp(&r.key, &agg, ts),
            None => store.delete(&r.key),
        }
    }
}

/// Serializes a [`Change`] for a repartition topic: a flags byte (1 = new present, 2 =
/// old present), the new value's length (4 bytes, big-endian) and bytes, then the old
/// value's bytes.
pub(crate) struct ChangeSerde<V>(pub(crate) Arc<dyn Serde<V>>);

impl<V: 'static> Serde<Change<V>> for ChangeSerde<V> {
    fn serialize(&self, value: &Change<V>) -> Result<Option<Bytes>> {
        let mut out = Vec::new();
        self.serialize_into(value, &mut out)?;
        Ok(Some(out.into()))
    }

    fn serialize_into(&self, value: &Change<V>, out: &mut Vec<u8>) -> Result<bool> {
        let flags = out.len();
        out.push(0);
        let len = out.len();
        out.extend_from_slice(&[0; 4]);
        let body = out.len();
        if let Some(v) = &value.new
            && self.0.serialize_into(v, out)?
        {
            out[flags] |= 1;
        }
        let n = u32::try_from(out.len() - body)
            .map_err(|_| Error::Serde("a changed value over 4 GiB".into()))?;
        out[len..body].copy_from_slice(&n.to_be_bytes());
        if let Some(v) = &value.old {
            let mark = out.len();
            if self.0.serialize_into(v, out)? {
                out[flags] |= 2;
            } else {
                out.truncate(mark);
            }
        }
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Change<V>> {
        let bytes = data.unwrap_or_default();
        let (Some(&flags), Some(len)) = (bytes.first(), bytes.get(1..5)) else {
            return Err(Error::Serde(format!(
                "a change needs at least 5 bytes, got {}",
                bytes.len()
            )));
        };
        let n = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(new_bytes) = bytes.get(5..5 + n) else {
            return Err(Error::Serde(format!(
                "a change says its new value has {n} bytes; only {} follow",
                bytes.len() - 5
            )));
        };
        let old_bytes = &bytes[5 + n..];
        let new = if flags & 1 != 0 {
            Some(self.0.deserialize(Some(new_bytes))?)
        } else {
            None
        };
        let old = if flags & 2 != 0 {
            Some(self.0.deserialize(Some(old_bytes))?)
        } else {
            None
        };
        Ok(Change { new, old })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::serde::StringSerde;

    #[test]
    fn change_serde_round_trips_every_shape_and_refuses_short_input() {
        let serde = ChangeSerde::<String>(Arc::new(StringSerde));
        for change in [
            Change {
                new: Some("new".to_string()),
                old: Some("old".to_string()),
            },
            Change {
                new: None,
                old: Some(String::new()),
            },
            Change {
                new: Some(String::new()),
                old: None,
            },
            Change {
                new: None,
                old: None,
            },
        ] {
            let bytes = serde.serialize(&change).unwrap().unwrap();
            let back = serde.deserialize(Some(&bytes)).unwrap();
            assert_eq!((back.new, back.old), (change.new, change.old));
        }
        assert!(serde.deserialize(Some(&[1, 0, 0])).is_err());
        assert!(serde.deserialize(Some(&[1, 0, 0, 0, 9, b'x'])).is_err());
    }

    #[test]
    fn corrupt_regrouping_changes_are_errors() {
        let serde = ChangeSerde::<String>(Arc::new(StringSerde));
        let valid = serde
            .serialize(&Change {
                new: Some("new".to_string()),
                old: Some("old".to_string()),
            })
            .unwrap()
            .unwrap();
        crate::corruption::each(&valid, |b| {
            let _ = serde.deserialize(Some(b));
        });
    }
}
