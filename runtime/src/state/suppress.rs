//! Suppression buffers: hold each key's latest change until its time comes, within a
//! bound, and persist what they hold so a restart loses nothing.
//!
//! A [`SuppressionBuffer`] is byte-level (keys and payloads are serialized by the
//! operator above it) and ordered by *buffer time*: the window end for final results,
//! the first buffering time for a time limit. [`SuppressionBuffer::evict_due`] hands
//! out, oldest first, every entry whose time has come.
//!
//! Every in-memory entry is charged twice: against the operator's own bound
//! ([`BufferBounds`], per operator instance, i.e. per task as in Kafka Streams) and
//! against the runtime's one suppression budget shared by every buffer of every query.
//! When either refuses, the operator's [`FullPolicy`] decides: emit the oldest entries
//! early, spill them to the buffer's store (RocksDB under the shared cache), or shut
//! the query down cleanly. Memory never goes past the bounds: an entry that does not fit
//! goes to the store (spill or shut-down) or out (emit early).
//!
//! Persistence: the buffer owns an uncached store. At each commit,
//! [`SuppressionBuffer::flush`] writes the entries changed since the last commit (and
//! deletes those emitted) in one batch, together with the operator's observed stream
//! time. After a restart every entry is on disk only and is read back lazily: updates
//! look the key up in the store, and emission scans the store's due range. Layout:
//! - `0x01 | buffer time(8) | key` → `record timestamp(8) | payload`;
//! - `0x02 | key` → `buffer time(8)` (finds a spilled key's entry);
//! - the window stores' stream-time key → observed stream time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::memory::ByteBudget;
use crate::state::window::{META_KEY, bytes_time, time_bytes};
use crate::state::{BatchEntry, KeyValueStore};

/// Bytes charged per in-memory entry on top of its key (held twice: the time-ordered
/// map and the key index) and payload.
pub const ENTRY_OVERHEAD: usize = 128;

const BY_TIME: u8 = 0x01;
const BY_KEY: u8 = 0x02;

/// What a buffer does when an entry does not fit its bound or the global budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Emit the oldest entries until the new one fits (results may come early, and
    /// a key may then be emitted more than once).
    EmitEarly,
    /// Stop emitting, persist everything, and shut the query down cleanly.
    ShutDown,
    /// Move the oldest entries to the buffer's store; they are emitted from there when
    /// their time comes.
    SpillToDisk,
}

/// A buffer's own bound (`None`: no bound of that kind; the global budget still
/// applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferBounds {
    /// Bytes of in-memory entries (keys, payloads and per-entry overhead).
    pub max_bytes: Option<usize>,
    /// In-memory entries.
    pub max_records: Option<usize>,
}

/// One buffered entry as handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffered {
    /// The serialized key.
    pub key: Vec<u8>,
    /// Its buffer time.
    pub time: i64,
    /// The timestamp of the record that last updated it.
    pub record_ts: i64,
    /// The serialized change.
    pub payload: Vec<u8>,
}

struct Slot {
    record_ts: i64,
    payload: Vec<u8>,
    /// Changed since the last flush.
    dirty: bool,
    /// Its key is in the store (a flush or restore wrote or read it).
    persisted: bool,
}

fn charge(key: &[u8], payload: &[u8]) -> usize {
    2 * key.len() + payload.len() + ENTRY_OVERHEAD
}

fn by_time_key(time: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(BY_TIME);
    k.extend_from_slice(&time_bytes(time));
    k.extend_from_slice(key);
    k
}

fn by_key_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(BY_KEY);
    k.extend_from_slice(key);
    k
}

