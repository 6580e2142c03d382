//! Exactly-once: the runtime's one transaction, committed in rounds by every task.

use crate::sync::Mutex;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{Producer, ThreadedProducer};

use super::produce::DeliveryContext;
use super::{KafkaClients, REQUEST_TIMEOUT};
use crate::error::{Error, Result};
use crate::io::transport::{Prepared, TxnOffset, TxnStatus};

/// Exactly-once: one transaction for every task of the runtime (it has one producer).
/// A commit is a round: a task whose commit is due requests one; every task then
/// flushes what it holds (output and changelog writes go into the transaction), hands
/// over its offsets and stops processing; the last one sends the offsets and commits
/// the transaction, and all go on.
///
/// An abort starts a new *epoch*. The tasks of the old one close without committing
/// and are built again from the last commit: after a rebalance made the commit fail
/// (the offsets carried a generation the coordinator no longer knows: Kafka Streams'
/// `TaskMigratedException`), and after one query failed (its tasks are not built
/// again). Only when the transaction itself could not commit (a fenced producer, a
/// refused request) do they all fail. Until the last of them has closed the
/// transaction *drains*: nothing they produce is sent, and tasks that joined since
/// wait.
#[derive(Default)]
pub(crate) struct Txn {
    state: Mutex<TxnState>,
    /// A transaction was begun and not yet committed.
    open: AtomicBool,
    /// Tasks of an aborted epoch are still open (see above).
    draining: AtomicBool,
}

struct TxnTask {
    prepared: bool,
    /// The epoch it joined in.
    epoch: u64,
    wake: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct TxnState {
    tasks: HashMap<u64, TxnTask>,
    requested: bool,
    /// Rounds committed so far.
    round: u64,
    offsets: Vec<TxnOffset>,
    /// Aborts so far.
    epoch: u64,
    /// Why the last abort fails the tasks of the epochs before it (the transaction
    /// could not commit; none: they start again). Kept while they drain.
    failed: Option<String>,
    /// The last abort does not fail its tasks: once they have closed, the tasks of the
    /// partitions this member owns are built again.
    rebuild: bool,
}

/// Why a round did not commit.
enum RoundError {
    /// The group moved on (a rebalance): the round's tasks start again.
    Migrated(String),
    Failed(Error),
}

impl From<Error> for RoundError {
    fn from(e: Error) -> Self {
        RoundError::Failed(e)
    }
}

impl Txn {
    /// Begins a transaction unless one is open. False while the transaction drains:
    /// the record to be sent belongs to a task of an aborted epoch, and is dropped.
    pub(super) fn ensure_open(&self, producer: &ThreadedProducer<DeliveryContext>) -> Result<bool> {
        if self.draining.load(Acquire) {
            return Ok(false);
        }
        if self.open.load(Acquire) {
            return Ok(true);
        }
        let _st = self.state.lock();
        if self.draining.load(Acquire) {
            return Ok(false);
        }
        self.begin(producer)?;
        Ok(true)
    }

    /// Whether tasks of an aborted epoch are still open.
    pub(super) fn draining(&self) -> bool {
        self.draining.load(Acquire)
    }

    /// Begins a transaction unless one is open; the state lock is held.
    fn begin(&self, producer: &ThreadedProducer<DeliveryContext>) -> Result<()> {
        if !self.open.load(Acquire) {
            producer.begin_transaction().map_err(|e| {
                super::fatal_or(producer, "exactly-once: cannot begin a transaction", e)
            })?;
            self.open.store(true, Release);
        }
        Ok(())
    }

    /// A task joins; `wake` makes it run (to prepare, or to go on after a round).
    /// Returns the epoch it joins in.
    pub(crate) fn join(&self, task: u64, wake: Box<dyn Fn() + Send + Sync>) -> u64 {
        let mut st = self.state.lock();
        let epoch = st.epoch;
        st.tasks.insert(
            task,
            TxnTask {
                prepared: false,
                epoch,
                wake,
            },
        );
        epoch
    }

    /// Asks for a commit round: wakes every task that has not prepared. (Not while
    /// draining: the tasks asking then are of an aborted epoch.)
    pub(crate) fn request(&self) {
        let mut st = self.state.lock();
        if st.requested || self.draining.load(Acquire) {
            return;
        }
        st.requested = true;
        log::debug!("exactly-once: round {} requested", st.round);
        for t in st.tasks.values().filter(|t| !t.prepared) {
            (t.wake)();
        }
    }

