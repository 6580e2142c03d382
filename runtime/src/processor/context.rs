//! The processor context: what every DSL operator compiles into, and what users write when
//!
//! What a [`Processor`](crate::Processor) can do while it runs: forward to its
//! children, read the current record's coordinates and the task's stream time,
//! schedule punctuations, and use the stores it is connected to.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::internals::{NodeId, PunctuatorEntry, StoreSerdes, TaskCore};
use super::stores::{SessionStoreHandle, StoreHandle, WindowStoreHandle};
use super::versioned::VersionedStoreHandle;
use super::{Cancellable, Data, PunctuationType, PunctuatorId, TaskId};
use crate::error::{Error, Result};
use crate::record::{Record, RecordMetadata};
use crate::state::task_stores::Access;
use crate::state::window::StoreType;

/// What a processor can do while it runs: forward, look at the current record's
/// coordinates and the task's time, schedule punctuations.
pub struct ProcessorContext<'a, K, V> {
    pub(crate) core: &'a mut TaskCore,
    pub(crate) node: NodeId,
    _out: PhantomData<fn(K, V)>,
}

impl<K, V> std::fmt::Debug for ProcessorContext<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorContext")
            .field("processor", &self.core.names[self.node])
            .field("task", &self.core.env.task_id)
            .finish()
    }
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
        self.core.env.clock.now()
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

    /// Schedules [`Processor::punctuate`](crate::Processor::punctuate) every `interval`
    /// of stream time or wall-clock time. Intervals under 1 ms are rejected. A missed
    /// interval fires once (as in Kafka Streams); punctuators run on the worker pool,
    /// woken by the I/O thread, with no timer thread per query.
    ///
    /// # Examples
    ///
    /// A processor that counts what it sees and forwards the count every second of
    /// stream time:
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_runtime::{Processor, ProcessorContext, Punctuation, PunctuationType, Record, Result};
    ///
    /// #[derive(Default)]
    /// struct Counter {
    ///     seen: i64,
    /// }
    ///
    /// impl Processor<String, String, String, i64> for Counter {
    ///     fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<()> {
    ///         ctx.schedule(Duration::from_secs(1), PunctuationType::StreamTime)?;
    ///         Ok(())
    ///     }
    ///
    ///     fn process(
    ///         &mut self,
    ///         _record: Record<String, String>,
    ///         _ctx: &mut ProcessorContext<'_, String, i64>,
    ///     ) -> Result<()> {
    ///         self.seen += 1;
    ///         Ok(())
    ///     }
    ///
    ///     fn punctuate(
    ///         &mut self,
    ///         p: &Punctuation,
    ///         ctx: &mut ProcessorContext<'_, String, i64>,
    ///     ) -> Result<()> {
    ///         ctx.forward(Record::new("seen".to_string(), self.seen, p.timestamp))
    ///     }
    /// }
    /// ```
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
            PunctuationType::WallClockTime => Some(env.clock.now() + interval_ms),
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
    pub(crate) fn store_index<SK: 'static, SV: 'static>(&self, name: &str) -> Result<usize> {
        let node = self.node;
        let processor = &self.core.names[node];
        let idx = self
            .core
            .env
            .state
            .stores
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                Error::Topology(format!(
                    "processor '{processor}' asked for store '{name}', which this task does not have"
                ))
            })?;
        let st = &self.core.env.state.stores[idx];
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

    pub(crate) fn store_serdes<SK: 'static, SV: 'static>(
        &self,
        idx: usize,
    ) -> Result<&StoreSerdes<SK, SV>> {
        let st = &self.core.env.state.stores[idx];
        st.serdes
            .downcast_ref::<StoreSerdes<SK, SV>>()
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
        self.store_serdes::<SK, SV>(idx)?;
        let timestamp = self.core.env.record_timestamp;
        Ok(StoreHandle {
            access: Access::new(&mut self.core.env.state, idx, timestamp),
            types: PhantomData,
        })
    }

    pub(crate) fn expect_type(
        &self,
        idx: usize,
        what: &str,
        ok: impl Fn(&StoreType) -> bool,
    ) -> Result<StoreType> {
        let st = &self.core.env.state.stores[idx];
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
            duplicates,
            ..
        } = ty
        else {
            unreachable!("checked by expect_type")
        };
        self.store_serdes::<SK, SV>(idx)?;
        let timestamp = self.core.env.record_timestamp;
        Ok(WindowStoreHandle {
            access: Access::new(&mut self.core.env.state, idx, timestamp),
            types: PhantomData,
            size_ms,
            segment_ms,
            duplicates,
        })
    }

    /// The session store `name` (declared with `StoreSpec::sessions`), typed `<SK, SV>`.
    pub fn session_store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<SessionStoreHandle<'_, SK, SV>> {
        let idx = self.store_index::<SK, SV>(name)?;
        let ty = self.expect_type(idx, "a session", |t| matches!(t, StoreType::Session { .. }))?;
        self.store_serdes::<SK, SV>(idx)?;
        let timestamp = self.core.env.record_timestamp;
        Ok(SessionStoreHandle {
            access: Access::new(&mut self.core.env.state, idx, timestamp),
            types: PhantomData,
            segment_ms: ty.segment_ms().unwrap_or(1),
        })
    }
}

impl<K, V> ProcessorContext<'_, K, V> {
    /// The versioned store `name` (declared with `StoreSpec::versioned`), typed
    /// `<SK, SV>`.
    pub fn versioned_store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<VersionedStoreHandle<'_, SK, SV>> {
        let idx = self.store_index::<SK, SV>(name)?;
        let ty = self.expect_type(idx, "a versioned", |t| {
            matches!(t, StoreType::Versioned { .. })
        })?;
        let StoreType::Versioned {
            history_ms,
            segment_ms,
        } = ty
        else {
            unreachable!("checked by expect_type")
        };
        self.store_serdes::<SK, SV>(idx)?;
        let timestamp = self.core.env.record_timestamp;
        Ok(VersionedStoreHandle {
            access: Access::new(&mut self.core.env.state, idx, timestamp),
            types: PhantomData,
            history_ms,
            segment_ms,
        })
    }

    pub(crate) fn windowed_access(&mut self, name: &str) -> Result<Access<'_>> {
        let node = self.node;
        let processor = &self.core.names[node];
        let Some(idx) = self.core.env.state.stores.iter().position(|s| {
            s.name == name
                && s.processors.contains(&node)
                && !matches!(s.store_type, StoreType::KeyValue)
        }) else {
            return Err(Error::Topology(format!(
                "processor '{processor}' is not connected to a window or session store named '{name}'"
            )));
        };
        let timestamp = self.core.env.record_timestamp;
        Ok(Access::new(&mut self.core.env.state, idx, timestamp))
    }
}
