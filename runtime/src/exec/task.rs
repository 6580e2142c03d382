//! Tasks: one sub-topology instantiated for one input partition, run cooperatively on
//! the shared worker pool.
//!
//! A task is *runnable* when one of its partition queues holds records, a wall-clock
//! deadline has passed, or its query is stopping. It then runs one bounded batch (at
//! most `max_batch_records` records or `max_batch_time`), flushes its sinks, gives
//! back its queue charges, and yields: if it still has work it goes to the back of the
//! runtime's run queue, so a hot query cannot starve the others.
//!
//! Scheduling state is one atomic: IDLE → QUEUED (enqueued once) → RUNNING, and a
//! notification that arrives while RUNNING becomes NOTIFIED, which re-queues the task
//! when its batch ends. That gives at most one queued copy of a task and no lost
//! wake-ups. CLOSED is terminal.
//!
//! Commit (at-least-once): every `commit_interval` and on a clean stop, a task flushes
//! its sinks, then commits the next offset of each input partition to its query's
//! group. A task that fails commits nothing, so a restart re-reads from the last
//! commit.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Condvar};
use std::time::Instant;

use super::commit::TaskInner;
use super::core::RuntimeCore;
use super::query::QueryShared;
use crate::error::{Error, Result};
use crate::io::transport::{Prepared, Wake};
use crate::processor::TaskId;
use crate::processor::internals::panic_message;
use crate::record::now_millis;
use crate::sync::{Mutex, MutexGuard};

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const CLOSED: u8 = 4;

enum After {
    More,
    Idle,
    Closed,
}

/// A task and its scheduling state.
/// Numbers tasks across the process (the exactly-once transaction tells them apart).
static NEXT_TASK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) struct Task {
    pub(crate) id: TaskId,
    /// Unique in the process.
    pub(crate) uid: u64,
    state: AtomicU8,
    pub(crate) query: Arc<QueryShared>,
    rt: Arc<RuntimeCore>,
    inner: Mutex<TaskInner>,
    /// The (topic, partition) pairs it reads, readable while it runs.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) partitions: Vec<(Arc<str>, u32)>,
    /// Its partitions were taken away (a consumer-group rebalance): it commits what it
    /// processed and closes, and the query goes on.
    revoked: AtomicBool,
    /// A global store's task: it reads outside the group, so no rebalance revokes it
    /// (its topic may also be read, and revoked, as another query's stream).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) global: bool,
    /// Set once closed; [`Task::wait_closed`] waits for it.
    closed: Mutex<bool>,
    closed_cv: Condvar,
}

impl Task {
    pub(crate) fn new(
        id: TaskId,
        query: Arc<QueryShared>,
        rt: Arc<RuntimeCore>,
        inner: TaskInner,
    ) -> Self {
        let partitions = inner
            .inputs
            .iter()
            .map(|i| (i.topic.clone(), i.partition))
            .collect();
        let global = inner.global.is_some();
        Task {
            id,
            uid: NEXT_TASK.fetch_add(1, SeqCst),
            state: AtomicU8::new(IDLE),
            query,
            rt,
            inner: Mutex::new(inner),
            partitions,
            revoked: AtomicBool::new(false),
            global,
            closed: Mutex::new(false),
            closed_cv: Condvar::new(),
        }
    }