fn stored_value(record_ts: i64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&record_ts.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A bounded, persistent, time-ordered buffer of the latest change per key.
pub struct SuppressionBuffer {
    name: String,
    bounds: BufferBounds,
    policy: FullPolicy,
    budget: Arc<ByteBudget>,
    by_time: BTreeMap<(i64, Vec<u8>), Slot>,
    index: HashMap<Vec<u8>, i64, foldhash::fast::RandomState>,
    /// Charged (and reserved from the budget) for the in-memory entries.
    bytes: usize,
    /// A lower bound of the buffer times of entries that are only in the store
    /// (`None`: there are none).
    spilled_from: Option<i64>,
    /// Why the buffer is full, once a shut-down-when-full buffer was.
    full: Option<Error>,
    observed: i64,
    observed_dirty: bool,
}

impl std::fmt::Debug for SuppressionBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuppressionBuffer")
            .field("name", &self.name)
            .field("records", &self.by_time.len())
            .field("bytes", &self.bytes)
            .field("spilled", &self.spilled_from.is_some())
            .finish()
    }
}

impl SuppressionBuffer {
    /// An empty buffer named `name` (the operator's name, used in errors), bounded by
    /// `bounds` and `budget`. Call [`SuppressionBuffer::restore`] before use.
    pub fn new(
        name: impl Into<String>,
        bounds: BufferBounds,
        policy: FullPolicy,
        budget: Arc<ByteBudget>,
    ) -> Self {
        SuppressionBuffer {
            name: name.into(),
            bounds,
            policy,
            budget,
            by_time: BTreeMap::new(),
            index: HashMap::default(),
            bytes: 0,
            spilled_from: None,
            full: None,
            observed: i64::MIN,
            observed_dirty: false,
        }
    }

    /// Picks up what a previous instance persisted in `store`: the observed stream time
    /// at once, the entries lazily (they stay on disk until updated or due).
    pub fn restore(&mut self, store: &dyn KeyValueStore) -> Result<()> {
        if let Some(b) = store.get(META_KEY)? {
            let b: [u8; 8] = b.as_slice().try_into().map_err(|_| {
                Error::store(
                    store.name().to_string(),
                    format!("its stream-time entry has {} bytes, not 8", b.len()),
                )
            })?;
            self.observed = i64::from_be_bytes(b);
        }
        self.spilled_from = self.first_spilled(store)?;
        Ok(())
    }

    /// In-memory entries.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// True if nothing is in memory.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    /// Bytes charged for the in-memory entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if some entries are only in the store (spilled, or not yet read back).
    pub fn has_spilled(&self) -> bool {
        self.spilled_from.is_some()
    }

    /// Once a [`FullPolicy::ShutDown`] buffer overflowed: the error naming the buffer
    /// and its bound. The buffer then emits nothing and sends every change to its store.
    pub fn full(&self) -> Option<&Error> {
        self.full.as_ref()
    }

    /// The observed stream time, as last set or restored (`i64::MIN` if never).
    pub fn observed(&self) -> i64 {
        self.observed
    }

    /// Sets the observed stream time (persisted at the next flush).
    pub fn set_observed(&mut self, t: i64) {
        if t != self.observed {
            self.observed = t;
            self.observed_dirty = true;
        }
    }

    /// `key`'s entry: buffer time, record timestamp and payload.
    pub fn get(&self, store: &dyn KeyValueStore, key: &[u8]) -> Result<Option<Buffered>> {
        if let Some(&time) = self.index.get(key) {
            let slot = &self.by_time[&(time, key.to_vec())];
            return Ok(Some(Buffered {
                key: key.to_vec(),
                time,
                record_ts: slot.record_ts,
                payload: slot.payload.clone(),
            }));
        }
        self.get_spilled(store, key)
    }

    fn get_spilled(&self, store: &dyn KeyValueStore, key: &[u8]) -> Result<Option<Buffered>> {
        if self.spilled_from.is_none() {
            return Ok(None);
        }
        let Some(t) = store.get(&by_key_key(key))? else {
            return Ok(None);
        };
        let time = self.decode_time(store, &t)?;
        let Some(v) = store.get(&by_time_key(time, key))? else {
            return Err(self.corrupt(store, "a key's index entry has no entry"));
        };
        let (record_ts, payload) = self.decode_value(store, &v)?;
        Ok(Some(Buffered {
            key: key.to_vec(),
            time,
            record_ts,
            payload: payload.to_vec(),
        }))
    }

