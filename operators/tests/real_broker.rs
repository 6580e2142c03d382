//! weir's guarantees against a real Kafka-protocol broker (crabka-broker, see
//! `common/real_broker.rs`), which keeps transactional offsets and hides aborted
//! records from read_committed consumers — what librdkafka's mock cluster cannot.
//!
//! The SIGKILL campaign: a child process counts records per key (an aggregation whose
//! store has a changelog topic, both made by weir through the broker's CreateTopics) on
//! exactly-once; it is killed at a random point after each round of input and started
//! again on the same state directory, 20 times (`WEIR_TEST_KILLS`). Then a last runtime finishes, and
//! an rdkafka read_committed consumer (not weir's reader) checks that every key's
//! committed count equals the model and that no committed count of a key ever repeats
//! or goes back (a record counted twice, or a zombie's output, would show), and that
//! the group's committed offsets cover every input record.
//!
//! The same campaign on at-least-once loses no input; on a stream-stream join, every
//! pair is committed exactly once; three processes on six partitions, one killed and
//! restarted, count exactly.
//!
//! Joins on exactly-once across rebalances are in `real_broker_joins.rs`.

#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kafka::{committed, counts, produce, reader_of, spawn_child};
use common::real_broker::{RealBroker, committed_records, create_topics, runtime, runtime_with};
use weir::ProcessingGuarantee;
use weir::prelude::*;
use weir::runtime::internals::rdkafka;

use rdkafka::Message;

