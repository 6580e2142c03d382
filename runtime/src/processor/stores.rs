//! Typed handles on a task's stores: key-value, window and session stores, through
//! their serdes and the record cache.

use std::marker::PhantomData;

use crate::error::Result;
use crate::processor::internals::StoreSerdes;
use crate::serde::Serde;
use crate::state::task_stores::Access;
use crate::state::window::{
    Window, Windowed, key_prefix, segment_key, session_key, split_key, time_bytes, window_key,
    window_times,
};

/// A window store entry as read: (key bytes, window), value bytes.
type RawWindowEntry = ((Vec<u8>, Window), Vec<u8>);

/// Typed access to a key-value store of the current task, through its serdes and the
/// record cache.
pub struct StoreHandle<'a, K, V> {
    pub(crate) access: Access<'a>,
    pub(crate) types: PhantomData<fn() -> (K, V)>,
}

/// The serdes of the store behind `access`, typed `<K, V>`.
pub(crate) fn typed_serdes<'s, K: 'static, V: 'static>(
    access: &'s Access<'_>,
) -> (&'s dyn Serde<K>, &'s dyn Serde<V>) {
    let (k, v) = access
        .serdes_any()
        .downcast_ref::<StoreSerdes<K, V>>()
        .expect("a handle's types are its store's: checked when the handle was made");
    (&**k, &**v)
}

/// The serdes of a typed handle, and the codecs every handle shares.
trait Typed<K: 'static, V: 'static> {
    fn access(&self) -> &Access<'_>;
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>);

    fn key_bytes(&self, key: &K) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(32);
        if self.serdes().0.serialize_into(key, &mut buf)? {
            Ok(buf)
        } else {
            Err(self.access().error("a null key cannot be stored".into()))
        }
    }

    /// `None` if the value serializes to null (a delete). A timestamped store's value
    /// starts with the timestamp of the record being processed.
    fn value_bytes(&self, value: &V) -> Result<Option<Vec<u8>>> {
        self.value_bytes_at(value, self.access().timestamp())
    }

    /// Like [`Typed::value_bytes`], stamped `timestamp` if the store is timestamped.
    fn value_bytes_at(&self, value: &V, timestamp: i64) -> Result<Option<Vec<u8>>> {
        let mut v = Vec::new();
        if self.access().timestamped() {
            v.extend_from_slice(&timestamp.to_be_bytes());
        }
        let non_null = self.serdes().1.serialize_into(value, &mut v)?;
        Ok(non_null.then_some(v))
    }

    /// A stored value and its timestamp (`None` unless the store is timestamped).
    fn decode_stamped(&self, v: &[u8]) -> Result<(V, Option<i64>)> {
        if !self.access().timestamped() {
            return self.decode_value(v).map(|v| (v, None));
        }
        let (Some(ts), Some(rest)) = (v.get(..8), v.get(8..)) else {
            return Err(self.access().error(format!(
                "a timestamped value needs at least 8 bytes, got {}",
                v.len()
            )));
        };
        let ts = i64::from_be_bytes(ts.try_into().expect("8 bytes"));
        self.decode_value(rest).map(|v| (v, Some(ts)))
    }

    /// The timestamp of a timestamped store's value, or an error naming the store.
    fn stamped(&self, v: &[u8]) -> Result<(V, i64)> {
        match self.decode_stamped(v)? {
            (v, Some(ts)) => Ok((v, ts)),
            (_, None) => Err(self
                .access()
                .error("is not timestamped: declare it with StoreSpec::timestamped".to_string())),
        }
    }

    fn decode_key(&self, k: &[u8]) -> Result<K> {
        self.serdes().0.deserialize(Some(k)).map_err(|e| {
            self.access()
                .error(format!("cannot read a stored key: {e}"))
        })
    }

    /// A stored value (without its timestamp, if the store is timestamped).
    fn value(&self, v: &[u8]) -> Result<V> {
        self.decode_stamped(v).map(|(v, _)| v)
    }

    fn decode_value(&self, v: &[u8]) -> Result<V> {
        self.serdes().1.deserialize(Some(v)).map_err(|e| {
            self.access()
                .error(format!("cannot read a stored value: {e}"))
        })
    }
}

impl<K: 'static, V: 'static> Typed<K, V> for StoreHandle<'_, K, V> {
    fn access(&self) -> &Access<'_> {
        &self.access
    }
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>) {
        typed_serdes(&self.access)
    }
}

