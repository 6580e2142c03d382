//! RocksDB stores sharing one block cache, one write buffer manager and one background
//! pool.

use crate::sync::Mutex;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use rocksdb::{
    DB, DBCompressionType, Direction, Env, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions,
};

use super::ffi::{RawCache, RawWriteBufferManager, TableOptions};
use super::{BatchEntry, KeyValue, KeyValueStore, prefix_end};
use crate::config::StateConfig;
use crate::error::{Error, Result};

/// Values at least this large are stored in RocksDB's blob files.
const BLOB_MIN_BYTES: u64 = 2048;

/// Where the bytes of every RocksDB instance of a runtime are, next to their bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateUsage {
    /// Capacity of the shared block cache: the bound for block cache + memtables +
    /// index and filter blocks.
    pub cache_capacity: usize,
    /// Bytes charged to the shared cache now (blocks, index/filter blocks and the
    /// memtable reservations of the write buffer manager).
    pub cache_usage: usize,
    /// Bytes of cache entries pinned (by iterators, or as top-level index/filter).
    pub cache_pinned: usize,
    /// Bytes in memtables, as the write buffer manager counts them (included in
    /// `cache_usage`).
    pub memtable_bytes: usize,
    /// The write buffer manager's bound for memtables.
    pub memtable_limit: usize,
    /// Estimated bytes of table readers of all open stores: outside the cache, grows with
    /// the number of SST files (bounded through `max_open_files`).
    pub table_readers: usize,
    /// Open RocksDB instances.
    pub open_stores: usize,
}

struct Inner {
    // Field order is drop order: the manager goes before the cache it is charged to
    // (each also holds a reference of its own on the C++ side).
    wbm: RawWriteBufferManager,
    cache: RawCache,
    env: Env,
    table: TableOptions,
    strict: bool,
    cache_bytes: usize,
    memtable_bytes: usize,
    max_open_files: i32,
    background_threads: i32,
    /// Every instance open or still closing.
    open: Registry,
}

/// The env's instances, each under its directory. An entry leaves when its instance's
/// close has returned, not when its last handle drops: a close waits for the
/// instance's background jobs and, with the WAL off, flushes its memtables, all of
/// which write files in that directory after the last handle is gone (when the `Weak`
/// no longer upgrades).
type Registry = Arc<Mutex<Vec<(PathBuf, Weak<OpenDb>)>>>;

/// One RocksDB instance, in its env's registry until it has closed.
struct OpenDb {
    db: Option<DB>,
    registry: Registry,
}

impl std::ops::Deref for OpenDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        self.db
            .as_ref()
            .expect("a RocksDB instance is open until its handle drops")
    }
}

impl Drop for OpenDb {
    fn drop(&mut self) {
        drop(self.db.take());
        let mut open = self.registry.lock();
        let me: *const OpenDb = self;
        open.retain(|(_, w)| w.as_ptr() != me);
    }
}

/// The resources every RocksDB store of a runtime shares. Cloning is cheap.
#[derive(Clone)]
pub struct StateEnv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateEnv")
            .field("cache_bytes", &self.inner.cache_bytes)
            .field("memtable_bytes", &self.inner.memtable_bytes)
            .field("strict", &self.inner.strict)
            .finish()
    }
}

impl StateEnv {
    /// One LRU cache of `cache_bytes`, a write buffer manager of `memtable_bytes` charged
    /// to it, `background_threads` shared flush and compaction threads, and
    /// `max_open_files` per store. The cache may overcommit while all of it is pinned
    /// ([`StateEnv::from_config`] offers the strict limit).
    pub fn new(
        cache_bytes: usize,
        memtable_bytes: usize,
        background_threads: usize,
        max_open_files: usize,
    ) -> Result<Self> {
        Self::build(
            cache_bytes,
            memtable_bytes,
            background_threads,
            max_open_files,
            false,
        )
    }

    /// The env a runtime's [`StateConfig`] describes, including
    /// `rocksdb_strict_capacity`.
    pub fn from_config(c: &StateConfig) -> Result<Self> {
        Self::build(
            c.rocksdb_cache_bytes,
            c.rocksdb_memtable_bytes,
            c.rocksdb_background_threads,
            c.rocksdb_max_open_files,
            c.rocksdb_strict_capacity,
        )
    }

