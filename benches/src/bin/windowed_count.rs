//! W2 "windowed count": `events` events over `keys` keys (uniform, fixed seed) with
//! timestamps rising 1 ms per event and up to 20 ms of disorder (plus one event in
//! 100,000 sent 15 s late, which must be dropped), tumbling 10 s windows with 1 s
//! grace, count per key, final results only (`until_window_closes`), RocksDB window
//! store, memory limit 512 MiB, 2 workers, 4 partitions. The clock runs from
//! `start_query` until every event is processed and the query has stopped (its last
//! commit emits the last final results). Then every final result is checked against a
//! reference computed while generating the events (per partition, in offset order, as
//! the tasks see them): the number of results, the number of late drops, and an
//! order-independent 128-bit hash of all (key, window, count) triples.
//!
//! `cargo run --release -p weir-benches --bin windowed_count -- [events] [keys] [runs]`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weir::prelude::*;
use weir::runtime::RawRecord;
use weir_benches::{arg, fresh_dir, median, peak_rss_bytes, wait_processed, xorshift};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTITIONS: u32 = 4;
const SIZE: i64 = 10_000;
const GRACE: i64 = 1_000;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Order-independent digest of a set of final results.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    results: u64,
    sum: u64,
    xor: u64,
}

impl Digest {
    fn add(&mut self, key: u64, start: i64, count: i64) {
        let h = mix(key ^ mix(start as u64 ^ mix(count as u64)));
        self.results += 1;
        self.sum = self.sum.wrapping_add(h);
        self.xor ^= mix(h);
    }
}

/// One partition's windowed count as its task computes it.
#[derive(Default)]
struct Reference {
    observed: i64,
    open: HashMap<(u64, i64), i64>,
    late: u64,
    digest: Digest,
}

impl Reference {
    fn add(&mut self, key: u64, ts: i64) {
        self.observed = self.observed.max(ts);
        let start = ts / SIZE * SIZE;
        if start + SIZE <= self.observed - GRACE {
            self.late += 1;
            return;
        }
        *self.open.entry((key, start)).or_default() += 1;
    }

    /// Closes every window (the end of the input: the bench's last event per partition
    /// is far in the future).
    fn finish(&mut self) {
        for ((key, start), n) in self.open.drain() {
            self.digest.add(key, start, n);
        }
    }

