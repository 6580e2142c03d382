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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::broker::Broker;
use crate::config::{OffsetReset, RuntimeConfig};
use crate::error::{Error, Result};
use crate::io::{Binding, Feed, IoCommand, IoStats, IoThread};
use crate::kafka::KafkaClients;
use crate::processor::TaskId;
use crate::queue::{ByteBudget, PartitionQueue};
use crate::state::{CacheStats, InMemoryStore, KeyValueStore, RecordCache, StateEnv, StateUsage};
use crate::task::{Changelog, Input, Task, TaskCore, TaskEnv, TaskInner, TaskStore};
use crate::topology::{NodeKind, StoreKind, Topology};
use crate::window::StoreType;

static NEXT_QUERY: AtomicU64 = AtomicU64::new(1);

/// A task built for a starting query, with the slot its run-queue entry points to.
type BuiltTask = (TaskId, TaskInner, Arc<OnceLock<Weak<Task>>>);

/// What the tasks share: configuration, the pool and its run queue, the I/O thread.
pub(crate) struct RuntimeCore {
    pub(crate) config: RuntimeConfig,
    pool: rayon::ThreadPool,
    runq_tx: Sender<Arc<Task>>,
    runq_rx: Receiver<Arc<Task>>,
    io_tx: Sender<IoCommand>,
    io_wake: Sender<()>,
    pub(crate) budget: Arc<ByteBudget>,
    io_stats: Arc<IoStats>,
    state: StateEnv,
    in_memory_budget: Arc<ByteBudget>,
    record_cache: Arc<RecordCache>,
    suppression_budget: Arc<ByteBudget>,
    /// The shared Kafka clients, when the runtime reads and writes Kafka.
    kafka: Option<Arc<KafkaClients>>,
}

impl RuntimeCore {
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
    /// Tasks (sub-topology × partition) the query runs.
    pub tasks: usize,
    /// Store entries read back from changelog topics when the query started (Kafka).
    pub records_restored: u64,
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
    open_tasks: std::sync::atomic::AtomicUsize,
    tasks: Mutex<Vec<Arc<Task>>>,
    task_count: usize,
    restored: u64,
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
        if !self.stopping.swap(true, Ordering::AcqRel) {
            let _ = self.io_tx.send(IoCommand::Unbind { query: self.id });
        }
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for t in &tasks {
            t.notify();
        }
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

