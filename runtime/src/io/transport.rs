//! The one seam between the engine and where records live.
//!
//! Everything the tasks, the query planner and the I/O thread need of a broker is a
//! method of [`Transport`]: partition counts, internal topics, where a query starts
//! reading, feeding partition queues, writing sinks and changelogs, committing
//! offsets, restoring stores, the consumer group and exactly-once transactions. There
//! are two implementations: the in-process broker (`io/broker/transport.rs`) and Kafka
//! through rdkafka (`io/kafka/`, feature `kafka`). [`connect`] chooses between them,
//! once, when a runtime starts; nothing outside `io/` knows which one it talks to.

use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::io::broker::{EncodedBatch, FetchBatch};
use crate::io::queue::{ByteBudget, PartitionQueue};
use crate::io::settings::{OffsetReset, TransportConfig};

/// A partition of a topic: how the engine names a partition the group assigns or
/// revokes, and how Kafka's state is keyed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicPartition {
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

impl TopicPartition {
    pub(crate) fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A changelog entry read back: key, and value (`None` = a tombstone).
pub(crate) type ChangelogEntry = (Vec<u8>, Option<Vec<u8>>);

/// An internal topic a query needs: a changelog (compacted, at least `partitions`) or
/// a repartition topic (exactly `partitions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InternalTopic {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    pub(crate) changelog: bool,
}

/// A task's next offset of a partition, handed to an exactly-once commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnOffset {
    pub(crate) query: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: i64,
}

/// What [`Transaction::prepare`] did.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// This task was the last one: the transaction is committed.
    Committed,
    /// Waiting for the other tasks of this round (numbered) to prepare.
    Wait(u64),
    /// The transaction was aborted since this task joined it: the task closes without
    /// committing and starts again from the last commit (see [`TxnStatus`]).
    Reset,
}

/// Where the runtime's transaction stands ([`Transaction::status`]).
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TxnStatus {
    /// A commit round is requested.
    pub(crate) requested: bool,
    /// Rounds committed so far.
    pub(crate) round: u64,
    /// Aborts so far. A task that joined before the last one closes without
    /// committing: what it wrote since the last commit is gone.
    pub(crate) epoch: u64,
    /// Tasks that joined before the last abort are still open: until they have closed,
    /// nothing they write reaches the cluster, and tasks that joined since wait.
    pub(crate) draining: bool,
}

/// Exactly-once: one transaction for every task of the runtime. A commit is a round:
/// a task whose commit is due requests one; every task then flushes what it holds,
/// hands over its offsets and stops processing; the last one commits the transaction,
/// and all go on.
pub(crate) trait Transaction: Send + Sync {
    /// A task joins; `wake` makes it run (to prepare, or to go on after a round).
    /// Returns the transaction's epoch (aborts so far) the task belongs to.
    fn join(&self, task: u64, wake: Box<dyn Fn() + Send + Sync>) -> u64;
    /// Asks for a commit round: wakes every task that has not prepared.
    fn request(&self);
    /// Where the transaction stands.
    fn status(&self) -> TxnStatus;
    /// Why the last abort happened, if it fails the tasks that joined before it (the
    /// transaction could not commit); `None` after an abort for a rebalance or a
    /// query's failure, whose tasks start again instead.
    fn failed(&self) -> Option<String>;
    /// Task `task` has flushed everything and hands over its offsets; the last task of
    /// the round commits the transaction (offsets included) and wakes the others.
    fn prepare(&self, task: u64, offsets: Vec<TxnOffset>) -> Result<Prepared>;
    /// A task leaves (closed); a requested round whose other tasks are all prepared
    /// commits now.
    fn leave(&self, task: u64);
    /// Task `task`'s query failed: the transaction is aborted, and the tasks of the
    /// other queries start again (nothing happens if the transaction was aborted
    /// since `task` joined).
    fn fail(&self, task: u64, why: &str);
}

/// What the I/O thread may do to a task it feeds (implemented by the engine's tasks).
pub(crate) trait Wake: Send + Sync {
    /// Makes the task run soon.
    fn wake(self: Arc<Self>);
    /// Fails the task's query with `e` (its partition cannot be read).
    fn fail_query(&self, e: Error);
}

/// A record the cluster refused (with a log-and-continue production handler), kept
/// for its query's dead-letter topic.
#[derive(Debug, Clone)]
pub(crate) struct FailedDelivery {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) timestamp: i64,
    pub(crate) error: String,
}

