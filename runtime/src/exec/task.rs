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
use std::time::{Duration, Instant};

use super::commit::TaskInner;
use super::core::RuntimeCore;
use super::input::Input;
use super::query::QueryShared;
use crate::error::{Error, Result};
use crate::io::broker::FetchBatch;
use crate::io::transport::{Prepared, Wake};
use crate::processor::PunctuationType;
use crate::processor::TaskId;
use crate::processor::internals::panic_message;
use crate::record::{RecordMetadata, now_millis};
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
        if let Some(txn) = self.rt.txn() {
            // Exactly-once: what every task wrote since the last commit is aborted.
            txn.fail(&format!(
                "query '{}' task {}: {e}",
                self.query.name, self.id
            ));
        }
        self.query.fail(e);
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
        if let Some(why) = txn.failed() {
            return Err(Error::kafka(why));
        }
        let inner = &mut *guard;
        let leaving = self.query.is_stopping() || self.revoked.load(SeqCst);
        let (requested, round) = txn.status();
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
            // The query failed: the transaction was aborted, nothing to commit.
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
        }
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

impl TaskInner {
    /// Processes up to `max` records of the task's inputs (stopping early once
    /// `max_time` has passed), always the lowest timestamp across its partitions next,
    /// with wall-clock punctuation before and after and stream-time punctuation after
    /// each record that advances stream time. Returns how many it processed.
    pub(crate) fn process(&mut self, max: usize, max_time: std::time::Duration) -> Result<usize> {
        let inner = self;
        let started = Instant::now();
        inner.core.serve_evictions()?;
        inner
            .core
            .punctuate(PunctuationType::WallClockTime, inner.core.env.clock.now())?;
        let mut n = 0usize;
        while n < max && (!n.is_multiple_of(64) || n == 0 || started.elapsed() < max_time) {
            if inner.core.env.shutdown.is_some() {
                break;
            }
            // Next record: the lowest timestamp across this task's partitions.
            let mut best: Option<(usize, i64)> = None;
            let mut empty = false;
            for (i, input) in inner.inputs.iter_mut().enumerate() {
                match input.head_timestamp() {
                    Some(ts) => {
                        input.empty_since = None;
                        if best.is_none_or(|(_, b)| ts < b) {
                            best = Some((i, ts));
                        }
                    }
                    None => empty = true,
                }
            }
            let Some((i, _)) = best else { break };
            if empty && let Some(idle) = inner.max_task_idle {
                match idling(&mut inner.inputs, idle, Instant::now()) {
                    Idling::Wait(until) => {
                        inner.waiting_until = Some(until);
                        break;
                    }
                    Idling::Enforced => inner.core.env.metrics.enforced_processing(),
                    Idling::Ready => {}
                }
            }
            let TaskInner { core, inputs, .. } = &mut *inner;
            let input = &mut inputs[i];
            let Some((offset, view, size)) =
                input.local.front_mut().and_then(FetchBatch::next_record)
            else {
                break;
            };
            input.consumed = Some(offset + 1);
            input.release_records += 1;
            input.release_bytes += size;
            match &mut core.env.metadata {
                Some(m) if Arc::ptr_eq(&m.topic, &input.topic) => {
                    m.partition = input.partition;
                    m.offset = offset;
                }
                slot => {
                    *slot = Some(RecordMetadata {
                        topic: input.topic.clone(),
                        partition: input.partition,
                        offset,
                    })
                }
            }
            // The source advances stream time (to the record's extracted timestamp);
            // stream-time punctuators fire after the record.
            let before = core.env.stream_time;
            core.ingest(input.source, &view, offset)?;
            if !core.env.state.pending_forwards.is_empty() {
                core.drain_forwards()?;
            }
            if core.env.stream_time > before {
                core.punctuate(PunctuationType::StreamTime, core.env.stream_time)?;
            }
            n += 1;
        }
        inner.core.env.metadata = None;
        if inner.core.env.shutdown.is_none() {
            inner
                .core
                .punctuate(PunctuationType::WallClockTime, inner.core.env.clock.now())?;
        }
        Ok(n)
    }
}

/// How long a task waits for a partition whose records are on their way (or whose end
/// is not known yet) before it processes the others anyway. Kafka Streams waits without
/// bound; weir bounds it because a Kafka partition read under `read_committed` can end
/// in transaction markers, which count in the end offset but are never fetched.
const ON_THE_WAY_WAIT: Duration = Duration::from_secs(1);

/// How often a waiting task looks again for records on their way (the fetcher wakes it
/// when it queues them; this only bounds a missed or stale signal).
const WAIT_POLL: Duration = Duration::from_millis(5);

