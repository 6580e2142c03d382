//! Windows: the types windowed aggregations emit, and how window and session stores lay
//! out their keys.
//!
//! A windowed aggregation keys its table by [`Windowed<K>`]: the record key plus the
//! [`Window`] it was aggregated in. Window and session stores are ordinary byte-level
//! stores (RocksDB under the shared cache) whose keys begin with a *segment*: the
//! window start (session end, for sessions) divided by the store's segment interval.
//! Expired windows are then one contiguous key range per segment, dropped with a
//! range delete (RocksDB also drops the table files wholly inside it), so neither disk
//! nor memory grows with time. Inside a segment, keys sort by record key and then by
//! time, so fetching one key's windows in a time range is one seek per segment.
//!
//! Layouts (all integers big-endian; times with the sign bit flipped so they sort as
//! numbers):
//! - window store: `segment(8) | key length(4) | key | window start(8)`, and one
//!   retaining duplicates (a stream-stream join's) adds `| sequence(8)`: every value
//!   put is a new entry, written without reading what the window holds;
//! - session store: `segment(8) | key length(4) | key | session end(8) | session start(8)`;
//! - metadata: keys starting with `0x00`, before every segment (times are never
//!   negative, so every segment key starts with `0x80` or above).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::serde::Serde;

/// A time window: `[start, end)` for time windows; for session and sliding windows
/// both ends are record timestamps and both are inclusive, as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// Start, in milliseconds.
    pub start: i64,
    /// End, in milliseconds.
    pub end: i64,
}

impl Window {
    /// A window from `start` to `end`.
    pub fn new(start: i64, end: i64) -> Self {
        Window { start, end }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

/// A key of a windowed table: the record key and its window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K> {
    /// The record key.
    pub key: K,
    /// The window.
    pub window: Window,
}

impl<K> Windowed<K> {
    /// `key` in `window`.
    pub fn new(key: K, window: Window) -> Self {
        Windowed { key, window }
    }
}

impl<K: std::fmt::Display> std::fmt::Display for Windowed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.key, self.window)
    }
}

/// Serde of [`Windowed<K>`]: the key's bytes, then start and end (8 bytes each,
/// big-endian). What windowed tables use for their topics and suppression buffers.
pub struct WindowedSerde<K>(pub Arc<dyn Serde<K>>);

impl<K> Clone for WindowedSerde<K> {
    fn clone(&self) -> Self {
        WindowedSerde(self.0.clone())
    }
}

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, value: &Windowed<K>) -> Result<Option<crate::serde::Bytes>> {
        let mut buf = Vec::new();
        self.serialize_into(value, &mut buf)?;
        Ok(Some(buf.into()))
    }

    fn serialize_into(&self, value: &Windowed<K>, buf: &mut Vec<u8>) -> Result<bool> {
        if !self.0.serialize_into(&value.key, buf)? {
            return Err(Error::Serde("a windowed key cannot be null".into()));
        }
        buf.extend_from_slice(&value.window.start.to_be_bytes());
        buf.extend_from_slice(&value.window.end.to_be_bytes());
        Ok(true)
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Windowed<K>> {
        let b = bytes.ok_or_else(|| Error::Serde("a windowed key cannot be null".into()))?;
        if b.len() < 16 {
            return Err(Error::Serde(format!(
                "a windowed key needs at least 16 bytes, got {}",
                b.len()
            )));
        }
        let (k, t) = b.split_at(b.len() - 16);
        let start = i64::from_be_bytes(t[..8].try_into().expect("8 bytes"));
        let end = i64::from_be_bytes(t[8..].try_into().expect("8 bytes"));
        Ok(Windowed {
            key: self.0.deserialize(Some(k))?,
            window: Window { start, end },
        })
    }
}

impl<K: crate::serde::DefaultSerde> crate::serde::DefaultSerde for Windowed<K> {
    type Serde = WindowedSerde<K>;
    fn default_serde() -> Self::Serde {
        WindowedSerde(Arc::new(K::default_serde()))
    }
}