/// Where one binding's records come from: a partition of the in-process broker's log,
/// or what the Kafka consumer polled for it.
pub(crate) trait Feed: Send {
    /// The topic, as named on the broker.
    fn topic(&self) -> &str;
    /// Moves what fits into `queue` (at most the room under its record cap and the
    /// bytes left in `budget`), advancing `next_offset`. Returns (records moved, whether
    /// the binding is still alive).
    fn fill(
        &mut self,
        partition: u32,
        next_offset: &mut i64,
        queue: &PartitionQueue<FetchBatch>,
        budget: &ByteBudget,
    ) -> (usize, bool);
    /// Why the last `fill` ended the binding, if it failed (a partition that cannot be
    /// read): the I/O thread fails the task's query with it.
    fn take_error(&mut self) -> Option<Error> {
        None
    }
    /// The partition's end offset as last seen (no request), if known.
    fn end_offset(&self, partition: u32) -> Option<i64>;
    /// The binding goes away: give back what waits beside its queue.
    fn unbind(&mut self, partition: u32, budget: &ByteBudget);
    /// Whether it reads for a global store, outside the consumer group.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    fn is_global(&self) -> bool {
        false
    }
    /// For the transport that polls for this feed.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// One partition feeding one task's queue.
pub(crate) struct Binding {
    pub(crate) query: u64,
    /// The query's name, for the per-partition gauges' labels.
    pub(crate) query_name: Arc<str>,
    /// The query's lag (the I/O thread sums it over the query's bindings).
    pub(crate) lag: Arc<AtomicU64>,
    pub(crate) feed: Box<dyn Feed>,
    pub(crate) partition: u32,
    pub(crate) next_offset: i64,
    pub(crate) queue: Arc<PartitionQueue<FetchBatch>>,
    pub(crate) task: Weak<dyn Wake>,
}

/// Where a sink's records go: one topic.
pub(crate) trait SinkTopic: Send + Sync {
    /// The topic, as named on the broker.
    fn name(&self) -> &str;
    /// Its partition count.
    fn partition_count(&self) -> u32;
    /// Writes the records encoded for `partition`, attributed to query `query_id`.
    fn write(&self, query_id: u64, partition: u32, batch: &EncodedBatch) -> Result<()>;
    /// A flush wrote something: readers may look.
    fn written(&self) {}
}

/// What the engine does when the consumer group moves partitions (implemented by the
/// runtime core; called on the I/O thread, inside the consumer's poll).
// Called by a grouped transport (Kafka) only.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) trait GroupMember: Send + Sync {
    /// `partitions` leave this member: the tasks reading them commit and close before
    /// this returns, so the next owner starts from their offsets and changelogs.
    fn revoked(self: Arc<Self>, partitions: &[TopicPartition]);
    /// The queries (names) reading `topic` now: an assigned partition is read from
    /// the earliest position any of them needs.
    fn readers(self: Arc<Self>, topic: &str) -> Vec<String>;
    /// After a poll that assigned partitions: builds the tasks of the partitions
    /// assigned since, returning their bindings.
    fn start_assigned(self: Arc<Self>) -> Vec<Binding>;
}

/// A broker the runtime reads and writes through.
pub(crate) trait Transport: Send + Sync {
    /// Partition count of `topic`; [`Error::UnknownTopic`] if it does not exist.
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// Whether stores log their writes to changelog topics and are restored from them.
    fn changelogs(&self) -> bool;

    /// Whether tasks follow a consumer group's assignment (partitions, and with them
    /// tasks, move between processes). Then stores fed by several topics need them
    /// co-partitioned.
    fn grouped(&self) -> bool;

    /// Creates the internal topics that do not exist and checks those that do.
    /// Changelogs are created only where [`Transport::changelogs`] holds.
    fn ensure_topics(&self, topics: &[InternalTopic]) -> Result<()>;

    /// The consumer group query `query` of application `application_id` commits to.
    fn group_id(&self, application_id: &str, query: &str) -> String;

    /// Where `query` (of group `group`) starts reading `topic`/`partition`: its
    /// committed position, else the log's start or end by `reset`.
    fn start_offset(
        &self,
        group: &str,
        query: &str,
        topic: &str,
        partition: u32,
        reset: OffsetReset,
    ) -> Result<i64>;

    /// A feed reading `topic` (one partition of it, named by its binding).
    fn feed(&self, topic: &str) -> Result<Box<dyn Feed>>;

    /// A feed reading `topic` for a global store: every partition, in every process,
    /// outside the consumer group (one partition of it, named by its binding).
    fn global_feed(&self, topic: &str) -> Result<Box<dyn Feed>>;

