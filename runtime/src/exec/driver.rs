//! A query run synchronously on the caller's thread: the engine under
//! `weir::testing::TopologyTestDriver`.
//!
//! The tasks are built by the runtime's own factory (same nodes, same stores, same
//! planner) and run by the same `TaskInner::process`; what differs is who calls them.
//! There is no worker pool and no I/O thread: after every record appended to an input
//! topic the caller runs every task until none has anything left to read (records
//! written to repartition topics are read in the same call), committing after each
//! record, as Kafka Streams' `TopologyTestDriver` does. The record cache is off and
//! wall-clock time is a clock that moves only when told to.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::commit::TaskInner;
use super::core::ZoneHandles;
use super::factory::{BuiltTask, Factory};
use super::query::QueryShared;
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::io::broker::{Broker, BrokerTransport};
use crate::io::thread::IoCommand;
use crate::io::transport::Transport;
use crate::processor::internals::{Clock, TaskMetrics};
use crate::processor::{PunctuationType, TaskId};
use crate::record::RawRecord;
use crate::state::task_stores::TaskStores;
use crate::topology::Topology;
use crate::topology::plan::{Target, plan_query};

/// One task of the synchronous query and the partitions it reads.
struct SyncTask {
    id: TaskId,
    inner: TaskInner,
    built: Vec<super::factory::BuiltFeed>,
}

/// A query whose tasks run on the caller's thread, one record at a time.
pub(crate) struct SyncQuery {
    broker: Broker,
    query: Arc<QueryShared>,
    tasks: Vec<SyncTask>,
    clock: Arc<AtomicI64>,
    zones: ZoneHandles,
    /// Keeps the commands the tasks' query would send to an I/O thread (there is none).
    _io: Sender<IoCommand>,
}

impl SyncQuery {
    /// Plans `topology` as query `name` on `config`'s broker (creating the topics it
    /// reads and writes that do not exist yet, with one partition) and builds every
    /// task, with wall-clock time starting at `wall_clock_ms`.
    pub(crate) fn new(
        name: &str,
        topology: &Topology,
        config: &RuntimeConfig,
        wall_clock_ms: i64,
    ) -> Result<SyncQuery> {
        let broker = config.broker.clone();
        for topic in topology
            .source_topics()
            .into_iter()
            .chain(topology.sink_topics())
            .filter(|t| !topology.internal_topics.contains_key(t))
        {
            if broker.partitions(&topic).is_err() {
                broker.create_topic(&topic, 1)?;
            }
        }
        let transport: Arc<dyn Transport> = Arc::new(BrokerTransport::new(broker.clone()));
        let target = Target {
            grouped: false,
            changelogs: false,
        };
        let partitions = |t: &str| transport.partitions(t);
        let (plan, internal) =
            plan_query(&config.application_id, name, topology, &partitions, target)?;
        transport.ensure_topics(&internal)?;
        let zones = ZoneHandles::new(config)?;
        let (io, _) = crossbeam_channel::unbounded();
        let group = transport.group_id(&config.application_id, name);
        let query = Arc::new(QueryShared::new(name, group, Arc::new(plan), io.clone()));
        let clock = Arc::new(AtomicI64::new(wall_clock_ms));
        let factory = Factory {
            config,
            transport: &transport,
            zones: &zones,
            clock: Clock::Mock(clock.clone()),
            record_cache: false,
        };
        // Global tasks first, loaded from what their topics hold: they run first in
        // every round, so a piped global-table update is in the store before the
        // next record is processed.
        let mut tasks: Vec<SyncTask> = factory
            .build_global_tasks(&query)?
            .into_iter()
            .map(|b| SyncTask {
                id: b.id,
                inner: b.inner,
                built: b.feeds,
            })
            .collect();
        for (si, &count) in query.plan.counts.iter().enumerate() {
            if query.plan.is_global(si) {
                continue;
            }
            for p in 0..count {
                let built = match factory.build_task(&query, si, p, None) {
                    Ok(b) => b,
                    Err(e) => {
                        for mut t in tasks.drain(..).map(|t: SyncTask| t.inner) {
                            t.close_all();
                        }
                        return Err(e);
                    }
                };
                if let Some(BuiltTask {
                    id,
                    mut inner,
                    feeds,
                    ..
                }) = built
                {
                    // Records are piped one at a time and processed at once: there is
                    // nothing upstream to wait for.
                    inner.max_task_idle = None;
                    tasks.push(SyncTask {
                        id,
                        inner,
                        built: feeds,
                    });
                }
            }
        }
        Ok(SyncQuery {
            broker,
            query,
            tasks,
            clock,
            zones,
            _io: io,
        })
    }

