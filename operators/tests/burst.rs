//! A 10× burst of input against a slow query: the process stays under its memory limit
//! (RSS sampled every 2 ms) and loses nothing. Its own test binary, so the process
//! measured runs nothing else.
//!
//! The input goes to the in-process broker with a log directory (sealed segments live
//! in files, as Kafka's do on the broker's side); the query reads it through the
//! bounded partition queues, so what waits for the slow query stays in the log, not in
//! the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weir::prelude::*;

const LIMIT: usize = 96 << 20;
const KEYS: usize = 1_000;
const STEADY: usize = 20_000;
const BURST: usize = 10 * STEADY;

/// A pass-through that costs about 10 µs per record.
fn slow(v: String) -> String {
    let until = Instant::now() + Duration::from_micros(10);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    v
}

#[test]
fn a_ten_times_burst_stays_under_the_memory_limit_and_loses_nothing() {
    let logs = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let broker = Broker::with_log_dir(logs.path()).unwrap();
    broker.create_topic("in", 4).unwrap();
    broker.create_topic("out", 4).unwrap();
    broker.create_topic("counts", 4).unwrap();
    let rt = Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .memory_limit(LIMIT)
            .state_dir(state.path())
            .commit_interval(Duration::from_millis(200))
            .broker(broker.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    let b = StreamsBuilder::new();
    let slowed = b.stream::<String, String>("in").map_values(slow);
    slowed.to("out");
    slowed
        .group_by_key()
        .count_with(Materialized::as_("counts"))
        .to_stream()
        .to("counts");
    let q = rt.start_query("burst", b.build().unwrap()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = weir::runtime::process_rss() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let value = "v".repeat(1_000);
    let send = |from: usize, n: usize| {
        for i in from..from + n {
            broker
                .send("in", &format!("k{}", i % KEYS), &value)
                .unwrap();
        }
    };
    // Steady input the query keeps up with, then ten times as much at once.
    let started = Instant::now();
    for chunk in 0..20 {
        send(chunk * STEADY / 20, STEADY / 20);
        std::thread::sleep(Duration::from_millis(25));
    }
    let steady_peak = peak.load(Ordering::Relaxed);
    send(STEADY, BURST);
    let produced_in = started.elapsed();
    let total = STEADY + BURST;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = (0..4).map(|p| broker.end_offset("out", p).unwrap()).sum();
        if done as usize >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {total} records out"
        );
        assert_eq!(q.state(), QueryState::Running);
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained_in = started.elapsed();
    q.stop().unwrap();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "burst: {total} records of 1 KB ({STEADY} steady, then {BURST} at once, produced in {produced_in:?}), \
         drained in {drained_in:?}; peak RSS {} MiB steady, {} MiB overall, limit {} MiB",
        steady_peak >> 20,
        peak >> 20,
        LIMIT >> 20
    );
    assert!(peak > 0, "RSS was measured");
    assert!(
        peak <= LIMIT,
        "peak RSS {} MiB over the {} MiB limit",
        peak >> 20,
        LIMIT >> 20
    );

    // Nothing lost: every record is in the output once, and every key's last count
    // is its share of the input.
    let out = broker.read_all::<String, String>("out").unwrap();
    assert_eq!(out.len(), total);
    let mut last = std::collections::BTreeMap::new();
    for r in broker.read_all::<String, i64>("counts").unwrap() {
        last.insert(r.record.key, r.record.value);
    }
    assert_eq!(last.len(), KEYS);
    for (k, c) in last {
        assert_eq!(c, (total / KEYS) as i64, "{k}");
    }
}
