//! Tasks: one sub-topology instantiated for one input partition, run cooperatively on
//! the shared worker pool.
//!
//! A task is *runnable* when one of its partition queues holds records, a wall-clock
//! deadline has passed, or its query is stopping. It then runs one bounded batch (at
//! most `max_batch_records` records or `max_batch_time`), flushes its sinks, gives
//! back its queue charges, and yields: if it still has work it goes to the back of the
//! runtime's run queue, so a hot query cannot starve the others.
//!
//! Scheduling state is one atomic: IDLE → QUEUED (enqueued once) → RUNNING, and a
//! notification that arrives while RUNNING becomes NOTIFIED, which re-queues the task
//! when its batch ends. That gives at most one queued copy of a task and no lost
//! wake-ups. CLOSED is terminal.
//!
//! Commit (at-least-once): every `commit_interval` and on a clean stop, a task flushes
//! its sinks, then commits the next offset of each input partition to its query's
//! group. A task that fails commits nothing, so a restart re-reads from the last
//! commit.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::config::DeserializationHandler;
use crate::error::{Error, Result};
use crate::exec::runtime::{QueryShared, RuntimeCore};
use crate::io::broker::FetchBatch;
use crate::io::broker::{Broker, RecordView, TopicLog};
use crate::io::queue::{ByteBudget, PartitionQueue};
use crate::processor::{Node, Punctuation, PunctuationType, PunctuatorEntry, TaskId};
use crate::record::{RecordMetadata, now_millis};
use crate::state::window::{StoreType, entry_segment};
use crate::state::{BatchEntry, Dirty, KeyValueStore, Pick, TaskCache};
use crate::topology::{NodeId, NodeKind};

/// What processors see of their task besides the graph.
pub(crate) struct TaskEnv {
    pub(crate) task_id: TaskId,
    pub(crate) query: Arc<str>,
    /// The query's id (Kafka deliveries are attributed to it).
    pub(crate) query_id: u64,
    pub(crate) application_id: Arc<str>,
    pub(crate) metadata: Option<RecordMetadata>,
    pub(crate) stream_time: i64,
    /// Timestamp of the record being processed (the punctuation time inside a
    /// punctuator): store writes carry it, and so do the changes they forward.
    pub(crate) record_timestamp: i64,
    pub(crate) punctuators: Vec<PunctuatorEntry>,
    pub(crate) next_punctuator: u64,
    pub(crate) broker: Broker,
    /// The shared Kafka clients, when sources and sinks are on Kafka.
    pub(crate) kafka: Option<Arc<crate::io::kafka::KafkaClients>>,
    /// Topology topic name -> broker topic name (internal topics are prefixed).
    pub(crate) topic_names: Arc<HashMap<String, String>>,
    pub(crate) deserialization_handler: DeserializationHandler,
    pub(crate) skipped: u64,
    pub(crate) stores: Vec<TaskStore>,
    /// This task's part of the runtime's record cache.
    pub(crate) cache: Option<TaskCache>,
    /// Changes written to forwarding stores, to forward once the current record is done.
    pub(crate) pending_forwards: VecDeque<PendingForward>,
    /// Records windowed operators dropped for arriving after their window closed.
    pub(crate) dropped_late: u64,
    /// The runtime's one budget for every suppression buffer.
    pub(crate) suppression_budget: Arc<ByteBudget>,
    /// Set by a processor that cannot go on (a full suppression buffer that shuts its
    /// query down): the task commits what it has processed and fails the query with
    /// this error.
    pub(crate) shutdown: Option<Error>,
}

/// A change of a forwarding store (an aggregation's), waiting to go downstream.
pub(crate) struct PendingForward {
    store: usize,
    key: Vec<u8>,
    new: Option<Vec<u8>>,
    old: Option<Vec<u8>>,
    timestamp: i64,
}

/// Deserializes a change of a store (key, new, old, timestamp) and forwards it to the
/// owning node's children.
pub(crate) type Forwarder = Arc<
    dyn Fn(&mut TaskCore, &[u8], Option<&[u8]>, Option<&[u8]>, i64) -> Result<()> + Send + Sync,
>;

impl TaskEnv {
    /// Writes entries the cache let go of to their stores, one write batch per store;
    /// queues the forwards of forwarding stores (with the value each replaces, read
    /// before the batch is written). `dirty` holds each key of a store at most once,
    /// as the cache hands them out.
    pub(crate) fn apply_dirty(&mut self, dirty: Vec<Dirty>) -> Result<()> {
        if dirty.len() == 1 {
            // A write-through: no batch.
            let d = dirty.into_iter().next().expect("one entry");
            let st = &mut self.stores[d.store];
            let old = match (&st.forwarder, st.forward_old) {
                (Some(_), true) => st.store.get(&d.key)?,
                _ => None,
            };
            st.write_one(&d.key, d.value.as_deref())?;
            if st.forwarder.is_some() {
                self.queue_forward(d, old);
            }
            return Ok(());
        }
        let mut by_store: Vec<Vec<(Dirty, bool)>> = Vec::new();
        for d in dirty {
            if by_store.len() <= d.store {
                by_store.resize_with(d.store + 1, Vec::new);
            }
            by_store[d.store].push((d, true));
        }
        for (idx, entries) in by_store.into_iter().enumerate() {
            self.write_and_forward(idx, entries)?;
        }
        Ok(())
    }

