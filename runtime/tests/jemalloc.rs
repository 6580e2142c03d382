//! With the `jemalloc` feature jemalloc is the process's `malloc`: RocksDB's C++
//! allocations (here its block cache, filled by reads) show in jemalloc's
//! `stats.allocated`, which the memory report reads.

#![cfg(feature = "jemalloc")]

use rocksdb::{BlockBasedOptions, Cache, DB, Options};
use weir_runtime::report::allocator_stats;

#[global_allocator]
static GLOBAL: weir_runtime::Jemalloc = weir_runtime::Jemalloc;

#[test]
fn rocksdb_block_cache_bytes_are_jemalloc_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new_lru_cache(512 << 20);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_block_based_table_factory(&table);
    let db = DB::open(&opts, dir.path()).unwrap();
    // 64 MiB of values that do not compress, flushed to SST files.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut value = vec![0u8; 1024];
    for i in 0..65_536u32 {
        for b in value.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        db.put(i.to_be_bytes(), &value).unwrap();
    }
    db.flush().unwrap();
    let before = allocator_stats().expect("jemalloc counters").allocated;
    let cached_before = cache.get_usage();
    // Reading every key brings every block into the cache: C++ allocations only.
    for i in 0..65_536u32 {
        assert!(db.get_pinned(i.to_be_bytes()).unwrap().is_some());
    }
    let cached = cache.get_usage() - cached_before;
    let allocated = allocator_stats().unwrap().allocated as i64 - before as i64;
    eprintln!("block cache +{cached} bytes, jemalloc allocated +{allocated} bytes");
    assert!(
        cached > 48 << 20,
        "the block cache took only {cached} bytes"
    );
    // All of it (less a margin for jemalloc's and RocksDB's own accounting) is
    // jemalloc's: with glibc's malloc under RocksDB this would be about zero.
    assert!(
        allocated as f64 > 0.9 * cached as f64,
        "block cache grew by {cached} bytes, jemalloc's allocated by {allocated}"
    );
}