    fn corrupt(&self, store: &dyn KeyValueStore, what: &str) -> Error {
        Error::store(
            store.name().to_string(),
            format!("suppression buffer '{}': {what}", self.name),
        )
    }

    fn decode_time(&self, store: &dyn KeyValueStore, b: &[u8]) -> Result<i64> {
        if b.len() != 8 {
            return Err(self.corrupt(store, "a buffer time is not 8 bytes"));
        }
        Ok(bytes_time(b))
    }

    fn decode_value<'v>(&self, store: &dyn KeyValueStore, v: &'v [u8]) -> Result<(i64, &'v [u8])> {
        if v.len() < 8 {
            return Err(self.corrupt(store, "an entry is shorter than its timestamp"));
        }
        let ts = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        Ok((ts, &v[8..]))
    }

    /// Sets `key`'s entry (an existing entry keeps its place: pass the time
    /// [`SuppressionBuffer::get`] returned). Returns the entries a
    /// [`FullPolicy::EmitEarly`] buffer let out to make room, oldest first (possibly
    /// this one). A [`FullPolicy::ShutDown`] buffer that cannot take it stores it and
    /// reports [`SuppressionBuffer::full`].
    pub fn put(&mut self, store: &mut dyn KeyValueStore, entry: Buffered) -> Result<Vec<Buffered>> {
        let mut emitted = Vec::new();
        // Whether the store holds this key at this time already (its entry will be
        // overwritten, or deleted when it leaves memory).
        let mut persisted = false;
        // Take the old version out of memory (its charge too); a spilled entry is
        // updated where it is.
        if let Some(time) = self.index.remove(&entry.key) {
            if let Some(old) = self.by_time.remove(&(time, entry.key.clone())) {
                self.release(charge(&entry.key, &old.payload));
                if old.persisted && time != entry.time {
                    self.delete_persisted(store, time, &entry.key)?;
                }
                persisted = old.persisted && time == entry.time;
            }
        } else if self.spilled_from.is_some()
            && let Some(t) = store.get(&by_key_key(&entry.key))?
        {
            let time = self.decode_time(store, &t)?;
            let mut batch_keys = Vec::new();
            if time != entry.time {
                batch_keys.push(by_time_key(time, &entry.key));
            }
            return self
                .write_spilled(store, entry, &batch_keys)
                .map(|()| emitted);
        }
        if self.full.is_some() {
            self.write_spilled(store, entry, &[])?;
            return Ok(emitted);
        }
        let need = charge(&entry.key, &entry.payload);
        if !self.make_room(store, need, (entry.time, &entry.key), &mut emitted)? {
            match self.policy {
                FullPolicy::EmitEarly => {
                    if persisted {
                        self.delete_persisted(store, entry.time, &entry.key)?;
                    }
                    emitted.push(entry)
                }
                FullPolicy::SpillToDisk | FullPolicy::ShutDown => {
                    self.write_spilled(store, entry, &[])?
                }
            }
            return Ok(emitted);
        }
        self.index.insert(entry.key.clone(), entry.time);
        self.by_time.insert(
            (entry.time, entry.key),
            Slot {
                record_ts: entry.record_ts,
                payload: entry.payload,
                dirty: true,
                persisted,
            },
        );
        Ok(emitted)
    }

    /// Reserves `need` bytes for one more in-memory entry, `arriving` (its buffer time
    /// and key), letting entries go as the policy says; false if it cannot (for
    /// emit-early: the arriving entry goes out itself).
    ///
    /// Emit-early follows Kafka Streams, which buffers the arriving entry first and
    /// then, while over capacity, emits the entry with the smallest (buffer time, key):
    /// an entry already buffered goes out only if it comes before the arriving one.
    fn make_room(
        &mut self,
        store: &mut dyn KeyValueStore,
        need: usize,
        arriving: (i64, &[u8]),
        emitted: &mut Vec<Buffered>,
    ) -> Result<bool> {
        loop {
            let fits = self.bounds.max_bytes.is_none_or(|m| self.bytes + need <= m)
                && self
                    .bounds
                    .max_records
                    .is_none_or(|m| self.by_time.len() < m);
            let refused_by_budget = fits && !self.budget.try_reserve_strict(need);
            if fits && !refused_by_budget {
                self.bytes += need;
                return Ok(true);
            }
            if self.policy == FullPolicy::ShutDown {
                self.full = Some(self.full_error(need, refused_by_budget));
                return Ok(false);
            }
            if self.policy == FullPolicy::EmitEarly
                && self
                    .by_time
                    .first_key_value()
                    .is_none_or(|((t, k), _)| arriving < (*t, k.as_slice()))
            {
                return Ok(false);
            }
            let Some(((time, key), slot)) = self.by_time.pop_first() else {
                return Ok(false);
            };
            self.index.remove(&key);
            self.release(charge(&key, &slot.payload));
            let entry = Buffered {
                key,
                time,
                record_ts: slot.record_ts,
                payload: slot.payload,
            };
            match self.policy {
                FullPolicy::EmitEarly => {
                    if slot.persisted {
                        self.delete_persisted(store, entry.time, &entry.key)?;
                    }
                    emitted.push(entry);
                }
                // The store holds it from now on (its by-key entry too).
                _ => self.write_spilled(store, entry, &[])?,
            }
        }
    }

    /// The error of a full buffer that shuts its query down, worded as Kafka Streams'
    /// (`"<name> buffer exceeded its max capacity. Currently [r/max] records and
    /// [b/max] bytes."`), with the figures as they would be with the arriving entry
    /// buffered; a refusal by the runtime's suppression budget says so.
    fn full_error(&self, need: usize, by_budget: bool) -> Error {
        let bound = |m: Option<usize>| m.map_or_else(|| "unbounded".to_string(), |m| m.to_string());
        let current = format!(
            "Currently [{}/{}] records and [{}/{}] bytes.",
            self.by_time.len() + 1,
            bound(self.bounds.max_records),
            self.bytes + need,
            bound(self.bounds.max_bytes)
        );
        let reason = if by_budget {
            format!(
                "exceeded the runtime's suppression budget ({} of {} bytes in use by every buffer). {current}",
                self.budget.used(),
                self.budget.cap(),
            )
        } else {
            format!("exceeded its max capacity. {current}")
        };
        Error::BufferFull {
            buffer: self.name.clone(),
            reason,
        }
    }

    /// Writes `entry` to the store only (removing `also_delete` keys in the same batch).
    fn write_spilled(
        &mut self,
        store: &mut dyn KeyValueStore,
        entry: Buffered,
        also_delete: &[Vec<u8>],
    ) -> Result<()> {
        let tk = by_time_key(entry.time, &entry.key);
        let kk = by_key_key(&entry.key);
        let value = stored_value(entry.record_ts, &entry.payload);
        let time = time_bytes(entry.time);
        let mut batch: Vec<BatchEntry<'_>> = also_delete.iter().map(|k| (&k[..], None)).collect();
        batch.push((&tk, Some(&value)));
        batch.push((&kk, Some(&time)));
        store.write_batch(&batch)?;
        self.spilled_from = Some(self.spilled_from.map_or(entry.time, |t| t.min(entry.time)));
        Ok(())
    }

    /// Removes an entry that left memory from the store too (at once, so a later
    /// lookup of its key cannot find it there).
    fn delete_persisted(&self, store: &mut dyn KeyValueStore, time: i64, key: &[u8]) -> Result<()> {
        let (tk, kk) = (by_time_key(time, key), by_key_key(key));
        store.write_batch(&[(&tk, None), (&kk, None)])
    }

    fn release(&mut self, n: usize) {
        self.bytes -= n;
        self.budget.release(n);
    }

    /// Takes out every entry with buffer time `<= expiry`, oldest first (by time, then
    /// key), from memory and from the store. A full shut-down buffer gives nothing.
    pub fn evict_due(
        &mut self,
        store: &mut dyn KeyValueStore,
        expiry: i64,
    ) -> Result<Vec<Buffered>> {
        let mut out = Vec::new();
        if self.full.is_some() {
            return Ok(out);
        }
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > expiry {
                break;
            }
            let ((time, key), slot) = entry.remove_entry();
            self.index.remove(&key);
            self.release(charge(&key, &slot.payload));
            if slot.persisted {
                self.delete_persisted(store, time, &key)?;
            }
            out.push(Buffered {
                key,
                time,
                record_ts: slot.record_ts,
                payload: slot.payload,
            });
        }
        if self.spilled_from.is_some_and(|t| t <= expiry) {
            let from = by_time_key(i64::MIN, &[]);
            let to = match expiry.checked_add(1) {
                Some(t) => by_time_key(t, &[]),
                None => vec![BY_KEY],
            };
            let due = store.range(&from, &to)?;
            let mut batch_keys = Vec::with_capacity(due.len() * 2);
            let before = out.len();
            for (k, v) in &due {
                let time = self.decode_time(store, &k[1..9])?;
                let key = k[9..].to_vec();
                let (record_ts, payload) = self.decode_value(store, v)?;
                batch_keys.push(k.clone());
                batch_keys.push(by_key_key(&key));
                out.push(Buffered {
                    key,
                    time,
                    record_ts,
                    payload: payload.to_vec(),
                });
            }
            let batch: Vec<BatchEntry<'_>> = batch_keys.iter().map(|k| (&k[..], None)).collect();
            if !batch.is_empty() {
                store.write_batch(&batch)?;
            }
            self.spilled_from = self.first_spilled(store)?;
            if out.len() > before && before > 0 {
                out.sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
            }
        }
        Ok(out)
    }

    fn first_spilled(&self, store: &dyn KeyValueStore) -> Result<Option<i64>> {
        match store.first(&[BY_TIME], &[BY_KEY])? {
            Some((k, _)) if k.len() >= 9 => Ok(Some(self.decode_time(store, &k[1..9])?)),
            Some(_) => Err(self.corrupt(store, "an entry key is shorter than its time")),
            None => Ok(None),
        }
    }

    /// Writes what changed in memory since the last flush (new and updated entries,
    /// the observed stream time) to the store in one batch. (Entries leaving memory
    /// are removed from the store as they leave.)
    pub fn flush(&mut self, store: &mut dyn KeyValueStore) -> Result<()> {
        let mut owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for ((time, key), slot) in self.by_time.iter_mut().filter(|(_, s)| s.dirty) {
            owned.push((
                by_time_key(*time, key),
                Some(stored_value(slot.record_ts, &slot.payload)),
            ));
            owned.push((by_key_key(key), Some(time_bytes(*time).to_vec())));
            slot.dirty = false;
            slot.persisted = true;
        }
        if self.observed_dirty {
            owned.push((
                META_KEY.to_vec(),
                Some(self.observed.to_be_bytes().to_vec()),
            ));
            self.observed_dirty = false;
        }
        if owned.is_empty() {
            return Ok(());
        }
        let batch: Vec<BatchEntry<'_>> = owned
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        store.write_batch(&batch)
    }
}

