//! Trouble on a real Kafka-protocol broker (crabka-broker, `common/real_broker.rs`):
//! the broker stopped for 10 s and started again on its data directory while queries
//! run; a zombie (two processes on one state directory, so one transactional id); and
//! the exactly-once SIGKILL campaign with a second process joining and leaving the
//! group half-way.

#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka::{committed, counts, poisoned, produce, reader_of, spawn_child};
use common::real_broker::{RealBroker, committed_records, create_topics, runtime, runtime_with};
use weir::prelude::*;
use weir::runtime::internals::rdkafka;
use weir::{ProcessingGuarantee, QueryStats};

use rdkafka::Message;

const SERVERS: &str = "WEIR_TEST_TROUBLE_SERVERS";
const STATE_DIR: &str = "WEIR_TEST_TROUBLE_STATE_DIR";
const KEYS: usize = 20;

/// `n` records of value 1 over `KEYS` keys, numbered from `from`.
fn ones(from: usize, n: usize) -> Vec<(String, i64)> {
    (from..from + n)
        .map(|i| (format!("k{}", i % KEYS), 1))
        .collect()
}

/// Every value in `topic` (big-endian i64), read from the beginning by a plain
/// consumer until `n` distinct values have come or `timeout` passes.
fn distinct_values(
    servers: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> BTreeMap<i64, usize> {
    let c = reader_of(servers, topic, Some(2), false);
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while seen.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            let v = i64::from_be_bytes(m.payload().unwrap().try_into().unwrap());
            *seen.entry(v).or_default() += 1;
        }
    }
    seen
}

