//! Crashes: a runtime is killed (SIGKILL, a child process) while it processes, and a
//! new one on the same state directory finishes the work.
//!
//! - At-least-once: no input record is missing from the output, and a latest-by-key
//!   table (idempotent, so re-processing cannot change it) equals the model.
//! - Exactly-once: counts read with `read_committed` equal the model, and no key's
//!   committed count ever repeats or goes back (a record counted twice would show).
//!
//! The mock cluster supports transactions and transactional offset commits; nothing
//! here is skipped for it.

// rdkafka as weir re-exports it (weir's tests have no dependency of their own on it).
use weir::runtime::internals::rdkafka;

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::kafka::{
    COUNTS_CHANGELOG, cluster, committed, config, counts, produce, read_with, spawn_child,
    times_ten, wait_for_last,
};
use common::wait_until;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir::prelude::*;
use weir::{Materialized, ProcessingGuarantee};

const SERVERS: &str = "WEIR_TEST_CRASH_SERVERS";
const STATE_DIR: &str = "WEIR_TEST_CRASH_STATE_DIR";
const GUARANTEE: &str = "WEIR_TEST_CRASH_GUARANTEE";
const LATEST_CHANGELOG: &str = "kafka-test-latest-latest-changelog";
const KEYS: i64 = 20;
const ROUNDS: i64 = 20;
const PER_ROUND: i64 = 100;

/// The latest value of each key, in the store "latest".
fn latest() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .group_by_key()
        .reduce_with(|_, v| v, Materialized::as_("latest"))
        .to_stream()
        .to("latest");
    builder.build().unwrap()
}

fn start(servers: &str, dir: &std::path::Path, exactly_once: bool) -> (Runtime, Vec<QueryHandle>) {
    let guarantee = if exactly_once {
        ProcessingGuarantee::ExactlyOnce
    } else {
        ProcessingGuarantee::AtLeastOnce
    };
    let rt = Runtime::new(
        config(servers, dir)
            .processing_guarantee(guarantee)
            .build()
            .unwrap(),
    )
    .unwrap();
    let queries = if exactly_once {
        vec![rt.start_query("counts", counts()).unwrap()]
    } else {
        vec![
            rt.start_query("times-ten", times_ten()).unwrap(),
            rt.start_query("latest", latest()).unwrap(),
        ]
    };
    (rt, queries)
}

/// The child: runs the queries until it is killed.
#[test]
#[ignore = "a child process of the crash tests"]
fn crash_member() {
    let (Ok(servers), Ok(dir), Ok(g)) = (
        std::env::var(SERVERS),
        std::env::var(STATE_DIR),
        std::env::var(GUARANTEE),
    ) else {
        panic!("run only as the child of a crash test ({SERVERS}, {STATE_DIR}, {GUARANTEE} unset)");
    };
    let _ = env_logger::try_init();
    let (_rt, _queries) = start(&servers, std::path::Path::new(&dir), g == "exactly_once");
    std::thread::sleep(Duration::from_secs(120));
    panic!("not killed within 120 s");
}

/// Round `r`'s records: key `k{i % KEYS}`, value `i` (increasing per key).
fn round(r: i64) -> Vec<(String, i64)> {
    (r * PER_ROUND..(r + 1) * PER_ROUND)
        .map(|i| (format!("k{}", i % KEYS), i))
        .collect()
}

