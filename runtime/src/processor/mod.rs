//! The Processor API: what every DSL operator compiles into, and what users write when
//! the DSL is not enough.
//!
//! A [`Processor`] receives typed records and forwards typed records to its children
//! through a [`ProcessorContext`], which also exposes the current record's coordinates,
//! the task's stream time, and punctuation scheduling — the shape of Kafka Streams'
//! `api.Processor`. One processor instance exists per task (sub-topology × partition)
//! and is only ever called by one worker at a time, so it needs `Send` but not `Sync`.
//!
//! Punctuators run on the worker pool like everything else: stream-time ones when a
//! record advances the task's stream time past the schedule, wall-clock ones when the
//! runtime's I/O thread wakes the task at the deadline. There is no timer thread per
//! query.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::task::TaskCore;
use crate::exec::task::TaskEnv;
use crate::io::broker::RecordView;
use crate::io::queue::ByteBudget;
use crate::record::{Record, RecordMetadata, now_millis};
use crate::serde::Serde;
use crate::state::window::{
    META_KEY, StoreType, Window, Windowed, entry_segment, entry_time, key_prefix, segment_key,
    session_key, split_key, stored_window, time_bytes, window_key,
};
use crate::state::{Dirty, KeyValue, KeyValueStore, Lookup, Pick};
use crate::topology::{NodeId, StoreSerdes};

/// Types that can flow between processors: cloned when a processor has several
/// children, moved between workers between batches.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// What drives a punctuator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// The task's stream time (the largest record timestamp it has processed).
    StreamTime,
    /// The system clock.
    WallClockTime,
}

/// Identifies a scheduled punctuator, so a processor with several can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PunctuatorId(pub(crate) u64);

/// One firing of a punctuator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Punctuation {
    /// Which punctuator.
    pub id: PunctuatorId,
    /// Stream time or wall clock.
    pub kind: PunctuationType,
    /// The stream time or wall-clock time (ms) it fired at.
    pub timestamp: i64,
}

/// Returned by [`ProcessorContext::schedule`]; cancels the punctuator.
#[derive(Debug, Clone)]
pub struct Cancellable {
    id: PunctuatorId,
    cancelled: Arc<AtomicBool>,
}

impl Cancellable {
    /// Stops the punctuator; it does not fire again.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// The punctuator's id, as passed to [`Processor::punctuate`].
    pub fn id(&self) -> PunctuatorId {
        self.id
    }
}

/// A scheduled punctuator inside a task.
pub(crate) struct PunctuatorEntry {
    pub(crate) id: PunctuatorId,
    pub(crate) node: NodeId,
    pub(crate) kind: PunctuationType,
    pub(crate) interval_ms: i64,
    /// Next firing time; `None` for a stream-time punctuator until stream time is known.
    pub(crate) next: Option<i64>,
    pub(crate) cancelled: Arc<AtomicBool>,
}

impl PunctuatorEntry {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// If due at `now`, returns the firing time and moves `next` past `now`
    /// (missed intervals fire once, as in Kafka Streams).
    pub(crate) fn due(&mut self, now: i64) -> Option<i64> {
        let next = match self.next {
            Some(n) => n,
            None => {
                // First stream time seen: fire now, then every interval.
                self.next = Some(now);
                now
            }
        };
        if now < next {
            return None;
        }
        let missed = (now - next) / self.interval_ms;
        self.next = Some(next + (missed + 1) * self.interval_ms);
        Some(now)
    }
}

/// A record processor. `KIn`/`VIn` are what it receives, `KOut`/`VOut` what it forwards.
pub trait Processor<KIn, VIn, KOut, VOut>: Send + 'static {
    /// Called once when the task is created, before any record.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Processes one record.
    fn process(
        &mut self,
        record: Record<KIn, VIn>,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
    ) -> Result<()>;

    /// Called when a punctuator scheduled by this processor fires.
    fn punctuate(
        &mut self,
        punctuation: &Punctuation,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
    ) -> Result<()> {
        let _ = (punctuation, ctx);
        Ok(())
    }

    /// Called at every commit, before the task's stores are flushed and its offsets
    /// committed: write out anything the processor holds outside its stores (a
    /// suppression buffer writes its changes to its store here). Changes it makes to
    /// cached stores are written in the same commit.
    fn flush(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Called once when the task closes (query stopped or failed).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a processor can do while it runs: forward, look at the current record's
/// coordinates and the task's time, schedule punctuations.
pub struct ProcessorContext<'a, K, V> {
    core: &'a mut TaskCore,
    node: NodeId,
    _out: PhantomData<fn(K, V)>,
}

impl<'a, K: Data, V: Data> ProcessorContext<'a, K, V> {
    pub(crate) fn new(core: &'a mut TaskCore, node: NodeId) -> Self {
        ProcessorContext {
            core,
            node,
            _out: PhantomData,
        }
    }

