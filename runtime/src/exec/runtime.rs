//! The runtime: one worker pool, one I/O thread, and the queries running on them.
//!
//! Threads are fixed when the runtime is built: `workers` rayon threads
//! (`weir-worker-N`) and one I/O thread (`weir-io`). Starting or stopping a query
//! creates and ends tasks, which are plain values scheduled onto the pool; no query
//! ever owns a thread.
//!
//! Fairness: runnable tasks wait in one FIFO run queue (a crossbeam channel). Each
//! enqueue spawns one rayon job that pops the *oldest* runnable task and runs one batch.
//! A task that yields with work left goes to the back. (Spawning the task itself would
//! let rayon's LIFO local deque run a self-re-spawning task again at once.)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{OffsetReset, RuntimeConfig};
use crate::error::{Error, Result};
use crate::exec::task::{Changelog, Input, Task, TaskCore, TaskEnv, TaskInner, TaskStore};
use crate::io::broker::{Broker, FetchBatch};
use crate::io::kafka::KafkaClients;
use crate::io::queue::{ByteBudget, PartitionQueue};
use crate::io::thread::{Binding, Feed, IoCommand, IoStats, IoThread};
use crate::processor::TaskId;
use crate::state::window::StoreType;
use crate::state::{CacheStats, InMemoryStore, KeyValueStore, RecordCache, StateEnv, StateUsage};
use crate::topology::{NodeId, NodeKind, StoreKind, SubTopology, Topology};

static NEXT_QUERY: AtomicU64 = AtomicU64::new(1);

/// What the tasks share: configuration, the pool and its run queue, the I/O thread.
pub(crate) struct RuntimeCore {
    pub(crate) config: RuntimeConfig,
    pool: rayon::ThreadPool,
    runq_tx: Sender<Arc<Task>>,
    runq_rx: Receiver<Arc<Task>>,
    io_tx: Sender<IoCommand>,
    io_wake: Sender<()>,
    io_stats: Arc<IoStats>,
    /// The memory zones' accounts (RocksDB, record cache, partition queues,
    /// suppression buffers, in-memory stores).
    pub(crate) zones: crate::memory::report::Zones,
    /// The shared Kafka clients, when the runtime reads and writes Kafka.
    pub(crate) kafka: Option<Arc<KafkaClients>>,
    /// The queries in the consumer group (Kafka).
    group: Mutex<Group>,
}

impl RuntimeCore {
    /// Exactly-once: the runtime's transaction.
    pub(crate) fn txn(&self) -> Option<&crate::io::kafka::Txn> {
        self.kafka.as_deref().and_then(KafkaClients::txn)
    }

    pub(crate) fn enqueue(&self, task: Arc<Task>) {
        // Unbounded and never closed while `self` lives.
        let _ = self.runq_tx.send(task);
        let rx = self.runq_rx.clone();
        self.pool.spawn(move || {
            if let Ok(task) = rx.try_recv() {
                task.run();
            }
        });
    }

    pub(crate) fn wake_io(&self) {
        let _ = self.io_wake.try_send(());
    }

    pub(crate) fn wake_at(&self, at_ms: i64, task: Weak<Task>) {
        let _ = self.io_tx.send(IoCommand::WakeAt { at_ms, task });
    }
}

/// What it takes to build a query's tasks, kept while the query runs: on Kafka, tasks
/// are created and closed as the group assigns and revokes partitions.
pub(crate) struct QueryPlan {
    topology: Topology,
    subs: Vec<SubTopology>,
    /// The sub-topology owning each store of `topology.stores`.
    store_sub: Vec<usize>,
    /// Tasks (partitions) per sub-topology.
    counts: Vec<u32>,
    /// Topology topic name -> broker topic name (internal topics are prefixed).
    topic_names: Arc<HashMap<String, String>>,
    children: Arc<Vec<Vec<usize>>>,
    names: Arc<Vec<String>>,
    kinds: Arc<Vec<NodeKind>>,
    /// Per sub-topology: its sources' (node, topic as named on the broker).
    sources: Vec<Vec<(NodeId, String)>>,
}

impl QueryPlan {
    /// Whether some sub-topology reads `topic`.
    fn reads(&self, topic: &str) -> bool {
        self.sources.iter().flatten().any(|(_, t)| t == topic)
    }
}

/// A task built for a query, not yet scheduled: the slot its cache waker points to,
/// and the partitions to bind (feed, partition, first offset, queue).
struct BuiltTask {
    id: TaskId,
    inner: TaskInner,
    slot: Arc<OnceLock<Weak<Task>>>,
    feeds: Vec<(Feed, u32, i64, Arc<PartitionQueue<FetchBatch>>)>,
}

/// The queries reading Kafka through the runtime's consumer group, and the topics the
/// consumer is subscribed to for them. Its lock orders task creation and revocation.
#[derive(Default)]
pub(crate) struct Group {
    queries: Vec<Arc<QueryShared>>,
    subscribed: BTreeSet<String>,
}

/// `<application>-<query>-<store>-changelog`.
pub(crate) fn changelog_topic(application: &str, query: &str, store: &str) -> String {
    format!("{application}-{query}-{store}-changelog")
}

/// How long a rebalance waits for a revoked task to commit and close.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

