//! What a record-cache entry really costs, next to what the cache charges for it
//! (`key + value + ENTRY_OVERHEAD`): fills one task's cache with `entries` entries of
//! an 8-byte key and a `value_bytes`-byte value and reads jemalloc's allocated bytes
//! before and after. The charge must not be far below the real cost, or the record
//! cache would overrun its share of the memory limit.
//!
//! `cargo run --release -p weir-benches --bin cache_entry_bytes -- [entries] [value_bytes]`

use std::sync::Arc;

use tikv_jemalloc_ctl::{epoch, stats};
use weir::runtime::internals::state::{ENTRY_OVERHEAD, RecordCache};
use weir_benches::arg;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn allocated() -> usize {
    epoch::advance().expect("jemalloc epoch");
    stats::allocated::read().expect("jemalloc stats")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let entries: u64 = arg(&mut args, 500_000);
    let sizes = match arg(&mut args, 0usize) {
        0 => vec![8, 200, 5000],
        v => vec![v],
    };
    for value_bytes in sizes {
        let global = RecordCache::new(usize::MAX / 2);
        let before = allocated();
        let mut cache = global.task_cache(Arc::new(|| {}));
        for k in 0..entries {
            let evicted = cache.put(0, k.to_be_bytes().to_vec(), Some(vec![7; value_bytes]), 0);
            assert!(evicted.is_empty());
        }
        let real = (allocated() - before) as f64 / entries as f64;
        let charged = global.stats().used as f64 / entries as f64;
        println!(
            "{entries} entries, 8-byte keys, {value_bytes}-byte values: real {real:.0} bytes/entry, charged {charged:.0} (ENTRY_OVERHEAD {ENTRY_OVERHEAD}): charge/real = {:.2}",
            charged / real
        );
        drop(cache);
    }
}
