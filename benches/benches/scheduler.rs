//! Scheduler overhead: a no-op pipeline (source -> foreach that does nothing) over a
//! preloaded topic, so the time is the runtime's own: fetch, queue, task scheduling,
//! deserialization and dispatch. The second case yields after every record
//! (`max_batch_records = 1`), which isolates the cost of one scheduling round trip.
//!
//! `cargo bench -p weir-benches --bench scheduler`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::prelude::*;
use weir_benches::preload_u64_i64;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn run_noop(runtime: &Runtime, name: &str, records: u64) -> Duration {
    let builder = StreamsBuilder::new();
    builder.stream::<u64, i64>("events").foreach(|_, _| {});
    let start = Instant::now();
    let q = runtime.start_query(name, builder.build().unwrap()).unwrap();
    while q.stats().records_processed < records {
        std::thread::sleep(Duration::from_micros(100));
    }
    let took = start.elapsed();
    q.stop().unwrap();
    took
}

fn bench(c: &mut Criterion, group: &str, records: u64, batch: usize) {
    let broker = Broker::new();
    broker.create_topic("events", 4).unwrap();
    preload_u64_i64(&broker, "events", records, 10_000).unwrap();
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .max_batch_records(batch)
            .broker(broker)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(records));
    g.sample_size(10);
    let mut run = 0u64;
    g.bench_function(group, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                total += run_noop(&runtime, &format!("q{run}"), records);
            }
            total
        })
    });
    g.finish();
}

fn noop_pipeline(c: &mut Criterion) {
    bench(c, "no-op pipeline, 2 workers, 1M records", 1_000_000, 1000);
}

fn yield_every_record(c: &mut Criterion) {
    bench(
        c,
        "no-op pipeline, yield after every record, 100k records",
        100_000,
        1,
    );
}

criterion_group!(benches, noop_pipeline, yield_every_record);
criterion_main!(benches);