impl RuntimeCore {
    /// Opens store `def` of task `task_id` of query `name`. On Kafka it first restores
    /// what its changelog holds past the store's checkpoint (counting the records in
    /// `restored`), then logs every write to the changelog.
    fn open_task_store(
        &self,
        def: &crate::topology::StoreDef,
        name: &str,
        task_id: TaskId,
        query_id: u64,
        restored: &AtomicU64,
    ) -> Result<TaskStore> {
        let cfg = &self.config;
        let dir = cfg
            .state_dir
            .join(name)
            .join(task_id.to_string())
            .join(&def.name);
        let on_disk = def.kind == StoreKind::RocksDb;
        let exactly_once = self.txn().is_some();
        let checkpoint = match &self.kafka {
            Some(_) if on_disk => crate::io::kafka::read_checkpoint(&dir),
            _ => None,
        };
        if exactly_once && on_disk {
            // A checkpoint is written only at a clean close, after the last commit: a
            // store without one may hold writes of an aborted transaction, so it is
            // rebuilt from its changelog's committed records. While the task runs the
            // store is ahead of any checkpoint: none stays on disk.
            let _ = std::fs::remove_file(crate::io::kafka::checkpoint_path(&dir));
            if checkpoint.is_none() && dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| Error::io(format!("cannot wipe store {}", dir.display()), e))?;
            }
        }
        let mut store: Box<dyn KeyValueStore> = match def.kind {
            StoreKind::RocksDb => Box::new(self.zones.state.open_store(&def.name, &dir)?),
            StoreKind::InMemory => Box::new(InMemoryStore::new(
                def.name.clone(),
                self.zones.in_memory.clone(),
            )),
        };
        let mut changelog = None;
        if let Some(k) = &self.kafka {
            // The plan checked that it exists with enough partitions.
            let topic = changelog_topic(&cfg.application_id, name, &def.name);
            let p = task_id.partition;
            let from = checkpoint.unwrap_or(0);
            // Progress: records restored so far into this task's store.
            let progress = metrics::gauge!(
                "weir_restored_records",
                "query" => name.to_string(),
                "store" => def.name.clone(),
                "task" => task_id.to_string()
            );
            let mut so_far = 0usize;
            let (n, end) = k.restore(&topic, p, from, |batch| {
                let entries: Vec<crate::state::BatchEntry<'_>> = batch
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect();
                store.write_batch(&entries)?;
                so_far += entries.len();
                progress.set(so_far as f64);
                Ok(())
            })?;
            if n > 0 {
                store.flush()?;
                log::info!(
                    "query '{name}' task {task_id}: restored {n} records of store '{}' from '{topic}' (offsets {from}..{end})",
                    def.name
                );
            }
            restored.fetch_add(n, Ordering::Relaxed);
            store = Box::new(crate::io::kafka::ChangeloggedStore {
                inner: store,
                kafka: k.clone(),
                query: query_id,
                topic: topic.clone(),
                partition: p,
            });
            changelog = Some(Changelog {
                topic,
                partition: p,
                checkpoint_dir: on_disk.then_some(dir),
            });
        }
        let (disk_segment, min_live) = match def.store_type {
            StoreType::KeyValue => (i64::MIN, i64::MIN),
            ty => TaskStore::opened(&*store, ty)?,
        };
        Ok(TaskStore {
            name: def.name.clone(),
            store,
            types: def.types,
            serdes: def.serdes.clone(),
            processors: def.processors.clone(),
            cached: def.caching,
            forwarder: None,
            forward_old: false,
            store_type: def.store_type,
            live_segment: i64::MIN,
            min_live,
            disk_segment,
            changelog,
        })
    }

    /// Builds task (`si`, `p`) of `query`: its processors (initialized), its stores
    /// (restored on Kafka) and its inputs. With `owned`, only the Kafka partitions this
    /// member owns are read; `None` if that leaves nothing to read.
    fn build_task(
        &self,
        query: &QueryShared,
        si: usize,
        p: u32,
        owned: Option<&HashSet<(String, i32)>>,
    ) -> Result<Option<BuiltTask>> {
        let cfg = &self.config;
        let plan = &query.plan;
        let name = &*query.name;
        let task_id = TaskId {
            subtopology: si,
            partition: p,
        };
        let mut inputs = Vec::new();
        let mut feeds = Vec::new();
        for (s, actual) in &plan.sources[si] {
            let (feed, topic_name, start) = match &self.kafka {
                Some(k) => {
                    if p >= k.partitions(actual)?
                        || owned.is_some_and(|o| !o.contains(&(actual.clone(), p as i32)))
                    {
                        continue;
                    }
                    let earliest = cfg.offset_reset == OffsetReset::Earliest;
                    let start = k.start_offset(name, actual, p, earliest)?;
                    let topic: Arc<str> = Arc::from(actual.as_str());
                    let feed = Feed::Kafka {
                        topic: topic.clone(),
                        waiting: Default::default(),
                        pausing: false,
                    };
                    (feed, topic, start)
                }
                None => {
                    let log = cfg.broker.topic(actual)?;
                    if p >= log.partition_count() {
                        continue;
                    }
                    let start = match cfg.broker.committed(&query.group, actual, p) {
                        Some(o) => o,
                        None => match cfg.offset_reset {
                            OffsetReset::Earliest => 0,
                            OffsetReset::Latest => log.end_offset(p)?,
                        },
                    };
                    let name = log.name.clone();
                    (Feed::Log(log), name, start)
                }
            };
            let queue = Arc::new(PartitionQueue::new(
                cfg.queue_max_records_per_partition,
                self.zones.queues.clone(),
            ));
            inputs.push(Input::new(topic_name, p, *s, queue.clone()));
            feeds.push((feed, p, start, queue));
        }
        if owned.is_some() && inputs.is_empty() {
            return Ok(None);
        }
        let st = &plan.subs[si];
        let mut nodes: Vec<Option<Box<dyn crate::processor::Node>>> =
            (0..plan.topology.nodes.len()).map(|_| None).collect();
        for &n in &st.nodes {
            nodes[n] = Some((plan.topology.nodes[n].factory)());
        }
        let mut core = TaskCore {
            nodes,
            children: plan.children.clone(),
            names: plan.names.clone(),
            kinds: plan.kinds.clone(),
            env: TaskEnv {
                task_id,
                query: query.name.clone(),
                query_id: query.id,
                application_id: Arc::from(cfg.application_id.as_str()),
                metadata: None,
                stream_time: i64::MIN,
                record_timestamp: 0,
                punctuators: Vec::new(),
                next_punctuator: 0,
                broker: cfg.broker.clone(),
                kafka: self.kafka.clone(),
                topic_names: plan.topic_names.clone(),
                deserialization_handler: cfg.deserialization_handler,
                skipped: 0,
                stores: Vec::new(),
                cache: None,
                pending_forwards: Default::default(),
                dropped_late: 0,
                suppression_budget: self.zones.suppression.clone(),
                shutdown: None,
            },
            current: None,
        };
        for (def, _) in plan
            .topology
            .stores
            .iter()
            .zip(&plan.store_sub)
            .filter(|(_, s)| **s == si)
        {
            let store = self.open_task_store(def, name, task_id, query.id, &query.restored)?;
            core.env.stores.push(store);
        }
        // The cache wakes the task when another task asks it to evict; the task exists
        // only later, so the waker finds it through a slot set then.
        let slot: Arc<OnceLock<Weak<Task>>> = Arc::new(OnceLock::new());
        if !core.env.stores.is_empty() {
            let s = slot.clone();
            core.env.cache = Some(self.zones.record_cache.task_cache(Arc::new(move || {
                if let Some(t) = s.get().and_then(Weak::upgrade) {
                    t.notify();
                }
            })));
        }
        let mut inner = TaskInner::new(core, inputs, st.nodes.clone(), st.sinks.clone());
        if let Err(e) = inner.init() {
            inner.close_all();
            return Err(e);
        }
        Ok(Some(BuiltTask {
            id: task_id,
            inner,
            slot,
            feeds,
        }))
    }

    /// Schedules a built task of `query` and returns its bindings for the I/O thread
    /// (none, and the task is closed, if the query is stopping by now).
    fn launch(self: &Arc<Self>, query: &Arc<QueryShared>, built: BuiltTask) -> Vec<Binding> {
        let task = Arc::new(Task::new(
            built.id,
            query.clone(),
            self.clone(),
            built.inner,
        ));
        let _ = built.slot.set(Arc::downgrade(&task));
        if let Some(txn) = self.txn() {
            let t = Arc::downgrade(&task);
            txn.join(
                task.uid,
                Box::new(move || {
                    if let Some(t) = t.upgrade() {
                        t.notify();
                    }
                }),
            );
        }
        if !query.add_task(task.clone()) {
            task.discard();
            return Vec::new();
        }
        // Run it once so wall-clock punctuators and commits get their deadlines.
        task.notify();
        built
            .feeds
            .into_iter()
            .map(|(feed, partition, next_offset, queue)| Binding {
                query: query.id,
                query_name: query.name.clone(),
                feed,
                partition,
                next_offset,
                queue,
                task: Arc::downgrade(&task),
            })
            .collect()
    }

    /// Subscribes the consumer to every topic the group's queries read (unsubscribes
    /// when there is none), if that changed.
    fn update_subscription(&self, group: &mut Group) -> Result<()> {
        let Some(k) = &self.kafka else {
            return Ok(());
        };
        let topics: BTreeSet<String> = group
            .queries
            .iter()
            .filter(|q| !q.is_stopping())
            .flat_map(|q| q.plan.sources.iter().flatten().map(|(_, t)| t.clone()))
            .collect();
        if topics != group.subscribed {
            k.subscribe(&topics)?;
            group.subscribed = topics;
        }
        Ok(())
    }

    /// Builds and schedules the tasks of `query` that read partitions this member owns
    /// and that it does not run yet; returns their bindings.
    fn start_owned_tasks(self: &Arc<Self>, query: &Arc<QueryShared>) -> Result<Vec<Binding>> {
        let Some(k) = &self.kafka else {
            return Ok(Vec::new());
        };
        let owned = k.owned();
        let running: HashSet<TaskId> = query.tasks().iter().map(|t| t.id).collect();
        let mut bindings = Vec::new();
        for (si, &count) in query.plan.counts.iter().enumerate() {
            for p in 0..count {
                let id = TaskId {
                    subtopology: si,
                    partition: p,
                };
                let reads_owned = query.plan.sources[si]
                    .iter()
                    .any(|(_, t)| owned.contains(&(t.clone(), p as i32)));
                if running.contains(&id) || !reads_owned {
                    continue;
                }
                if let Some(built) = self.build_task(query, si, p, Some(&owned))? {
                    bindings.extend(self.launch(query, built));
                }
            }
        }
        Ok(bindings)
    }

    /// Takes a query that stopped out of the group, unsubscribing its topics.
    pub(crate) fn leave_group(&self, query: &QueryShared) {
        if self.kafka.is_none() {
            return;
        }
        let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        g.queries
            .retain(|q| !std::ptr::eq(&**q, query) && !q.is_stopping());
        if let Err(e) = self.update_subscription(&mut g) {
            log::warn!("cannot update the Kafka subscription: {e}");
        }
    }
}