    /// Where the transaction stands.
    pub(crate) fn status(&self) -> TxnStatus {
        let st = self.state.lock();
        TxnStatus {
            requested: st.requested,
            round: st.round,
            epoch: st.epoch,
            draining: self.draining.load(Acquire),
        }
    }

    /// Why the last abort fails the tasks before it, if it does.
    pub(crate) fn failed(&self) -> Option<String> {
        self.state.lock().failed.clone()
    }
}

impl TxnState {
    /// Whether `task` joined before the last abort (a task not in the transaction,
    /// such as a global store's, counts as current).
    fn is_stale(&self, task: u64) -> bool {
        self.tasks.get(&task).is_some_and(|t| t.epoch < self.epoch)
    }
}

impl KafkaClients {
    /// Exactly-once: task `task` has flushed everything and hands its offsets (query,
    /// topic, partition, next offset) to the transaction. The last task of the round to
    /// do so commits the transaction (offsets included) and wakes the others.
    pub(crate) fn prepare(&self, task: u64, offsets: Vec<TxnOffset>) -> Result<Prepared> {
        let txn = self
            .txn
            .as_ref()
            .ok_or_else(|| Error::Config("the runtime is not transactional".into()))?;
        let mut st = txn.state.lock();
        if st.is_stale(task) {
            // Aborted since it joined (a stale task never prepares while draining, and
            // the transaction drains only right after an abort).
            return match &st.failed {
                Some(e) => Err(Error::kafka(e.clone())),
                None => Ok(Prepared::Reset),
            };
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
            self.commit_round(txn, &mut st)
        } else {
            Ok(Prepared::Wait(st.round))
        }
    }

    /// Exactly-once: a task leaves the transaction (closed); if every remaining task
    /// of a requested round is prepared, the round commits now.
    pub(crate) fn leave_txn(&self, task: u64) {
        let Some(txn) = &self.txn else { return };
        let mut st = txn.state.lock();
        st.tasks.remove(&task);
        self.finish_draining(txn, &mut st);
        if st.requested
            && !txn.draining()
            && st.tasks.values().all(|t| t.prepared)
            && let Err(e) = self.commit_round(txn, &mut st)
        {
            log::error!("exactly-once: {e}");
        }
    }

