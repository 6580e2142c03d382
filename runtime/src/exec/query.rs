//! A query's lifecycle: its shared state while it runs (tasks, counters, failure),
//! the handle users hold, and the states it goes through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::core::RuntimeCore;
use super::task::Task;
use crate::error::{Error, Result};
use crate::io::thread::IoCommand;
use crate::state::global::SharedInner;
use crate::sync::Mutex;
use crate::topology::plan::QueryPlan;

/// The lifecycle state of a query.
#[derive(Debug, Clone)]
pub enum QueryState {
    /// Processing.
    Running,
    /// `stop` was called (or a task failed) and tasks are closing.
    Stopping,
    /// Stopped cleanly: every task flushed and committed.
    Stopped,
    /// Failed: the first error any of its tasks hit. Nothing after the last commit was
    /// committed.
    Failed(Error),
}

impl QueryState {
    /// True for `Stopped` and `Failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, QueryState::Stopped | QueryState::Failed(_))
    }
}

impl PartialEq for QueryState {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Counters of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Records taken from partition queues and run through the topology.
    pub records_processed: u64,
    /// Records skipped by a log-and-continue deserialization handler (or for a
    /// negative extracted timestamp).
    pub records_skipped: u64,
    /// Records windowed operators dropped because their window had closed (stream time
    /// past window end + grace), counted once per window they missed.
    pub records_dropped_late: u64,
    /// Tasks (sub-topology × partition) the query runs now. On Kafka, those of the
    /// partitions the consumer group assigned to this process (none before the first
    /// assignment, and none once stopped).
    pub tasks: usize,
    /// Store entries read back from changelog topics before tasks started (Kafka).
    pub records_restored: u64,
    /// Records in its input partitions it has not processed yet (end offset less its
    /// position, summed over its partitions), as of the I/O thread's last second; on
    /// Kafka from the end offsets the consumer's last fetches saw. Also the gauge
    /// `weir_consumer_lag_records{query,topic,partition}`.
    pub lag: u64,
    /// Commits put off because the cluster did not answer in time (a broker down or
    /// restarting), or because the group was rebalancing: the offsets stay at the
    /// last commit and the task tries again. Also `weir_commits_deferred_total{query}`.
    pub commits_deferred: u64,
    /// How long the query's commits have been waiting for the cluster, in ms; zero
    /// once one goes through. Past
    /// [`RuntimeConfigBuilder::task_timeout`](crate::RuntimeConfigBuilder::task_timeout)
    /// the query fails. Also the gauge `weir_commit_stalled_ms{query}`.
    pub commit_stalled_ms: u64,
    /// Exactly-once: tasks closed without committing and built again from the last
    /// commit because a rebalance made the transaction's commit fail (the group had
    /// moved on; Kafka Streams' `TaskMigratedException`). The query keeps running; its
    /// records since the last commit are processed again, and counted again in
    /// `records_processed`. Also `weir_tasks_restarted_total{query}`.
    pub tasks_restarted: u64,
}

pub(crate) struct Status {
    pub(crate) state: QueryState,
    pub(crate) failure: Option<Error>,
    /// The failure came with a commit of everything processed (a full suppression
    /// buffer that shuts its query down): the other tasks commit as they close too.
    pub(crate) commit_on_stop: bool,
}

/// Shared state of one running query.
pub(crate) struct QueryShared {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) group: String,
    pub(crate) status: Mutex<Status>,
    pub(crate) cv: Condvar,
    pub(crate) stopping: AtomicBool,
    /// Open tasks, plus one while the query runs (released by the stop): the query is
    /// terminal when this reaches zero. On Kafka a query may have no task for a while
    /// (no partition assigned to this member) and still be running.
    pub(crate) open_tasks: std::sync::atomic::AtomicUsize,
    /// The open tasks. Set `stopping` under this lock: no task joins a stopping query.
    pub(crate) tasks: Mutex<Vec<Arc<Task>>>,
    pub(crate) restored: AtomicU64,
    /// Records in its input partitions not yet processed (set by the I/O thread).
    pub(crate) lag: Arc<AtomicU64>,
    /// How to build the query's tasks, kept for tasks created later (on Kafka, when the
    /// group assigns partitions).
    pub(crate) plan: Arc<QueryPlan>,
    pub(crate) processed: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) dropped_late: AtomicU64,
    /// Commits put off (see [`QueryStats::commits_deferred`]).
    pub(crate) deferred: AtomicU64,
    /// See [`QueryStats::tasks_restarted`].
    pub(crate) restarted: AtomicU64,
    /// When the first of the commits deferred since the last one that went through was
    /// deferred (ms since the epoch); 0 if the last commit went through.
    pub(crate) stalled_since: std::sync::atomic::AtomicI64,
    pub(crate) io_tx: Sender<IoCommand>,
    /// The query's global stores, by name: opened and held by its global tasks, read
    /// by all (closed when the last task holding one closes).
    pub(crate) globals: Mutex<std::collections::HashMap<String, std::sync::Weak<SharedInner>>>,
}