    /// Forwards a record to every child (cloned for all but the last).
    pub fn forward(&mut self, record: Record<K, V>) -> Result<()> {
        let n = self.core.children[self.node].len();
        if n == 0 {
            return Ok(());
        }
        // Store writes made while a child processes this record carry its timestamp.
        let saved = self.core.env.record_timestamp;
        let ts = record.timestamp;
        for i in 0..n - 1 {
            let child = self.core.children[self.node][i];
            let mut slot: Option<Record<K, V>> = Some(record.clone());
            self.core.env.record_timestamp = ts;
            let r = self.core.dispatch(child, &mut slot as &mut dyn Any);
            if r.is_err() {
                self.core.env.record_timestamp = saved;
                return r;
            }
        }
        let child = self.core.children[self.node][n - 1];
        let mut slot: Option<Record<K, V>> = Some(record);
        self.core.env.record_timestamp = ts;
        let r = self.core.dispatch(child, &mut slot as &mut dyn Any);
        self.core.env.record_timestamp = saved;
        r
    }

    /// Forwards a record to the named child only.
    pub fn forward_to(&mut self, child: &str, record: Record<K, V>) -> Result<()> {
        let found = self.core.children[self.node]
            .iter()
            .copied()
            .find(|c| self.core.names[*c] == child);
        match found {
            Some(c) => {
                let saved = self.core.env.record_timestamp;
                self.core.env.record_timestamp = record.timestamp;
                let mut slot: Option<Record<K, V>> = Some(record);
                let r = self.core.dispatch(c, &mut slot as &mut dyn Any);
                self.core.env.record_timestamp = saved;
                r
            }
            None => Err(Error::Topology(format!(
                "processor '{}' has no child named '{child}'",
                self.core.names[self.node]
            ))),
        }
    }

    /// Names of this processor's children, in the order they were connected.
    pub fn child_names(&self) -> Vec<&str> {
        self.core.children[self.node]
            .iter()
            .map(|c| self.core.names[*c].as_str())
            .collect()
    }
}

impl<K, V> ProcessorContext<'_, K, V> {
    /// Topic, partition and offset of the record being processed; `None` inside a
    /// punctuation.
    pub fn record_metadata(&self) -> Option<&RecordMetadata> {
        self.core.env.metadata.as_ref()
    }

    /// The task's stream time: the largest timestamp it has processed (`i64::MIN` before
    /// the first record).
    pub fn stream_time(&self) -> i64 {
        self.core.env.stream_time
    }

    /// Wall-clock time in milliseconds since the Unix epoch.
    pub fn current_system_time_ms(&self) -> i64 {
        now_millis()
    }

    /// This processor's name in the topology.
    pub fn processor_name(&self) -> &str {
        &self.core.names[self.node]
    }

    /// The query this task belongs to.
    pub fn query_name(&self) -> &str {
        &self.core.env.query
    }

    /// The runtime's application id.
    pub fn application_id(&self) -> &str {
        &self.core.env.application_id
    }

    /// This task's id: (sub-topology, partition).
    pub fn task_id(&self) -> TaskId {
        self.core.env.task_id
    }

    /// Schedules [`Processor::punctuate`] every `interval` of stream time or wall-clock
    /// time. Intervals under 1 ms are rejected.
    pub fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> Result<Cancellable> {
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        if interval_ms < 1 {
            return Err(Error::Config(format!(
                "punctuation interval must be at least 1 ms (processor '{}')",
                self.core.names[self.node]
            )));
        }
        let env = &mut self.core.env;
        let id = PunctuatorId(env.next_punctuator);
        env.next_punctuator += 1;
        let cancelled = Arc::new(AtomicBool::new(false));
        let next = match kind {
            PunctuationType::WallClockTime => Some(now_millis() + interval_ms),
            PunctuationType::StreamTime => {
                (env.stream_time != i64::MIN).then_some(env.stream_time + interval_ms)
            }
        };
        env.punctuators.push(PunctuatorEntry {
            id,
            node: self.node,
            kind,
            interval_ms,
            next,
            cancelled: cancelled.clone(),
        });
        Ok(Cancellable { id, cancelled })
    }
}

