//! The record cache: ONE byte budget for every store of every task of every query.
//!
//! Kafka Streams splits its cache per stream thread and evicts only from the store that
//! was just written. weir keeps one budget for the runtime, with eviction in
//! least-recently-used order across all of it:
//!
//! - Each task owns a [`TaskCache`]: its entries across all its stores, in one LRU list.
//!   The hot path takes no lock. Every entry carries a tick from one global clock, so
//!   "oldest" means the same thing in every task.
//! - A write first reserves its bytes from the one [`RecordCache`] budget. If the
//!   budget is spent, the writer looks for the task whose oldest entry is oldest
//!   overall. If that is itself, it evicts its own LRU entries, a chunk of 1/64 of the
//!   budget at a time (one write batch). If it is another task, it asks that task to
//!   evict such a chunk (the owner does so on its next run, in its own context,
//!   since only the owner may write its stores and forward its records), and meanwhile
//!   writes its own entry through to the store. So the budget is never exceeded, and no
//!   task waits for another.
//! - Dirty entries are compacted per key: ten updates of a key between flushes write
//!   the store once. An evicted dirty entry is handed back to the caller, which writes
//!   it to its store and, for aggregations, forwards it downstream; a commit reads the
//!   dirty entries in place ([`TaskCache::flush_each`]) and marks them clean.

use crate::sync::Mutex;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use hashlink::LinkedHashMap;

mod flush;
mod key;
pub(crate) use flush::{Dirty, Pick};
use key::KeyBytes;

/// Bytes charged per entry on top of key and value: the map node with its list links,
/// key (inline up to 22 bytes) and metadata (112 bytes in jemalloc's size classes),
/// its hash-table slot, and the allocator's rounding of the value buffer (and of a
/// longer key's). Measured with jemalloc (`benches/src/bin/cache_entry_bytes.rs`,
/// 2026-12-07): an 8-byte key with a 200-byte value takes 355 bytes and is charged
/// 336; with 8-byte values 138 for 144, with 5000-byte values 5251 for 5136.
pub const ENTRY_OVERHEAD: usize = 128;

/// A task that must make room evicts at least this share of the budget at once (1/64),
/// so its store takes one write batch per chunk instead of one write per entry, and the
/// writes that follow find room without evicting again.
const EVICTION_CHUNK_DIVISOR: usize = 64;

/// A function that wakes a task (so it runs and serves an eviction request).
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

/// Ticks a task takes from the global clock at once: a read or write stamps its entry
/// from the task's own batch instead of incrementing the shared counter (a contended
/// cache line when two workers read their caches). Ticks stay unique and rise within
/// a task; across tasks "oldest" is right to within this many operations.
const TICK_BATCH: u64 = 64;

/// What a task publishes to the others: its oldest tick, its bytes, its read counts,
/// and requests made to it.
struct Shared {
    oldest: AtomicU64,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    evict_request: AtomicUsize,
    waker: Waker,
}