    /// Writes the entries of store `idx` marked `true` in one key-sorted batch, then
    /// queues the forwards of all of them if the store forwards (with the value each
    /// replaces, read before the batch is written).
    fn write_and_forward(&mut self, idx: usize, entries: Vec<(Dirty, bool)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let st = &mut self.stores[idx];
        let olds = match (&st.forwarder, st.forward_old) {
            (Some(_), true) => entries
                .iter()
                .map(|(d, _)| st.store.get(&d.key))
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        let mut batch: Vec<BatchEntry<'_>> = entries
            .iter()
            .filter(|(_, write)| *write)
            .map(|(d, _)| (d.key.as_slice(), d.value.as_deref()))
            .collect();
        st.write_sorted(&mut batch)?;
        drop(batch);
        if st.forwarder.is_some() {
            let mut olds = olds.into_iter();
            for (d, _) in entries {
                let old = olds.next().flatten();
                self.queue_forward(d, old);
            }
        }
        Ok(())
    }

    /// Writes the record cache's dirty entries (of store `only`, or of all) to their
    /// stores, queueing the forwards of forwarding stores (drained by the caller).
    pub(crate) fn flush_cache(&mut self, only: Option<usize>) -> Result<()> {
        while self.flush_cache_chunk(only)? {}
        Ok(())
    }

    /// One pass of [`TaskEnv::flush_cache`]. Entries of stores that forward nothing go
    /// straight from the cache into key-sorted write batches of about
    /// [`FLUSH_BATCH_BYTES`], uncopied. Those of forwarding stores (aggregations) are
    /// copied, to go downstream, through [`TaskEnv::apply_dirty`]: at most about
    /// [`FLUSH_BATCH_BYTES`] of them per pass, so a commit never copies the whole
    /// cache (nor writes it as one batch). Returns true if dirty entries of forwarding
    /// stores remain: drain the queued forwards, then call again.
    pub(crate) fn flush_cache_chunk(&mut self, only: Option<usize>) -> Result<bool> {
        /// Why a pass stopped lending entries.
        enum Stop {
            /// The forwarding stores' chunk is full; the rest stays dirty.
            Chunk,
            Failed(Error),
        }
        let Some(cache) = self.cache.as_mut() else {
            return Ok(false);
        };
        let stores = &mut self.stores;
        let mut batches: Vec<(Vec<BatchEntry<'_>>, usize)> =
            stores.iter().map(|_| (Vec::new(), 0)).collect();
        let mut forwarded = Vec::new();
        let mut forwarded_bytes = 0;
        let pass = cache.flush_each(only, |f| {
            let bytes = f.key.len() + f.value.map_or(0, <[u8]>::len);
            if stores[f.store].forwarder.is_some() {
                forwarded.push(f.to_dirty());
                forwarded_bytes += bytes;
                return if forwarded_bytes >= FLUSH_BATCH_BYTES {
                    Err(Stop::Chunk)
                } else {
                    Ok(())
                };
            }
            let (batch, batch_bytes) = &mut batches[f.store];
            *batch_bytes += bytes;
            batch.push((f.key, f.value));
            if *batch_bytes >= FLUSH_BATCH_BYTES {
                *batch_bytes = 0;
                stores[f.store].write_sorted(batch).map_err(Stop::Failed)?;
            }
            Ok(())
        });
        let more = match pass {
            Ok(()) => false,
            Err(Stop::Chunk) => true,
            Err(Stop::Failed(e)) => return Err(e),
        };
        for (idx, (batch, _)) in batches.iter_mut().enumerate() {
            stores[idx].write_sorted(batch)?;
        }
        drop(batches);
        self.apply_dirty(forwarded)?;
        Ok(more)
    }

    /// Flushes the cached changes of store `idx` that `pick` chooses (see
    /// [`TaskCache::flush_picked`]): each is forwarded if the store belongs to an
    /// aggregation; flushed ones are written to the store, taken ones are not (they
    /// are expired).
    pub(crate) fn flush_picked(
        &mut self,
        idx: usize,
        pick: impl FnMut(&[u8]) -> Pick,
    ) -> Result<()> {
        let Some(cache) = self.cache.as_mut() else {
            return Ok(());
        };
        let picked = cache.flush_picked(idx, pick);
        let entries = picked.into_iter().map(|(d, taken)| (d, !taken)).collect();
        self.write_and_forward(idx, entries)
    }

    fn queue_forward(&mut self, d: Dirty, old: Option<Vec<u8>>) {
        self.pending_forwards.push_back(PendingForward {
            store: d.store,
            key: d.key,
            new: d.value,
            old,
            timestamp: d.timestamp,
        });
    }
}

/// Bytes of keys and values per write batch when the record cache is flushed.
const FLUSH_BATCH_BYTES: usize = 4 << 20;

/// One store instance of a task.
pub(crate) struct TaskStore {
    pub(crate) name: String,
    pub(crate) store: Box<dyn KeyValueStore>,
    pub(crate) types: (std::any::TypeId, std::any::TypeId),
    /// [`StoreSerdes<K, V>`](crate::topology::StoreSerdes), erased.
    pub(crate) serdes: Arc<dyn Any + Send + Sync>,
    pub(crate) processors: Vec<NodeId>,
    /// Whether reads and writes go through the record cache.
    pub(crate) cached: bool,
    /// Set by an aggregation: its changes are forwarded downstream when written.
    pub(crate) forwarder: Option<Forwarder>,
    /// Whether forwarded changes carry the value they replaced.
    pub(crate) forward_old: bool,
    /// Key-value, window or session.
    pub(crate) store_type: StoreType,
    /// Window and session stores: the first segment not yet dropped.
    pub(crate) live_segment: i64,
    /// Window and session stores: entries whose time (window start, session end) is
    /// before this are expired. Reads do not see them, and cached ones leave the cache
    /// without being written.
    pub(crate) min_live: i64,
    /// Window and session stores: the highest segment that may hold entries in the
    /// store (found when it opens, raised by every write). A read in a later segment
    /// needs no store lookup: in windowed aggregations most reads are of new windows.
    pub(crate) disk_segment: i64,
    /// On Kafka: the changelog every write of the store also goes to.
    pub(crate) changelog: Option<Changelog>,
}

/// A store's changelog partition, and where its checkpoint file goes (RocksDB stores).
pub(crate) struct Changelog {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) checkpoint_dir: Option<std::path::PathBuf>,
}

impl TaskStore {
    /// Writes `batch` (if not empty) in key order and clears it. In key order, RocksDB
    /// inserts each key into the memtable's skip list next to the previous one instead
    /// of searching from the top: that search was a third of the workers' time in W1.
    fn write_sorted(&mut self, batch: &mut Vec<BatchEntry<'_>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        for (k, _) in batch.iter() {
            self.wrote(k);
        }
        batch.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let r = self.store.write_batch(batch);
        batch.clear();
        r
    }

