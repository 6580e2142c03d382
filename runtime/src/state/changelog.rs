//! Changelogs: every write of a store also goes to its changelog partition, so a
//! task that lacks what the changelog holds (a new machine, a lost state directory, a
//! partition taken over from another process) restores it before it processes
//! anything. A checkpoint file next to a RocksDB store records the changelog offset
//! its contents reach, so a restart restores only what came after.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::transport::Transport;

/// A store whose every write also goes to its changelog partition (after the store
/// took it). Range deletes (expired window segments) are not logged: window changelogs
/// are meant to drop old entries by time retention.
pub(crate) struct ChangeloggedStore {
    pub(crate) inner: Box<dyn crate::state::KeyValueStore>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) query: u64,
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

impl crate::state::KeyValueStore for ChangeloggedStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.put(key, value)?;
        self.transport
            .produce_change(self.query, &self.topic, self.partition, key, Some(value))
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.inner.delete(key)?;
        self.transport
            .produce_change(self.query, &self.topic, self.partition, key, None)
    }
    fn write_batch(&mut self, entries: &[crate::state::BatchEntry<'_>]) -> Result<()> {
        self.inner.write_batch(entries)?;
        for (k, v) in entries {
            self.transport
                .produce_change(self.query, &self.topic, self.partition, k, *v)?;
        }
        Ok(())
    }
    fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.inner.delete_range(from, to)
    }
    fn first(&self, from: &[u8], to: &[u8]) -> Result<Option<crate::state::KeyValue>> {
        self.inner.first(from, to)
    }
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<crate::state::KeyValue>> {
        self.inner.last(from, to)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<crate::state::KeyValue>> {
        self.inner.range(from, to)
    }
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<crate::state::KeyValue>> {
        self.inner.prefix_scan(prefix)
    }
    fn all(&self) -> Result<Vec<crate::state::KeyValue>> {
        self.inner.all()
    }
    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}

/// The checkpoint file of a RocksDB store: the changelog offset its contents reach.
pub(crate) fn checkpoint_path(store_dir: &std::path::Path) -> std::path::PathBuf {
    store_dir.join("weir.changelog-offset")
}

/// Reads a checkpoint (`None` if absent or unreadable: restore from the start).
pub(crate) fn read_checkpoint(store_dir: &std::path::Path) -> Option<i64> {
    std::fs::read_to_string(checkpoint_path(store_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes a checkpoint atomically (a temporary file renamed over the old one).
pub(crate) fn write_checkpoint(store_dir: &std::path::Path, offset: i64) -> Result<()> {
    let path = checkpoint_path(store_dir);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, offset.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}
