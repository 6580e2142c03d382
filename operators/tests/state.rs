//! Stateful DSL on the in-process broker: aggregations, tables, the record cache and
//! restarts from the state directory.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{read_n, sorted, wait_until};
use weir::prelude::*;

fn runtime_in(dir: &std::path::Path, broker: &Broker, commit: Duration) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .commit_interval(commit)
            .state_dir(dir)
            .broker(broker.clone())
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// The last value of each key in `topic` (`None` = tombstone).
fn latest<V: DefaultSerde>(b: &Broker, topic: &str) -> BTreeMap<String, Option<V>> {
    b.read_all::<String, Option<V>>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.record.key, r.record.value))
        .collect()
}

fn wait_for_latest<V: DefaultSerde + PartialEq + std::fmt::Debug>(
    b: &Broker,
    topic: &str,
    want: &BTreeMap<String, Option<V>>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = latest::<V>(b, topic);
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: got {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn word_count(input: &str, output: &str) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<(), String>(input)
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone())
        .count_with(Materialized::as_("counts"))
        .to(output);
    builder.build().unwrap()
}

#[test]
fn word_count_with_group_by_count_on_rocksdb_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    b.create_topic("lines", 2).unwrap();
    b.create_topic("counts", 2).unwrap();
    let lines = ["a b c", "a b", "a"];
    {
        let rt = runtime_in(dir.path(), &b, Duration::from_millis(100));
        let q = rt.start_query("wc", word_count("lines", "counts")).unwrap();
        for l in lines {
            b.send("lines", &(), &l.to_string()).unwrap();
        }
        let want: BTreeMap<_, _> = [("a", 3), ("b", 2), ("c", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Some(v)))
            .collect();
        wait_for_latest::<i64>(&b, "counts", &want);
        q.stop().unwrap();
        let usage = rt.state_usage();
        assert!(
            usage.open_stores == 0,
            "stores close with their query: {usage:?}"
        );
    }
    // Same state directory, same broker: counts continue where they were.
    let rt = runtime_in(dir.path(), &b, Duration::from_millis(100));
    let q = rt.start_query("wc", word_count("lines", "counts")).unwrap();
    b.send("lines", &(), &"a c d".to_string()).unwrap();
    let want: BTreeMap<_, _> = [("a", 4), ("b", 2), ("c", 2), ("d", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Some(v)))
        .collect();
    wait_for_latest::<i64>(&b, "counts", &want);
    q.stop().unwrap();
}

