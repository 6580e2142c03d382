//! Kafka helpers: librdkafka's mock cluster, a producer and a reader for the tests'
//! topics (String keys, big-endian i64 values), and a runtime on the cluster.

// rdkafka as weir re-exports it (weir's tests have no dependency of their own on it).
use weir::runtime::internals::rdkafka;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ThreadedProducer,
};
use rdkafka::{Message, Offset, TopicPartitionList};
use weir::prelude::*;
use weir::{KafkaConfig, RuntimeConfigBuilder};

/// librdkafka's mock cluster, owned by a client of its own (which is how its group
/// settings can be reached).
pub struct Mock {
    client: BaseProducer,
}

impl Mock {
    pub fn cluster(&self) -> MockCluster<'_, DefaultProducerContext> {
        self.client.client().mock_cluster().unwrap()
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster().bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster().create_topic(topic, partitions, 1).unwrap();
    }
}

/// A one-broker mock cluster with `topics`. Its group coordinator forms a new group at
/// once (a real broker, and the mock by default, wait 3 s for more members).
pub fn cluster(topics: &[(&str, i32)]) -> Mock {
    let _ = env_logger::builder().is_test(true).try_init();
    let client: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .unwrap();
    // SAFETY: the handle is the client's mock cluster, alive while the client is.
    unsafe {
        let mcluster =
            rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr());
        assert!(!mcluster.is_null());
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, 0);
    }
    let mock = Mock { client };
    for (t, p) in topics {
        mock.create_topic(t, *p);
    }
    mock
}

