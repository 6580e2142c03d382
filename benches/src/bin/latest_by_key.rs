//! W1 "latest-by-key": ksqlDB's LATEST_BY_OFFSET on weir. `records` records over `keys`
//! distinct keys (uniform, fixed seed), `value_bytes`-byte values, in-process broker,
//! RocksDB state, memory limit 512 MiB, 2 workers. The clock runs from `start_query`
//! until every record is processed and the query has stopped (so the record cache is
//! flushed into RocksDB). Prints records/s and peak RSS.
//!
//! `cargo run --release -p weir-benches --bin latest_by_key -- [records] [keys] [value_bytes] [runs]`

use std::time::Instant;

use weir::prelude::*;
use weir::serde::Bytes;
use weir_benches::{arg, fresh_dir, median, peak_rss_bytes, preload_random, wait_processed};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = arg(&mut args, 5_000_000);
    let keys: u64 = arg(&mut args, 1_000_000);
    let value_bytes: usize = arg(&mut args, 200);
    let runs: usize = arg(&mut args, 3);
    let memory_limit = 512usize << 20;

    let data_dir = fresh_dir("weir-w1-broker");
    let broker = Broker::with_log_dir(&data_dir)?;
    broker.create_topic("events", 4)?;
    // Random printable values, so compression does not flatter the figures.
    preload_random(&broker, "events", records, keys, value_bytes)?;
    let preload_rss = peak_rss_bytes().unwrap_or(0);

    let mut rates = Vec::new();
    for run in 0..runs {
        let state_dir = fresh_dir(&format!("weir-w1-state-{run}"));
        let mut config = RuntimeConfig::builder()
            .workers(2)
            .memory_limit(memory_limit)
            .state_dir(&state_dir)
            .broker(broker.clone());
        // Zone overrides to compare splits of the same limit (defaults otherwise).
        if let Some(mib) = env_mib("W1_RECORD_CACHE_MIB") {
            config = config.record_cache_bytes(mib << 20);
        }
        if let Some(mib) = env_mib("W1_ROCKSDB_CACHE_MIB") {
            config = config
                .rocksdb_cache_bytes(mib << 20)
                .rocksdb_memtable_bytes((mib << 20) / 4);
        }
        let runtime = Runtime::new(config.build()?)?;
        let builder = StreamsBuilder::new();
        builder
            .stream_with(
                &["events"],
                Consumed::<u64, Bytes>::with(U64Serde, BytesSerde),
            )
            .group_by_key_with(Grouped::<u64, Bytes>::with(U64Serde, BytesSerde))
            .latest_by_key_with(Materialized::as_("latest"));
        let start = Instant::now();
        // A query name per run: the same name would be the same consumer group, and
        // would resume from the previous run's committed offsets (at the end).
        let query = runtime.start_query(&format!("w1-{run}"), builder.build()?)?;
        wait_processed(&runtime, &query, records)?;
        query.stop()?;
        let took = start.elapsed();
        let state = runtime.state_usage();
        let cache = runtime.record_cache_stats();
        let rate = records as f64 / took.as_secs_f64();
        println!(
            "run {run}: {records} records in {:.2} s = {:.0} records/s; record cache {} hits / {} misses / {} evictions; rocksdb cache {} MiB of {} MiB, table readers {} KiB",
            took.as_secs_f64(),
            rate,
            cache.hits,
            cache.misses,
            cache.evictions,
            state.cache_usage >> 20,
            state.cache_capacity >> 20,
            state.table_readers >> 10
        );
        rates.push(rate);
        runtime.shutdown()?;
        drop(runtime);
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    println!(
        "W1 latest-by-key: {records} records, {keys} keys, {value_bytes}-byte values, memory limit {} MiB, 2 workers: median {:.0} records/s over {runs} runs; peak RSS {} MiB (after preloading the broker: {} MiB)",
        memory_limit >> 20,
        median(rates),
        peak_rss_bytes().unwrap_or(0) >> 20,
        preload_rss >> 20
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

fn env_mib(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
