//! Typed access to a versioned key-value store (Kafka Streams' `VersionedKeyValueStore`,
//! KIP-889): each key's latest value, and what it was at any time within the history
//! retention.
//!
//! Layout, in one RocksDB (or in-memory) store: the latest version of a key under
//! `0x01 | key` (its timestamp, a present/deleted tag, the value); each older version
//! as a session-like entry `segment(valid_to) | key | valid_to | valid_from` holding a
//! present/deleted tag and the value (a delete is a version too: an out-of-order put
//! before it must not extend past it). Old versions live in segments by the time they were replaced, so those past
//! the history retention go with one range delete, as expired windows do. The store's
//! observed stream time (the largest timestamp put) is kept under the windowed stores'
//! metadata key: it says which old versions are still readable, also after a restart.

use std::marker::PhantomData;

use super::stores::typed_serdes;
use crate::error::Result;
use crate::state::task_stores::Access;
use crate::state::window::{Window, key_prefix, session_key, split_key, time_bytes};

/// Prefix of a key's latest version.
const LATEST: u8 = 0x01;

/// Typed access to a versioned store of the current task (`StoreSpec::versioned`).
pub struct VersionedStoreHandle<'a, K, V> {
    pub(crate) access: Access<'a>,
    pub(crate) types: PhantomData<fn() -> (K, V)>,
    pub(crate) history_ms: i64,
    pub(crate) segment_ms: i64,
}

/// A version of a key: its value and the time it became valid (Kafka Streams'
/// `VersionedRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedRecord<V> {
    /// The value.
    pub value: V,
    /// When it became valid (the timestamp it was put with).
    pub timestamp: i64,
}

