//! Stateless throughput, end to end on the in-process broker: a filter → map_values
//! pipeline over preloaded records, with 2 workers. Prints records/s per run and the
//! median.
//!
//! `cargo run --release -p weir-benches --bin stateless -- [records] [runs]`

use std::time::Instant;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use weir::prelude::*;
use weir_benches::{arg, median, peak_rss_bytes, preload_u64_i64, wait_for_len};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = arg(&mut args, 10_000_000);
    let runs: usize = arg(&mut args, 5);
    let workers = 2;

    let broker = Broker::new();
    broker.create_topic("events", 4)?;
    preload_u64_i64(&broker, "events", records, 100_000)?;
    // filter keeps values not divisible by 10: 90% of the input reaches the output.
    let expected = (0..records).filter(|i| i % 10 != 0).count() as i64;

    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .workers(workers)
            .broker(broker.clone())
            .build()?,
    )?;
    let mut rates = Vec::new();
    for run in 0..runs {
        let out = format!("out-{run}");
        broker.create_topic(&out, 4)?;
        let builder = StreamsBuilder::new();
        builder
            .stream::<u64, i64>("events")
            .filter(|_, v| v % 10 != 0)
            .map_values(|v| v * 2)
            .to(&out);
        let start = Instant::now();
        let query = runtime.start_query(&format!("run-{run}"), builder.build()?)?;
        let took = wait_for_len(&broker, &out, expected, start)?;
        query.stop()?;
        let rate = records as f64 / took.as_secs_f64();
        println!(
            "run {run}: {records} records in {:.3} s = {:.2} M records/s",
            took.as_secs_f64(),
            rate / 1e6
        );
        rates.push(rate);
    }
    println!(
        "stateless filter->map_values, {workers} workers, {records} records: median {:.2} M records/s over {runs} runs; peak RSS {} MiB",
        median(rates) / 1e6,
        peak_rss_bytes().unwrap_or(0) >> 20
    );
    runtime.shutdown()
}
