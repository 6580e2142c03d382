//! The runtime's one I/O thread: it moves records from the broker into the bounded
//! partition queues, and it is the only timer (wall-clock punctuations and commit
//! deadlines wake tasks from here).
//!
//! For each bound partition it fetches at most the room left under the record cap and
//! the bytes left in the budget. A partition whose queue is full is *paused*: nothing is
//! fetched for it until its task drains it and wakes this thread. A partition with an
//! empty queue is never paused; if the byte budget is spent it simply waits, and the
//! budget is freed by queues that do hold data, whose tasks are runnable. So a task is
//! never starved of a partition it needs (the deadlock Kafka Streams hit when it paused
//! empty partitions).
//!
//! The thread sleeps until a command, a wake-up (a queue drained, a budget released),
//! a broker append, or the next timer deadline.
//!
//! With Kafka ([`crate::KafkaConfig`]) the thread polls the runtime's one consumer
//! instead: each message goes to every binding of its partition that has not seen its
//! offset, into small batches that wait beside the queue until it takes them. Waiting
//! records are charged to the same byte budget as queued ones, and the thread takes no
//! message while the budget is spent. Pausing a partition in librdkafka drops what it
//! prefetched for it (resuming fetches it again), so it is paused only when its waiting
//! records reach four times the queue's record cap or the budget is spent, and resumed
//! once fewer than one queue's worth wait and the budget has room.
//!
//! Consumer-group rebalances are served inside the consumer's poll, on this thread:
//! revoked partitions' tasks commit and close before the poll returns; after it, this
//! thread drops their bindings and builds the tasks of assigned partitions (restoring
//! their stores), so the next poll finds a binding for every record it returns.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use crate::exec::task::Task;
use crate::io::broker::{FetchBatch, TopicLog};
use crate::io::kafka::KafkaClients;
use crate::io::queue::{ByteBudget, PartitionQueue, TryPushError};
use crate::record::now_millis;

/// Most records moved per partition per pass, so one partition cannot hog the thread.
const FETCH_BATCH: usize = 1024;

/// Records per batch polled from Kafka (a batch waits whole for room in its queue).
const KAFKA_BATCH: usize = 64;

/// Where a binding's records come from.
pub(crate) enum Feed {
    /// The in-process broker's log, fetched from here.
    Log(Arc<TopicLog>),
    /// The shared Kafka consumer: records polled for this partition, not yet queued.
    Kafka {
        topic: Arc<str>,
        waiting: VecDeque<FetchBatch>,
        /// Whether this binding wants its partition paused (see `fill`).
        pausing: bool,
    },
}

impl Feed {
    fn topic(&self) -> &str {
        match self {
            Feed::Log(log) => &log.name,
            Feed::Kafka { topic, .. } => topic,
        }
    }
}

/// One partition feeding one task's queue.
pub(crate) struct Binding {
    pub(crate) query: u64,
    /// The query's name, for the per-partition gauges' labels.
    pub(crate) query_name: Arc<str>,
    pub(crate) feed: Feed,
    pub(crate) partition: u32,
    pub(crate) next_offset: i64,
    pub(crate) queue: Arc<PartitionQueue<FetchBatch>>,
    pub(crate) task: Weak<Task>,
}

pub(crate) enum IoCommand {
    Bind(Vec<Binding>),
    Unbind { query: u64 },
    WakeAt { at_ms: i64, task: Weak<Task> },
    Shutdown,
}

/// Counters the I/O thread publishes (paused partitions now).
#[derive(Default)]
pub(crate) struct IoStats {
    pub(crate) paused: AtomicUsize,
}

pub(crate) struct IoThread {
    pub(crate) commands: Receiver<IoCommand>,
    pub(crate) wake: Receiver<()>,
    pub(crate) appends: Receiver<()>,
    pub(crate) stats: Arc<IoStats>,
    /// Published as gauges once a second.
    pub(crate) zones: crate::memory::report::Zones,
    pub(crate) kafka: Option<Arc<KafkaClients>>,
}