/// What kind of store a store spec declares, and the window facts its keys need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreType {
    /// A key-value store.
    KeyValue,
    /// A window store: windows of `size_ms` (0 for sliding windows, whose end is
    /// start + `size_ms` too, given as the time difference), kept `retention_ms`.
    Window {
        /// Window size in ms (end = start + size).
        size_ms: i64,
        /// How long a window is kept after its start (at least size + grace).
        retention_ms: i64,
        /// Width of a segment in ms.
        segment_ms: i64,
        /// Every value put is kept, under a sequence number after the window start
        /// (Kafka Streams' `retainDuplicates`, which stream-stream joins use); a
        /// `None` put does nothing.
        duplicates: bool,
    },
    /// A session store, sessions kept `retention_ms` after their end.
    Session {
        /// How long a session is kept after its end (at least gap + grace).
        retention_ms: i64,
        /// Width of a segment in ms.
        segment_ms: i64,
    },
    /// A versioned key-value store (Kafka Streams' KIP-889): each key's latest value,
    /// and its older versions for `history_ms` after they were replaced.
    Versioned {
        /// How long an old version stays readable after it was replaced.
        history_ms: i64,
        /// Width of a segment of old versions (by the time they were replaced) in ms.
        segment_ms: i64,
    },
}

impl StoreType {
    /// A window store; the segment interval is Kafka Streams' default,
    /// `max(retention / 2, 60 s)`.
    pub fn window(size_ms: i64, retention_ms: i64) -> Self {
        StoreType::Window {
            size_ms,
            retention_ms,
            segment_ms: segment_interval(retention_ms),
            duplicates: false,
        }
    }

    /// A window store retaining duplicates (see [`StoreType::Window`]).
    pub fn window_with_duplicates(size_ms: i64, retention_ms: i64) -> Self {
        StoreType::Window {
            size_ms,
            retention_ms,
            segment_ms: segment_interval(retention_ms),
            duplicates: true,
        }
    }

    /// A session store (segments as for window stores).
    pub fn session(retention_ms: i64) -> Self {
        StoreType::Session {
            retention_ms,
            segment_ms: segment_interval(retention_ms),
        }
    }

    /// A versioned store keeping old versions `history_ms` (segments of a quarter of
    /// that, at least one second: an old version outlives its history by at most a
    /// segment on disk, never in reads).
    pub fn versioned(history_ms: i64) -> Self {
        StoreType::Versioned {
            history_ms,
            segment_ms: (history_ms / 4).max(1000),
        }
    }

    pub(crate) fn segment_ms(&self) -> Option<i64> {
        match *self {
            StoreType::KeyValue => None,
            StoreType::Window { segment_ms, .. }
            | StoreType::Session { segment_ms, .. }
            | StoreType::Versioned { segment_ms, .. } => Some(segment_ms),
        }
    }

    pub(crate) fn retention_ms(&self) -> Option<i64> {
        match *self {
            StoreType::KeyValue => None,
            StoreType::Window { retention_ms, .. } | StoreType::Session { retention_ms, .. } => {
                Some(retention_ms)
            }
            StoreType::Versioned { history_ms, .. } => Some(history_ms),
        }
    }
}

fn segment_interval(retention_ms: i64) -> i64 {
    (retention_ms / 2).max(60_000)
}

