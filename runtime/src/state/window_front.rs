//! The in-memory front of a window store retaining duplicates (a stream-stream join's).
//!
//! A join reads the other side's window for every record it processes, and ~95% of
//! those reads find nothing; through RocksDB each is an iterator built and a memtable
//! seek per segment, and each record written is a memtable insert and a changelog
//! record. Yet a join only ever looks at the last `before + after + grace` of stream
//! time. So the front keeps the recent entries of the store in memory, write-behind,
//! as the record cache does for key-value stores:
//!
//! - A put lands in the front only (dirty). A commit (or a scan that needs the whole
//!   store) writes the dirty entries to the store, and so to its changelog, in one
//!   key-sorted batch; they stay in the front, clean. Entries that expire before they
//!   are written are never written: a join whose retention is shorter than the commit
//!   interval hardly touches RocksDB at all.
//! - The front holds *every* entry whose window start is at or after its `floor`. A
//!   fetch of one key in `[from, to]` reads the front for the part at or after the
//!   floor and the store for the part before it (nothing, while the floor is below
//!   the retention).
//! - Its bytes are reserved from the runtime's record cache budget (so they count in
//!   the one memory limit, and show in the record cache's zone). A front holds at
//!   most [`FRONT_SHARE`] of that budget, and all fronts together at most half of it:
//!   they do not give bytes back on request, as cached entries do. When it cannot reserve, it writes its dirty
//!   entries, drops its oldest entries until half is free and raises its floor past
//!   them; a put older than the floor goes straight to the store.
//! - A failed task drops its front unwritten, like its record cache entries: nothing
//!   after the last commit reaches a store.
//!
//! Keys are the window store's: `segment | key length | key | start | sequence`. The
//! front groups them by `segment | key length | key` (one hash lookup per segment a
//! fetch spans) and keeps each group's entries sorted by `start | sequence`, so every
//! answer is in the store's key order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::state::RecordCache;
use crate::state::window::{bytes_time, time_bytes};

/// The largest share of the record cache budget one front may hold (1/16).
pub(crate) const FRONT_SHARE: usize = 16;

/// Bytes charged per entry on top of its value, at their worst: the entry in its
/// group's vector (40 bytes: suffix, value pointer and flag; up to twice that while
/// the vector has spare room), its element in the expiry queue (24 bytes, likewise)
/// and the allocator's rounding of the value (up to 16 bytes).
const ENTRY_OVERHEAD: usize = 144;

/// Bytes charged per group on top of its prefix: the hash-table slot (key and vector
/// headers, 40 bytes, at a load of 7/8), the shared prefix's header and rounding.
const GROUP_OVERHEAD: usize = 96;

/// Reservations from the record cache budget are taken and given back in chunks of
/// this many bytes, so a put does not touch the shared counter.
const RESERVE_CHUNK: usize = 64 << 10;

/// One entry: `start | sequence` (16 bytes, in the store's byte order), its value,
/// and whether the store has it yet.
struct FrontEntry {
    suffix: [u8; 16],
    value: Box<[u8]>,
    dirty: bool,
}

impl FrontEntry {
    fn start(&self) -> i64 {
        bytes_time(&self.suffix)
    }

    fn size(&self) -> usize {
        self.value.len() + ENTRY_OVERHEAD
    }
}

type Groups = HashMap<Arc<[u8]>, Vec<FrontEntry>, foldhash::fast::RandomState>;

/// What became of a put offered to the front.
pub(crate) enum Put {
    /// The front holds it.
    Taken,
    /// Not for the front (not an entry key, a delete, or older than the floor):
    /// write it to the store.
    Refused(Vec<u8>, Option<Vec<u8>>),
    /// No room: write the front's dirty entries, [`WindowFront::evict_half`], and
    /// offer it again.
    Full(Vec<u8>, Option<Vec<u8>>),
}