/// A wall-clock deadline: wake `task` at `at_ms`. Ordered soonest first.
struct Timer {
    at_ms: i64,
    task: Weak<Task>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest deadline is on top.
        other.at_ms.cmp(&self.at_ms)
    }
}

/// What the loop keeps between passes.
#[derive(Default)]
struct IoState {
    bindings: Vec<Binding>,
    timers: BinaryHeap<Timer>,
}

impl IoState {
    /// Applies a command; false means shut down.
    fn apply(&mut self, cmd: IoCommand, kafka: Option<&KafkaClients>, budget: &ByteBudget) -> bool {
        match cmd {
            IoCommand::Bind(bindings) => {
                for b in bindings {
                    if let (Some(k), Feed::Kafka { topic, .. }) = (kafka, &b.feed) {
                        match k.bind(topic, b.partition, b.next_offset) {
                            Ok(true) => {}
                            // Revoked since its task was built: the task closes.
                            Ok(false) => continue,
                            Err(e) => {
                                // Its task would wait for records that never come: the
                                // query fails with the reason instead.
                                log::error!("{e}");
                                if let Some(t) = b.task.upgrade() {
                                    t.query.fail(e);
                                }
                                continue;
                            }
                        }
                    }
                    self.bindings.push(b);
                }
            }
            IoCommand::Unbind { query } => {
                self.bindings.retain(|b| {
                    let keep = b.query != query;
                    if !keep {
                        unbind(b, kafka, budget);
                    }
                    keep
                });
            }
            IoCommand::WakeAt { at_ms, task } => self.timers.push(Timer { at_ms, task }),
            IoCommand::Shutdown => return false,
        }
        true
    }
}

/// A Kafka binding going away: its waiting records leave the budget, and the consumer
/// stops reading its partition with the last binding.
fn unbind(b: &Binding, kafka: Option<&KafkaClients>, budget: &ByteBudget) {
    // The partition is no longer the query's: its gauges drop to zero rather than keep
    // their last figures.
    publish_partition(b, 0, 0, Some(0));
    if let Feed::Kafka {
        topic,
        waiting,
        pausing,
    } = &b.feed
    {
        budget.release(waiting.iter().map(FetchBatch::remaining_bytes).sum());
        if let Some(k) = kafka {
            if *pausing {
                k.want_paused(topic, b.partition, false);
            }
            k.unbind(topic, b.partition);
        }
    }
}

/// Topic → partition → indices of the bindings reading it.
type ReadersIndex = HashMap<Arc<str>, HashMap<i32, Vec<usize>>>;