impl<K: 'static, V: 'static> StoreHandle<'_, K, V> {
    fn decode(&self, k: &[u8], v: &[u8]) -> Result<(K, V)> {
        Ok((self.decode_key(k)?, self.value(v)?))
    }

    /// The value of `key`.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        let k = self.key_bytes(key)?;
        match self.access.get(&k)? {
            Some(v) => self.value(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`; a value that serializes to null deletes the key (as in
    /// Kafka Streams).
    pub fn put(&mut self, key: &K, value: &V) -> Result<()> {
        let k = self.key_bytes(key)?;
        let v = self.value_bytes(value)?;
        self.access.write(k, v)
    }

    /// The value of `key` and its timestamp, in a timestamped store
    /// (`StoreSpec::timestamped`; any other store answers with an error).
    pub fn get_with_timestamp(&mut self, key: &K) -> Result<Option<(V, i64)>> {
        let k = self.key_bytes(key)?;
        match self.access.get(&k)? {
            Some(v) => self.stamped(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value` stamped `timestamp` (in a timestamped store; elsewhere
    /// the timestamp only goes downstream with an aggregation's change).
    pub fn put_with_timestamp(&mut self, key: &K, value: &V, timestamp: i64) -> Result<()> {
        let k = self.key_bytes(key)?;
        let v = self.value_bytes_at(value, timestamp)?;
        self.access.write_at(k, v, timestamp)
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &K) -> Result<()> {
        let k = self.key_bytes(key)?;
        self.access.write(k, None)
    }

    /// Entries with `from <= key < to` in serialized-key order.
    pub fn range(&mut self, from: &K, to: &K) -> Result<Vec<(K, V)>> {
        let (f, t) = (self.key_bytes(from)?, self.key_bytes(to)?);
        let raw = self.access.range(&f, &t)?;
        raw.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// Entries whose serialized key starts with `prefix`.
    pub fn prefix_scan(&mut self, prefix: &[u8]) -> Result<Vec<(K, V)>> {
        self.access.settle()?;
        let raw = self.access.store().prefix_scan(prefix)?;
        raw.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// Every entry in serialized-key order.
    pub fn all(&mut self) -> Result<Vec<(K, V)>> {
        self.access.settle()?;
        let raw = self.access.store().all()?;
        raw.iter().map(|(k, v)| self.decode(k, v)).collect()
    }
}

/// Typed access to a window store of the current task (`StoreSpec::windowed`): each
/// key's aggregate per window, found by key and window start. Point reads and writes
/// go through the record cache; range fetches first write the store's cached changes.
pub struct WindowStoreHandle<'a, K, V> {
    pub(crate) access: Access<'a>,
    pub(crate) types: PhantomData<fn() -> (K, V)>,
    pub(crate) size_ms: i64,
    pub(crate) segment_ms: i64,
    /// The store retains duplicates (`StoreSpec::windowed_with_duplicates`).
    pub(crate) duplicates: bool,
}

impl<K: 'static, V: 'static> Typed<K, V> for WindowStoreHandle<'_, K, V> {
    fn access(&self) -> &Access<'_> {
        &self.access
    }
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>) {
        typed_serdes(&self.access)
    }
}

