//! A task's input partitions: the records it has claimed from each partition queue,
//! and the offsets it has consumed and committed.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::io::broker::FetchBatch;
use crate::io::queue::PartitionQueue;
use crate::processor::internals::NodeId;

/// One input partition of a task.
pub(crate) struct Input {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) source: NodeId,
    pub(crate) queue: Arc<PartitionQueue<FetchBatch>>,
    /// Claimed batches; the front one may be partly processed.
    pub(super) local: VecDeque<FetchBatch>,
    /// Next offset to commit, once something was processed.
    pub(super) consumed: Option<i64>,
    pub(super) committed: Option<i64>,
    pub(super) release_records: usize,
    pub(super) release_bytes: usize,
    /// Task idling: since when the task has found this partition empty while others
    /// had records (cleared when records come).
    pub(super) empty_since: Option<std::time::Instant>,
}

impl Input {
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        source: NodeId,
        queue: Arc<PartitionQueue<FetchBatch>>,
    ) -> Self {
        Input {
            topic,
            partition,
            source,
            queue,
            local: VecDeque::new(),
            consumed: None,
            committed: None,
            release_records: 0,
            release_bytes: 0,
            empty_since: None,
        }
    }

    pub(super) fn head_timestamp(&mut self) -> Option<i64> {
        while self.local.front().is_some_and(FetchBatch::is_empty) {
            self.local.pop_front();
        }
        if self.local.is_empty() {
            self.queue.claim(usize::MAX, &mut self.local);
        }
        self.local.front().and_then(FetchBatch::head_timestamp)
    }

    /// Records claimed from the queue and not yet processed.
    pub(super) fn local_records(&self) -> usize {
        self.local.iter().map(FetchBatch::len).sum()
    }

    /// Gives back the charges of processed records; true if the fetcher should wake.
    pub(super) fn release(&mut self) -> bool {
        let wake = self.queue.release(self.release_records, self.release_bytes);
        self.release_records = 0;
        self.release_bytes = 0;
        wake
    }
}