impl crate::io::kafka::GroupMember for RuntimeCore {
    fn revoked(self: Arc<Self>, partitions: &[(String, i32)]) {
        let g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        let gone: HashSet<(&str, u32)> = partitions
            .iter()
            .map(|(t, p)| (t.as_str(), *p as u32))
            .collect();
        let mut closing = Vec::new();
        for q in &g.queries {
            for t in q.tasks() {
                if t.partitions
                    .iter()
                    .any(|(tp, p)| gone.contains(&(&**tp, *p)))
                {
                    t.revoke();
                    closing.push(t);
                }
            }
        }
        for t in closing {
            if !t.wait_closed(REVOKE_TIMEOUT) {
                log::error!(
                    "query '{}' task {}: not closed {} s after its partitions were revoked",
                    t.query.name,
                    t.id,
                    REVOKE_TIMEOUT.as_secs()
                );
            }
        }
        if let Some(k) = &self.kafka {
            k.disown(partitions);
        }
    }

    fn assigned(self: Arc<Self>, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        let Some(k) = &self.kafka else {
            return vec![None; partitions.len()];
        };
        let g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = self.config.offset_reset == OffsetReset::Earliest;
        // Where each partition is read from: the earliest position a query needs
        // (each binding skips what it has already processed).
        let starts: Vec<Option<i64>> = partitions
            .iter()
            .map(|(t, p)| {
                k.forget_positions(t, *p);
                g.queries
                    .iter()
                    .filter(|q| !q.is_stopping() && q.plan.reads(t))
                    .filter_map(|q| match k.start_offset(&q.name, t, *p as u32, earliest) {
                        Ok(o) => Some(o),
                        Err(e) => {
                            log::warn!("query '{}': {e}", q.name);
                            None
                        }
                    })
                    .min()
            })
            .collect();
        k.own(partitions, &starts);
        starts
    }