impl<K, V> ProcessorContext<'_, K, V> {
    fn store_index<SK: 'static, SV: 'static>(&self, name: &str) -> Result<usize> {
        let node = self.node;
        let processor = &self.core.names[node];
        let idx = self
            .core
            .env
            .stores
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                Error::Topology(format!(
                    "processor '{processor}' asked for store '{name}', which this task does not have"
                ))
            })?;
        let st = &self.core.env.stores[idx];
        if !st.processors.contains(&node) {
            return Err(Error::Topology(format!(
                "processor '{processor}' is not connected to store '{name}'"
            )));
        }
        if st.types != (std::any::TypeId::of::<SK>(), std::any::TypeId::of::<SV>()) {
            return Err(Error::Topology(format!(
                "store '{name}' does not hold <{}, {}>",
                std::any::type_name::<SK>(),
                std::any::type_name::<SV>()
            )));
        }
        Ok(idx)
    }

    fn store_serdes<SK: 'static, SV: 'static>(&self, idx: usize) -> Result<StoreSerdes<SK, SV>> {
        let st = &self.core.env.stores[idx];
        st.serdes
            .downcast_ref::<StoreSerdes<SK, SV>>()
            .cloned()
            .ok_or_else(|| {
                Error::Topology(format!("store '{}' has serdes of other types", st.name))
            })
    }

    /// The store `name`, typed `<SK, SV>`. The processor must be connected to it
    /// (`Topology::add_state_store` / `connect_store`) and the types must be the store's.
    /// Reads and writes go through the record cache unless the store opted out.
    pub fn store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<StoreHandle<'_, SK, SV>> {
        let idx = self.store_index::<SK, SV>(name)?;
        self.expect_type(idx, "a key-value", |t| matches!(t, StoreType::KeyValue))?;
        let (key_serde, value_serde) = self.store_serdes::<SK, SV>(idx)?;
        Ok(StoreHandle {
            access: Access {
                env: &mut self.core.env,
                idx,
            },
            key_serde,
            value_serde,
        })
    }

    fn expect_type(
        &self,
        idx: usize,
        what: &str,
        ok: impl Fn(&StoreType) -> bool,
    ) -> Result<StoreType> {
        let st = &self.core.env.stores[idx];
        if ok(&st.store_type) {
            Ok(st.store_type)
        } else {
            Err(Error::Topology(format!(
                "processor '{}' asked for store '{}' as {what} store; it is {:?}",
                self.core.names[self.node], st.name, st.store_type
            )))
        }
    }

    /// The window store `name` (declared with `StoreSpec::windowed`), typed `<SK, SV>`.
    pub fn window_store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<WindowStoreHandle<'_, SK, SV>> {
        let idx = self.store_index::<SK, SV>(name)?;
        let ty = self.expect_type(idx, "a window", |t| matches!(t, StoreType::Window { .. }))?;
        let StoreType::Window {
            size_ms,
            segment_ms,
            ..
        } = ty
        else {
            unreachable!("checked by expect_type")
        };
        let (key_serde, value_serde) = self.store_serdes::<SK, SV>(idx)?;
        Ok(WindowStoreHandle {
            access: Access {
                env: &mut self.core.env,
                idx,
            },
            key_serde,
            value_serde,
            size_ms,
            segment_ms,
        })
    }

    /// The session store `name` (declared with `StoreSpec::sessions`), typed `<SK, SV>`.
    pub fn session_store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<SessionStoreHandle<'_, SK, SV>> {
        let idx = self.store_index::<SK, SV>(name)?;
        let ty = self.expect_type(idx, "a session", |t| matches!(t, StoreType::Session { .. }))?;
        let (key_serde, value_serde) = self.store_serdes::<SK, SV>(idx)?;
        Ok(SessionStoreHandle {
            access: Access {
                env: &mut self.core.env,
                idx,
            },
            key_serde,
            value_serde,
            segment_ms: ty.segment_ms().unwrap_or(1),
        })
    }

    /// The observed stream time this processor stored in window or session store
    /// `name` with [`ProcessorContext::store_stream_time`] (kept through restarts, so a
    /// windowed operator judges late records exactly as before).
    pub fn stored_stream_time(&mut self, name: &str) -> Result<Option<i64>> {
        self.windowed_access(name)?.meta_time()
    }

    /// Stores this processor's observed stream time in window or session store `name`
    /// (written with its windows at the next commit).
    pub fn store_stream_time(&mut self, name: &str, t: i64) -> Result<()> {
        self.windowed_access(name)?.set_meta_time(t)
    }

    fn windowed_access(&mut self, name: &str) -> Result<Access<'_>> {
        let node = self.node;
        let processor = &self.core.names[node];
        let Some(idx) = self.core.env.stores.iter().position(|s| {
            s.name == name
                && s.processors.contains(&node)
                && !matches!(s.store_type, StoreType::KeyValue)
        }) else {
            return Err(Error::Topology(format!(
                "processor '{processor}' is not connected to a window or session store named '{name}'"
            )));
        };
        Ok(Access {
            env: &mut self.core.env,
            idx,
        })
    }

    /// Direct byte-level access to store `name`, bypassing the record cache; only for
    /// stores declared `without_caching` (the cache would otherwise hold writes this
    /// access cannot see). Suppression buffers keep their entries this way.
    pub fn raw_store(&mut self, name: &str) -> Result<&mut dyn KeyValueStore> {
        let node = self.node;
        let processor = self.core.names[node].clone();
        let st = self
            .core
            .env
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
    pub fn suppression_budget(&self) -> Arc<ByteBudget> {
        self.core.env.suppression_budget.clone()
    }

    /// Counts a record this processor dropped because its window had closed (shows in
    /// `QueryStats::records_dropped_late` and `weir_records_dropped_late_total`).
    pub fn record_dropped_late(&mut self) {
        self.core.env.dropped_late += 1;
    }

    /// Shuts the query down cleanly once the current record is done: the task commits
    /// everything processed so far (so the processor must have stopped emitting and
    /// persisted what it holds), the query fails with `error`, its other tasks commit
    /// as they close, and the rest of the runtime keeps running. A restart from the
    /// same state resumes after the last committed record. How a suppression buffer
    /// with `shut_down_when_full` stops.
    pub fn shut_down_query(&mut self, error: Error) {
        if self.core.env.shutdown.is_none() {
            self.core.env.shutdown = Some(error.in_processor(&self.core.names[self.node]));
        }
    }

    /// Makes every change written to store `name` go downstream from this processor
    /// as a `Record<SK, Change<SV>>` (new value, old value), when the change reaches
    /// the store: on cache eviction, on commit, or at once for an uncached store. This
    /// is how aggregations emit. With `send_old`, each change carries the value it
    /// replaced (one extra store read per change); without, `old` is `None`. Call it
    /// from `init`.
    pub fn forward_store_changes<SK: Data, SV: Data>(
        &mut self,
        name: &str,
        send_old: bool,
    ) -> Result<()>
    where
        K: 'static,
        V: 'static,
    {
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
        let (key_serde, value_serde) = self.store_serdes::<SK, SV>(idx)?;
        let owner = self.node;
        let store = name.to_string();
        let forwarder: crate::exec::task::Forwarder =
            Arc::new(move |core, key, new, old, timestamp| {
                let corrupt = |e: Error| Error::Store {
                    store: store.clone(),
                    message: format!("cannot read a stored entry: {e}"),
                };
                let key = key_serde.deserialize(Some(key)).map_err(corrupt)?;
                let new = new
                    .map(|b| value_serde.deserialize(Some(b)))
                    .transpose()
                    .map_err(corrupt)?;
                let old = old
                    .map(|b| value_serde.deserialize(Some(b)))
                    .transpose()
                    .map_err(corrupt)?;
                let record = Record::new(key, Change { new, old }, timestamp);
                ProcessorContext::<SK, Change<SV>>::new(core, owner).forward(record)
            });
        // Nothing downstream: changes are only stored (no decoding, no old values read).
        if self.core.children[owner].is_empty() {
            self.core.env.stores[idx].forwarder = None;
            return Ok(());
        }
        self.core.env.stores[idx].forwarder = Some(forwarder);
        self.core.env.stores[idx].forward_old = send_old;
        Ok(())
    }
}

