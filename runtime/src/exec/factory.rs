//! The task factory: a task of a query, built from its plan for one partition: its
//! processors (initialized), its stores (restored from their changelogs where the
//! transport keeps them) and its input partitions, then scheduled and bound to the I/O
//! thread.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use super::commit::{GlobalOffsets, TaskInner};
use super::core::{RuntimeCore, ZoneHandles};
use super::input::Input;
use super::query::QueryShared;
use super::task::Task;
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::io::broker::FetchBatch;
use crate::io::queue::PartitionQueue;
use crate::io::transport::{Binding, Feed, SinkTopic, TopicPartition, Transport, Wake};
use crate::processor::TaskId;
use crate::processor::internals::{Clock, ErrorPolicy, Node, TaskCore, TaskEnv};
use crate::state::changelog::{ChangeloggedStore, checkpoint_path, read_checkpoint};
use crate::state::global::{
    GlobalOffsetList, GlobalStore, SharedStore, global_store_dir, read_offsets,
};
use crate::state::task_stores::{Changelog, TaskStore, TaskStores};
use crate::state::window::StoreType;
use crate::state::{InMemoryStore, KeyValueStore, WindowFront};
use crate::topology::StoreKind;
use crate::topology::plan::changelog_topic;

/// A task built for a query, not yet scheduled: the slot its cache waker points to,
/// and the partitions to bind (feed, partition, first offset, queue).
/// A partition a built task reads: its feed, the partition, the first offset to read,
/// and the task's queue for it.
pub(super) type BuiltFeed = (Box<dyn Feed>, u32, i64, Arc<PartitionQueue<FetchBatch>>);

pub(super) struct BuiltTask {
    pub(super) id: TaskId,
    pub(super) inner: TaskInner,
    pub(super) slot: Arc<OnceLock<Weak<Task>>>,
    pub(super) feeds: Vec<BuiltFeed>,
}

/// What building a task needs of the runtime: its configuration, its transport and
/// the zones its stores, queues and buffers draw on. The runtime's tasks and the test
/// driver's are built by the same code.
pub(crate) struct Factory<'a> {
    pub(crate) config: &'a RuntimeConfig,
    pub(crate) transport: &'a Arc<dyn Transport>,
    pub(crate) zones: &'a ZoneHandles,
    /// The tasks' wall clock.
    pub(crate) clock: Clock,
    /// Whether stores that allow it go through the record cache.
    pub(crate) record_cache: bool,
}

impl RuntimeCore {
    /// The factory of this runtime's tasks.
    pub(super) fn factory(&self) -> Factory<'_> {
        Factory {
            config: &self.config,
            transport: &self.transport,
            zones: &self.zones,
            clock: Clock::System,
            record_cache: true,
        }
    }
}