    fn start_assigned(self: Arc<Self>) -> Vec<Binding> {
        let g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        let mut bindings = Vec::new();
        for q in g.queries.iter().filter(|q| !q.is_stopping()) {
            match self.start_owned_tasks(q) {
                Ok(b) => bindings.extend(b),
                Err(e) => {
                    log::error!("query '{}': cannot start its assigned tasks: {e}", q.name);
                    q.fail(e);
                }
            }
        }
        bindings
    }
}

/// The lifecycle state of a query.
#[derive(Debug, Clone)]
pub enum QueryState {
    /// Processing.
    Running,
    /// `stop` was called (or a task failed) and tasks are closing.
    Stopping,
    /// Stopped cleanly: every task flushed and committed.
    Stopped,
    /// Failed: the first error any of its tasks hit. Nothing after the last commit was
    /// committed.
    Failed(Error),
}

impl QueryState {
    /// True for `Stopped` and `Failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, QueryState::Stopped | QueryState::Failed(_))
    }
}

impl PartialEq for QueryState {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Counters of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Records taken from partition queues and run through the topology.
    pub records_processed: u64,
    /// Records skipped by a log-and-continue deserialization handler (or for a
    /// negative extracted timestamp).
    pub records_skipped: u64,
    /// Records windowed operators dropped because their window had closed (stream time
    /// past window end + grace), counted once per window they missed.
    pub records_dropped_late: u64,
    /// Tasks (sub-topology × partition) the query runs now. On Kafka, those of the
    /// partitions the consumer group assigned to this process (none before the first
    /// assignment, and none once stopped).
    pub tasks: usize,
    /// Store entries read back from changelog topics before tasks started (Kafka).
    pub records_restored: u64,
    /// Records in its input partitions it has not processed yet (end offset less its
    /// position, summed over its partitions), as of the I/O thread's last second; on
    /// Kafka from the end offsets the consumer's last fetches saw. Also the gauge
    /// `weir_consumer_lag_records{query,topic,partition}`.
    pub lag: u64,
}

struct Status {
    state: QueryState,
    failure: Option<Error>,
    /// The failure came with a commit of everything processed (a full suppression
    /// buffer that shuts its query down): the other tasks commit as they close too.
    commit_on_stop: bool,
}

/// Shared state of one running query.
pub(crate) struct QueryShared {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) group: String,
    status: Mutex<Status>,
    cv: Condvar,
    stopping: AtomicBool,
    /// Open tasks, plus one while the query runs (released by the stop): the query is
    /// terminal when this reaches zero. On Kafka a query may have no task for a while
    /// (no partition assigned to this member) and still be running.
    open_tasks: std::sync::atomic::AtomicUsize,
    /// The open tasks. Set `stopping` under this lock: no task joins a stopping query.
    tasks: Mutex<Vec<Arc<Task>>>,
    restored: AtomicU64,
    /// Records in its input partitions not yet processed (set by the I/O thread).
    lag: AtomicU64,
    /// How to build the query's tasks, kept for tasks created later (on Kafka, when the
    /// group assigns partitions).
    plan: Arc<QueryPlan>,
    processed: AtomicU64,
    skipped: AtomicU64,
    dropped_late: AtomicU64,
    io_tx: Sender<IoCommand>,
}

impl QueryShared {
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn is_clean_stop(&self) -> bool {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.failure.is_none() || s.commit_on_stop
    }

    pub(crate) fn record_progress(&self, processed: u64, skipped: u64, dropped_late: u64) {
        self.processed.fetch_add(processed, Ordering::Relaxed);
        if dropped_late > 0 {
            self.dropped_late.fetch_add(dropped_late, Ordering::Relaxed);
            metrics::counter!("weir_records_dropped_late_total", "query" => self.name.to_string())
                .increment(dropped_late);
        }
        if skipped > 0 {
            self.skipped.fetch_add(skipped, Ordering::Relaxed);
            metrics::counter!("weir_records_skipped_total", "query" => self.name.to_string())
                .increment(skipped);
        }
        metrics::counter!("weir_records_processed_total", "query" => self.name.to_string())
            .increment(processed);
    }

