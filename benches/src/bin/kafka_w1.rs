//! W1 through Kafka, next to raw rdkafka: issue 5's benchmark on librdkafka's mock
//! cluster (one broker, in-process on loopback). The target is a weir query reading
//! Kafka at ≥ 70% of the consume-only rate measured here, in the same run.
//!
//! The mock broker keeps only about the last 5 MB (or 100,000 messages) of each
//! partition and drops older ones, so records cannot be preloaded: each round produces
//! `chunk` records of W1's shape (8-byte keys over `keys`, 200-byte random printable
//! values, well under 5 MB per partition of a 4-partition topic) in one transaction, so
//! consumers (read_committed) see the round only once it is all there, and only the
//! reading is timed, from the commit until the round is read, summed over the rounds:
//!
//! 1. raw: one rdkafka consumer assigned every partition from the beginning (no group,
//!    no commits), reading in its own thread all along, as the query does;
//! 2. weir: a runtime on the cluster (memory limit 512 MiB, 2 workers, default zones)
//!    runs W1 (`group_by_key → latest_by_key` into RocksDB, whose changelog goes to
//!    Kafka) and writes every change to an output topic; the clock runs from the commit of
//!    each round until the query has processed it. The query's commits (every
//!    30 s, and at the stop, which is timed too) flush the producer and commit offsets.
//!
//! Consumers use `fetch.wait.max.ms` 10: librdkafka's default, 500, makes the broker hold
//! the fetch at the end of each round, and the reading then measured the rounds.
//!
//! `cargo run --release -p weir-benches --bin kafka_w1 -- [records] [keys] [runs] [chunk]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use weir::prelude::*;
use weir::serde::Bytes;
use weir::{KafkaConfig, Materialized};
use weir_benches::{arg, fresh_dir, median, peak_rss_bytes, xorshift};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTITIONS: i32 = 4;

