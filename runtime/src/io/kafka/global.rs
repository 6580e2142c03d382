//! Global stores on Kafka: every partition of a global table's topic, read in every
//! process, outside the consumer group.
//!
//! Kafka Streams gives each instance a global consumer and a global thread. weir makes
//! one global consumer per runtime, the first time a query has a global store, and
//! assigns it each global partition a binding reads (never subscribing, so the group
//! does not see them). The I/O thread polls it beside the group's consumer
//! (`feed.rs`), into the same bounded queues; the global tasks run on the pool. A
//! store catches up before its query's other tasks start by reading its partitions to
//! their end through the restore consumer ([`KafkaClients::read_to_end`]).

use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::admin::READ_BATCH;
use super::{KafkaClients, REQUEST_TIMEOUT, headers_of, kafka_error, kafka_partition};
use crate::error::Result;
use crate::io::broker::FetchBatch;
use crate::io::transport::TopicPartition;

/// The global consumer's partitions: bindings and pausers of each.
#[derive(Default)]
pub(super) struct GlobalBound(HashMap<TopicPartition, (usize, usize)>);

impl KafkaClients {
    /// The global consumer, made on first use.
    fn global_consumer(&self) -> Result<&BaseConsumer> {
        if let Some(c) = self.global.get() {
            return Ok(c);
        }
        let isolation = if self.txn.is_some() {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        let consumer: BaseConsumer = self
            .config
            .client(&[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
                // An offset below the log's start (retention, compaction) reads from
                // its start.
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "50"),
                ("queued.max.messages.kbytes", "8192"),
                ("fetch.max.bytes", "8388608"),
                ("isolation.level", isolation),
            ])
            // Assigned, never subscribed: the group id only names the client.
            .set("group.id", format!("{}-global", self.application_id))
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka global consumer", e))?;
        Ok(self.global.get_or_init(|| consumer))
    }

    /// A global binding starts reading `topic`/`partition` at `offset`: assigned to the
    /// global consumer, or sought back if another binding reads it further on.
    pub(super) fn global_bind(&self, topic: &str, partition: u32, offset: i64) -> Result<bool> {
        let consumer = self.global_consumer()?;
        let key = TopicPartition::new(topic, partition);
        let mut bound = self.global_bound.lock();
        let entry = bound.0.entry(key).or_insert((0, 0));
        entry.0 += 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, kafka_partition(partition), Offset::Offset(offset))
            .map_err(|e| kafka_error("bad partition", e))?;
        if entry.0 == 1 {
            consumer
                .incremental_assign(&tpl)
                .map_err(|e| kafka_error(&format!("cannot read global topic '{topic}'"), e))?;
            return Ok(true);
        }
        let position = consumer.position().ok().and_then(|p| {
            match p
                .find_partition(topic, kafka_partition(partition))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(at)) => Some(at),
                _ => None,
            }
        });
        if position.is_none_or(|at| at > offset) {
            // Bindings further on skip what they already have.
            consumer
                .seek_partitions(tpl, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(&format!("cannot seek global topic '{topic}'"), e))?;
        }
        Ok(true)
    }

    /// A global binding goes away; its partition is unassigned with the last one.
    pub(super) fn global_unbind(&self, topic: &str, partition: u32) {
        let Some(consumer) = self.global.get() else {
            return;
        };
        let key = TopicPartition::new(topic, partition);
        let mut bound = self.global_bound.lock();
        let Some(entry) = bound.0.get_mut(&key) else {
            return;
        };
        entry.0 -= 1;
        if entry.0 > 0 {
            return;
        }
        bound.0.remove(&key);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, kafka_partition(partition));
        if let Err(e) = consumer.incremental_unassign(&tpl) {
            log::warn!("cannot stop reading global topic '{topic}' partition {partition}: {e}");
        }
    }

    /// One global binding starts (`true`) or stops wanting its partition paused.
    pub(super) fn global_want_paused(&self, topic: &str, partition: u32, pause: bool) {
        let Some(consumer) = self.global.get() else {
            return;
        };
        let key = TopicPartition::new(topic, partition);
        let mut bound = self.global_bound.lock();
        let Some(entry) = bound.0.get_mut(&key) else {
            return;
        };
        let before = entry.1;
        entry.1 = if pause {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if (before == 0) == (entry.1 == 0) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, kafka_partition(partition));
        let r = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = r {
            log::warn!("cannot pause or resume global topic '{topic}' partition {partition}: {e}");
        }
    }

    /// Reads `topic`/`partition` from `from` to its end through the restore consumer
    /// (to the last committed record under read_committed), handing `apply` batches of
    /// records. Returns the offset to read next.
    pub(crate) fn read_to_end(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        apply: &mut dyn FnMut(FetchBatch) -> Result<()>,
    ) -> Result<i64> {
        use rdkafka::Message;
        let mut batch = FetchBatch::for_kafka();
        let (next, _) = self.read_partition(topic, partition, from, &mut |m| {
            let ts = m.timestamp().to_millis().unwrap_or(0);
            batch.push_message(m.offset(), ts, m.key(), m.payload(), &headers_of(m));
            if batch.len() >= READ_BATCH {
                apply(std::mem::replace(&mut batch, FetchBatch::for_kafka()))?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            apply(batch)?;
        }
        Ok(next)
    }
}