#[test]
fn clean_up_deletes_a_stopped_querys_stores_and_refuses_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    b.create_topic("lines", 1).unwrap();
    b.create_topic("counts", 1).unwrap();
    let rt = runtime_in(dir.path(), &b, Duration::from_millis(100));
    let q = rt.start_query("wc", word_count("lines", "counts")).unwrap();
    b.send("lines", &(), &"a a b".to_string()).unwrap();
    let want: BTreeMap<_, _> = [("a", Some(2)), ("b", Some(1))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    wait_for_latest::<i64>(&b, "counts", &want);
    assert!(matches!(
        rt.clean_up_query("wc"),
        Err(Error::QueryRunning(name)) if name == "wc"
    ));
    q.stop().unwrap();
    let state = dir.path().join("wc");
    assert!(state.is_dir(), "the stopped query's stores stay on disk");
    rt.clean_up_query("wc").unwrap();
    assert!(!state.exists(), "clean-up deletes them");
    // Nothing to delete, and names that are not query names, are handled.
    rt.clean_up_query("never-started").unwrap();
    assert!(matches!(rt.clean_up_query(".."), Err(Error::Config(_))));
    assert!(matches!(rt.clean_up_query("a/b"), Err(Error::Config(_))));
    // Started again, the query resumes after its committed offsets with empty stores.
    let q = rt.start_query("wc", word_count("lines", "counts")).unwrap();
    b.send("lines", &(), &"a".to_string()).unwrap();
    let want: BTreeMap<_, _> = [("a", Some(1)), ("b", Some(1))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    wait_for_latest::<i64>(&b, "counts", &want);
    q.stop().unwrap();
}

#[test]
fn reduce_aggregate_and_latest_by_key_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    for t in ["in", "sum", "max", "latest"] {
        b.create_topic(t, 3).unwrap();
    }
    let builder = StreamsBuilder::new();
    let grouped = builder.stream::<String, i64>("in").group_by_key();
    grouped
        .reduce_with(|a, v| a + v, Materialized::as_("sum").in_memory())
        .to("sum");
    grouped
        .aggregate(|| i64::MIN, |_, v, m: i64| m.max(v))
        .to("max");
    grouped.latest_by_key().to("latest");
    let rt = runtime_in(dir.path(), &b, Duration::from_millis(50));
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    let mut want_sum = BTreeMap::new();
    let mut want_max = BTreeMap::new();
    let mut want_latest = BTreeMap::new();
    for i in 0..300i64 {
        let k = format!("k{}", i % 7);
        let v = (i * 37) % 101;
        b.send("in", &k, &v).unwrap();
        *want_sum
            .entry(k.clone())
            .or_insert(Some(0))
            .as_mut()
            .unwrap() += v;
        let m = want_max.entry(k.clone()).or_insert(Some(i64::MIN));
        *m = Some(m.unwrap().max(v));
        want_latest.insert(k, Some(v));
    }
    wait_for_latest::<i64>(&b, "sum", &want_sum);
    wait_for_latest::<i64>(&b, "max", &want_max);
    wait_for_latest::<i64>(&b, "latest", &want_latest);
    let (used, cap) = rt.in_memory_store_bytes();
    assert!(
        used > 0 && used <= cap,
        "the in-memory store is charged: {used} of {cap}"
    );
    q.stop().unwrap();
    assert_eq!(
        rt.in_memory_store_bytes().0,
        0,
        "closing the store gave its bytes back"
    );
}

#[test]
fn a_table_from_a_topic_with_deletes_and_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    for t in ["users", "adults", "all"] {
        b.create_topic(t, 1).unwrap();
    }
    let builder = StreamsBuilder::new();
    let users = builder.table::<String, i64>("users");
    users.to("all");
    users.filter(|_, age| *age >= 18).to("adults");
    let rt = runtime_in(dir.path(), &b, Duration::from_millis(50));
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    let s = |x: &str| x.to_string();
    b.send("users", &s("ann"), &Some(30i64)).unwrap();
    b.send("users", &s("bob"), &Some(12i64)).unwrap();
    b.send("users", &s("cid"), &Some(40i64)).unwrap();
    wait_for_latest::<i64>(
        &b,
        "adults",
        &[(s("ann"), Some(30)), (s("cid"), Some(40))].into(),
    );
    // bob turns 18, ann is deleted, cid becomes a minor (filtered out: deleted downstream).
    b.send("users", &s("bob"), &Some(18i64)).unwrap();
    b.send("users", &s("ann"), &None::<i64>).unwrap();
    b.send("users", &s("cid"), &Some(10i64)).unwrap();
    wait_for_latest::<i64>(
        &b,
        "adults",
        &[(s("ann"), None), (s("bob"), Some(18)), (s("cid"), None)].into(),
    );
    wait_for_latest::<i64>(
        &b,
        "all",
        &[(s("ann"), None), (s("bob"), Some(18)), (s("cid"), Some(10))].into(),
    );
    q.stop().unwrap();
}

/// `in` counted per key twice, into `cached` (through the record cache) and `uncached`,
/// with a long commit interval: the cached table emits when the query stops (commit).
fn count_cached_and_uncached() -> (tempfile::TempDir, Broker, Runtime, QueryHandle) {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    for t in ["in", "cached", "uncached"] {
        b.create_topic(t, 1).unwrap();
    }
    let builder = StreamsBuilder::new();
    let grouped = builder.stream::<String, i64>("in").group_by_key();
    grouped.count_with(Materialized::as_("c1")).to("cached");
    grouped
        .count_with(Materialized::as_("c2").without_caching())
        .to("uncached");
    let rt = runtime_in(dir.path(), &b, Duration::from_secs(3600));
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    (dir, b, rt, q)
}

