//! The RocksDB objects weir builds through the C API. rust-rocksdb 0.25 cannot create
//! an LRU cache with a strict capacity limit, and its write buffer manager and table
//! options only accept its own `Cache`; so the shared cache, the write buffer manager
//! charged to it, and the block-based table options pointing at it are made here, in
//! one place, for both the default and the strict mode. Each C++ object lives behind
//! a `shared_ptr`: the options of every open store hold their own reference, so
//! dropping these wrappers never frees what an open store still uses.

use std::ptr::NonNull;

use librocksdb_sys as sys;
use rocksdb::{AsRawPtr, Options};

use crate::error::{Error, Result};

/// The shared LRU block cache.
pub(crate) struct RawCache(NonNull<sys::rocksdb_cache_t>);

// SAFETY: RocksDB's caches are internally synchronized; the wrapper only reads
// counters and hands the pointer to option setters, which copy the `shared_ptr`.
unsafe impl Send for RawCache {}
// SAFETY: as for `Send`: every use through a shared reference is synchronized by RocksDB.
unsafe impl Sync for RawCache {}

impl RawCache {
    /// An LRU cache of `capacity` bytes (high-priority pool ratio 0.5, RocksDB's
    /// default). With `strict`, an insert that would exceed the capacity fails instead
    /// of overcommitting.
    pub(crate) fn lru(capacity: usize, strict: bool) -> Result<Self> {
        // SAFETY: plain constructors; a null result is handled below.
        let raw = unsafe {
            if strict {
                sys::rocksdb_cache_create_lru_with_strict_capacity_limit(capacity)
            } else {
                sys::rocksdb_cache_create_lru(capacity)
            }
        };
        NonNull::new(raw)
            .map(RawCache)
            .ok_or_else(|| Error::Config("rocksdb could not create the block cache".into()))
    }

    /// Bytes charged to the cache.
    pub(crate) fn usage(&self) -> usize {
        // SAFETY: the pointer is valid for `self`'s lifetime.
        unsafe { sys::rocksdb_cache_get_usage(self.0.as_ptr()) }
    }

    /// Bytes of entries pinned (in use by readers, or pinned index/filter blocks).
    pub(crate) fn pinned_usage(&self) -> usize {
        // SAFETY: as above.
        unsafe { sys::rocksdb_cache_get_pinned_usage(self.0.as_ptr()) }
    }

    /// The capacity.
    pub(crate) fn capacity(&self) -> usize {
        // SAFETY: as above.
        unsafe { sys::rocksdb_cache_get_capacity(self.0.as_ptr()) }
    }

    /// Makes this cache `opts`' blob cache too: values RocksDB keeps in blob files
    /// (large values) are cached, and charged, in the same bounded cache as blocks,
    /// instead of being read from the file into a fresh buffer on every read.
    pub(crate) fn apply_as_blob_cache(&self, opts: &mut Options) {
        // SAFETY: both pointers are valid; the options copy the `shared_ptr`.
        unsafe { sys::rocksdb_options_set_blob_cache(opts.as_raw_ptr(), self.0.as_ptr()) }
    }
}

impl Drop for RawCache {
    fn drop(&mut self) {
        // SAFETY: created by `lru`, destroyed once; open stores keep their own
        // `shared_ptr` to the cache.
        unsafe { sys::rocksdb_cache_destroy(self.0.as_ptr()) }
    }
}

/// A write buffer manager whose memtable memory is charged to a [`RawCache`].
pub(crate) struct RawWriteBufferManager(NonNull<sys::rocksdb_write_buffer_manager_t>);

// SAFETY: RocksDB's write buffer manager is internally synchronized (atomics).
unsafe impl Send for RawWriteBufferManager {}
// SAFETY: as for `Send`: its counters are atomics.
unsafe impl Sync for RawWriteBufferManager {}

impl RawWriteBufferManager {
    /// Memtables of every store up to `buffer_size` bytes, charged to `cache`.
    pub(crate) fn new(buffer_size: usize, cache: &RawCache, allow_stall: bool) -> Result<Self> {
        // SAFETY: `cache` is valid; the manager copies its `shared_ptr`.
        let raw = unsafe {
            sys::rocksdb_write_buffer_manager_create_with_cache(
                buffer_size,
                cache.0.as_ptr(),
                allow_stall,
            )
        };
        NonNull::new(raw).map(RawWriteBufferManager).ok_or_else(|| {
            Error::Config("rocksdb could not create the write buffer manager".into())
        })
    }

    /// Bytes in memtables now.
    pub(crate) fn usage(&self) -> usize {
        // SAFETY: valid for `self`'s lifetime.
        unsafe { sys::rocksdb_write_buffer_manager_memory_usage(self.0.as_ptr()) }
    }

    /// The bound for memtables.
    pub(crate) fn buffer_size(&self) -> usize {
        // SAFETY: as above.
        unsafe { sys::rocksdb_write_buffer_manager_buffer_size(self.0.as_ptr()) }
    }

    /// Makes every store opened with `opts` count its memtables here.
    pub(crate) fn apply(&self, opts: &mut Options) {
        // SAFETY: both pointers are valid; the options copy the `shared_ptr`.
        unsafe { sys::rocksdb_options_set_write_buffer_manager(opts.as_raw_ptr(), self.0.as_ptr()) }
    }
}

impl Drop for RawWriteBufferManager {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once; options keep their own reference.
        unsafe { sys::rocksdb_write_buffer_manager_destroy(self.0.as_ptr()) }
    }
}

/// The block-based table settings weir uses, applied through the C API so the block
/// cache can be a [`RawCache`].
pub(crate) struct TableOptions {
    /// Data block size.
    pub(crate) block_size: usize,
    /// Partition size of the two-level index and partitioned filters.
    pub(crate) metadata_block_size: u64,
    /// Bloom filter bits per key.
    pub(crate) bloom_bits_per_key: f64,
}

/// `rocksdb::BlockBasedIndexType::TwoLevelIndexSearch`.
const TWO_LEVEL_INDEX_SEARCH: i32 = 2;

impl TableOptions {
    /// Sets `opts`' table factory: blocks, index and filter blocks in `cache` (index
    /// and filter at high priority), a partitioned two-level index and partitioned
    /// bloom filters with only their top level pinned, L0 not pinned (pinned L0
    /// index/filter would grow with data outside the bound).
    pub(crate) fn apply(&self, opts: &mut Options, cache: &RawCache) {
        // SAFETY: the table options are created, filled and destroyed here; the
        // factory copies them (and the cache's `shared_ptr`); the filter policy's
        // ownership passes to the table options.
        unsafe {
            let t = sys::rocksdb_block_based_options_create();
            sys::rocksdb_block_based_options_set_block_cache(t, cache.0.as_ptr());
            sys::rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
            sys::rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
                t, 1,
            );
            sys::rocksdb_block_based_options_set_index_type(t, TWO_LEVEL_INDEX_SEARCH);
            sys::rocksdb_block_based_options_set_partition_filters(t, 1);
            sys::rocksdb_block_based_options_set_metadata_block_size(t, self.metadata_block_size);
            sys::rocksdb_block_based_options_set_pin_top_level_index_and_filter(t, 1);
            sys::rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(t, 0);
            let bloom = sys::rocksdb_filterpolicy_create_bloom(self.bloom_bits_per_key);
            sys::rocksdb_block_based_options_set_filter_policy(t, bloom);
            sys::rocksdb_block_based_options_set_block_size(t, self.block_size);
            sys::rocksdb_options_set_block_based_table_factory(opts.as_raw_ptr(), t);
            sys::rocksdb_block_based_options_destroy(t);
        }
    }
}