const SERVERS: &str = "WEIR_TEST_REAL_SERVERS";
const STATE_DIR: &str = "WEIR_TEST_REAL_STATE_DIR";
const GUARANTEE: &str = "WEIR_TEST_REAL_GUARANTEE";
const KEYS: usize = 20;
const PER_ROUND: usize = 200;
/// Kills per campaign (`WEIR_TEST_KILLS` overrides it).
fn kills() -> usize {
    std::env::var("WEIR_TEST_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

/// The latest value of each key, in the store "latest" (idempotent: re-processing a
/// record cannot change the final table).
fn latest() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .group_by_key()
        .reduce_with(|_, v| v, weir::Materialized::as_("latest"))
        .to_stream()
        .to("latest");
    builder.build().unwrap()
}

/// Every left record joined with every right record of its key within an hour, as
/// `left * 1,000,000 + right`, to `pairs`.
fn pairs() -> Topology {
    let builder = StreamsBuilder::new();
    let right = builder.stream::<String, i64>("right");
    builder
        .stream::<String, i64>("left")
        .join_stream(
            &right,
            |l: &i64, r: &i64| l * 1_000_000 + r,
            weir::JoinWindows::of_time_difference_with_no_grace(Duration::from_secs(3600)),
            weir::StreamJoined::defaults().with_name("pairs"),
        )
        .to("pairs");
    builder.build().unwrap()
}

/// The campaign's queries: in mode `at_least_once` `times-ten` (every input to `out`,
/// times ten) and `latest`; in mode `join` the stream-stream join `pairs`; otherwise
/// the counts; all but the first on exactly-once.
fn start(servers: &str, dir: &std::path::Path, mode: &str) -> (Runtime, Vec<QueryHandle>) {
    if mode == "at_least_once" {
        let rt = runtime_with(servers, dir, ProcessingGuarantee::AtLeastOnce);
        let q = vec![
            rt.start_query("times-ten", common::kafka::times_ten())
                .unwrap(),
            rt.start_query("latest", latest()).unwrap(),
        ];
        (rt, q)
    } else if mode == "join" {
        let rt = runtime(servers, dir);
        let q = vec![rt.start_query("pairs", pairs()).unwrap()];
        (rt, q)
    } else {
        let rt = runtime(servers, dir);
        let q = vec![rt.start_query("counts", counts()).unwrap()];
        (rt, q)
    }
}

/// The child: runs the queries of its mode (`GUARANTEE`) until it is killed, telling
/// the parent how many records the first has processed.
#[test]
#[ignore = "a child process of the real-broker tests"]
fn real_broker_member() {
    let (Ok(servers), Ok(dir)) = (std::env::var(SERVERS), std::env::var(STATE_DIR)) else {
        panic!("run only as the child of a real-broker test ({SERVERS}, {STATE_DIR} unset)");
    };
    let _ = env_logger::try_init();
    let mode = std::env::var(GUARANTEE).unwrap_or_default();
    let (_rt, queries) = start(&servers, std::path::Path::new(&dir), &mode);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut told = u64::MAX;
    while Instant::now() < deadline {
        let n = queries[0].stats().records_processed;
        if n != told {
            println!("processed {n}");
            told = n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("not killed within 120 s");
}

/// Round `r`: `PER_ROUND` records of value 1 over `KEYS` keys.
fn round(r: usize) -> Vec<(String, i64)> {
    (0..PER_ROUND)
        .map(|i| (format!("k{}", (r * PER_ROUND + i) % KEYS), 1))
        .collect()
}

/// The committed records of `counts` (big-endian i64 values).
fn committed_counts(servers: &str, partitions: i32, quiet: Duration) -> Vec<(String, i64)> {
    committed_records(servers, "counts", partitions, quiet)
        .into_iter()
        .map(|(k, v)| {
            let v = v.expect("a count, not a tombstone");
            (k, i64::from_be_bytes(v.try_into().unwrap()))
        })
        .collect()
}

/// A small deterministic generator for the kill points (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Round `r` of a campaign's input: (topic, key, value).
type Round = Vec<(&'static str, String, i64)>;

/// Round `r` of `records`, all to `in`.
fn to_in(records: Vec<(String, i64)>) -> Round {
    records.into_iter().map(|(k, v)| ("in", k, v)).collect()
}

/// The SIGKILL campaign: `kills` times, a child on `dir` running the queries of
/// `start` in `mode` is given round `r` of `input` and killed at a random point of
/// it. Returns the seed, the records each run had processed when killed, and the
/// records produced.
fn sigkill_campaign(
    servers: &str,
    dir: &std::path::Path,
    mode: &str,
    kills: usize,
    input: impl Fn(usize) -> Round,
) -> (u64, Vec<usize>, usize) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut kill_points = Vec::new();
    let mut produced = 0usize;
    for r in 0..kills {
        let mut child = spawn_child(
            "real_broker_member",
            &[
                (SERVERS, servers),
                (STATE_DIR, dir.to_str().unwrap()),
                (GUARANTEE, mode),
            ],
        );
        let processed = Arc::new(AtomicUsize::new(0));
        let out = BufReader::new(child.0.stdout.take().unwrap());
        let p = processed.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(|l| l.ok()) {
                if let Some(n) = line.strip_prefix("processed ").and_then(|n| n.parse().ok()) {
                    p.store(n, Ordering::SeqCst);
                }
            }
        });
        let records = input(r);
        produced += records.len();
        let mut by_topic: BTreeMap<&str, Vec<(String, i64)>> = BTreeMap::new();
        for (topic, k, v) in &records {
            by_topic.entry(topic).or_default().push((k.clone(), *v));
        }
        for (topic, records) in &by_topic {
            produce(servers, topic, records);
        }
        // Kill somewhere in its processing of this round: after a random number of its
        // records (or a timeout, if it is still restoring or rejoining the group).
        let at = rng.below(records.len() as u64) as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        while processed.load(Ordering::SeqCst) < at && Instant::now() < deadline {
            assert!(child.0.try_wait().unwrap().is_none(), "the child exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Then up to 400 ms more: several commits may happen first.
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        kill_points.push(processed.load(Ordering::SeqCst));
        child.kill();
    }
    (seed, kill_points, produced)
}

#[test]
fn exactly_once_counts_survive_repeated_sigkills_on_a_real_broker() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("counts", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let (seed, kill_points, produced) =
        sigkill_campaign(&servers, dir.path(), "exactly_once", kills(), |r| {
            to_in(round(r))
        });
    let kills = kill_points.len();
    println!("seed {seed}; {kills} kills after these records of each run: {kill_points:?}");

    // A last runtime finishes the work.
    let rt = runtime(&servers, dir.path());
    let q = rt.start_query("counts", counts()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&servers, "in", 2) < produced as i64 {
        assert!(
            Instant::now() < deadline,
            "offsets committed: {} of {produced}",
            committed(&servers, "in", 2)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    q.stop().unwrap();
    rt.shutdown().unwrap();

    let per_key = (produced / KEYS) as i64;
    let out = committed_counts(&servers, 2, Duration::from_secs(3));
    check_counts(
        &out,
        per_key,
        &format!(
            "seed {seed}, kill points {kill_points:?} (a repeated count: a record counted twice or a zombie's output)"
        ),
    );
    assert_eq!(committed(&servers, "in", 2), produced as i64);
    println!(
        "{produced} records, {kills} kills: every key counted {per_key}, {} committed updates, none repeated",
        out.len()
    );
}

/// The at-least-once campaign: the same kills with `times-ten` (stateless: every input
/// must reach `out`) and `latest` (a table: idempotent, so re-processing cannot change
/// it) in one runtime. Every input record is in `out` (times ten), and the final
/// latest-by-key table equals the model.
#[test]
fn at_least_once_loses_nothing_under_repeated_sigkills_on_a_real_broker() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("out", 2), ("latest", 2)]);
    let dir = tempfile::tempdir().unwrap();
    // Round r: values r * PER_ROUND.., unique, rising per key.
    let input = |r: usize| -> Vec<(String, i64)> {
        (r * PER_ROUND..(r + 1) * PER_ROUND)
            .map(|i| (format!("k{}", i % KEYS), i as i64))
            .collect()
    };
    let (seed, kill_points, produced) =
        sigkill_campaign(&servers, dir.path(), "at_least_once", kills(), |r| {
            to_in(input(r))
        });
    println!(
        "seed {seed}; {} kills after these records of each run: {kill_points:?}",
        kill_points.len()
    );
    let (_rt, queries) = start(&servers, dir.path(), "at_least_once");

    let all: Vec<(String, i64)> = (0..produced / PER_ROUND).flat_map(input).collect();
    let want_latest: BTreeMap<String, i64> = all.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut out, mut latest) = (BTreeMap::<i64, usize>::new(), BTreeMap::new());
    let (out_reader, latest_reader) = (
        reader_of(&servers, "out", Some(2), false),
        reader_of(&servers, "latest", Some(2), false),
    );
    let value = |m: &rdkafka::message::BorrowedMessage<'_>| {
        i64::from_be_bytes(m.payload().unwrap().try_into().unwrap())
    };
    while out.len() < produced || latest != want_latest {
        assert!(
            Instant::now() < deadline,
            "after 120 s: {} of {produced} inputs in out; latest {latest:?}",
            out.len()
        );
        while let Some(Ok(m)) = out_reader.poll(Duration::from_millis(10)) {
            *out.entry(value(&m)).or_default() += 1;
        }
        while let Some(Ok(m)) = latest_reader.poll(Duration::from_millis(10)) {
            let k = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            latest.insert(k, value(&m));
        }
    }
    for (_, v) in &all {
        assert!(out.contains_key(&(v * 10)), "input {v} lost; seed {seed}");
    }
    let duplicates: usize = out.values().map(|n| n - 1).sum();
    for q in queries {
        q.stop().unwrap();
    }
    println!(
        "{produced} records, {} kills: none lost ({duplicates} re-processed duplicates in out), latest table equal to the model",
        kill_points.len()
    );
}

