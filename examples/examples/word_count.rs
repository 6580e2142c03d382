//! Word count on the embedded in-process broker: no Kafka needed.
//!
//! Lines go into `text-input`. The query splits them into words, groups by word (which
//! repartitions, so every occurrence of a word reaches the same task), counts in a
//! RocksDB store under the runtime's shared cache, and writes `(word, count)` updates
//! to `word-counts`. The record cache compacts updates: each word's count is emitted
//! once per commit (or cache eviction), not once per occurrence.
//!
//! Run: `cargo run --release -p weir-examples --example word_count`
//!
//! The topology is built by a function of its own, so it can be unit-tested without a
//! runtime: the tests at the bottom run it on `weir::testing::TopologyTestDriver`
//! (synchronous, deterministic, no threads), as a template for testing yours. They run
//! with `cargo test --release -p weir-examples --example word_count` (and with the
//! workspace's tests).

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

/// Lines of `text-input` → lower-cased words → a count per word in store `counts` →
/// `(word, count)` updates to `word-counts`.
fn word_count_topology() -> Result<Topology> {
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
    builder.build()
}

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

    let topology = word_count_topology()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::TopologyTestDriver;

    fn driver() -> TopologyTestDriver {
        // The driver keeps its stores in a directory of its own under the state
        // directory and deletes it when dropped.
        TopologyTestDriver::new(
            word_count_topology().unwrap(),
            RuntimeConfig::builder().build().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn counts_every_word_once_per_occurrence() {
        let driver = driver();
        let lines = driver
            .create_input_topic::<(), String>("text-input")
            .unwrap();
        let counts = driver
            .create_output_topic::<String, i64>("word-counts")
            .unwrap();

        lines
            .pipe_input_at((), "the sea the Sea".to_string(), 10)
            .unwrap();
        // Every record is processed (through the repartition topic too) before
        // pipe_input returns; the record cache is off, so each update goes out.
        assert_eq!(
            counts.read_key_values_to_list().unwrap(),
            vec![
                ("the".to_string(), 1),
                ("sea".to_string(), 1),
                ("the".to_string(), 2),
                ("sea".to_string(), 2),
            ]
        );
        lines.pipe_input_at((), "a weir".to_string(), 20).unwrap();
        let latest = counts.read_key_values_to_map().unwrap();
        assert_eq!(latest.get("weir"), Some(&1));
        assert!(counts.is_empty().unwrap());

        // The store can be read too.
        let store = driver.key_value_store::<String, i64>("counts").unwrap();
        assert_eq!(store.get(&"sea".to_string()).unwrap(), Some(2));
        assert_eq!(store.all().unwrap().len(), 4);
    }

    #[test]
    fn output_records_carry_the_input_timestamps() {
        let driver = driver();
        let lines = driver
            .create_input_topic::<(), String>("text-input")
            .unwrap();
        let counts = driver
            .create_output_topic::<String, i64>("word-counts")
            .unwrap();
        lines.pipe_input_at((), "late".to_string(), 500).unwrap();
        lines.pipe_input_at((), "late".to_string(), 100).unwrap();
        let stamps: Vec<i64> = counts
            .read_records_to_list()
            .unwrap()
            .into_iter()
            .map(|r| r.timestamp)
            .collect();
        // A count carries the largest timestamp folded into it, as in Kafka Streams.
        assert_eq!(stamps, vec![500, 500]);
    }
}