    /// The broker the query reads and writes.
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Appends `record` to `topic` (partitioned as Kafka's default partitioner does)
    /// and processes everything it leads to.
    pub(crate) fn pipe(&mut self, topic: &str, record: RawRecord) -> Result<()> {
        self.broker.produce(topic, record)?;
        self.run_until_idle()
    }

    /// Current wall-clock time of the query's tasks.
    pub(crate) fn wall_clock(&self) -> i64 {
        self.clock.load(Ordering::Acquire)
    }

    /// Moves wall-clock time on by `by`, fires the wall-clock punctuators now due, and
    /// processes what they wrote.
    pub(crate) fn advance_wall_clock(&mut self, by: Duration) -> Result<()> {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = self.clock.load(Ordering::Acquire).saturating_add(ms);
        self.clock.store(now, Ordering::Release);
        for t in &mut self.tasks {
            t.inner
                .core
                .punctuate(PunctuationType::WallClockTime, now)?;
            commit(&self.query, &mut t.inner)?;
        }
        self.run_until_idle()
    }

    /// Runs every task, one record and one commit at a time, until no task has a
    /// record left to read.
    fn run_until_idle(&mut self) -> Result<()> {
        loop {
            let mut progressed = false;
            for t in &mut self.tasks {
                loop {
                    for (feed, partition, next, queue) in &mut t.built {
                        let (_, alive) = feed.fill(*partition, next, queue, &self.zones.queues);
                        if !alive {
                            return Err(Error::Topology(format!(
                                "task {}: its partition {partition} of '{}' cannot be read",
                                t.id,
                                feed.topic()
                            )));
                        }
                    }
                    if t.inner.process(1, Duration::MAX)? == 0 {
                        break;
                    }
                    progressed = true;
                    commit(&self.query, &mut t.inner)?;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Records dropped so far: by operators (closed windows) and by sources (skipped by
    /// the deserialization handler, negative timestamps).
    pub(crate) fn dropped_records(&self) -> u64 {
        self.tasks
            .iter()
            .map(|t| t.inner.core.env.metrics.dropped_total() + t.inner.core.env.skipped)
            .sum()
    }

    /// Records processor `name` dropped so far.
    pub(crate) fn dropped_records_by(&self, name: &str) -> u64 {
        self.tasks
            .iter()
            .map(|t| {
                let core = &t.inner.core;
                core.names
                    .iter()
                    .position(|n| n == name)
                    .map_or(0, |node| core.env.metrics.dropped_by_node(node))
            })
            .sum()
    }

    /// (max, average) lateness of the records processed so far.
    pub(crate) fn record_lateness(&self) -> Option<(i64, f64)> {
        TaskMetrics::combine(self.tasks.iter().map(|t| &t.inner.core.env.metrics))
    }

    /// The stores of every task holding store `name`, with the task's id.
    pub(crate) fn stores_named(&mut self, name: &str) -> Vec<(TaskId, &mut TaskStores, usize)> {
        self.tasks
            .iter_mut()
            .filter_map(|t| {
                let idx = t
                    .inner
                    .core
                    .env
                    .state
                    .stores
                    .iter()
                    .position(|s| s.name == name)?;
                Some((t.id, &mut t.inner.core.env.state, idx))
            })
            .collect()
    }

    /// Closes every task: processors and stores.
    pub(crate) fn close(&mut self) -> Result<()> {
        let mut first = Ok(());
        for t in &mut self.tasks {
            let r = commit(&self.query, &mut t.inner);
            if first.is_ok() {
                first = r;
            }
            t.inner.close_all();
        }
        self.tasks.clear();
        first
    }
}

/// The driver's commit: what the runtime's commit does but make the stores durable
/// (the driver's state is thrown away): buffers written out, sinks flushed, offsets
/// committed. A processor that asked to shut the query down fails the call.
fn commit(query: &QueryShared, inner: &mut TaskInner) -> Result<()> {
    inner.flush_buffers()?;
    inner.flush_sinks()?;
    inner.release_inputs();
    let offsets: Vec<(&str, u32, i64)> = inner
        .moved()
        .map(|(i, off)| (&*i.topic, i.partition, off))
        .collect();
    // A global task reads outside the group: it commits no offsets.
    if !offsets.is_empty() && inner.global.is_none() {
        inner
            .core
            .env
            .transport
            .commit(&query.group, &query.name, &offsets)?;
    }
    inner.committed();
    match inner.core.env.shutdown.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Drop for SyncQuery {
    fn drop(&mut self) {
        for t in &mut self.tasks {
            t.inner.close_all();
        }
    }
}
