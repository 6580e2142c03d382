//! The runtime: one worker pool, one I/O thread, and the queries running on them.
//!
//! Threads are fixed when the runtime is built: `workers` rayon threads
//! (`weir-worker-N`) and one I/O thread (`weir-io`). Starting or stopping a query
//! creates and ends tasks, which are plain values scheduled onto the pool; no query
//! ever owns a thread. How tasks share the pool fairly: `core.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::core::{RuntimeCore, ZoneHandles};
use super::factory::BuiltTask;
use super::group::Group;
use super::query::{QueryHandle, QueryShared, QueryState, check_query_name};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::io::broker::Broker;
use crate::io::thread::{IoCommand, IoStats, IoThread};
use crate::io::transport::GroupMember;
use crate::state::{CacheStats, StateUsage};
use crate::sync::Mutex;
use crate::topology::Topology;
use crate::topology::plan::{Target, plan_query};

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
        crate::memory::allocator::configure_allocator();
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
        let zones = ZoneHandles::new(&config)?;
        let transport = crate::io::transport::connect(&config.transport())?;
        let io = IoThread {
            transport: transport.clone(),
            commands: io_rx,
            wake: wake_rx,
            appends: config.broker.subscribe(),
            stats: io_stats.clone(),
            zones: zones.accounts.clone(),
            queues: zones.queues.clone(),
        };

        let handle = std::thread::Builder::new()
            .name("weir-io".into())
            .spawn(move || io.run())
            .map_err(|e| Error::io("cannot start the I/O thread", e))?;
        metrics::gauge!(crate::metrics::THREADS, "kind" => "worker").set(config.workers as f64);
        metrics::gauge!(crate::metrics::THREADS, "kind" => "io").set(1.0);
        metrics::gauge!(crate::metrics::QUEUE_BYTES_LIMIT).set(config.queue_max_bytes as f64);
        let core = Arc::new(RuntimeCore {
            config,
            pool,
            runq_tx,
            runq_rx,
            io_tx,
            io_wake: wake_tx,
            io_stats,
            zones,
            transport,
            group: Mutex::new(Group::default()),
        });
        let member: Weak<dyn GroupMember> = Arc::downgrade(&(core.clone() as Arc<dyn GroupMember>));
        core.transport.set_member(member);
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
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_runtime::{Runtime, RuntimeConfig, Zone};
    ///
    /// # fn main() -> weir_runtime::Result<()> {
    /// let runtime = Runtime::new(RuntimeConfig::builder().memory_limit(256 << 20).build()?)?;
    /// let report = runtime.memory_report();
    /// // Every zone has a row, and the zones' bounds fit in the limit.
    /// assert_eq!(report.zones.len(), Zone::ALL.len());
    /// let bounds: usize = report.zones.iter().map(|z| z.bound).sum();
    /// assert!(bounds + report.headroom <= 256 << 20);
    /// println!("{report}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn memory_report(&self) -> crate::memory::report::MemoryReport {
        self.core.zones.accounts.report()
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
        let queries = self.queries.lock();
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
    ///
    /// # Examples
    ///
    /// A query built with the Processor API (the `weir` crate's DSL builds the same
    /// [`Topology`]):
    ///
    /// ```
    /// use weir_runtime::serde::{I64Serde, StringSerde};
    /// use weir_runtime::{
    ///     Processor, ProcessorContext, Record, Result, Runtime, RuntimeConfig, SinkSpec,
    ///     SourceSpec, Topology,
    /// };
    ///
    /// /// Doubles every value.
    /// struct Double;
    ///
    /// impl Processor<String, i64, String, i64> for Double {
    ///     fn process(
    ///         &mut self,
    ///         r: Record<String, i64>,
    ///         ctx: &mut ProcessorContext<'_, String, i64>,
    ///     ) -> Result<()> {
    ///         let value = r.value * 2;
    ///         ctx.forward(r.with_value(value))
    ///     }
    /// }
    ///
    /// # fn main() -> Result<()> {
    /// let runtime = Runtime::new(RuntimeConfig::builder().workers(1).build()?)?;
    /// let broker = runtime.broker().clone();
    /// broker.create_topic("in", 1)?;
    /// broker.create_topic("out", 1)?;
    ///
    /// let mut topology = Topology::new();
    /// topology.add_source("src", &["in"], SourceSpec::<String, i64>::new(StringSerde, I64Serde))?;
    /// topology.add_processor("double", || Double, &["src"])?;
    /// topology.add_sink("sink", "out", SinkSpec::<String, i64>::new(StringSerde, I64Serde), &["double"])?;
    /// let query = runtime.start_query("doubles", topology)?;
    ///
    /// broker.send("in", &"a".to_string(), &21i64)?;
    /// while broker.read_all::<String, i64>("out")?.is_empty() {
    ///     std::thread::sleep(std::time::Duration::from_millis(5));
    /// }
    /// query.stop()?;
    /// assert_eq!(broker.read_all::<String, i64>("out")?[0].record.value, 42);
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_query(&self, name: &str, topology: Topology) -> Result<QueryHandle> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        check_query_name(name)?;
        let mut queries = self.queries.lock();
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
        let queries = self.queries.lock();
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
                return Err(Error::store(
                    name.to_string(),
                    format!(
                        "a store under {} is still open 60 s after the query stopped",
                        dir.display()
                    ),
                ));
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

    fn build_query(&self, name: &str, topology: &Topology) -> Result<Arc<QueryShared>> {
        let core = &self.core;
        let cfg = &core.config;
        let transport = &core.transport;
        let target = Target {
            grouped: transport.grouped(),
            changelogs: transport.changelogs(),
        };
        let partitions = |t: &str| transport.partitions(t);
        let (plan, internal_topics) =
            plan_query(&cfg.application_id, name, topology, &partitions, target)?;
        transport.ensure_topics(&internal_topics)?;
        let plan = Arc::new(plan);
        let group = core.transport.group_id(&cfg.application_id, name);
        let shared = Arc::new(QueryShared::new(
            name,
            group,
            plan.clone(),
            core.io_tx.clone(),
        ));
        // Global stores first, loaded to their topics' end: the other tasks read them.
        let global_bindings = match core.start_global_tasks(&shared) {
            Ok(b) => b,
            Err(e) => {
                shared.fail(e.clone());
                return Err(e);
            }
        };
        if !global_bindings.is_empty() {
            let _ = core.io_tx.send(IoCommand::Bind(global_bindings));
        }
        if core.transport.grouped() {
            // Tasks follow the group's assignment: those of partitions this member
            // owns now start here, the others when a rebalance assigns them.
            let mut g = core.group.lock();
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
            if plan.is_global(si) {
                continue;
            }
            for p in 0..partitions {
                match core.factory().build_task(&shared, si, p, None) {
                    Ok(Some(b)) => built.push(b),
                    Ok(None) => {}
                    Err(e) => {
                        for mut other in built {
                            other.inner.close_all();
                        }
                        shared.fail(e.clone());
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
        let queries: Vec<Arc<QueryShared>> = self.queries.lock().values().cloned().collect();
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
        if let Some(h) = self.io_thread.lock().take() {
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
