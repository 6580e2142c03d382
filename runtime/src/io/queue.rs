//! Bounded partition queues: a record cap per partition AND one byte cap over all of
//! them.
//!
//! Kafka Streams bounds its partition buffers only in records, per partition
//! (`buffered.records.per.partition`), so the bytes held grow with partitions × record
//! size. weir charges every queued record to a runtime-wide [`ByteBudget`] as well.
//!
//! A record stays charged until the task has *processed* it ([`PartitionQueue::release`]),
//! not merely taken it off the queue ([`PartitionQueue::claim`]): a task works through
//! a local batch, and without this rule the fetcher would refill the queue behind it
//! and the bound would silently double.
//!
//! Each queue has a single producer (the fetcher) and a single consumer (its task), so
//! the cap checks in [`PartitionQueue::try_push`] cannot race with another push. When a
//! push fails the queue is marked *paused*; the consumer's release clears the mark and
//! reports that the fetcher should be woken. Both sides use sequentially consistent
//! atomics, so either the fetcher sees the room or the consumer sees the mark.
//!
//! One exception to the byte cap, as in Kafka's `fetch.max.bytes`: a single record
//! larger than the whole budget is admitted when nothing else is queued, so that it can
//! make progress. The bound is therefore `max(cap, largest record)`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

pub(crate) use crate::memory::ByteBudget;
use crate::sync::Mutex;

/// Something that can be queued: it knows how many records it holds and how many bytes
/// it is charged.
pub trait QueueItem {
    /// Bytes charged to the budget while this item is queued or being processed.
    fn size_bytes(&self) -> usize;
    /// Records in this item, charged against the per-partition record cap.
    fn records(&self) -> usize {
        1
    }
}

/// Why a push was refused; the item is handed back, as crossbeam's `TrySendError` does.
#[derive(Debug, PartialEq, Eq)]
pub enum TryPushError<T> {
    /// The partition already holds its record cap.
    Full(T),
    /// The runtime-wide byte budget is spent.
    OverBudget(T),
    /// The queue was closed (its task is gone).
    Closed(T),
}

impl<T> TryPushError<T> {
    /// The item that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            TryPushError::Full(t) | TryPushError::OverBudget(t) | TryPushError::Closed(t) => t,
        }
    }
}

/// One partition's queue between the fetcher and its task.
#[derive(Debug)]
pub struct PartitionQueue<T> {
    items: Mutex<VecDeque<T>>,
    /// Records charged: queued plus claimed-but-not-released.
    records: AtomicUsize,
    /// Bytes charged by this queue (its share of the budget).
    bytes: AtomicUsize,
    cap: usize,
    budget: Arc<ByteBudget>,
    paused: AtomicBool,
    closed: AtomicBool,
    /// The fetcher's last look: the partition holds records past what it has queued.
    more_upstream: AtomicBool,
    /// The last push was refused by the byte budget (cleared by the next push).
    budget_refused: AtomicBool,
}

impl<T: QueueItem> PartitionQueue<T> {
    /// A queue holding at most `cap` records, charging its bytes to `budget`.
    pub fn new(cap: usize, budget: Arc<ByteBudget>) -> Self {
        PartitionQueue {
            items: Mutex::new(VecDeque::new()),
            records: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            cap: cap.max(1),
            budget,
            paused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            more_upstream: AtomicBool::new(false),
            budget_refused: AtomicBool::new(false),
        }
    }

    /// Records charged to this queue (queued and claimed-but-unprocessed).
    pub fn len(&self) -> usize {
        self.records.load(SeqCst)
    }

    /// True if nothing is charged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged to this queue.
    pub fn bytes(&self) -> usize {
        self.bytes.load(SeqCst)
    }