    /// Writes one entry (`None` deletes it).
    fn write_one(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.wrote(key);
        match value {
            Some(v) => self.store.put(key, v),
            None => self.store.delete(key),
        }
    }

    /// Notes a write of `key` (see `disk_segment`). Every write goes through
    /// [`TaskStore::write_sorted`] or [`TaskStore::write_one`].
    fn wrote(&mut self, key: &[u8]) {
        if !matches!(self.store_type, StoreType::KeyValue)
            && let Some(seg) = entry_segment(key)
        {
            self.disk_segment = self.disk_segment.max(seg);
        }
    }

    /// True if `key` cannot be in the store: a window or session entry in a segment
    /// never written.
    pub(crate) fn surely_absent(&self, key: &[u8]) -> bool {
        !matches!(self.store_type, StoreType::KeyValue)
            && entry_segment(key).is_some_and(|seg| seg > self.disk_segment)
    }

    /// For a window or session store just opened: the highest segment with an entry
    /// (`disk_segment`) and, if its owner stored its stream time, the first time not
    /// expired (`min_live`), so reads after a restart leave out what was expired.
    pub(crate) fn opened(store: &dyn KeyValueStore, ty: StoreType) -> Result<(i64, i64)> {
        let last = store.last(&crate::state::window::segment_key(i64::MIN), &[0xff; 9])?;
        let disk_segment = last
            .and_then(|(k, _)| entry_segment(&k))
            .unwrap_or(i64::MIN);
        let min_live = match (
            store.get(crate::state::window::META_KEY)?,
            ty.retention_ms(),
        ) {
            (Some(t), Some(retention)) if t.len() == 8 => {
                let t = i64::from_be_bytes(t.as_slice().try_into().expect("8 bytes"));
                t.saturating_sub(retention).saturating_add(1)
            }
            _ => i64::MIN,
        };
        Ok((disk_segment, min_live))
    }
}

impl TaskEnv {
    pub(crate) fn resolve_topic(&self, name: &str) -> Result<Arc<TopicLog>> {
        let actual = self.topic_names.get(name).map_or(name, String::as_str);
        self.broker.topic(actual)
    }
}

/// A task's node graph (indexed by topology node id; nodes of other sub-topologies are
/// `None`) and its environment.
pub(crate) struct TaskCore {
    pub(crate) nodes: Vec<Option<Box<dyn Node>>>,
    pub(crate) children: Arc<Vec<Vec<NodeId>>>,
    pub(crate) names: Arc<Vec<String>>,
    pub(crate) kinds: Arc<Vec<NodeKind>>,
    pub(crate) env: TaskEnv,
    /// The node running now; after a panic, the one that panicked.
    pub(crate) current: Option<NodeId>,
}