impl Drop for SuppressionBuffer {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InMemoryStore;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Sets key `k` (first buffered at `t` if new) to a payload of `len` bytes.
        Put { k: u8, t: i64, len: usize },
        /// Takes out everything due at `expiry`.
        Evict { expiry: i64 },
        /// Persists (a commit).
        Flush,
        /// A restart: a new buffer over the same store, after a flush.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..12, 0i64..50, 0usize..40).prop_map(|(k, t, len)| Op::Put { k, t, len }),
            2 => (0i64..60).prop_map(|expiry| Op::Evict { expiry }),
            1 => Just(Op::Flush),
            1 => Just(Op::Restart),
        ]
    }

    fn policy() -> impl Strategy<Value = FullPolicy> {
        prop_oneof![
            Just(FullPolicy::EmitEarly),
            Just(FullPolicy::SpillToDisk),
            Just(FullPolicy::ShutDown)
        ]
    }

    proptest! {
        /// Against a model (each key's first time and latest payload): every entry put
        /// comes out exactly once, with its latest payload, when due (or early, only
        /// for emit-early), across flushes and restarts; memory never exceeds the
        /// buffer's bound or the global budget; a shut-down buffer emits nothing
        /// after it filled, and loses nothing (a restart with room gives it all back).
        #[test]
        fn buffer_matches_model(ops in prop::collection::vec(op(), 1..80), pol in policy(), max_records in 1usize..6, budget_cap in 400usize..2000) {
            let budget = Arc::new(ByteBudget::new(budget_cap));
            let bounds = BufferBounds { max_bytes: Some(600), max_records: Some(max_records) };
            let mut store = InMemoryStore::new("buf", Arc::new(ByteBudget::new(1 << 30)));
            let mut cur = bounds;
            let mut buf = SuppressionBuffer::new("s", cur, pol, budget.clone());
            buf.restore(&store).unwrap();
            // key -> (time, payload)
            let mut model: BTreeMap<Vec<u8>, (i64, Vec<u8>)> = BTreeMap::new();
            let mut version = 0u8;
            let check_out = |out: Vec<Buffered>, model: &mut BTreeMap<Vec<u8>, (i64, Vec<u8>)>, expiry: Option<i64>| {
                for e in out {
                    let (t, p) = model.remove(&e.key).expect("emitted a key that is not buffered");
                    assert_eq!((e.time, &e.payload), (t, &p), "wrong entry for {:?}", e.key);
                    if let Some(x) = expiry {
                        assert!(e.time <= x, "emitted before due");
                    }
                }
            };
            for op in ops {
                match op {
                    Op::Put { k, t, len } => {
                        version = version.wrapping_add(1);
                        let key = vec![k];
                        let time = model.get(&key).map_or(t, |(t, _)| *t);
                        let payload = vec![version; len];
                        model.insert(key.clone(), (time, payload.clone()));
                        let out = buf.put(&mut store, Buffered { key, time, record_ts: t, payload }).unwrap();
                        if pol != FullPolicy::EmitEarly {
                            prop_assert!(out.is_empty(), "only emit-early emits on put");
                        }
                        check_out(out, &mut model, None);
                    }
                    Op::Evict { expiry } => {
                        let out = buf.evict_due(&mut store, expiry).unwrap();
                        if buf.full().is_some() {
                            prop_assert!(out.is_empty());
                        } else {
                            check_out(out, &mut model, Some(expiry));
                            prop_assert!(model.values().all(|(t, _)| *t > expiry), "something due stayed");
                        }
                    }
                    Op::Flush => buf.flush(&mut store).unwrap(),
                    Op::Restart => {
                        buf.flush(&mut store).unwrap();
                        let full = buf.full().is_some();
                        drop(buf);
                        prop_assert_eq!(budget.used(), 0);
                        // After a shut-down, the restart comes with room to spare.
                        if full {
                            cur = BufferBounds::default();
                        }
                        buf = SuppressionBuffer::new("s", cur, pol, budget.clone());
                        buf.restore(&store).unwrap();
                    }
                }
                prop_assert!(cur.max_bytes.is_none_or(|m| buf.bytes() <= m));
                prop_assert!(cur.max_records.is_none_or(|m| buf.len() <= m));
                prop_assert_eq!(budget.used(), buf.bytes());
                prop_assert!(budget.used() <= budget_cap);
            }
            // Drain: with room (a restart without bounds, if it had filled), everything
            // left comes out exactly once.
            buf.flush(&mut store).unwrap();
            drop(buf);
            let mut buf = SuppressionBuffer::new("s", BufferBounds::default(), pol, budget.clone());
            buf.restore(&store).unwrap();
            let out = buf.evict_due(&mut store, i64::MAX).unwrap();
            check_out(out, &mut model, None);
            prop_assert!(model.is_empty(), "lost {:?}", model);
        }
    }

    #[test]
    fn a_shut_down_buffer_names_itself_and_its_bound() {
        let budget = Arc::new(ByteBudget::new(1 << 20));
        let mut store = InMemoryStore::new("buf", Arc::new(ByteBudget::new(1 << 20)));
        let bounds = BufferBounds {
            max_bytes: Some(300),
            max_records: None,
        };
        let mut buf = SuppressionBuffer::new("final", bounds, FullPolicy::ShutDown, budget);
        for k in 0..3u8 {
            let e = Buffered {
                key: vec![k],
                time: 10,
                record_ts: 1,
                payload: vec![0; 10],
            };
            assert!(buf.put(&mut store, e).unwrap().is_empty());
        }
        let msg = buf.full().expect("full").to_string();
        // Kafka Streams' wording, figures as if the third entry (2 + 10 + 128 bytes
        // each) were buffered.
        assert_eq!(
            msg,
            "suppression buffer 'final' exceeded its max capacity. Currently [3/unbounded] records and [420/300] bytes."
        );
        assert!(buf.evict_due(&mut store, 100).unwrap().is_empty());
    }

    /// The example (Kafka Streams' order): time limit, room for one record;
    /// `k2` then `k1`, both buffered at 3. Kafka buffers `k1` first and then emits the
    /// smallest (buffer time, key), `k1` itself; weir used to make room first and let
    /// `k2` out.
    #[test]
    fn emit_early_lets_out_the_smallest_time_and_key_which_may_be_the_arriving_one() {
        let budget = Arc::new(ByteBudget::new(1 << 20));
        let mut store = InMemoryStore::new("buf", Arc::new(ByteBudget::new(1 << 20)));
        let bounds = BufferBounds {
            max_bytes: None,
            max_records: Some(1),
        };
        let mut buf = SuppressionBuffer::new("s", bounds, FullPolicy::EmitEarly, budget);
        let entry = |key: &[u8], time: i64, payload: u8| Buffered {
            key: key.to_vec(),
            time,
            record_ts: time,
            payload: vec![payload],
        };
        assert!(buf.put(&mut store, entry(b"k2", 3, 1)).unwrap().is_empty());
        let out = buf.put(&mut store, entry(b"k1", 3, 2)).unwrap();
        assert_eq!(out, vec![entry(b"k1", 3, 2)]);
        // An arriving entry after the buffered one: the buffered one goes.
        let out = buf.put(&mut store, entry(b"k0", 4, 3)).unwrap();
        assert_eq!(out, vec![entry(b"k2", 3, 1)]);
        assert_eq!(buf.len(), 1);
    }

    #[test]
    fn a_buffer_refused_by_the_global_budget_says_so_with_its_figures() {
        // Room for two entries of 140 bytes in the runtime's budget, none in the bounds.
        let budget = Arc::new(ByteBudget::new(300));
        let mut store = InMemoryStore::new("buf", Arc::new(ByteBudget::new(1 << 20)));
        let bounds = BufferBounds {
            max_bytes: None,
            max_records: Some(10),
        };
        let mut buf = SuppressionBuffer::new("final", bounds, FullPolicy::ShutDown, budget);
        for k in 0..3u8 {
            let e = Buffered {
                key: vec![k],
                time: 10,
                record_ts: 1,
                payload: vec![0; 10],
            };
            assert!(buf.put(&mut store, e).unwrap().is_empty());
        }
        assert_eq!(
            buf.full().expect("full").to_string(),
            "suppression buffer 'final' exceeded the runtime's suppression budget (280 of 300 bytes in use by every buffer). Currently [3/10] records and [420/unbounded] bytes."
        );
    }
}
