//! Exactly-once: the runtime's one transaction, committed in rounds by every task.

use crate::sync::Mutex;
use std::collections::HashMap;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{Producer, ThreadedProducer};

use super::produce::DeliveryContext;
use super::{KafkaClients, REQUEST_TIMEOUT};
use crate::error::{Error, Result};
use crate::io::transport::{Prepared, TxnOffset};

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
    pub(super) fn ensure_open(&self, producer: &ThreadedProducer<DeliveryContext>) -> Result<()> {
        if self.open.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let _st = self.state.lock();
        self.begin(producer)
    }

    /// Begins a transaction unless one is open; the state lock is held.
    fn begin(&self, producer: &ThreadedProducer<DeliveryContext>) -> Result<()> {
        use std::sync::atomic::Ordering::{Acquire, Release};
        if !self.open.load(Acquire) {
            producer.begin_transaction().map_err(|e| {
                super::fatal_or(producer, "exactly-once: cannot begin a transaction", e)
            })?;
            self.open.store(true, Release);
        }
        Ok(())
    }

    /// A task joins; `wake` makes it run (to prepare, or to go on after a round).
    pub(crate) fn join(&self, task: u64, wake: Box<dyn Fn() + Send + Sync>) {
        self.state.lock().tasks.insert(
            task,
            TxnTask {
                prepared: false,
                wake,
            },
        );
    }

    /// Asks for a commit round: wakes every task that has not prepared.
    pub(crate) fn request(&self) {
        let mut st = self.state.lock();
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
        let st = self.state.lock();
        (st.requested, st.round)
    }

    /// The failure that aborted the transaction, if any.
    pub(crate) fn failed(&self) -> Option<String> {
        self.state.lock().failed.clone()
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
        if let Some(e) = &st.failed {
            return Err(Error::kafka(e.clone()));
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
        let mut st = txn.state.lock();
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

    /// Runs a transactional call, again while it fails for a cluster that does not
    /// answer (librdkafka says the call may be retried), for up to `task_timeout`:
    /// the round, and with it every task, waits meanwhile.
    fn retrying(
        &self,
        what: &str,
        mut call: impl FnMut() -> rdkafka::error::KafkaResult<()>,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + self.task_timeout;
        loop {
            match call() {
                Ok(()) => return Ok(()),
                Err(e) if super::is_transient(&e) && std::time::Instant::now() < deadline => {
                    log::warn!("exactly-once: {what} did not go through ({e}); trying again");
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(super::fatal_or(
                        &self.producer,
                        &format!("exactly-once: {what} failed"),
                        e,
                    ));
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
        if txn.open.swap(false, std::sync::atomic::Ordering::AcqRel) {
            log::warn!("exactly-once: aborting the transaction left open at shutdown");
            if let Err(e) = self.producer.abort_transaction(REQUEST_TIMEOUT) {
                log::error!("exactly-once: aborting the transaction at shutdown failed: {e}");
            }
        }
    }

    /// Exactly-once: a task failed; the transaction is aborted (nothing since the last
    /// commit is visible to read_committed readers) and every task fails.
    pub(crate) fn fail_txn(&self, why: &str) {
        let Some(txn) = &self.txn else { return };
        let mut st = txn.state.lock();
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
}