/// Moves what the consumer has into the waiting batches of the bindings it is for,
/// charging them to `budget`; stops while the budget is spent.
fn poll_kafka(kafka: &KafkaClients, bindings: &mut [Binding], budget: &ByteBudget) -> usize {
    use rdkafka::Message;
    // The bindings of each partition, found once per pass (with a message) rather than
    // per message.
    let mut by_partition: Option<ReadersIndex> = None;
    let mut polled = 0;
    while polled < FETCH_BATCH * 4 && budget.used() < budget.cap() {
        let m = match kafka.consumer.poll(Duration::ZERO) {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                log::warn!("kafka consumer: {e}");
                break;
            }
        };
        polled += 1;
        let headers = match m.headers() {
            Some(h) => {
                use rdkafka::message::Headers as _;
                let mut out = crate::record::Headers::new();
                for h in h.iter() {
                    out.add(h.key, h.value.map(bytes::Bytes::copy_from_slice));
                }
                out
            }
            None => crate::record::Headers::new(),
        };
        let ts = m.timestamp().to_millis().unwrap_or(0);
        let index = by_partition.get_or_insert_with(|| {
            let mut index = ReadersIndex::new();
            for (i, b) in bindings.iter().enumerate() {
                if let Feed::Kafka { topic, .. } = &b.feed {
                    let p = index.entry(topic.clone()).or_default();
                    p.entry(b.partition as i32).or_default().push(i);
                }
            }
            index
        });
        let readers = index
            .get(m.topic())
            .and_then(|p| p.get(&m.partition()))
            .map_or(&[][..], Vec::as_slice);
        for &i in readers {
            let b = &mut bindings[i];
            let Feed::Kafka { waiting, .. } = &mut b.feed else {
                continue;
            };
            let next = waiting
                .back()
                .and_then(FetchBatch::last_offset)
                .map_or(b.next_offset, |o| o + 1);
            if m.offset() < next {
                continue;
            }
            // A batch goes into the queue whole: never more than the queue's cap.
            let most = KAFKA_BATCH.min(b.queue.cap());
            if waiting.back().is_none_or(|w| w.len() >= most) {
                waiting.push_back(FetchBatch::for_kafka());
            }
            let batch = waiting.back_mut().expect("just ensured");
            let size = batch.push_message(m.offset(), ts, m.key(), m.payload(), &headers);
            budget.charge(size);
        }
    }
    polled
}

/// Watches the process's RSS against the memory limit (every [`PRESSURE_CHECK_MS`])
/// and returns the allocator's free pages when it is close (see
/// [`crate::memory::report::PURGE_AT_SIXTEENTHS`]).
struct Pressure {
    limit: usize,
    checked_ms: i64,
    rss: usize,
    warned_ms: i64,
}

/// How often the I/O thread reads the RSS while it is above half the limit (and once a
/// second otherwise).
const PRESSURE_CHECK_MS: i64 = 100;

impl Pressure {
    fn new(limit: usize) -> Pressure {
        Pressure {
            limit,
            checked_ms: 0,
            rss: 0,
            warned_ms: i64::MIN / 2,
        }
    }

    /// Whether the RSS is high enough to be read often.
    fn watching(&self) -> bool {
        self.rss > self.limit / 2
    }

    fn check(&mut self, now: i64, zones: &crate::memory::report::Zones) {
        let every = if self.watching() {
            PRESSURE_CHECK_MS
        } else {
            1000
        };
        if now - self.checked_ms < every {
            return;
        }
        self.checked_ms = now;
        let Some(rss) = crate::memory::report::process_rss() else {
            return;
        };
        self.rss = rss;
        if rss <= self.limit / 16 * crate::memory::report::PURGE_AT_SIXTEENTHS
            || !crate::memory::report::purge_allocator()
        {
            return;
        }
        self.rss = crate::memory::report::process_rss().unwrap_or(rss);
        if self.rss > self.limit && now - self.warned_ms >= 60_000 {
            self.warned_ms = now;
            log::warn!(
                "the process's RSS is {} MiB, over the memory limit of {} MiB, with the allocator's free pages returned:\n{}",
                self.rss >> 20,
                self.limit >> 20,
                zones.report()
            );
        }
    }
}