/// How a single-key range splits between the store and the front.
pub(crate) struct Split {
    /// The part of the range before the floor, to read from the store (`None`: none).
    pub(crate) store: Option<(Vec<u8>, Vec<u8>)>,
    /// The front's entries in the rest of the range, in key order.
    pub(crate) front: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The in-memory front of one window store retaining duplicates.
pub(crate) struct WindowFront {
    budget: Arc<RecordCache>,
    /// The most this front may hold.
    cap: usize,
    /// Bytes its entries and groups take.
    bytes: usize,
    /// Bytes reserved from the budget (at least `bytes`).
    reserved: usize,
    /// Every entry whose start is at or after this is in the front.
    floor: i64,
    groups: Groups,
    /// (start, group) of every put, in the order they came: expiry and eviction pop
    /// from the front. Timestamps rise with small disorder, so this is nearly in time
    /// order; an entry behind a later one waits for it (the queue lags by the disorder).
    order: VecDeque<(i64, Arc<[u8]>)>,
    /// How many entries are dirty.
    dirty: usize,
}

/// Splits a window store key into its group (`segment | key length | key`) and the
/// rest; `None` unless the key has a well-formed group.
fn split_group(key: &[u8]) -> Option<(&[u8], &[u8])> {
    if key.len() < 12 || key[0] < 0x80 {
        return None;
    }
    let len = u32::from_be_bytes(key[8..12].try_into().ok()?) as usize;
    let end = 12usize.checked_add(len)?;
    (key.len() >= end).then(|| key.split_at(end))
}

impl WindowFront {
    /// A front drawing on `budget`; the store holds no entry starting at or after
    /// `floor` (`i64::MIN` for an empty store).
    pub(crate) fn new(budget: Arc<RecordCache>, floor: i64) -> Self {
        let cap = budget.cap() / FRONT_SHARE;
        WindowFront {
            budget,
            cap,
            bytes: 0,
            reserved: 0,
            floor,
            groups: Groups::default(),
            order: VecDeque::new(),
            dirty: 0,
        }
    }