    /// Reads `topic`/`partition` from `from` to its end as it is now (under
    /// read_committed, to its last committed record), handing `apply` the records in
    /// batches. Returns the offset to read next. How a global store catches up before
    /// its query's other tasks start.
    fn read_to_end(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        apply: &mut dyn FnMut(FetchBatch) -> Result<()>,
    ) -> Result<i64>;

    /// The topic a sink writes to.
    fn sink(&self, topic: &str) -> Result<Arc<dyn SinkTopic>>;

    /// Commits `query`'s next offsets (topic, partition, offset) to `group`. False if
    /// the group refused them for a rebalance under way, or the cluster did not answer
    /// (the task commits again later).
    fn commit(&self, group: &str, query: &str, offsets: &[(&str, u32, i64)]) -> Result<bool>;

    /// Waits until everything query `query_id` produced is acknowledged; reports its
    /// failed deliveries by the runtime's production exception handler. False if the
    /// cluster did not acknowledge everything in time (the commit waits for a later
    /// try).
    fn flush(&self, query_id: u64, query: &str) -> Result<bool>;

    /// The runtime shuts down (every query has stopped): leave nothing half done on the
    /// cluster.
    fn close(&self) {}

    /// The records of query `query_id` the cluster refused since the last call, kept
    /// by a log-and-continue production handler for the query's dead-letter topic.
    fn take_failed_deliveries(&self, query_id: u64) -> Vec<FailedDelivery> {
        let _ = query_id;
        Vec::new()
    }

    /// Writes one changelog entry (`None` = a tombstone) of query `query_id`.
    fn produce_change(
        &self,
        query_id: u64,
        topic: &str,
        partition: u32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()>;

    /// Reads changelog `topic`/`partition` from `from` to its end, handing `apply`
    /// batches of (key, value) (`None` = tombstone). Returns the records read and the
    /// end offset.
    fn restore(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        apply: &mut dyn FnMut(&[ChangelogEntry]) -> Result<()>,
    ) -> Result<(u64, i64)>;

    /// The offset after the last acknowledged record of `topic`/`partition`.
    fn acked_end(&self, topic: &str, partition: u32) -> Option<i64>;

    /// Exactly-once: the runtime's transaction, if it is transactional.
    fn transaction(&self) -> Option<&dyn Transaction>;

    /// The engine, told of rebalances (set once, after it exists).
    fn set_member(&self, member: Weak<dyn GroupMember>);

    /// Subscribes to `topics` (none: unsubscribes).
    fn subscribe(&self, topics: &BTreeSet<String>) -> Result<()>;

    /// The partitions this process may read, if the group decides (`None`: all).
    fn owned(&self) -> Option<HashSet<TopicPartition>>;

    /// A binding starts reading its partition. False if this process does not own it
    /// (any more): the binding is dropped and its task is being revoked.
    fn bind(&self, binding: &Binding) -> Result<bool>;

    /// The I/O thread's turn to take what arrived: moves polled records beside the
    /// bindings they are for (charged to `budget`); returns how many.
    fn poll(&self, bindings: &mut [Binding], budget: &ByteBudget) -> usize;

    /// After [`Transport::poll`]: drops the bindings of partitions revoked since, and
    /// returns those of tasks started for partitions assigned since.
    fn rebalanced(&self, bindings: &mut Vec<Binding>, budget: &ByteBudget) -> Vec<Binding>;

    /// How soon the I/O thread must come back when idle (`reading`: some binding is
    /// fed by this transport); `None`: only when woken.
    fn idle_timeout(&self, reading: bool) -> Option<Duration>;
}

/// The transport `config` asks for: Kafka when it names a cluster, the in-process
/// broker otherwise. The one place the backend is chosen.
pub(crate) fn connect(config: &TransportConfig<'_>) -> Result<Arc<dyn Transport>> {
    #[cfg(feature = "kafka")]
    if let Some(kafka) = config.kafka {
        return Ok(crate::io::kafka::KafkaClients::new(kafka, config)?);
    }
    Ok(Arc::new(crate::io::broker::BrokerTransport::new(
        config.broker.clone(),
    )))
}

/// Binding `b` is going away: its gauges drop to zero and its feed gives back what
/// waits beside its queue.
pub(crate) fn unbind(b: &mut Binding, budget: &ByteBudget) {
    crate::io::thread::publish_partition(b, 0, 0, Some(0));
    b.feed.unbind(b.partition, budget);
}
