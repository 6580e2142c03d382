//! The processors the DSL compiles into. Each holds its user function in an `Arc` so
//! that one closure serves every task of the query.

use std::sync::Arc;

use weir_runtime::{Data, Processor, ProcessorContext, Record, Result};

pub(crate) struct Filter<F> {
    pub(crate) f: Arc<F>,
    pub(crate) keep: bool,
}

impl<K: Data, V: Data, F> Processor<K, V, K, V> for Filter<F>
where
    F: Fn(&K, &V) -> bool + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        if (self.f)(&r.key, &r.value) == self.keep {
            ctx.forward(r)
        } else {
            Ok(())
        }
    }
}

pub(crate) struct Map<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, K2: Data, V2: Data, F> Processor<K, V, K2, V2> for Map<F>
where
    F: Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K2, V2>) -> Result<()> {
        let (k, v) = (self.0)(r.key, r.value);
        ctx.forward(Record {
            key: k,
            value: v,
            timestamp: r.timestamp,
            headers: r.headers,
        })
    }
}

pub(crate) struct MapValues<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, V2: Data, F> Processor<K, V, K, V2> for MapValues<F>
where
    F: Fn(V) -> V2 + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V2>) -> Result<()> {
        let v = (self.0)(r.value);
        ctx.forward(Record {
            key: r.key,
            value: v,
            timestamp: r.timestamp,
            headers: r.headers,
        })
    }
}

pub(crate) struct MapValuesWithKey<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, V2: Data, F> Processor<K, V, K, V2> for MapValuesWithKey<F>
where
    F: Fn(&K, V) -> V2 + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V2>) -> Result<()> {
        let v = (self.0)(&r.key, r.value);
        ctx.forward(Record {
            key: r.key,
            value: v,
            timestamp: r.timestamp,
            headers: r.headers,
        })
    }
}

pub(crate) struct FlatMap<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, K2: Data, V2: Data, I, F> Processor<K, V, K2, V2> for FlatMap<F>
where
    I: IntoIterator<Item = (K2, V2)>,
    F: Fn(K, V) -> I + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K2, V2>) -> Result<()> {
        for (k, v) in (self.0)(r.key, r.value) {
            ctx.forward(Record {
                key: k,
                value: v,
                timestamp: r.timestamp,
                headers: r.headers.clone(),
            })?;
        }
        Ok(())
    }
}

pub(crate) struct FlatMapValues<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, V2: Data, I, F> Processor<K, V, K, V2> for FlatMapValues<F>
where
    I: IntoIterator<Item = V2>,
    F: Fn(V) -> I + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V2>) -> Result<()> {
        for v in (self.0)(r.value) {
            ctx.forward(Record {
                key: r.key.clone(),
                value: v,
                timestamp: r.timestamp,
                headers: r.headers.clone(),
            })?;
        }
        Ok(())
    }
}

pub(crate) struct SelectKey<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, K2: Data, F> Processor<K, V, K2, V> for SelectKey<F>
where
    F: Fn(&K, &V) -> K2 + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K2, V>) -> Result<()> {
        let k = (self.0)(&r.key, &r.value);
        ctx.forward(r.with_key(k))
    }
}

pub(crate) struct Peek<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, F> Processor<K, V, K, V> for Peek<F>
where
    F: Fn(&K, &V) + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        (self.0)(&r.key, &r.value);
        ctx.forward(r)
    }
}

pub(crate) struct Foreach<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, F> Processor<K, V, K, V> for Foreach<F>
where
    F: Fn(K, V) + Send + Sync + 'static,
{
    fn process(&mut self, r: Record<K, V>, _ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        (self.0)(r.key, r.value);
        Ok(())
    }
}

/// Forwards unchanged: the node behind `merge` and each branch of `split`.
pub(crate) struct PassThrough;

impl<K: Data, V: Data> Processor<K, V, K, V> for PassThrough {
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        ctx.forward(r)
    }
}

pub(crate) type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// Sends each record to the first branch whose predicate holds, else to the default
/// branch if there is one, else drops it.
pub(crate) struct Branch<K, V> {
    pub(crate) branches: Arc<Vec<(Predicate<K, V>, String)>>,
    pub(crate) default: Option<Arc<str>>,
}

impl<K: Data, V: Data> Processor<K, V, K, V> for Branch<K, V> {
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        for (pred, child) in self.branches.iter() {
            if pred(&r.key, &r.value) {
                return ctx.forward_to(child, r);
            }
        }
        match &self.default {
            Some(child) => ctx.forward_to(child, r),
            None => Ok(()),
        }
    }
}

use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::Change;
use weir_runtime::internals::InternalForwardContext;

/// Folds each record into the key's aggregate in `store`; the aggregate's changes go
/// downstream when they reach the store (cache eviction or commit).
pub(crate) struct Aggregate<I, A> {
    pub(crate) store: Arc<str>,
    pub(crate) init: Arc<I>,
    pub(crate) agg: Arc<A>,
    pub(crate) send_old: Arc<AtomicBool>,
}