    /// Whether any entry waits to be written to the store.
    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// Bytes the front's entries take.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Offers a write of `key` (`None` deletes it).
    pub(crate) fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Put {
        let Some((group, suffix)) = split_group(&key) else {
            return Put::Refused(key, value);
        };
        let Ok(suffix) = <[u8; 16]>::try_from(suffix) else {
            return Put::Refused(key, value);
        };
        let Some(v) = value else {
            // A delete: the store has the entry or not; the front must not keep it.
            self.remove(group, &suffix);
            return Put::Refused(key, None);
        };
        let start = bytes_time(&suffix);
        if start < self.floor {
            return Put::Refused(key, Some(v));
        }
        let existing = self.groups.get_key_value(group).map(|(g, _)| g.clone());
        let size = v.len()
            + ENTRY_OVERHEAD
            + existing
                .as_ref()
                .map_or(group.len() + GROUP_OVERHEAD, |_| 0);
        if !self.charge(size) {
            return Put::Full(key, Some(v));
        }
        let group: Arc<[u8]> = existing.unwrap_or_else(|| Arc::from(group));
        // Most groups hold one entry: no room for four (a vector's first growth).
        let entries = self
            .groups
            .entry(group.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        let entry = FrontEntry {
            suffix,
            value: v.into_boxed_slice(),
            dirty: true,
        };
        let mut replaced = None;
        match entries.last() {
            Some(last) if last.suffix >= suffix => {
                match entries.binary_search_by(|e| e.suffix.cmp(&suffix)) {
                    // The same key again: the new value replaces the old one.
                    Ok(i) => replaced = Some(std::mem::replace(&mut entries[i], entry)),
                    Err(i) => entries.insert(i, entry),
                }
            }
            _ => entries.push(entry),
        }
        self.dirty += 1;
        if let Some(old) = replaced {
            self.dirty -= usize::from(old.dirty);
            self.uncharge(old.size());
        }
        self.order.push_back((start, group));
        Put::Taken
    }

    /// After a put the front could not take even once half of it was free (a value
    /// larger than that): raises the floor past it, so the store may hold it.
    pub(crate) fn pass(&mut self, key: &[u8]) {
        if let Some((_, suffix)) = split_group(key)
            && suffix.len() >= 8
        {
            self.floor = self.floor.max(bytes_time(suffix).saturating_add(1));
        }
    }

    /// Adds `n` bytes, reserving more of the budget if needed; false if the front
    /// is at its cap or the budget is spent.
    fn charge(&mut self, n: usize) -> bool {
        if self.bytes + n > self.cap {
            return false;
        }
        if self.bytes + n > self.reserved {
            let need = self.bytes + n - self.reserved;
            let want = need.max(RESERVE_CHUNK.min(self.cap - self.reserved));
            if !self.budget.try_reserve_front(want) {
                return false;
            }
            self.reserved += want;
        }
        self.bytes += n;
        true
    }

    /// Gives reserved bytes back to the budget once two chunks are unused.
    fn uncharge(&mut self, n: usize) {
        self.bytes -= n;
        if self.reserved - self.bytes > 2 * RESERVE_CHUNK {
            let back = self.reserved - self.bytes - RESERVE_CHUNK;
            self.budget.release_front(back);
            self.reserved -= back;
        }
    }

    fn remove(&mut self, group: &[u8], suffix: &[u8; 16]) {
        let Some(entries) = self.groups.get_mut(group) else {
            return;
        };
        if let Ok(i) = entries.binary_search_by(|e| e.suffix.cmp(suffix)) {
            let e = entries.remove(i);
            self.dirty -= usize::from(e.dirty);
            let mut freed = e.size();
            if entries.is_empty() {
                self.groups.remove(group);
                freed += group.len() + GROUP_OVERHEAD;
            }
            self.uncharge(freed);
        }
    }

    /// Drops the entries of `group` starting before `before`; returns the bytes freed.
    fn drop_before(groups: &mut Groups, dirty: &mut usize, group: &[u8], before: i64) -> usize {
        let Some(entries) = groups.get_mut(group) else {
            return 0;
        };
        let n = entries.partition_point(|e| e.start() < before);
        if n == 0 {
            return 0;
        }
        let mut freed = 0;
        for e in entries.drain(..n) {
            *dirty -= usize::from(e.dirty);
            freed += e.size();
        }
        if entries.is_empty() {
            groups.remove(group);
            freed += group.len() + GROUP_OVERHEAD;
        }
        freed
    }

    /// Drops the entries that started before `min_live` (expired: no read sees them
    /// again), written or not.
    pub(crate) fn expire(&mut self, min_live: i64) {
        let mut freed = 0;
        while let Some((start, _)) = self.order.front() {
            if *start >= min_live {
                break;
            }
            let (_, group) = self.order.pop_front().expect("front exists");
            freed += Self::drop_before(&mut self.groups, &mut self.dirty, &group, min_live);
        }
        if freed > 0 {
            self.uncharge(freed);
        }
    }

    /// After its dirty entries were written: drops the oldest entries until half the
    /// front is free, and raises the floor past them (fetches before it read the
    /// store).
    pub(crate) fn evict_half(&mut self) {
        debug_assert_eq!(self.dirty, 0, "write the dirty entries first");
        let mut freed = 0;
        while self.bytes - freed > self.cap / 2 {
            let Some((start, group)) = self.order.pop_front() else {
                break;
            };
            self.floor = self.floor.max(start.saturating_add(1));
            freed += Self::drop_before(&mut self.groups, &mut self.dirty, &group, self.floor);
        }
        if self.order.is_empty() {
            freed = self.bytes;
            self.groups.clear();
        }
        self.uncharge(freed);
    }

    /// The dirty entries as (full key, value), unsorted; [`WindowFront::written`]
    /// marks them clean once the store has them.
    pub(crate) fn dirty_entries(&self) -> Vec<(Vec<u8>, &[u8])> {
        let mut out = Vec::with_capacity(self.dirty);
        if self.dirty == 0 {
            return out;
        }
        for (group, entries) in &self.groups {
            for e in entries.iter().filter(|e| e.dirty) {
                let mut k = Vec::with_capacity(group.len() + 16);
                k.extend_from_slice(group);
                k.extend_from_slice(&e.suffix);
                out.push((k, &e.value[..]));
            }
        }
        out
    }

    /// Marks every entry clean (the store has them all).
    pub(crate) fn written(&mut self) {
        if self.dirty == 0 {
            return;
        }
        for e in self.groups.values_mut().flat_map(|g| g.iter_mut()) {
            e.dirty = false;
        }
        self.dirty = 0;
    }

    /// How the range `from <= key < to` splits between the store and the front, if
    /// both ends are in one group (one key in one segment); `None` otherwise (write
    /// the dirty entries and read the store).
    pub(crate) fn split(&self, from: &[u8], to: &[u8]) -> Option<Split> {
        let (group, lo) = split_group(from)?;
        let (to_group, hi) = split_group(to)?;
        if group != to_group {
            return None;
        }
        let floor = time_bytes(self.floor);
        let store = (lo < &floor[..]).then(|| {
            let mut end = group.to_vec();
            end.extend_from_slice(&floor);
            (from.to_vec(), end.min(to.to_vec()))
        });
        let mut front = Vec::new();
        if let Some(entries) = self.groups.get(group) {
            let lo = lo.max(&floor[..]);
            let first = entries.partition_point(|e| &e.suffix[..] < lo);
            for e in entries[first..].iter().take_while(|e| &e.suffix[..] < hi) {
                let mut k = Vec::with_capacity(group.len() + 16);
                k.extend_from_slice(group);
                k.extend_from_slice(&e.suffix);
                front.push((k, e.value.to_vec()));
            }
        }
        Some(Split { store, front })
    }
}

impl Drop for WindowFront {
    fn drop(&mut self) {
        self.budget.release_front(self.reserved);
    }
}

impl std::fmt::Debug for WindowFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowFront")
            .field("bytes", &self.bytes)
            .field("cap", &self.cap)
            .field("floor", &self.floor)
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::memory::ByteBudget;
    use crate::state::InMemoryStore;
    use crate::state::task_stores::{Access, TaskStore, TaskStores};
    use crate::state::window::{StoreType, key_prefix, split_key, window_key};