    /// Makes the task commit what it has processed and close (its partitions go to
    /// another member of the group); [`Task::wait_closed`] waits for that.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn revoke(self: &Arc<Self>) {
        self.revoked.store(true, SeqCst);
        self.notify();
    }

    /// Exactly-once: records the transaction's epoch the task joined in.
    pub(crate) fn joined(&self, epoch: u64) {
        self.inner.lock().txn_epoch = epoch;
    }

    /// Closes a task that never ran (its query began stopping before it was added).
    pub(crate) fn discard(&self) {
        let mut inner = self.inner.lock();
        if !inner.closed {
            inner.close_all();
        }
        drop(inner);
        if let Some(txn) = self.rt.txn() {
            txn.leave(self.uid);
        }
        self.state.store(CLOSED, SeqCst);
        *self.closed.lock() = true;
        self.closed_cv.notify_all();
    }

    /// Waits until the task has closed or `timeout` passes; true if closed.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn wait_closed(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut closed = self.closed.lock();
        while !*closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            closed = crate::sync::wait_timeout(&self.closed_cv, closed, deadline - now);
        }
        true
    }

    /// Makes the task run soon (unless it is queued already, or closed).
    pub(crate) fn notify(self: &Arc<Self>) {
        let mut s = self.state.load(SeqCst);
        loop {
            let next = match s {
                IDLE => QUEUED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match self.state.compare_exchange(s, next, SeqCst, SeqCst) {
                Ok(_) => {
                    if next == QUEUED {
                        self.rt.enqueue(self.clone());
                    }
                    return;
                }
                Err(actual) => s = actual,
            }
        }
    }

    /// Runs one batch on the current worker. Called only by the scheduler.
    pub(crate) fn run(self: Arc<Self>) {
        if self
            .state
            .compare_exchange(QUEUED, RUNNING, SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_batch()));
        let after = match outcome {
            Ok(Ok(after)) => after,
            Ok(Err(e)) => {
                self.fail(e);
                After::Closed
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                let processor = {
                    let inner = self.inner.lock();
                    inner.core.current.map_or_else(
                        || format!("task {}", self.id),
                        |n| inner.core.names[n].clone(),
                    )
                };
                self.fail(Error::Panic { processor, message });
                After::Closed
            }
        };
        match after {
            After::Closed => self.state.store(CLOSED, SeqCst),
            After::More => {
                self.state.store(QUEUED, SeqCst);
                self.rt.enqueue(self.clone());
            }
            After::Idle => {
                if self
                    .state
                    .compare_exchange(RUNNING, IDLE, SeqCst, SeqCst)
                    .is_err()
                {
                    self.state.store(QUEUED, SeqCst);
                    self.rt.enqueue(self.clone());
                }
            }
        }
    }

    /// Fails the query and closes this task without committing.
    fn fail(self: &Arc<Self>, e: Error) {
        log::error!("query '{}' task {} failed: {e}", self.query.name, self.id);
        let why = format!("query '{}' task {}: {e}", self.query.name, self.id);
        self.query.fail(e);
        if let Some(txn) = self.rt.txn() {
            // Exactly-once: what every task wrote since the last commit is aborted (the
            // other queries' tasks start again from it).
            txn.fail(self.uid, &why);
        }
        let mut inner = self.inner.lock();
        if !inner.closed {
            inner.core.current = None;
            self.close(inner);
        }
    }

    /// Closes every node and queue of the task, then (lock released) tells the query.
    fn close(self: &Arc<Self>, mut inner: MutexGuard<'_, TaskInner>) -> After {
        if inner.close_all() {
            self.rt.wake_io();
        }
        drop(inner);
        if let Some(txn) = self.rt.txn() {
            txn.leave(self.uid);
        }
        *self.closed.lock() = true;
        self.closed_cv.notify_all();
        self.query.task_closed(self);
        After::Closed
    }

    /// Exactly-once: closes the task after the round holding its last records
    /// committed (a stop, a revocation, or a processor shutting the query down).
    fn close_committed(self: &Arc<Self>, mut guard: MutexGuard<'_, TaskInner>) -> Result<After> {
        // Its stores are now exactly what their changelogs' committed records say.
        guard.write_checkpoints()?;
        if let Some(e) = guard.core.env.shutdown.take() {
            log::error!(
                "query '{}' task {} shuts its query down: {e}",
                self.query.name,
                self.id
            );
            self.query.fail_after_commit(e);
        }
        Ok(self.close(guard))
    }

    /// Exactly-once: takes part in the runtime's commit rounds. Returns what the task
    /// does instead of processing, if anything: it waits while its round is under way,
    /// prepares when one is requested (or it is leaving), and closes once its last
    /// round committed.
    fn exactly_once(
        self: &Arc<Self>,
        mut guard: MutexGuard<'_, TaskInner>,
    ) -> Result<Option<After>> {
        let rt = self.rt.clone();
        let Some(txn) = rt.txn() else {
            return Ok(None);
        };
        let status = txn.status();
        if status.epoch > guard.txn_epoch {
            // The transaction was aborted since this task joined it.
            if let Some(why) = txn.failed() {
                return Err(Error::kafka(why));
            }
            return Ok(Some(self.start_again(guard)));
        }
        if status.draining {
            // Tasks of the aborted epoch are closing; woken once they all have.
            return Ok(Some(After::Idle));
        }
        let inner = &mut *guard;
        let leaving = self.query.is_stopping() || self.revoked.load(SeqCst);
        let (requested, round) = (status.requested, status.round);
        if let Some(r) = inner.prepared_round {
            if round <= r {
                return Ok(Some(After::Idle));
            }
            inner.prepared_round = None;
            inner.committed();
            if leaving || inner.core.env.shutdown.is_some() {
                return self.close_committed(guard).map(Some);
            }
            return Ok(None);
        }
        if leaving && !self.query.is_clean_stop() {
            // The query failed outside a task (its input could not be read, its tasks
            // could not be built): what it wrote since the last commit must not be
            // committed by the others' next round, so the transaction is aborted, as
            // for a task's failure.
            txn.fail(self.uid, &format!("query '{}' failed", self.query.name));
            return Ok(Some(self.close(guard)));
        }
        if !(requested || leaving || inner.core.env.shutdown.is_some()) {
            return Ok(None);
        }
        if !requested {
            txn.request();
        }
        if !inner.flush_for_commit(false)? {
            // The cluster has not acknowledged this task's records: it prepares once it
            // has (the round waits; processing stalls until then).
            self.query.commit_deferred(self.rt.config.task_timeout)?;
            return Ok(Some(After::More));
        }
        let offsets = inner.txn_offsets();
        match txn.prepare(self.uid, offsets)? {
            Prepared::Committed => {
                self.query.commit_went_through();
                inner.committed();
                if leaving || inner.core.env.shutdown.is_some() {
                    return self.close_committed(guard).map(Some);
                }
                Ok(None)
            }
            Prepared::Wait(r) => {
                inner.prepared_round = Some(r);
                Ok(Some(After::Idle))
            }
            Prepared::Reset => Ok(Some(self.start_again(guard))),
        }
    }

    /// Exactly-once: the transaction was aborted since this task joined it, for a
    /// rebalance (the group moved on while it committed) or because another query
    /// failed. The task closes without committing, as a failed one does (no
    /// checkpoint: its stores are wiped and restored from their committed
    /// changelogs), but its query goes on: the runtime builds the task again from the
    /// last commit once every task of the aborted transaction has closed, if this
    /// member still owns its partitions (and its query is not stopping).
    fn start_again(self: &Arc<Self>, mut guard: MutexGuard<'_, TaskInner>) -> After {
        guard.core.current = None;
        if self.query.is_stopping() {
            // Its query is stopping (or failed): it is not built again.
            return self.close(guard);
        }
        log::info!(
            "query '{}' task {}: the transaction was aborted; the task starts again from its last commit",
            self.query.name,
            self.id
        );
        self.query.task_restarted();
        self.close(guard)
    }

    fn run_batch(self: &Arc<Self>) -> Result<After> {
        let mut guard = self.inner.lock();
        if guard.closed {
            return Ok(After::Closed);
        }
        // A global task commits to its store's offsets file, outside the transaction.
        let transactional = self.rt.txn().is_some() && guard.global.is_none();
        if transactional {
            if let Some(after) = self.exactly_once(guard)? {
                return Ok(after);
            }
            guard = self.inner.lock();
        }
        let inner = &mut *guard;
        let cfg = &self.rt.config;
        if self.query.is_stopping() {
            if self.query.is_clean_stop() {
                if !inner.commit(&self.query.group)? {
                    log::warn!(
                        "query '{}' task {} stops without its last commit (the cluster did not take it): a restart processes its records since the previous commit again",
                        self.query.name,
                        self.id
                    );
                }
                if let Some(e) = inner.core.env.shutdown.take() {
                    self.query.fail_after_commit(e);
                }
            }
            return Ok(self.close(guard));
        }
        if self.revoked.load(SeqCst) {
            // Another member takes these partitions over from the committed offsets
            // and changelogs: commit everything processed first (what is still queued
            // is read again there; if the commit cannot be made, from the last one).
            inner.commit(&self.query.group)?;
            log::info!(
                "query '{}' task {}: partitions revoked, committed and closed",
                self.query.name,
                self.id
            );
            return Ok(self.close(guard));
        }

        let n = inner.process(cfg.max_batch_records, cfg.max_batch_time)?;
        inner.flush_sinks()?;

        if inner.release_inputs() {
            self.rt.wake_io();
        }
        if n > 0 {
            inner.uncommitted = true;
            let core = &mut inner.core;
            core.env
                .metrics
                .publish(&self.query.name, self.id, &core.names);
            self.query.record_progress(
                n as u64,
                std::mem::take(&mut inner.core.env.skipped),
                std::mem::take(&mut inner.core.env.dropped_late),
            );
        }
        let due = inner.core.env.shutdown.is_some()
            || (inner.uncommitted && inner.last_commit.elapsed() >= cfg.commit_interval);
        if due
            && transactional
            && let Some(txn) = self.rt.txn()
        {
            // Exactly-once: every task commits in one round (this one included: the
            // request wakes it).
            txn.request();
            return Ok(After::More);
        }
        if due {
            if inner.commit(&self.query.group)? {
                self.query.commit_went_through();
            } else {
                self.query.commit_deferred(cfg.task_timeout)?;
            }
        }
        if let Some(e) = inner.core.env.shutdown.take() {
            // A clean failure: everything processed is committed (the processor that
            // asked stopped emitting and persisted what it held), then the query fails
            // and its other tasks commit as they close.
            log::error!(
                "query '{}' task {} shuts its query down: {e}",
                self.query.name,
                self.id
            );
            self.query.fail_after_commit(e);
            return Ok(self.close(guard));
        }
        self.register_deadline(inner);
        if let Some(until) = inner.waiting_until.take() {
            // Task idling: the fetcher wakes the task when it queues records; the timer
            // covers the idle deadline.
            let left = until.saturating_duration_since(Instant::now());
            self.rt.wake_at(
                now_millis() + left.as_millis().max(1) as i64,
                Arc::downgrade(self),
            );
            return Ok(After::Idle);
        }

        // Charged records beyond those held locally are still queued.
        let more = inner.inputs.iter().any(|i| {
            let local = i.local_records();
            local > 0 || i.queue.len() > local
        });
        Ok(if more { After::More } else { After::Idle })
    }

    /// Asks the I/O thread to wake this task at its next wall-clock deadline (the next
    /// wall-clock punctuation, or the next commit if it has uncommitted progress).
    fn register_deadline(self: &Arc<Self>, inner: &mut TaskInner) {
        let commit_at = inner.uncommitted.then(|| {
            let left = self
                .rt
                .config
                .commit_interval
                .saturating_sub(inner.last_commit.elapsed());
            now_millis() + left.as_millis() as i64
        });
        let deadline = match (inner.core.next_wall_deadline(), commit_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = now_millis();
        if let Some(d) = deadline {
            let stale = inner.registered_wake.is_none_or(|r| r <= now || d < r);
            if stale {
                inner.registered_wake = Some(d);
                self.rt.wake_at(d, Arc::downgrade(self));
            }
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn fail_query(&self, e: Error) {
        self.query.fail(e);
    }
}
