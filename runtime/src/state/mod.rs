//! State stores under one bound.
//!
//! Every RocksDB instance of a runtime (every store of every task of every query) is
//! opened through one [`StateEnv`]. That env holds ONE LRU block cache, ONE write buffer
//! manager charged to that cache, and RocksDB's default `Env` with a fixed background
//! pool. Block cache, memtables, and index and filter blocks therefore share one
//! capacity, and the number of RocksDB threads does not depend on the number of stores.
//! Kafka Streams by default gives each store its own 50 MB cache and 3 × 16 MB
//! memtables, with indexes and filters outside any cache.
//!
//! Stores are byte-level ([`KeyValueStore`]): keys order by their bytes, and typed
//! access goes through serdes one layer up, as with Kafka Streams' `Bytes` stores.
//! [`InMemoryStore`] has the same trait and reserves every byte it holds from a state
//! budget. When the budget is spent, a write fails with a clear error instead of
//! growing past the limit.

mod cache;
pub(crate) mod changelog;
mod ffi;
pub(crate) mod global;
mod memory;
mod rocks;
pub(crate) mod suppress;
pub(crate) mod task_stores;
pub(crate) mod window;
mod window_front;

pub use cache::{CacheStats, ENTRY_OVERHEAD, Lookup, RecordCache, TaskCache};
pub(crate) use cache::{Dirty, Pick};
pub use memory::InMemoryStore;
pub use rocks::{RocksDbStore, StateEnv, StateUsage};
pub(crate) use window_front::WindowFront;

use crate::error::Result;

/// A key and a value, owned.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One write of a batch: a key and its new value (`None` deletes the key).
pub type BatchEntry<'a> = (&'a [u8], Option<&'a [u8]>);

/// A byte-level key-value store: the trait both RocksDB and in-memory stores implement.
pub trait KeyValueStore: Send {
    /// The store's name.
    fn name(&self) -> &str;
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes `key` (no error if absent).
    fn delete(&mut self, key: &[u8]) -> Result<()>;
    /// Applies puts (`Some`) and deletes (`None`) in one atomic batch; the last write
    /// of a key wins.
    fn write_batch(&mut self, entries: &[BatchEntry<'_>]) -> Result<()>;
    /// Removes every key with `from <= key < to` (RocksDB: one range tombstone, and
    /// table files wholly inside the range are dropped at once). How window and
    /// session stores drop expired segments.
    fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()>;
    /// The first entry with `from <= key < to`.
    fn first(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>>;
    /// The last entry with `from <= key < to`.
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>>;
    /// Entries with `from <= key < to`, in key order.
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>>;
    /// Entries whose key starts with `prefix`, in key order.
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>>;
    /// Every entry, in key order.
    fn all(&self) -> Result<Vec<KeyValue>>;
    /// Makes written data durable (RocksDB: flushes the memtable).
    fn flush(&mut self) -> Result<()>;
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there
/// is none (the prefix is all 0xff).
/// Where a window store retaining duplicates starts numbering its entries: the wall
/// clock in nanoseconds (see `TaskStore::seq`).
pub(crate) fn seq_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// RocksDB's zone: its shared cache (block and blob cache, memtables, index and filter
/// blocks) against its capacity.
impl crate::memory::Account for StateEnv {
    fn usage(&self) -> (usize, usize) {
        let u = StateEnv::usage(self);
        (u.cache_usage, u.cache_capacity)
    }

    fn publish_metrics(&self) {
        StateEnv::publish_metrics(self);
    }
}

/// The record cache's zone: its bytes against its budget.
impl crate::memory::Account for RecordCache {
    fn usage(&self) -> (usize, usize) {
        let s = self.stats();
        (s.used, s.cap)
    }

    fn publish_metrics(&self) {
        RecordCache::publish_metrics(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_non_ff_byte() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