    const SEGMENT: i64 = 100;
    const RETENTION: i64 = 250;

    /// A task with one join-like window store (in memory) behind a front whose cap
    /// is `front_cap` bytes.
    fn stores(front_cap: usize) -> TaskStores {
        let store = InMemoryStore::new("w", Arc::new(ByteBudget::new(1 << 30)));
        let ty = StoreType::Window {
            size_ms: 0,
            retention_ms: RETENTION,
            segment_ms: SEGMENT,
            duplicates: true,
        };
        let (disk_segment, min_live) = TaskStore::opened(&store, ty).unwrap();
        let mut stores = TaskStores::default();
        stores.stores.push(TaskStore {
            name: "w".into(),
            store: Box::new(store),
            types: (std::any::TypeId::of::<()>(), std::any::TypeId::of::<()>()),
            serdes: Arc::new(()),
            processors: Vec::new(),
            cached: false,
            timestamped: false,
            forwards: false,
            forward_old: false,
            store_type: ty,
            live_segment: i64::MIN,
            seq: 0,
            min_live,
            disk_segment,
            changelog: None,
            front: Some(WindowFront::new(
                RecordCache::new(front_cap * FRONT_SHARE),
                i64::MIN,
            )),
        });
        stores
    }

    fn entry_key(key: u8, start: i64, seq: u64) -> Vec<u8> {
        let mut k = window_key(SEGMENT, &[key], start);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// What `WindowStoreHandle::fetch_range` reads: `key`'s entries starting in
    /// `[from, to]`, as (start, value), expired ones left out.
    fn fetch(stores: &mut TaskStores, key: u8, from: i64, to: i64) -> Vec<(i64, Vec<u8>)> {
        let mut a = Access::new(stores, 0, 0);
        let from = from.max(a.min_live());
        let mut out = Vec::new();
        if from > to {
            return out;
        }
        for seg in from.div_euclid(SEGMENT)..=to.div_euclid(SEGMENT) {
            let mut lo = key_prefix(seg, &[key]);
            let mut hi = lo.clone();
            lo.extend_from_slice(&time_bytes(from));
            hi.extend_from_slice(&time_bytes(to + 1));
            for (k, v) in a.range(&lo, &hi).unwrap() {
                let (_, [start, _]) = split_key(&k, 2).unwrap();
                out.push((start, v));
            }
        }
        out
    }

    #[test]
    fn puts_stay_in_memory_until_a_commit_writes_them() {
        let mut s = stores(1 << 20);
        let mut a = Access::new(&mut s, 0, 0);
        a.write(entry_key(1, 10, 1), Some(b"a".to_vec())).unwrap();
        a.write(entry_key(1, 10, 2), Some(b"b".to_vec())).unwrap();
        a.write(entry_key(2, 12, 3), Some(b"c".to_vec())).unwrap();
        assert!(s.stores[0].store.all().unwrap().is_empty());
        assert_eq!(
            fetch(&mut s, 1, 0, 20),
            vec![(10, b"a".to_vec()), (10, b"b".to_vec())]
        );
        s.flush_cache(None).unwrap();
        assert_eq!(s.stores[0].store.all().unwrap().len(), 3);
        // Written once: a second commit writes nothing new.
        assert!(!s.stores[0].front.as_ref().unwrap().has_dirty());
        assert_eq!(fetch(&mut s, 2, 12, 12), vec![(12, b"c".to_vec())]);
    }

    #[test]
    fn entries_expired_before_a_commit_are_never_written() {
        let mut s = stores(1 << 20);
        let mut a = Access::new(&mut s, 0, 0);
        a.write(entry_key(1, 10, 1), Some(b"old".to_vec())).unwrap();
        a.write(entry_key(1, 300, 2), Some(b"new".to_vec()))
            .unwrap();
        a.expire(300).unwrap();
        s.flush_cache(None).unwrap();
        let all = s.stores[0].store.all().unwrap();
        assert_eq!(all, vec![(entry_key(1, 300, 2), b"new".to_vec())]);
        let group = 8 + 4 + 1;
        assert_eq!(
            s.stores[0].front.as_ref().unwrap().bytes(),
            group + GROUP_OVERHEAD + 3 + ENTRY_OVERHEAD
        );
    }

    #[test]
    fn a_full_front_writes_its_entries_and_reads_the_oldest_from_the_store() {
        // Room for a few entries: the front evicts and raises its floor.
        let mut s = stores(2_000);
        for i in 0..40u64 {
            let mut a = Access::new(&mut s, 0, 0);
            a.write(entry_key(7, i as i64, i), Some(vec![i as u8; 100]))
                .unwrap();
        }
        let front = s.stores[0].front.as_ref().unwrap();
        assert!(front.bytes() <= 2_000, "{front:?}");
        assert!(front.floor > 0, "{front:?}");
        let got = fetch(&mut s, 7, 0, 39);
        let want: Vec<(i64, Vec<u8>)> = (0..40).map(|i| (i, vec![i as u8; 100])).collect();
        assert_eq!(got, want);
        // A put older than the floor goes to the store.
        let mut a = Access::new(&mut s, 0, 0);
        a.write(entry_key(7, 0, 99), Some(b"late".to_vec()))
            .unwrap();
        assert_eq!(fetch(&mut s, 7, 0, 0).len(), 2);
    }

    #[test]
    fn a_reopened_store_reads_before_its_floor_from_disk() {
        let mut s = stores(1 << 20);
        let mut a = Access::new(&mut s, 0, 0);
        a.write(entry_key(3, 150, 1), Some(b"x".to_vec())).unwrap();
        s.flush_cache(None).unwrap();
        // As the factory opens it again: the floor at the end of the last segment.
        let st = &mut s.stores[0];
        let (disk_segment, _) = TaskStore::opened(&*st.store, st.store_type).unwrap();
        st.front = Some(WindowFront::new(
            RecordCache::new(1 << 24),
            (disk_segment + 1) * SEGMENT,
        ));
        let mut a = Access::new(&mut s, 0, 0);
        a.write(entry_key(3, 210, 2), Some(b"y".to_vec())).unwrap();
        assert_eq!(
            fetch(&mut s, 3, 100, 300),
            vec![(150, b"x".to_vec()), (210, b"y".to_vec())]
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put { key: u8, ahead: i64, len: usize },
        Fetch { key: u8, back: i64, span: i64 },
        Expire,
        Commit,
        Scan,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..4, -40i64..60, 0usize..200)
                .prop_map(|(key, ahead, len)| Op::Put { key, ahead, len }),
            4 => (0u8..4, 0i64..400, 0i64..400)
                .prop_map(|(key, back, span)| Op::Fetch { key, back, span }),
            1 => Just(Op::Expire),
            1 => Just(Op::Commit),
            1 => Just(Op::Scan),
        ]
    }