/// The runtime's one record cache budget.
pub struct RecordCache {
    cap: usize,
    used: AtomicUsize,
    /// Bytes of `used` reserved by join stores' in-memory fronts (at most half).
    fronts: AtomicUsize,
    clock: AtomicU64,
    tasks: Mutex<Vec<Weak<Shared>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// Counters and sizes of the record cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// The budget.
    pub cap: usize,
    /// Bytes in use.
    pub used: usize,
    /// Entries cached, over all tasks.
    pub entries: usize,
    /// Reads answered by the cache.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

impl RecordCache {
    /// A cache budget of `cap` bytes.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(RecordCache {
            cap,
            used: AtomicUsize::new(0),
            fronts: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> CacheStats {
        let (mut entries, mut hits, mut misses) = (0, 0, 0);
        for t in self.tasks.lock().iter().filter_map(Weak::upgrade) {
            entries += t.entries.load(Ordering::Relaxed);
            hits += t.hits.load(Ordering::Relaxed);
            misses += t.misses.load(Ordering::Relaxed);
        }
        CacheStats {
            cap: self.cap,
            used: self.used.load(Ordering::SeqCst),
            entries,
            hits: self.hits.load(Ordering::Relaxed) + hits,
            misses: self.misses.load(Ordering::Relaxed) + misses,
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Publishes the cache's figures as `metrics` gauges.
    pub fn publish_metrics(&self) {
        let s = self.stats();
        metrics::gauge!(crate::metrics::RECORD_CACHE_BYTES).set(s.used as f64);
        metrics::gauge!(crate::metrics::RECORD_CACHE_LIMIT_BYTES).set(s.cap as f64);
        metrics::gauge!(crate::metrics::RECORD_CACHE_ENTRIES).set(s.entries as f64);
        metrics::gauge!(crate::metrics::RECORD_CACHE_EVICTIONS).set(s.evictions as f64);
        let reads = s.hits + s.misses;
        if reads > 0 {
            metrics::gauge!(crate::metrics::RECORD_CACHE_HIT_RATIO)
                .set(s.hits as f64 / reads as f64);
        }
    }

    /// A task's part of the cache; `waker` makes the task run.
    pub fn task_cache(self: &Arc<Self>, waker: Waker) -> TaskCache {
        let shared = Arc::new(Shared {
            oldest: AtomicU64::new(u64::MAX),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evict_request: AtomicUsize::new(0),
            waker,
        });
        let mut tasks = self.tasks.lock();
        tasks.retain(|w| w.strong_count() > 0);
        tasks.push(Arc::downgrade(&shared));
        TaskCache {
            global: self.clone(),
            shared,
            entries: LinkedHashMap::new(),
            bytes: 0,
            dirty: 0,
            ticks: 0..0,
            hits: 0,
            misses: 0,
        }
    }

    /// The budget.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Charges `n` bytes if they fit under the cap.
    fn try_reserve(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::SeqCst);
        loop {
            if cur + n > self.cap {
                return false;
            }
            match self
                .used
                .compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Charges `n` bytes for a join store's in-memory front, if they fit under the
    /// cap and the fronts together stay within half of it (the rest is the cached
    /// entries', which fronts do not give up on request).
    pub(crate) fn try_reserve_front(&self, n: usize) -> bool {
        let mut cur = self.fronts.load(Ordering::SeqCst);
        loop {
            if cur + n > self.cap / 2 {
                return false;
            }
            match self
                .fronts
                .compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if self.try_reserve(n) {
            return true;
        }
        self.fronts.fetch_sub(n, Ordering::SeqCst);
        false
    }

    /// Gives back `n` bytes a front reserved.
    pub(crate) fn release_front(&self, n: usize) {
        self.fronts.fetch_sub(n, Ordering::SeqCst);
        self.release(n);
    }

    /// Gives back `n` charged bytes.
    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::SeqCst);
    }

    /// The other task holding the oldest entry, with that entry's tick.
    fn oldest_other(&self, me: &Arc<Shared>) -> Option<(Arc<Shared>, u64)> {
        let tasks = self.tasks.lock();
        tasks
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|t| !Arc::ptr_eq(t, me) && t.bytes.load(Ordering::Relaxed) > 0)
            .map(|t| {
                let oldest = t.oldest.load(Ordering::Relaxed);
                (t, oldest)
            })
            .min_by_key(|(_, oldest)| *oldest)
    }
}

/// What a cache lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The cache holds the key: its value, or `None` if it was deleted.
    Hit(Option<&'a [u8]>),
    /// Not cached: read the store.
    Miss,
}

struct Entry {
    value: Option<Vec<u8>>,
    timestamp: i64,
    dirty: bool,
    size: usize,
}

type Key = (usize, KeyBytes);

/// One task's entries, across all its stores, in least-recently-used order.
pub struct TaskCache {
    global: Arc<RecordCache>,
    shared: Arc<Shared>,
    /// Front = least recently used; each value holds its entry's last-use tick.
    entries: LinkedHashMap<Key, (u64, Entry)>,
    bytes: usize,
    /// How many entries are dirty: a flush walks back from the most recent entry only
    /// until it has seen them all, not over every clean entry.
    dirty: usize,
    /// Ticks taken from the global clock, not used yet ([`TICK_BATCH`]).
    ticks: std::ops::Range<u64>,
    /// Reads answered here, and reads that went to the store (published in `Shared`).
    hits: u64,
    misses: u64,
}

fn size_of(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

impl TaskCache {
    /// Bytes this task's entries take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the task caches nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next tick of this task.
    fn tick(&mut self) -> u64 {
        if self.ticks.is_empty() {
            let base = self.global.clock.fetch_add(TICK_BATCH, Ordering::Relaxed);
            self.ticks = base..base + TICK_BATCH;
        }
        self.ticks.next().expect("not empty")
    }

    fn publish(&self) {
        let oldest = self.entries.front().map_or(u64::MAX, |(_, (t, _))| *t);
        self.shared.oldest.store(oldest, Ordering::Relaxed);
        self.shared.bytes.store(self.bytes, Ordering::Relaxed);
        self.shared
            .entries
            .store(self.entries.len(), Ordering::Relaxed);
    }

    /// Looks `key` up in `store`'s entries, refreshing it if found.
    pub fn get(&mut self, store: usize, key: &[u8]) -> Lookup<'_> {
        // `(usize, &[u8])` hashes like the stored `(usize, KeyBytes)`: look up without
        // copying the key.
        let hash = self.entries.hasher().hash_one((store, key));
        // Taken before the lookup borrows the map (a miss uses one up: ticks need only
        // be unique and rising).
        let tick = self.tick();
        match self
            .entries
            .raw_entry_mut()
            .from_hash(hash, |(s, k)| *s == store && k.as_slice() == key)
        {
            hashlink::linked_hash_map::RawEntryMut::Occupied(mut o) => {
                o.to_back();
                let (t, _) = o.into_mut();
                *t = tick;
                self.hits += 1;
                self.shared.hits.store(self.hits, Ordering::Relaxed);
                // The front (oldest) entry may have moved: publish the new oldest tick.
                let oldest = self.entries.front().map_or(u64::MAX, |(_, (t, _))| *t);
                self.shared.oldest.store(oldest, Ordering::Relaxed);
                let e = &self.entries.back().expect("just moved to the back").1.1;
                Lookup::Hit(e.value.as_deref())
            }
            hashlink::linked_hash_map::RawEntryMut::Vacant(_) => {
                self.misses += 1;
                self.shared.misses.store(self.misses, Ordering::Relaxed);
                Lookup::Miss
            }
        }
    }

    /// Caches a value read from the store (clean), copying it only if there is room;
    /// dropped silently if there is none: a read never evicts dirty data. A full
    /// cache (a table larger than the budget, read at random) costs a read miss one
    /// failed reservation here, no lookup and no copy.
    pub fn insert_clean(&mut self, store: usize, key: &[u8], value: Option<&[u8]>) {
        let size = key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        if !self.global.try_reserve(size) {
            return;
        }
        let hash = self.entries.hasher().hash_one((store, key));
        if self
            .entries
            .raw_entry()
            .from_hash(hash, |(s, k)| *s == store && k.as_slice() == key)
            .is_some()
        {
            self.global.release(size);
            return;
        }
        self.admit(
            (store, KeyBytes::from(key)),
            value.map(<[u8]>::to_vec),
            0,
            false,
            size,
        );
    }

    /// Inserts an entry whose `size` bytes are already reserved, as the most recently
    /// used.
    fn admit(&mut self, k: Key, value: Option<Vec<u8>>, timestamp: i64, dirty: bool, size: usize) {
        self.bytes += size;
        self.dirty += usize::from(dirty);
        let tick = self.tick();
        let entry = Entry {
            value,
            timestamp,
            dirty,
            size,
        };
        self.entries.insert(k, (tick, entry));
        self.publish();
    }

    /// Writes `value` (`None` = delete) for `key` in `store`, from a record with
    /// `timestamp`. Returns the dirty entries the caller must write to their stores
    /// now, each key at most once: entries evicted to make room (a chunk of at least
    /// 1/64 of the budget, written in one batch) and, if there was no room, this write
    /// itself (written through).
    pub fn put(
        &mut self,
        store: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        timestamp: i64,
    ) -> Vec<Dirty> {
        let size = size_of(&key, &value);
        let k = (store, KeyBytes::from(key));
        let mut out = Vec::new();
        // The new value supersedes any cached one (compaction): release the old bytes.
        if let Some((_, old)) = self.entries.remove(&k) {
            self.bytes -= old.size;
            self.dirty -= usize::from(old.dirty);
            self.global.release(old.size);
        }
        loop {
            if self.global.try_reserve(size) {
                self.admit(k, value, timestamp, true, size);
                return out;
            }
            let my_oldest = self.entries.front().map_or(u64::MAX, |(_, (t, _))| *t);
            match self.global.oldest_other(&self.shared) {
                Some((victim, theirs)) if theirs < my_oldest => {
                    // Someone else holds older entries: ask them to make room (a chunk,
                    // so this does not repeat for every write) and write this one
                    // through. One request at a time: the writes that come through
                    // while it is pending do not pile up more.
                    let chunk =
                        (size + self.global.cap / EVICTION_CHUNK_DIVISOR).min(self.global.cap);
                    if victim
                        .evict_request
                        .compare_exchange(0, chunk, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        (victim.waker)();
                    }
                    break;
                }
                _ => {
                    let chunk = size + self.global.cap / EVICTION_CHUNK_DIVISOR;
                    if self.evict_bytes(chunk, &mut out) == 0 {
                        break;
                    }
                }
            }
        }
        self.publish();
        out.push(Dirty {
            store,
            key: k.1.into_vec(),
            value,
            timestamp,
        });
        out
    }

    /// Evicts least-recently-used entries until `want` bytes are freed or nothing is
    /// left; returns the bytes freed.
    fn evict_bytes(&mut self, want: usize, out: &mut Vec<Dirty>) -> usize {
        let before = self.bytes;
        while before - self.bytes < want && self.evict_lru(out) {}
        before - self.bytes
    }

    /// Evicts the least-recently-used entry; false if there is none.
    fn evict_lru(&mut self, out: &mut Vec<Dirty>) -> bool {
        let Some(((store, key), (_, e))) = self.entries.pop_front() else {
            return false;
        };
        self.bytes -= e.size;
        self.global.release(e.size);
        self.global.evictions.fetch_add(1, Ordering::Relaxed);
        if e.dirty {
            self.dirty -= 1;
            out.push(Dirty {
                store,
                key: key.into_vec(),
                value: e.value,
                timestamp: e.timestamp,
            });
        }
        true
    }

    /// Serves eviction requests other tasks made: evicts LRU entries until the
    /// requested bytes are freed (or nothing is left). Returns the dirty ones.
    pub fn serve_eviction_requests(&mut self) -> Vec<Dirty> {
        let want = self.shared.evict_request.swap(0, Ordering::SeqCst);
        let mut out = Vec::new();
        self.evict_bytes(want, &mut out);
        self.publish();
        out
    }

    /// True if another task asked this one to evict.
    pub fn has_eviction_request(&self) -> bool {
        self.shared.evict_request.load(Ordering::SeqCst) > 0
    }

    /// Drops every entry without returning anything (a failed task: its dirty data
    /// must not reach the store, as nothing after the last commit is kept).
    pub fn discard(&mut self) {
        self.global.release(self.bytes);
        self.entries.clear();
        self.bytes = 0;
        self.dirty = 0;
        self.publish();
    }
}

impl Drop for TaskCache {
    fn drop(&mut self) {
        self.global.release(self.bytes);
        // Its reads still count once it is gone (not twice meanwhile).
        self.shared.hits.store(0, Ordering::Relaxed);
        self.shared.misses.store(0, Ordering::Relaxed);
        self.global.hits.fetch_add(self.hits, Ordering::Relaxed);
        self.global.misses.fetch_add(self.misses, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache")
            .field("cap", &self.cap)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TaskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCache")
            .field("entries", &self.entries.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn no_waker() -> Waker {
        Arc::new(|| {})
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put {
            task: usize,
            store: usize,
            key: u8,
            len: usize,
        },
        Delete {
            task: usize,
            store: usize,
            key: u8,
        },
        Get {
            task: usize,
            store: usize,
            key: u8,
        },
        Flush {
            task: usize,
        },
        Serve {
            task: usize,
        },
        /// Keys below `split / 2` are taken, below `split` flushed, the rest kept.
        FlushPicked {
            task: usize,
            store: usize,
            split: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..3usize, 0..2usize, 0..20u8, 0..200usize)
                .prop_map(|(task, store, key, len)| Op::Put { task, store, key, len }),
            1 => (0..3usize, 0..2usize, 0..20u8).prop_map(|(task, store, key)| Op::Delete { task, store, key }),
            3 => (0..3usize, 0..2usize, 0..20u8).prop_map(|(task, store, key)| Op::Get { task, store, key }),
            1 => (0..3usize).prop_map(|task| Op::Flush { task }),
            1 => (0..3usize).prop_map(|task| Op::Serve { task }),
            1 => (0..3usize, 0..2usize, 0..22u8)
                .prop_map(|(task, store, split)| Op::FlushPicked { task, store, split }),
        ]
    }

    type Stores = Vec<Vec<BTreeMap<Vec<u8>, Vec<u8>>>>;

    fn apply(stores: &mut Stores, task: usize, dirty: Vec<Dirty>) {
        for d in dirty {
            match d.value {
                Some(v) => stores[task][d.store].insert(d.key, v),
                None => stores[task][d.store].remove(&d.key),
            };
        }
    }

    proptest! {
        /// Three tasks share one budget. Reading through the cache always gives the
        /// last write; the budget is never exceeded; after a flush the stores hold
        /// exactly the last writes (nothing dirty is lost, nothing stale is written).
        #[test]
        fn cache_over_stores_equals_last_writes(
            ops in proptest::collection::vec(op(), 1..300),
            cap in 300..3000usize,
        ) {
            let global = RecordCache::new(cap);
            let mut caches: Vec<TaskCache> = (0..3).map(|_| global.task_cache(no_waker())).collect();
            let mut stores: Stores = vec![vec![BTreeMap::new(); 2]; 3];
            let mut model: Stores = vec![vec![BTreeMap::new(); 2]; 3];
            for op in ops {
                match op {
                    Op::Put { task, store, key, len } => {
                        let v = vec![key; len];
                        let out = caches[task].put(store, vec![key], Some(v.clone()), 0);
                        apply(&mut stores, task, out);
                        model[task][store].insert(vec![key], v);
                    }
                    Op::Delete { task, store, key } => {
                        let out = caches[task].put(store, vec![key], None, 0);
                        apply(&mut stores, task, out);
                        model[task][store].remove(&vec![key]);
                    }
                    Op::Get { task, store, key } => {
                        let got = match caches[task].get(store, &[key]) {
                            Lookup::Hit(v) => v.map(<[u8]>::to_vec),
                            Lookup::Miss => {
                                let v = stores[task][store].get(&vec![key]).cloned();
                                caches[task].insert_clean(store, &[key], v.as_deref());
                                v
                            }
                        };
                        prop_assert_eq!(got, model[task][store].get(&vec![key]).cloned());
                    }
                    Op::Flush { task } => {
                        let out = caches[task].flush();
                        apply(&mut stores, task, out);
                        prop_assert_eq!(&stores[task], &model[task]);
                    }
                    Op::FlushPicked { task, store, split } => {
                        let out = caches[task].flush_picked(store, |k| {
                            if k[0] < split / 2 {
                                Pick::Take
                            } else if k[0] < split {
                                Pick::Flush
                            } else {
                                Pick::Keep
                            }
                        });
                        let mut taken = Vec::new();
                        for (d, t) in &out {
                            prop_assert_eq!(d.store, store);
                            prop_assert!(d.key[0] < split);
                            prop_assert_eq!(*t, d.key[0] < split / 2);
                            if *t {
                                taken.push(d.key.clone());
                            }
                        }
                        // The caller writes (or, for expired entries, forwards) them.
                        apply(&mut stores, task, out.into_iter().map(|(d, _)| d).collect());
                        for k in taken {
                            prop_assert_eq!(caches[task].get(store, &k), Lookup::Miss);
                        }
                    }
                    Op::Serve { task } => {
                        let out = caches[task].serve_eviction_requests();
                        apply(&mut stores, task, out);
                    }
                }
                let used = global.stats().used;
                prop_assert!(used <= cap, "used {} over cap {}", used, cap);
                prop_assert_eq!(used, caches.iter().map(TaskCache::bytes).sum::<usize>());
            }
            for (task, cache) in caches.iter_mut().enumerate() {
                let out = cache.drain();
                apply(&mut stores, task, out);
            }
            prop_assert_eq!(stores, model);
            prop_assert_eq!(global.stats().used, 0);
        }
    }

    #[test]
    fn join_fronts_take_at_most_half_of_the_budget() {
        let cache = RecordCache::new(1000);
        assert!(cache.try_reserve_front(400));
        assert!(!cache.try_reserve_front(101), "past half");
        assert!(cache.try_reserve_front(100));
        // The other half is the cached entries'.
        assert!(cache.try_reserve(500));
        assert!(!cache.try_reserve(1));
        cache.release_front(500);
        assert_eq!(cache.stats().used, 500);
        assert!(cache.try_reserve_front(500));
        assert!(!cache.try_reserve_front(1), "past half, and the cap");
    }

    #[test]
    fn updates_to_one_key_are_compacted() {
        let global = RecordCache::new(10_000);
        let mut c = global.task_cache(no_waker());
        for i in 0..10u8 {
            assert!(
                c.put(0, b"k".to_vec(), Some(vec![i]), i64::from(i))
                    .is_empty()
            );
        }
        assert_eq!(
            c.flush(),
            vec![Dirty {
                store: 0,
                key: b"k".to_vec(),
                value: Some(vec![9]),
                timestamp: 9,
            }],
            "one write of the last value, with the last record's timestamp"
        );
        assert!(c.flush().is_empty(), "flushed entries are clean");
        assert_eq!(c.get(0, b"k"), Lookup::Hit(Some(&[9][..])));
    }

    #[test]
    fn a_full_cache_asks_the_task_with_the_oldest_entries_to_evict() {
        let global = RecordCache::new(4 * (ENTRY_OVERHEAD + 2));
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let mut old = global.task_cache(Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        let mut new = global.task_cache(no_waker());
        for k in 0..4u8 {
            assert!(old.put(0, vec![k], Some(vec![k]), 0).is_empty());
        }
        // The newer task finds the budget spent by older entries of another task: it
        // writes through and asks that task to make room.
        let out = new.put(0, b"n".to_vec(), Some(vec![1]), 7);
        assert_eq!(
            out,
            vec![Dirty {
                store: 0,
                key: b"n".to_vec(),
                value: Some(vec![1]),
                timestamp: 7,
            }]
        );
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(old.has_eviction_request());
        // While that request is pending, more writes go through without piling up
        // requests.
        assert_eq!(new.put(0, b"o".to_vec(), Some(vec![1]), 0).len(), 1);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        let evicted = old.serve_eviction_requests();
        assert!(!evicted.is_empty());
        assert_eq!(evicted[0].key, vec![0], "least recently used first");
        // Now there is room.
        assert!(new.put(0, b"m".to_vec(), Some(vec![2]), 0).is_empty());
    }

    #[test]
    fn the_task_with_the_oldest_entries_evicts_its_own() {
        let global = RecordCache::new(3 * (ENTRY_OVERHEAD + 2));
        let mut a = global.task_cache(no_waker());
        for k in 0..3u8 {
            a.put(0, vec![k], Some(vec![k]), 0);
        }
        a.get(0, &[0]); // 0 is now the most recently used
        let out = a.put(0, vec![9], Some(vec![9]), 0);
        // Room for one entry plus a chunk of 1/64 of the budget: two entries go, least
        // recently used first, and the new one is cached.
        let evicted: Vec<Vec<u8>> = out.iter().map(|d| d.key.clone()).collect();
        assert_eq!(evicted, vec![vec![1], vec![2]]);
        assert_eq!(global.stats().evictions, 2);
        assert_eq!(a.get(0, &[9]), Lookup::Hit(Some(&[9][..])));
        assert_eq!(a.get(0, &[0]), Lookup::Hit(Some(&[0][..])));
    }

    #[test]
    fn eviction_frees_a_chunk_so_the_next_writes_find_room() {
        // 64 entries of 200 bytes: a chunk is 1/64 of the budget = one entry's size.
        let size = 200;
        let global = RecordCache::new(64 * size);
        let mut a = global.task_cache(no_waker());
        let value = |k: u8| Some(vec![k; size - ENTRY_OVERHEAD - 1]);
        for k in 0..64u8 {
            assert!(a.put(0, vec![k], value(k), 0).is_empty());
        }
        // The 65th write evicts two entries (its own size + one chunk)...
        assert_eq!(a.put(0, vec![64], value(64), 0).len(), 2);
        // ...so the 66th finds room without evicting.
        assert!(a.put(0, vec![65], value(65), 0).is_empty());
        assert_eq!(global.stats().used, 64 * size);
    }
}