    fn build(
        cache_bytes: usize,
        memtable_bytes: usize,
        background_threads: usize,
        max_open_files: usize,
        strict: bool,
    ) -> Result<Self> {
        if memtable_bytes == 0 || memtable_bytes > cache_bytes {
            return Err(Error::Config(format!(
                "rocksdb memtable bytes ({memtable_bytes}) must be between 1 and the cache size ({cache_bytes}): memtables are charged to the cache"
            )));
        }
        if background_threads == 0 || max_open_files < 16 {
            return Err(Error::Config(
                "rocksdb needs at least 1 background thread and max_open_files >= 16".into(),
            ));
        }
        let cache = RawCache::lru(cache_bytes, strict)?;
        // No stalling: with many instances, a stalled writer waits for memtables of
        // other instances that nobody flushes (RocksDB flushes only the instance being
        // written), and a worker would wait forever. Without stalling, an instance
        // flushes its own memtable when the manager is over its bound, each memtable
        // is small (below), and every commit flushes all of them.
        let wbm = RawWriteBufferManager::new(memtable_bytes, &cache, false)?;
        let mut env = Env::new().map_err(|e| Error::Config(format!("rocksdb env: {e}")))?;
        let threads = i32::try_from(background_threads).unwrap_or(i32::MAX);
        // Flushes run in the high-priority pool, compactions in the low one; both are
        // the process-wide default env's pools, shared by every store.
        env.set_high_priority_background_threads(1);
        env.set_low_priority_background_threads(threads);
        Ok(StateEnv {
            inner: Arc::new(Inner {
                wbm,
                cache,
                env,
                table: TableOptions {
                    block_size: 16 * 1024,
                    metadata_block_size: 4096,
                    bloom_bits_per_key: 10.0,
                },
                strict,
                cache_bytes,
                memtable_bytes,
                max_open_files: i32::try_from(max_open_files).unwrap_or(i32::MAX),
                background_threads: threads,
                open: Registry::default(),
            }),
        })
    }

    /// Options every store opens with.
    fn options(&self) -> Options {
        let i = &self.inner;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        i.table.apply(&mut opts, &i.cache);
        i.wbm.apply(&mut opts);
        opts.set_env(&i.env);
        opts.set_max_open_files(i.max_open_files);
        opts.set_max_background_jobs(i.background_threads + 1);
        // Per-store memtable size: small, so many stores' memtables stay near the
        // write buffer manager's bound between its flushes and the commits' flushes.
        opts.set_write_buffer_size((i.memtable_bytes / 8).clamp(256 << 10, 16 << 20));
        opts.set_max_write_buffer_number(2);
        // No compression for L0 and the base level, which are rewritten soonest (flushes
        // and the first compactions are on the write path's critical resources), LZ4
        // below, where most bytes live: the tiering TiKV uses, without its ZSTD.
        opts.set_compression_per_level(&[
            DBCompressionType::None,
            DBCompressionType::None,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
            DBCompressionType::Lz4,
        ]);
        // Values of 2 KiB and more go to blob files at flush; compactions then move
        // keys and blob references instead of rewriting large values again and again.
        // Garbage collection during compaction relocates the live values of the oldest
        // quarter of blob files, so overwritten values do not pile up on disk.
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(BLOB_MIN_BYTES);
        opts.set_blob_file_size(64 << 20);
        opts.set_enable_blob_gc(true);
        opts.set_blob_gc_age_cutoff(0.25);
        // Blob values read back are cached in the one shared cache, like blocks.
        i.cache.apply_as_blob_cache(&mut opts);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts
    }

    /// Opens (creating if needed) the store at `path`.
    pub fn open_store(&self, name: &str, path: &Path) -> Result<RocksDbStore> {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::io(
                format!("cannot create store directory {}", path.display()),
                e,
            )
        })?;
        let db = DB::open(&self.options(), path).map_err(|e| Error::Store {
            store: name.to_string(),
            message: format!("cannot open {}: {e}", path.display()),
            source: Some(Arc::new(e)),
        })?;
        let db = Arc::new(OpenDb {
            db: Some(db),
            registry: self.inner.open.clone(),
        });
        self.inner
            .open
            .lock()
            .push((path.to_path_buf(), Arc::downgrade(&db)));
        let mut write = WriteOptions::default();
        // Durability comes from the commit protocol (flush on commit) and, with Kafka,
        // from changelog topics, as in Kafka Streams.
        write.disable_wal(true);
        Ok(RocksDbStore {
            name: name.to_string(),
            path: path.to_path_buf(),
            db,
            write,
            read: ReadOptions::default(),
        })
    }

    /// Whether a store under `dir` is open or still closing (a RocksDB instance closes
    /// when its last handle drops, and the close writes files until it returns).
    pub fn any_open_under(&self, dir: &Path) -> bool {
        self.inner
            .open
            .lock()
            .iter()
            .any(|(p, _)| p.starts_with(dir))
    }

    /// Where RocksDB's bytes are now.
    pub fn usage(&self) -> StateUsage {
        let i = &self.inner;
        let open: Vec<Arc<OpenDb>> = i
            .open
            .lock()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        let table_readers = open
            .iter()
            .filter_map(|db| {
                db.property_int_value("rocksdb.estimate-table-readers-mem")
                    .ok()
                    .flatten()
            })
            .sum::<u64>() as usize;
        StateUsage {
            cache_capacity: i.cache.capacity(),
            cache_usage: i.cache.usage(),
            cache_pinned: i.cache.pinned_usage(),
            memtable_bytes: i.wbm.usage(),
            memtable_limit: i.wbm.buffer_size(),
            table_readers,
            open_stores: open.len(),
        }
    }

    /// Publishes [`StateUsage`] as `metrics` gauges (one set for the shared cache, not
    /// one per store).
    pub fn publish_metrics(&self) {
        let u = self.usage();
        metrics::gauge!(crate::metrics::ROCKSDB_CACHE_CAPACITY_BYTES).set(u.cache_capacity as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_CACHE_USAGE_BYTES).set(u.cache_usage as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_CACHE_PINNED_BYTES).set(u.cache_pinned as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_MEMTABLE_BYTES).set(u.memtable_bytes as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_MEMTABLE_LIMIT_BYTES).set(u.memtable_limit as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_TABLE_READERS_BYTES).set(u.table_readers as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_OPEN_STORES).set(u.open_stores as f64);
    }
}

