//! Exactly-once on librdkafka's mock cluster: an aborted transaction does not end the
//! queries that had no part in why it was aborted.
//!
//! - A commit the group refuses for a rebalance (`ILLEGAL_GENERATION` on the
//!   transaction's offsets, which Kafka Streams turns into a `TaskMigratedException`)
//!   aborts the transaction; the tasks close without committing and are built again
//!   from the last commit, and the query goes on with all its output there.
//! - One query failing aborts the transaction: that query fails, the others' tasks
//!   start again and their output is all there.
//!
//! What the mock cannot show, `real_broker_trouble.rs` checks on a real broker (exact
//! counts after a restart, stores restored from committed changelogs): the mock does
//! not store the offsets a transaction sends (see `kafka_crash.rs`), and its
//! read_committed consumers read aborted records (it returns no aborted transactions
//! with a fetch). So the aborts here happen before any transaction with offsets
//! commits, and the queries are stateless.

// rdkafka as weir re-exports it (weir's tests have no dependency of their own on it).
use weir::runtime::internals::rdkafka;

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::{cluster, config, poisoned, produce, read_with, times_ten};
use common::wait_until;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use weir::ProcessingGuarantee;
use weir::prelude::*;

fn exactly_once(servers: &str, dir: &std::path::Path, commit_interval: Duration) -> Runtime {
    Runtime::new(
        config(servers, dir)
            .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
            .commit_interval(commit_interval)
            .build()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_commit_refused_for_a_rebalance_starts_the_tasks_again() {
    let mock = cluster(&[("in", 2), ("out", 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let input = numbered(2000);
    produce(&servers, "in", &input);
    // The first transaction's offsets are refused as a broker refuses them when the
    // group has a newer generation than the member's (one error per partition).
    mock.cluster().request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    let rt = exactly_once(&servers, dir.path(), Duration::from_millis(100));
    let q = rt.start_query("times-ten", times_ten()).unwrap();
    wait_until("both tasks started again", || {
        q.stats().tasks_restarted == 2
    });
    wait_until("everything processed again", || {
        q.stats().records_processed >= 2 * input.len() as u64 && q.stats().lag == 0
    });
    assert_eq!(q.state(), QueryState::Running);
    q.stop().unwrap();
    let stats = q.stats();
    assert_eq!(stats.tasks_restarted, 2, "{stats:?}");
    assert_all_times_ten(&servers, &input);
    println!(
        "tasks restarted {}, records processed {} for {} input records",
        stats.tasks_restarted,
        stats.records_processed,
        input.len()
    );
    rt.shutdown().unwrap();
}

/// Every input value times ten is in "out", read_committed.
fn assert_all_times_ten(servers: &str, input: &[(String, i64)]) {
    let out: BTreeSet<i64> = read_with(servers, "out", input.len(), true)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let want: BTreeSet<i64> = input.iter().map(|(_, v)| v * 10).collect();
    assert_eq!(out, want, "records missing from the committed output");
}

/// `n` records: key `k{i % 10}`, value `i`.
fn numbered(n: i64) -> Vec<(String, i64)> {
    (0..n).map(|i| (format!("k{}", i % 10), i)).collect()
}

#[test]
fn one_query_failing_aborts_the_transaction_and_the_others_go_on() {
    let mock = cluster(&[("in", 2), ("out", 2), ("poison", 1), ("poisoned", 1)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let input = numbered(1000);
    produce(&servers, "in", &input);
    produce(&servers, "poison", &[("p".to_string(), -1)]);
    // No commit round before the failure (see the file's note on the mock).
    let rt = exactly_once(&servers, dir.path(), Duration::from_secs(30));
    let healthy = rt.start_query("times-ten", times_ten()).unwrap();
    wait_until("times-ten processing", || {
        healthy.stats().records_processed > 0
    });
    let failing = rt.start_query("poisoned", poisoned()).unwrap();
    match failing.await_termination(Some(Duration::from_secs(30))) {
        QueryState::Failed(e) => assert!(e.to_string().contains("poisoned value -1"), "{e}"),
        other => panic!("expected the poisoned query to fail, got {other:?}"),
    }
    wait_until("times-ten's tasks started again", || {
        healthy.stats().tasks_restarted > 0
    });
    // Its output is committed at the next round (the stop's).
    healthy.stop().unwrap();
    assert_all_times_ten(&servers, &input);
    let stats = healthy.stats();
    assert!(stats.records_processed >= input.len() as u64, "{stats:?}");
    println!(
        "times-ten: tasks restarted {}, records processed {}",
        stats.tasks_restarted, stats.records_processed
    );
    assert!(
        read_with(&servers, "poisoned", 0, true).is_empty(),
        "the failed query's output was committed"
    );
    let e = rt.shutdown().unwrap_err();
    assert!(e.to_string().contains("poisoned value -1"), "{e}");
}