impl Factory<'_> {
    /// Opens store `def` of task `task_id` of query `name`. On Kafka it first restores
    /// what its changelog holds past the store's checkpoint (counting the records in
    /// `restored`), then logs every write to the changelog.
    pub(crate) fn open_task_store(
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
        let exactly_once = self.transport.transaction().is_some();
        let changelogs = self.transport.changelogs();
        let checkpoint = if changelogs && on_disk {
            read_checkpoint(&dir)
        } else {
            None
        };
        if exactly_once && on_disk {
            // A checkpoint is written only at a clean close, after the last commit: a
            // store without one may hold writes of an aborted transaction, so it is
            // rebuilt from its changelog's committed records. While the task runs the
            // store is ahead of any checkpoint: none stays on disk.
            let _ = std::fs::remove_file(checkpoint_path(&dir));
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
        if changelogs {
            // The plan checked that it exists with enough partitions.
            let topic = changelog_topic(&cfg.application_id, name, &def.name);
            let p = task_id.partition;
            let from = checkpoint.unwrap_or(0);
            // Progress: records restored so far into this task's store.
            let progress = metrics::gauge!(
                crate::metrics::RESTORED_RECORDS,
                "query" => name.to_string(),
                "store" => def.name.clone(),
                "task" => task_id.to_string()
            );
            let mut so_far = 0usize;
            let (n, end) = self.transport.restore(&topic, p, from, &mut |batch| {
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
            store = Box::new(ChangeloggedStore {
                inner: store,
                transport: self.transport.clone(),
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
        // A join's window store keeps its recent entries in memory (it is uncached:
        // entries written through the cache would escape the front's reads); the
        // store holds none past the end of its last segment.
        let front = match (def.store_type, def.kind) {
            (
                StoreType::Window {
                    duplicates: true,
                    segment_ms,
                    ..
                },
                StoreKind::RocksDb,
            ) if !def.caching => Some(WindowFront::new(
                self.zones.record_cache.clone(),
                match disk_segment {
                    i64::MIN => i64::MIN,
                    seg => seg.saturating_add(1).saturating_mul(segment_ms),
                },
            )),
            _ => None,
        };
        Ok(TaskStore {
            name: def.name.clone(),
            store,
            types: def.types,
            serdes: def.serdes.clone(),
            processors: def.processors.clone(),
            cached: def.caching,
            timestamped: def.timestamped,
            forwards: false,
            forward_old: false,
            store_type: def.store_type,
            live_segment: i64::MIN,
            seq: crate::state::seq_seed(),
            min_live,
            disk_segment,
            changelog,
            front,
        })
    }

    /// Global store `def` of `query`: the instance its global task opened, or (for
    /// the global task, `opening`) opened now. On opening, a RocksDB store without an
    /// offsets file is wiped (it is rebuilt from its topic); returns the offsets it
    /// reaches.
    fn global_store(
        &self,
        query: &QueryShared,
        def: &crate::topology::StoreDef,
        opening: bool,
    ) -> Result<(SharedStore, Option<GlobalOffsetList>)> {
        let mut globals = query.globals.lock();
        if let Some(open) = globals.get(&def.name).and_then(std::sync::Weak::upgrade) {
            return Ok((open, None));
        }
        if !opening {
            return Err(Error::store(
                def.name.clone(),
                format!("query '{}' has closed its global store", query.name),
            ));
        }
        let dir = global_store_dir(&self.config.state_dir.join(&*query.name), &def.name);
        let (store, offsets): (Box<dyn KeyValueStore + Sync>, _) = match def.kind {
            StoreKind::RocksDb => {
                let offsets = read_offsets(&dir);
                if offsets.is_none() && dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| {
                        Error::io(format!("cannot wipe global store {}", dir.display()), e)
                    })?;
                }
                (
                    Box::new(self.zones.state.open_store(&def.name, &dir)?),
                    offsets,
                )
            }
            StoreKind::InMemory => (
                Box::new(InMemoryStore::new(
                    def.name.clone(),
                    self.zones.in_memory.clone(),
                )),
                None,
            ),
        };
        let shared: SharedStore = Arc::new(crate::sync::RwLock::new(store));
        globals.insert(def.name.clone(), Arc::downgrade(&shared));
        Ok((shared, offsets))
    }

    /// The dead-letter topic of `query` (its own, else the runtime's), opened: a
    /// query whose dead-letter topic does not exist does not start.
    fn dead_letter_topic(
        &self,
        query: &QueryShared,
        topology: &crate::topology::Topology,
    ) -> Result<Option<Arc<dyn SinkTopic>>> {
        let Some(name) = topology
            .dead_letter_topic
            .as_deref()
            .or(self.config.dead_letter_queue_topic.as_deref())
        else {
            return Ok(None);
        };
        match self.transport.sink(name) {
            Ok(topic) => Ok(Some(topic)),
            Err(Error::UnknownTopic(_)) => Err(Error::Config(format!(
                "the dead-letter topic '{name}' of query '{}' does not exist (create it first: weir does not)",
                query.name
            ))),
            Err(e) => Err(e),
        }
    }

    /// Builds task (`si`, `p`) of `query`: its processors (initialized), its stores
    /// (restored on Kafka) and its inputs. With `owned`, only the Kafka partitions this
    /// member owns are read; `None` if that leaves nothing to read.
    pub(crate) fn build_task(
        &self,
        query: &QueryShared,
        si: usize,
        p: u32,
        owned: Option<&HashSet<TopicPartition>>,
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
        let global = plan.is_global(si);
        // A global task's store, opened first: its offsets say where to read from.
        let mut global_store = None;
        if global {
            for (def, _) in plan
                .topology
                .stores
                .iter()
                .zip(&plan.store_sub)
                .filter(|(d, s)| **s == si && d.global)
            {
                let (store, offsets) = self.global_store(query, def, true)?;
                let dir = (def.kind == StoreKind::RocksDb)
                    .then(|| global_store_dir(&cfg.state_dir.join(name), &def.name));
                global_store = Some((store, offsets.unwrap_or_default(), dir));
            }
        }
        for (s, actual) in &plan.sources[si] {
            let transport = &self.transport;
            if let Some((_, offsets, _)) = &global_store {
                // Every partition, from where the store reaches (else the start).
                for q in 0..transport.partitions(actual)? {
                    let start = offsets.iter().find(|(p, _)| *p == q).map_or(0, |(_, o)| *o);
                    let feed = transport.global_feed(actual)?;
                    let queue = Arc::new(PartitionQueue::new(
                        cfg.queue_max_records_per_partition,
                        self.zones.queues.clone(),
                    ));
                    let mut input = Input::new(Arc::from(feed.topic()), q, *s, queue.clone());
                    input.committed = Some(start);
                    inputs.push(input);
                    feeds.push((feed, q, start, queue));
                }
                continue;
            }
            if p >= transport.partitions(actual)?
                || owned.is_some_and(|o| !o.contains(&TopicPartition::new(actual.as_str(), p)))
            {
                continue;
            }
            let start = transport.start_offset(&query.group, name, actual, p, cfg.offset_reset)?;
            let feed = transport.feed(actual)?;
            let topic_name: Arc<str> = Arc::from(feed.topic());
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
        let mut nodes: Vec<Option<Box<dyn Node>>> =
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
                transport: self.transport.clone(),
                topic_names: plan.topic_names.clone(),
                deserialization_handler: cfg.deserialization_handler,
                errors: ErrorPolicy::new(
                    plan.topology
                        .processing_handler
                        .unwrap_or(cfg.processing_exception_handler),
                    cfg.production_exception_handler,
                    self.dead_letter_topic(query, &plan.topology)?,
                ),
                skipped: 0,
                state: TaskStores::default(),
                forwarders: Vec::new(),
                dropped_late: 0,
                suppression_budget: self.zones.suppression.clone(),
                shutdown: None,
                clock: self.clock.clone(),
                metrics: Default::default(),
            },
            current: None,
        };
        for (def, &owner) in plan.topology.stores.iter().zip(&plan.store_sub) {
            let store = if def.global && global && owner != si {
                // A global task holds its own store only.
                continue;
            } else if def.global {
                // Its global task writes it; every other task may read it.
                let writable = owner == si;
                let store = match (&global_store, writable) {
                    (Some((store, _, _)), true) => store.clone(),
                    _ => self.global_store(query, def, false)?.0,
                };
                TaskStore {
                    name: def.name.clone(),
                    store: Box::new(GlobalStore {
                        name: def.name.clone(),
                        inner: store,
                        writable,
                    }),
                    types: def.types,
                    serdes: def.serdes.clone(),
                    processors: if writable {
                        def.processors.clone()
                    } else {
                        st.nodes.clone()
                    },
                    cached: false,
                    timestamped: def.timestamped,
                    forwards: false,
                    forward_old: false,
                    store_type: StoreType::KeyValue,
                    live_segment: i64::MIN,
                    seq: crate::state::seq_seed(),
                    min_live: i64::MIN,
                    disk_segment: i64::MIN,
                    changelog: None,
                    front: None,
                }
            } else if owner == si {
                self.open_task_store(def, name, task_id, query.id, &query.restored)?
            } else {
                continue;
            };
            core.env.state.stores.push(store);
            core.env.forwarders.push(None);
        }
        // The cache wakes the task when another task asks it to evict; the task exists
        // only later, so the waker finds it through a slot set then.
        let slot: Arc<OnceLock<Weak<Task>>> = Arc::new(OnceLock::new());
        if self.record_cache && !core.env.state.stores.is_empty() {
            let s = slot.clone();
            core.env.state.cache = Some(self.zones.record_cache.task_cache(Arc::new(move || {
                if let Some(t) = s.get().and_then(Weak::upgrade) {
                    t.notify();
                }
            })));
        }
        let mut inner = TaskInner::new(core, inputs, st.nodes.clone(), st.sinks.clone());
        inner.max_task_idle = cfg.max_task_idle;
        if let Some((_, _, dir)) = global_store {
            // It follows its topic: nothing to wait for, no group offsets to commit.
            inner.max_task_idle = None;
            inner.global = Some(GlobalOffsets { dir });
        }
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
}

impl RuntimeCore {
    /// Schedules a built task of `query` and returns its bindings for the I/O thread
    /// (none, and the task is closed, if the query is stopping by now).
    pub(super) fn launch(
        self: &Arc<Self>,
        query: &Arc<QueryShared>,
        built: BuiltTask,
    ) -> Vec<Binding> {
        let global = built.inner.global.is_some();
        let task = Arc::new(Task::new(
            built.id,
            query.clone(),
            self.clone(),
            built.inner,
        ));
        let _ = built.slot.set(Arc::downgrade(&task));
        if let Some(txn) = self.txn().filter(|_| !global) {
            let t = Arc::downgrade(&task);
            let epoch = txn.join(
                task.uid,
                Box::new(move || {
                    if let Some(t) = t.upgrade() {
                        t.notify();
                    }
                }),
            );
            task.joined(epoch);
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
                lag: query.lag.clone(),
                feed,
                partition,
                next_offset,
                queue,
                task: Arc::downgrade(&(task.clone() as Arc<dyn Wake>)),
            })
            .collect()
    }
}