/// Stops the broker for 10 s, the query staying Running meanwhile, and starts it again
/// on its data directory; the query's stats at the end of the outage and the longest
/// commit stall it reported.
fn outage(broker: &mut RealBroker, q: &QueryHandle, hard: bool) -> (QueryStats, u64) {
    if hard {
        broker.kill();
    } else {
        broker.stop();
    }
    let down = Instant::now();
    let mut stalled_max = 0;
    while down.elapsed() < Duration::from_secs(10) {
        assert_eq!(q.state(), QueryState::Running, "during the outage");
        stalled_max = stalled_max.max(q.stats().commit_stalled_ms);
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = q.stats();
    broker.restart();
    println!(
        "outage of {:?}: {} commits deferred, commits stalled up to {stalled_max} ms",
        down.elapsed(),
        during.commits_deferred
    );
    (during, stalled_max)
}

/// The broker goes away for 10 s and comes back on its data directory while an
/// at-least-once query is in the middle of its input: the query stays Running, its
/// commits wait (and say so in its stats), and once the broker is back it goes on;
/// every input is in the output.
#[test]
fn a_broker_outage_stalls_queries_which_resume_and_lose_nothing() {
    let mut broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("out", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(&servers, dir.path(), ProcessingGuarantee::AtLeastOnce);
    // Times ten, slowly (4 ms a record): records are still being processed, and their
    // output produced, while the broker is away.
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .map_values(|v: i64| {
            std::thread::sleep(Duration::from_millis(4));
            v * 10
        })
        .to("out");
    let q = rt.start_query("times-ten", b.build().unwrap()).unwrap();
    let first: Vec<(String, i64)> = (0..1_000i64)
        .map(|i| (format!("k{}", i % KEYS as i64), i))
        .collect();
    produce(&servers, "in", &first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.stats().records_processed < 100 {
        assert!(Instant::now() < deadline, "{:?}", q.stats());
        std::thread::sleep(Duration::from_millis(5));
    }

    let (during, stalled_max) = outage(&mut broker, &q, false);
    assert!(during.commits_deferred > 0, "{during:?}");
    assert!(stalled_max > 0, "the stall was reported: {during:?}");

    let second: Vec<(String, i64)> = (1_000..2_000i64)
        .map(|i| (format!("k{}", i % KEYS as i64), i))
        .collect();
    produce(&servers, "in", &second);
    let out = distinct_values(&servers, "out", 2_000, Duration::from_secs(120));
    for i in 0..2_000i64 {
        assert!(out.contains_key(&(i * 10)), "input {i} lost");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.stats().commit_stalled_ms != 0 {
        assert!(
            Instant::now() < deadline,
            "commits never went through again: {:?}",
            q.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q.state(), QueryState::Running);
    let duplicates: usize = out.values().map(|n| n - 1).sum();
    println!(
        "2000 records across the outage: none lost, {duplicates} duplicates, {:?}",
        q.stats()
    );
    q.stop().unwrap();
}

/// The same outage under exactly-once, with a slow count: the commit rounds wait for
/// the broker (the transaction's flush, `send_offsets` and commit are retried while
/// librdkafka calls them retriable), the query stays Running, and the committed counts
/// are exact with none repeated.
#[test]
fn a_broker_outage_under_exactly_once_loses_and_repeats_nothing() {
    let mut broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("counts", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("counts", slow_counts()).unwrap();
    produce(&servers, "in", &ones(0, 1_000));
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.stats().records_processed < 100 {
        assert!(Instant::now() < deadline, "{:?}", q.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILLed: crabka-broker 0.3.8 stopped with SIGTERM while transactions were
    // open could not start again on its data directory (seen here: "STRING shorter
    // than declared" while reading it back).
    let (_, stalled_max) = outage(&mut broker, &q, true);
    produce(&servers, "in", &ones(1_000, 1_000));
    all_committed(&servers, &q, 2_000);
    let stats = q.stats();
    q.stop().unwrap();
    rt.shutdown().unwrap();
    let counts = final_counts(&servers);
    let want: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), 100)).collect();
    assert_eq!(counts, want);
    println!(
        "exactly-once across a 10 s outage: 2000 records, every count exact, none repeated; commits stalled up to {stalled_max} ms; {stats:?}"
    );
}

/// Waits (2 min at most) until the group's offsets of "in" reach `n`, `q` running.
fn all_committed(servers: &str, q: &QueryHandle, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(servers, "in", 2) < n {
        assert!(
            Instant::now() < deadline,
            "offsets committed: {} of {n}; {:?}, {:?}",
            committed(servers, "in", 2),
            q.state(),
            q.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q.state(), QueryState::Running);
}

/// Counts per key into "counts", slowly (4 ms a record), so records are in flight
/// when something happens.
fn slow_counts() -> Topology {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .map_values(|v: i64| {
            std::thread::sleep(Duration::from_millis(4));
            v
        })
        .group_by_key()
        .count_with(weir::Materialized::as_("counts"))
        .to_stream()
        .to("counts");
    b.build().unwrap()
}

/// Exactly-once, one query fails while another is in the middle of its input: the
/// transaction they share is aborted, the failed query fails, and the other's tasks
/// close without committing and start again from the last commit (stores restored
/// from their committed changelogs). Its committed counts are exact, none repeated.
#[test]
fn a_failing_query_aborts_the_transaction_and_the_others_start_again_exactly() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(
        &servers,
        &[("in", 2), ("counts", 2), ("poison", 1), ("poisoned", 1)],
    );
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("counts", slow_counts()).unwrap();
    produce(&servers, "in", &ones(0, 1_000));
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&servers, "in", 2) < 200 {
        assert!(Instant::now() < deadline, "{:?}", q.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    produce(&servers, "poison", &[("p".to_string(), -1)]);
    let failing = rt.start_query("poisoned", poisoned()).unwrap();
    match failing.await_termination(Some(Duration::from_secs(60))) {
        QueryState::Failed(e) => assert!(e.to_string().contains("poisoned value -1"), "{e}"),
        other => panic!("expected the poisoned query to fail, got {other:?}"),
    }
    let at_failure = committed(&servers, "in", 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.stats().tasks_restarted == 0 {
        assert!(
            Instant::now() < deadline,
            "not started again: {:?}",
            q.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    produce(&servers, "in", &ones(1_000, 1_000));
    all_committed(&servers, &q, 2_000);
    let stats = q.stats();
    q.stop().unwrap();
    let e = rt.shutdown().unwrap_err();
    assert!(e.to_string().contains("poisoned value -1"), "{e}");
    let counts = final_counts(&servers);
    let want: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), 100)).collect();
    assert_eq!(counts, want);
    assert!(
        committed_records(&servers, "poisoned", 1, Duration::from_secs(1)).is_empty(),
        "the failed query's output was committed"
    );
    println!(
        "a query failed with {at_failure} of 1000 offsets committed: the other's tasks started again {} times; 2000 records, every count exact, none repeated; {stats:?}",
        stats.tasks_restarted
    );
}

/// The child of the zombie test: counts on exactly-once on the given state directory
/// and reports what it processed, and its queries' state once it is not Running.
#[test]
#[ignore = "a child process of the real-broker trouble tests"]
fn trouble_member() {
    let (Ok(servers), Ok(dir)) = (std::env::var(SERVERS), std::env::var(STATE_DIR)) else {
        panic!("run only as the child of a trouble test ({SERVERS}, {STATE_DIR} unset)");
    };
    let _ = env_logger::try_init();
    let rt = runtime(&servers, std::path::Path::new(&dir));
    let q = rt.start_query("counts", counts()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut told = u64::MAX;
    while Instant::now() < deadline {
        if let QueryState::Failed(e) = q.state() {
            println!("failed: {e}");
            return;
        }
        let n = q.stats().records_processed;
        if n != told {
            println!("processed {n}");
            told = n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("neither failed nor killed within 120 s");
}

/// Spawns `trouble_member` on `dir`; its lines go to the returned list.
fn member(
    servers: &str,
    dir: &std::path::Path,
) -> (common::kafka::ChildProcess, Arc<Mutex<Vec<String>>>) {
    let mut child = spawn_child(
        "trouble_member",
        &[(SERVERS, servers), (STATE_DIR, dir.to_str().unwrap())],
    );
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(|l| l.ok()) {
            l.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

fn processed(lines: &Mutex<Vec<String>>) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("processed ").and_then(|n| n.parse().ok()))
        .max()
        .unwrap_or(0)
}

/// The committed counts per key, each key's updates checked to rise.
fn final_counts(servers: &str) -> BTreeMap<String, i64> {
    let mut last = BTreeMap::new();
    for (k, v) in committed_records(servers, "counts", 2, Duration::from_secs(3)) {
        let v = i64::from_be_bytes(v.expect("a count").try_into().unwrap());
        if let Some(prev) = last.insert(k.clone(), v) {
            assert!(
                v > prev,
                "key {k}: committed count {v} after {prev} (a record counted twice, or a zombie's output)"
            );
        }
    }
    last
}

/// A zombie: a second process starts on the same state directory (so with the same
/// transactional id) while the first still runs. The newer one's producer fences the
/// older: the older's query fails with an error saying so, and the committed counts
/// are exact, none repeated.
#[test]
fn a_zombie_on_the_same_state_directory_is_fenced() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("counts", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_lines) = member(&servers, dir.path());
    produce(&servers, "in", &ones(0, 200));
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed(&old_lines) < 200 {
        assert!(
            Instant::now() < deadline,
            "the first process processed {}",
            processed(&old_lines)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The new process: same application id, same state directory.
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("counts", counts()).unwrap();
    produce(&servers, "in", &ones(200, 200));
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        let found = old_lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix("failed: ").map(str::to_string));
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the zombie was not fenced: {:?}",
            old_lines.lock().unwrap().last()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("the zombie's query failed: {failure}");
    assert!(failure.contains("fenced"), "{failure}");
    old.kill();
    produce(&servers, "in", &ones(400, 200));
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&servers, "in", 2) < 600 {
        assert!(
            Instant::now() < deadline,
            "offsets committed: {}",
            committed(&servers, "in", 2)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    q.stop().unwrap();
    rt.shutdown().unwrap();
    let counts = final_counts(&servers);
    let want: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), 30)).collect();
    assert_eq!(counts, want);
}

/// The exactly-once SIGKILL campaign with a rebalance half-way: while a child is
/// killed and restarted round after round, a second process (this one) joins the
/// group after a third of the rounds and leaves after two thirds. Every key's count is
/// exact and no committed count repeats.
#[test]
fn exactly_once_survives_sigkills_with_a_member_joining_and_leaving() {
    let _ = env_logger::builder().is_test(true).try_init();
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("counts", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let rounds: usize = std::env::var("WEIR_TEST_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(9);
    let per_round = 200;
    let mut second: Option<(Runtime, QueryHandle)> = None;
    let mut kill_points = Vec::new();
    let mut rng = 0x5eed_u64;
    for r in 0..rounds {
        let (mut child, lines) = member(&servers, dir.path());
        if r == rounds / 3 {
            // Joins while this round's child starts (the last one is dead).
            let rt = runtime(&servers, other.path());
            let q = rt.start_query("counts", counts()).unwrap();
            second = Some((rt, q));
        }
        produce(&servers, "in", &ones(r * per_round, per_round));
        if r == 2 * rounds / 3
            && let Some((rt, q)) = second.take()
        {
            // Leaves once this round's child takes part (owns a partition and has
            // processed from it): crabka-broker's group coordinator does not finish a
            // rebalance started by a member leaving while another member is dead and
            // its session not yet expired (seen here: no assignment for minutes).
            let deadline = Instant::now() + Duration::from_secs(30);
            while processed(&lines) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("the second member leaves after round {r}: {:?}", q.stats());
            q.stop().unwrap();
            rt.shutdown().unwrap();
        }
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let at = (rng >> 33) as usize % per_round;
        // (Or a timeout: it may be rejoining the group, or own no partition.)
        let deadline = Instant::now() + Duration::from_secs(10);
        // With the second member it sees about half the records.
        let want = if second.is_some() { at / 2 } else { at };
        while processed(&lines) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis((rng >> 40) % 300));
        kill_points.push(processed(&lines));
        child.kill();
    }
    println!("{rounds} kills after these records of each run: {kill_points:?}");
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("counts", counts()).unwrap();
    let produced = (rounds * per_round) as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&servers, "in", 2) < produced {
        assert!(
            Instant::now() < deadline,
            "offsets committed: {} of {produced}",
            committed(&servers, "in", 2)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    q.stop().unwrap();
    rt.shutdown().unwrap();
    let counts = final_counts(&servers);
    let per_key = produced / KEYS as i64;
    let want: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), per_key)).collect();
    assert_eq!(counts, want, "kill points {kill_points:?}");
    println!(
        "{produced} records, {rounds} kills, a member joining and leaving: every key counted {per_key}, none repeated"
    );
}
