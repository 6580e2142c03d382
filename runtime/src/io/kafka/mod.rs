//! Kafka through rdkafka: one consumer and one producer per runtime, whatever the number
//! of queries.
//!
//! librdkafka starts threads per client (a main thread, one per broker connection, and
//! a few internal ones), so a client per query would bring thread-per-query back. The
//! runtime makes its clients when it starts; queries only change the consumer's
//! subscription and produce through the shared producer. The I/O thread polls the
//! consumer and feeds the partition queues as it does from the in-process broker; a
//! partition whose records pile up is paused in the consumer until its task catches up.
//!
//! Scale-out is Kafka's: processes with the same application id form one consumer
//! group, and a rebalance moves partitions, and with them tasks, between them
//! (`group.rs` hands rebalances to the engine, a
//! [`GroupMember`](crate::io::transport::GroupMember)).
//!
//! Offsets are committed to the application's group. Several queries may read the same
//! partition from different positions, so the commit of a partition carries every
//! query's position in its metadata (`q1=120;q2=95`) and the group offset is the
//! smallest of them: a restarted query resumes exactly where it committed, and lag
//! tools see the slowest query.
//!
//! Every store has a changelog topic, `<application>-<query>-<store>-changelog` (see
//! `state/changelog.rs`); this module produces its entries and reads them back to
//! restore, through a third client that reads changelogs only (`admin.rs`). Missing
//! internal topics are created (`admin.rs`).
//!
//! Files: `config.rs` (the cluster and client settings), `group.rs` (rebalances,
//! owned partitions, positions and commits), `feed.rs` (polling records into the
//! partition queues), `produce.rs` (the producer and deliveries), `admin.rs`
//! (metadata, internal topics, restoring), `txn.rs` (exactly-once rounds), `global.rs`
//! (the global consumer reading global tables' partitions outside the group),
//! `transport.rs` (all of it as a [`Transport`](crate::io::transport::Transport)).
//!
//! Exactly-once makes the producer transactional; the runtime's tasks commit together,
//! in rounds (`txn.rs`).

mod admin;
mod config;
mod feed;
mod global;
pub(crate) mod group;
mod produce;
mod transport;
mod txn;

pub use config::KafkaConfig;

use crate::sync::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};

use crate::error::{Error, Result};
use crate::io::transport::TopicPartition;
use group::GroupContext;
use produce::{Deliveries, DeliveryContext};
use txn::Txn;

/// How long metadata, watermark and commit requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a commit waits for the producer's records to be acknowledged before it
/// gives up for this time (the cluster is slow or away): the task goes on and tries
/// again at its next batch, so a broker outage shows in the query's stats within
/// seconds.
const COMMIT_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A partition number as librdkafka takes it. Kafka's partition numbers are below
/// 2^31 (its protocol's INT32), so this never saturates for a partition that exists.
fn kafka_partition(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

/// How long dropping the runtime's clients waits for the group consumer to close.
const CONSUMER_CLOSE_WAIT: Duration = Duration::from_secs(10);

impl Drop for KafkaClients {
    /// Closes the group consumer (leaving the group) on a helper thread, waiting at
    /// most `CONSUMER_CLOSE_WAIT`: librdkafka's close was seen to hang in `unassign`,
    /// inside the revocation it runs, after an exactly-once campaign on a real broker
    /// (once in about ten runs); a runtime's drop must not hang with it. A close that
    /// does not finish is left to finish, or to end with the process.
    fn drop(&mut self) {
        // SAFETY: `consumer` is taken once, here, and never used again.
        let consumer = unsafe { std::mem::ManuallyDrop::take(&mut self.consumer) };
        let (done, closed) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("weir-consumer-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = done.send(());
            });
        if spawned.is_ok() && closed.recv_timeout(CONSUMER_CLOSE_WAIT).is_err() {
            log::warn!(
                "kafka: the consumer did not close within {} s; leaving it to close in the background",
                CONSUMER_CLOSE_WAIT.as_secs()
            );
        }
    }
}

/// What a fenced producer's error says.
const FENCED: &str = "this runtime's transactional producer was fenced: another process started with the same application id and state directory (so the same transactional id) and took over; this one stops, and its unfinished transaction is aborted";

