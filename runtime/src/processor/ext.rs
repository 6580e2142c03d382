//! Hooks the DSL's operators need of the processor context, kept out of the public
//! Processor API (as Kafka Streams keeps `InternalProcessorContext` apart).
//!
//! `#[doc(hidden)]`: not part of weir's API. The `weir` crate's aggregations,
//! windowed operators and suppression buffers use them; they may change in any
//! release.

use std::sync::Arc;

use super::internals::{Forwarder, TaskCore};
use super::{Change, Data, ProcessorContext};
use crate::error::{Error, Result};
use crate::memory::ByteBudget;
use crate::record::Record;
use crate::serde::Serde;
use crate::state::KeyValueStore;
use crate::state::window::{StoreType, Windowed, stored_window};

/// The DSL's hooks on a [`ProcessorContext`] (not API; see the module docs).
#[doc(hidden)]
pub trait InternalContext {
    /// The observed stream time this processor stored in window or session store
    /// `name` with [`InternalContext::store_stream_time`] (kept through restarts, so a
    /// windowed operator judges late records exactly as before).
    fn stored_stream_time(&mut self, name: &str) -> Result<Option<i64>>;
    /// Stores this processor's observed stream time in window or session store `name`
    /// (written with its windows at the next commit).
    fn store_stream_time(&mut self, name: &str, t: i64) -> Result<()>;
    /// Direct byte-level access to store `name`, bypassing the record cache; only for
    /// stores declared `without_caching` (the cache would otherwise hold writes this
    /// access cannot see). Suppression buffers keep their entries this way.
    fn raw_store(&mut self, name: &str) -> Result<&mut dyn KeyValueStore>;
    /// The runtime's one budget for all suppression buffers (bytes reserved by every
    /// buffer of every query).
    fn suppression_budget(&self) -> Arc<ByteBudget>;
    /// Counts a record this processor dropped because its window had closed (shows in
    /// `QueryStats::records_dropped_late`, `weir_records_dropped_late_total` and, per
    /// processor, `weir_dropped_records_total`).
    fn record_dropped_late(&mut self);
    /// Shuts the query down cleanly once the current record is done: the task commits
    /// everything processed so far (so the processor must have stopped emitting and
    /// persisted what it holds), the query fails with `error`, its other tasks commit
    /// as they close, and the rest of the runtime keeps running. A restart from the
    /// same state resumes after the last committed record. How a suppression buffer
    /// with `shut_down_when_full` stops.
    fn shut_down_query(&mut self, error: Error);
}

impl<K, V> InternalContext for ProcessorContext<'_, K, V> {
    /// The observed stream time this processor stored in window or session store
    /// `name` with [`InternalContext::store_stream_time`] (kept through restarts, so a
    /// windowed operator judges late records exactly as before).
    fn stored_stream_time(&mut self, name: &str) -> Result<Option<i64>> {
        self.windowed_access(name)?.meta_time()
    }

    /// Stores this processor's observed stream time in window or session store `name`
    /// (written with its windows at the next commit).
    fn store_stream_time(&mut self, name: &str, t: i64) -> Result<()> {
        self.windowed_access(name)?.set_meta_time(t)
    }

    /// Direct byte-level access to store `name`, bypassing the record cache; only for
    /// stores declared `without_caching` (the cache would otherwise hold writes this
    /// access cannot see). Suppression buffers keep their entries this way.
    fn raw_store(&mut self, name: &str) -> Result<&mut dyn KeyValueStore> {
        let node = self.node;
        let processor = self.core.names[node].clone();
        let st = self
            .core
            .env
            .state
            .stores
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                Error::Topology(format!(
                    "processor '{processor}' asked for store '{name}', which this task does not have"
                ))
            })?;
        if !st.processors.contains(&node) {
            return Err(Error::Topology(format!(
                "processor '{processor}' is not connected to store '{name}'"
            )));
        }
        if st.cached {
            return Err(Error::Topology(format!(
                "store '{name}' goes through the record cache; raw access needs a store declared without_caching"
            )));
        }
        Ok(&mut *st.store)
    }

    /// The runtime's one budget for all suppression buffers (bytes reserved by every
    /// buffer of every query).
    fn suppression_budget(&self) -> Arc<ByteBudget> {
        self.core.env.suppression_budget.clone()
    }

    /// Counts a record this processor dropped because its window had closed (shows in
    /// `QueryStats::records_dropped_late` and `weir_records_dropped_late_total`).
    fn record_dropped_late(&mut self) {
        self.core.env.dropped_late += 1;
        self.core.env.metrics.dropped_by(self.node);
    }

    /// Shuts the query down cleanly once the current record is done: the task commits
    /// everything processed so far (so the processor must have stopped emitting and
    /// persisted what it holds), the query fails with `error`, its other tasks commit
    /// as they close, and the rest of the runtime keeps running. A restart from the
    /// same state resumes after the last committed record. How a suppression buffer
    /// with `shut_down_when_full` stops.
    fn shut_down_query(&mut self, error: Error) {
        if self.core.env.shutdown.is_none() {
            self.core.env.shutdown = Some(error.in_processor(&self.core.names[self.node]));
        }
    }
}

