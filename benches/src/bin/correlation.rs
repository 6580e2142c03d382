//! W4 "correlation" (issue 17; data and expected results in
//! `shared/notes/workloads.md`): two streams of `N` records each over `K` keys, inner
//! join within ±5 s, RocksDB state, memory limit 512 MiB, 2 workers.
//!
//! Both streams are preloaded into 4-partition topics of a disk-backed broker (side A
//! record `g`: `h = mix(2g)`, key `h % K`, timestamp `g + mix(h) % 64`; side B with
//! `mix(2g + 1)`); each record's value is its timestamp. Each run starts a fresh runtime
//! and query `A.join_stream(B, ±5 s)` writing (ts A, ts B) pairs; the clock runs from
//! `start_query` until every input record is processed and the query has stopped.
//! Then the output is read back a chunk at a time and checked against the reference:
//! 250,759 pairs and Σ|ts A − ts B| = 626,974,713 at full scale. Prints input
//! records/s and peak RSS.
//!
//! `cargo run --release -p weir-benches --bin correlation -- [per_stream=2500000] [keys=100000] [runs=3]`

use std::time::{Duration, Instant};

use weir::RawRecord;
use weir::prelude::*;
use weir_benches::{arg, fresh_dir, median, peak_rss_bytes, wait_processed};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The SplitMix64 step of the workload's definition.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Record `g` of side `s`: (key, timestamp).
fn record(g: u64, s: u64, keys: u64) -> (u64, i64) {
    let h = mix(2 * g + s);
    (h % keys, (g + mix(h) % 64) as i64)
}

fn preload(broker: &Broker, topic: &str, n: u64, side: u64, keys: u64) -> Result<()> {
    let parts = broker.partitions(topic)?;
    let mut batches: Vec<(Vec<RawRecord>, usize)> = (0..parts).map(|_| (Vec::new(), 0)).collect();
    for g in 0..n {
        let (key, ts) = record(g, side, keys);
        let key = key.to_be_bytes();
        let p = weir::runtime::partition_for_key(&key, parts);
        let (batch, bytes) = &mut batches[p as usize];
        *bytes += 16;
        batch.push(Record::new(
            Some(key.to_vec().into()),
            Some((ts as u64).to_be_bytes().to_vec().into()),
            ts,
        ));
        if *bytes >= 1 << 20 {
            broker.append(topic, p, batch.drain(..))?;
            *bytes = 0;
        }
    }
    for (p, (b, _)) in batches.into_iter().enumerate() {
        broker.append(topic, p as u32, b)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = arg(&mut args, 2_500_000);
    let keys: u64 = arg(&mut args, 100_000);
    let runs: usize = arg(&mut args, 3);
    let memory_limit = 512usize << 20;
    let window = Duration::from_millis(5_000);
    // `W4_COMMIT_MS` sets the commit interval (default 30 s): each commit writes the
    // join's new entries to RocksDB and the changelog.
    let commit_ms: Option<u64> = std::env::var("W4_COMMIT_MS")
        .ok()
        .and_then(|s| s.parse().ok());

    let data_dir = fresh_dir("weir-w4-broker");
    let broker = Broker::with_log_dir(&data_dir)?;
    broker.create_topic("a", 4)?;
    broker.create_topic("b", 4)?;
    preload(&broker, "a", n, 0, keys)?;
    preload(&broker, "b", n, 1, keys)?;
    let preload_rss = peak_rss_bytes().unwrap_or(0);

    let mut rates = Vec::new();
    for run in 0..runs {
        let out_topic = format!("pairs-{run}");
        broker.create_topic(&out_topic, 4)?;
        let state_dir = fresh_dir(&format!("weir-w4-state-{run}"));
        let mut config = RuntimeConfig::builder()
            .workers(2)
            .memory_limit(memory_limit)
            .state_dir(&state_dir)
            .broker(broker.clone());
        if let Some(ms) = commit_ms {
            config = config.commit_interval(Duration::from_millis(ms));
        }
        let runtime = Runtime::new(config.build()?)?;
        let builder = StreamsBuilder::new();
        let a = builder.stream::<u64, u64>("a");
        let b = builder.stream::<u64, u64>("b");
        a.join_stream(
            &b,
            |ta: &u64, tb: &u64| (*ta << 32) | *tb,
            JoinWindows::of_time_difference_with_no_grace(window),
            StreamJoined::defaults(),
        )
        .to(&out_topic);
        let start = Instant::now();
        let query = runtime.start_query(&format!("w4-{run}"), builder.build()?)?;
        wait_processed(&runtime, &query, 2 * n)?;
        query.stop()?;
        let took = start.elapsed();
        let rate = (2 * n) as f64 / took.as_secs_f64();
        let (mut pairs, mut sum) = (0u64, 0u64);
        for p in 0..broker.partitions(&out_topic)? {
            let mut offset = 0;
            loop {
                let chunk = broker.fetch(&out_topic, p, offset, 10_000, 16 << 20)?;
                let Some((last, _)) = chunk.last() else { break };
                offset = last + 1;
                for (_, r) in &chunk {
                    let v = r.value.as_deref().unwrap_or_default();
                    let v = u64::from_be_bytes(v.try_into().unwrap_or([0; 8]));
                    pairs += 1;
                    sum += (v >> 32).abs_diff(v & 0xFFFF_FFFF);
                }
            }
        }
        // The notes' references: full scale, and 10,000 per stream over 100,000 and
        // 1,000 keys.
        let reference = match (n, keys) {
            (2_500_000, 100_000) => Some((250_759, 626_974_713)),
            (10_000, 100_000) => Some((763, 1_694_123)),
            (10_000, 1_000) => Some((74_357, 165_662_631)),
            _ => None,
        };
        let full = reference.is_some();
        let exact = reference.is_none_or(|r| r == (pairs, sum));
        println!(
            "run {run}: {} input records in {:.2} s = {rate:.0} records/s; {pairs} pairs, sum |ts a - ts b| = {sum} ({})",
            2 * n,
            took.as_secs_f64(),
            if !full {
                "no reference at this scale"
            } else if exact {
                "EXACTLY the reference"
            } else {
                "WRONG"
            }
        );
        if !exact {
            return Err(Error::msg(format!(
                "W4: {pairs} pairs, sum {sum}: the reference is {reference:?}"
            )));
        }
        rates.push(rate);
        runtime.shutdown()?;
        drop(runtime);
        let _ = std::fs::remove_dir_all(&state_dir);
        // The run's topics (output, the join stores' changelogs) go, so a later run's
        // peak RSS does not carry this one's offset indexes.
        for t in broker.topics() {
            if t != "a" && t != "b" {
                broker.delete_topic(&t)?;
            }
        }
    }
    println!(
        "W4 correlation: 2 x {n} records, {keys} keys, inner join within 5 s, memory limit {} MiB, 2 workers, commit interval {}: median {:.0} input records/s over {runs} runs; peak RSS {} MiB (after preloading the broker: {} MiB)",
        memory_limit >> 20,
        commit_ms.map_or("30 s (default)".to_string(), |ms| format!("{ms} ms")),
        median(rates),
        peak_rss_bytes().unwrap_or(0) >> 20,
        preload_rss >> 20
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