    proptest! {
        /// Through the front, with evictions (a front of 600 to 3000 bytes), expiry,
        /// commits and scans, a store answers every fetch as a map of every put
        /// would, less what expired.
        #[test]
        fn the_front_and_the_store_answer_as_a_model(
            ops in proptest::collection::vec(op(), 1..200),
            cap in 600usize..3000,
        ) {
            let mut s = stores(cap);
            let mut model: BTreeMap<(u8, i64, u64), Vec<u8>> = BTreeMap::new();
            let (mut now, mut seq, mut min_live) = (0i64, 0u64, i64::MIN);
            for op in ops {
                match op {
                    Op::Put { key, ahead, len } => {
                        now = now.max(now + ahead);
                        let start = (now + ahead.min(0)).max(0);
                        seq += 1;
                        let value = vec![seq as u8; len];
                        let mut a = Access::new(&mut s, 0, start);
                        a.write(entry_key(key, start, seq), Some(value.clone())).unwrap();
                        model.insert((key, start, seq), value);
                    }
                    Op::Fetch { key, back, span } => {
                        let from = now - back;
                        let to = from + span;
                        let want: Vec<(i64, Vec<u8>)> = model
                            .iter()
                            .filter(|((k, t, _), _)| *k == key && *t >= from.max(min_live) && *t <= to)
                            .map(|((_, t, _), v)| (*t, v.clone()))
                            .collect();
                        prop_assert_eq!(fetch(&mut s, key, from, to), want);
                    }
                    Op::Expire => {
                        let mut a = Access::new(&mut s, 0, now);
                        a.expire(now).unwrap();
                        min_live = a.min_live();
                    }
                    Op::Commit => s.flush_cache(None).unwrap(),
                    Op::Scan => {
                        let mut a = Access::new(&mut s, 0, now);
                        a.settle().unwrap();
                        let live: Vec<(u8, i64, u64)> = a
                            .store()
                            .all()
                            .unwrap()
                            .iter()
                            .filter_map(|(k, _)| {
                                split_key(k, 2).map(|(kb, [t, q])| (kb[0], t, (q as u64) ^ (1 << 63)))
                            })
                            .filter(|(_, t, _)| *t >= min_live)
                            .collect();
                        let mut want: Vec<(u8, i64, u64)> = model
                            .keys()
                            .filter(|(_, t, _)| *t >= min_live)
                            .copied()
                            .collect();
                        let mut live = live;
                        live.sort_by_key(|(k, t, q)| (*k, *t, *q));
                        want.sort();
                        prop_assert_eq!(live, want);
                    }
                }
                let front = s.stores[0].front.as_ref().unwrap();
                prop_assert!(front.bytes() <= cap);
            }
        }
    }
}