impl<'a, K: Data, V: Data> ProcessorContext<'a, Windowed<K>, Change<V>> {
    /// Like [`ProcessorContext::forward_store_changes`] for a window or session store:
    /// each change goes downstream as a `Record<Windowed<K>, Change<V>>` when it reaches
    /// the store.
    pub fn forward_windowed_changes(&mut self, name: &str, send_old: bool) -> Result<()> {
        let idx = self.store_index::<K, V>(name)?;
        let ty = self.expect_type(idx, "a window or session", |t| {
            !matches!(t, StoreType::KeyValue)
        })?;
        let (key_serde, value_serde) = self.store_serdes::<K, V>(idx)?;
        let owner = self.node;
        let store = name.to_string();
        let forwarder: crate::exec::task::Forwarder =
            Arc::new(move |core, key, new, old, timestamp| {
                // The owner's stream-time entry is not a window.
                let Some((k, window)) = stored_window(&ty, key) else {
                    return Ok(());
                };
                let corrupt = |e: Error| Error::Store {
                    store: store.clone(),
                    message: format!("cannot read a stored entry: {e}"),
                };
                let key = key_serde.deserialize(Some(&k)).map_err(corrupt)?;
                let new = new
                    .map(|b| value_serde.deserialize(Some(b)))
                    .transpose()
                    .map_err(corrupt)?;
                let old = old
                    .map(|b| value_serde.deserialize(Some(b)))
                    .transpose()
                    .map_err(corrupt)?;
                let record =
                    Record::new(Windowed::new(key, window), Change { new, old }, timestamp);
                ProcessorContext::<Windowed<K>, Change<V>>::new(core, owner).forward(record)
            });
        let st = &mut self.core.env.stores[idx];
        if self.core.children[owner].is_empty() {
            st.forwarder = None;
            return Ok(());
        }
        st.forwarder = Some(forwarder);
        st.forward_old = send_old;
        Ok(())
    }
}

/// A change to a table row: the new value and the one it replaced (`None` = absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    /// The value now (`None`: the row was deleted).
    pub new: Option<V>,
    /// The value before (`None`: the row is new).
    pub old: Option<V>,
}

