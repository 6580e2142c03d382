//! The thread count of a runtime on Kafka does not grow with its queries: one consumer
//! and one producer serve them all. (Alone in its binary: other tests' threads would
//! change the count.)

mod common;

use common::kafka::{cluster, produce, read, records, runtime, times_ten};
use common::wait_until;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn one_consumer_and_one_producer_serve_every_query() {
    let mock = cluster(&[("in", 4), ("out", 4)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(20, 5));
    let rt = runtime(&servers, dir.path());
    let first = rt.start_query("q0", times_ten()).unwrap();
    wait_until("q0", || first.stats().records_processed == 100);
    let with_one = threads();
    let mut queries = vec![first];
    for i in 1..10 {
        queries.push(rt.start_query(&format!("q{i}"), times_ten()).unwrap());
    }
    for q in &queries[1..] {
        wait_until("every query", || q.stats().records_processed == 100);
    }
    assert_eq!(
        threads(),
        with_one,
        "threads grew with the number of queries"
    );
    assert_eq!(read(&servers, "out", 1000).len(), 1000);
    for q in queries {
        q.stop().unwrap();
    }
}