impl<K: 'static, V: 'static> WindowStoreHandle<'_, K, V> {
    /// The stored value of `key` in the window starting at `start` (in a store
    /// retaining duplicates, the first one put).
    fn stored_at(&mut self, key: &K, start: i64) -> Result<Option<Vec<u8>>> {
        let k = window_key(self.segment_ms, &self.key_bytes(key)?, start);
        if !self.duplicates {
            return self.access.get(&k);
        }
        let mut hi = k.clone();
        hi.extend_from_slice(&[0xff; 8]);
        Ok(self
            .access
            .range(&k, &hi)?
            .into_iter()
            .next()
            .map(|(_, v)| v))
    }

    /// The key a value of `key` in the window starting at `start` is written under:
    /// a new one each time in a store retaining duplicates.
    fn entry_key(&mut self, key: &K, start: i64) -> Result<Vec<u8>> {
        let mut k = window_key(self.segment_ms, &self.key_bytes(key)?, start);
        if self.duplicates {
            k.extend_from_slice(&self.access.next_seq().to_be_bytes());
        }
        Ok(k)
    }

    /// The value of `key` in the window starting at `start` (in a store retaining
    /// duplicates, the first one put; [`WindowStoreHandle::fetch_range`] returns all).
    pub fn fetch(&mut self, key: &K, start: i64) -> Result<Option<V>> {
        match self.stored_at(key, start)? {
            Some(v) => self.value(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key`'s value in the window starting at `start` (`None` removes it). In a
    /// store retaining duplicates every value is kept, and `None` does nothing (as in
    /// Kafka Streams: expiry removes its entries).
    pub fn put(&mut self, key: &K, start: i64, value: Option<&V>) -> Result<()> {
        let v = match value {
            Some(v) => self.value_bytes(v)?,
            None if self.duplicates => return Ok(()),
            None => None,
        };
        let k = self.entry_key(key, start)?;
        self.access.write(k, v)
    }

    /// The value of `key` in the window starting at `start` and its timestamp, in a
    /// timestamped store (`StoreSpec::timestamped`; any other store answers with an
    /// error).
    pub fn fetch_with_timestamp(&mut self, key: &K, start: i64) -> Result<Option<(V, i64)>> {
        match self.stored_at(key, start)? {
            Some(v) => self.stamped(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key`'s value in the window starting at `start`, stamped `timestamp`.
    pub fn put_with_timestamp(
        &mut self,
        key: &K,
        start: i64,
        value: &V,
        timestamp: i64,
    ) -> Result<()> {
        let v = self.value_bytes_at(value, timestamp)?;
        let k = self.entry_key(key, start)?;
        self.access.write_at(k, v, timestamp)
    }

    /// `key`'s windows whose start is in `[from, to]`, by start (expired ones left
    /// out); in a store retaining duplicates, every value, those of one window in the
    /// order they were put.
    pub fn fetch_range(&mut self, key: &K, from: i64, to: i64) -> Result<Vec<(Window, V)>> {
        let kb = self.key_bytes(key)?;
        let from = from.max(self.access.min_live());
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for seg in from.div_euclid(self.segment_ms)..=to.div_euclid(self.segment_ms) {
            let mut lo = key_prefix(seg, &kb);
            let mut hi = lo.clone();
            lo.extend_from_slice(&time_bytes(from));
            hi.extend_from_slice(&time_bytes(to.saturating_add(1)));
            for (k, v) in self.access.range(&lo, &hi)? {
                if let Some((_, [start, _])) = split_key(&k, window_times(self.duplicates)) {
                    out.push((Window::new(start, start + self.size_ms), self.value(&v)?));
                }
            }
        }
        Ok(out)
    }

    /// Like [`WindowStoreHandle::fetch_all`], with each value's timestamp (a
    /// timestamped store; any other store answers with an error).
    pub fn fetch_all_with_timestamp(
        &mut self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Windowed<K>, V, i64)>> {
        let mut out = Vec::new();
        for (k, v) in self.fetch_all_raw(from, to)? {
            let (key, window) = k;
            let (value, ts) = self.stamped(&v)?;
            out.push((Windowed::new(self.decode_key(&key)?, window), value, ts));
        }
        Ok(out)
    }

    /// Every key's windows whose start is in `[from, to]`, by segment, key and start
    /// (expired ones left out).
    pub fn fetch_all(&mut self, from: i64, to: i64) -> Result<Vec<(Windowed<K>, V)>> {
        let mut out = Vec::new();
        for ((key, window), v) in self.fetch_all_raw(from, to)? {
            out.push((
                Windowed::new(self.decode_key(&key)?, window),
                self.value(&v)?,
            ));
        }
        Ok(out)
    }

    /// The raw entries of [`WindowStoreHandle::fetch_all`]: (key bytes, window), value.
    fn fetch_all_raw(&mut self, from: i64, to: i64) -> Result<Vec<RawWindowEntry>> {
        let from = from.max(self.access.min_live());
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let lo = segment_key(from.div_euclid(self.segment_ms));
        let hi = segment_key(to.div_euclid(self.segment_ms).saturating_add(1));
        for (k, v) in self.access.range(&lo, &hi)? {
            if let Some((kb, [start, _])) = split_key(&k, window_times(self.duplicates))
                && (from..=to).contains(&start)
            {
                out.push(((kb.to_vec(), Window::new(start, start + self.size_ms)), v));
            }
        }
        Ok(out)
    }

    /// Writes this store's changes held in the record cache to the store now (and
    /// forwards them, for an aggregation's store). A windowed aggregation calls it when
    /// windows close, so every update of a closed window goes downstream before any
    /// record that closed it: what lets suppression emit exactly one final result.
    pub fn flush_cached(&mut self) -> Result<()> {
        self.access.settle()
    }

    /// Like [`WindowStoreHandle::flush_cached`] for the windows starting before
    /// `start` only (the ones that closed), leaving the open windows' changes cached.
    /// Changes to expired windows go downstream but are not written.
    pub fn flush_cached_before(&mut self, start: i64) -> Result<()> {
        self.access.flush_before(start)
    }

    /// Expires the windows that started more than the store's retention before
    /// `stream_time`: fetches no longer return them, their cached changes go
    /// downstream without being written, and the segments holding only expired
    /// windows go with one range delete.
    pub fn expire(&mut self, stream_time: i64) -> Result<()> {
        self.access.expire(stream_time)
    }
}

/// Typed access to a session store of the current task (`StoreSpec::sessions`).
pub struct SessionStoreHandle<'a, K, V> {
    pub(crate) access: Access<'a>,
    pub(crate) types: PhantomData<fn() -> (K, V)>,
    pub(crate) segment_ms: i64,
}

impl<K: 'static, V: 'static> Typed<K, V> for SessionStoreHandle<'_, K, V> {
    fn access(&self) -> &Access<'_> {
        &self.access
    }
    fn serdes(&self) -> (&dyn Serde<K>, &dyn Serde<V>) {
        typed_serdes(&self.access)
    }
}