/// How an aggregation's store changes go downstream (not API; see the module docs).
#[doc(hidden)]
pub trait InternalForwardContext {
    /// Makes every change written to store `name` go downstream from this processor
    /// as a `Record<SK, Change<SV>>` (new value, old value), when the change reaches
    /// the store: on cache eviction, on commit, or at once for an uncached store. This
    /// is how aggregations emit. With `send_old`, each change carries the value it
    /// replaced (one extra store read per change); without, `old` is `None`. Call it
    /// from `init`.
    fn forward_store_changes<SK: Data, SV: Data>(
        &mut self,
        name: &str,
        send_old: bool,
    ) -> Result<()>;
}

impl<K: 'static, V: 'static> InternalForwardContext for ProcessorContext<'_, K, V> {
    /// Makes every change written to store `name` go downstream from this processor
    /// as a `Record<SK, Change<SV>>` (new value, old value), when the change reaches
    /// the store: on cache eviction, on commit, or at once for an uncached store. This
    /// is how aggregations emit. With `send_old`, each change carries the value it
    /// replaced (one extra store read per change); without, `old` is `None`. Call it
    /// from `init`.
    fn forward_store_changes<SK: Data, SV: Data>(
        &mut self,
        name: &str,
        send_old: bool,
    ) -> Result<()> {
        if (std::any::TypeId::of::<K>(), std::any::TypeId::of::<V>())
            != (
                std::any::TypeId::of::<SK>(),
                std::any::TypeId::of::<Change<SV>>(),
            )
        {
            return Err(Error::Topology(format!(
                "processor '{}' forwards <{}, {}>, not the changes of store '{name}'",
                self.core.names[self.node],
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            )));
        }
        let idx = self.store_index::<SK, SV>(name)?;
        let (key_serde, value_serde) = self.store_serdes::<SK, SV>(idx)?.clone();
        let stamped = self.core.env.state.stores[idx].timestamped;
        let owner = self.node;
        let store = name.to_string();
        let forwarder: Forwarder = Arc::new(move |core, key, new, old, timestamp| {
            let (new, old, timestamp) = unstamp(&store, stamped, new, old, timestamp)?;
            let (key, change) = decode(&store, &*key_serde, &*value_serde, key, new, old)?;
            let record = Record::new(key, change, timestamp);
            ProcessorContext::<SK, Change<SV>>::new(core, owner).forward(record)
        });
        set_forwarder(self.core, idx, owner, forwarder, send_old);
        Ok(())
    }
}

/// The windowed form of [`InternalForwardContext::forward_store_changes`] (not API).
#[doc(hidden)]
pub trait InternalWindowedContext {
    /// Like [`InternalForwardContext::forward_store_changes`] for a window or session store:
    /// each change goes downstream as a `Record<Windowed<K>, Change<V>>` when it
    /// reaches the store.
    fn forward_windowed_changes(&mut self, name: &str, send_old: bool) -> Result<()>;
}

