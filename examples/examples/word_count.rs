//! Word count on the embedded in-process broker: no Kafka needed.
//!
//! Lines go into `text-input`; the query splits them into words, re-keys each word by
//! itself, repartitions so that every occurrence of a word reaches the same task, counts
//! per word, and writes `(word, count)` updates to `word-counts`.
//!
//! The count is a hand-written [`Processor`] keeping a `HashMap` per task: it shows the
//! Processor API under the DSL. Its state lives only in memory (it is not restored after
//! a restart), so use it as a template for stateless-on-restart logic, not for durable
//! aggregates.
//!
//! Run: `cargo run --release -p weir-examples --example word_count`

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use weir::prelude::*;

/// Counts occurrences of each key seen by this task and forwards the running count.
#[derive(Default)]
struct CountPerWord {
    counts: HashMap<String, i64>,
}

impl Processor<String, String, String, i64> for CountPerWord {
    fn process(
        &mut self,
        record: Record<String, String>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        let count = self.counts.entry(record.key.clone()).or_insert(0);
        *count += 1;
        let count = *count;
        ctx.forward(record.with_value(count))
    }
}

const LINES: &[&str] = &[
    "all streams flow to the sea",
    "yet the sea is not full",
    "a weir holds the stream back and lets it pass",
    "one pool of workers for every stream",
    "one memory limit for the whole process",
];

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("word-count")
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
        .select_key(|_, word: &String| word.clone())
        .repartition()
        .process(CountPerWord::default)
        .to("word-counts");
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let query = runtime.start_query("counts", topology)?;
    let mut words = 0;
    for line in LINES {
        broker.send("text-input", &(), &line.to_string())?;
        words += line.split_whitespace().count();
    }

    // Every word occurrence produces one count update; wait for all of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.read_all::<String, i64>("word-counts")?.len() < words {
        if Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for word counts"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    query.stop()?;

    // The topic holds every update; the last one per word is its count.
    let mut latest = BTreeMap::new();
    for r in broker.read_all::<String, i64>("word-counts")? {
        latest.insert(r.record.key, r.record.value);
    }
    println!("{} words, {} distinct:", words, latest.len());
    for (word, count) in &latest {
        println!("{count:>4}  {word}");
    }
    let stats = query.stats();
    println!(
        "\nquery '{}' processed {} records in {} tasks on {} threads",
        query.name(),
        stats.records_processed,
        stats.tasks,
        runtime.thread_count()
    );
    runtime.shutdown()
}