impl IoThread {
    pub(crate) fn run(self) {
        let mut st = IoState::default();
        let mut published = 0i64;
        let mut pressure = Pressure::new(self.zones.limit);
        loop {
            // Commands first: they change what to fetch.
            let kafka = self.kafka.as_deref();
            while let Ok(cmd) = self.commands.try_recv() {
                if !st.apply(cmd, kafka, &self.zones.queues) {
                    return;
                }
            }
            let polled = kafka.map_or(0, |k| poll_kafka(k, &mut st.bindings, &self.zones.queues));
            if let Some(k) = kafka {
                // A rebalance runs inside the poll (which then returns): bindings of
                // revoked partitions go (their tasks committed and closed), and tasks
                // of newly assigned ones start, before the next poll can return their
                // records.
                let revoked = k.take_revoked();
                st.bindings.retain(|b| {
                    let keep = !revoked
                        || match &b.feed {
                            Feed::Kafka { topic, .. } => k.owns(topic, b.partition),
                            Feed::Log(_) => true,
                        };
                    if !keep {
                        unbind(b, kafka, &self.zones.queues);
                    }
                    keep
                });
                if k.take_assigned()
                    && let Some(member) = k.member()
                {
                    let started = member.start_assigned();
                    if !started.is_empty() {
                        st.apply(IoCommand::Bind(started), kafka, &self.zones.queues);
                    }
                }
            }

            let now = now_millis();
            if now - published >= 1000 {
                published = now;
                crate::memory::report::advance_allocator_decay();
                self.zones.state.publish_metrics();
                self.zones.record_cache.publish_metrics();
                crate::memory::report::publish(&self.zones.report());
                publish_lag(&st.bindings, kafka);
            }
            pressure.check(now, &self.zones);
            while st.timers.peek().is_some_and(|t| t.at_ms <= now) {
                if let Some(task) = st.timers.pop().and_then(|t| t.task.upgrade()) {
                    task.notify();
                }
            }

            // Fill every partition first, then wake the tasks: a task reading several
            // partitions then sees all of them when it picks the lowest timestamp.
            let mut moved = 0usize;
            let mut paused = 0usize;
            let mut fed: Vec<Arc<Task>> = Vec::new();
            st.bindings.retain_mut(|b| {
                let (n, alive) = fill(b, &self.zones.queues, kafka);
                if !alive {
                    unbind(b, kafka, &self.zones.queues);
                }
                if n > 0
                    && let Some(t) = b.task.upgrade()
                    && !fed.iter().any(|f| Arc::ptr_eq(f, &t))
                {
                    fed.push(t);
                }
                moved += n;
                paused += usize::from(b.queue.is_paused());
                alive
            });
            for t in fed {
                t.notify();
            }
            self.stats.paused.store(paused, Ordering::Relaxed);
            metrics::gauge!("weir_queue_bytes").set(self.zones.queues.used() as f64);
            metrics::gauge!("weir_partitions_paused").set(paused as f64);
            if moved > 0 || polled > 0 {
                continue;
            }

            let mut timeout = st.timers.peek().map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t.at_ms - now).clamp(0, 1000) as u64)
            });
            if pressure.watching() {
                timeout = timeout.min(Duration::from_millis(PRESSURE_CHECK_MS as u64));
            }
            if kafka.is_some() {
                // The consumer has no channel to wait on: come back to poll it soon, for
                // records and for the group's events (a rebalance is served inside a
                // poll, one event per poll).
                let reading = st
                    .bindings
                    .iter()
                    .any(|b| matches!(b.feed, Feed::Kafka { .. }));
                timeout = timeout.min(Duration::from_millis(if reading { 2 } else { 5 }));
            }
            select! {
                recv(self.commands) -> cmd => match cmd {
                    Ok(cmd) => if !st.apply(cmd, kafka, &self.zones.queues) { return },
                    Err(_) => return,
                },
                recv(self.wake) -> _ => {},
                recv(self.appends) -> _ => {},
                default(timeout) => {},
            }
        }
    }
}

/// Sets each query's lag (records in its input partitions it has not processed: the
/// partition's end offset less the binding's next fetch offset, plus what waits in its
/// queue) and each partition's gauges ([`publish_partition`]). On Kafka the end offset is
/// the one the consumer's last fetch saw.
fn publish_lag(bindings: &[Binding], kafka: Option<&KafkaClients>) {
    let mut per_query: HashMap<u64, (Arc<crate::exec::runtime::QueryShared>, u64)> = HashMap::new();
    for b in bindings {
        let Some(task) = b.task.upgrade() else {
            continue;
        };
        let end = match &b.feed {
            Feed::Log(log) => log.end_offset(b.partition).ok(),
            Feed::Kafka { topic, .. } => kafka.and_then(|k| k.cached_end(topic, b.partition)),
        };
        let queued = b.queue.len() as u64;
        let lag = end.map(|end| (end - b.next_offset).max(0) as u64 + queued);
        publish_partition(b, queued, b.queue.bytes() as u64, lag);
        if let Some(lag) = lag {
            per_query
                .entry(b.query)
                .or_insert_with(|| (task.query.clone(), 0))
                .1 += lag;
        }
    }
    for (query, lag) in per_query.into_values() {
        query.set_lag(lag);
    }
}