    /// One task has closed; the last one makes the query terminal.
    pub(crate) fn task_closed(&self) {
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
            tasks: self.shared.task_count,
            records_restored: self.shared.restored,
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
        match self.shared.wait(None) {
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
        let budget = Arc::new(ByteBudget::new(config.queue_max_bytes));
        let io_stats = Arc::new(IoStats::default());
        let sc = config.state;
        let state = StateEnv::from_config(&sc)?;
        let in_memory_budget = Arc::new(ByteBudget::new(sc.in_memory_store_bytes));
        let record_cache = RecordCache::new(sc.record_cache_bytes);
        let suppression_budget = Arc::new(ByteBudget::new(sc.suppression_buffer_bytes));
        let kafka = match &config.kafka {
            Some(k) => Some(Arc::new(KafkaClients::new(
                k,
                &config.application_id,
                config.production_exception_handler,
            )?)),
            None => None,
        };
        let io = IoThread {
            kafka: kafka.clone(),
            commands: io_rx,
            wake: wake_rx,
            appends: config.broker.subscribe(),
            budget: budget.clone(),
            stats: io_stats.clone(),
            state: state.clone(),
            record_cache: record_cache.clone(),
            suppression_budget: suppression_budget.clone(),
        };

        let handle = std::thread::Builder::new()
            .name("weir-io".into())
            .spawn(move || io.run())
            .map_err(|e| Error::io("cannot start the I/O thread", e))?;
        metrics::gauge!("weir_threads", "kind" => "worker").set(config.workers as f64);
        metrics::gauge!("weir_threads", "kind" => "io").set(1.0);
        metrics::gauge!("weir_queue_bytes_limit").set(config.queue_max_bytes as f64);
        Ok(Runtime {
            core: Arc::new(RuntimeCore {
                config,
                pool,
                runq_tx,
                runq_rx,
                io_tx,
                io_wake: wake_tx,
                budget,
                io_stats,
                state,
                in_memory_budget,
                record_cache,
                suppression_budget,
                kafka,
            }),
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

    /// Bytes held in suppression buffers now (every operator of every query), and the
    /// one budget they share.
    pub fn suppression_bytes(&self) -> (usize, usize) {
        (
            self.core.suppression_budget.used(),
            self.core.suppression_budget.cap(),
        )
    }

    /// Bytes held in partition queues now, and their cap.
    pub fn queue_bytes(&self) -> (usize, usize) {
        (self.core.budget.used(), self.core.budget.cap())
    }

    /// Where RocksDB's bytes are (shared cache, memtables, table readers), next to the
    /// bound.
    pub fn state_usage(&self) -> StateUsage {
        self.core.state.usage()
    }

    /// The record cache's size, budget and counters.
    pub fn record_cache_stats(&self) -> CacheStats {
        self.core.record_cache.stats()
    }

    /// Bytes held by in-memory stores, and their budget.
    pub fn in_memory_store_bytes(&self) -> (usize, usize) {
        (
            self.core.in_memory_budget.used(),
            self.core.in_memory_budget.cap(),
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
    pub fn start_query(&self, name: &str, topology: Topology) -> Result<QueryHandle> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(Error::Config(format!(
                "query name '{name}' must be non-empty ASCII letters, digits, '.', '_' or '-'"
            )));
        }
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

    /// Partition count of a topic on the broker the runtime uses.
    fn partitions(&self, topic: &str) -> Result<u32> {
        match &self.core.kafka {
            Some(k) => k.partitions(topic),
            None => self.core.config.broker.partitions(topic),
        }
    }

    /// Opens store `def` of task `task_id` of query `name`. On Kafka it first restores
    /// what its changelog holds past the store's checkpoint (counting the records in
    /// `restored`), then logs every write to the changelog.
    fn open_task_store(
        &self,
        def: &crate::topology::StoreDef,
        name: &str,
        task_id: TaskId,
        query_id: u64,
        restored: &mut u64,
    ) -> Result<TaskStore> {
        let cfg = &self.core.config;
        let dir = cfg
            .state_dir
            .join(name)
            .join(task_id.to_string())
            .join(&def.name);
        let mut store: Box<dyn KeyValueStore> = match def.kind {
            StoreKind::RocksDb => Box::new(self.core.state.open_store(&def.name, &dir)?),
            StoreKind::InMemory => Box::new(InMemoryStore::new(
                def.name.clone(),
                self.core.in_memory_budget.clone(),
            )),
        };
        let mut changelog = None;
        if let Some(k) = &self.core.kafka {
            let topic = format!("{}-{name}-{}-changelog", cfg.application_id, def.name);
            let p = task_id.partition;
            let missing = || {
                Error::Topology(format!(
                    "changelog topic '{topic}' of store '{}' needs at least {} partitions with cleanup.policy=compact (weir does not create internal topics on Kafka yet)",
                    def.name,
                    p + 1
                ))
            };
            match k.partitions(&topic) {
                Ok(n) if n > p => {}
                Ok(_) | Err(Error::UnknownTopic(_)) => return Err(missing()),
                Err(e) => return Err(e),
            }
            let on_disk = def.kind == StoreKind::RocksDb;
            let from = if on_disk {
                crate::kafka::read_checkpoint(&dir).unwrap_or(0)
            } else {
                0
            };
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
            *restored += n;
            store = Box::new(crate::kafka::ChangeloggedStore {
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

    fn build_query(&self, name: &str, topology: &Topology) -> Result<Arc<QueryShared>> {
        let cfg = &self.core.config;
        let broker = &cfg.broker;
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
        for _ in 0..=subs.len() {
            for (i, st) in subs.iter().enumerate() {
                let mut max = Some(0u32);
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
                        max = match (max, n) {
                            (Some(m), Some(n)) => Some(m.max(n)),
                            _ => None,
                        };
                    }
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
        if self.core.kafka.is_some()
            && let Some(t) = topology.internal_topics.keys().next()
        {
            return Err(Error::Topology(format!(
                "query '{name}' needs the internal topic '{t}' (a repartition): on Kafka, weir does not create internal topics yet; repartition on the in-process broker or write to and read from a topic you create"
            )));
        }
        for t in topology.internal_topics.keys() {
            let Some(p) = internal.get(t) else {
                return Err(Error::Topology(format!(
                    "cannot size internal topic '{t}': it is read in a cycle or never written"
                )));
            };
            broker.create_topic(&resolve(t), *p)?;
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

        let id = NEXT_QUERY.fetch_add(1, Ordering::Relaxed);
        let group = match self.core.kafka {
            Some(_) => cfg.application_id.clone(),
            None => format!("{}-{name}", cfg.application_id),
        };
        let children: Arc<Vec<Vec<usize>>> =
            Arc::new(topology.nodes.iter().map(|n| n.children.clone()).collect());
        let names: Arc<Vec<String>> =
            Arc::new(topology.nodes.iter().map(|n| n.name.clone()).collect());
        let kinds: Arc<Vec<NodeKind>> =
            Arc::new(topology.nodes.iter().map(|n| n.kind.clone()).collect());
        let query_name: Arc<str> = Arc::from(name);

        let mut built: Vec<BuiltTask> = Vec::new();
        let mut restored = 0u64;
        let mut bindings_spec = Vec::new();
        for (si, st) in subs.iter().enumerate() {
            let partitions = counts[si].unwrap_or(0);
            for p in 0..partitions {
                let task_id = TaskId {
                    subtopology: si,
                    partition: p,
                };
                let mut nodes: Vec<Option<Box<dyn crate::processor::Node>>> =
                    (0..topology.nodes.len()).map(|_| None).collect();
                for &n in &st.nodes {
                    nodes[n] = Some((topology.nodes[n].factory)());
                }
                let core = TaskCore {
                    nodes,
                    children: children.clone(),
                    names: names.clone(),
                    kinds: kinds.clone(),
                    env: TaskEnv {
                        task_id,
                        query: query_name.clone(),
                        query_id: id,
                        application_id: Arc::from(cfg.application_id.as_str()),
                        metadata: None,
                        stream_time: i64::MIN,
                        record_timestamp: 0,
                        punctuators: Vec::new(),
                        next_punctuator: 0,
                        broker: broker.clone(),
                        kafka: self.core.kafka.clone(),
                        topic_names: topic_names.clone(),
                        deserialization_handler: cfg.deserialization_handler,
                        skipped: 0,
                        stores: Vec::new(),
                        cache: None,
                        pending_forwards: Default::default(),
                        dropped_late: 0,
                        suppression_budget: self.core.suppression_budget.clone(),
                        shutdown: None,
                    },
                    current: None,
                };
                let mut inputs = Vec::new();
                for &s in &st.sources {
                    let NodeKind::Source { topics } = &topology.nodes[s].kind else {
                        continue;
                    };
                    for t in topics {
                        let actual = resolve(t);
                        let (feed, topic_name, start) = match &self.core.kafka {
                            Some(k) => {
                                if p >= k.partitions(&actual)? {
                                    continue;
                                }
                                let earliest = cfg.offset_reset == OffsetReset::Earliest;
                                let start = k.start_offset(name, &actual, p, earliest)?;
                                let topic: Arc<str> = Arc::from(actual.as_str());
                                let feed = Feed::Kafka {
                                    topic: topic.clone(),
                                    waiting: Default::default(),
                                    pausing: false,
                                };
                                (feed, topic, start)
                            }
                            None => {
                                let log = broker.topic(&actual)?;
                                if p >= log.partition_count() {
                                    continue;
                                }
                                let start = match broker.committed(&group, &actual, p) {
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
                            self.core.budget.clone(),
                        ));
                        inputs.push(Input::new(topic_name, p, s, queue.clone()));
                        bindings_spec.push((built.len(), feed, p, start, queue));
                    }
                }
                let mut core = core;
                for (def, _) in topology
                    .stores
                    .iter()
                    .zip(&store_sub)
                    .filter(|(_, s)| **s == si)
                {
                    match self.open_task_store(def, name, task_id, id, &mut restored) {
                        Ok(st) => core.env.stores.push(st),
                        Err(e) => {
                            for (_, mut other, _) in built {
                                other.close_all();
                            }
                            return Err(e);
                        }
                    }
                }
                // The cache wakes the task when another task asks it to evict; the task
                // exists only below, so the waker finds it through a slot set then.
                let slot: Arc<OnceLock<Weak<Task>>> = Arc::new(OnceLock::new());
                if !core.env.stores.is_empty() {
                    let s = slot.clone();
                    core.env.cache = Some(self.core.record_cache.task_cache(Arc::new(move || {
                        if let Some(t) = s.get().and_then(Weak::upgrade) {
                            t.notify();
                        }
                    })));
                }
                let mut inner = TaskInner::new(core, inputs, st.nodes.clone(), st.sinks.clone());
                if let Err(e) = inner.init() {
                    inner.close_all();
                    for (_, mut other, _) in built {
                        other.close_all();
                    }
                    return Err(e);
                }
                built.push((task_id, inner, slot));
            }
        }

        let shared = Arc::new(QueryShared {
            id,
            name: query_name,
            group,
            status: Mutex::new(Status {
                state: QueryState::Running,
                failure: None,
                commit_on_stop: false,
            }),
            cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            open_tasks: std::sync::atomic::AtomicUsize::new(built.len()),
            tasks: Mutex::new(Vec::new()),
            task_count: built.len(),
            restored,
            processed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped_late: AtomicU64::new(0),
            io_tx: self.core.io_tx.clone(),
        });
        let tasks: Vec<Arc<Task>> = built
            .into_iter()
            .map(|(tid, inner, slot)| {
                let task = Arc::new(Task::new(tid, shared.clone(), self.core.clone(), inner));
                let _ = slot.set(Arc::downgrade(&task));
                task
            })
            .collect();
        let bindings = bindings_spec
            .into_iter()
            .map(|(ti, feed, partition, next_offset, queue)| Binding {
                query: id,
                feed,
                partition,
                next_offset,
                queue,
                task: Arc::downgrade(&tasks[ti]),
            })
            .collect();
        *shared.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks.clone();
        if tasks.is_empty() {
            shared.open_tasks.store(1, Ordering::Release);
            shared.task_closed();
        }
        let _ = self.core.io_tx.send(IoCommand::Bind(bindings));
        // Run each task once so wall-clock punctuators and commits get their deadlines.
        for t in &tasks {
            t.notify();
        }
        log::info!(
            "query '{name}' started: {} tasks over {} sub-topologies",
            tasks.len(),
            subs.len()
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