impl TaskCore {
    /// Runs `node` on `input`. The node is taken out of the arena while it runs, so it
    /// can forward to its children through `self`.
    pub(crate) fn dispatch(&mut self, node: NodeId, input: &mut dyn Any) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        let r = n.process(input, self, node);
        self.current = prev;
        self.nodes[node] = Some(n);
        // Rebuild `Ok` rather than move `r`: the error type is large, and this is the
        // per-record, per-hop path.
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes every dirty entry of the record cache and forwards the changes of
    /// forwarding stores, a chunk at a time: a commit's copies stay near
    /// [`FLUSH_BATCH_BYTES`] however much of the cache is dirty.
    pub(crate) fn flush_cache(&mut self) -> Result<()> {
        while self.env.flush_cache_chunk(None)? {
            self.drain_forwards()?;
        }
        self.drain_forwards()
    }

    /// Forwards every queued store change (which may queue more, downstream).
    pub(crate) fn drain_forwards(&mut self) -> Result<()> {
        while let Some(p) = self.env.pending_forwards.pop_front() {
            let Some(f) = self.env.stores[p.store].forwarder.clone() else {
                continue;
            };
            f(
                self,
                &p.key,
                p.new.as_deref(),
                p.old.as_deref(),
                p.timestamp,
            )?;
        }
        Ok(())
    }

    /// Writes out what other tasks asked this one to evict.
    fn serve_evictions(&mut self) -> Result<()> {
        let dirty = match &mut self.env.cache {
            Some(c) if c.has_eviction_request() => c.serve_eviction_requests(),
            _ => return Ok(()),
        };
        self.env.apply_dirty(dirty)?;
        self.drain_forwards()
    }

    /// Hands a fetched record to a source node.
    fn ingest(&mut self, source: NodeId, view: &RecordView<'_>, offset: i64) -> Result<()> {
        let mut n = self.take(source)?;
        let prev = self.current.replace(source);
        let r = n.ingest(view, offset, self, source);
        self.current = prev;
        self.nodes[source] = Some(n);
        r
    }

    fn take(&mut self, node: NodeId) -> Result<Box<dyn Node>> {
        self.nodes
            .get_mut(node)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::Topology(format!(
                    "node '{}' is not part of this task (or forwards to itself)",
                    self.names.get(node).map_or("?", String::as_str)
                ))
            })
    }

    pub(crate) fn init_node(&mut self, node: NodeId) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        let r = n.init(self, node);
        self.current = prev;
        self.nodes[node] = Some(n);
        r
    }

    fn punctuate_node(&mut self, node: NodeId, p: &Punctuation) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        // Inside a punctuator, "the record's timestamp" is the punctuation time.
        self.env.record_timestamp = p.timestamp;
        let r = n.punctuate(p, self, node);
        self.current = prev;
        self.nodes[node] = Some(n);
        r
    }

    fn pre_commit_node(&mut self, node: NodeId) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        let r = n.pre_commit(self, node);
        self.current = prev;
        self.nodes[node] = Some(n);
        r
    }

    fn flush_node(&mut self, node: NodeId) -> Result<()> {
        let mut n = self.take(node)?;
        let r = n.flush(self);
        self.nodes[node] = Some(n);
        r
    }

    /// Fires every punctuator of `kind` that is due at `now`.
    fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<()> {
        if self.env.punctuators.is_empty() {
            return Ok(());
        }
        let mut due = Vec::new();
        self.env.punctuators.retain(|p| !p.is_cancelled());
        for p in self.env.punctuators.iter_mut().filter(|p| p.kind == kind) {
            if let Some(ts) = p.due(now) {
                due.push((
                    p.node,
                    Punctuation {
                        id: p.id,
                        kind,
                        timestamp: ts,
                    },
                ));
            }
        }
        let saved = self.env.metadata.take();
        let mut result = Ok(());
        for (node, p) in due {
            result = self.punctuate_node(node, &p);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.drain_forwards();
        }
        self.env.metadata = saved;
        result
    }

    fn next_wall_deadline(&self) -> Option<i64> {
        self.env
            .punctuators
            .iter()
            .filter(|p| p.kind == PunctuationType::WallClockTime && !p.is_cancelled())
            .filter_map(|p| p.next)
            .min()
    }
}

/// One input partition of a task.
pub(crate) struct Input {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) source: NodeId,
    pub(crate) queue: Arc<PartitionQueue<FetchBatch>>,
    /// Claimed batches; the front one may be partly processed.
    local: VecDeque<FetchBatch>,
    /// Next offset to commit, once something was processed.
    consumed: Option<i64>,
    committed: Option<i64>,
    release_records: usize,
    release_bytes: usize,
}

