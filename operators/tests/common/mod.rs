//! Helpers shared by the integration tests.
#![allow(dead_code)]
// Shared by the test binaries, each of which uses some of it.
#![allow(unreachable_pub)]

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod real_broker;

use std::time::{Duration, Instant};

use weir::prelude::*;

/// A runtime on a fresh broker with test-friendly intervals.
pub fn runtime(workers: usize) -> Runtime {
    runtime_on(workers, Broker::new())
}

/// A runtime on a fresh broker keeping its state in `dir` (tests with stores: the
/// default state directory outlives the test run).
pub fn runtime_in(workers: usize, dir: &std::path::Path) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(workers)
            .commit_interval(Duration::from_millis(100))
            .state_dir(dir)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// A runtime on the given broker (to model a restart against the same cluster).
pub fn runtime_on(workers: usize, broker: Broker) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(workers)
            .commit_interval(Duration::from_millis(100))
            .broker(broker)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// Polls `cond` until it holds; panics with `what` after 20 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `topic` holds `n` records and returns them (key, value).
pub fn read_n<K: DefaultSerde, V: DefaultSerde>(
    broker: &Broker,
    topic: &str,
    n: usize,
) -> Vec<(K, V)> {
    wait_until(&format!("{n} records in '{topic}'"), || {
        broker.read_all::<K, V>(topic).unwrap().len() >= n
    });
    broker
        .read_all::<K, V>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.record.key, r.record.value))
        .collect()
}

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