/// What task idling says about the next record, when some input is empty.
#[derive(Debug, PartialEq, Eq)]
enum Idling {
    /// Every empty input has nothing more to wait for: process.
    Ready,
    /// An input's idle time ran out: process, possibly out of timestamp order.
    Enforced,
    /// Wait for an input; look again at this instant.
    Wait(Instant),
}

/// Kafka Streams' `PartitionGroup.readyToProcess`: an empty input whose records are on
/// their way is waited for (up to [`ON_THE_WAY_WAIT`], or `max_idle` if longer); one with
/// nothing known upstream is waited for `max_idle` from when it was first found empty,
/// then processing goes on without it (enforced processing).
fn idling(inputs: &mut [Input], max_idle: Duration, now: Instant) -> Idling {
    let mut verdict = Idling::Ready;
    for input in inputs.iter_mut().filter(|i| i.local_records() == 0) {
        let since = *input.empty_since.get_or_insert(now);
        let (limit, poll) = if input.queue.records_on_the_way() {
            (max_idle.max(ON_THE_WAY_WAIT), WAIT_POLL)
        } else {
            (max_idle, max_idle)
        };
        let deadline = since + limit;
        if now < deadline {
            let at = deadline.min(now + poll);
            verdict = match verdict {
                Idling::Wait(w) => Idling::Wait(w.min(at)),
                _ => Idling::Wait(at),
            };
        } else if verdict == Idling::Ready {
            verdict = Idling::Enforced;
        }
    }
    verdict
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn fail_query(&self, e: Error) {
        self.query.fail(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::queue::PartitionQueue;
    use crate::memory::ByteBudget;

    /// Two empty inputs (the caller asks only when another input has records).
    fn inputs() -> Vec<Input> {
        let budget = Arc::new(ByteBudget::new(1 << 20));
        (0..2)
            .map(|p| {
                let q = Arc::new(PartitionQueue::new(10, budget.clone()));
                Input::new(Arc::from("t"), p, 0, q)
            })
            .collect()
    }

    #[test]
    fn with_zero_idle_time_nothing_upstream_is_enforced_at_once() {
        let mut ins = inputs();
        assert_eq!(
            idling(&mut ins, Duration::ZERO, Instant::now()),
            Idling::Enforced
        );
    }

    #[test]
    fn records_on_the_way_are_waited_for_then_given_up_on() {
        let mut ins = inputs();
        ins[1].queue.set_more_upstream(true);
        let t0 = Instant::now();
        assert_eq!(
            idling(&mut ins, Duration::ZERO, t0),
            Idling::Wait(t0 + WAIT_POLL)
        );
        let later = t0 + ON_THE_WAY_WAIT / 2;
        assert_eq!(
            idling(&mut ins, Duration::ZERO, later),
            Idling::Wait(later + WAIT_POLL)
        );
        assert_eq!(
            idling(&mut ins, Duration::ZERO, t0 + ON_THE_WAY_WAIT),
            Idling::Enforced,
            "the wait is bounded from when the input was first found empty"
        );
        // Records came and went: the input is waited for afresh.
        ins[1].empty_since = None;
        let t1 = t0 + ON_THE_WAY_WAIT * 2;
        assert_eq!(
            idling(&mut ins, Duration::ZERO, t1),
            Idling::Wait(t1 + WAIT_POLL)
        );
    }

    #[test]
    fn idle_time_waits_for_records_not_produced_yet() {
        let mut ins = inputs();
        let idle = Duration::from_millis(100);
        let t0 = Instant::now();
        assert_eq!(idling(&mut ins, idle, t0), Idling::Wait(t0 + idle));
        let t1 = t0 + Duration::from_millis(60);
        assert_eq!(idling(&mut ins, idle, t1), Idling::Wait(t0 + idle));
        assert_eq!(idling(&mut ins, idle, t0 + idle), Idling::Enforced);
        // A longer idle time than the on-the-way bound applies to both kinds.
        let mut ins = inputs();
        ins[0].queue.set_more_upstream(true);
        let long = ON_THE_WAY_WAIT * 3;
        assert_eq!(
            idling(&mut ins, long, t0 + ON_THE_WAY_WAIT),
            Idling::Wait(t0 + ON_THE_WAY_WAIT + WAIT_POLL)
        );
        ins[0].queue.set_more_upstream(false);
        assert_eq!(
            idling(&mut ins, long, t0 + ON_THE_WAY_WAIT * 2),
            Idling::Wait(t0 + ON_THE_WAY_WAIT + long),
            "the first look started both inputs' clocks"
        );
    }
}