impl Input {
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        source: NodeId,
        queue: Arc<PartitionQueue<FetchBatch>>,
    ) -> Self {
        Input {
            topic,
            partition,
            source,
            queue,
            local: VecDeque::new(),
            consumed: None,
            committed: None,
            release_records: 0,
            release_bytes: 0,
        }
    }

    fn head_timestamp(&mut self) -> Option<i64> {
        while self.local.front().is_some_and(FetchBatch::is_empty) {
            self.local.pop_front();
        }
        if self.local.is_empty() {
            self.queue.claim(usize::MAX, &mut self.local);
        }
        self.local.front().and_then(FetchBatch::head_timestamp)
    }

    /// Records claimed from the queue and not yet processed.
    fn local_records(&self) -> usize {
        self.local.iter().map(FetchBatch::len).sum()
    }

    /// Gives back the charges of processed records; true if the fetcher should wake.
    fn release(&mut self) -> bool {
        let wake = self.queue.release(self.release_records, self.release_bytes);
        self.release_records = 0;
        self.release_bytes = 0;
        wake
    }
}

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const CLOSED: u8 = 4;

enum After {
    More,
    Idle,
    Closed,
}

/// The mutable part of a task, behind a lock that only its running worker takes.
pub(crate) struct TaskInner {
    pub(crate) core: TaskCore,
    pub(crate) inputs: Vec<Input>,
    /// Nodes of this task's sub-topology, in topology order.
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) sinks: Vec<NodeId>,
    last_commit: Instant,
    uncommitted: bool,
    registered_wake: Option<i64>,
    closed: bool,
    /// Exactly-once: the round this task prepared for (it waits for its commit).
    prepared_round: Option<u64>,
}

impl TaskInner {
    pub(crate) fn new(
        core: TaskCore,
        inputs: Vec<Input>,
        nodes: Vec<NodeId>,
        sinks: Vec<NodeId>,
    ) -> Self {
        TaskInner {
            core,
            inputs,
            nodes,
            sinks,
            last_commit: Instant::now(),
            uncommitted: false,
            registered_wake: None,
            closed: false,
            prepared_round: None,
        }
    }

    /// Calls `init` on every node, parents first.
    pub(crate) fn init(&mut self) -> Result<()> {
        for &n in &self.nodes {
            self.core.init_node(n)?;
        }
        Ok(())
    }

    fn flush_sinks(&mut self) -> Result<()> {
        for &s in &self.sinks {
            self.core.flush_node(s)?;
        }
        Ok(())
    }

    /// The commit protocol: record cache (writing and forwarding), then stores, then
    /// sinks, then offsets.
    fn commit(&mut self, group: &str, broker: &Broker) -> Result<()> {
        self.flush_for_commit(true)?;
        if let Some(kafka) = &self.core.env.kafka {
            let offsets: Vec<(&str, u32, i64)> = self
                .moved()
                .map(|(i, off)| (&*i.topic, i.partition, off))
                .collect();
            if !kafka.commit(&self.core.env.query, &offsets)? {
                // Not committed (a rebalance): tried again at the next commit.
                return Ok(());
            }
        }
        if self.core.env.kafka.is_none() {
            for (input, off) in self.moved() {
                broker.commit(group, &input.topic, input.partition, off);
            }
        }
        self.committed();
        Ok(())
    }

    /// After a commit: what was consumed is committed.
    fn committed(&mut self) {
        for input in &mut self.inputs {
            if let Some(off) = input.consumed {
                input.committed = Some(off);
            }
        }
        self.last_commit = Instant::now();
        self.uncommitted = false;
    }

    /// Exactly-once: the offsets to hand to the transaction (query, topic, partition,
    /// next offset) of the inputs that moved.
    fn txn_offsets(&self) -> Vec<crate::io::kafka::TxnOffset> {
        self.moved()
            .map(|(i, off)| crate::io::kafka::TxnOffset {
                query: self.core.env.query.to_string(),
                topic: i.topic.to_string(),
                partition: i.partition as i32,
                offset: off,
            })
            .collect()
    }

    /// The inputs processed past their last commit, with the next offset to commit.
    fn moved(&self) -> impl Iterator<Item = (&Input, i64)> {
        self.inputs.iter().filter_map(|i| match i.consumed {
            Some(off) if i.committed != Some(off) => Some((i, off)),
            _ => None,
        })
    }

    /// Writes every changelogged store's checkpoint: how far its changelog reaches.
    fn write_checkpoints(&self) -> Result<()> {
        let Some(kafka) = &self.core.env.kafka else {
            return Ok(());
        };
        for st in &self.core.env.stores {
            if let Some(c) = &st.changelog
                && let Some(dir) = &c.checkpoint_dir
                && let Some(end) = kafka.acked_end(&c.topic, c.partition)
            {
                crate::io::kafka::write_checkpoint(dir, end)?;
            }
        }
        Ok(())
    }