fn kafka_error(context: &str, e: KafkaError) -> Error {
    if is_fenced(&e) {
        return Error::Kafka {
            context: format!("{context}: {FENCED}"),
            source: Some(Arc::new(e)),
        };
    }
    Error::Kafka {
        context: context.to_string(),
        source: Some(Arc::new(e)),
    }
}

/// The cluster did not answer in time (a broker down or restarting, a coordinator
/// moving): worth trying again later rather than failing a query (Kafka Streams'
/// `task.timeout.ms`, KIP-572).
pub(crate) fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    if let KafkaError::Transaction(t) = e
        && t.is_retriable()
    {
        return true;
    }
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::Resolve
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::TimedOutQueue
                | C::RequestTimedOut
                | C::NetworkException
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::WaitingForCoordinator
                | C::NotCoordinator
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
        )
    )
}

/// The error of a failed producer call: once librdkafka's producer has hit a fatal
/// error, every call fails with `_FATAL` (and queued records with `_PURGE_QUEUE`); the
/// fatal error itself (a fencing, most often) is what the user needs to read.
pub(crate) fn fatal_or(
    producer: &ThreadedProducer<produce::DeliveryContext>,
    context: &str,
    e: KafkaError,
) -> Error {
    if let Some(fatal) = fatal_reason(producer) {
        return Error::Kafka {
            context: format!("{context}: {fatal}"),
            source: Some(Arc::new(e)),
        };
    }
    kafka_error(context, e)
}

/// What the producer's fatal error means, if it has one.
pub(crate) fn fatal_reason(
    producer: &ThreadedProducer<produce::DeliveryContext>,
) -> Option<String> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let (code, reason) = producer.client().fatal_error()?;
    let what = if matches!(
        code,
        C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch
    ) {
        FENCED
    } else {
        "the producer hit a fatal error"
    };
    Some(format!("{what} ({reason})"))
}

/// Another producer with this transactional id took over (a zombie's error).
fn is_fenced(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch)
    )
}

/// A message's headers, as weir keeps them.
fn headers_of(m: &rdkafka::message::BorrowedMessage<'_>) -> crate::record::Headers {
    use rdkafka::Message;
    use rdkafka::message::Headers as _;
    let mut out = crate::record::Headers::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            out.add(h.key, h.value.map(bytes::Bytes::copy_from_slice));
        }
    }
    out
}