/// A partition's gauges, labelled `{query, topic, partition}`: the records and bytes
/// waiting in its queue (the task's input queue depth) and, once its end offset is
/// known, the query's lag on it.
fn publish_partition(b: &Binding, queued: u64, queued_bytes: u64, lag: Option<u64>) {
    let labels = [
        ("query", b.query_name.to_string()),
        ("topic", b.feed.topic().to_string()),
        ("partition", b.partition.to_string()),
    ];
    metrics::gauge!("weir_partition_queue_records", &labels).set(queued as f64);
    metrics::gauge!("weir_partition_queue_bytes", &labels).set(queued_bytes as f64);
    if let Some(lag) = lag {
        metrics::gauge!("weir_consumer_lag_records", &labels).set(lag as f64);
    }
}

/// Moves what fits from the log (or the batches polled from Kafka) into the queue.
/// Returns (records moved, binding alive).
fn fill(b: &mut Binding, budget: &ByteBudget, kafka: Option<&KafkaClients>) -> (usize, bool) {
    if b.task.strong_count() == 0 {
        return (0, false);
    }
    let cap = b.queue.cap();
    if let Feed::Kafka {
        topic,
        waiting,
        pausing,
    } = &mut b.feed
    {
        let mut moved = 0;
        while let Some(batch) = waiting.pop_front() {
            let last = batch.last_offset();
            let (n, bytes) = (batch.len(), batch.remaining_bytes());
            // Its bytes move from waiting to queued: the queue charges them again.
            budget.release(bytes);
            match b.queue.try_push(batch) {
                Ok(()) => {
                    moved += n;
                    if let Some(o) = last {
                        b.next_offset = o + 1;
                    }
                }
                Err(TryPushError::Full(batch) | TryPushError::OverBudget(batch)) => {
                    budget.charge(bytes);
                    waiting.push_front(batch);
                    break;
                }
                Err(TryPushError::Closed(batch)) => {
                    waiting.push_front(batch);
                    budget.charge(bytes);
                    return (moved, false);
                }
            }
        }
        let held: usize = waiting.iter().map(FetchBatch::len).sum();
        let want = if held >= 4 * cap || budget.used() >= budget.cap() {
            true
        } else if held < cap {
            false
        } else {
            *pausing
        };
        if want != *pausing
            && let Some(k) = kafka
        {
            *pausing = want;
            k.want_paused(topic, b.partition, want);
        }
        b.queue.pause_if_full();
        return (moved, true);
    }
    let Feed::Log(log) = &b.feed else {
        return (0, true);
    };
    if b.queue.pause_if_full() {
        return (0, true);
    }
    let room = b.queue.room();
    let batch = match log.fetch_batch(
        b.partition,
        b.next_offset,
        room.min(FETCH_BATCH),
        budget.available().max(1),
    ) {
        Ok(Some(batch)) => batch,
        Ok(None) => return (0, true),
        Err(_) => return (0, false),
    };
    let n = batch.len();
    match b.queue.try_push(batch) {
        Ok(()) => {
            b.next_offset += n as i64;
            (n, true)
        }
        // Not fetched after all: the same records are fetched again once there is room.
        Err(TryPushError::Full(_) | TryPushError::OverBudget(_)) => (0, true),
        Err(TryPushError::Closed(_)) => (0, false),
    }
}