    /// Steps 1-4 of a commit: the record cache (writing and forwarding), processors'
    /// buffers, stores, sinks; on Kafka everything produced is acknowledged, and with
    /// `checkpoints` the changelog checkpoints are written.
    fn flush_for_commit(&mut self, checkpoints: bool) -> Result<()> {
        self.core.flush_cache()?;
        // Processors write out what they buffer (suppression buffers, the observed
        // stream time of windowed aggregations), upstream first, each followed by
        // whatever that put into the cache.
        let saved = self.core.env.metadata.take();
        for i in 0..self.nodes.len() {
            let n = self.nodes[i];
            if self.core.kinds[n] != NodeKind::Processor {
                continue;
            }
            self.core.pre_commit_node(n)?;
            self.core.flush_cache()?;
        }
        self.core.env.metadata = saved;
        for s in &mut self.core.env.stores {
            s.store.flush()?;
        }
        self.flush_sinks()?;
        if let Some(kafka) = &self.core.env.kafka {
            // Everything produced (output and changelogs) is acknowledged before the
            // offsets move; the checkpoints record how far the changelogs now reach.
            kafka.flush(self.core.env.query_id, &self.core.env.query)?;
            if checkpoints {
                self.write_checkpoints()?;
            }
        }
        Ok(())
    }

    /// Closes every node and queue. Returns true if the fetcher should wake.
    pub(crate) fn close_all(&mut self) -> bool {
        let mut wake = false;
        for &n in &self.nodes {
            if let Some(node) = self.core.nodes[n].as_mut()
                && let Err(e) = node.close()
            {
                log::warn!(
                    "query '{}' task {}: closing '{}' failed: {e}",
                    self.core.env.query,
                    self.core.env.task_id,
                    self.core.names[n]
                );
            }
        }
        // A clean stop has committed (flushed the cache) before this; a failed task must
        // not write anything past its last commit.
        if let Some(c) = self.core.env.cache.as_mut() {
            c.discard();
        }
        self.core.env.pending_forwards.clear();
        // Close the stores now (RocksDB releases its directory lock), not whenever the
        // last reference to the task goes away.
        self.core.env.stores.clear();
        for input in &mut self.inputs {
            for b in input.local.drain(..) {
                input.release_records += b.len();
                input.release_bytes += b.remaining_bytes();
            }
            wake |= input.release();
            wake |= input.queue.close();
        }
        self.closed = true;
        wake
    }
}

/// A task and its scheduling state.
/// Numbers tasks across the process (the exactly-once transaction tells them apart).
static NEXT_TASK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) struct Task {
    pub(crate) id: TaskId,
    /// Unique in the process.
    pub(crate) uid: u64,
    state: AtomicU8,
    pub(crate) query: Arc<QueryShared>,
    rt: Arc<RuntimeCore>,
    inner: Mutex<TaskInner>,
    /// The (topic, partition) pairs it reads, readable while it runs.
    pub(crate) partitions: Vec<(Arc<str>, u32)>,
    /// Its partitions were taken away (a consumer-group rebalance): it commits what it
    /// processed and closes, and the query goes on.
    revoked: AtomicBool,
    /// Set once closed; [`Task::wait_closed`] waits for it.
    closed: Mutex<bool>,
    closed_cv: Condvar,
}

impl Task {
    pub(crate) fn new(
        id: TaskId,
        query: Arc<QueryShared>,
        rt: Arc<RuntimeCore>,
        inner: TaskInner,
    ) -> Self {
        let partitions = inner
            .inputs
            .iter()
            .map(|i| (i.topic.clone(), i.partition))
            .collect();
        Task {
            id,
            uid: NEXT_TASK.fetch_add(1, SeqCst),
            state: AtomicU8::new(IDLE),
            query,
            rt,
            inner: Mutex::new(inner),
            partitions,
            revoked: AtomicBool::new(false),
            closed: Mutex::new(false),
            closed_cv: Condvar::new(),
        }
    }

    /// Makes the task commit what it has processed and close (its partitions go to
    /// another member of the group); [`Task::wait_closed`] waits for that.
    pub(crate) fn revoke(self: &Arc<Self>) {
        self.revoked.store(true, SeqCst);
        self.notify();
    }

    /// Closes a task that never ran (its query began stopping before it was added).
    pub(crate) fn discard(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.closed {
            inner.close_all();
        }
        drop(inner);
        if let Some(k) = &self.rt.kafka {
            k.leave_txn(self.uid);
        }
        self.state.store(CLOSED, SeqCst);
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.closed_cv.notify_all();
    }