/// Byte-level access to one store of the current task, through the record cache
/// unless the store opted out.
struct Access<'a> {
    env: &'a mut TaskEnv,
    idx: usize,
}

impl Access<'_> {
    fn name(&self) -> &str {
        &self.env.stores[self.idx].name
    }

    fn error(&self, message: String) -> Error {
        Error::Store {
            store: self.name().to_string(),
            message,
        }
    }

    fn cached(&self) -> bool {
        self.env.stores[self.idx].cached && self.env.cache.is_some()
    }

    fn get(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let idx = self.idx;
        let st = &self.env.stores[idx];
        if entry_time(&st.store_type, k).is_some_and(|t| t < st.min_live) {
            return Ok(None);
        }
        if self.cached() {
            let cache = self.env.cache.as_mut().expect("cached() checked");
            if let Lookup::Hit(v) = cache.get(idx, k) {
                return Ok(v.map(<[u8]>::to_vec));
            }
            if self.env.stores[idx].surely_absent(k) {
                return Ok(None);
            }
            let v = self.env.stores[idx].store.get(k)?;
            if let Some(cache) = self.env.cache.as_mut() {
                cache.insert_clean(idx, k, v.clone());
            }
            return Ok(v);
        }
        if self.env.stores[idx].surely_absent(k) {
            return Ok(None);
        }
        self.env.stores[idx].store.get(k)
    }

    /// Window and session stores: the earliest time (window start, session end) not
    /// yet expired.
    fn min_live(&self) -> i64 {
        self.env.stores[self.idx].min_live
    }

    fn write(&mut self, k: Vec<u8>, v: Option<Vec<u8>>) -> Result<()> {
        let idx = self.idx;
        let timestamp = self.env.record_timestamp;
        let dirty = if self.cached() {
            let cache = self.env.cache.as_mut().expect("cached() checked");
            cache.put(idx, k, v, timestamp)
        } else {
            vec![Dirty {
                store: idx,
                key: k,
                value: v,
                timestamp,
            }]
        };
        self.env.apply_dirty(dirty)
    }

    /// Before a scan, writes this store's cached changes so the scan sees them.
    fn settle(&mut self) -> Result<()> {
        if !self.cached() {
            return Ok(());
        }
        self.env.flush_cache(Some(self.idx))
    }

    fn range(&mut self, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>> {
        self.settle()?;
        self.env.stores[self.idx].store.range(from, to)
    }

    /// The observed stream time a windowed operator stored (see
    /// [`ProcessorContext::stored_stream_time`]).
    fn meta_time(&mut self) -> Result<Option<i64>> {
        match self.get(META_KEY)? {
            None => Ok(None),
            Some(b) if b.len() == 8 => Ok(Some(i64::from_be_bytes(
                b.as_slice().try_into().expect("8 bytes"),
            ))),
            Some(b) => Err(self.error(format!(
                "its stream-time entry has {} bytes, not 8",
                b.len()
            ))),
        }
    }

    fn set_meta_time(&mut self, t: i64) -> Result<()> {
        self.write(META_KEY.to_vec(), Some(t.to_be_bytes().to_vec()))
    }

    /// Expires the windows (sessions) that started (ended) more than the retention
    /// before `stream_time`: reads no longer see them, and the segments holding only
    /// expired entries go with one range delete. Their cached changes go downstream
    /// as usual but are not written.
    fn expire(&mut self, stream_time: i64) -> Result<()> {
        let idx = self.idx;
        let st = &mut self.env.stores[idx];
        let (Some(segment_ms), Some(retention)) =
            (st.store_type.segment_ms(), st.store_type.retention_ms())
        else {
            return Ok(());
        };
        let min_live = stream_time.saturating_sub(retention).saturating_add(1);
        if min_live <= st.min_live {
            return Ok(());
        }
        st.min_live = min_live;
        let live = min_live.div_euclid(segment_ms);
        if live <= st.live_segment || live <= 0 {
            return Ok(());
        }
        self.env.flush_picked(idx, |k| match entry_segment(k) {
            Some(seg) if seg < live => Pick::Take,
            _ => Pick::Keep,
        })?;
        let st = &mut self.env.stores[idx];
        st.store.delete_range(&segment_key(0), &segment_key(live))?;
        st.live_segment = live;
        Ok(())
    }

    /// Writes and forwards the cached changes of entries whose time is before
    /// `before`, leaving the others cached; expired ones are forwarded, not written.
    fn flush_before(&mut self, before: i64) -> Result<()> {
        if !self.cached() {
            return Ok(());
        }
        let st = &self.env.stores[self.idx];
        let (ty, min_live) = (st.store_type, st.min_live);
        self.env
            .flush_picked(self.idx, |k| match entry_time(&ty, k) {
                Some(t) if t < min_live => Pick::Take,
                Some(t) if t < before => Pick::Flush,
                _ => Pick::Keep,
            })
    }
}

