//! Exactly-once against a real Kafka-protocol broker (crabka-broker, see
//! `common/real_broker.rs`), which keeps transactional offsets and hides aborted
//! records from read_committed consumers — what librdkafka's mock cluster cannot.
//!
//! The SIGKILL campaign: a child process counts records per key (an aggregation whose
//! store has a changelog topic, both made by weir through the broker's CreateTopics) on
//! exactly-once; it is killed at a random point after each round of input and started
//! again on the same state directory, `KILLS` times. Then a last runtime finishes, and
//! an rdkafka read_committed consumer (not weir's reader) checks that every key's
//! committed count equals the model and that no committed count of a key ever repeats
//! or goes back (a record counted twice, or a zombie's output, would show), and that
//! the group's committed offsets cover every input record.

#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kafka::{committed, counts, produce, spawn_child};
use common::real_broker::RealBroker;
use weir::prelude::*;
use weir::runtime::internals::rdkafka;
use weir::{KafkaConfig, ProcessingGuarantee};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

const SERVERS: &str = "WEIR_TEST_REAL_SERVERS";
const STATE_DIR: &str = "WEIR_TEST_REAL_STATE_DIR";
const KEYS: usize = 20;
const PER_ROUND: usize = 200;
/// Kills per campaign (`WEIR_TEST_KILLS` overrides it).
fn kills() -> usize {
    std::env::var("WEIR_TEST_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

/// An exactly-once runtime on the broker. crabka-broker does not take replication
/// factor -1 (the broker's default, weir's default as Kafka Streams'): its internal
/// topics get 1.
fn runtime(servers: &str, dir: &std::path::Path) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .application_id("kafka-test")
            .commit_interval(Duration::from_millis(100))
            .state_dir(dir)
            .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
            .kafka(
                KafkaConfig::new(servers)
                    .property("session.timeout.ms", "6000")
                    .property("heartbeat.interval.ms", "500")
                    .replication_factor(1),
            )
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// The child: counts on exactly-once until it is killed, telling the parent how many
/// records it has processed.
#[test]
#[ignore = "a child process of the real-broker tests"]
fn real_broker_member() {
    let (Ok(servers), Ok(dir)) = (std::env::var(SERVERS), std::env::var(STATE_DIR)) else {
        panic!("run only as the child of a real-broker test ({SERVERS}, {STATE_DIR} unset)");
    };
    let _ = env_logger::try_init();
    let rt = runtime(&servers, std::path::Path::new(&dir));
    let q = rt.start_query("counts", counts()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut told = u64::MAX;
    while Instant::now() < deadline {
        let n = q.stats().records_processed;
        if n != told {
            println!("processed {n}");
            told = n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("not killed within 120 s");
}

fn create_topics(servers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = block_on(admin.create_topics(&new, &AdminOptions::new()));
    for r in results.unwrap() {
        r.unwrap();
    }
}

/// Runs a future to completion on this thread (the admin client's calls are futures).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn raw() -> RawWaker {
        fn clone(_: *const ()) -> RawWaker {
            raw()
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    // SAFETY: the waker's functions ignore their (null) data pointer.
    let waker = unsafe { Waker::from_raw(raw()) };
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Round `r`: `PER_ROUND` records of value 1 over `KEYS` keys.
fn round(r: usize) -> Vec<(String, i64)> {
    (0..PER_ROUND)
        .map(|i| (format!("k{}", (r * PER_ROUND + i) % KEYS), 1))
        .collect()
}

/// Every committed record of `counts` (read_committed), in each partition's order,
/// read until nothing new came for `quiet`.
fn committed_counts(servers: &str, quiet: Duration) -> Vec<(String, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "real-broker-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("counts", p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while last_new.elapsed() < quiet {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value = i64::from_be_bytes(m.payload().unwrap().try_into().unwrap());
            out.push((key, value));
            last_new = Instant::now();
        }
    }
    out
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

#[test]
fn exactly_once_counts_survive_repeated_sigkills_on_a_real_broker() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("in", 2), ("counts", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut kill_points = Vec::new();
    let mut produced = 0usize;
    let kills = kills();
    for r in 0..kills {
        let mut child = spawn_child(
            "real_broker_member",
            &[
                (SERVERS, &servers),
                (STATE_DIR, dir.path().to_str().unwrap()),
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
        produce(&servers, "in", &round(r));
        produced += PER_ROUND;
        // Kill somewhere in its processing of this round: after a random number of its
        // records (or a timeout, if it is still restoring or rejoining the group).
        let at = rng.below(PER_ROUND as u64) as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        while processed.load(Ordering::SeqCst) < at && Instant::now() < deadline {
            assert!(child.0.try_wait().unwrap().is_none(), "the child exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Then up to 400 ms more: several commits (transactions) may happen first.
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        kill_points.push(processed.load(Ordering::SeqCst));
        child.kill();
    }
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
    let out = committed_counts(&servers, Duration::from_secs(3));
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in &out {
        if let Some(prev) = last.get(k) {
            assert!(
                v > prev,
                "key {k}: committed count {v} after {prev} (a record counted twice or a zombie's output); seed {seed}"
            );
        }
        last.insert(k.clone(), *v);
    }
    let want: BTreeMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), per_key)).collect();
    assert_eq!(last, want, "seed {seed}, kill points {kill_points:?}");
    assert_eq!(committed(&servers, "in", 2), produced as i64);
    println!(
        "{produced} records, {kills} kills: every key counted {per_key}, {} committed updates, none repeated",
        out.len()
    );
}