    /// Starts closing every task: cleanly (commit) unless a failure was recorded.
    fn begin_stop(&self) {
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(s.state, QueryState::Running) {
                s.state = QueryState::Stopping;
            }
        }
        let (first, tasks) = {
            let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            (!self.stopping.swap(true, Ordering::AcqRel), tasks.clone())
        };
        if first {
            let _ = self.io_tx.send(IoCommand::Unbind { query: self.id });
        }
        for t in &tasks {
            t.notify();
        }
        if first {
            // The running query's own count: the last task closing (or none open)
            // makes it terminal.
            self.release_open();
        }
    }

    pub(crate) fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// Adds a task built for this query; false (and the task is not added) if the query
    /// is stopping.
    pub(crate) fn add_task(&self, task: Arc<Task>) -> bool {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        self.open_tasks.fetch_add(1, Ordering::AcqRel);
        tasks.push(task);
        true
    }

    /// The open tasks now.
    pub(crate) fn tasks(&self) -> Vec<Arc<Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the first failure and stops the query without committing.
    pub(crate) fn fail(&self, e: Error) {
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if s.failure.is_none() && !s.state.is_terminal() {
                s.failure = Some(e);
            }
        }
        self.begin_stop();
    }

    /// Records `e` as the query's failure after its task committed everything it
    /// processed; the other tasks commit as they close, so a restart resumes exactly
    /// where the query stopped.
    pub(crate) fn fail_after_commit(&self, e: Error) {
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if s.failure.is_none() && !s.state.is_terminal() {
                s.failure = Some(e);
                s.commit_on_stop = true;
            }
        }
        self.begin_stop();
    }

    /// Task `task` has closed (the query stopping, or its partitions revoked); the last
    /// one of a stopping query makes it terminal.
    pub(crate) fn task_closed(&self, task: &Task) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|t| !std::ptr::eq(&**t, task));
        self.release_open();
    }

    fn release_open(&self) {
        if self.open_tasks.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = match s.failure.clone() {
            Some(e) => QueryState::Failed(e),
            None => QueryState::Stopped,
        };
        // Break the task -> query -> task cycle; nothing schedules these tasks again.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.cv.notify_all();
    }

    fn state(&self) -> QueryState {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .clone()
    }

    fn wait(&self, timeout: Option<Duration>) -> QueryState {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        while !s.state.is_terminal() {
            match deadline {
                None => s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    s = self
                        .cv
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        s.state.clone()
    }
}

/// Query names name directories, topics and groups: non-empty ASCII letters, digits,
/// '.', '_' or '-'.
fn check_query_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || name == "."
        || name == ".."
    {
        return Err(Error::Config(format!(
            "query name '{name}' must be non-empty ASCII letters, digits, '.', '_' or '-' (and not '.' or '..')"
        )));
    }
    Ok(())
}

/// A handle on a running query.
#[derive(Clone)]
pub struct QueryHandle {
    shared: Arc<QueryShared>,
    core: Arc<RuntimeCore>,
}

impl std::fmt::Debug for QueryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryHandle")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl QueryHandle {
    /// The query's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The consumer group the query commits its offsets to: `<application>-<query>` on
    /// the in-process broker, the application id on Kafka (each query's own position is
    /// in the offsets' metadata).
    pub fn group_id(&self) -> &str {
        &self.shared.group
    }

    /// The current state.
    pub fn state(&self) -> QueryState {
        self.shared.state()
    }

    /// Counters.
    pub fn stats(&self) -> QueryStats {
        QueryStats {
            records_processed: self.shared.processed.load(Ordering::Relaxed),
            records_skipped: self.shared.skipped.load(Ordering::Relaxed),
            records_dropped_late: self.shared.dropped_late.load(Ordering::Relaxed),
            tasks: self.shared.tasks().len(),
            records_restored: self.shared.restored.load(Ordering::Relaxed),
            lag: self.shared.lag.load(Ordering::Relaxed),
        }
    }

    /// Stops the query cleanly: every task finishes its batch, flushes its sinks,
    /// commits its offsets and closes its processors. Blocks until that is done, except
    /// when called from one of the runtime's own workers (then it only starts the stop;
    /// use [`QueryHandle::await_termination`] elsewhere). Returns the query's error if it
    /// had failed.
    pub fn stop(&self) -> Result<()> {
        self.shared.begin_stop();
        if self.core.pool.current_thread_index().is_some() {
            return Ok(());
        }
        let state = self.shared.wait(None);
        // Its topics leave the consumer's subscription (from a worker that would wait
        // for a rebalance the worker may be needed for; the next start prunes it).
        self.core.leave_group(&self.shared);
        match state {
            QueryState::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits until the query is stopped or failed, or `timeout` passes; returns its
    /// state then.
    pub fn await_termination(&self, timeout: Option<Duration>) -> QueryState {
        self.shared.wait(timeout)
    }
}

/// The engine: one fixed worker pool running every query.
pub struct Runtime {
    core: Arc<RuntimeCore>,
    queries: Mutex<HashMap<String, Arc<QueryShared>>>,
    io_thread: Mutex<Option<JoinHandle<()>>>,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("application_id", &self.core.config.application_id)
            .field("workers", &self.core.config.workers)
            .finish()
    }
}