/// Typed access to a key-value store of the current task, through its serdes and the
/// record cache.
pub struct StoreHandle<'a, K, V> {
    access: Access<'a>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
}

/// The serdes of a typed handle, and the codecs every handle shares.
trait Typed<K: 'static, V: 'static> {
    fn access(&self) -> &Access<'_>;
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>);

    fn key_bytes(&self, key: &K) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(32);
        if self.serdes().0.serialize_into(key, &mut buf)? {
            Ok(buf)
        } else {
            Err(self.access().error("a null key cannot be stored".into()))
        }
    }

    /// `None` if the value serializes to null (a delete).
    fn value_bytes(&self, value: &V) -> Result<Option<Vec<u8>>> {
        let mut v = Vec::new();
        let non_null = self.serdes().1.serialize_into(value, &mut v)?;
        Ok(non_null.then_some(v))
    }

    fn decode_key(&self, k: &[u8]) -> Result<K> {
        self.serdes().0.deserialize(Some(k)).map_err(|e| {
            self.access()
                .error(format!("cannot read a stored key: {e}"))
        })
    }

    fn decode_value(&self, v: &[u8]) -> Result<V> {
        self.serdes().1.deserialize(Some(v)).map_err(|e| {
            self.access()
                .error(format!("cannot read a stored value: {e}"))
        })
    }
}

impl<K: 'static, V: 'static> Typed<K, V> for StoreHandle<'_, K, V> {
    fn access(&self) -> &Access<'_> {
        &self.access
    }
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>) {
        (&*self.key_serde, &*self.value_serde)
    }
}