#[test]
fn the_record_cache_compacts_updates_and_an_uncached_store_does_not() {
    let (_dir, b, rt, q) = count_cached_and_uncached();
    for i in 0..100i64 {
        b.send("in", &"k".to_string(), &i).unwrap();
    }
    let uncached = read_n::<String, i64>(&b, "uncached", 100);
    assert_eq!(uncached.last(), Some(&("k".to_string(), 100)));
    assert!(
        b.read_all::<String, i64>("cached").unwrap().is_empty(),
        "compacted in the cache"
    );
    let stats = rt.record_cache_stats();
    assert!(stats.used > 0 && stats.used <= stats.cap, "{stats:?}");
    q.stop().unwrap();
    let cached = b.read_all::<String, i64>("cached").unwrap();
    assert_eq!(cached.len(), 1, "100 updates, one emitted at commit");
    assert_eq!(cached[0].record.value, 100);
}

#[test]
fn a_small_record_cache_never_exceeds_its_budget_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::new();
    b.create_topic("in", 4).unwrap();
    b.create_topic("out", 4).unwrap();
    let cap = 64 * 1024;
    let rt = Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .record_cache_bytes(cap)
            .commit_interval(Duration::from_millis(200))
            .state_dir(dir.path())
            .broker(b.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .group_by_key()
        .count()
        .to("out");
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    let keys = 5000;
    for i in 0..20_000i64 {
        b.send("in", &format!("key-{:05}", i % keys), &i).unwrap();
    }
    let mut max_used = 0;
    let want: BTreeMap<String, Option<i64>> = (0..keys)
        .map(|k| (format!("key-{k:05}"), Some(4)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest::<i64>(&b, "out") != want {
        assert!(Instant::now() < deadline, "counts did not converge");
        let s = rt.record_cache_stats();
        max_used = max_used.max(s.used);
        assert!(
            s.used <= cap,
            "record cache at {} over its budget {cap}",
            s.used
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let s = rt.record_cache_stats();
    assert!(s.evictions > 0, "5000 keys do not fit in 64 KiB: {s:?}");
    assert!(max_used > 0);
    q.stop().unwrap();
    wait_until("stopped", || q.state() == QueryState::Stopped);
}

#[test]
/// Kafka Streams' rule (KStreamAggregate): a row's update carries the largest timestamp
/// folded into it, so an out-of-order record does not move it back.
fn table_rows_carry_the_largest_timestamp_folded_in() {
    let (_dir, b, _rt, q) = count_cached_and_uncached();
    // Out of order: key "a" is updated at 3000, then by a record at 1000.
    for (key, ts) in [("a", 3000), ("b", 5000), ("a", 1000)] {
        b.send_at("in", &key.to_string(), &0i64, ts).unwrap();
    }
    read_n::<String, i64>(&b, "uncached", 3);
    q.stop().unwrap();
    let stamps = |topic| -> Vec<(String, i64, i64)> {
        b.read_all::<String, i64>(topic)
            .unwrap()
            .into_iter()
            .map(|r| (r.record.key, r.record.value, r.record.timestamp))
            .collect()
    };
    assert_eq!(
        stamps("uncached"),
        vec![
            ("a".to_string(), 1, 3000),
            ("b".to_string(), 1, 5000),
            ("a".to_string(), 2, 3000)
        ]
    );
    // Compacted in the cache and emitted at commit: the same timestamp, not the stream
    // time at the flush.
    assert_eq!(
        sorted(stamps("cached")),
        vec![("a".to_string(), 2, 3000), ("b".to_string(), 1, 5000)]
    );
}

/// A stream-table join with a grace period keeps its waiting records in a store: a
/// restart finds them there and numbers new arrivals after every one of them, so a
/// record arriving after the restart with the timestamp of a waiting one takes its
/// own place (a number taken from the buffer's last entry by time, not the largest,
/// once overwrote an earlier record of the same timestamp).
#[test]
fn a_grace_join_s_waiting_records_survive_a_restart() {
    use weir::{Joined, Materialized};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new();
    for t in ["rows", "events", "joined"] {
        broker.create_topic(t, 1).unwrap();
    }
    let topology = || {
        let builder = StreamsBuilder::new();
        let rows = builder.table_with(
            "rows",
            Consumed::<String, String>::defaults(),
            Materialized::as_versioned("rows", Duration::from_secs(60)),
        );
        builder
            .stream::<String, String>("events")
            .join_with(
                &rows,
                |e: &String, r: &String| format!("{e}@{r}"),
                Joined::defaults().with_grace_period(Duration::from_millis(100)),
            )
            .to("joined");
        builder.build().unwrap()
    };
    let k = || "k".to_string();
    broker.send_at("rows", &k(), &"r0".to_string(), 0).unwrap();
    let rt = runtime_in(dir.path(), &broker, Duration::from_millis(50));
    let q = rt.start_query("grace", topology()).unwrap();
    // Both wait (stream time 10, grace 100); in the buffer by time: y@5 (arrived
    // second), x@10 (first).
    broker
        .send_at("events", &k(), &"x".to_string(), 10)
        .unwrap();
    broker.send_at("events", &k(), &"y".to_string(), 5).unwrap();
    wait_until("both events", || q.stats().records_processed == 3);
    q.stop().unwrap();
    rt.shutdown().unwrap();
    assert!(
        broker
            .read_all::<String, String>("joined")
            .unwrap()
            .is_empty()
    );

    let rt = runtime_in(dir.path(), &broker, Duration::from_millis(50));
    let q = rt.start_query("grace", topology()).unwrap();
    broker.send_at("events", &k(), &"z".to_string(), 5).unwrap();
    // Stream time 200 releases everything up to 100, in (timestamp, arrival) order.
    broker
        .send_at("events", &k(), &"w".to_string(), 200)
        .unwrap();
    wait_until("three joined", || {
        broker.read_all::<String, String>("joined").unwrap().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(100)); // a fourth would show
    let got: Vec<(String, i64)> = broker
        .read_all::<String, String>("joined")
        .unwrap()
        .into_iter()
        .map(|r| (r.record.value, r.record.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            ("y@r0".to_string(), 5),
            ("z@r0".to_string(), 5),
            ("x@r0".to_string(), 10)
        ]
    );
    q.stop().unwrap();
}

/// A stream-stream left join keeps records without a partner in a store until their
/// window closes: after a restart, a new record with the timestamp, side and key of a
/// waiting one is numbered after it and waits beside it (numbering restarted at 0
/// once replaced it, and one unmatched result was lost).
#[test]
fn a_left_join_s_unmatched_records_survive_a_restart() {
    use weir::{JoinWindows, StreamJoined};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new();
    for t in ["left", "right", "joined"] {
        broker.create_topic(t, 1).unwrap();
    }
    let topology = || {
        let builder = StreamsBuilder::new();
        let right = builder.stream::<String, String>("right");
        builder
            .stream::<String, String>("left")
            .left_join_stream(
                &right,
                |l: &String, r: Option<&String>| {
                    format!("{l}+{}", r.map_or("null", String::as_str))
                },
                JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(100)),
                StreamJoined::defaults(),
            )
            .to("joined");
        builder.build().unwrap()
    };
    let k = || "k".to_string();
    let rt = runtime_in(dir.path(), &broker, Duration::from_millis(50));
    let q = rt.start_query("lj", topology()).unwrap();
    broker.send_at("left", &k(), &"a".to_string(), 10).unwrap();
    wait_until("a", || q.stats().records_processed == 1);
    q.stop().unwrap();
    rt.shutdown().unwrap();

    let rt = runtime_in(dir.path(), &broker, Duration::from_millis(50));
    let q = rt.start_query("lj", topology()).unwrap();
    broker.send_at("left", &k(), &"b".to_string(), 10).unwrap();
    // Far ahead: both windows close.
    broker
        .send_at("left", &"other".to_string(), &"c".to_string(), 10_000)
        .unwrap();
    wait_until("two unmatched", || {
        broker.read_all::<String, String>("joined").unwrap().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(100)); // a third would show
    let got: Vec<(String, String, i64)> = broker
        .read_all::<String, String>("joined")
        .unwrap()
        .into_iter()
        .map(|r| (r.record.key, r.record.value, r.record.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            ("k".to_string(), "a+null".to_string(), 10),
            ("k".to_string(), "b+null".to_string(), 10)
        ]
    );
    q.stop().unwrap();
}
