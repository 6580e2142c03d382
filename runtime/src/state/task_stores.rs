//! A task's stores, and the path a write takes to them.
//!
//! Reads and writes of a task's stores go through [`Access`]: through the runtime's
//! record cache unless the store opted out (a join's window store goes through its
//! in-memory front instead, `window_front.rs`), with expired window and session
//! entries left out. What the cache lets go of (evicted, committed, or written through) reaches
//! the store here, in key-sorted write batches, and the changes of forwarding stores
//! (aggregations) are queued to go downstream as (new, old).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::state::window::{META_KEY, StoreType, entry_segment, entry_time, segment_key};
use crate::state::window_front::Put;
use crate::state::{
    BatchEntry, Dirty, KeyValue, KeyValueStore, Lookup, Pick, TaskCache, WindowFront,
};

/// A task's stores, its part of the record cache, and the store changes waiting to
/// go downstream.
#[derive(Default)]
pub(crate) struct TaskStores {
    pub(crate) stores: Vec<TaskStore>,
    /// This task's part of the runtime's record cache.
    pub(crate) cache: Option<TaskCache>,
    /// Changes written to forwarding stores, to forward once the current record is done.
    pub(crate) pending_forwards: VecDeque<PendingForward>,
}

/// A change of a forwarding store (an aggregation's), waiting to go downstream.
pub(crate) struct PendingForward {
    pub(crate) store: usize,
    pub(crate) key: Vec<u8>,
    pub(crate) new: Option<Vec<u8>>,
    pub(crate) old: Option<Vec<u8>>,
    pub(crate) timestamp: i64,
}