/// Numbers queries across the process.
static NEXT_QUERY: AtomicU64 = AtomicU64::new(1);

impl QueryShared {
    /// A running query with no task yet.
    pub(crate) fn new(
        name: &str,
        group: String,
        plan: Arc<QueryPlan>,
        io_tx: Sender<IoCommand>,
    ) -> Self {
        QueryShared {
            id: NEXT_QUERY.fetch_add(1, Ordering::Relaxed),
            name: Arc::from(name),
            group,
            status: Mutex::new(Status {
                state: QueryState::Running,
                failure: None,
                commit_on_stop: false,
            }),
            cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            open_tasks: std::sync::atomic::AtomicUsize::new(1),
            tasks: Mutex::new(Vec::new()),
            restored: AtomicU64::new(0),
            lag: Arc::new(AtomicU64::new(0)),
            plan,
            processed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped_late: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            restarted: AtomicU64::new(0),
            stalled_since: std::sync::atomic::AtomicI64::new(0),
            io_tx,
            globals: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn is_clean_stop(&self) -> bool {
        let s = self.status.lock();
        s.failure.is_none() || s.commit_on_stop
    }

    pub(crate) fn record_progress(&self, processed: u64, skipped: u64, dropped_late: u64) {
        self.processed.fetch_add(processed, Ordering::Relaxed);
        if dropped_late > 0 {
            self.dropped_late.fetch_add(dropped_late, Ordering::Relaxed);
            metrics::counter!(crate::metrics::RECORDS_DROPPED_LATE_TOTAL, "query" => self.name.to_string())
                .increment(dropped_late);
        }
        if skipped > 0 {
            self.skipped.fetch_add(skipped, Ordering::Relaxed);
            metrics::counter!(crate::metrics::RECORDS_SKIPPED_TOTAL, "query" => self.name.to_string())
                .increment(skipped);
        }
        metrics::counter!(crate::metrics::RECORDS_PROCESSED_TOTAL, "query" => self.name.to_string())
            .increment(processed);
    }

    /// Starts closing every task: cleanly (commit) unless a failure was recorded.
    pub(crate) fn begin_stop(&self) {
        {
            let mut s = self.status.lock();
            if matches!(s.state, QueryState::Running) {
                s.state = QueryState::Stopping;
            }
        }
        let (first, tasks) = {
            let tasks = self.tasks.lock();
            (!self.stopping.swap(true, Ordering::AcqRel), tasks.clone())
        };
        if first {
            let _ = self.io_tx.send(IoCommand::Unbind { query: self.id });
        }
        for t in &tasks {
            t.notify();
        }
        if first {
            // The running query's own count: the last task closing (or none open)
            // makes it terminal.
            self.release_open();
        }
    }

    /// Adds a task built for this query; false (and the task is not added) if the query
    /// is stopping.
    pub(crate) fn add_task(&self, task: Arc<Task>) -> bool {
        let mut tasks = self.tasks.lock();
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        self.open_tasks.fetch_add(1, Ordering::AcqRel);
        tasks.push(task);
        true
    }

    /// The open tasks now.
    pub(crate) fn tasks(&self) -> Vec<Arc<Task>> {
        self.tasks.lock().clone()
    }

    /// Records the first failure and stops the query without committing.
    /// A task's commit went through: the query is not stalled.
    pub(crate) fn commit_went_through(&self) {
        if self.stalled_since.swap(0, Ordering::Relaxed) != 0 {
            log::info!("query '{}': commits go through again", self.name);
            metrics::gauge!(crate::metrics::COMMIT_STALLED_MS, "query" => self.name.to_string())
                .set(0.0);
        }
    }

    /// An exactly-once task closes without committing, to be built again.
    pub(crate) fn task_restarted(&self) {
        self.restarted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::TASKS_RESTARTED_TOTAL, "query" => self.name.to_string())
            .increment(1);
    }

    /// A task's commit had to wait for the cluster. An error once commits have waited
    /// longer than `timeout` (Kafka Streams' `task.timeout.ms`): the query then fails.
    pub(crate) fn commit_deferred(&self, timeout: std::time::Duration) -> Result<()> {
        self.deferred.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::COMMITS_DEFERRED_TOTAL, "query" => self.name.to_string())
            .increment(1);
        let now = crate::record::now_millis();
        let since =
            match self
                .stalled_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        let stalled = (now - since).max(0);
        metrics::gauge!(crate::metrics::COMMIT_STALLED_MS, "query" => self.name.to_string())
            .set(stalled as f64);
        if stalled as u128 > timeout.as_millis() {
            return Err(Error::kafka(format!(
                "query '{}': no commit for {} s, the cluster does not answer (task_timeout is {} s)",
                self.name,
                stalled / 1000,
                timeout.as_secs()
            )));
        }
        Ok(())
    }

