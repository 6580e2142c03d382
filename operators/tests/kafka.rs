//! Queries on Kafka through rdkafka, against librdkafka's mock cluster (in-process, on
//! loopback; no external broker): reading and writing topics, two queries reading one
//! topic from their own committed positions, resuming after a restart without reading
//! anything twice, and clear errors. (`kafka_threads.rs`: the thread count.)

mod common;

use std::collections::BTreeMap;

use common::kafka::{cluster, counts, last, produce, read, records, runtime, times_ten};
use common::wait_until;

#[test]
fn queries_read_and_write_kafka_and_resume_from_their_own_committed_offsets() {
    let mock = cluster(&[("in", 2), ("out", 2), ("counts", 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(10, 10));
    {
        let rt = runtime(&servers, dir.path());
        let a = rt.start_query("times-ten", times_ten()).unwrap();
        let b = rt.start_query("counts", counts()).unwrap();
        let out = read(&servers, "out", 100);
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(|(_, v)| *v == 10));
        wait_until("counts", || b.stats().records_processed == 100);
        a.stop().unwrap();
        b.stop().unwrap();
        let counted = last(&read(&servers, "counts", 10));
        assert_eq!(counted, (0..10).map(|k| (format!("k{k}"), 10)).collect());
        rt.shutdown().unwrap();
    }
    // Both queries read "in"; each resumes from its own position: the 50 new records
    // are processed once, the first 100 not again.
    produce(&servers, "in", &records(5, 10));
    let rt = runtime(&servers, dir.path());
    let a = rt.start_query("times-ten", times_ten()).unwrap();
    let b = rt.start_query("counts", counts()).unwrap();
    let out = read(&servers, "out", 150);
    assert_eq!(out.len(), 150, "records read twice or lost");
    wait_until("counts", || b.stats().records_processed == 50);
    assert_eq!(a.stats().records_processed, 50);
    b.stop().unwrap();
    let counted = last(&read(&servers, "counts", 15));
    let want: BTreeMap<String, i64> = (0..10)
        .map(|k| (format!("k{k}"), if k < 5 { 20 } else { 10 }))
        .collect();
    assert_eq!(counted, want);
    a.stop().unwrap();
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let mock = cluster(&[("in", 1)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&servers, dir.path());
    let err = rt.start_query("q", times_ten()).unwrap_err();
    assert!(
        err.to_string()
            .contains("sink topic 'out' of query 'q' does not exist"),
        "{err}"
    );
}
