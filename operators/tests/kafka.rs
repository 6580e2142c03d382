//! Queries on Kafka through rdkafka, against librdkafka's mock cluster (in-process, on
//! loopback; no external broker): reading and writing topics, two queries reading one
//! topic from their own committed positions, resuming after a restart without reading
//! anything twice, and clear errors. (`kafka_threads.rs`: the thread count.)

// rdkafka as weir re-exports it (weir's tests have no dependency of their own on it).
use weir::runtime::internals::rdkafka;

mod common;

use std::collections::BTreeMap;

use common::kafka::{
    COUNTS_CHANGELOG, cluster, config, counts, last, produce, read, records, refuse_produce,
    runtime, times_ten, wait_for_last,
};
use common::wait_until;
use weir::ProductionExceptionHandler;
use weir::prelude::*;

#[test]
fn queries_read_and_write_kafka_and_resume_from_their_own_committed_offsets() {
    let mock = cluster(&[("in", 2), ("out", 2), ("counts", 2), (COUNTS_CHANGELOG, 2)]);
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

#[test]
fn a_lost_state_directory_is_restored_from_the_changelog() {
    let mock = cluster(&[("in", 2), ("counts", 2), (COUNTS_CHANGELOG, 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(10, 10));
    let run = |dir: &std::path::Path, processed: u64| {
        let rt = runtime(&servers, dir);
        let q = rt.start_query("counts", counts()).unwrap();
        // Tasks start (restoring first) once the group assigns the partitions.
        wait_until("tasks", || q.stats().tasks == 2);
        let restored = q.stats().records_restored;
        wait_until("processed", || q.stats().records_processed == processed);
        q.stop().unwrap();
        rt.shutdown().unwrap();
        restored
    };
    assert_eq!(run(dir.path(), 100), 0, "nothing to restore at first");
    // The checkpoint says the store has everything its changelog holds.
    assert_eq!(run(dir.path(), 0), 0, "restored what the checkpoint covers");
    // A new machine: no state directory. The store comes back from the changelog, and
    // counting goes on from there.
    let fresh = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(5, 10));
    let restored = run(fresh.path(), 50);
    assert!(restored >= 10, "restored {restored} changelog records");
    let counted = last(&read(&servers, "counts", 15));
    let want: BTreeMap<String, i64> = (0..10)
        .map(|k| (format!("k{k}"), if k < 5 { 20 } else { 10 }))
        .collect();
    assert_eq!(counted, want);
}

#[test]
fn internal_topics_are_created_or_a_clear_error_says_which() {
    // librdkafka's mock cluster cannot create topics (it has no CreateTopics handler):
    // the attempt fails, and the error names the topic and how to create it.
    let mock = cluster(&[("in", 2), ("counts", 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&servers, dir.path());
    let err = rt.start_query("counts", counts()).unwrap_err().to_string();
    assert!(
        err.contains("cannot create internal topics")
            && err.contains(&format!(
                "'{COUNTS_CHANGELOG}' (2 partitions, cleanup.policy=compact)"
            )),
        "{err}"
    );
    // One that exists with too few partitions is not used.
    mock.create_topic(COUNTS_CHANGELOG, 1);
    let err = rt.start_query("counts", counts()).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "'{COUNTS_CHANGELOG}' has 1 partitions; it needs at least 2"
        )),
        "{err}"
    );
}

#[test]
fn a_failed_delivery_fails_the_query_and_commits_nothing_past_it() {
    use rdkafka::types::RDKafkaApiKey;
    let mock = cluster(&[("in", 1), ("out", 1)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(10, 2));
    // Every produce request is refused.
    refuse_produce(&mock, 64);
    {
        let rt = runtime(&servers, dir.path());
        let q = rt.start_query("times-ten", times_ten()).unwrap();
        let state = q.await_termination(Some(std::time::Duration::from_secs(20)));
        match state {
            QueryState::Failed(e) => {
                let msg = e.to_string();
                assert!(msg.contains("producing to 'out'"), "{msg}");
                assert!(msg.to_lowercase().contains("authoriz"), "{msg}");
            }
            other => panic!("expected a failed query, got {other:?}"),
        }
        let _ = rt.shutdown();
    }
    // Nothing was committed: once the cluster takes writes again, a restart processes
    // all 20 records and they all arrive.
    mock.cluster().clear_request_errors(RDKafkaApiKey::Produce);
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("times-ten", times_ten()).unwrap();
    wait_until("reprocessed", || q.stats().records_processed == 20);
    assert_eq!(read(&servers, "out", 20).len(), 20);
    q.stop().unwrap();
}

#[test]
fn a_slow_query_pauses_its_partitions_and_gets_every_record_once() {
    let mock = cluster(&[("in", 2), ("out", 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(50, 40));
    let rt = Runtime::new(
        config(&servers, dir.path())
            .queue_max_records_per_partition(5)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rt.query("none").map(|q| q.group_id().to_string()), None);
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .map_values(|v| {
            // About 2 s in all: the lag (published every second) shows on the way.
            std::thread::sleep(std::time::Duration::from_millis(2));
            v * 10
        })
        .to("out");
    let q = rt.start_query("slow", builder.build().unwrap()).unwrap();
    assert_eq!(q.group_id(), "kafka-test");
    let mut saw_pause = false;
    let mut max_lag = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while q.stats().records_processed < 2000 {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {} records",
            q.stats().records_processed
        );
        saw_pause |= rt.paused_partitions() > 0;
        max_lag = max_lag.max(q.stats().lag);
        let (used, cap) = rt.queue_bytes();
        assert!(used <= cap, "queue bytes {used} over {cap}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(saw_pause, "no partition was paused");
    // The lag follows the end offsets the consumer's fetches saw.
    assert!(max_lag > 100, "lag at most {max_lag}");
    wait_until("no lag", || q.stats().lag == 0);
    let out = read(&servers, "out", 2000);
    assert_eq!(out.len(), 2000, "records lost or repeated");
    q.stop().unwrap();
}

#[test]
fn with_log_and_continue_a_failed_delivery_is_skipped_and_the_query_goes_on() {
    use rdkafka::types::RDKafkaApiKey;
    let mock = cluster(&[("in", 1), ("out", 1)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(10, 2));
    // The first produce requests are refused; later ones go through.
    refuse_produce(&mock, 2);
    let config = || {
        config(&servers, dir.path())
            .production_exception_handler(ProductionExceptionHandler::LogAndContinue)
    };
    {
        let rt = Runtime::new(config().build().unwrap()).unwrap();
        let q = rt.start_query("times-ten", times_ten()).unwrap();
        wait_until("first records", || q.stats().records_processed == 20);
        // Past a commit, so the failures have been handled; then the cluster takes
        // writes again (the errors would also hit this test's own producer).
        std::thread::sleep(std::time::Duration::from_millis(500));
        mock.cluster().clear_request_errors(RDKafkaApiKey::Produce);
        produce(&servers, "in", &records(10, 2));
        wait_until("more records", || q.stats().records_processed == 40);
        assert_eq!(q.state(), QueryState::Running);
        let out = read(&servers, "out", 20);
        assert!(
            (20..40).contains(&out.len()),
            "{} records written: the refused ones are skipped, the later ones written",
            out.len()
        );
        q.stop().unwrap();
        rt.shutdown().unwrap();
    }
    // Everything was committed, the skipped records too.
    let rt = Runtime::new(config().build().unwrap()).unwrap();
    let q = rt.start_query("times-ten", times_ten()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(q.stats().records_processed, 0);
    q.stop().unwrap();
}

/// KIP-1034 for the production handler: with log-and-continue and a dead-letter topic,
/// the records Kafka refused are written there (the bytes that were refused, and
/// Kafka's error headers), so every input is in the output or in the dead letters.
#[test]
fn refused_deliveries_go_to_the_dead_letter_topic() {
    use rdkafka::types::RDKafkaApiKey;
    use weir::dead_letter::{HEADER_ERRORS_EXCEPTION, HEADER_ERRORS_TOPIC};
    let mock = cluster(&[("in", 1), ("out", 1), ("dlq", 1)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(10, 2));
    // One request refused: the dead letters' own request goes through.
    refuse_produce(&mock, 1);
    let rt = Runtime::new(
        config(&servers, dir.path())
            .production_exception_handler(ProductionExceptionHandler::LogAndContinue)
            .dead_letter_queue_topic("dlq")
            .build()
            .unwrap(),
    )
    .unwrap();
    let q = rt.start_query("times-ten", times_ten()).unwrap();
    wait_until("first records", || q.stats().records_processed == 20);
    std::thread::sleep(std::time::Duration::from_millis(500));
    mock.cluster().clear_request_errors(RDKafkaApiKey::Produce);
    // Whatever went through (the refused requests may have held every record).
    let out = read(&servers, "out", 0);
    let letters = read(&servers, "dlq", 20 - out.len());
    assert!(!letters.is_empty(), "no dead letter");
    assert_eq!(
        out.len() + letters.len(),
        20,
        "out {out:?}, dead letters {letters:?}"
    );
    assert!(letters.iter().all(|(_, v)| *v == 10), "{letters:?}");
    // The headers, read raw.
    let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", "dlq-headers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    use rdkafka::message::{Headers as _, Message as _};
    c.subscribe(&["dlq"]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let m = loop {
        if let Some(Ok(m)) = c.poll(std::time::Duration::from_millis(100)) {
            break m.detach();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter to read"
        );
    };
    let header = |name: &str| {
        let h = m.headers().unwrap();
        (0..h.count())
            .map(|i| h.get(i))
            .find(|h| h.key == name)
            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    };
    assert!(
        header(HEADER_ERRORS_EXCEPTION)
            .unwrap()
            .starts_with("Kafka: ")
    );
    assert_eq!(header(HEADER_ERRORS_TOPIC).as_deref(), Some("out"));
    q.stop().unwrap();
}

#[test]
fn unreachable_brokers_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let rt = runtime("127.0.0.1:1", dir.path());
    let err = rt.start_query("q", times_ten()).unwrap_err().to_string();
    assert!(
        err.contains("source topic 'in' of query 'q'") && err.contains("metadata"),
        "{err}"
    );
}

#[test]
fn a_query_that_repartitions_runs_on_kafka() {
    // Internal topics are pre-created here: the mock cannot create topics.
    const REPARTITION: &str = "kafka-test-groups-by-group-repartition";
    const CHANGELOG: &str = "kafka-test-groups-counts-changelog";
    let mock = cluster(&[("in", 2), ("counts", 2), (REPARTITION, 2), (CHANGELOG, 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce(&servers, "in", &records(10, 10));
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .select_key(|k: &String, _: &i64| {
            let n: u32 = k[1..].parse().unwrap();
            format!("g{}", n % 3)
        })
        .repartition_with(Repartitioned::defaults().with_name("by-group"))
        .group_by_key()
        .count_with(Materialized::as_("counts"))
        .to_stream()
        .to("counts");
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("groups", builder.build().unwrap()).unwrap();
    // Keys k0..k9, ten records each, regrouped by n % 3 across partitions.
    let want: BTreeMap<String, i64> =
        BTreeMap::from([("g0".into(), 40), ("g1".into(), 30), ("g2".into(), 30)]);
    wait_for_last(&servers, "counts", &want, false);
    // Two sub-topologies (before and after the repartition topic), two partitions each.
    assert_eq!(q.stats().tasks, 4);
    assert_eq!(q.stats().records_processed, 200);
    q.stop().unwrap();
}