impl TaskStores {
    /// Writes entries the cache let go of to their stores, one write batch per store;
    /// queues the forwards of forwarding stores (with the value each replaces, read
    /// before the batch is written). `dirty` holds each key of a store at most once,
    /// as the cache hands them out.
    pub(crate) fn apply_dirty(&mut self, dirty: Vec<Dirty>) -> Result<()> {
        if dirty.len() == 1 {
            // A write-through: no batch.
            let d = dirty.into_iter().next().expect("one entry");
            let st = &mut self.stores[d.store];
            let old = match (st.forwards, st.forward_old) {
                (true, true) => st.store.get(&d.key)?,
                _ => None,
            };
            st.write_one(&d.key, d.value.as_deref())?;
            if st.forwards {
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
        let olds = match (st.forwards, st.forward_old) {
            (true, true) => entries
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
        if st.forwards {
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
        for (idx, st) in self.stores.iter_mut().enumerate() {
            if only.is_none_or(|o| o == idx) {
                st.flush_front()?;
            }
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
            if stores[f.store].forwards {
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

/// A write of a key (`None` deletes it).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// Bytes of keys and values per write batch when the record cache is flushed.
const FLUSH_BATCH_BYTES: usize = 4 << 20;

/// One store instance of a task.
pub(crate) struct TaskStore {
    pub(crate) name: String,
    pub(crate) store: Box<dyn KeyValueStore>,
    pub(crate) types: (std::any::TypeId, std::any::TypeId),
    /// The store's serdes (`StoreSerdes<K, V>` of the processor room), erased.
    pub(crate) serdes: Arc<dyn Any + Send + Sync>,
    /// The nodes (processors) connected to it.
    pub(crate) processors: Vec<usize>,
    /// Whether reads and writes go through the record cache.
    pub(crate) cached: bool,
    /// Whether each value starts with its timestamp (8 bytes, big-endian).
    pub(crate) timestamped: bool,
    /// Set by an aggregation: its changes are forwarded downstream when written (the
    /// task holds the forwarder).
    pub(crate) forwards: bool,
    /// Whether forwarded changes carry the value they replaced.
    pub(crate) forward_old: bool,
    /// Key-value, window or session.
    pub(crate) store_type: StoreType,
    /// Window and session stores: the first segment not yet dropped.
    pub(crate) live_segment: i64,
    /// A window store retaining duplicates: the last sequence number given out.
    /// Starts at the wall clock in nanoseconds when the store is opened, so numbers
    /// stay unique across restarts (Kafka Streams starts at 0 each time, and an entry
    /// put after a restart can replace a restored one with the same key and time).
    pub(crate) seq: u64,
    /// Window and session stores: entries whose time (window start, session end) is
    /// before this are expired. Reads do not see them, and cached ones leave the cache
    /// without being written.
    pub(crate) min_live: i64,
    /// Window and session stores: the highest segment that may hold entries in the
    /// store (found when it opens, raised by every write). A read in a later segment
    /// needs no store lookup: in windowed aggregations most reads are of new windows.
    pub(crate) disk_segment: i64,
    /// With changelogs (Kafka): the changelog every write of the store also goes to.
    pub(crate) changelog: Option<Changelog>,
    /// A RocksDB window store retaining duplicates (a join's): its recent entries in
    /// memory, written to the store at commits (`state/window_front.rs`).
    pub(crate) front: Option<WindowFront>,
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
    pub(crate) fn write_sorted(&mut self, batch: &mut Vec<BatchEntry<'_>>) -> Result<()> {
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

    /// Writes the front's dirty entries to the store in one key-sorted batch; they
    /// stay in the front, clean.
    pub(crate) fn flush_front(&mut self) -> Result<()> {
        let Some(front) = self.front.as_mut().filter(|f| f.has_dirty()) else {
            return Ok(());
        };
        let mut entries = front.dirty_entries();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(seg) = entries.last().and_then(|(k, _)| entry_segment(k)) {
            self.disk_segment = self.disk_segment.max(seg);
        }
        let batch: Vec<BatchEntry<'_>> = entries
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(*v)))
            .collect();
        self.store.write_batch(&batch)?;
        drop(batch);
        drop(entries);
        front.written();
        Ok(())
    }

    /// Offers a write to the front, if the store has one. Hands it back if the store
    /// must take it (no front, not an entry, older than the front's floor, or larger
    /// than the front can hold once it has written and dropped its older half).
    fn put_front(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<Option<Write>> {
        let Some(front) = self.front.as_mut() else {
            return Ok(Some((key, value)));
        };
        let (key, value) = match front.put(key, value) {
            Put::Taken => return Ok(None),
            Put::Refused(k, v) => return Ok(Some((k, v))),
            Put::Full(k, v) => (k, v),
        };
        self.flush_front()?;
        let front = self.front.as_mut().expect("checked above");
        front.evict_half();
        Ok(match front.put(key, value) {
            Put::Taken => None,
            Put::Refused(k, v) => Some((k, v)),
            Put::Full(k, v) => {
                front.pass(&k);
                Some((k, v))
            }
        })
    }

    /// Writes one entry (`None` deletes it).
    pub(crate) fn write_one(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
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

/// Byte-level access to one store of the current task, through the record cache
/// unless the store opted out.
pub(crate) struct Access<'a> {
    stores: &'a mut TaskStores,
    idx: usize,
    /// The timestamp writes carry (the record being processed).
    timestamp: i64,
}

impl<'a> Access<'a> {
    /// Store `idx` of `stores`; writes carry `timestamp`.
    pub(crate) fn new(stores: &'a mut TaskStores, idx: usize, timestamp: i64) -> Self {
        Access {
            stores,
            idx,
            timestamp,
        }
    }

    /// The store's serdes, erased (`StoreSerdes<K, V>` of the processor room): a typed
    /// handle borrows them from here for each call instead of cloning their `Arc`s
    /// when it is made (once per record, on counters every worker's tasks share).
    pub(crate) fn serdes_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        &*self.stores.stores[self.idx].serdes
    }

    /// The next sequence number of a window store retaining duplicates.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = &mut self.stores.stores[self.idx];
        s.seq = s.seq.wrapping_add(1);
        s.seq
    }

    /// The store itself, for scans after [`Access::settle`].
    pub(crate) fn store(&mut self) -> &mut dyn KeyValueStore {
        &mut *self.stores.stores[self.idx].store
    }

    pub(crate) fn name(&self) -> &str {
        &self.stores.stores[self.idx].name
    }

    pub(crate) fn error(&self, message: String) -> Error {
        Error::Store {
            store: self.name().to_string(),
            message,
            source: None,
        }
    }

    /// The timestamp writes carry (the record being processed).
    pub(crate) fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Whether the store's values start with their timestamp.
    pub(crate) fn timestamped(&self) -> bool {
        self.stores.stores[self.idx].timestamped
    }

    pub(crate) fn cached(&self) -> bool {
        self.stores.stores[self.idx].cached && self.stores.cache.is_some()
    }

    pub(crate) fn get(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let idx = self.idx;
        self.stores.stores[idx].flush_front()?;
        let st = &self.stores.stores[idx];
        if entry_time(&st.store_type, k).is_some_and(|t| t < st.min_live) {
            return Ok(None);
        }
        if self.cached() {
            let cache = self.stores.cache.as_mut().expect("cached() checked");
            if let Lookup::Hit(v) = cache.get(idx, k) {
                return Ok(v.map(<[u8]>::to_vec));
            }
            if self.stores.stores[idx].surely_absent(k) {
                return Ok(None);
            }
            let v = self.stores.stores[idx].store.get(k)?;
            if let Some(cache) = self.stores.cache.as_mut() {
                cache.insert_clean(idx, k, v.as_deref());
            }
            return Ok(v);
        }
        if self.stores.stores[idx].surely_absent(k) {
            return Ok(None);
        }
        self.stores.stores[idx].store.get(k)
    }

    /// Window and session stores: the earliest time (window start, session end) not
    /// yet expired.
    pub(crate) fn min_live(&self) -> i64 {
        self.stores.stores[self.idx].min_live
    }

    pub(crate) fn write(&mut self, k: Vec<u8>, v: Option<Vec<u8>>) -> Result<()> {
        self.write_at(k, v, self.timestamp)
    }

    /// Writes `k` (a `None` value deletes it); a forwarded change carries `timestamp`.
    pub(crate) fn write_at(
        &mut self,
        k: Vec<u8>,
        v: Option<Vec<u8>>,
        timestamp: i64,
    ) -> Result<()> {
        let idx = self.idx;
        let Some((k, v)) = self.stores.stores[idx].put_front(k, v)? else {
            return Ok(());
        };
        let dirty = if self.cached() {
            let cache = self.stores.cache.as_mut().expect("cached() checked");
            cache.put(idx, k, v, timestamp)
        } else {
            vec![Dirty {
                store: idx,
                key: k,
                value: v,
                timestamp,
            }]
        };
        self.stores.apply_dirty(dirty)
    }

    /// Before a scan, writes this store's cached changes (and its front's) so the
    /// scan sees them.
    pub(crate) fn settle(&mut self) -> Result<()> {
        self.stores.stores[self.idx].flush_front()?;
        if !self.cached() {
            return Ok(());
        }
        self.stores.flush_cache(Some(self.idx))
    }

    pub(crate) fn range(&mut self, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>> {
        let st = &mut self.stores.stores[self.idx];
        // One key's entries in a store with a front: the front answers from its floor
        // on, the store before it.
        if let Some(split) = st.front.as_ref().and_then(|f| f.split(from, to)) {
            let mut out = match split.store {
                Some((lo, hi)) if lo < hi => st.store.range(&lo, &hi)?,
                _ => Vec::new(),
            };
            out.extend(split.front);
            return Ok(out);
        }
        self.settle()?;
        self.stores.stores[self.idx].store.range(from, to)
    }

    /// The observed stream time a windowed operator stored (see
    /// `stored_stream_time`).
    pub(crate) fn meta_time(&mut self) -> Result<Option<i64>> {
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

    pub(crate) fn set_meta_time(&mut self, t: i64) -> Result<()> {
        self.write(META_KEY.to_vec(), Some(t.to_be_bytes().to_vec()))
    }

    /// Expires the windows (sessions) that started (ended) more than the retention
    /// before `stream_time`: reads no longer see them, and the segments holding only
    /// expired entries go with one range delete. Their cached changes go downstream
    /// as usual but are not written.
    pub(crate) fn expire(&mut self, stream_time: i64) -> Result<()> {
        let idx = self.idx;
        let st = &mut self.stores.stores[idx];
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
        if let Some(front) = st.front.as_mut() {
            front.expire(min_live);
        }
        let live = min_live.div_euclid(segment_ms);
        if live <= st.live_segment || live <= 0 {
            return Ok(());
        }
        self.stores.flush_picked(idx, |k| match entry_segment(k) {
            Some(seg) if seg < live => Pick::Take,
            _ => Pick::Keep,
        })?;
        let st = &mut self.stores.stores[idx];
        st.store.delete_range(&segment_key(0), &segment_key(live))?;
        st.live_segment = live;
        Ok(())
    }

    /// Writes and forwards the cached changes of entries whose time is before
    /// `before`, leaving the others cached; expired ones are forwarded, not written.
    pub(crate) fn flush_before(&mut self, before: i64) -> Result<()> {
        if !self.cached() {
            return Ok(());
        }
        let st = &self.stores.stores[self.idx];
        let (ty, min_live) = (st.store_type, st.min_live);
        self.stores
            .flush_picked(self.idx, |k| match entry_time(&ty, k) {
                Some(t) if t < min_live => Pick::Take,
                Some(t) if t < before => Pick::Flush,
                _ => Pick::Keep,
            })
    }
}
