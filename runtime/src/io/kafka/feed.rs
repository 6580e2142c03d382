//! Feeding partition queues from the shared consumer.
//!
//! Each message polled goes to every binding of its partition that has not seen its
//! offset, into small batches that wait beside the queue until it takes them. Waiting
//! records are charged to the same byte budget as queued ones, and nothing is polled
//! while the budget is spent. Pausing a partition in librdkafka drops what it
//! prefetched for it (resuming fetches it again), so it is paused only when its waiting
//! records reach four times the queue's record cap or the budget is spent, and resumed
//! once fewer than one queue's worth wait and the budget has room.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaRespErr;

use super::{KafkaClients, kafka_partition};
use crate::io::broker::FetchBatch;
use crate::io::queue::{ByteBudget, PartitionQueue, TryPushError};
use crate::io::transport::{Binding, Feed};

/// Most messages polled per pass, so the rest of the I/O thread's work goes on.
const POLL_BATCH: usize = 4096;

/// Records per batch polled from Kafka (a batch waits whole for room in its queue).
const KAFKA_BATCH: usize = 64;

/// Records polled for one binding's partition, not yet queued.
pub(super) struct KafkaFeed {
    pub(super) clients: Arc<KafkaClients>,
    pub(super) topic: Arc<str>,
    waiting: VecDeque<FetchBatch>,
    /// Whether this binding wants its partition paused (see `fill`).
    pausing: bool,
    /// Read by the global consumer (a global store's), not the group's.
    pub(super) global: bool,
}

impl KafkaFeed {
    pub(super) fn new(clients: Arc<KafkaClients>, topic: &str, global: bool) -> Self {
        KafkaFeed {
            clients,
            topic: Arc::from(topic),
            waiting: VecDeque::new(),
            pausing: false,
            global,
        }
    }
}

impl Feed for KafkaFeed {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn fill(
        &mut self,
        partition: u32,
        next_offset: &mut i64,
        queue: &PartitionQueue<FetchBatch>,
        budget: &ByteBudget,
    ) -> (usize, bool) {
        let cap = queue.cap();
        let mut moved = 0;
        while let Some(batch) = self.waiting.pop_front() {
            let last = batch.last_offset();
            let (n, bytes) = (batch.len(), batch.remaining_bytes());
            // Its bytes move from waiting to queued: the queue charges them again.
            budget.release(bytes);
            match queue.try_push(batch) {
                Ok(()) => {
                    moved += n;
                    if let Some(o) = last {
                        *next_offset = o + 1;
                    }
                }
                Err(TryPushError::Full(batch) | TryPushError::OverBudget(batch)) => {
                    budget.charge(bytes);
                    self.waiting.push_front(batch);
                    break;
                }
                Err(TryPushError::Closed(batch)) => {
                    self.waiting.push_front(batch);
                    budget.charge(bytes);
                    return (moved, false);
                }
            }
        }
        let held: usize = self.waiting.iter().map(FetchBatch::len).sum();
        let want = if held >= 4 * cap || budget.used() >= budget.cap() {
            true
        } else if held < cap {
            false
        } else {
            self.pausing
        };
        if want != self.pausing {
            self.pausing = want;
            if self.global {
                self.clients
                    .global_want_paused(&self.topic, partition, want);
            } else {
                self.clients.want_paused(&self.topic, partition, want);
            }
        }
        queue.pause_if_full();
        (moved, true)
    }

    fn end_offset(&self, partition: u32) -> Option<i64> {
        self.clients.cached_end(&self.topic, partition, self.global)
    }

    fn unbind(&mut self, partition: u32, budget: &ByteBudget) {
        budget.release(self.waiting.iter().map(FetchBatch::remaining_bytes).sum());
        self.waiting.clear();
        if self.global {
            self.pausing = false;
            self.clients.global_unbind(&self.topic, partition);
            return;
        }
        if self.pausing {
            self.pausing = false;
            self.clients.want_paused(&self.topic, partition, false);
        }
        self.clients.unbind(&self.topic, partition);
    }

    fn is_global(&self) -> bool {
        self.global
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Topic → partition → indices of the bindings reading it.
type ReadersIndex = HashMap<Arc<str>, HashMap<i32, Vec<usize>>>;

impl KafkaClients {
    /// Moves what the consumer (and the global consumer, if there is one) has into the
    /// waiting batches of the bindings it is for, charging them to `budget`; stops
    /// while the budget is spent.
    pub(super) fn poll_into(&self, bindings: &mut [Binding], budget: &ByteBudget) -> usize {
        let mut polled = poll_consumer(&self.consumer, false, bindings, budget);
        if let Some(global) = self.global.get() {
            polled += poll_consumer(global, true, bindings, budget);
        }
        polled
    }
}

/// Moves what `consumer` has into the waiting batches of the bindings it is for (the
/// global bindings if `global`, else the others), charging them to `budget`.
fn poll_consumer<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    global: bool,
    bindings: &mut [Binding],
    budget: &ByteBudget,
) -> usize {
    {
        // The bindings of each partition, found once per pass (with a message) rather
        // than per message.
        let mut by_partition: Option<ReadersIndex> = None;
        let mut polled = 0;
        while polled < POLL_BATCH && budget.used() < budget.cap() {
            let m = match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    log::warn!("kafka consumer: {e}");
                    break;
                }
            };
            polled += 1;
            let headers = super::headers_of(&m);
            let ts = m.timestamp().to_millis().unwrap_or(0);
            let index = by_partition.get_or_insert_with(|| {
                let mut index = ReadersIndex::new();
                for (i, b) in bindings.iter_mut().enumerate() {
                    if let Some(f) = b.feed.as_any_mut().downcast_mut::<KafkaFeed>()
                        && f.global == global
                    {
                        let p = index.entry(f.topic.clone()).or_default();
                        p.entry(kafka_partition(b.partition)).or_default().push(i);
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
                let cap = b.queue.cap();
                let next_offset = b.next_offset;
                let Some(f) = b.feed.as_any_mut().downcast_mut::<KafkaFeed>() else {
                    continue;
                };
                let next = f
                    .waiting
                    .back()
                    .and_then(FetchBatch::last_offset)
                    .map_or(next_offset, |o| o + 1);
                if m.offset() < next {
                    continue;
                }
                // A batch goes into the queue whole: never more than the queue's cap.
                let most = KAFKA_BATCH.min(cap);
                if f.waiting.back().is_none_or(|w| w.len() >= most) {
                    f.waiting.push_back(FetchBatch::for_kafka());
                }
                let batch = f.waiting.back_mut().expect("just ensured");
                let size = batch.push_message(m.offset(), ts, m.key(), m.payload(), &headers);
                budget.charge(size);
            }
        }
        polled
    }
}

impl KafkaClients {
    /// The end offset of `topic`/`partition` as of the consumer's last fetch of it (no
    /// request; `None` before the first fetch).
    pub(super) fn cached_end(&self, topic: &str, partition: u32, global: bool) -> Option<i64> {
        let client = if global {
            self.global.get()?.client().native_ptr()
        } else {
            self.consumer.client().native_ptr()
        };
        let topic = std::ffi::CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the consumer's handle lives as long as `self`; the topic is a valid C
        // string and the out-pointers point to live locals.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                client,
                topic.as_ptr(),
                kafka_partition(partition),
                &mut low,
                &mut high,
            )
        };
        (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }
}
