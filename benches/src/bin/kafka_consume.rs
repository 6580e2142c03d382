//! Raw rdkafka throughput through librdkafka's mock cluster: the limit a weir query
//! reading from Kafka is measured against (issue 5's target is at least 70% of the
//! consume-only rate measured here, in the same run).
//!
//! Starts an in-process mock cluster (one broker on loopback) and, per run, a
//! 4-partition topic. The mock broker keeps only about the last 5 MB (or 100,000
//! messages) of each partition and drops older ones, so the records cannot be loaded
//! first: each round produces `chunk` records of W1's shape (8-byte keys over `keys`,
//! 200-byte random printable values, well under 5 MB per partition) and flushes, then
//! one consumer, assigned every partition from the beginning (no group rebalance, no
//! commits), reads them back. Only the reading is timed: the consume rate is `records`
//! over the summed reading time. The consumer's `fetch.wait.max.ms` is 10 (librdkafka's
//! default, 500, makes the broker hold the fetch at the end of each round: the reading
//! then measured the rounds, ~104 k records/s). Prints the produce rate too, each run's
//! consume rate, their median, and the process's thread count.
//!
//! `cargo run --release -p weir-benches --bin kafka_consume -- [records] [keys] [runs] [chunk] [fetch_wait_ms]`

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use weir::prelude::*;
use weir_benches::{arg, median, xorshift};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTITIONS: i32 = 4;

fn kafka(e: rdkafka::error::KafkaError) -> Error {
    Error::msg(format!("kafka: {e}"))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = arg(&mut args, 2_000_000);
    let keys: u64 = arg(&mut args, 1_000_000);
    let runs: usize = arg(&mut args, 3);
    let chunk: u64 = arg(&mut args, 40_000);
    let fetch_wait: String = arg(&mut args, "10".to_string());
    println!("threads before the cluster: {}", threads());

    let mock = MockCluster::new(1).map_err(kafka)?;
    let servers = mock.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .map_err(kafka)?;
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    let mut value = [0u8; 200];
    let mut rates = Vec::new();
    for run in 0..runs {
        let topic = format!("w1-input-{run}");
        mock.create_topic(&topic, PARTITIONS, 1).map_err(kafka)?;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", format!("raw-{run}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", &fetch_wait)
            .create()
            .map_err(kafka)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(kafka)?;
        }
        consumer.assign(&tpl).map_err(kafka)?;
        let (mut produced, mut consumed, mut bytes) = (0u64, 0u64, 0usize);
        let (mut producing, mut consuming) = (Duration::ZERO, Duration::ZERO);
        while produced < records {
            let n = chunk.min(records - produced);
            let start = Instant::now();
            for _ in 0..n {
                let key = (next() % keys).to_be_bytes();
                for b in value.iter_mut() {
                    *b = b' ' + (next() % 95) as u8;
                }
                let mut record = BaseRecord::<[u8], [u8]>::to(&topic)
                    .key(&key[..])
                    .payload(&value[..]);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((e, r))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(5));
                            record = r;
                        }
                        Err((e, _)) => return Err(kafka(e)),
                    }
                }
            }
            producer.flush(Duration::from_secs(60)).map_err(kafka)?;
            producing += start.elapsed();
            produced += n;
            let start = Instant::now();
            while consumed < produced {
                match consumer.poll(Duration::from_secs(10)) {
                    Some(Ok(m)) => {
                        consumed += 1;
                        bytes +=
                            m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
                    }
                    Some(Err(e)) => return Err(kafka(e)),
                    None => {
                        return Err(Error::msg(format!(
                            "run {run}: no message for 10 s after {consumed} of {produced}"
                        )));
                    }
                }
            }
            consuming += start.elapsed();
        }
        let rate = consumed as f64 / consuming.as_secs_f64();
        println!(
            "run {run}: produced {produced} records at {:.0} records/s; consumed {consumed} ({} MiB of keys and values) in {:.2} s = {rate:.0} records/s; threads {}",
            produced as f64 / producing.as_secs_f64(),
            bytes >> 20,
            consuming.as_secs_f64(),
            threads()
        );
        rates.push(rate);
    }
    println!(
        "raw rdkafka consume through the mock cluster: median {:.0} records/s over {runs} runs ({records} records in rounds of {chunk}, 4 partitions, one consumer)",
        median(rates)
    );
    Ok(())
}
