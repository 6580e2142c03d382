//! Global stores: one instance per query, shared by every task.
//!
//! Kafka Streams keeps a global store in each instance, fed from every partition of
//! its topic by a global thread. weir keeps one per query and feeds it from a *global
//! task* on the worker pool (no thread of its own). That task alone writes the store;
//! every other task of the query reads the same instance. So the store sits behind a
//! reader-writer lock, and each task holds a [`GlobalStore`] handle: the global task's
//! writes, the others' refuse writes with a clear error (as Kafka's read-only global
//! store does). Its bytes are those of any store of its kind: RocksDB's under the
//! shared cache, or the in-memory store budget.
//!
//! The topic is the store's changelog, so there is none: an offsets file next to the
//! store (`<state>/<query>/global/<store>.offsets`, one `partition offset` line per
//! partition) records how far the store reaches, written at each commit of the global
//! task. A RocksDB store found without one is rebuilt from the topic's start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::state::{BatchEntry, KeyValue, KeyValueStore};
use crate::sync::RwLock;

/// The one instance of a global store, shared by the tasks of its query.
pub(crate) type SharedInner = RwLock<Box<dyn KeyValueStore + Sync>>;
/// A handle on it.
pub(crate) type SharedStore = Arc<SharedInner>;

/// The offsets a global store reaches: (partition, next offset) per partition.
pub(crate) type GlobalOffsetList = Vec<(u32, i64)>;

/// A task's handle on its query's global store: writable by the global task only.
pub(crate) struct GlobalStore {
    pub(crate) name: String,
    pub(crate) inner: SharedStore,
    pub(crate) writable: bool,
}

impl GlobalStore {
    fn refuse(&self) -> Error {
        Error::store(
            self.name.clone(),
            "a global store is read-only: only the processor of its global table writes it",
        )
    }
}

impl KeyValueStore for GlobalStore {
    fn name(&self) -> &str {
        &self.name
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.read().get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(self.refuse());
        }
        self.inner.write().put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(self.refuse());
        }
        self.inner.write().delete(key)
    }
    fn write_batch(&mut self, entries: &[BatchEntry<'_>]) -> Result<()> {
        if !self.writable {
            return Err(self.refuse());
        }
        self.inner.write().write_batch(entries)
    }
    fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(self.refuse());
        }
        self.inner.write().delete_range(from, to)
    }
    fn first(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>> {
        self.inner.read().first(from, to)
    }
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>> {
        self.inner.read().last(from, to)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>> {
        self.inner.read().range(from, to)
    }
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        self.inner.read().prefix_scan(prefix)
    }
    fn all(&self) -> Result<Vec<KeyValue>> {
        self.inner.read().all()
    }
    fn flush(&mut self) -> Result<()> {
        if !self.writable {
            // A reader's commit: the global task makes the store durable.
            return Ok(());
        }
        self.inner.write().flush()
    }
}

/// Where global store `store` of a query whose state is in `query_dir` lives.
pub(crate) fn global_store_dir(query_dir: &Path, store: &str) -> PathBuf {
    query_dir.join("global").join(store)
}

/// The offsets file of the global store in `store_dir`.
pub(crate) fn offsets_path(store_dir: &Path) -> PathBuf {
    let mut name = store_dir
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".offsets");
    store_dir.with_file_name(name)
}

/// The offsets a global store reaches, per partition (`None`: no file, or one that
/// does not parse: the store is rebuilt).
pub(crate) fn read_offsets(store_dir: &Path) -> Option<GlobalOffsetList> {
    let text = std::fs::read_to_string(offsets_path(store_dir)).ok()?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let p = parts.next()?.parse().ok()?;
        let o = parts.next()?.parse().ok()?;
        if parts.next().is_some() || o < 0 {
            return None;
        }
        out.push((p, o));
    }
    Some(out)
}

/// Writes the offsets a global store reaches (through a temporary file, renamed).
pub(crate) fn write_offsets(store_dir: &Path, offsets: &[(u32, i64)]) -> Result<()> {
    let path = offsets_path(store_dir);
    let tmp = path.with_extension("offsets.tmp");
    let text: String = offsets.iter().map(|(p, o)| format!("{p} {o}\n")).collect();
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ByteBudget;
    use crate::state::InMemoryStore;

    #[test]
    fn readers_cannot_write_and_see_the_writer() {
        let shared: SharedStore = Arc::new(RwLock::new(Box::new(InMemoryStore::new(
            "g",
            Arc::new(ByteBudget::new(1 << 20)),
        ))));
        let mut writer = GlobalStore {
            name: "g".into(),
            inner: shared.clone(),
            writable: true,
        };
        let mut reader = GlobalStore {
            name: "g".into(),
            inner: shared,
            writable: false,
        };
        writer.put(b"k", b"v").unwrap();
        assert_eq!(reader.get(b"k").unwrap(), Some(b"v".to_vec()));
        let err = reader.put(b"k", b"w").unwrap_err().to_string();
        assert!(err.contains("read-only"), "{err}");
        assert!(reader.delete(b"k").is_err());
        assert!(reader.write_batch(&[(b"k", None)]).is_err());
        reader.flush().unwrap();
        assert_eq!(reader.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn offsets_round_trip_and_bad_files_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = global_store_dir(dir.path(), "customers");
        std::fs::create_dir_all(&store).unwrap();
        assert_eq!(read_offsets(&store), None);
        write_offsets(&store, &[(0, 12), (1, 0)]).unwrap();
        assert_eq!(read_offsets(&store), Some(vec![(0, 12), (1, 0)]));
        assert!(offsets_path(&store).ends_with("global/customers.offsets"));
        std::fs::write(offsets_path(&store), "0 12\n1 x\n").unwrap();
        assert_eq!(read_offsets(&store), None);
        std::fs::write(offsets_path(&store), "0 -4\n").unwrap();
        assert_eq!(read_offsets(&store), None);
    }
}