/// A key-value store in its own RocksDB instance, opened through a [`StateEnv`].
pub struct RocksDbStore {
    name: String,
    path: PathBuf,
    db: Arc<OpenDb>,
    write: WriteOptions,
    /// Point lookups' options, made once: `DB::get` builds and frees a C++
    /// `ReadOptions` per call.
    read: ReadOptions,
}

impl RocksDbStore {
    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A RocksDB integer property of this instance (e.g. `rocksdb.block-cache-usage`).
    pub fn property(&self, name: &str) -> Option<u64> {
        self.db.property_int_value(name).ok().flatten()
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Store {
            store: self.name.clone(),
            message: e.to_string(),
            source: Some(Arc::new(e)),
        }
    }

    fn scan(&self, from: &[u8], to: Option<Vec<u8>>) -> Result<Vec<KeyValue>> {
        let mut read = ReadOptions::default();
        if let Some(to) = to {
            read.set_iterate_upper_bound(to);
        }
        self.db
            .iterator_opt(IteratorMode::From(from, Direction::Forward), read)
            .map(|item| {
                item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }
}

impl KeyValueStore for RocksDbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_opt(key, &self.read).map_err(|e| self.err(e))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_opt(key, value, &self.write)
            .map_err(|e| self.err(e))
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.db
            .delete_opt(key, &self.write)
            .map_err(|e| self.err(e))
    }

    fn write_batch(&mut self, entries: &[BatchEntry<'_>]) -> Result<()> {
        // Sized up front (RocksDB's record: a tag byte, two varint lengths, key and
        // value, after a 12-byte header): a 4 MiB batch grown by doubling copies its
        // bytes about twice more.
        let bytes = entries
            .iter()
            .map(|(k, v)| 11 + k.len() + v.map_or(0, <[u8]>::len))
            .sum::<usize>();
        let mut batch = WriteBatch::with_capacity_bytes(12 + bytes);
        for &(k, v) in entries {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        self.db
            .write_opt(batch, &self.write)
            .map_err(|e| self.err(e))
    }

    fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.delete_range(from, to);
        self.db
            .write_opt(batch, &self.write)
            .map_err(|e| self.err(e))?;
        // Files wholly inside the range go now, not at the next compaction.
        self.db
            .delete_file_in_range(from, to)
            .map_err(|e| self.err(e))
    }

    fn first(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>> {
        if from >= to {
            return Ok(None);
        }
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(to.to_vec());
        self.db
            .iterator_opt(IteratorMode::From(from, Direction::Forward), read)
            .next()
            .transpose()
            .map(|kv| kv.map(|(k, v)| (k.into_vec(), v.into_vec())))
            .map_err(|e| self.err(e))
    }

    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>> {
        if from >= to {
            return Ok(None);
        }
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(from.to_vec());
        read.set_iterate_upper_bound(to.to_vec());
        self.db
            .iterator_opt(IteratorMode::End, read)
            .next()
            .transpose()
            .map(|kv| kv.map(|(k, v)| (k.into_vec(), v.into_vec())))
            .map_err(|e| self.err(e))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.scan(from, Some(to.to_vec()))
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        self.scan(prefix, prefix_end(prefix))
    }

    fn all(&self) -> Result<Vec<KeyValue>> {
        self.scan(&[], None)
    }

    fn flush(&mut self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))
    }
}

impl std::fmt::Debug for RocksDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbStore")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