    /// Moves closed windows into the digest (keeps the open set small).
    fn close(&mut self) {
        let observed = self.observed;
        let digest = &mut self.digest;
        self.open.retain(|(key, start), n| {
            if start + SIZE <= observed - GRACE {
                digest.add(*key, *start, *n);
                false
            } else {
                true
            }
        });
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let events: u64 = arg(&mut args, 10_000_000);
    let keys: u64 = arg(&mut args, 10_000);
    let runs: usize = arg(&mut args, 3);
    let memory_limit = 512usize << 20;

    let data_dir = fresh_dir("weir-w2-broker");
    let broker = Broker::with_log_dir(&data_dir)?;
    broker.create_topic("events", PARTITIONS)?;
    let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
    let mut refs: Vec<Reference> = (0..PARTITIONS).map(|_| Reference::default()).collect();
    let mut batches: Vec<Vec<RawRecord>> = (0..PARTITIONS).map(|_| Vec::new()).collect();
    let mut push = |broker: &Broker, refs: &mut [Reference], key: u64, ts: i64| -> Result<()> {
        let kb = key.to_be_bytes();
        let p = weir::runtime::partition_for_key(&kb, PARTITIONS) as usize;
        refs[p].add(key, ts);
        batches[p].push(Record::new(
            Some(kb.to_vec().into()),
            Some(1i64.to_be_bytes().to_vec().into()),
            ts,
        ));
        if batches[p].len() == 32 * 1024 {
            broker.append("events", p as u32, batches[p].drain(..))?;
            refs[p].close();
        }
        Ok(())
    };
    for i in 0..events {
        let key = next() % keys;
        let r = next();
        let late = r.is_multiple_of(100_000);
        let ts = (i as i64 - (r % 21) as i64 - if late { 15_000 } else { 0 }).max(0);
        push(&broker, &mut refs, key, ts)?;
    }
    // One event per partition far in the future closes every window; its own key is
    // outside the key range and its window stays open.
    let far = events as i64 + 100 * SIZE;
    let mut flushed = vec![false; PARTITIONS as usize];
    let mut k = keys;
    while flushed.iter().any(|f| !f) {
        let p = weir::runtime::partition_for_key(&k.to_be_bytes(), PARTITIONS);
        if !flushed[p as usize] {
            flushed[p as usize] = true;
            push(&broker, &mut refs, k, far)?;
        }
        k += 1;
    }
    for (p, b) in batches.into_iter().enumerate() {
        broker.append("events", p as u32, b)?;
    }
    let mut expected = Digest::default();
    let mut late = 0;
    for r in &mut refs {
        // The flush events' windows stay open: leave them out.
        r.open.retain(|(key, _), _| *key < keys);
        r.finish();
        expected.results += r.digest.results;
        expected.sum = expected.sum.wrapping_add(r.digest.sum);
        expected.xor ^= r.digest.xor;
        late += r.late;
    }
    drop(refs);
    let total = events + PARTITIONS as u64;
    let preload_rss = peak_rss_bytes().unwrap_or(0);
    println!(
        "reference: {} final results, {late} late events; peak RSS after preloading {} MiB",
        expected.results,
        preload_rss >> 20
    );

    let mut rates = Vec::new();
    for run in 0..runs {
        let out = format!("finals-{run}");
        broker.create_topic(&out, PARTITIONS)?;
        let state_dir = fresh_dir(&format!("weir-w2-state-{run}"));
        let runtime = Runtime::new(
            RuntimeConfig::builder()
                .workers(2)
                .memory_limit(memory_limit)
                .state_dir(&state_dir)
                .broker(broker.clone())
                .build()?,
        )?;
        let builder = StreamsBuilder::new();
        builder
            .stream::<u64, i64>("events")
            .group_by_key()
            .windowed_by(
                TimeWindows::of_size_and_grace(
                    Duration::from_millis(SIZE as u64),
                    Duration::from_millis(GRACE as u64),
                )
                .unwrap(),
            )
            .count()
            .suppress(Suppressed::until_window_closes(
                BufferConfig::unbounded().shut_down_when_full(),
            ))
            .to_stream()
            .to(&out);
        let start = Instant::now();
        let query = runtime.start_query(&format!("w2-{run}"), builder.build()?)?;
        wait_processed(&runtime, &query, total)?;
        query.stop()?;
        let took = start.elapsed();
        let rate = events as f64 / took.as_secs_f64();
        let rss = peak_rss_bytes().unwrap_or(0);
        let dropped = query.stats().records_dropped_late;

        // Check every final result.
        let mut got = Digest::default();
        let key_serde = <Windowed<u64> as DefaultSerde>::default_serde();
        for p in 0..PARTITIONS {
            let mut offset = 0;
            loop {
                let batch = broker.fetch(&out, p, offset, 64 * 1024, usize::MAX)?;
                let Some((last_offset, _)) = batch.last() else {
                    break;
                };
                offset = last_offset + 1;
                for (_, r) in batch {
                    let w = key_serde.deserialize(r.key.as_deref())?;
                    let n = I64Serde.deserialize(r.value.as_deref())?;
                    got.add(w.key, w.window.start, n);
                }
            }
        }
        let exact = got == expected && dropped == late;
        println!(
            "run {run}: {total} events in {:.2} s = {rate:.0} events/s; {} final results, {dropped} late drops: {}; peak RSS so far {} MiB; suppression budget {:?}",
            took.as_secs_f64(),
            got.results,
            if exact {
                "EXACTLY the reference"
            } else {
                "DIFFERENT from the reference"
            },
            rss >> 20,
            runtime.suppression_bytes(),
        );
        if !exact {
            return Err(Error::msg(format!(
                "run {run}: results {got:?} and {dropped} late drops, reference {expected:?} and {late}"
            )));
        }
        rates.push(rate);
        runtime.shutdown()?;
        drop(runtime);
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    println!(
        "W2 windowed count: {events} events, {keys} keys, tumbling 10 s + 1 s grace, final results only, memory limit {} MiB, 2 workers: median {:.0} events/s over {runs} runs; peak RSS {} MiB (after preloading the broker: {} MiB); results exact in every run",
        memory_limit >> 20,
        median(rates),
        peak_rss_bytes().unwrap_or(0) >> 20,
        preload_rss >> 20
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