/// Time as 8 bytes that sort like the number.
pub(crate) fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn bytes_time(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

/// The first key of segment `segment`.
pub(crate) fn segment_key(segment: i64) -> [u8; 8] {
    time_bytes(segment)
}

/// `segment | key length | key`: the prefix of one key's entries in a segment.
pub(crate) fn key_prefix(segment: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.len() + 16);
    out.extend_from_slice(&segment_key(segment));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The store key of `key`'s window starting at `start`.
pub(crate) fn window_key(segment_ms: i64, key: &[u8], start: i64) -> Vec<u8> {
    let mut out = key_prefix(start.div_euclid(segment_ms), key);
    out.extend_from_slice(&time_bytes(start));
    out
}

/// The store key of `key`'s session `window`.
pub(crate) fn session_key(segment_ms: i64, key: &[u8], window: Window) -> Vec<u8> {
    let mut out = key_prefix(window.end.div_euclid(segment_ms), key);
    out.extend_from_slice(&time_bytes(window.end));
    out.extend_from_slice(&time_bytes(window.start));
    out
}

/// Splits a window or session store key into the record key's bytes and the one or
/// two times after it; `None` for metadata keys and malformed ones.
pub(crate) fn split_key(stored: &[u8], times: usize) -> Option<(&[u8], [i64; 2])> {
    if stored.first().is_none_or(|b| *b < 0x80) || stored.len() < 12 + 8 * times {
        return None;
    }
    let len = u32::from_be_bytes(stored[8..12].try_into().ok()?) as usize;
    if stored.len() != 12 + len + 8 * times {
        return None;
    }
    let key = &stored[12..12 + len];
    let t = &stored[12 + len..];
    let a = bytes_time(t);
    let b = if times == 2 { bytes_time(&t[8..]) } else { 0 };
    Some((key, [a, b]))
}

/// How many 8-byte fields follow the record key in a window store's keys: the window
/// start, and the sequence number if it retains duplicates.
pub(crate) fn window_times(duplicates: bool) -> usize {
    if duplicates { 2 } else { 1 }
}

/// Decodes a stored window or session key into the record key's bytes and its window.
pub(crate) fn stored_window(ty: &StoreType, stored: &[u8]) -> Option<(Vec<u8>, Window)> {
    match *ty {
        StoreType::KeyValue | StoreType::Versioned { .. } => None,
        StoreType::Window {
            size_ms,
            duplicates,
            ..
        } => {
            let (k, [start, _]) = split_key(stored, window_times(duplicates))?;
            Some((k.to_vec(), Window::new(start, start + size_ms)))
        }
        StoreType::Session { .. } => {
            let (k, [end, start]) = split_key(stored, 2)?;
            Some((k.to_vec(), Window::new(start, end)))
        }
    }
}

/// The time that places a stored entry in its segment (window start, session end);
/// `None` for metadata keys, key-value stores and malformed keys.
pub(crate) fn entry_time(ty: &StoreType, stored: &[u8]) -> Option<i64> {
    match ty {
        StoreType::KeyValue => None,
        StoreType::Window { duplicates, .. } => {
            split_key(stored, window_times(*duplicates)).map(|(_, [start, _])| start)
        }
        // An old version's entry is placed by the time it was replaced, as a session
        // by its end.
        StoreType::Session { .. } | StoreType::Versioned { .. } => {
            split_key(stored, 2).map(|(_, [end, _])| end)
        }
    }
}

/// The segment a window or session store key is in; `None` for metadata keys (they
/// sort before segment 0) and keys too short to have one.
pub(crate) fn entry_segment(stored: &[u8]) -> Option<i64> {
    if stored.len() < 8 || stored[0] < 0x80 {
        return None;
    }
    Some(bytes_time(stored))
}

/// The key under which window and session stores keep their owner's metadata (the
/// observed stream time), before every segment.
pub(crate) const META_KEY: &[u8] = b"\x00stream-time";

impl<K> std::fmt::Debug for WindowedSerde<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowedSerde")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::StringSerde;

    #[test]
    fn time_bytes_sort_like_numbers() {
        let ts = [i64::MIN, -5, -1, 0, 1, 59_999, 60_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(time_bytes(w[0]) < time_bytes(w[1]));
            assert_eq!(bytes_time(&time_bytes(w[0])), w[0]);
        }
    }

    #[test]
    fn window_keys_round_trip_and_group_by_segment_then_key_then_time() {
        let seg = 60_000;
        let a = window_key(seg, b"a", 10);
        let a2 = window_key(seg, b"a", 20);
        let ab = window_key(seg, b"ab", 0);
        let next = window_key(seg, b"a", 60_000);
        assert!(a < a2 && a2 < ab && ab < next);
        assert_eq!(
            stored_window(&StoreType::window(5, 120_000), &a2),
            Some((b"a".to_vec(), Window::new(20, 25)))
        );
        let s = session_key(seg, b"k", Window::new(3, 70_000));
        assert_eq!(
            stored_window(&StoreType::session(120_000), &s),
            Some((b"k".to_vec(), Window::new(3, 70_000)))
        );
        assert!(META_KEY < segment_key(0).as_slice());
        assert_eq!(stored_window(&StoreType::window(5, 1), META_KEY), None);
    }

    #[test]
    fn windowed_serde_round_trips_and_rejects_short_input() {
        let serde = WindowedSerde::<String>(Arc::new(StringSerde));
        let w = Windowed::new("user".to_string(), Window::new(1000, 2000));
        let mut buf = Vec::new();
        assert!(serde.serialize_into(&w, &mut buf).unwrap());
        assert_eq!(serde.deserialize(Some(&buf)).unwrap(), w);
        assert!(serde.deserialize(Some(b"short")).is_err());
        assert!(serde.deserialize(None).is_err());
    }
}