/// The id of this state directory's runtime, kept in `weir.process-id` (made once).
fn process_id(state_dir: &std::path::Path) -> Result<String> {
    let path = state_dir.join("weir.process-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let id = format!("{:016x}", h.finish());
    std::fs::write(&path, &id)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(id)
}

/// A partition bindings read: how many, and how many of them want it paused (it is
/// paused while any does).
struct Assigned {
    bindings: usize,
    pausers: usize,
}

/// The runtime's Kafka clients (a consumer, a producer, a restore consumer, and a
/// global consumer once a query has a global store) and the per-query positions it
/// commits.
pub(crate) struct KafkaClients {
    /// Closed in `Drop`, within a bound (see there).
    pub(crate) consumer: std::mem::ManuallyDrop<BaseConsumer<GroupContext>>,
    /// Reads changelogs to restore stores; assigned one partition at a time.
    restorer: Mutex<BaseConsumer>,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    /// Every query's committed position per partition, as last read or committed.
    positions: Mutex<HashMap<TopicPartition, BTreeMap<String, i64>>>,
    assigned: Mutex<HashMap<TopicPartition, Assigned>>,
    /// The partitions the group assigned to this member, with the offset the consumer
    /// reads each from when known.
    owned: Mutex<HashMap<TopicPartition, Option<i64>>>,
    /// Set when partitions are revoked: the I/O thread drops their bindings.
    revoked: std::sync::atomic::AtomicBool,
    /// Set when partitions are assigned: the I/O thread starts their tasks.
    assigned_flag: std::sync::atomic::AtomicBool,
    /// Exactly-once: the transaction every task commits in together.
    txn: Option<Txn>,
    /// Partition counts read so far: every task of every query asks for its topics'.
    partition_counts: Mutex<HashMap<String, u32>>,
    on_failure: crate::io::settings::ProductionExceptionHandler,
    /// How long a transaction's commit retries while the cluster does not answer.
    task_timeout: Duration,
    /// Where a query without a committed position starts.
    offset_reset: crate::io::settings::OffsetReset,
    /// Itself, for the feeds it hands out (set once, by `new`).
    me: OnceLock<Weak<KafkaClients>>,
    /// For the admin client that creates internal topics.
    config: KafkaConfig,
    application_id: String,
    /// Reads global stores' topics (`global.rs`), made when the first is bound.
    global: OnceLock<BaseConsumer>,
    global_bound: Mutex<global::GlobalBound>,
}

impl KafkaClients {
    /// Connects the runtime's clients to the cluster `config.kafka` names.
    pub(crate) fn new(
        cfg: &KafkaConfig,
        config: &crate::io::settings::TransportConfig<'_>,
    ) -> Result<Arc<Self>> {
        let application_id = config.application_id;
        let on_failure = config.production_exception_handler;
        let exactly_once =
            config.processing_guarantee == crate::io::settings::ProcessingGuarantee::ExactlyOnce;
        // Readers of a transactional runtime see committed transactions only.
        let isolation = if exactly_once {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        cfg.validate()?;
        let consumer: BaseConsumer<GroupContext> = cfg
            .client(&[
                // Range assignment gives partition p of every topic to one member, so a
                // task reading several co-partitioned topics moves as one.
                ("partition.assignment.strategy", "range"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "50"),
                // librdkafka's own buffers are outside weir's zones: keep them small
                // (its defaults allow 64 MiB of prefetched messages and 50 MiB fetches).
                ("queued.max.messages.kbytes", "8192"),
                ("fetch.max.bytes", "8388608"),
                ("isolation.level", isolation),
            ])
            .set("group.id", application_id)
            .create_with_context(GroupContext::default())
            .map_err(|e| kafka_error("cannot create the Kafka consumer", e))?;
        let restorer: BaseConsumer = cfg
            .client(&[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // The end of a changelog is where its records end, which under
                // read_committed is not its high watermark (transaction markers).
                ("enable.partition.eof", "true"),
                ("fetch.wait.max.ms", "50"),
                ("queued.max.messages.kbytes", "8192"),
                ("fetch.max.bytes", "8388608"),
                ("isolation.level", isolation),
            ])
            .set("group.id", format!("{application_id}-restore"))
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka restore consumer", e))?;
        let deliveries = Arc::new(Deliveries::new(
            config.production_exception_handler
                == crate::io::settings::ProductionExceptionHandler::LogAndContinue,
            exactly_once,
        ));
        let mut producer_config = cfg.client(&[
            ("linger.ms", "5"),
            ("enable.idempotence", "true"),
            // Its send queue, outside weir's zones (librdkafka's default is 1 GiB).
            ("queue.buffering.max.kbytes", "16384"),
        ]);
        if exactly_once {
            // Stable across restarts of this state directory: a restarted runtime
            // fences its crashed predecessor and aborts its open transaction at once.
            let id = format!("{application_id}-{}", process_id(config.state_dir)?);
            producer_config.set("transactional.id", id);
        }
        let producer: ThreadedProducer<DeliveryContext> = producer_config
            .create_with_context(DeliveryContext(deliveries.clone()))
            .map_err(|e| kafka_error("cannot create the Kafka producer", e))?;
        let txn = if exactly_once {
            producer
                .init_transactions(REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("cannot start the transactional producer", e))?;
            Some(Txn::default())
        } else {
            None
        };
        let clients = Arc::new(KafkaClients {
            consumer: std::mem::ManuallyDrop::new(consumer),
            restorer: Mutex::new(restorer),
            producer,
            deliveries,
            positions: Mutex::new(HashMap::new()),
            assigned: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            revoked: Default::default(),
            assigned_flag: Default::default(),
            txn,
            config: cfg.clone(),
            partition_counts: Mutex::new(HashMap::new()),
            on_failure,
            task_timeout: config.task_timeout,
            offset_reset: config.offset_reset,
            me: OnceLock::new(),
            application_id: application_id.to_string(),
            global: OnceLock::new(),
            global_bound: Mutex::new(global::GlobalBound::default()),
        });
        let _ = clients.me.set(Arc::downgrade(&clients));
        let _ = clients
            .consumer
            .context()
            .clients
            .set(Arc::downgrade(&clients));
        Ok(clients)
    }

    /// Itself, shared (it always is: `new` makes it so).
    fn shared(&self) -> Option<Arc<KafkaClients>> {
        self.me.get().and_then(Weak::upgrade)
    }
}