pub fn produce(servers: &str, topic: &str, records: &[(String, i64)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    for (k, v) in records {
        let value = v.to_be_bytes();
        producer
            .send(BaseRecord::to(topic).key(k.as_bytes()).payload(&value[..]))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Produces string records (`None`: a tombstone) with Kafka's (Java) default
/// partitioner, murmur2 of the key, as weir's sinks partition: a topic written here is
/// co-partitioned with what weir writes by the same keys (librdkafka's own default,
/// CRC32, would not be).
pub fn send(servers: &str, topic: &str, records: &[(String, Option<String>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (k, v) in records {
        let mut r = BaseRecord::to(topic).key(k.as_bytes());
        if let Some(v) = v {
            r = r.payload(v.as_bytes());
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Every record of `topic` once there are at least `n` (then a little longer, so extra
/// records would show), as (key, value).
pub fn read(servers: &str, topic: &str, n: usize) -> Vec<(String, i64)> {
    read_with(servers, topic, n, false)
}

/// A consumer (no group membership) reading every partition of `topic` from the start.
fn reader(servers: &str, topic: &str, read_committed: bool) -> BaseConsumer {
    reader_of(servers, topic, None, read_committed)
}

/// A consumer (no group membership) reading `topic`'s first `partitions` partitions
/// (`None`: all, as the cluster's metadata says) from the start; with
/// `read_committed` it sees committed transactions' records only.
pub fn reader_of(
    servers: &str,
    topic: &str,
    partitions: Option<i32>,
    read_committed: bool,
) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let partitions = partitions.unwrap_or_else(|| {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .unwrap();
        md.topics()[0].partitions().len() as i32
    });
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// [`read`], with `read_committed`: records of committed transactions only.
pub fn read_with(servers: &str, topic: &str, n: usize, read_committed: bool) -> Vec<(String, i64)> {
    let consumer = reader(servers, topic, read_committed);
    let mut out = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let mut quiet_until = None;
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value = i64::from_be_bytes(m.payload().unwrap().try_into().unwrap());
            out.push((key, value));
        }
        // Once there are `n`, 300 ms more (extra records would show); at least 1 s in
        // all, so a read of "whatever there is" does not end before the fetch.
        if out.len() >= n && quiet_until.is_none() {
            quiet_until = Some(
                (Instant::now() + Duration::from_millis(300)).max(started + Duration::from_secs(1)),
            );
        }
        if quiet_until.is_some_and(|q| Instant::now() >= q) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {} records, expected {n}",
            out.len()
        );
    }
}

pub fn runtime(servers: &str, dir: &std::path::Path) -> Runtime {
    Runtime::new(config(servers, dir).build().unwrap()).unwrap()
}

/// The settings of [`runtime`], to change some.
pub fn config(servers: &str, dir: &std::path::Path) -> RuntimeConfigBuilder {
    RuntimeConfig::builder()
        .workers(2)
        .application_id("kafka-test")
        .commit_interval(Duration::from_millis(100))
        .state_dir(dir)
        .kafka(
            // The mock's group waits a session timeout less a second for members to
            // rejoin after one leaves (librdkafka's default is 45 s).
            KafkaConfig::new(servers)
                .property("session.timeout.ms", "2000")
                .property("heartbeat.interval.ms", "300"),
        )
}

pub fn times_ten() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .map_values(|v| v * 10)
        .to("out");
    builder.build().unwrap()
}

/// The changelog topic of `counts()` run as query `counts`.
pub const COUNTS_CHANGELOG: &str = "kafka-test-counts-counts-changelog";

/// Counts per key into `counts`, in the store "counts".
pub fn counts() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .group_by_key()
        .count_with(Materialized::as_("counts"))
        .to_stream()
        .to("counts");
    builder.build().unwrap()
}

/// "poison" → "poisoned", failing (a panic in the processor) on a negative value.
pub fn poisoned() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("poison")
        .map_values(|v| {
            assert!(v >= 0, "poisoned value {v}");
            v
        })
        .to("poisoned");
    builder.build().unwrap()
}

/// orders (customer id → order id) left-joined with customers (id → name) into
/// `enriched` as `order:name` (`?` for no customer).
pub fn enrich() -> Topology {
    let builder = StreamsBuilder::new();
    let customers = builder.table::<String, String>("customers");
    builder
        .stream::<String, String>("orders")
        .left_join(&customers, |order: &String, name: Option<&String>| {
            format!("{order}:{}", name.map_or("?", String::as_str))
        })
        .to("enriched");
    builder.build().unwrap()
}

pub fn records(keys: usize, each: usize) -> Vec<(String, i64)> {
    (0..each)
        .flat_map(|_| (0..keys).map(|k| (format!("k{k}"), 1)))
        .collect()
}

/// The last value of each key.
pub fn last(records: &[(String, i64)]) -> BTreeMap<String, i64> {
    records.iter().cloned().collect()
}

/// Makes the cluster refuse its next `n` produce requests, with an error that is not
/// retried (it refuses every producer's, this test's too).
pub fn refuse_produce(mock: &Mock, n: usize) {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; n];
    mock.cluster()
        .request_errors(RDKafkaApiKey::Produce, &errors);
}

/// The group's committed offsets of `topic`'s partitions, summed.
pub fn committed(servers: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "kafka-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    c.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// Reads `topic` until the last value of every key equals `want` (30 s at most).
/// With `read_committed`, only records of committed transactions are read.
pub fn wait_for_last(
    servers: &str,
    topic: &str,
    want: &BTreeMap<String, i64>,
    read_committed: bool,
) {
    let consumer = reader(servers, topic, read_committed);
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while &last != want {
        assert!(
            Instant::now() < deadline,
            "{topic}: last values {last:?}, want {want:?}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value = i64::from_be_bytes(m.payload().unwrap().try_into().unwrap());
            last.insert(key, value);
        }
    }
}

pub fn each(keys: usize, n: i64) -> BTreeMap<String, i64> {
    (0..keys).map(|k| (format!("k{k}"), n)).collect()
}

/// Runs the ignored test `name` of this test binary as a child process with `env`
/// (its stdout piped, its stderr shown with the test's output).
/// Killed (SIGKILL) when dropped, so a failing test leaves no process behind.
pub struct ChildProcess(pub std::process::Child);

impl ChildProcess {
    /// Kills it (SIGKILL: no shutdown, no commit) and waits for it.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_child(name: &str, env: &[(&str, &str)]) -> ChildProcess {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--ignored", "--exact", name, "--nocapture"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    ChildProcess(c.spawn().unwrap())
}