impl Runtime {
    /// Starts the worker pool and the I/O thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        crate::memory::report::configure_allocator();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|i| format!("weir-worker-{i}"))
            .panic_handler(|p| {
                // Tasks catch their own panics; this only sees the runtime's own bugs.
                log::error!("panic escaped a weir task: {:?}", p.downcast_ref::<&str>());
            })
            .build()
            .map_err(|e| Error::Config(format!("cannot start the worker pool: {e}")))?;
        let (runq_tx, runq_rx) = crossbeam_channel::unbounded();
        let (io_tx, io_rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let io_stats = Arc::new(IoStats::default());
        let sc = config.state;
        let zones = crate::memory::report::Zones {
            limit: config.memory_limit,
            state: StateEnv::from_config(&sc)?,
            record_cache: RecordCache::new(sc.record_cache_bytes),
            queues: Arc::new(ByteBudget::new(config.queue_max_bytes)),
            suppression: Arc::new(ByteBudget::new(sc.suppression_buffer_bytes)),
            in_memory: Arc::new(ByteBudget::new(sc.in_memory_store_bytes)),
        };
        let kafka = match &config.kafka {
            Some(_) => Some(Arc::new(KafkaClients::new(&config)?)),
            None => None,
        };
        let io = IoThread {
            kafka: kafka.clone(),
            commands: io_rx,
            wake: wake_rx,
            appends: config.broker.subscribe(),
            stats: io_stats.clone(),
            zones: zones.clone(),
        };

        let handle = std::thread::Builder::new()
            .name("weir-io".into())
            .spawn(move || io.run())
            .map_err(|e| Error::io("cannot start the I/O thread", e))?;
        metrics::gauge!("weir_threads", "kind" => "worker").set(config.workers as f64);
        metrics::gauge!("weir_threads", "kind" => "io").set(1.0);
        metrics::gauge!("weir_queue_bytes_limit").set(config.queue_max_bytes as f64);
        let core = Arc::new(RuntimeCore {
            config,
            pool,
            runq_tx,
            runq_rx,
            io_tx,
            io_wake: wake_tx,
            io_stats,
            zones,
            kafka,
            group: Mutex::new(Group::default()),
        });
        if let Some(k) = &core.kafka {
            let member: Weak<dyn crate::io::kafka::GroupMember> = Arc::downgrade(&core) as _;
            k.set_member(member);
        }
        Ok(Runtime {
            core,
            queries: Mutex::new(HashMap::new()),
            io_thread: Mutex::new(Some(handle)),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.core.config
    }

    /// The broker its sources and sinks attach to.
    pub fn broker(&self) -> &Broker {
        &self.core.config.broker
    }

    /// The runtime's thread inventory: workers, the I/O thread, and RocksDB's shared
    /// background pool (one flush thread plus `rocksdb_background_threads` compaction
    /// threads, started when the runtime starts). Fixed for the runtime's lifetime, and
    /// independent of the number of queries. RocksDB's pool belongs to its process-wide
    /// default environment: a second runtime in the same process shares it (and can
    /// only grow it).
    pub fn thread_count(&self) -> usize {
        self.core.config.workers + 1 + 1 + self.core.config.state.rocksdb_background_threads
    }

    /// Every zone's bytes next to its bound, what no zone owns against the headroom,
    /// jemalloc's counters (with the `jemalloc` feature, on a process running on
    /// jemalloc) and the process's resident set. `Display`s as a table.
    pub fn memory_report(&self) -> crate::memory::report::MemoryReport {
        self.core.zones.report()
    }

    /// Bytes held in suppression buffers now (every operator of every query), and the
    /// one budget they share.
    pub fn suppression_bytes(&self) -> (usize, usize) {
        (
            self.core.zones.suppression.used(),
            self.core.zones.suppression.cap(),
        )
    }

    /// Bytes held in partition queues now, and their cap.
    pub fn queue_bytes(&self) -> (usize, usize) {
        (self.core.zones.queues.used(), self.core.zones.queues.cap())
    }

    /// Where RocksDB's bytes are (shared cache, memtables, table readers), next to the
    /// bound.
    pub fn state_usage(&self) -> StateUsage {
        self.core.zones.state.usage()
    }

    /// The record cache's size, budget and counters.
    pub fn record_cache_stats(&self) -> CacheStats {
        self.core.zones.record_cache.stats()
    }

    /// Bytes held by in-memory stores, and their budget.
    pub fn in_memory_store_bytes(&self) -> (usize, usize) {
        (
            self.core.zones.in_memory.used(),
            self.core.zones.in_memory.cap(),
        )
    }

    /// Partitions the I/O thread is holding back because their queues are full.
    pub fn paused_partitions(&self) -> usize {
        self.core.io_stats.paused.load(Ordering::Relaxed)
    }

    /// The handle of a query started on this runtime (running or terminated).
    pub fn query(&self, name: &str) -> Option<QueryHandle> {
        let queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        queries.get(name).map(|q| QueryHandle {
            shared: q.clone(),
            core: self.core.clone(),
        })
    }

    /// Starts a query. Its consumer group is `<application>-<name>`; its internal topics
    /// are created as `<application>-<name>-<topic>`. Source and sink topics must exist.
    /// Every processor's `init` runs before this returns, and an error there is returned
    /// here.
    ///
    /// On Kafka the group is the application id, and the query's tasks follow the
    /// partitions the group assigns to this process: those it owns already start before
    /// this returns (an `init` error is returned), the others when a rebalance assigns
    /// them (an error then fails the query). Several processes running the same queries
    /// with the same application id share the work.
    pub fn start_query(&self, name: &str, topology: Topology) -> Result<QueryHandle> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        check_query_name(name)?;
        let mut queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queries.get(name)
            && !q.state().is_terminal()
        {
            return Err(Error::QueryExists(name.to_string()));
        }
        let shared = self.build_query(name, &topology)?;
        queries.insert(name.to_string(), shared.clone());
        Ok(QueryHandle {
            shared,
            core: self.core.clone(),
        })
    }

    /// Deletes the local state of query `name` (its stores' directories under the
    /// state directory), like Kafka Streams' `cleanUp()`: for a query stopped for good,
    /// or one that should rebuild its stores (from its changelogs on Kafka) when it
    /// starts again. The query must not be running (`Error::QueryRunning`); state left
    /// by an earlier process is deleted too. Committed offsets and changelogs stay.
    pub fn clean_up_query(&self, name: &str) -> Result<()> {
        check_query_name(name)?;
        // Held while deleting, so the query cannot start again meanwhile.
        let queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queries.get(name)
            && !q.state().is_terminal()
        {
            return Err(Error::QueryRunning(name.to_string()));
        }
        let dir = self.core.config.state_dir.join(name);
        // A stopped query's tasks drop their stores as they close; RocksDB finishes
        // its background jobs (which may still write files there) before it closes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.core.zones.state.any_open_under(&dir) {
            if Instant::now() > deadline {
                return Err(Error::Store {
                    store: name.to_string(),
                    message: format!(
                        "a store under {} is still open 60 s after the query stopped",
                        dir.display()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                format!(
                    "cannot delete the state of query '{name}' at {}",
                    dir.display()
                ),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Partition count of a topic on the broker the runtime uses.
    fn partitions(&self, topic: &str) -> Result<u32> {
        match &self.core.kafka {
            Some(k) => k.partitions(topic),
            None => self.core.config.broker.partitions(topic),
        }
    }

    /// Checks `topology` against the cluster and works out its tasks: partitions per
    /// sub-topology, internal topic names (created here on the in-process broker), the
    /// changelogs on Kafka.
    fn plan_query(&self, name: &str, topology: &Topology) -> Result<QueryPlan> {
        let core = &self.core;
        let cfg = &core.config;
        if topology.is_empty() {
            return Err(Error::Topology(format!(
                "query '{name}' has an empty topology"
            )));
        }
        let subs = topology.subtopologies()?;
        // Each store lives in exactly one sub-topology (one instance per task).
        let mut store_sub: Vec<usize> = Vec::with_capacity(topology.stores.len());
        for st in &topology.stores {
            let mut owners = st
                .processors
                .iter()
                .map(|p| subs.iter().position(|s| s.nodes.contains(p)).unwrap_or(0));
            let Some(first) = owners.next() else {
                return Err(Error::Topology(format!(
                    "store '{}' is not connected to any processor",
                    st.name
                )));
            };
            if owners.any(|o| o != first) {
                return Err(Error::Topology(format!(
                    "store '{}' is used by processors of different sub-topologies",
                    st.name
                )));
            }
            store_sub.push(first);
        }
        let prefix = format!("{}-{name}-", cfg.application_id);
        let topic_names: Arc<HashMap<String, String>> = Arc::new(
            topology
                .internal_topics
                .keys()
                .map(|t| (t.clone(), format!("{prefix}{t}")))
                .collect(),
        );
        let resolve = |t: &str| topic_names.get(t).cloned().unwrap_or_else(|| t.to_string());

        // Partition count of each sub-topology = max over its source topics; internal
        // topics without a count take the count of the sub-topology writing them.
        let mut internal: HashMap<String, u32> = HashMap::new();
        for (t, p) in &topology.internal_topics {
            if let Some(p) = p {
                internal.insert(t.clone(), *p);
            }
        }
        let mut counts: Vec<Option<u32>> = vec![None; subs.len()];
        // Sub-topologies with stores whose source topics differ in partition count.
        let mut uneven: Vec<Option<String>> = vec![None; subs.len()];
        for _ in 0..=subs.len() {
            for (i, st) in subs.iter().enumerate() {
                let mut max = Some(0u32);
                let mut seen = Vec::new();
                for &s in &st.sources {
                    let NodeKind::Source { topics } = &topology.nodes[s].kind else {
                        continue;
                    };
                    for t in topics {
                        let n = if topology.internal_topics.contains_key(t) {
                            internal.get(t).copied()
                        } else {
                            Some(self.partitions(t).map_err(|e| match e {
                                Error::UnknownTopic(_) => Error::Topology(format!(
                                    "source topic '{t}' of query '{name}' does not exist"
                                )),
                                e => Error::Topology(format!(
                                    "source topic '{t}' of query '{name}': {e}"
                                )),
                            })?)
                        };
                        if let Some(n) = n {
                            seen.push((t.clone(), n));
                        }
                        max = match (max, n) {
                            (Some(m), Some(n)) => Some(m.max(n)),
                            _ => None,
                        };
                    }
                }
                if seen.windows(2).any(|w| w[0].1 != w[1].1) {
                    uneven[i] = Some(
                        seen.iter()
                            .map(|(t, n)| format!("'{t}' ({n})"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                }
                counts[i] = max;
                if let Some(c) = max {
                    for &k in &st.sinks {
                        if let NodeKind::Sink { topic } = &topology.nodes[k].kind
                            && topology.internal_topics.contains_key(topic)
                        {
                            internal.entry(topic.clone()).or_insert(c);
                        }
                    }
                }
            }
        }
        let mut on_kafka = Vec::new();
        for t in topology.internal_topics.keys() {
            let Some(p) = internal.get(t) else {
                return Err(Error::Topology(format!(
                    "cannot size internal topic '{t}': it is read in a cycle or never written"
                )));
            };
            match &core.kafka {
                Some(_) => on_kafka.push(crate::io::kafka::InternalTopic {
                    name: resolve(t),
                    partitions: *p,
                    changelog: false,
                }),
                None => cfg.broker.create_topic(&resolve(t), *p)?,
            }
        }
        for def in &topology.nodes {
            if let NodeKind::Sink { topic } = &def.kind
                && !topology.internal_topics.contains_key(topic)
                && let Err(e) = self.partitions(topic)
            {
                return Err(Error::Topology(match e {
                    Error::UnknownTopic(_) => {
                        format!("sink topic '{topic}' of query '{name}' does not exist")
                    }
                    e => format!("sink topic '{topic}' of query '{name}': {e}"),
                }));
            }
        }
        let counts: Vec<u32> = counts.into_iter().map(|c| c.unwrap_or(0)).collect();
        if let Some(k) = &core.kafka {
            // Tasks move between members by partition number: a task's store holds the
            // keys of partition p of every topic it reads, which the group's range
            // assignment gives one member only if the topics have as many partitions.
            for (def, &si) in topology.stores.iter().zip(&store_sub) {
                if let Some(topics) = &uneven[si] {
                    return Err(Error::Topology(format!(
                        "store '{}' of query '{name}' is fed by topics with different partition counts ({topics}); on Kafka they must be co-partitioned",
                        def.name
                    )));
                }
                on_kafka.push(crate::io::kafka::InternalTopic {
                    name: changelog_topic(&cfg.application_id, name, &def.name),
                    partitions: counts[si],
                    changelog: true,
                });
            }
            k.ensure_topics(&on_kafka)?;
        }
        let sources = subs
            .iter()
            .map(|st| {
                st.sources
                    .iter()
                    .flat_map(|&s| match &topology.nodes[s].kind {
                        NodeKind::Source { topics } => {
                            topics.iter().map(|t| (s, resolve(t))).collect::<Vec<_>>()
                        }
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .collect();
        Ok(QueryPlan {
            topology: topology.clone(),
            children: Arc::new(topology.nodes.iter().map(|n| n.children.clone()).collect()),
            names: Arc::new(topology.nodes.iter().map(|n| n.name.clone()).collect()),
            kinds: Arc::new(topology.nodes.iter().map(|n| n.kind.clone()).collect()),
            subs,
            store_sub,
            counts,
            topic_names,
            sources,
        })
    }

    fn build_query(&self, name: &str, topology: &Topology) -> Result<Arc<QueryShared>> {
        let core = &self.core;
        let cfg = &core.config;
        let plan = Arc::new(self.plan_query(name, topology)?);
        let id = NEXT_QUERY.fetch_add(1, Ordering::Relaxed);
        let group = match core.kafka {
            Some(_) => cfg.application_id.clone(),
            None => format!("{}-{name}", cfg.application_id),
        };
        let shared = Arc::new(QueryShared {
            id,
            name: Arc::from(name),
            group,
            status: Mutex::new(Status {
                state: QueryState::Running,
                failure: None,
                commit_on_stop: false,
            }),
            cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            open_tasks: std::sync::atomic::AtomicUsize::new(1),
            tasks: Mutex::new(Vec::new()),
            restored: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            plan: plan.clone(),
            processed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped_late: AtomicU64::new(0),
            io_tx: core.io_tx.clone(),
        });
        if core.kafka.is_some() {
            // Tasks follow the group's assignment: those of partitions this member
            // owns now start here, the others when a rebalance assigns them.
            let mut g = core.group.lock().unwrap_or_else(|p| p.into_inner());
            g.queries.retain(|q| !q.is_stopping());
            g.queries.push(shared.clone());
            let started = core
                .update_subscription(&mut g)
                .and_then(|()| core.start_owned_tasks(&shared));
            match started {
                Ok(bindings) => {
                    let _ = core.io_tx.send(IoCommand::Bind(bindings));
                }
                Err(e) => {
                    g.queries.retain(|q| !Arc::ptr_eq(q, &shared));
                    let _ = core.update_subscription(&mut g);
                    drop(g);
                    shared.fail(e.clone());
                    return Err(e);
                }
            }
            log::info!(
                "query '{name}' started on Kafka: {} tasks now, more as partitions are assigned",
                shared.tasks().len()
            );
            return Ok(shared);
        }

        let mut built: Vec<BuiltTask> = Vec::new();
        for (si, &partitions) in plan.counts.iter().enumerate() {
            for p in 0..partitions {
                match core.build_task(&shared, si, p, None) {
                    Ok(Some(b)) => built.push(b),
                    Ok(None) => {}
                    Err(e) => {
                        for mut other in built {
                            other.inner.close_all();
                        }
                        return Err(e);
                    }
                }
            }
        }
        let n = built.len();
        let mut bindings = Vec::new();
        for b in built {
            bindings.extend(core.launch(&shared, b));
        }
        if n == 0 {
            shared.begin_stop();
        }
        let _ = core.io_tx.send(IoCommand::Bind(bindings));
        log::info!(
            "query '{name}' started: {n} tasks over {} sub-topologies",
            plan.subs.len()
        );
        Ok(shared)
    }

    /// Stops every query cleanly and then the I/O thread. Returns the first error of a
    /// query that had failed. Idempotent; also done on drop. Called from inside a
    /// processor (on a worker), it starts the shutdown and returns without waiting.
    pub fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let queries: Vec<Arc<QueryShared>> = self
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for q in &queries {
            q.begin_stop();
        }
        if self.core.pool.current_thread_index().is_some() {
            // Called from user code on a worker: waiting here would wait for this very
            // task. Queries close on the pool; the I/O thread ends without a join.
            let _ = self.core.io_tx.send(IoCommand::Shutdown);
            return Ok(());
        }
        let mut first_error = None;
        for q in &queries {
            if let QueryState::Failed(e) = q.wait(None)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        let _ = self.core.io_tx.send(IoCommand::Shutdown);
        if let Some(h) = self
            .io_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("runtime shut down with a failed query: {e}");
        }
    }
}
