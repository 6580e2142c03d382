//! With the `jemalloc` feature jemalloc is the process's `malloc`: RocksDB's C++
//! allocations (here its block cache, filled by reads) show in jemalloc's
//! `stats.allocated`, which the memory report reads; and memory freed leaves the RSS
//! within seconds while a runtime runs, even when nothing allocates any more.

#![cfg(feature = "jemalloc")]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rocksdb::{BlockBasedOptions, Cache, DB, Options};
use tikv_jemalloc_ctl::raw;
use weir_runtime::{
    JEMALLOC_DECAY_MS, PURGE_AT_SIXTEENTHS, allocator_purges, allocator_stats, process_rss,
};
use weir_runtime::{Runtime, RuntimeConfig};

#[global_allocator]
static GLOBAL: weir_runtime::Jemalloc = weir_runtime::Jemalloc;

/// The tests measure the whole process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn rocksdb_block_cache_bytes_are_jemalloc_allocations() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
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

#[test]
fn freed_memory_leaves_the_resident_set_within_seconds_of_a_quiet_runtime() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // The default limit, 1 GiB: far above this test's RSS, so no purge (below) returns
    // the pages, decay does.
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .workers(1)
            .state_dir(dir.path())
            .build()
            .unwrap(),
    )
    .unwrap();
    let purges = allocator_purges();
    // Every arena, those that existed before the runtime (this thread's) and those
    // made later: freed pages return after 1 s, with no MADV_FREE stage (pages given
    // back that way stay in the RSS).
    // SAFETY: jemalloc's settings of these types.
    let read = |name: &str| unsafe { raw::read::<isize>(format!("{name}\0").as_bytes()) };
    assert_eq!(read("arenas.dirty_decay_ms"), Ok(JEMALLOC_DECAY_MS));
    assert_eq!(read("arenas.muzzy_decay_ms"), Ok(0));
    // SAFETY: `arenas.narenas` is an `unsigned`.
    let narenas: u32 = unsafe { raw::read(b"arenas.narenas\0") }.unwrap();
    let mut initialized = 0;
    for i in 0..narenas {
        if let Ok(ms) = read(&format!("arena.{i}.dirty_decay_ms")) {
            assert_eq!(ms, JEMALLOC_DECAY_MS, "arena {i}");
            assert_eq!(
                read(&format!("arena.{i}.muzzy_decay_ms")),
                Ok(0),
                "arena {i}"
            );
            initialized += 1;
        }
    }
    assert!(initialized >= 2, "{initialized} arenas in use");

    let rss = || process_rss().expect("/proc/self/status");
    // 256 MiB in 8 KiB allocations, every page written (some may reuse pages another
    // test freed, so the RSS is only known to hold at least these).
    let chunks: Vec<Vec<u8>> = (0..32_768u32).map(|i| vec![i as u8 | 1; 8192]).collect();
    let held = rss();
    assert!(held > 256 << 20, "RSS {held} bytes holding 256 MiB");
    drop(chunks);
    // From here on this test allocates only what jemalloc's thread cache serves, which
    // decays nothing: jemalloc alone kept these pages for as long as it was watched
    // (10 s); the runtime's I/O thread advances the decay every second.
    let freed = Instant::now();
    loop {
        let now = rss();
        if now + (192 << 20) < held {
            eprintln!(
                "RSS {held} -> {now} bytes {:?} after freeing 256 MiB",
                freed.elapsed()
            );
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "RSS still {now} bytes (from {held}) 30 s after freeing 256 MiB"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(allocator_purges(), purges);
    runtime.shutdown().unwrap();
}

#[test]
fn near_the_limit_the_runtime_returns_free_pages_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 << 20;
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .workers(1)
            .memory_limit(limit)
            .state_dir(dir.path())
            .build()
            .unwrap(),
    )
    .unwrap();
    let rss = || process_rss().expect("/proc/self/status");
    let purges = allocator_purges();
    // 128 MiB held: the RSS is over 15/16 of the limit, and the I/O thread purges.
    let chunks: Vec<Vec<u8>> = (0..16_384u32).map(|i| vec![i as u8 | 1; 8192]).collect();
    let held = rss();
    assert!(held > limit / 16 * PURGE_AT_SIXTEENTHS, "RSS {held}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while allocator_purges() == purges {
        assert!(Instant::now() < deadline, "no purge in 30 s at RSS {held}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(chunks);
    let freed = Instant::now();
    loop {
        let now = rss();
        if now + (96 << 20) < held {
            eprintln!(
                "RSS {held} -> {now} bytes {:?} after freeing 128 MiB, {} purges",
                freed.elapsed(),
                allocator_purges() - purges
            );
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "RSS still {now} bytes (from {held}) 30 s after freeing 128 MiB"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    runtime.shutdown().unwrap();
}
