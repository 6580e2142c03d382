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
//! ([`GroupContext`] hands rebalances to the runtime core, a [`GroupMember`]).
//!
//! Offsets are committed to the application's group. Several queries may read the same
//! partition from different positions, so the commit of a partition carries every
//! query's position in its metadata (`q1=120;q2=95`) and the group offset is the
//! smallest of them: a restarted query resumes exactly where it committed, and lag
//! tools see the slowest query.
//!
//! Every store has a changelog topic, `<application>-<query>-<store>-changelog`:
//! [`ChangeloggedStore`] produces each write to the task's partition of it, and a task
//! whose store lacks what the changelog holds (a new machine, a lost state directory, a
//! partition taken over from another process) restores it before it processes
//! anything, through a third client that reads changelogs only. A checkpoint file next
//! to a RocksDB store records the changelog offset its contents reach, so a restart
//! restores only what came after. Missing internal topics are created
//! ([`KafkaClients::ensure_topics`]).
//!
//! Exactly-once makes the producer transactional; the runtime's tasks commit together,
//! in rounds ([`Txn`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// How long metadata, watermark and commit requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the runtime's Kafka cluster is, and extra librdkafka settings for both clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    bootstrap_servers: String,
    properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A cluster reached through `bootstrap_servers` (`host:port[,host:port…]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
        }
    }

    /// Sets a librdkafka property on both clients (e.g. `security.protocol`). Set after
    /// weir's own, so it wins; `group.id` and offset handling are weir's.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config(
                "kafka bootstrap servers must not be empty".into(),
            ));
        }
        for (k, _) in &self.properties {
            if matches!(
                k.as_str(),
                "group.id" | "enable.auto.commit" | "enable.auto.offset.store"
            ) {
                return Err(Error::Config(format!(
                    "kafka property '{k}' is set by weir (the group is the application id; offsets are committed by the runtime)"
                )));
            }
        }
        Ok(())
    }

    fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

fn kafka_error(context: &str, e: KafkaError) -> Error {
    Error::Kafka(format!("{context}: {e}"))
}

/// Keeps each query's first failed delivery: the query's next commit reports it
/// instead of committing offsets past a record that was not written. (Each record
/// carries its query's id; one query's failure is not another's.)
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Per query id: the first failure not yet reported, and how many records failed.
    failed: Mutex<HashMap<usize, (String, u64)>>,
    /// The highest acknowledged offset per partition (changelog checkpoints).
    acked: Mutex<HashMap<(String, i32), i64>>,
}

/// The producer's context: records failed deliveries in [`Deliveries`].
pub(crate) struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, query: usize) {
        use rdkafka::Message;
        if let Ok(m) = result {
            let mut acked = self.0.acked.lock().unwrap_or_else(|p| p.into_inner());
            let at = acked
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(m.offset());
            *at = (*at).max(m.offset());
        }
        if let Err((e, m)) = result {
            let mut failed = self.0.failed.lock().unwrap_or_else(|p| p.into_inner());
            let entry = failed.entry(query).or_insert_with(|| {
                let first = format!(
                    "producing to '{}' partition {} failed: {e}",
                    m.topic(),
                    m.partition()
                );
                (first, 0)
            });
            entry.1 += 1;
        }
    }
}

/// What the runtime does when the consumer group moves partitions (implemented by the
/// runtime core; called on the I/O thread, inside the consumer's poll).
pub(crate) trait GroupMember: Send + Sync {
    /// `partitions` leave this member: the tasks reading them commit and close before
    /// this returns, so the next owner starts from their offsets and changelogs.
    fn revoked(self: Arc<Self>, partitions: &[(String, i32)]);
    /// `partitions` are this member's now: returns the offset to read each from (the
    /// earliest position a query needs; `None`: the group's committed offset).
    fn assigned(self: Arc<Self>, partitions: &[(String, i32)]) -> Vec<Option<i64>>;
    /// After a poll that assigned partitions: builds the tasks of the partitions
    /// assigned since, returning their bindings.
    fn start_assigned(self: Arc<Self>) -> Vec<crate::io::thread::Binding>;
}

/// The consumer's context: hands rebalances to the [`GroupMember`].
#[derive(Default)]
pub(crate) struct GroupContext {
    member: OnceLock<Weak<dyn GroupMember>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let member = self.member.get().and_then(Weak::upgrade);
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                log::info!("kafka: assigned {parts:?}");
                let starts = match member {
                    Some(m) => m.assigned(&parts),
                    None => vec![None; parts.len()],
                };
                let mut with = TopicPartitionList::new();
                for ((t, p), s) in parts.iter().zip(&starts) {
                    let offset = s.map_or(Offset::Stored, Offset::Offset);
                    if let Err(e) = with.add_partition_offset(t, *p, offset) {
                        log::error!("kafka: bad partition {t}/{p}: {e}");
                    }
                }
                if cooperative {
                    consumer.incremental_assign(&with)
                } else {
                    consumer.assign(&with)
                }
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    log::error!(
                        "kafka: rebalance failed ({}); giving up the partitions",
                        RDKafkaErrorCode::from(err)
                    );
                }
                log::info!("kafka: revoked {parts:?}");
                if let Some(m) = member {
                    m.revoked(&parts);
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            log::error!("kafka: applying a rebalance failed: {e}");
        }
    }
}

/// Waits for `f` on this thread (the admin client's futures complete on its own
/// polling thread; weir runs no async runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// A task's next offset of a partition, handed to an exactly-once commit.
pub(crate) struct TxnOffset {
    pub(crate) query: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// What [`KafkaClients::prepare`] did.
pub(crate) enum Prepared {
    /// This task was the last one: the transaction is committed.
    Committed,
    /// Waiting for the other tasks of this round (numbered) to prepare.
    Wait(u64),
}

/// Exactly-once: one transaction for every task of the runtime (it has one producer).
/// A commit is a round: a task whose commit is due requests one; every task then
/// flushes what it holds (output and changelog writes go into the transaction), hands
/// over its offsets and stops processing; the last one sends the offsets and commits
/// the transaction, and all go on.
#[derive(Default)]
pub(crate) struct Txn {
    state: Mutex<TxnState>,
    /// A transaction was begun and not yet committed.
    open: std::sync::atomic::AtomicBool,
}

struct TxnTask {
    prepared: bool,
    wake: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct TxnState {
    tasks: HashMap<u64, TxnTask>,
    requested: bool,
    /// Rounds committed so far.
    round: u64,
    offsets: Vec<TxnOffset>,
    /// Set when a transaction was aborted: every task fails.
    failed: Option<String>,
}

impl Txn {
    /// Begins a transaction unless one is open.
    fn ensure_open(&self, producer: &ThreadedProducer<DeliveryContext>) -> Result<()> {
        if self.open.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let _st = lock(&self.state);
        self.begin(producer)
    }

    /// Begins a transaction unless one is open; the state lock is held.
    fn begin(&self, producer: &ThreadedProducer<DeliveryContext>) -> Result<()> {
        use std::sync::atomic::Ordering::{Acquire, Release};
        if !self.open.load(Acquire) {
            producer
                .begin_transaction()
                .map_err(|e| kafka_error("exactly-once: cannot begin a transaction", e))?;
            self.open.store(true, Release);
        }
        Ok(())
    }

    /// A task joins; `wake` makes it run (to prepare, or to go on after a round).
    pub(crate) fn join(&self, task: u64, wake: Box<dyn Fn() + Send + Sync>) {
        lock(&self.state).tasks.insert(
            task,
            TxnTask {
                prepared: false,
                wake,
            },
        );
    }

    /// Asks for a commit round: wakes every task that has not prepared.
    pub(crate) fn request(&self) {
        let mut st = lock(&self.state);
        if st.requested {
            return;
        }
        st.requested = true;
        log::debug!("exactly-once: round {} requested", st.round);
        for t in st.tasks.values().filter(|t| !t.prepared) {
            (t.wake)();
        }
    }

    /// Whether a round is requested, and how many rounds committed so far.
    pub(crate) fn status(&self) -> (bool, u64) {
        let st = lock(&self.state);
        (st.requested, st.round)
    }

    /// The failure that aborted the transaction, if any.
    pub(crate) fn failed(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }
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

/// The runtime's Kafka clients (a consumer, a producer, a restore consumer) and the
/// per-query positions it commits.
pub(crate) struct KafkaClients {
    pub(crate) consumer: BaseConsumer<GroupContext>,
    /// Reads changelogs to restore stores; assigned one partition at a time.
    restorer: Mutex<BaseConsumer>,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    /// Every query's committed position per partition, as last read or committed.
    positions: Mutex<HashMap<(String, i32), BTreeMap<String, i64>>>,
    assigned: Mutex<HashMap<(String, i32), Assigned>>,
    /// The partitions the group assigned to this member, with the offset the consumer
    /// reads each from when known.
    owned: Mutex<HashMap<(String, i32), Option<i64>>>,
    /// Set when partitions are revoked: the I/O thread drops their bindings.
    revoked: std::sync::atomic::AtomicBool,
    /// Set when partitions are assigned: the I/O thread starts their tasks.
    assigned_flag: std::sync::atomic::AtomicBool,
    /// Exactly-once: the transaction every task commits in together.
    txn: Option<Txn>,
    /// Partition counts read so far: every task of every query asks for its topics'.
    partition_counts: Mutex<HashMap<String, u32>>,
    on_failure: crate::config::ProductionExceptionHandler,
    /// For the admin client that creates internal topics.
    config: KafkaConfig,
}

/// An internal topic a query needs: a changelog (compacted, at least `partitions`) or
/// a repartition topic (exactly `partitions`).
pub(crate) struct InternalTopic {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    pub(crate) changelog: bool,
}

impl KafkaClients {
    pub(crate) fn new(config: &crate::config::RuntimeConfig) -> Result<Self> {
        let cfg = config
            .kafka
            .as_ref()
            .ok_or_else(|| Error::Config("the runtime has no Kafka configuration".into()))?;
        let application_id = config.application_id.as_str();
        let on_failure = config.production_exception_handler;
        let exactly_once =
            config.processing_guarantee == crate::config::ProcessingGuarantee::ExactlyOnce;
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
        let deliveries = Arc::new(Deliveries::default());
        let mut producer_config = cfg.client(&[
            ("linger.ms", "5"),
            ("enable.idempotence", "true"),
            // Its send queue, outside weir's zones (librdkafka's default is 1 GiB).
            ("queue.buffering.max.kbytes", "16384"),
        ]);
        if exactly_once {
            // Stable across restarts of this state directory: a restarted runtime
            // fences its crashed predecessor and aborts its open transaction at once.
            let id = format!("{application_id}-{}", process_id(&config.state_dir)?);
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
        Ok(KafkaClients {
            consumer,
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
        })
    }

    /// Partition count of `topic`; an error if the cluster does not have it. Read once
    /// per topic (a count that grows later is not followed, as Kafka Streams sizes its
    /// tasks once).
    pub(crate) fn partitions(&self, topic: &str) -> Result<u32> {
        let mut counts = self
            .partition_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(&n) = counts.get(topic) {
            return Ok(n);
        }
        let n = self.read_partitions(topic)?;
        counts.insert(topic.to_string(), n);
        Ok(n)
    }

    fn read_partitions(&self, topic: &str) -> Result<u32> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&format!("cannot read metadata of topic '{topic}'"), e))?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as u32)
            }
            Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) | None => {
                    Err(Error::UnknownTopic(topic.to_string()))
                }
                Some(code) => Err(Error::Kafka(format!("topic '{topic}': {code}"))),
            },
            None => Err(Error::UnknownTopic(topic.to_string())),
        }
    }

    /// Creates the internal topics that do not exist (changelogs compacted, repartition
    /// topics deleting by time), with the broker's default replication; checks the
    /// partition counts of those that do.
    pub(crate) fn ensure_topics(&self, topics: &[InternalTopic]) -> Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let mut missing = Vec::new();
        for t in topics {
            match self.partitions(&t.name) {
                Ok(n) if n == t.partitions || (t.changelog && n > t.partitions) => {}
                Ok(n) => {
                    return Err(Error::Topology(format!(
                        "internal topic '{}' has {n} partitions; it needs {}{}",
                        t.name,
                        if t.changelog { "at least " } else { "" },
                        t.partitions
                    )));
                }
                Err(Error::UnknownTopic(_)) => missing.push(t),
                Err(e) => return Err(e),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let describe = |t: &InternalTopic| {
            format!(
                "'{}' ({} partitions, cleanup.policy={})",
                t.name,
                t.partitions,
                if t.changelog { "compact" } else { "delete" }
            )
        };
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = self
            .config
            .client(&[])
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka admin client", e))?;
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(&t.name, t.partitions as i32, TopicReplication::Fixed(-1)).set(
                    "cleanup.policy",
                    if t.changelog { "compact" } else { "delete" },
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT));
        let names = missing
            .iter()
            .map(|t| describe(t))
            .collect::<Vec<_>>()
            .join(", ");
        let results = block_on(admin.create_topics(&new, &options)).map_err(|e| {
            Error::Kafka(format!(
                "cannot create internal topics {names}: {e} (create them, or let the application's principal create topics)"
            ))
        })?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Kafka(format!(
                        "cannot create internal topic '{name}': {code} (create {names}, or let the application's principal create topics)"
                    )));
                }
            }
        }
        let mut counts = lock(&self.partition_counts);
        for t in missing {
            counts.insert(t.name.clone(), t.partitions);
        }
        log::info!("created internal topics {names}");
        Ok(())
    }

    /// Where `query` starts reading `topic`/`partition`: its committed position, or the
    /// log start (`earliest`) or end.
    pub(crate) fn start_offset(
        &self,
        query: &str,
        topic: &str,
        partition: u32,
        earliest: bool,
    ) -> Result<i64> {
        let key = (topic.to_string(), partition as i32);
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        if !positions.contains_key(&key) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition as i32);
            let committed = self
                .consumer
                .committed_offsets(tpl, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("cannot read committed offsets", e))?;
            let meta = committed
                .find_partition(topic, partition as i32)
                .map(|e| decode_positions(e.metadata()))
                .unwrap_or_default();
            positions.insert(key.clone(), meta);
        }
        if let Some(&o) = positions[&key].get(query) {
            return Ok(o);
        }
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&format!("cannot read offsets of '{topic}'"), e))?;
        Ok(if earliest { low } else { high })
    }

    /// The runtime core, told of rebalances (set once, after the core exists).
    pub(crate) fn set_member(&self, member: Weak<dyn GroupMember>) {
        let _ = self.consumer.context().member.set(member);
    }

    /// The runtime core, if it still runs.
    pub(crate) fn member(&self) -> Option<Arc<dyn GroupMember>> {
        self.consumer.context().member.get().and_then(Weak::upgrade)
    }

    /// Subscribes the consumer to `topics` (none: unsubscribes); the group then assigns
    /// this member its share of their partitions.
    pub(crate) fn subscribe(&self, topics: &BTreeSet<String>) -> Result<()> {
        if topics.is_empty() {
            self.consumer.unsubscribe();
            return Ok(());
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&names)
            .map_err(|e| kafka_error(&format!("cannot subscribe to {names:?}"), e))
    }

    /// The partitions the group assigned to this member.
    pub(crate) fn owned(&self) -> HashSet<(String, i32)> {
        lock(&self.owned).keys().cloned().collect()
    }

    /// Records an assignment, and the offset each partition is read from.
    pub(crate) fn own(&self, partitions: &[(String, i32)], starts: &[Option<i64>]) {
        let mut owned = lock(&self.owned);
        for (tp, s) in partitions.iter().zip(starts) {
            owned.insert(tp.clone(), *s);
        }
        self.assigned_flag
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether partitions were assigned since the last call.
    pub(crate) fn take_assigned(&self) -> bool {
        self.assigned_flag
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Records a revocation.
    pub(crate) fn disown(&self, partitions: &[(String, i32)]) {
        self.revoked
            .store(true, std::sync::atomic::Ordering::Release);
        let mut owned = lock(&self.owned);
        for tp in partitions {
            owned.remove(tp);
        }
    }

    /// Drops the cached positions of `topic`/`partition`: another member may have
    /// committed since.
    pub(crate) fn forget_positions(&self, topic: &str, partition: i32) {
        lock(&self.positions).remove(&(topic.to_string(), partition));
    }

    /// Whether partitions were revoked since the last call.
    pub(crate) fn take_revoked(&self) -> bool {
        self.revoked
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Whether this member owns `topic`/`partition`.
    pub(crate) fn owns(&self, topic: &str, partition: u32) -> bool {
        lock(&self.owned).contains_key(&(topic.to_string(), partition as i32))
    }

    /// A binding starts reading `topic`/`partition` from `offset`; the consumer goes
    /// back to `offset` if it is already further on (bindings further on skip what they
    /// already have). False if this member does not own the partition (any more): the
    /// binding's task is being revoked.
    pub(crate) fn bind(&self, topic: &str, partition: u32, offset: i64) -> Result<bool> {
        let key = (topic.to_string(), partition as i32);
        let from = match lock(&self.owned).get(&key) {
            None => return Ok(false),
            Some(from) => *from,
        };
        lock(&self.assigned)
            .entry(key.clone())
            .or_insert(Assigned {
                bindings: 0,
                pausers: 0,
            })
            .bindings += 1;
        let position = self.consumer.position().ok().and_then(|p| {
            match p
                .find_partition(topic, partition as i32)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(at)) => Some(at),
                _ => None,
            }
        });
        if position.or(from).is_none_or(|at| at > offset) {
            self.seek(topic, partition, offset)?;
            if let Some(f) = lock(&self.owned).get_mut(&key) {
                *f = Some(f.map_or(offset, |f| f.min(offset)));
            }
        }
        Ok(true)
    }

    /// Seeks the consumer; a partition assigned a moment ago may not be fetching yet
    /// (librdkafka refuses a seek then): tried again for up to a second.
    fn seek(&self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match self.consumer.seek(
                topic,
                partition as i32,
                Offset::Offset(offset),
                REQUEST_TIMEOUT,
            ) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(kafka_error(
                        &format!("cannot read '{topic}' partition {partition} from {offset}"),
                        e,
                    ));
                }
            }
        }
    }

    /// A binding of `topic`/`partition` is gone.
    pub(crate) fn unbind(&self, topic: &str, partition: u32) {
        let key = (topic.to_string(), partition as i32);
        let mut assigned = lock(&self.assigned);
        if let Some(a) = assigned.get_mut(&key) {
            a.bindings -= 1;
            if a.bindings == 0 {
                assigned.remove(&key);
            }
        }
    }

    /// One binding of `topic`/`partition` starts (`true`) or stops wanting it paused.
    /// The consumer stops fetching it while any binding wants that: several queries
    /// reading one partition do not pause and resume it against each other.
    pub(crate) fn want_paused(&self, topic: &str, partition: u32, pause: bool) {
        let key = (topic.to_string(), partition as i32);
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = assigned.get_mut(&key) else {
            return;
        };
        if !self.owns(topic, partition) {
            // Revoked: librdkafka forgot the pause with the assignment.
            return;
        }
        let before = a.pausers;
        a.pausers = if pause {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if (before == 0) == (a.pausers == 0) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition as i32);
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            log::warn!("cannot pause or resume '{topic}' partition {partition}: {e}");
        }
    }

    /// Produces one record, waiting while the producer's queue is full.
    pub(crate) fn produce(
        &self,
        query: u64,
        topic: &str,
        partition: u32,
        view: &crate::io::broker::RecordView<'_>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, query as usize)
                .partition(partition as i32)
                .timestamp(view.timestamp);
        let headers = view.headers();
        if !headers.is_empty() {
            // librdkafka allocates a header list per record: only when there are any.
            let mut kh = OwnedHeaders::new();
            for h in headers.iter() {
                kh = kh.insert(Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                });
            }
            record = record.headers(kh);
        }
        if let Some(k) = view.key {
            record = record.key(k);
        }
        if let Some(v) = view.value {
            record = record.payload(v);
        }
        self.send(record, "cannot produce to")
    }

    /// Sends `record`, waiting while the producer's queue is full (the error says
    /// `what` and the topic).
    fn send(&self, mut record: BaseRecord<'_, [u8], [u8], usize>, what: &str) -> Result<()> {
        if let Some(t) = &self.txn {
            t.ensure_open(&self.producer)?;
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
                Err((e, r)) => return Err(kafka_error(&format!("{what} '{}'", r.topic), e)),
            }
        }
    }

    /// Produces one changelog entry (`None` = a tombstone) to `topic`/`partition`.
    pub(crate) fn produce_change(
        &self,
        query: u64,
        topic: &str,
        partition: u32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, query as usize)
                .partition(partition as i32)
                .key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.send(record, "cannot write changelog")
    }

    /// The end offset of `topic`/`partition` as of the consumer's last fetch of it (no
    /// request; `None` before the first fetch).
    pub(crate) fn cached_end(&self, topic: &str, partition: u32) -> Option<i64> {
        let topic = std::ffi::CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the consumer's handle lives as long as `self`; the topic is a valid C
        // string and the out-pointers point to live locals.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition as i32,
                &mut low,
                &mut high,
            )
        };
        (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    /// The offset after the last acknowledged record of `topic`/`partition`.
    pub(crate) fn acked_end(&self, topic: &str, partition: u32) -> Option<i64> {
        let acked = self
            .deliveries
            .acked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        acked
            .get(&(topic.to_string(), partition as i32))
            .map(|o| o + 1)
    }

    /// Reads `topic`/`partition` from `from` to its end, handing `apply` batches of
    /// (key, value) (`None` = tombstone) of at most 1000 records, so a restore holds no
    /// more than one batch in memory. Returns the records read and the end offset.
    pub(crate) fn restore(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        mut apply: impl FnMut(&[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()>,
    ) -> Result<(u64, i64)> {
        use rdkafka::Message;
        let restorer = self.restorer.lock().unwrap_or_else(|p| p.into_inner());
        let (low, high) = restorer
            .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&format!("cannot read offsets of '{topic}'"), e))?;
        let from = from.max(low);
        if from >= high {
            return Ok((0, high));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from))
            .map_err(|e| kafka_error("bad partition", e))?;
        restorer
            .assign(&tpl)
            .map_err(|e| kafka_error(&format!("cannot read changelog '{topic}'"), e))?;
        let mut batch = Vec::new();
        let mut read = 0u64;
        let mut at = from;
        let result = loop {
            if at >= high {
                break Ok(());
            }
            match restorer.poll(REQUEST_TIMEOUT) {
                Some(Ok(m)) => {
                    at = m.offset() + 1;
                    read += 1;
                    let Some(k) = m.key() else { continue };
                    batch.push((k.to_vec(), m.payload().map(<[u8]>::to_vec)));
                    if batch.len() >= 1000 {
                        if let Err(e) = apply(&batch) {
                            break Err(e);
                        }
                        batch.clear();
                    }
                }
                // The end: under read_committed, short of the high watermark by the
                // transaction markers.
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e)) => break Err(kafka_error(&format!("restoring from '{topic}'"), e)),
                None => {
                    break Err(Error::Kafka(format!(
                        "restoring from '{topic}' partition {partition}: nothing for {} s at offset {at} of {high}",
                        REQUEST_TIMEOUT.as_secs()
                    )));
                }
            }
        };
        let _ = restorer.unassign();
        result?;
        apply(&batch)?;
        Ok((read, high))
    }

    /// Waits until every produced record is acknowledged. If some of `query`'s failed:
    /// an error (the first failure), or with `LogAndContinue` a warning and a count.
    pub(crate) fn flush(&self, query: u64, query_name: &str) -> Result<()> {
        use crate::config::ProductionExceptionHandler as H;
        self.producer
            .flush(REQUEST_TIMEOUT)
            .map_err(|e| kafka_error("flushing the producer failed", e))?;
        let mut failed = self
            .deliveries
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = query as usize;
        match (failed.get(&key), self.on_failure) {
            (None, _) => Ok(()),
            (Some((first, _)), H::Fail) => Err(Error::Kafka(first.clone())),
            (Some(_), H::LogAndContinue) => {
                let (first, n) = failed.remove(&key).expect("just found");
                log::warn!(
                    "query '{query_name}': {n} records were not written ({first}); going on"
                );
                metrics::counter!("weir_produce_errors_total", "query" => query_name.to_string())
                    .increment(n);
                Ok(())
            }
        }
    }

    /// Adds `query`'s next `offset` of `topic`/`partition` to `tpl`: the group offset
    /// is the smallest position of any query, and every query's is in the metadata.
    fn add_position(
        &self,
        tpl: &mut TopicPartitionList,
        query: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<()> {
        let mut positions = lock(&self.positions);
        let all = positions.entry((topic.to_string(), partition)).or_default();
        all.insert(query.to_string(), offset);
        let min = all.values().copied().min().unwrap_or(offset);
        let metadata = encode_positions(all);
        match tpl.find_partition(topic, partition) {
            Some(mut e) => {
                e.set_offset(Offset::Offset(min))
                    .map_err(|e| kafka_error("bad partition", e))?;
                e.set_metadata(metadata);
            }
            None => {
                tpl.add_partition_offset(topic, partition, Offset::Offset(min))
                    .map_err(|e| kafka_error("bad partition", e))?;
                if let Some(mut e) = tpl.find_partition(topic, partition) {
                    e.set_metadata(metadata);
                }
            }
        }
        Ok(())
    }

    /// Exactly-once: the runtime's transaction, if the runtime is transactional.
    pub(crate) fn txn(&self) -> Option<&Txn> {
        self.txn.as_ref()
    }

    /// Exactly-once: task `task` has flushed everything and hands its offsets (query,
    /// topic, partition, next offset) to the transaction. The last task of the round to
    /// do so commits the transaction (offsets included) and wakes the others.
    pub(crate) fn prepare(&self, task: u64, offsets: Vec<TxnOffset>) -> Result<Prepared> {
        let txn = self
            .txn
            .as_ref()
            .ok_or_else(|| Error::Config("the runtime is not transactional".into()))?;
        let mut st = lock(&txn.state);
        if let Some(e) = &st.failed {
            return Err(Error::Kafka(e.clone()));
        }
        st.offsets.extend(offsets);
        if let Some(t) = st.tasks.get_mut(&task) {
            t.prepared = true;
        }
        log::debug!(
            "exactly-once: task {task} prepared for round {} ({} of {} tasks)",
            st.round,
            st.tasks.values().filter(|t| t.prepared).count(),
            st.tasks.len()
        );
        if st.tasks.values().all(|t| t.prepared) {
            self.commit_round(txn, &mut st)?;
            Ok(Prepared::Committed)
        } else {
            Ok(Prepared::Wait(st.round))
        }
    }

    /// Exactly-once: a task leaves the transaction (closed); if every remaining task
    /// of a requested round is prepared, the round commits now.
    pub(crate) fn leave_txn(&self, task: u64) {
        let Some(txn) = &self.txn else { return };
        let mut st = lock(&txn.state);
        st.tasks.remove(&task);
        if st.tasks.is_empty() && st.failed.is_some() {
            // Every task of the failed transaction is gone: new ones start afresh.
            st.failed = None;
        }
        if st.requested
            && st.failed.is_none()
            && st.tasks.values().all(|t| t.prepared)
            && let Err(e) = self.commit_round(txn, &mut st)
        {
            log::error!("exactly-once: {e}");
        }
    }

    /// Commits the round's transaction (or aborts it and fails every task). Called
    /// with the state locked, when every task is prepared.
    fn commit_round(&self, txn: &Txn, st: &mut TxnState) -> Result<()> {
        let result = (|| -> Result<()> {
            let offsets = std::mem::take(&mut st.offsets);
            if offsets.is_empty() && !txn.open.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(());
            }
            // Offsets only, if nothing was produced.
            txn.begin(&self.producer)?;
            if !offsets.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for o in &offsets {
                    self.add_position(&mut tpl, &o.query, &o.topic, o.partition, o.offset)?;
                }
                let group = self.consumer.group_metadata().ok_or_else(|| {
                    Error::Kafka("exactly-once: the consumer has no group metadata".into())
                })?;
                self.producer
                    .send_offsets_to_transaction(&tpl, &group, REQUEST_TIMEOUT)
                    .map_err(|e| kafka_error("exactly-once: sending offsets failed", e))?;
            }
            self.producer
                .commit_transaction(REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("exactly-once: committing the transaction failed", e))?;
            txn.open.store(false, std::sync::atomic::Ordering::Release);
            Ok(())
        })();
        if let Err(e) = &result {
            self.abort(txn, st, &e.to_string());
            return result;
        }
        st.round += 1;
        st.requested = false;
        for t in st.tasks.values_mut() {
            t.prepared = false;
            (t.wake)();
        }
        Ok(())
    }

    /// Exactly-once: a task failed; the transaction is aborted (nothing since the last
    /// commit is visible to read_committed readers) and every task fails.
    pub(crate) fn fail_txn(&self, why: &str) {
        let Some(txn) = &self.txn else { return };
        let mut st = lock(&txn.state);
        if st.failed.is_none() {
            self.abort(txn, &mut st, why);
        }
    }

    fn abort(&self, txn: &Txn, st: &mut TxnState, why: &str) {
        log::error!("exactly-once: aborting the transaction: {why}");
        if txn.open.swap(false, std::sync::atomic::Ordering::AcqRel)
            && let Err(e) = self.producer.abort_transaction(REQUEST_TIMEOUT)
        {
            log::error!("exactly-once: aborting the transaction failed: {e}");
        }
        st.failed = Some(format!(
            "exactly-once: the transaction was aborted ({why}); every query of the runtime fails and resumes from the last committed transaction when restarted"
        ));
        st.offsets.clear();
        st.requested = false;
        for t in st.tasks.values() {
            (t.wake)();
        }
    }

    /// Commits `query`'s next offsets (topic, partition, offset) to the group, with
    /// every query's position in each partition's metadata. False if the group refused
    /// it for a rebalance under way (the partitions may be moving: the task commits again
    /// at its next interval, or when revoked; if another member takes the partitions
    /// first, it reads again from the last commit, as at-least-once allows).
    pub(crate) fn commit(&self, query: &str, offsets: &[(&str, u32, i64)]) -> Result<bool> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let mut tpl = TopicPartitionList::new();
        for &(topic, partition, offset) in offsets {
            self.add_position(&mut tpl, query, topic, partition as i32, offset)?;
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Ok(true),
            Err(e) if is_rebalance(&e) => {
                log::warn!(
                    "query '{query}': offsets not committed, the group is rebalancing ({e})"
                );
                Ok(false)
            }
            Err(e) => Err(kafka_error("committing offsets failed", e)),
        }
    }
}

/// A commit refused because the group is moving partitions (or moved them already).
fn is_rebalance(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A store whose every write also goes to its changelog partition (after the store
/// took it). Range deletes (expired window segments) are not logged: window changelogs
/// are meant to drop old entries by time retention.
pub(crate) struct ChangeloggedStore {
    pub(crate) inner: Box<dyn crate::state::KeyValueStore>,
    pub(crate) kafka: Arc<KafkaClients>,
    pub(crate) query: u64,
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

impl crate::state::KeyValueStore for ChangeloggedStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.put(key, value)?;
        self.kafka
            .produce_change(self.query, &self.topic, self.partition, key, Some(value))
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.inner.delete(key)?;
        self.kafka
            .produce_change(self.query, &self.topic, self.partition, key, None)
    }
    fn write_batch(&mut self, entries: &[crate::state::BatchEntry<'_>]) -> Result<()> {
        self.inner.write_batch(entries)?;
        for (k, v) in entries {
            self.kafka
                .produce_change(self.query, &self.topic, self.partition, k, *v)?;
        }
        Ok(())
    }
    fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.inner.delete_range(from, to)
    }
    fn first(&self, from: &[u8], to: &[u8]) -> Result<Option<crate::state::KeyValue>> {
        self.inner.first(from, to)
    }
    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<crate::state::KeyValue>> {
        self.inner.last(from, to)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<crate::state::KeyValue>> {
        self.inner.range(from, to)
    }
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<crate::state::KeyValue>> {
        self.inner.prefix_scan(prefix)
    }
    fn all(&self) -> Result<Vec<crate::state::KeyValue>> {
        self.inner.all()
    }
    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}

/// The checkpoint file of a RocksDB store: the changelog offset its contents reach.
pub(crate) fn checkpoint_path(store_dir: &std::path::Path) -> std::path::PathBuf {
    store_dir.join("weir.changelog-offset")
}

/// Reads a checkpoint (`None` if absent or unreadable: restore from the start).
pub(crate) fn read_checkpoint(store_dir: &std::path::Path) -> Option<i64> {
    std::fs::read_to_string(checkpoint_path(store_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes a checkpoint atomically (a temporary file renamed over the old one).
pub(crate) fn write_checkpoint(store_dir: &std::path::Path, offset: i64) -> Result<()> {
    let path = checkpoint_path(store_dir);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, offset.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// `q1=120;q2=95`: each query's next offset (query names are ASCII letters, digits,
/// `.`, `_` and `-`).
pub(crate) fn encode_positions(positions: &BTreeMap<String, i64>) -> String {
    positions
        .iter()
        .map(|(q, o)| format!("{q}={o}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The inverse of [`encode_positions`]; entries it cannot read (metadata another tool
/// wrote) are ignored.
pub(crate) fn decode_positions(metadata: &str) -> BTreeMap<String, i64> {
    metadata
        .split(';')
        .filter_map(|e| {
            let (q, o) = e.split_once('=')?;
            Some((q.to_string(), o.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn positions_round_trip(p in proptest::collection::btree_map("[a-zA-Z0-9._-]{1,12}", any::<i64>(), 0..6)) {
            prop_assert_eq!(decode_positions(&encode_positions(&p)), p);
        }
    }

    #[test]
    fn foreign_metadata_is_ignored() {
        assert!(decode_positions("").is_empty());
        assert!(decode_positions("{\"x\":1}").is_empty());
        assert_eq!(
            decode_positions("a=1;junk;b=x"),
            BTreeMap::from([("a".into(), 1)])
        );
    }

    #[test]
    fn weir_owns_the_group_and_offset_settings() {
        assert!(KafkaConfig::new("").validate().is_err());
        let e = KafkaConfig::new("localhost:9092")
            .property("group.id", "mine")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("group.id"), "{e}");
        assert!(
            KafkaConfig::new("localhost:9092")
                .property("security.protocol", "plaintext")
                .validate()
                .is_ok()
        );
    }
}