    /// The record cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Room left under the record cap.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.len())
    }

    /// True while the fetcher has stopped fetching this partition because a push failed.
    pub fn is_paused(&self) -> bool {
        self.paused.load(SeqCst)
    }

    /// The fetcher records whether the partition holds records it has not queued yet
    /// (its end offset is past the next offset to fetch).
    pub fn set_more_upstream(&self, more: bool) {
        self.more_upstream.store(more, SeqCst);
    }

    /// True if the partition is known to hold records that are on their way to this
    /// queue: the fetcher saw them upstream and its last push was not refused by the
    /// byte budget. A task with several inputs waits for such a partition (Kafka
    /// Streams waits for a partition with fetched lag); one starved by the budget is
    /// not waited for, because only processing what is queued elsewhere frees it.
    pub fn records_on_the_way(&self) -> bool {
        self.more_upstream.load(SeqCst) && !self.budget_refused.load(SeqCst)
    }

    /// If the queue is at its record cap, marks it paused and returns true. The mark is
    /// set before the re-check, so a concurrent release either sees it (and reports a
    /// wake-up) or has already left room that the re-check sees.
    pub fn pause_if_full(&self) -> bool {
        if self.len() < self.cap {
            return false;
        }
        self.paused.store(true, SeqCst);
        if self.len() < self.cap {
            self.paused.store(false, SeqCst);
            return false;
        }
        true
    }

    /// Queues `item` if its records fit under the record cap and its bytes fit the
    /// budget. Must be called by one producer at a time.
    pub fn try_push(&self, item: T) -> Result<(), TryPushError<T>> {
        if self.closed.load(SeqCst) {
            return Err(TryPushError::Closed(item));
        }
        let n = item.records();
        if self.pause_if_full() || self.len() + n > self.cap {
            self.paused.store(true, SeqCst);
            return Err(TryPushError::Full(item));
        }
        let size = item.size_bytes();
        if !self.budget.try_reserve(size) {
            // Only a partition that holds data counts as paused: an empty one is merely
            // waiting for budget, which queues that do hold data will free.
            if !self.is_empty() {
                self.paused.store(true, SeqCst);
            }
            self.budget_refused.store(true, SeqCst);
            return Err(TryPushError::OverBudget(item));
        }
        self.budget_refused.store(false, SeqCst);
        self.records.fetch_add(n, SeqCst);
        self.bytes.fetch_add(size, SeqCst);
        self.paused.store(false, SeqCst);
        self.items.lock().push_back(item);
        Ok(())
    }

    /// Moves up to `max` items to `out`. They stay charged until [`Self::release`].
    pub fn claim(&self, max: usize, out: &mut VecDeque<T>) -> usize {
        let mut items = self.items.lock();
        let n = max.min(items.len());
        out.extend(items.drain(..n));
        n
    }

    /// Uncharges `records` processed items totalling `bytes`. Returns true if the
    /// fetcher should be woken (this partition was paused, or the budget refused
    /// someone).
    pub fn release(&self, records: usize, bytes: usize) -> bool {
        if records == 0 && bytes == 0 {
            return false;
        }
        self.records.fetch_sub(records, SeqCst);
        self.bytes.fetch_sub(bytes, SeqCst);
        let budget_waiter = self.budget.release(bytes);
        let was_paused = self.records.load(SeqCst) < self.cap && self.paused.swap(false, SeqCst);
        budget_waiter || was_paused
    }

    /// Closes the queue: later pushes fail, and everything still queued is dropped and
    /// uncharged. Claimed items stay charged until their holder releases them.
    pub fn close(&self) -> bool {
        self.closed.store(true, SeqCst);
        let drained: Vec<T> = self.items.lock().drain(..).collect();
        let records = drained.iter().map(QueueItem::records).sum();
        let bytes = drained.iter().map(QueueItem::size_bytes).sum();
        self.release(records, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `n` records of `size` bytes in all (a fetch batch, in the runtime).
    #[derive(Debug, Clone, PartialEq)]
    struct Item {
        partition: usize,
        seq: usize,
        size: usize,
        n: usize,
    }

    impl QueueItem for Item {
        fn size_bytes(&self) -> usize {
            self.size
        }
        fn records(&self) -> usize {
            self.n
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push {
            partition: usize,
            size: usize,
            n: usize,
        },
        Claim {
            partition: usize,
            max: usize,
        },
        Release {
            partition: usize,
            n: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..4usize, 1..200usize, 1..4usize)
                .prop_map(|(partition, size, n)| Op::Push { partition, size, n }),
            1 => (0..4usize, 1..8usize).prop_map(|(partition, max)| Op::Claim { partition, max }),
            1 => (0..4usize, 1..8usize).prop_map(|(partition, n)| Op::Release { partition, n }),
        ]
    }

    proptest! {
        /// Never more than the caps, never a lost or duplicated item, per-partition order
        /// kept: pushes that are refused hand the item back and are retried later, as
        /// the fetcher does.
        #[test]
        fn caps_hold_and_nothing_is_lost(
            ops in proptest::collection::vec(op(), 1..400),
            cap in 1..6usize,
            byte_cap in 200..1000usize,
        ) {
            let budget = Arc::new(ByteBudget::new(byte_cap));
            let queues: Vec<_> = (0..4).map(|_| PartitionQueue::new(cap, budget.clone())).collect();
            // Per partition: items not yet accepted (the fetcher's position), claimed
            // but unprocessed items, and everything processed in order.
            let mut pending: Vec<VecDeque<Item>> = vec![VecDeque::new(); 4];
            let mut claimed: Vec<VecDeque<Item>> = vec![VecDeque::new(); 4];
            let mut done: Vec<Vec<Item>> = vec![Vec::new(); 4];
            let mut next_seq = [0usize; 4];

            for op in ops {
                match op {
                    Op::Push { partition, size, n } => {
                        let n = n.min(cap);
                        pending[partition].push_back(Item { partition, seq: next_seq[partition], size, n });
                        next_seq[partition] += 1;
                        let item = pending[partition].pop_front().unwrap();
                        match queues[partition].try_push(item) {
                            Ok(()) => {}
                            Err(e) => {
                                if matches!(e, TryPushError::Full(_)) {
                                    prop_assert!(queues[partition].is_paused());
                                }
                                pending[partition].push_front(e.into_inner());
                            }
                        }
                    }
                    Op::Claim { partition, max } => {
                        queues[partition].claim(max, &mut claimed[partition]);
                    }
                    Op::Release { partition, n } => {
                        let n = n.min(claimed[partition].len());
                        let items: Vec<Item> = claimed[partition].drain(..n).collect();
                        let bytes = items.iter().map(|i| i.size).sum();
                        queues[partition].release(items.iter().map(|i| i.n).sum(), bytes);
                        done[partition].extend(items);
                    }
                }
                for q in &queues {
                    prop_assert!(q.len() <= cap);
                }
                let charged: usize = queues.iter().map(|q| q.bytes()).sum();
                prop_assert_eq!(charged, budget.used());
                prop_assert!(budget.used() <= byte_cap);
            }
            // Drain everything: like the fetcher, each pass retries every partition's
            // pending items after every task has processed what it holds.
            while pending.iter().any(|p| !p.is_empty()) || queues.iter().any(|q| !q.is_empty()) {
                for p in 0..4 {
                    queues[p].claim(usize::MAX, &mut claimed[p]);
                    let items: Vec<Item> = claimed[p].drain(..).collect();
                    let bytes = items.iter().map(|i| i.size).sum();
                    queues[p].release(items.iter().map(|i| i.n).sum(), bytes);
                    done[p].extend(items);
                }
                for p in 0..4 {
                    while let Some(item) = pending[p].pop_front() {
                        if let Err(e) = queues[p].try_push(item) {
                            pending[p].push_front(e.into_inner());
                            break;
                        }
                    }
                }
            }
            for p in 0..4 {
                let seqs: Vec<usize> = done[p].iter().map(|i| i.seq).collect();
                prop_assert_eq!(seqs, (0..next_seq[p]).collect::<Vec<_>>());
            }
            prop_assert_eq!(budget.used(), 0);
        }
    }

    #[test]
    fn oversized_record_admitted_only_when_budget_is_empty() {
        let budget = Arc::new(ByteBudget::new(100));
        let q = PartitionQueue::new(10, budget.clone());
        let small = Item {
            partition: 0,
            seq: 0,
            size: 10,
            n: 1,
        };
        let big = Item {
            partition: 0,
            seq: 1,
            size: 500,
            n: 1,
        };
        q.try_push(small.clone()).unwrap();
        assert!(matches!(
            q.try_push(big.clone()),
            Err(TryPushError::OverBudget(_))
        ));
        assert!(q.is_paused(), "a partition holding data is paused");
        let mut out = VecDeque::new();
        q.claim(10, &mut out);
        assert!(q.release(1, 10), "release wakes the fetcher");
        assert!(!q.is_paused());
        q.try_push(big).unwrap();
        assert_eq!(budget.used(), 500);
    }

    #[test]
    fn records_on_the_way_unless_the_budget_refused_them() {
        let budget = Arc::new(ByteBudget::new(100));
        let (a, b) = (
            PartitionQueue::new(10, budget.clone()),
            PartitionQueue::new(10, budget.clone()),
        );
        let item = |size| Item {
            partition: 0,
            seq: 0,
            size,
            n: 1,
        };
        assert!(!a.records_on_the_way(), "nothing known upstream");
        a.set_more_upstream(true);
        assert!(a.records_on_the_way());
        // The budget is spent elsewhere: `a`'s records cannot come until `b`'s are
        // processed, so nobody may wait for them.
        b.try_push(item(90)).unwrap();
        assert!(matches!(
            a.try_push(item(20)),
            Err(TryPushError::OverBudget(_))
        ));
        assert!(!a.records_on_the_way());
        let mut out = VecDeque::new();
        b.claim(1, &mut out);
        b.release(1, 90);
        a.try_push(item(20)).unwrap();
        assert!(a.records_on_the_way(), "a push clears the refusal");
        a.set_more_upstream(false);
        assert!(!a.records_on_the_way());
    }

    #[test]
    fn empty_partition_waiting_for_budget_is_not_paused() {
        let budget = Arc::new(ByteBudget::new(100));
        let a = PartitionQueue::new(10, budget.clone());
        let b = PartitionQueue::new(10, budget.clone());
        a.try_push(Item {
            partition: 0,
            seq: 0,
            size: 90,
            n: 1,
        })
        .unwrap();
        assert!(matches!(
            b.try_push(Item {
                partition: 1,
                seq: 0,
                size: 20,
                n: 1,
            }),
            Err(TryPushError::OverBudget(_))
        ));
        assert!(!b.is_paused());
        let mut out = VecDeque::new();
        a.claim(1, &mut out);
        assert!(
            a.release(1, 90),
            "the refused reservation asks for a wake-up"
        );
    }

    #[test]
    fn close_uncharges_queued_items_and_refuses_pushes() {
        let budget = Arc::new(ByteBudget::new(100));
        let q = PartitionQueue::new(10, budget.clone());
        q.try_push(Item {
            partition: 0,
            seq: 0,
            size: 30,
            n: 1,
        })
        .unwrap();
        q.try_push(Item {
            partition: 0,
            seq: 1,
            size: 30,
            n: 1,
        })
        .unwrap();
        q.close();
        assert_eq!(budget.used(), 0);
        assert_eq!(q.len(), 0);
        assert!(matches!(
            q.try_push(Item {
                partition: 0,
                seq: 2,
                size: 1,
                n: 1,
            }),
            Err(TryPushError::Closed(_))
        ));
    }
}