    /// Commits the round's transaction, when every task is prepared (the state is
    /// locked). If it cannot, the transaction is aborted: for a rebalance the round's
    /// tasks start again (`Reset`), otherwise every task fails (the error).
    fn commit_round(&self, txn: &Txn, st: &mut TxnState) -> Result<Prepared> {
        let result = (|| -> std::result::Result<(), RoundError> {
            let offsets = std::mem::take(&mut st.offsets);
            if offsets.is_empty() && !txn.open.load(Acquire) {
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
                    Error::kafka("exactly-once: the consumer has no group metadata")
                })?;
                self.retrying("sending offsets", || {
                    self.producer
                        .send_offsets_to_transaction(&tpl, &group, REQUEST_TIMEOUT)
                })?;
            }
            self.retrying("committing the transaction", || {
                self.producer.commit_transaction(REQUEST_TIMEOUT)
            })?;
            txn.open.store(false, Release);
            Ok(())
        })();
        match result {
            Ok(()) => {
                st.round += 1;
                st.requested = false;
                for t in st.tasks.values_mut() {
                    t.prepared = false;
                    (t.wake)();
                }
                Ok(Prepared::Committed)
            }
            Err(RoundError::Migrated(why)) => {
                self.abort(txn, st, &why, false);
                Ok(Prepared::Reset)
            }
            Err(RoundError::Failed(e)) => {
                self.abort(txn, st, &e.to_string(), true);
                Err(e)
            }
        }
    }

    /// Runs a transactional call, again while it fails for a cluster that does not
    /// answer (librdkafka says the call may be retried), for up to `task_timeout`:
    /// the round, and with it every task, waits meanwhile.
    fn retrying(
        &self,
        what: &str,
        mut call: impl FnMut() -> rdkafka::error::KafkaResult<()>,
    ) -> std::result::Result<(), RoundError> {
        let deadline = std::time::Instant::now() + self.task_timeout;
        loop {
            match call() {
                Ok(()) => return Ok(()),
                Err(e) if super::is_transient(&e) && std::time::Instant::now() < deadline => {
                    log::warn!("exactly-once: {what} did not go through ({e}); trying again");
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) if is_migrated(&e) && super::fatal_reason(&self.producer).is_none() => {
                    return Err(RoundError::Migrated(format!(
                        "{what} was refused, the consumer group has moved on ({e})"
                    )));
                }
                Err(e) => {
                    return Err(RoundError::Failed(super::fatal_or(
                        &self.producer,
                        &format!("exactly-once: {what} failed"),
                        e,
                    )));
                }
            }
        }
    }

    /// Exactly-once, at shutdown: a transaction still open (something was produced
    /// after the last round, which no task will commit now) is aborted, so its input
    /// offsets are not left pending on the cluster until its transaction timeout.
    pub(crate) fn close_txn(&self) {
        let Some(txn) = &self.txn else { return };
        let _st = txn.state.lock();
        if txn.open.swap(false, AcqRel) {
            log::warn!("exactly-once: aborting the transaction left open at shutdown");
            if let Err(e) = self.producer.abort_transaction(REQUEST_TIMEOUT) {
                log::error!("exactly-once: aborting the transaction at shutdown failed: {e}");
            }
        }
    }

    /// Exactly-once: task `task`'s query failed; the transaction is aborted (nothing
    /// since the last commit is visible to read_committed readers): the query's tasks
    /// close, and the other queries' start again from the last commit. Nothing to do
    /// if it was aborted since the task joined.
    pub(crate) fn fail_txn(&self, task: u64, why: &str) {
        let Some(txn) = &self.txn else { return };
        let mut st = txn.state.lock();
        if !st.is_stale(task) {
            self.abort(txn, &mut st, why, false);
        }
    }

    /// Aborts the transaction and starts a new epoch; the tasks of the old one fail
    /// (`fail`: the transaction could not commit) or start again once they have all
    /// closed (a failed query's are not built again: it is stopping).
    fn abort(&self, txn: &Txn, st: &mut TxnState, why: &str, fail: bool) {
        // Before the abort: from now on nothing the old tasks produce is sent.
        txn.draining.store(true, Release);
        if fail {
            log::error!("exactly-once: aborting the transaction: {why}");
        } else {
            log::warn!(
                "exactly-once: aborting the transaction ({why}); the tasks of running queries start again from the last commit"
            );
        }
        if txn.open.swap(false, AcqRel)
            && let Err(e) = self.producer.abort_transaction(REQUEST_TIMEOUT)
        {
            log::error!("exactly-once: aborting the transaction failed: {e}");
        }
        st.epoch += 1;
        st.failed = fail.then(|| format!(
            "exactly-once: the transaction was aborted ({why}); every query of the runtime fails and resumes from the last committed transaction when restarted"
        ));
        st.rebuild = !fail;
        st.offsets.clear();
        st.requested = false;
        // The positions cached at `prepare` were never committed: they are read again
        // from the group, by every task built from now on.
        self.positions.lock().clear();
        for t in st.tasks.values_mut() {
            t.prepared = false;
            (t.wake)();
        }
        self.finish_draining(txn, st);
    }

    /// Ends the draining once every task of an aborted epoch has closed: the tasks of
    /// the owned partitions are built again after a rebalance's abort (the I/O thread
    /// does it, as for an assignment), and tasks that joined meanwhile go on.
    fn finish_draining(&self, txn: &Txn, st: &mut TxnState) {
        if !txn.draining() || st.tasks.values().any(|t| t.epoch < st.epoch) {
            return;
        }
        txn.draining.store(false, Release);
        st.failed = None;
        if std::mem::take(&mut st.rebuild) {
            log::info!("exactly-once: the aborted tasks have closed; starting them again");
            self.assigned_flag.store(true, Release);
        }
        for t in st.tasks.values() {
            (t.wake)();
        }
    }
}

/// A transactional call refused because the consumer group moved on: a rebalance
/// gave this member a new generation or dropped it (Kafka Streams turns these into a
/// `TaskMigratedException`: the tasks close dirty and rejoin).
fn is_migrated(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::IllegalGeneration
                | C::UnknownMemberId
                | C::FencedInstanceId
                | C::RebalanceInProgress
        )
    )
}