impl<K: Data, V: Data> InternalWindowedContext for ProcessorContext<'_, Windowed<K>, Change<V>> {
    /// Like [`InternalForwardContext::forward_store_changes`] for a window or session store:
    /// each change goes downstream as a `Record<Windowed<K>, Change<V>>` when it reaches
    /// the store.
    fn forward_windowed_changes(&mut self, name: &str, send_old: bool) -> Result<()> {
        let idx = self.store_index::<K, V>(name)?;
        let ty = self.expect_type(idx, "a window or session", |t| {
            !matches!(t, StoreType::KeyValue)
        })?;
        let (key_serde, value_serde) = self.store_serdes::<K, V>(idx)?.clone();
        let stamped = self.core.env.state.stores[idx].timestamped;
        let owner = self.node;
        let store = name.to_string();
        let forwarder: Forwarder = Arc::new(move |core, key, new, old, timestamp| {
            // The owner's stream-time entry is not a window.
            let Some((k, window)) = stored_window(&ty, key) else {
                return Ok(());
            };
            let (new, old, timestamp) = unstamp(&store, stamped, new, old, timestamp)?;
            // A session's changes carry its end (Kafka Streams': the merged session's,
            // and a removed session's tombstone its own).
            let timestamp = match ty {
                StoreType::Session { .. } => window.end,
                _ => timestamp,
            };
            let (key, change) = decode(&store, &*key_serde, &*value_serde, &k, new, old)?;
            let record = Record::new(Windowed::new(key, window), change, timestamp);
            ProcessorContext::<Windowed<K>, Change<V>>::new(core, owner).forward(record)
        });
        set_forwarder(self.core, idx, owner, forwarder, send_old);
        Ok(())
    }
}

/// A timestamped store's change without the timestamps, carrying the new value's
/// timestamp (a delete keeps the write's); other stores' changes as they are.
type Unstamped<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

fn unstamp<'a>(
    store: &str,
    stamped: bool,
    new: Option<&'a [u8]>,
    old: Option<&'a [u8]>,
    timestamp: i64,
) -> Result<Unstamped<'a>> {
    if !stamped {
        return Ok((new, old, timestamp));
    }
    let split = |b: &'a [u8]| match (b.get(..8), b.get(8..)) {
        (Some(ts), Some(rest)) => Ok((i64::from_be_bytes(ts.try_into().expect("8 bytes")), rest)),
        _ => Err(Error::store(
            store,
            format!(
                "a timestamped value needs at least 8 bytes, got {}",
                b.len()
            ),
        )),
    };
    let new = new.map(split).transpose()?;
    let old = old.map(split).transpose()?;
    let timestamp = new.map_or(timestamp, |(ts, _)| ts);
    Ok((new.map(|(_, v)| v), old.map(|(_, v)| v), timestamp))
}

/// A stored change of `store`, decoded: its key, and the new and old values.
fn decode<K: 'static, V: 'static>(
    store: &str,
    key_serde: &dyn Serde<K>,
    value_serde: &dyn Serde<V>,
    key: &[u8],
    new: Option<&[u8]>,
    old: Option<&[u8]>,
) -> Result<(K, Change<V>)> {
    let corrupt = |e: Error| Error::store(store, format!("cannot read a stored entry: {e}"));
    let value = |b: Option<&[u8]>| {
        b.map(|b| value_serde.deserialize(Some(b)))
            .transpose()
            .map_err(corrupt)
    };
    let key = key_serde.deserialize(Some(key)).map_err(corrupt)?;
    Ok((
        key,
        Change {
            new: value(new)?,
            old: value(old)?,
        },
    ))
}

/// Makes store `idx`'s changes go downstream from node `owner` (unless it has no
/// children: then its changes are only stored, with no decoding and no old values).
fn set_forwarder(
    core: &mut TaskCore,
    idx: usize,
    owner: usize,
    forwarder: Forwarder,
    send_old: bool,
) {
    let forwards = !core.children[owner].is_empty();
    let st = &mut core.env.state.stores[idx];
    st.forwards = forwards;
    st.forward_old = forwards && send_old;
    core.env.forwarders[idx] = forwards.then_some(forwarder);
}