impl<K: 'static, V: 'static> StoreHandle<'_, K, V> {
    fn decode(&self, k: &[u8], v: &[u8]) -> Result<(K, V)> {
        Ok((self.decode_key(k)?, self.decode_value(v)?))
    }

    /// The value of `key`.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        let k = self.key_bytes(key)?;
        match self.access.get(&k)? {
            Some(v) => self.decode_value(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`; a value that serializes to null deletes the key (as in
    /// Kafka Streams).
    pub fn put(&mut self, key: &K, value: &V) -> Result<()> {
        let k = self.key_bytes(key)?;
        let v = self.value_bytes(value)?;
        self.access.write(k, v)
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &K) -> Result<()> {
        let k = self.key_bytes(key)?;
        self.access.write(k, None)
    }

    /// Entries with `from <= key < to` in serialized-key order.
    pub fn range(&mut self, from: &K, to: &K) -> Result<Vec<(K, V)>> {
        let (f, t) = (self.key_bytes(from)?, self.key_bytes(to)?);
        let raw = self.access.range(&f, &t)?;
        raw.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// Entries whose serialized key starts with `prefix`.
    pub fn prefix_scan(&mut self, prefix: &[u8]) -> Result<Vec<(K, V)>> {
        self.access.settle()?;
        let raw = self.access.env.stores[self.access.idx]
            .store
            .prefix_scan(prefix)?;
        raw.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// Every entry in serialized-key order.
    pub fn all(&mut self) -> Result<Vec<(K, V)>> {
        self.access.settle()?;
        let raw = self.access.env.stores[self.access.idx].store.all()?;
        raw.iter().map(|(k, v)| self.decode(k, v)).collect()
    }
}

/// Typed access to a window store of the current task (`StoreSpec::windowed`): each
/// key's aggregate per window, found by key and window start. Point reads and writes
/// go through the record cache; range fetches first write the store's cached changes.
pub struct WindowStoreHandle<'a, K, V> {
    access: Access<'a>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    size_ms: i64,
    segment_ms: i64,
}

impl<K: 'static, V: 'static> Typed<K, V> for WindowStoreHandle<'_, K, V> {
    fn access(&self) -> &Access<'_> {
        &self.access
    }
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>) {
        (&*self.key_serde, &*self.value_serde)
    }
}

impl<K: 'static, V: 'static> WindowStoreHandle<'_, K, V> {
    /// The value of `key` in the window starting at `start`.
    pub fn fetch(&mut self, key: &K, start: i64) -> Result<Option<V>> {
        let k = window_key(self.segment_ms, &self.key_bytes(key)?, start);
        match self.access.get(&k)? {
            Some(v) => self.decode_value(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key`'s value in the window starting at `start` (`None` removes it).
    pub fn put(&mut self, key: &K, start: i64, value: Option<&V>) -> Result<()> {
        let k = window_key(self.segment_ms, &self.key_bytes(key)?, start);
        let v = match value {
            Some(v) => self.value_bytes(v)?,
            None => None,
        };
        self.access.write(k, v)
    }

    /// `key`'s windows whose start is in `[from, to]`, by start (expired ones left out).
    pub fn fetch_range(&mut self, key: &K, from: i64, to: i64) -> Result<Vec<(Window, V)>> {
        let kb = self.key_bytes(key)?;
        let from = from.max(self.access.min_live());
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for seg in from.div_euclid(self.segment_ms)..=to.div_euclid(self.segment_ms) {
            let mut lo = key_prefix(seg, &kb);
            let mut hi = lo.clone();
            lo.extend_from_slice(&time_bytes(from));
            hi.extend_from_slice(&time_bytes(to.saturating_add(1)));
            for (k, v) in self.access.range(&lo, &hi)? {
                if let Some((_, [start, _])) = split_key(&k, 1) {
                    out.push((
                        Window::new(start, start + self.size_ms),
                        self.decode_value(&v)?,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Every key's windows whose start is in `[from, to]`, by segment, key and start
    /// (expired ones left out).
    pub fn fetch_all(&mut self, from: i64, to: i64) -> Result<Vec<(Windowed<K>, V)>> {
        let from = from.max(self.access.min_live());
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let lo = segment_key(from.div_euclid(self.segment_ms));
        let hi = segment_key(to.div_euclid(self.segment_ms).saturating_add(1));
        for (k, v) in self.access.range(&lo, &hi)? {
            if let Some((kb, [start, _])) = split_key(&k, 1)
                && (from..=to).contains(&start)
            {
                out.push((
                    Windowed::new(
                        self.decode_key(kb)?,
                        Window::new(start, start + self.size_ms),
                    ),
                    self.decode_value(&v)?,
                ));
            }
        }
        Ok(out)
    }

    /// Writes this store's changes held in the record cache to the store now (and
    /// forwards them, for an aggregation's store). A windowed aggregation calls it when
    /// windows close, so every update of a closed window goes downstream before any
    /// record that closed it: what lets suppression emit exactly one final result.
    pub fn flush_cached(&mut self) -> Result<()> {
        self.access.settle()
    }

    /// Like [`WindowStoreHandle::flush_cached`] for the windows starting before
    /// `start` only (the ones that closed), leaving the open windows' changes cached.
    /// Changes to expired windows go downstream but are not written.
    pub fn flush_cached_before(&mut self, start: i64) -> Result<()> {
        self.access.flush_before(start)
    }

    /// Expires the windows that started more than the store's retention before
    /// `stream_time`: fetches no longer return them, their cached changes go
    /// downstream without being written, and the segments holding only expired
    /// windows go with one range delete.
    pub fn expire(&mut self, stream_time: i64) -> Result<()> {
        self.access.expire(stream_time)
    }
}

/// Typed access to a session store of the current task (`StoreSpec::sessions`).
pub struct SessionStoreHandle<'a, K, V> {
    access: Access<'a>,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    segment_ms: i64,
}

impl<K: 'static, V: 'static> Typed<K, V> for SessionStoreHandle<'_, K, V> {
    fn access(&self) -> &Access<'_> {
        &self.access
    }
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>) {
        (&*self.key_serde, &*self.value_serde)
    }
}

impl<K: 'static, V: 'static> SessionStoreHandle<'_, K, V> {
    /// `key`'s sessions that end at or after `earliest_end` and start at or before
    /// `latest_start`, by end. Sessions end no later than `latest_end` (the caller's
    /// observed stream time), which bounds the segments searched.
    pub fn find_sessions(
        &mut self,
        key: &K,
        earliest_end: i64,
        latest_start: i64,
        latest_end: i64,
    ) -> Result<Vec<(Window, V)>> {
        let kb = self.key_bytes(key)?;
        let earliest_end = earliest_end.max(self.access.min_live());
        let mut out = Vec::new();
        if earliest_end > latest_end {
            return Ok(out);
        }
        let first = earliest_end.max(0).div_euclid(self.segment_ms);
        for seg in first..=latest_end.div_euclid(self.segment_ms) {
            let mut lo = key_prefix(seg, &kb);
            let mut hi = lo.clone();
            lo.extend_from_slice(&time_bytes(earliest_end));
            hi.extend_from_slice(&time_bytes(latest_end.saturating_add(1)));
            for (k, v) in self.access.range(&lo, &hi)? {
                if let Some((_, [end, start])) = split_key(&k, 2)
                    && start <= latest_start
                {
                    out.push((Window::new(start, end), self.decode_value(&v)?));
                }
            }
        }
        Ok(out)
    }

    /// Stores `key`'s session `window` with `value` (`None` removes it).
    pub fn put(&mut self, key: &K, window: Window, value: Option<&V>) -> Result<()> {
        let k = session_key(self.segment_ms, &self.key_bytes(key)?, window);
        let v = match value {
            Some(v) => self.value_bytes(v)?,
            None => None,
        };
        self.access.write(k, v)
    }

    /// Every session of every key, by segment, key and end (expired ones left out).
    pub fn fetch_all(&mut self) -> Result<Vec<(Windowed<K>, V)>> {
        let mut out = Vec::new();
        let (lo, hi) = (segment_key(0), segment_key(i64::MAX));
        let min_live = self.access.min_live();
        for (k, v) in self.access.range(&lo, &hi)? {
            if let Some((kb, [end, start])) = split_key(&k, 2)
                && end >= min_live
            {
                out.push((
                    Windowed::new(self.decode_key(kb)?, Window::new(start, end)),
                    self.decode_value(&v)?,
                ));
            }
        }
        Ok(out)
    }

    /// Expires the sessions that ended more than the retention before `stream_time`:
    /// lookups no longer return them, and the segments holding only expired sessions
    /// go with one range delete.
    pub fn expire(&mut self, stream_time: i64) -> Result<()> {
        self.access.expire(stream_time)
    }
}

/// A task's id: which sub-topology, which partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// Sub-topology index.
    pub subtopology: usize,
    /// Partition number.
    pub partition: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// The erased form of every node in a task's graph (sources, processors, sinks).
pub(crate) trait Node: Send {
    fn init(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()>;
    /// `input` is `&mut Option<Record<K, V>>` for the node's input types; the node
    /// takes the record out.
    fn process(&mut self, input: &mut dyn Any, core: &mut TaskCore, me: NodeId) -> Result<()>;
    /// Sources only: deserializes a fetched record and forwards it.
    fn ingest(
        &mut self,
        record: &RecordView<'_>,
        offset: i64,
        core: &mut TaskCore,
        me: NodeId,
    ) -> Result<()> {
        let _ = (record, offset);
        Err(Error::Topology(format!(
            "'{}' is not a source",
            core.names[me]
        )))
    }
    fn punctuate(&mut self, p: &Punctuation, core: &mut TaskCore, me: NodeId) -> Result<()>;
    /// Writes out anything buffered (sinks). Called at the end of every batch and before
    /// a commit.
    fn flush(&mut self, core: &mut TaskCore) -> Result<()>;
    /// Processors: [`Processor::flush`], at each commit.
    fn pre_commit(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let _ = (core, me);
        Ok(())
    }
    fn close(&mut self) -> Result<()>;
}

/// Adapts a typed [`Processor`] to [`Node`].
pub(crate) struct ProcessorNode<P, KI, VI, KO, VO> {
    pub(crate) processor: P,
    pub(crate) _types: PhantomData<fn(KI, VI, KO, VO)>,
}

pub(crate) fn take_input<T: 'static>(
    input: &mut dyn Any,
    core: &TaskCore,
    me: NodeId,
) -> Result<T> {
    input
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .ok_or_else(|| {
            Error::Topology(format!(
                "node '{}' received a record of the wrong type (expected {})",
                core.names[me],
                std::any::type_name::<T>()
            ))
        })
}

impl<P, KI, VI, KO, VO> Node for ProcessorNode<P, KI, VI, KO, VO>
where
    P: Processor<KI, VI, KO, VO>,
    KI: Data,
    VI: Data,
    KO: Data,
    VO: Data,
{
    fn init(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let name = core.names[me].clone();
        self.processor
            .init(&mut ProcessorContext::new(core, me))
            .map_err(|e| e.in_processor(&name))
    }

    fn process(&mut self, input: &mut dyn Any, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let record: Record<KI, VI> = take_input(input, core, me)?;
        match self
            .processor
            .process(record, &mut ProcessorContext::new(core, me))
        {
            Ok(()) => Ok(()),
            Err(e) => Err(e.in_processor(&core.names[me])),
        }
    }

    fn punctuate(&mut self, p: &Punctuation, core: &mut TaskCore, me: NodeId) -> Result<()> {
        match self
            .processor
            .punctuate(p, &mut ProcessorContext::new(core, me))
        {
            Ok(()) => Ok(()),
            Err(e) => Err(e.in_processor(&core.names[me])),
        }
    }

    fn flush(&mut self, _core: &mut TaskCore) -> Result<()> {
        Ok(())
    }

    fn pre_commit(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        match self.processor.flush(&mut ProcessorContext::new(core, me)) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.in_processor(&core.names[me])),
        }
    }

    fn close(&mut self) -> Result<()> {
        self.processor.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(interval_ms: i64, next: Option<i64>) -> PunctuatorEntry {
        PunctuatorEntry {
            id: PunctuatorId(0),
            node: 0,
            kind: PunctuationType::StreamTime,
            interval_ms,
            next,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn punctuator_fires_once_per_due_point_and_skips_missed() {
        let mut e = entry(10, Some(100));
        assert_eq!(e.due(99), None);
        assert_eq!(e.due(100), Some(100));
        assert_eq!(e.due(105), None);
        assert_eq!(e.due(135), Some(135)); // 110, 120, 130 missed: fires once
        assert_eq!(e.next, Some(140));
    }

    #[test]
    fn stream_time_punctuator_starts_at_first_stream_time() {
        let mut e = entry(10, None);
        assert_eq!(e.due(7), Some(7));
        assert_eq!(e.due(16), None);
        assert_eq!(e.due(17), Some(17));
    }
}