    pub(crate) fn fail(&self, e: Error) {
        {
            let mut s = self.status.lock();
            if s.failure.is_none() && !s.state.is_terminal() {
                s.failure = Some(e);
            }
        }
        self.begin_stop();
    }

    /// Records `e` as the query's failure after its task committed everything it
    /// processed; the other tasks commit as they close, so a restart resumes exactly
    /// where the query stopped.
    pub(crate) fn fail_after_commit(&self, e: Error) {
        {
            let mut s = self.status.lock();
            if s.failure.is_none() && !s.state.is_terminal() {
                s.failure = Some(e);
                s.commit_on_stop = true;
            }
        }
        self.begin_stop();
    }

    /// Task `task` has closed (the query stopping, or its partitions revoked); the last
    /// one of a stopping query makes it terminal.
    pub(crate) fn task_closed(&self, task: &Task) {
        self.tasks.lock().retain(|t| !std::ptr::eq(&**t, task));
        self.release_open();
    }

    fn release_open(&self) {
        if self.open_tasks.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut s = self.status.lock();
        s.state = match s.failure.clone() {
            Some(e) => QueryState::Failed(e),
            None => QueryState::Stopped,
        };
        // Break the task -> query -> task cycle; nothing schedules these tasks again.
        self.tasks.lock().clear();
        self.cv.notify_all();
    }

    pub(crate) fn state(&self) -> QueryState {
        self.status.lock().state.clone()
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> QueryState {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.status.lock();
        while !s.state.is_terminal() {
            match deadline {
                None => s = crate::sync::wait(&self.cv, s),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    s = crate::sync::wait_timeout(&self.cv, s, d - now);
                }
            }
        }
        s.state.clone()
    }
}

/// Query names name directories, topics and groups: non-empty ASCII letters, digits,
/// '.', '_' or '-'.
pub(crate) fn check_query_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || name == "."
        || name == ".."
    {
        return Err(Error::Config(format!(
            "query name '{name}' must be non-empty ASCII letters, digits, '.', '_' or '-' (and not '.' or '..')"
        )));
    }
    Ok(())
}

/// A handle on a running query.
#[derive(Clone)]
pub struct QueryHandle {
    pub(crate) shared: Arc<QueryShared>,
    pub(crate) core: Arc<RuntimeCore>,
}

impl std::fmt::Debug for QueryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryHandle")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl QueryHandle {
    /// The query's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The consumer group the query commits its offsets to: `<application>-<query>` on
    /// the in-process broker, the application id on Kafka (each query's own position is
    /// in the offsets' metadata).
    pub fn group_id(&self) -> &str {
        &self.shared.group
    }

    /// The current state.
    pub fn state(&self) -> QueryState {
        self.shared.state()
    }

    /// Counters.
    pub fn stats(&self) -> QueryStats {
        QueryStats {
            records_processed: self.shared.processed.load(Ordering::Relaxed),
            records_skipped: self.shared.skipped.load(Ordering::Relaxed),
            records_dropped_late: self.shared.dropped_late.load(Ordering::Relaxed),
            tasks: self.shared.tasks().len(),
            records_restored: self.shared.restored.load(Ordering::Relaxed),
            lag: self.shared.lag.load(Ordering::Relaxed),
            commits_deferred: self.shared.deferred.load(Ordering::Relaxed),
            tasks_restarted: self.shared.restarted.load(Ordering::Relaxed),
            commit_stalled_ms: match self.shared.stalled_since.load(Ordering::Relaxed) {
                0 => 0,
                since => (crate::record::now_millis() - since).max(0) as u64,
            },
        }
    }

    /// Stops the query cleanly: every task finishes its batch, flushes its sinks,
    /// commits its offsets and closes its processors. Blocks until that is done, except
    /// when called from one of the runtime's own workers (then it only starts the stop;
    /// use [`QueryHandle::await_termination`] elsewhere). Returns the query's error if it
    /// had failed.
    pub fn stop(&self) -> Result<()> {
        self.shared.begin_stop();
        if self.core.pool.current_thread_index().is_some() {
            return Ok(());
        }
        let state = self.shared.wait(None);
        // Its topics leave the consumer's subscription (from a worker that would wait
        // for a rebalance the worker may be needed for; the next start prunes it).
        self.core.leave_group(&self.shared);
        match state {
            QueryState::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits until the query is stopped or failed, or `timeout` passes; returns its
    /// state then.
    pub fn await_termination(&self, timeout: Option<Duration>) -> QueryState {
        self.shared.wait(timeout)
    }
}