impl<K: Data, V: Data, VA: Data, I, A> Processor<K, V, K, Change<VA>> for Aggregate<I, A>
where
    I: Fn() -> VA + Send + Sync + 'static,
    A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<()> {
        ctx.forward_store_changes::<K, VA>(&self.store, self.send_old.load(Ordering::Acquire))
    }

    fn process(
        &mut self,
        r: Record<K, V>,
        ctx: &mut ProcessorContext<'_, K, Change<VA>>,
    ) -> Result<()> {
        let mut store = ctx.store::<K, VA>(&self.store)?;
        // The update carries the largest timestamp folded in (Kafka Streams'
        // KStreamAggregate): a late record does not move it back.
        let (current, ts) = match store.get_with_timestamp(&r.key)? {
            Some((a, ts)) => (a, ts.max(r.timestamp)),
            None => ((self.init)(), r.timestamp),
        };
        let new = (self.agg)(&r.key, r.value, current);
        store.put_with_timestamp(&r.key, &new, ts)
    }
}

/// Keeps the latest value of each key (a blind write: no read on the hot path; a value
/// that serializes to null deletes the row): `latest_by_key` and `KStream::to_table`.
pub(crate) struct Latest {
    pub(crate) store: Arc<str>,
    pub(crate) send_old: Arc<AtomicBool>,
}

impl<K: Data, V: Data> Processor<K, V, K, Change<V>> for Latest {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        ctx.forward_store_changes::<K, V>(&self.store, self.send_old.load(Ordering::Acquire))
    }

    fn process(
        &mut self,
        r: Record<K, V>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        ctx.store::<K, V>(&self.store)?.put(&r.key, &r.value)
    }
}

/// Materializes a changelog-style stream (`None` = delete) as a table.
pub(crate) struct TableSource {
    pub(crate) store: Arc<str>,
    pub(crate) send_old: Arc<AtomicBool>,
}

impl<K: Data, V: Data> Processor<K, Option<V>, K, Change<V>> for TableSource {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        ctx.forward_store_changes::<K, V>(&self.store, self.send_old.load(Ordering::Acquire))
    }

    fn process(
        &mut self,
        r: Record<K, Option<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        let mut store = ctx.store::<K, V>(&self.store)?;
        match &r.value {
            Some(v) => store.put(&r.key, v),
            None => store.delete(&r.key),
        }
    }
}

/// Materializes a changelog-style stream (`None` = delete) as a table in a versioned
/// store (Kafka Streams' `KTableSource` over a versioned store): every update is kept
/// as a version; only one that becomes the key's latest goes downstream, so an
/// out-of-order update does not move the table back in time (KIP-914).
pub(crate) struct VersionedTableSource {
    pub(crate) store: Arc<str>,
    pub(crate) send_old: Arc<AtomicBool>,
}

impl<K: Data, V: Data> Processor<K, Option<V>, K, Change<V>> for VersionedTableSource {
    fn process(
        &mut self,
        r: Record<K, Option<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        let mut store = ctx.versioned_store::<K, V>(&self.store)?;
        let old = store.get(&r.key)?.map(|v| v.value);
        if !store.put(&r.key, r.value.as_ref(), r.timestamp)? {
            return Ok(());
        }
        let change = Change {
            new: r.value.clone(),
            old: old.filter(|_| self.send_old.load(Ordering::Acquire)),
        };
        ctx.forward(r.with_value(change))
    }
}

/// Filters a table: rows that fail the predicate read as absent.
pub(crate) struct TableFilter<F> {
    pub(crate) f: Arc<F>,
    pub(crate) keep: bool,
}

impl<K: Data, V: Data, F> Processor<K, Change<V>, K, Change<V>> for TableFilter<F>
where
    F: Fn(&K, &V) -> bool + Send + Sync + 'static,
{
    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        let pass = |v: Option<V>| v.filter(|v| (self.f)(&r.key, v) == self.keep);
        let Change { new, old } = r.value.clone();
        let change = Change {
            new: pass(new),
            old: pass(old),
        };
        if change.new.is_none() && change.old.is_none() {
            return Ok(());
        }
        ctx.forward(r.with_value(change))
    }
}

/// Maps the values of a table (new and old alike).
pub(crate) struct TableMapValues<F>(pub(crate) Arc<F>);

impl<K: Data, V: Data, V2: Data, F> Processor<K, Change<V>, K, Change<V2>> for TableMapValues<F>
where
    F: Fn(&V) -> V2 + Send + Sync + 'static,
{
    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<V2>>,
    ) -> Result<()> {
        let change = Change {
            new: r.value.new.as_ref().map(|v| (self.0)(v)),
            old: r.value.old.as_ref().map(|v| (self.0)(v)),
        };
        ctx.forward(r.with_value(change))
    }
}

/// A table's updates as a stream: the new value, `None` for a delete.
pub(crate) struct TableToStream;

impl<K: Data, V: Data> Processor<K, Change<V>, K, Option<V>> for TableToStream {
    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K, Option<V>>,
    ) -> Result<()> {
        let new = r.value.new.clone();
        ctx.forward(r.with_value(new))
    }
}