/// Produces the rounds with a child processing them; once `first_commit` says the
/// child committed something, kills it (SIGKILL) while it processes the next rounds,
/// produces the rest, runs `before_restart`, and restarts on the same state directory.
fn crash_and_restart(
    servers: &str,
    dir: &std::path::Path,
    exactly_once: bool,
    first_commit: impl FnMut() -> bool,
    before_restart: impl FnOnce(),
) -> (Runtime, Vec<QueryHandle>) {
    let guarantee = if exactly_once {
        "exactly_once"
    } else {
        "at_least_once"
    };
    let mut child = spawn_child(
        "crash_member",
        &[
            (SERVERS, servers),
            (STATE_DIR, dir.to_str().unwrap()),
            (GUARANTEE, guarantee),
        ],
    );
    for r in 0..ROUNDS / 2 {
        produce(servers, "in", &round(r));
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("a commit of the child", first_commit);
    for r in ROUNDS / 2..ROUNDS / 2 + 3 {
        produce(servers, "in", &round(r));
    }
    child.kill();
    for r in ROUNDS / 2 + 3..ROUNDS {
        produce(servers, "in", &round(r));
    }
    before_restart();
    start(servers, dir, exactly_once)
}

#[test]
fn at_least_once_a_killed_runtime_loses_no_input() {
    let mock = cluster(&[("in", 2), ("out", 2), ("latest", 2), (LATEST_CHANGELOG, 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (_rt, queries) = crash_and_restart(
        &servers,
        dir.path(),
        false,
        || committed(&servers, "in", 2) > 0,
        || {
            assert!(
                committed(&servers, "in", 2) < ROUNDS * PER_ROUND,
                "the child was not killed before it was done"
            );
        },
    );
    let total = (ROUNDS * PER_ROUND) as usize;
    // Every input's effect is in the output (some maybe twice).
    let out: BTreeSet<i64> = read_with(&servers, "out", total, false)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let want: BTreeSet<i64> = (0..ROUNDS * PER_ROUND).map(|i| i * 10).collect();
    assert_eq!(out, want, "input records missing from the output");
    // The table equals the model: the last value of each key.
    let model: BTreeMap<String, i64> = (0..KEYS)
        .map(|k| (format!("k{k}"), ROUNDS * PER_ROUND - KEYS + k))
        .collect();
    wait_for_last(&servers, "latest", &model, false);
    for q in queries {
        q.stop().unwrap();
    }
}

#[test]
fn exactly_once_a_killed_runtime_counts_every_input_once() {
    let mock = cluster(&[("in", 2), ("counts", 2), (COUNTS_CHANGELOG, 2)]);
    let servers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // The mock accepts the offsets a transaction sends but does not store them (its
    // TxnOffsetCommit handler answers without committing; librdkafka 2.12.1), so the
    // group shows no offsets of the killed runtime. What its transactions did commit
    // is read back instead, and must be atomic: for each input partition, the
    // committed counts are exactly those of a prefix of the partition. Those prefixes
    // are then committed for the group, as a broker would have done, and the restart
    // resumes from them.
    let (_rt, queries) = crash_and_restart(
        &servers,
        dir.path(),
        true,
        || !read_with(&servers, "counts", 0, true).is_empty(),
        || commit_committed_prefixes(&servers),
    );
    let per_key = ROUNDS * PER_ROUND / KEYS;
    let model: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), per_key)).collect();
    wait_for_last(&servers, "counts", &model, true);
    // Committed counts only grow: a record counted twice (output of the killed
    // runtime's open transaction, or state restored past the last commit) would
    // repeat a count or end above the model.
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in read_with(&servers, "counts", 1, true) {
        let before = seen.insert(k.clone(), v).unwrap_or(0);
        assert!(v > before, "{k}: count {v} after {before}");
    }
    assert_eq!(seen, model);
    for q in queries {
        q.stop().unwrap();
    }
}

/// Exactly-once on the mock (see the test): finds, for each partition of "in", the
/// prefix whose counts are the committed counts (asserting there is one) and commits
/// it as the group's offset, with the query's position in the metadata.
fn commit_committed_prefixes(servers: &str) {
    let counted: BTreeMap<String, i64> =
        read_with(servers, "counts", 0, true).into_iter().collect();
    assert!(!counted.is_empty(), "nothing committed before the kill");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "kafka-test")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "2000")
        .create()
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    for p in 0..2 {
        let input = read_partition(servers, "in", p);
        let keys: BTreeSet<&String> = input.iter().map(|(k, _)| k).collect();
        let want = |k: &String| counted.get(k).copied().unwrap_or(0);
        let mut seen: BTreeMap<&String, i64> = BTreeMap::new();
        let matches = |seen: &BTreeMap<&String, i64>| {
            keys.iter()
                .all(|k| seen.get(k).copied().unwrap_or(0) == want(k))
        };
        let mut prefix = if matches(&seen) { Some(0) } else { None };
        for (n, (k, _)) in input.iter().enumerate() {
            if prefix.is_some() {
                break;
            }
            *seen.entry(k).or_default() += 1;
            if matches(&seen) {
                prefix = Some(n + 1);
            }
        }
        let n = prefix.unwrap_or_else(|| {
            panic!("partition {p}: the committed counts are not those of any prefix: {counted:?}")
        }) as i64;
        assert!(
            n < input.len() as i64,
            "partition {p}: everything was committed before the kill"
        );
        offsets
            .add_partition_offset("in", p, Offset::Offset(n))
            .unwrap();
        offsets
            .find_partition("in", p)
            .unwrap()
            .set_metadata(format!("counts={n}"));
    }
    // The mock takes commits from members only: join (once the killed member's session
    // has expired), commit, leave.
    consumer.subscribe(&["in"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while consumer.assignment().unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no assignment");
        let _ = consumer.poll(Duration::from_millis(50));
    }
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}

/// Every record of `topic`'s partition `p`, in order.
fn read_partition(servers: &str, topic: &str, p: i32) -> Vec<(String, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "reading {topic}/{p}");
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let value = i64::from_be_bytes(m.payload().unwrap().try_into().unwrap());
                out.push((key, value));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            _ => {}
        }
    }
}
