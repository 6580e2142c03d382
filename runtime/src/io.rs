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

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use crate::broker::{FetchBatch, TopicLog};
use crate::queue::{ByteBudget, PartitionQueue, TryPushError};
use crate::record::now_millis;
use crate::task::Task;

/// Most records moved per partition per pass, so one partition cannot hog the thread.
const FETCH_BATCH: usize = 1024;

/// One partition feeding one task's queue.
pub(crate) struct Binding {
    pub(crate) query: u64,
    pub(crate) topic: Arc<TopicLog>,
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
    pub(crate) budget: Arc<ByteBudget>,
    pub(crate) stats: Arc<IoStats>,
    /// Published as gauges once a second.
    pub(crate) state: crate::state::StateEnv,
    pub(crate) record_cache: Arc<crate::state::RecordCache>,
    pub(crate) suppression_budget: Arc<crate::queue::ByteBudget>,
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
    fn apply(&mut self, cmd: IoCommand) -> bool {
        match cmd {
            IoCommand::Bind(b) => self.bindings.extend(b),
            IoCommand::Unbind { query } => self.bindings.retain(|b| b.query != query),
            IoCommand::WakeAt { at_ms, task } => self.timers.push(Timer { at_ms, task }),
            IoCommand::Shutdown => return false,
        }
        true
    }
}

impl IoThread {
    pub(crate) fn run(self) {
        let mut st = IoState::default();
        let mut published = 0i64;
        loop {
            // Commands first: they change what to fetch.
            while let Ok(cmd) = self.commands.try_recv() {
                if !st.apply(cmd) {
                    return;
                }
            }

            let now = now_millis();
            if now - published >= 1000 {
                published = now;
                self.state.publish_metrics();
                self.record_cache.publish_metrics();
                metrics::gauge!("weir_memory_used_bytes", "zone" => "suppression")
                    .set(self.suppression_budget.used() as f64);
                metrics::gauge!("weir_memory_limit_bytes", "zone" => "suppression")
                    .set(self.suppression_budget.cap() as f64);
            }
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
                let (n, alive) = fill(b, &self.budget);
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
            metrics::gauge!("weir_queue_bytes").set(self.budget.used() as f64);
            metrics::gauge!("weir_partitions_paused").set(paused as f64);
            if moved > 0 {
                continue;
            }

            let timeout = st.timers.peek().map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t.at_ms - now).clamp(0, 1000) as u64)
            });
            select! {
                recv(self.commands) -> cmd => match cmd {
                    Ok(cmd) => if !st.apply(cmd) { return },
                    Err(_) => return,
                },
                recv(self.wake) -> _ => {},
                recv(self.appends) -> _ => {},
                default(timeout) => {},
            }
        }
    }
}

/// Moves what fits from the log into the queue. Returns (records moved, binding alive).
fn fill(b: &mut Binding, budget: &ByteBudget) -> (usize, bool) {
    if b.task.strong_count() == 0 {
        return (0, false);
    }
    if b.queue.pause_if_full() {
        return (0, true);
    }
    let room = b.queue.room();
    let batch = match b.topic.fetch_batch(
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