    /// Waits until the task has closed or `timeout` passes; true if closed.
    pub(crate) fn wait_closed(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        while !*closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            closed = self
                .closed_cv
                .wait_timeout(closed, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Makes the task run soon (unless it is queued already, or closed).
    pub(crate) fn notify(self: &Arc<Self>) {
        let mut s = self.state.load(SeqCst);
        loop {
            let next = match s {
                IDLE => QUEUED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match self.state.compare_exchange(s, next, SeqCst, SeqCst) {
                Ok(_) => {
                    if next == QUEUED {
                        self.rt.enqueue(self.clone());
                    }
                    return;
                }
                Err(actual) => s = actual,
            }
        }
    }

    /// Runs one batch on the current worker. Called only by the scheduler.
    pub(crate) fn run(self: Arc<Self>) {
        if self
            .state
            .compare_exchange(QUEUED, RUNNING, SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_batch()));
        let after = match outcome {
            Ok(Ok(after)) => after,
            Ok(Err(e)) => {
                self.fail(e);
                After::Closed
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                let processor = {
                    let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                    inner.core.current.map_or_else(
                        || format!("task {}", self.id),
                        |n| inner.core.names[n].clone(),
                    )
                };
                self.fail(Error::Panic { processor, message });
                After::Closed
            }
        };
        match after {
            After::Closed => self.state.store(CLOSED, SeqCst),
            After::More => {
                self.state.store(QUEUED, SeqCst);
                self.rt.enqueue(self.clone());
            }
            After::Idle => {
                if self
                    .state
                    .compare_exchange(RUNNING, IDLE, SeqCst, SeqCst)
                    .is_err()
                {
                    self.state.store(QUEUED, SeqCst);
                    self.rt.enqueue(self.clone());
                }
            }
        }
    }

    /// Fails the query and closes this task without committing.
    fn fail(self: &Arc<Self>, e: Error) {
        log::error!("query '{}' task {} failed: {e}", self.query.name, self.id);
        if let Some(k) = &self.rt.kafka {
            // Exactly-once: what every task wrote since the last commit is aborted.
            k.fail_txn(&format!(
                "query '{}' task {}: {e}",
                self.query.name, self.id
            ));
        }
        self.query.fail(e);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.closed {
            inner.core.current = None;
            self.close(inner);
        }
    }

    /// Closes every node and queue of the task, then (lock released) tells the query.
    fn close(self: &Arc<Self>, mut inner: std::sync::MutexGuard<'_, TaskInner>) -> After {
        if inner.close_all() {
            self.rt.wake_io();
        }
        drop(inner);
        if let Some(k) = &self.rt.kafka {
            k.leave_txn(self.uid);
        }
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.closed_cv.notify_all();
        self.query.task_closed(self);
        After::Closed
    }

    /// Exactly-once: closes the task after the round holding its last records
    /// committed (a stop, a revocation, or a processor shutting the query down).
    fn close_committed(
        self: &Arc<Self>,
        mut guard: std::sync::MutexGuard<'_, TaskInner>,
    ) -> Result<After> {
        // Its stores are now exactly what their changelogs' committed records say.
        guard.write_checkpoints()?;
        if let Some(e) = guard.core.env.shutdown.take() {
            log::error!(
                "query '{}' task {} shuts its query down: {e}",
                self.query.name,
                self.id
            );
            self.query.fail_after_commit(e);
        }
        Ok(self.close(guard))
    }

    /// Exactly-once: takes part in the runtime's commit rounds. Returns what the task
    /// does instead of processing, if anything: it waits while its round is under way,
    /// prepares when one is requested (or it is leaving), and closes once its last
    /// round committed.
    fn exactly_once(
        self: &Arc<Self>,
        mut guard: std::sync::MutexGuard<'_, TaskInner>,
    ) -> Result<Option<After>> {
        use crate::io::kafka::Prepared;
        let Some(kafka) = self.rt.kafka.clone() else {
            return Ok(None);
        };
        let Some(txn) = kafka.txn() else {
            return Ok(None);
        };
        if let Some(why) = txn.failed() {
            return Err(Error::Kafka(why));
        }
        let inner = &mut *guard;
        let leaving = self.query.is_stopping() || self.revoked.load(SeqCst);
        let (requested, round) = txn.status();
        if let Some(r) = inner.prepared_round {
            if round <= r {
                return Ok(Some(After::Idle));
            }
            inner.prepared_round = None;
            inner.committed();
            if leaving || inner.core.env.shutdown.is_some() {
                return self.close_committed(guard).map(Some);
            }
            return Ok(None);
        }
        if leaving && !self.query.is_clean_stop() {
            // The query failed: the transaction was aborted, nothing to commit.
            return Ok(Some(self.close(guard)));
        }
        if !(requested || leaving || inner.core.env.shutdown.is_some()) {
            return Ok(None);
        }
        if !requested {
            txn.request();
        }
        inner.flush_for_commit(false)?;
        let offsets = inner.txn_offsets();
        match kafka.prepare(self.uid, offsets)? {
            Prepared::Committed => {
                inner.committed();
                if leaving || inner.core.env.shutdown.is_some() {
                    return self.close_committed(guard).map(Some);
                }
                Ok(None)
            }
            Prepared::Wait(r) => {
                inner.prepared_round = Some(r);
                Ok(Some(After::Idle))
            }
        }
    }

    fn run_batch(self: &Arc<Self>) -> Result<After> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if guard.closed {
            return Ok(After::Closed);
        }
        if self.rt.txn().is_some() {
            if let Some(after) = self.exactly_once(guard)? {
                return Ok(after);
            }
            guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        }
        let inner = &mut *guard;
        let cfg = &self.rt.config;
        if self.query.is_stopping() {
            if self.query.is_clean_stop() {
                inner.commit(&self.query.group, &cfg.broker)?;
                if let Some(e) = inner.core.env.shutdown.take() {
                    self.query.fail_after_commit(e);
                }
            }
            return Ok(self.close(guard));
        }
        if self.revoked.load(SeqCst) {
            // Another member takes these partitions over from the committed offsets
            // and changelogs: commit everything processed first (what is still queued
            // is read again there).
            inner.commit(&self.query.group, &cfg.broker)?;
            log::info!(
                "query '{}' task {}: partitions revoked, committed and closed",
                self.query.name,
                self.id
            );
            return Ok(self.close(guard));
        }

        let started = Instant::now();
        inner.core.serve_evictions()?;
        inner
            .core
            .punctuate(PunctuationType::WallClockTime, now_millis())?;
        let max = cfg.max_batch_records;
        let mut n = 0usize;
        while n < max && (!n.is_multiple_of(64) || n == 0 || started.elapsed() < cfg.max_batch_time)
        {
            if inner.core.env.shutdown.is_some() {
                break;
            }
            // Next record: the lowest timestamp across this task's partitions.
            let mut best: Option<(usize, i64)> = None;
            for (i, input) in inner.inputs.iter_mut().enumerate() {
                if let Some(ts) = input.head_timestamp()
                    && best.is_none_or(|(_, b)| ts < b)
                {
                    best = Some((i, ts));
                }
            }
            let Some((i, _)) = best else { break };
            let TaskInner { core, inputs, .. } = &mut *inner;
            let input = &mut inputs[i];
            let Some((offset, view, size)) =
                input.local.front_mut().and_then(FetchBatch::next_record)
            else {
                break;
            };
            input.consumed = Some(offset + 1);
            input.release_records += 1;
            input.release_bytes += size;
            match &mut core.env.metadata {
                Some(m) if Arc::ptr_eq(&m.topic, &input.topic) => {
                    m.partition = input.partition;
                    m.offset = offset;
                }
                slot => {
                    *slot = Some(RecordMetadata {
                        topic: input.topic.clone(),
                        partition: input.partition,
                        offset,
                    })
                }
            }
            // The source advances stream time (to the record's extracted timestamp);
            // stream-time punctuators fire after the record.
            let before = core.env.stream_time;
            core.ingest(input.source, &view, offset)?;
            if !core.env.pending_forwards.is_empty() {
                core.drain_forwards()?;
            }
            if core.env.stream_time > before {
                core.punctuate(PunctuationType::StreamTime, core.env.stream_time)?;
            }
            n += 1;
        }
        inner.core.env.metadata = None;
        if inner.core.env.shutdown.is_none() {
            inner
                .core
                .punctuate(PunctuationType::WallClockTime, now_millis())?;
        }
        inner.flush_sinks()?;

        let mut wake = false;
        for input in &mut inner.inputs {
            wake |= input.release();
        }
        if wake {
            self.rt.wake_io();
        }
        if n > 0 {
            inner.uncommitted = true;
            self.query.record_progress(
                n as u64,
                std::mem::take(&mut inner.core.env.skipped),
                std::mem::take(&mut inner.core.env.dropped_late),
            );
        }
        let due = inner.core.env.shutdown.is_some()
            || (inner.uncommitted && inner.last_commit.elapsed() >= cfg.commit_interval);
        if due && let Some(txn) = self.rt.txn() {
            // Exactly-once: every task commits in one round (this one included: the
            // request wakes it).
            txn.request();
            return Ok(After::More);
        }
        if due {
            inner.commit(&self.query.group, &cfg.broker)?;
        }
        if let Some(e) = inner.core.env.shutdown.take() {
            // A clean failure: everything processed is committed (the processor that
            // asked stopped emitting and persisted what it held), then the query fails
            // and its other tasks commit as they close.
            log::error!(
                "query '{}' task {} shuts its query down: {e}",
                self.query.name,
                self.id
            );
            self.query.fail_after_commit(e);
            return Ok(self.close(guard));
        }
        self.register_deadline(inner);

        // Charged records beyond those held locally are still queued.
        let more = inner.inputs.iter().any(|i| {
            let local = i.local_records();
            local > 0 || i.queue.len() > local
        });
        Ok(if more { After::More } else { After::Idle })
    }

    /// Asks the I/O thread to wake this task at its next wall-clock deadline (the next
    /// wall-clock punctuation, or the next commit if it has uncommitted progress).
    fn register_deadline(self: &Arc<Self>, inner: &mut TaskInner) {
        let commit_at = inner.uncommitted.then(|| {
            let left = self
                .rt
                .config
                .commit_interval
                .saturating_sub(inner.last_commit.elapsed());
            now_millis() + left.as_millis() as i64
        });
        let deadline = match (inner.core.next_wall_deadline(), commit_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = now_millis();
        if let Some(d) = deadline {
            let stale = inner.registered_wake.is_none_or(|r| r <= now || d < r);
            if stale {
                inner.registered_wake = Some(d);
                self.rt.wake_at(d, Arc::downgrade(self));
            }
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
