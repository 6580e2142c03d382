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
//! Where the records come from is the [`Transport`]'s business: the in-process
//! broker's feeds fetch from its log here; Kafka's are filled by the transport's poll
//! of the shared consumer, and its consumer-group rebalances are served inside that
//! poll, on this thread (revoked partitions' tasks commit and close before the poll
//! returns; after it, this thread drops their bindings and binds the tasks built for
//! assigned partitions, so the next poll finds a binding for every record it returns).

use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use crate::io::transport::{Binding, Transport, Wake, unbind};
use crate::memory::pressure::{PRESSURE_CHECK_MS, Pressure};
use crate::memory::{ByteBudget, Zones};
use crate::record::now_millis;

pub(crate) enum IoCommand {
    Bind(Vec<Binding>),
    Unbind { query: u64 },
    WakeAt { at_ms: i64, task: Weak<dyn Wake> },
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
    pub(crate) zones: Zones,
    /// The partition queues' zone.
    pub(crate) queues: Arc<ByteBudget>,
    pub(crate) transport: Arc<dyn Transport>,
}

/// A wall-clock deadline: wake `task` at `at_ms`. Ordered soonest first.
struct Timer {
    at_ms: i64,
    task: Weak<dyn Wake>,
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
    fn apply(&mut self, cmd: IoCommand, transport: &dyn Transport, budget: &ByteBudget) -> bool {
        match cmd {
            IoCommand::Bind(bindings) => {
                for b in bindings {
                    match transport.bind(&b) {
                        Ok(true) => self.bindings.push(b),
                        // Revoked since its task was built: the task closes.
                        Ok(false) => {}
                        Err(e) => {
                            // Its task would wait for records that never come: the
                            // query fails with the reason instead.
                            log::error!("{e}");
                            if let Some(t) = b.task.upgrade() {
                                t.fail_query(e);
                            }
                        }
                    }
                }
            }
            IoCommand::Unbind { query } => {
                self.bindings.retain_mut(|b| {
                    let keep = b.query != query;
                    if !keep {
                        unbind(b, budget);
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

impl IoThread {
    pub(crate) fn run(self) {
        let transport = self.transport.clone();
        self.serve();
        // The runtime shuts down: nothing of this process's is left half done on the
        // cluster (an open transaction would hold its input offsets pending).
        transport.close();
    }

    fn serve(self) {
        let mut st = IoState::default();
        let mut published = 0i64;
        let mut pressure = Pressure::new(self.zones.limit);
        let transport = &*self.transport;
        let budget = &*self.queues;
        loop {
            // Commands first: they change what to fetch.
            while let Ok(cmd) = self.commands.try_recv() {
                if !st.apply(cmd, transport, budget) {
                    return;
                }
            }
            let polled = transport.poll(&mut st.bindings, budget);
            let started = transport.rebalanced(&mut st.bindings, budget);
            if !started.is_empty() {
                st.apply(IoCommand::Bind(started), transport, budget);
            }

            let now = now_millis();
            if now - published >= 1000 {
                published = now;
                crate::memory::allocator::advance_allocator_decay();
                self.zones.publish_metrics();
                publish_lag(&st.bindings);
            }
            pressure.check(now, &self.zones);
            while st.timers.peek().is_some_and(|t| t.at_ms <= now) {
                if let Some(task) = st.timers.pop().and_then(|t| t.task.upgrade()) {
                    task.wake();
                }
            }

            // Fill every partition first, then wake the tasks: a task reading several
            // partitions then sees all of them when it picks the lowest timestamp.
            let mut moved = 0usize;
            let mut paused = 0usize;
            let mut fed: Vec<Arc<dyn Wake>> = Vec::new();
            st.bindings.retain_mut(|b| {
                let (n, alive) = if b.task.strong_count() == 0 {
                    (0, false)
                } else {
                    b.feed
                        .fill(b.partition, &mut b.next_offset, &b.queue, budget)
                };
                if !alive {
                    if let Some(e) = b.feed.take_error()
                        && let Some(t) = b.task.upgrade()
                    {
                        log::error!("query '{}': {e}", b.query_name);
                        t.fail_query(e);
                    }
                    unbind(b, budget);
                } else {
                    // What a task with several inputs may wait for (task idling).
                    // An end offset not known yet (Kafka, before the first fetch)
                    // counts as records on the way, as in Kafka Streams.
                    let next = b.next_offset;
                    b.queue
                        .set_more_upstream(b.feed.end_offset(b.partition).is_none_or(|e| e > next));
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
                t.wake();
            }
            self.stats.paused.store(paused, Ordering::Relaxed);
            metrics::gauge!(crate::metrics::QUEUE_BYTES).set(budget.used() as f64);
            metrics::gauge!(crate::metrics::PARTITIONS_PAUSED).set(paused as f64);
            if moved > 0 || polled > 0 {
                continue;
            }

            let mut timeout = st.timers.peek().map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t.at_ms - now).clamp(0, 1000) as u64)
            });
            if pressure.watching() {
                timeout = timeout.min(Duration::from_millis(PRESSURE_CHECK_MS as u64));
            }
            if let Some(t) = transport.idle_timeout(!st.bindings.is_empty()) {
                timeout = timeout.min(t);
            }
            select! {
                recv(self.commands) -> cmd => match cmd {
                    Ok(cmd) => if !st.apply(cmd, transport, budget) { return },
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
/// queue) and each partition's gauges ([`publish_partition`]). The end offset is the
/// one the feed saw last (on Kafka, the consumer's last fetch).
fn publish_lag(bindings: &[Binding]) {
    let mut per_query: HashMap<u64, (Arc<AtomicU64>, u64)> = HashMap::new();
    for b in bindings {
        if b.task.strong_count() == 0 {
            continue;
        }
        let end = b.feed.end_offset(b.partition);
        let queued = b.queue.len() as u64;
        let lag = end.map(|end| (end - b.next_offset).max(0) as u64 + queued);
        publish_partition(b, queued, b.queue.bytes() as u64, lag);
        if let Some(lag) = lag {
            per_query
                .entry(b.query)
                .or_insert_with(|| (b.lag.clone(), 0))
                .1 += lag;
        }
    }
    for (query, lag) in per_query.into_values() {
        query.store(lag, Ordering::Relaxed);
    }
}

/// A partition's gauges, labelled `{query, topic, partition}`: the records and bytes
/// waiting in its queue (the task's input queue depth) and, once its end offset is
/// known, the query's lag on it.
pub(crate) fn publish_partition(b: &Binding, queued: u64, queued_bytes: u64, lag: Option<u64>) {
    let labels = [
        ("query", b.query_name.to_string()),
        ("topic", b.feed.topic().to_string()),
        ("partition", b.partition.to_string()),
    ];
    metrics::gauge!(crate::metrics::PARTITION_QUEUE_RECORDS, &labels).set(queued as f64);
    metrics::gauge!(crate::metrics::PARTITION_QUEUE_BYTES, &labels).set(queued_bytes as f64);
    if let Some(lag) = lag {
        metrics::gauge!(crate::metrics::CONSUMER_LAG_RECORDS, &labels).set(lag as f64);
    }
}