/// The exactly-once SIGKILL campaign on a stream-stream join (issue 17). The join's
/// window stores keep their recent entries in memory and write them to RocksDB and
/// their changelogs at commits (`state/window_front.rs`), so a kill loses what the
/// last commit did not write, and the next run processes that input again. Every
/// round brings one left and one right record per key; every pair of a left and a
/// right record of one key (all within the hour-long window) must be committed once.
#[test]
fn exactly_once_a_stream_stream_join_survives_repeated_sigkills_on_a_real_broker() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("left", 2), ("right", 2), ("pairs", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let input = |r: usize| -> Round {
        (0..KEYS)
            .flat_map(|k| {
                let v = (r * KEYS + k) as i64;
                [("left", format!("k{k}"), v), ("right", format!("k{k}"), v)]
            })
            .collect()
    };
    // A fifth of the counts' kills (each takes ~11 s: a child starts, joins the group
    // and restores both stores).
    let (seed, kill_points, produced) =
        sigkill_campaign(&servers, dir.path(), "join", kills().div_ceil(5), input);
    let kills = kill_points.len();
    println!("seed {seed}; {kills} kills after these records of each run: {kill_points:?}");

    // A last runtime finishes the work.
    let (rt, queries) = start(&servers, dir.path(), "join");
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = || committed(&servers, "left", 2) + committed(&servers, "right", 2);
    while done() < produced as i64 {
        assert!(
            Instant::now() < deadline,
            "offsets committed: {} of {produced}",
            done()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    queries[0].stop().unwrap();
    rt.shutdown().unwrap();

    let mut got: Vec<i64> = committed_records(&servers, "pairs", 2, Duration::from_secs(3))
        .into_iter()
        .map(|(_, v)| i64::from_be_bytes(v.expect("a pair").try_into().unwrap()))
        .collect();
    got.sort_unstable();
    let rounds = produced / (2 * KEYS);
    let mut want: Vec<i64> = (0..KEYS)
        .flat_map(|k| {
            let of_key = move |r: usize| (r * KEYS + k) as i64;
            (0..rounds)
                .flat_map(move |a| (0..rounds).map(move |b| of_key(a) * 1_000_000 + of_key(b)))
        })
        .collect();
    want.sort_unstable();
    assert_eq!(
        got.len(),
        want.len(),
        "seed {seed}, kill points {kill_points:?}: pairs committed"
    );
    assert_eq!(got, want, "seed {seed}, kill points {kill_points:?}");
    println!(
        "{produced} records, {kills} kills: all {} pairs committed once",
        want.len()
    );
}

/// Each key's committed counts must rise (never repeat or go back) and end at `want`.
fn check_counts(out: &[(String, i64)], per_key: i64, what: &str) {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in out {
        if let Some(prev) = last.get(k) {
            assert!(
                v > prev,
                "{what}: key {k}: committed count {v} after {prev}"
            );
        }
        last.insert(k.clone(), *v);
    }
    let want: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), per_key)).collect();
    assert_eq!(last, want, "{what}");
}