fn kafka(e: rdkafka::error::KafkaError) -> Error {
    Error::msg(format!("kafka: {e}"))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Produces `n` W1 records to `topic` in one transaction: consumers (read_committed,
/// librdkafka's default) see none of them until it commits, and then all.
fn produce_round(
    producer: &BaseProducer,
    topic: &str,
    n: u64,
    keys: u64,
    next: &mut impl FnMut() -> u64,
) -> Result<()> {
    producer.begin_transaction().map_err(kafka)?;
    let mut value = [0u8; 200];
    for _ in 0..n {
        let key = (next() % keys).to_be_bytes();
        for b in value.iter_mut() {
            *b = b' ' + (next() % 95) as u8;
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .key(&key[..])
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => return Err(kafka(e)),
            }
        }
    }
    producer
        .commit_transaction(Duration::from_secs(60))
        .map_err(kafka)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = arg(&mut args, 2_000_000);
    let keys: u64 = arg(&mut args, 1_000_000);
    let runs: usize = arg(&mut args, 3);
    let chunk: u64 = arg(&mut args, 40_000);
    println!("threads before the cluster: {}", threads());

    let mock = MockCluster::new(1).map_err(kafka)?;
    let servers = mock.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("transactional.id", "kafka-w1-bench")
        .create()
        .map_err(kafka)?;
    producer
        .init_transactions(Duration::from_secs(30))
        .map_err(kafka)?;
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);

    let mut raw = Vec::new();
    for run in 0..runs {
        let topic = format!("raw-input-{run}");
        mock.create_topic(&topic, PARTITIONS, 1).map_err(kafka)?;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", format!("raw-{run}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(kafka)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(kafka)?;
        }
        consumer.assign(&tpl).map_err(kafka)?;
        // The consumer reads in its own thread all along, as the query does; neither sees
        // a round before its transaction commits.
        let consumed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (consumed, stop) = (consumed.clone(), stop.clone());
            std::thread::spawn(move || -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            std::hint::black_box((m.key(), m.payload()));
                            consumed.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Err(e)) => return Err(kafka(e)),
                        None => {}
                    }
                }
                Ok(())
            })
        };
        let mut produced = 0u64;
        let mut reading = Duration::ZERO;
        while produced < records {
            let n = chunk.min(records - produced);
            produce_round(&producer, &topic, n, keys, &mut next)?;
            produced += n;
            let start = Instant::now();
            while consumed.load(Ordering::Relaxed) < produced {
                if start.elapsed() > Duration::from_secs(60) || reader.is_finished() {
                    return Err(Error::msg(format!(
                        "raw run {run}: stalled at {} of {produced}",
                        consumed.load(Ordering::Relaxed)
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            reading += start.elapsed();
        }
        stop.store(true, Ordering::Relaxed);
        reader
            .join()
            .map_err(|_| Error::msg("the raw reader panicked"))??;
        let consumed = consumed.load(Ordering::Relaxed);
        let rate = consumed as f64 / reading.as_secs_f64();
        println!(
            "raw run {run}: consumed {consumed} records in {:.2} s = {rate:.0} records/s; threads {}",
            reading.as_secs_f64(),
            threads()
        );
        raw.push(rate);
    }

    let mut weir_rates = Vec::new();
    for run in 0..runs {
        let (input, output) = (format!("w1-input-{run}"), format!("w1-output-{run}"));
        let query = format!("w1-{run}");
        // A group per run: the mock makes a new member of a group another just left
        // wait a session timeout (45 s) before it assigns anything.
        let application = format!("kafka-w1-{run}");
        let changelog = format!("{application}-{query}-latest-changelog");
        for t in [&input, &output, &changelog] {
            mock.create_topic(t, PARTITIONS, 1).map_err(kafka)?;
        }
        let state_dir = fresh_dir(&format!("weir-kafka-w1-{run}"));
        let runtime = Runtime::new(
            RuntimeConfig::builder()
                .application_id(&application)
                .workers(2)
                .memory_limit(512 << 20)
                .state_dir(&state_dir)
                .kafka(KafkaConfig::new(&servers).property("fetch.wait.max.ms", "10"))
                .build()?,
        )?;
        let builder = StreamsBuilder::new();
        builder
            .stream_with(
                &[input.as_str()],
                Consumed::<u64, Bytes>::with(U64Serde, BytesSerde),
            )
            .group_by_key_with(Grouped::<u64, Bytes>::with(U64Serde, BytesSerde))
            .latest_by_key_with(Materialized::as_("latest"))
            .to_stream()
            .to_with(&output, Produced::with(U64Serde, OptionSerde(BytesSerde)));
        let q = runtime.start_query(&query, builder.build()?)?;
        // Not timed: the group forms (the mock waits 3 s for more members) and assigns
        // the partitions, whose tasks start.
        let joined = Instant::now();
        while q.stats().tasks < PARTITIONS as usize {
            if joined.elapsed() > Duration::from_secs(30) {
                return Err(Error::msg("no partitions assigned within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut produced = 0u64;
        let mut processing = Duration::ZERO;
        while produced < records {
            let n = chunk.min(records - produced);
            produce_round(&producer, &input, n, keys, &mut next)?;
            produced += n;
            let start = Instant::now();
            let deadline = start + Duration::from_secs(60);
            while q.stats().records_processed < produced {
                if let QueryState::Failed(e) = q.state() {
                    return Err(e);
                }
                if Instant::now() > deadline {
                    return Err(Error::msg(format!(
                        "weir run {run}: stalled at {} of {produced}",
                        q.stats().records_processed
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            processing += start.elapsed();
        }
        let start = Instant::now();
        q.stop()?;
        processing += start.elapsed();
        let rate = records as f64 / processing.as_secs_f64();
        println!(
            "weir run {run}: {records} records in {:.2} s = {rate:.0} records/s; threads {}; peak RSS so far {} MiB",
            processing.as_secs_f64(),
            threads(),
            peak_rss_bytes().unwrap_or(0) >> 20
        );
        weir_rates.push(rate);
        runtime.shutdown()?;
        drop(runtime);
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let (r, w) = (median(raw), median(weir_rates));
    println!(
        "W1 through the mock cluster ({records} records, {keys} keys, 200-byte values, rounds of {chunk}): raw rdkafka consume median {r:.0} records/s; weir median {w:.0} records/s = {:.0}% of raw (target ≥ 70%); peak RSS {} MiB",
        100.0 * w / r,
        peak_rss_bytes().unwrap_or(0) >> 20
    );
    Ok(())
}
