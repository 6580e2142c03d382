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