impl<K: 'static, V: 'static> VersionedStoreHandle<'_, K, V> {
    fn key_bytes(&self, key: &K) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(32);
        if typed_serdes::<K, V>(&self.access)
            .0
            .serialize_into(key, &mut buf)?
        {
            Ok(buf)
        } else {
            Err(self.access.error("a null key cannot be stored".into()))
        }
    }

    fn latest_key(kb: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + kb.len());
        k.push(LATEST);
        k.extend_from_slice(kb);
        k
    }

    fn decode(&self, v: &[u8]) -> Result<V> {
        typed_serdes::<K, V>(&self.access)
            .1
            .deserialize(Some(v))
            .map_err(|e| {
                self.access
                    .error(format!("cannot read a stored version: {e}"))
            })
    }

    /// The latest version's timestamp and value bytes (`None` if it is a delete).
    fn latest_raw(&mut self, kb: &[u8]) -> Result<Option<(i64, Option<Vec<u8>>)>> {
        let Some(raw) = self.access.get(&Self::latest_key(kb))? else {
            return Ok(None);
        };
        if raw.len() < 9 {
            return Err(self.access.error(format!(
                "a latest version needs at least 9 bytes, got {}",
                raw.len()
            )));
        }
        let ts = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let value = (raw[8] == 1).then(|| raw[9..].to_vec());
        Ok(Some((ts, value)))
    }

    /// The largest timestamp put so far (`i64::MIN` before the first).
    fn observed(&mut self) -> Result<i64> {
        Ok(self.access.meta_time()?.unwrap_or(i64::MIN))
    }

    /// The earliest time still answered: observed stream time less the history.
    fn horizon(&mut self) -> Result<i64> {
        Ok(self.observed()?.saturating_sub(self.history_ms))
    }

    /// `key`'s latest value and the time it became valid (`None` if absent or deleted).
    pub fn get(&mut self, key: &K) -> Result<Option<VersionedRecord<V>>> {
        let kb = self.key_bytes(key)?;
        match self.latest_raw(&kb)? {
            Some((ts, Some(v))) => Ok(Some(VersionedRecord {
                value: self.decode(&v)?,
                timestamp: ts,
            })),
            _ => Ok(None),
        }
    }

    /// `key`'s value as of `as_of` (the version valid then, with the time it became
    /// valid): `None` if there was none, or if `as_of` is older than the history
    /// retention before the store's stream time (as Kafka Streams answers).
    pub fn get_as_of(&mut self, key: &K, as_of: i64) -> Result<Option<VersionedRecord<V>>> {
        if as_of < self.horizon()? {
            return Ok(None);
        }
        let kb = self.key_bytes(key)?;
        let latest = self.latest_raw(&kb)?;
        if let Some((ts, value)) = &latest
            && *ts <= as_of
        {
            return match value {
                Some(v) => Ok(Some(VersionedRecord {
                    value: self.decode(v)?,
                    timestamp: *ts,
                })),
                None => Ok(None),
            };
        }
        let Some(until) = latest.map(|(ts, _)| ts) else {
            return Ok(None);
        };
        // Old versions valid at `as_of` were replaced after it: segments from as_of's
        // up to the latest version's.
        for (window, v) in self.history(&kb, as_of.saturating_add(1), until)? {
            if window.start <= as_of {
                return match v {
                    Some(v) => Ok(Some(VersionedRecord {
                        value: self.decode(&v)?,
                        timestamp: window.start,
                    })),
                    None => Ok(None),
                };
            }
        }
        Ok(None)
    }

    /// `key`'s old versions replaced in `[from, to]`, as [valid from, valid to] windows
    /// with their value bytes (`None`: a delete), by the time they were replaced.
    #[allow(clippy::type_complexity)]
    fn history(&mut self, kb: &[u8], from: i64, to: i64) -> Result<Vec<(Window, Option<Vec<u8>>)>> {
        let from = from.max(self.access.min_live());
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for seg in from.div_euclid(self.segment_ms)..=to.div_euclid(self.segment_ms) {
            let mut lo = key_prefix(seg, kb);
            let mut hi = lo.clone();
            lo.extend_from_slice(&time_bytes(from));
            hi.extend_from_slice(&time_bytes(to.saturating_add(1)));
            for (k, v) in self.access.range(&lo, &hi)? {
                if let Some((_, [valid_to, valid_from])) = split_key(&k, 2) {
                    let value = match v.split_first() {
                        Some((1, rest)) => Some(rest.to_vec()),
                        Some((0, _)) => None,
                        _ => {
                            return Err(self
                                .access
                                .error("an old version has no present/deleted tag".into()));
                        }
                    };
                    out.push((Window::new(valid_from, valid_to), value));
                }
            }
        }
        Ok(out)
    }

    fn write_latest(&mut self, kb: &[u8], ts: i64, value: Option<&[u8]>) -> Result<()> {
        let mut v = Vec::with_capacity(9 + value.map_or(0, <[u8]>::len));
        v.extend_from_slice(&ts.to_be_bytes());
        v.push(u8::from(value.is_some()));
        if let Some(b) = value {
            v.extend_from_slice(b);
        }
        self.access.write_at(Self::latest_key(kb), Some(v), ts)
    }

    /// Writes an old version valid over `valid` (`value` `None`: a delete).
    fn write_old(&mut self, kb: &[u8], valid: Window, value: Option<Vec<u8>>) -> Result<()> {
        let k = session_key(self.segment_ms, kb, valid);
        let mut v = Vec::with_capacity(1 + value.as_ref().map_or(0, Vec::len));
        v.push(u8::from(value.is_some()));
        if let Some(b) = value {
            v.extend_from_slice(&b);
        }
        self.access.write_at(k, Some(v), valid.start)
    }

    /// Removes the old version valid over `valid`.
    fn remove_old(&mut self, kb: &[u8], valid: Window) -> Result<()> {
        let k = session_key(self.segment_ms, kb, valid);
        self.access.write_at(k, None, valid.start)
    }

    /// Puts `value` for `key` as of `timestamp` (`None` deletes as of then). Returns
    /// whether it became the latest version: a put older than the latest goes into the
    /// history, where it is valid until the next version; one older than the history
    /// retention is not stored at all (`false` too).
    pub fn put(&mut self, key: &K, value: Option<&V>, timestamp: i64) -> Result<bool> {
        let kb = self.key_bytes(key)?;
        let bytes = match value {
            Some(v) => {
                let mut b = Vec::new();
                typed_serdes::<K, V>(&self.access)
                    .1
                    .serialize_into(v, &mut b)?
                    .then_some(b)
            }
            None => None,
        };
        let observed = self.observed()?;
        if timestamp < observed.saturating_sub(self.history_ms) {
            return Ok(false);
        }
        if timestamp > observed {
            self.access.set_meta_time(timestamp)?;
        }
        let latest = self.latest_raw(&kb)?;
        let became_latest = match latest {
            None => {
                self.write_latest(&kb, timestamp, bytes.as_deref())?;
                true
            }
            Some((ts, old)) if timestamp >= ts => {
                if timestamp > ts {
                    // The old latest version (a delete too) becomes history, valid
                    // until now.
                    self.write_old(&kb, Window::new(ts, timestamp), old)?;
                }
                self.write_latest(&kb, timestamp, bytes.as_deref())?;
                true
            }
            Some((latest_ts, _)) => {
                self.put_old(&kb, timestamp, latest_ts, bytes)?;
                false
            }
        };
        self.access.expire(observed.max(timestamp))?;
        Ok(became_latest)
    }

    /// An out-of-order put at `ts` (before the latest version, at `latest_ts`): it
    /// splits the old version valid then, or fills the gap up to the next version.
    fn put_old(
        &mut self,
        kb: &[u8],
        ts: i64,
        latest_ts: i64,
        value: Option<Vec<u8>>,
    ) -> Result<()> {
        let versions = self.history(kb, ts, latest_ts)?;
        // The version valid at ts, if any, and the first one starting after ts.
        let covering = versions
            .iter()
            .find(|(w, _)| w.start <= ts && ts < w.end)
            .cloned();
        let next_start = versions
            .iter()
            .map(|(w, _)| w.start)
            .filter(|s| *s > ts)
            .min()
            .unwrap_or(latest_ts);
        match covering {
            Some((w, old)) => {
                self.remove_old(kb, w)?;
                if w.start < ts {
                    self.write_old(kb, Window::new(w.start, ts), old)?;
                }
                self.write_old(kb, Window::new(ts, w.end), value)?;
            }
            // Before every version kept: valid until the first of them.
            None => self.write_old(kb, Window::new(ts, next_start), value)?,
        }
        Ok(())
    }
}

impl<K, V> std::fmt::Debug for VersionedStoreHandle<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedStoreHandle")
            .field("store", &self.access.name())
            .field("history_ms", &self.history_ms)
            .finish_non_exhaustive()
    }
}