impl<K: 'static, V: 'static> SessionStoreHandle<'_, K, V> {
    /// `key`'s sessions that end at or after `earliest_end` and start at or before
    /// `latest_start`, by end. Sessions end no later than `latest_end` (the caller's
    /// observed stream time), which bounds the segments searched.
    pub fn find_sessions(
        &mut self,
        key: &K,
        earliest_end: i64,
        latest_start: i64,
        latest_end: i64,
    ) -> Result<Vec<(Window, V)>> {
        let kb = self.key_bytes(key)?;
        let earliest_end = earliest_end.max(self.access.min_live());
        let mut out = Vec::new();
        if earliest_end > latest_end {
            return Ok(out);
        }
        let first = earliest_end.max(0).div_euclid(self.segment_ms);
        for seg in first..=latest_end.div_euclid(self.segment_ms) {
            let mut lo = key_prefix(seg, &kb);
            let mut hi = lo.clone();
            lo.extend_from_slice(&time_bytes(earliest_end));
            hi.extend_from_slice(&time_bytes(latest_end.saturating_add(1)));
            for (k, v) in self.access.range(&lo, &hi)? {
                if let Some((_, [end, start])) = split_key(&k, 2)
                    && start <= latest_start
                {
                    out.push((Window::new(start, end), self.value(&v)?));
                }
            }
        }
        Ok(out)
    }

    /// Every key's sessions ending in `[from_end, to_end]`, by segment, key and end
    /// (expired ones left out): only the segments holding those ends are read.
    pub fn fetch_ending(&mut self, from_end: i64, to_end: i64) -> Result<Vec<(Windowed<K>, V)>> {
        let from_end = from_end.max(self.access.min_live()).max(0);
        let mut out = Vec::new();
        if from_end > to_end {
            return Ok(out);
        }
        let lo = segment_key(from_end.div_euclid(self.segment_ms));
        let hi = segment_key(to_end.div_euclid(self.segment_ms).saturating_add(1));
        for (k, v) in self.access.range(&lo, &hi)? {
            if let Some((kb, [end, start])) = split_key(&k, 2)
                && (from_end..=to_end).contains(&end)
            {
                out.push((
                    Windowed::new(self.decode_key(kb)?, Window::new(start, end)),
                    self.value(&v)?,
                ));
            }
        }
        Ok(out)
    }

    /// Stores `key`'s session `window` with `value` (`None` removes it).
    pub fn put(&mut self, key: &K, window: Window, value: Option<&V>) -> Result<()> {
        let k = session_key(self.segment_ms, &self.key_bytes(key)?, window);
        let v = match value {
            Some(v) => self.value_bytes(v)?,
            None => None,
        };
        self.access.write(k, v)
    }

    /// Every session of every key, by segment, key and end (expired ones left out).
    pub fn fetch_all(&mut self) -> Result<Vec<(Windowed<K>, V)>> {
        let mut out = Vec::new();
        let (lo, hi) = (segment_key(0), segment_key(i64::MAX));
        let min_live = self.access.min_live();
        for (k, v) in self.access.range(&lo, &hi)? {
            if let Some((kb, [end, start])) = split_key(&k, 2)
                && end >= min_live
            {
                out.push((
                    Windowed::new(self.decode_key(kb)?, Window::new(start, end)),
                    self.value(&v)?,
                ));
            }
        }
        Ok(out)
    }

    /// Expires the sessions that ended more than the retention before `stream_time`:
    /// lookups no longer return them, and the segments holding only expired sessions
    /// go with one range delete.
    pub fn expire(&mut self, stream_time: i64) -> Result<()> {
        self.access.expire(stream_time)
    }
}

impl<K, V> std::fmt::Debug for StoreHandle<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("store", &self.access.name())
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for WindowStoreHandle<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStoreHandle")
            .field("store", &self.access.name())
            .field("size_ms", &self.size_ms)
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for SessionStoreHandle<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStoreHandle")
            .field("store", &self.access.name())
            .finish_non_exhaustive()
    }
}
