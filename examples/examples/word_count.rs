//! Word count on the embedded in-process broker: no Kafka needed.
//!
//! Lines go into `text-input`. The query splits them into words, groups by word (which
//! repartitions, so every occurrence of a word reaches the same task), counts in a
//! RocksDB store under the runtime's shared cache, and writes `(word, count)` updates
//! to `word-counts`. The record cache compacts updates: each word's count is emitted
//! once per commit (or cache eviction), not once per occurrence.
//!
//! Run: `cargo run --release -p weir-examples --example word_count`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir::prelude::*;

// The process on jemalloc, RocksDB included (weir's `jemalloc` feature).
weir::use_jemalloc!();

const LINES: &[&str] = &[
    "all streams flow to the sea",
    "yet the sea is not full",
    "a weir holds the stream back and lets it pass",
    "one pool of workers for every stream",
    "one memory limit for the whole process",
];

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let state_dir = std::env::temp_dir().join("weir-word-count");
    let _ = std::fs::remove_dir_all(&state_dir); // a fresh run counts from zero
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("word-count")
            .memory_limit(256 << 20)
            .commit_interval(Duration::from_millis(200))
            .state_dir(&state_dir)
            .build()?,
    )?;
    let broker = runtime.broker().clone();
    broker.create_topic("text-input", 2)?;
    broker.create_topic("word-counts", 2)?;

    let builder = StreamsBuilder::new();
    builder
        .stream::<(), String>("text-input")
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word: &String| word.clone())
        .count_with(Materialized::as_("counts"))
        .to("word-counts");
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let query = runtime.start_query("counts", topology)?;
    let mut expected = BTreeMap::new();
    for line in LINES {
        broker.send("text-input", &(), &line.to_string())?;
        for w in line.split_whitespace() {
            *expected.entry(w.to_lowercase()).or_insert(0i64) += 1;
        }
    }

    // Read the latest count of each word until every word has its final count.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latest = BTreeMap::new();
    while latest != expected {
        if Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for word counts"));
        }
        std::thread::sleep(Duration::from_millis(20));
        latest = broker
            .read_all::<String, i64>("word-counts")?
            .into_iter()
            .map(|r| (r.record.key, r.record.value))
            .collect();
    }
    let tasks = query.stats().tasks; // before the stop closes them
    query.stop()?;

    println!("{} distinct words:", latest.len());
    for (word, count) in &latest {
        println!("{count:>4}  {word}");
    }
    let stats = query.stats();
    let state = runtime.state_usage();
    let cache = runtime.record_cache_stats();
    println!(
        "\nquery '{}' processed {} records in {} tasks on {} threads",
        query.name(),
        stats.records_processed,
        tasks,
        runtime.thread_count()
    );
    println!(
        "record cache: {} hits, {} misses; RocksDB shared cache {} of {} bytes",
        cache.hits, cache.misses, state.cache_usage, state.cache_capacity
    );
    // Every zone of memory next to its bound, and the process as a whole.
    println!("\n{}", runtime.memory_report());
    runtime.shutdown()
}
