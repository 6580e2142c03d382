//! Record cache reads: a task's cache holding a table read at random, as the
//! stream-table join of W3 reads it (8-byte keys, 200-byte rows).
//!
//! `cargo bench -p weir-benches --bench record_cache`

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::runtime::internals::state::{Lookup, RecordCache};

/// A random walk over `0..n` (SplitMix64), the same in every run.
fn keys(n: u64, count: usize) -> Vec<[u8; 8]> {
    let mut z = 7u64;
    (0..count)
        .map(|_| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((x ^ (x >> 31)) % n).to_be_bytes()
        })
        .collect()
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_cache");
    let row = vec![7u8; 200];
    // 1,000 rows fit in the CPU's caches; 250,000 (a W3 task's share) do not.
    for rows in [1_000u64, 250_000] {
        let cache = RecordCache::new(1 << 30);
        let mut task = cache.task_cache(Arc::new(|| {}));
        for k in 0..rows {
            task.insert_clean(0, &k.to_be_bytes(), Some(&row));
        }
        let probes = keys(rows, 1 << 16);
        let mut i = 0;
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("get-hit/{rows} rows of 200 bytes"), |b| {
            b.iter(|| {
                i = (i + 1) & (probes.len() - 1);
                match task.get(0, &probes[i]) {
                    Lookup::Hit(Some(v)) => v[0],
                    other => panic!("row {i} not cached: {other:?}"),
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
