//! The thread invariant: the number of OS threads does not depend on the number of
//! queries. One test in this file, so the test harness runs no other threads here.

mod common;

use common::wait_until;
use weir::prelude::*;

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn start(rt: &Runtime, name: &str) -> QueryHandle {
    let s = StreamsBuilder::new();
    s.stream::<String, i64>("in")
        .filter(|_, v| *v >= 0)
        .map_values(|v| v + 1)
        .to("out");
    rt.start_query(name, s.build().unwrap()).unwrap()
}

#[test]
fn thread_count_is_the_same_with_1_and_100_queries_and_after_restarts() {
    // Its own state directory: the global-table queries below open RocksDB stores,
    // which in the default directory would outlive the test run.
    let dir = tempfile::tempdir().unwrap();
    let before_runtime = os_threads();
    let rt = common::runtime_in(2, dir.path());
    let b = rt.broker().clone();
    b.create_topic("in", 2).unwrap();
    b.create_topic("out", 2).unwrap();
    for i in 0..10i64 {
        b.send("in", &format!("k{i}"), &i).unwrap();
    }
    let with_runtime = os_threads();
    assert_eq!(with_runtime - before_runtime, rt.thread_count());
    assert_eq!(
        rt.thread_count(),
        6,
        "2 workers + 1 I/O thread + RocksDB's 1 flush and 2 compaction threads"
    );

    let first = start(&rt, "q0");
    wait_until("first query", || first.stats().records_processed == 10);
    let with_one = os_threads();

    let mut queries = vec![first];
    for i in 1..100 {
        queries.push(start(&rt, &format!("q{i}")));
    }
    wait_until("100 queries processed the input", || {
        queries.iter().all(|q| q.stats().records_processed == 10)
    });
    let with_hundred = os_threads();
    assert_eq!(b.read_all::<String, i64>("out").unwrap().len(), 1000);

    for q in queries.drain(..) {
        q.stop().unwrap();
    }
    let after_stop = os_threads();

    for i in 0..100 {
        queries.push(start(&rt, &format!("r{i}")));
    }
    wait_until("100 new queries processed the input", || {
        queries.iter().all(|q| q.stats().records_processed == 10)
    });
    let with_hundred_again = os_threads();
    for q in queries.drain(..) {
        q.stop().unwrap();
    }

    // Global tables: each query's global store is kept by a task on the pool, not by
    // a thread (Kafka Streams starts a global thread per instance).
    b.create_topic("prices", 2).unwrap();
    for i in 0..5i64 {
        b.send("prices", &format!("k{i}"), &(i * 100)).unwrap();
    }
    let global_query = |i: usize| {
        let s = StreamsBuilder::new();
        let prices = s.global_table::<String, i64>("prices");
        s.stream::<String, i64>("in")
            .join_global(&prices, |k, _| k.clone(), |v, p| v + p)
            .to("out");
        rt.start_query(&format!("g{i}"), s.build().unwrap())
            .unwrap()
    };
    queries.push(global_query(0));
    wait_until("the first global-table query", || {
        queries[0].stats().records_processed == 10
    });
    let with_one_global = os_threads();
    for i in 1..20 {
        queries.push(global_query(i));
    }
    // 5 table rows loaded before the start (counted as restored), then the 10 stream
    // records processed by each query.
    wait_until("20 global-table queries processed the input", || {
        queries.iter().all(|q| q.stats().records_processed == 10)
    });
    let with_global_tables = os_threads();
    for q in queries.drain(..) {
        q.stop().unwrap();
    }

    println!(
        "threads: before runtime {before_runtime}, runtime {with_runtime}, 1 query {with_one}, \
         100 queries {with_hundred}, after stop {after_stop}, 100 new queries {with_hundred_again}, \
         1 query with a global table {with_one_global}, 20 {with_global_tables}"
    );
    // The first RocksDB store opened in the process (these queries' global stores are
    // the test's first stores) starts RocksDB's one periodic-task timer thread.
    assert!(with_one_global - with_runtime <= 1);
    assert_eq!(with_global_tables, with_one_global);
    assert_eq!(with_one, with_runtime);
    assert_eq!(with_hundred, with_runtime);
    assert_eq!(after_stop, with_runtime);
    assert_eq!(with_hundred_again, with_runtime);
}
