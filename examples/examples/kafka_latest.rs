//! The latest reading per sensor, on Kafka.
//!
//! Readings (`sensor id → temperature`, a UTF-8 key and a big-endian i64 value) come in
//! on `readings`; the query keeps each sensor's latest reading in a RocksDB store (whose
//! changelog is a Kafka topic) and writes every change to `latest-readings`.
//!
//! Without arguments it starts librdkafka's mock cluster in-process (no Kafka needed),
//! creates the topics and sends some readings. Against a real cluster:
//!
//! ```sh
//! cargo run --release -p weir-examples --features kafka --example kafka_latest -- --bootstrap-servers localhost:9092
//! ```
//!
//! The source and sink topics must exist there: `readings` and `latest-readings`, with
//! the same partition count. weir creates the store's changelog
//! `kafka-latest-readings-latest-changelog` (as many partitions, `cleanup.policy=compact`)
//! if it is missing and the application may create topics (the mock cluster cannot, so
//! the example creates it there). The example then sends its readings to `readings` and
//! prints what it reads back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use weir::KafkaConfig;
use weir::prelude::*;

// The process on jemalloc, RocksDB included (weir's `jemalloc` feature).
weir::use_jemalloc!();

const CHANGELOG: &str = "kafka-latest-readings-latest-changelog";

fn kafka(e: rdkafka::error::KafkaError) -> Error {
    Error::msg(format!("kafka: {e}"))
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let servers_arg = match (args.next().as_deref(), args.next()) {
        (Some("--bootstrap-servers"), Some(s)) => Some(s),
        (None, _) => None,
        _ => {
            return Err(Error::msg(
                "usage: kafka_latest [--bootstrap-servers host:port[,host:port...]]",
            ));
        }
    };
    // The mock cluster lives as long as `_mock`.
    let (servers, _mock) = match servers_arg {
        Some(s) => (s, None),
        None => {
            let mock = MockCluster::new(1).map_err(kafka)?;
            for t in ["readings", "latest-readings", CHANGELOG] {
                mock.create_topic(t, 2, 1).map_err(kafka)?;
            }
            (mock.bootstrap_servers(), Some(mock))
        }
    };

    let state_dir = std::env::temp_dir().join("weir-kafka-latest");
    if _mock.is_some() {
        // A new cluster each run: last run's state and checkpoints do not belong to it.
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("kafka-latest")
            .memory_limit(256 << 20)
            .commit_interval(Duration::from_millis(200))
            .state_dir(&state_dir)
            .kafka(KafkaConfig::new(&servers))
            .build()?,
    )?;
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("readings")
        .group_by_key()
        .latest_by_key_with(Materialized::as_("latest"))
        .to_stream()
        .to("latest-readings");
    let query = runtime.start_query("readings", builder.build()?)?;

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .create()
        .map_err(kafka)?;
    let mut sent = BTreeMap::new();
    for i in 0..100i64 {
        let sensor = format!("sensor-{}", i % 7);
        let temperature = 180 + (i * 37) % 50;
        producer
            .send(
                BaseRecord::to("readings")
                    .key(sensor.as_bytes())
                    .payload(&temperature.to_be_bytes()[..]),
            )
            .map_err(|(e, _)| kafka(e))?;
        sent.insert(sensor, temperature);
    }
    producer.flush(Duration::from_secs(10)).map_err(kafka)?;

    // Read the output until every sensor shows its last reading.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", "kafka-latest-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka)?;
    let md = reader
        .fetch_metadata(Some("latest-readings"), Duration::from_secs(10))
        .map_err(kafka)?;
    let mut tpl = TopicPartitionList::new();
    let partitions = md.topics().first().map_or(0, |t| t.partitions().len());
    for p in 0..partitions as i32 {
        tpl.add_partition_offset("latest-readings", p, Offset::Beginning)
            .map_err(kafka)?;
    }
    reader.assign(&tpl).map_err(kafka)?;
    let mut latest = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while latest != sent {
        if Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for the latest readings"));
        }
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            let m = m.map_err(kafka)?;
            let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                continue;
            };
            let value: [u8; 8] = v
                .try_into()
                .map_err(|_| Error::msg("a value is not 8 bytes"))?;
            latest.insert(
                String::from_utf8_lossy(k).into_owned(),
                i64::from_be_bytes(value),
            );
        }
    }
    // Tasks follow the partitions the consumer group gives this process.
    let tasks = query.stats().tasks;
    query.stop()?;
    println!("latest reading per sensor (tenths of a degree):");
    for (sensor, t) in &latest {
        println!("  {sensor}: {t}");
    }
    let stats = query.stats();
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    println!(
        "\nquery '{}' processed {} records in {} tasks; {threads} threads in this process (the runtime's {}, librdkafka's for its clients whatever the number of queries, the mock cluster's, this example's reader and producer)",
        query.name(),
        stats.records_processed,
        tasks,
        runtime.thread_count()
    );
    runtime.shutdown()
}
