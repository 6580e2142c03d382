//! Task idling (Kafka Streams' `max.task.idle.ms`): a task that reads several
//! partitions waits for an empty one whose records are on their way, so a stream-table
//! join started over two full topics sees each row before the orders after it; with an
//! idle time it also waits for records not produced yet; disabled, it never waits.

use std::time::{Duration, Instant};

use weir::prelude::*;

fn runtime(dir: &std::path::Path, broker: &Broker, idle: Option<Duration>) -> Runtime {
    let mut cfg = RuntimeConfig::builder()
        .workers(2)
        .state_dir(dir)
        .broker(broker.clone())
        // Small queues: the table topic arrives ten records at a time, so the task
        // finds it empty again and again while its records are still upstream.
        .queue_max_records_per_partition(10);
    cfg = match idle {
        Some(d) => cfg.max_task_idle(d),
        None => cfg.disable_task_idling(),
    };
    Runtime::new(cfg.build().unwrap()).unwrap()
}

fn enrich(customers: &str, orders: &str, out: &str) -> Topology {
    let builder = StreamsBuilder::new();
    let table = builder.table::<String, String>(customers);
    builder
        .stream::<String, i64>(orders)
        .left_join(&table, |amount: &i64, name: Option<&String>| {
            format!("{}:{amount}", name.map_or("?", String::as_str))
        })
        .to(out);
    builder.build().unwrap()
}

fn wait_for(b: &Broker, topic: &str, n: usize) -> Vec<(String, String)> {
    let start = Instant::now();
    loop {
        let got = b.read_all::<String, String>(topic).unwrap();
        if got.len() >= n {
            return got
                .into_iter()
                .map(|r| (r.record.key, r.record.value))
                .collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{topic}: {} of {n} records after 60 s",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Both topics are full before the query starts; every row's timestamp is before every
/// order's. With the default idle time (zero) the task waits for the rows it knows are
/// upstream, so every order finds its customer, whatever order the fetcher fills in.
#[test]
fn a_join_started_over_two_full_topics_reads_both_in_timestamp_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    for t in ["customers", "orders", "enriched"] {
        b.create_topic(t, 2).unwrap();
    }
    const N: i64 = 2000;
    // Orders for the last customers first: each fetch of orders needs rows the
    // fetcher has not reached yet.
    for (t, i) in (0..N).rev().enumerate() {
        b.send_at("orders", &format!("c{i}"), &i, N + t as i64)
            .unwrap();
    }
    for i in 0..N {
        b.send_at("customers", &format!("c{i}"), &format!("name{i}"), i)
            .unwrap();
    }
    let rt = runtime(dir.path(), &b, Some(Duration::ZERO));
    let q = rt
        .start_query("enrich", enrich("customers", "orders", "enriched"))
        .unwrap();
    let out = wait_for(&b, "enriched", N as usize);
    q.stop().unwrap();
    assert_eq!(out.len(), N as usize);
    for (key, value) in out {
        let i = &key[1..];
        assert_eq!(value, format!("name{i}:{i}"), "order of {key}");
    }
}

/// An order whose customer row is produced 200 ms later, with an earlier timestamp:
/// with zero idle time the order is processed at once, unmatched (nothing was known
/// upstream: Kafka Streams' default); with a 2 s idle time the task waits, reads the
/// row first (the lower timestamp), and the order finds it.
#[test]
fn an_idle_time_waits_for_records_not_produced_yet() {
    for (idle, expected) in [(Duration::ZERO, "?:7"), (Duration::from_secs(2), "ann:7")] {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::new();
        for t in ["customers", "orders", "enriched"] {
            b.create_topic(t, 1).unwrap();
        }
        let rt = runtime(dir.path(), &b, Some(idle));
        let q = rt
            .start_query("enrich", enrich("customers", "orders", "enriched"))
            .unwrap();
        // The order alone first; the row comes later but is older.
        b.send_at("orders", &"c1".to_string(), &7i64, 10).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        b.send_at("customers", &"c1".to_string(), &"ann".to_string(), 5)
            .unwrap();
        let out = wait_for(&b, "enriched", 1);
        // The row is processed too (a later order would find it).
        b.send_at("orders", &"c1".to_string(), &8i64, 20).unwrap();
        let out2 = wait_for(&b, "enriched", 2);
        q.stop().unwrap();
        assert_eq!(out[0].1, expected, "idle time {idle:?}");
        assert_eq!(out2[1].1, "ann:8", "idle time {idle:?}");
    }
}

/// Disabled (Kafka's `max.task.idle.ms = -1`), a task never waits: an order alone is
/// processed unmatched at once. (Over two full topics, as in the first test, orders then
/// miss rows still upstream: with idling disabled that test fails.)
#[test]
fn disabled_idling_never_waits() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    for t in ["customers", "orders", "enriched"] {
        b.create_topic(t, 1).unwrap();
    }
    let rt = runtime(dir.path(), &b, None);
    assert_eq!(rt.config().max_task_idle(), None);
    let q = rt
        .start_query("enrich", enrich("customers", "orders", "enriched"))
        .unwrap();
    b.send_at("orders", &"c1".to_string(), &7i64, 10).unwrap();
    let out = wait_for(&b, "enriched", 1);
    q.stop().unwrap();
    assert_eq!(out[0].1, "?:7");
}