/// Scale-out: three processes in one group share six partitions (each gets some);
/// one is SIGKILLed and started again while records flow. Every count is exact and no
/// committed count repeats; the changelog was created by weir through the broker's
/// CreateTopics (the mock cluster cannot create topics).
#[test]
fn three_processes_share_six_partitions_and_one_is_killed_and_restarted() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 6), ("counts", 6)]);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let spawn = |d: &tempfile::TempDir| {
        let mut child = spawn_child(
            "real_broker_member",
            &[
                (SERVERS, &servers),
                (STATE_DIR, d.path().to_str().unwrap()),
                (GUARANTEE, "exactly_once"),
            ],
        );
        let processed = Arc::new(AtomicUsize::new(0));
        let out = BufReader::new(child.0.stdout.take().unwrap());
        let p = processed.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(|l| l.ok()) {
                if let Some(n) = line.strip_prefix("processed ").and_then(|n| n.parse().ok()) {
                    p.store(n, Ordering::SeqCst);
                }
            }
        });
        (child, processed)
    };
    let mut members: Vec<_> = dirs.iter().map(spawn).collect();
    let mut produced = 0;
    let mut r = 0;
    // Rounds until every member has processed some records (the group split the six
    // partitions among the three).
    let deadline = Instant::now() + Duration::from_secs(60);
    while members.iter().any(|(_, p)| p.load(Ordering::SeqCst) == 0) {
        assert!(
            Instant::now() < deadline,
            "the group did not split the partitions"
        );
        produce(&servers, "in", &round(r));
        produced += PER_ROUND;
        r += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    // One dies mid-stream and comes back.
    members[1].0.kill();
    for _ in 0..3 {
        produce(&servers, "in", &round(r));
        produced += PER_ROUND;
        r += 1;
    }
    members[1] = spawn(&dirs[1]);
    for _ in 0..3 {
        produce(&servers, "in", &round(r));
        produced += PER_ROUND;
        r += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&servers, "in", 6) < produced as i64 {
        assert!(
            Instant::now() < deadline,
            "offsets committed: {} of {produced}",
            committed(&servers, "in", 6)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = committed_counts(&servers, 6, Duration::from_secs(3));
    check_counts(&out, (produced / KEYS) as i64, "three processes");
    println!(
        "{produced} records over 6 partitions and 3 processes, one killed and restarted: every count exact, {} committed updates, none repeated",
        out.len()
    );
}
