//! The in-process broker as a [`Transport`]: the embedded default.
//!
//! Each query is its own consumer group (`<application>-<query>`) and owns every
//! partition: nothing moves between processes, stores need no changelog (their state
//! directory is the only copy), and offsets are committed into the broker's table.
//! The I/O thread fetches each bound partition straight from its log.

use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Broker, EncodedBatch, FetchBatch, TopicLog};
use crate::error::{Error, Result};
use crate::io::queue::{ByteBudget, PartitionQueue, TryPushError};
use crate::io::settings::OffsetReset;
use crate::io::transport::{
    Binding, ChangelogEntry, Feed, GroupMember, InternalTopic, SinkTopic, TopicPartition,
    Transaction, Transport,
};

/// Most records moved per partition per pass, so one partition cannot hog the thread.
const FETCH_BATCH: usize = 1024;

/// Most bytes per batch when a partition is read to its end.
const READ_TO_END_BYTES: usize = 4 << 20;

/// The in-process broker, seen by the engine.
pub(crate) struct BrokerTransport {
    broker: Broker,
}

impl BrokerTransport {
    pub(crate) fn new(broker: Broker) -> Self {
        BrokerTransport { broker }
    }
}

impl Transport for BrokerTransport {
    fn partitions(&self, topic: &str) -> Result<u32> {
        self.broker.partitions(topic)
    }

    fn changelogs(&self) -> bool {
        false
    }

    fn grouped(&self) -> bool {
        false
    }

    fn ensure_topics(&self, topics: &[InternalTopic]) -> Result<()> {
        for t in topics.iter().filter(|t| !t.changelog) {
            self.broker.create_topic(&t.name, t.partitions)?;
        }
        Ok(())
    }

    fn group_id(&self, application_id: &str, query: &str) -> String {
        format!("{application_id}-{query}")
    }

    fn start_offset(
        &self,
        group: &str,
        _query: &str,
        topic: &str,
        partition: u32,
        reset: OffsetReset,
    ) -> Result<i64> {
        Ok(match self.broker.committed(group, topic, partition) {
            Some(o) => o,
            None => match reset {
                OffsetReset::Earliest => 0,
                OffsetReset::Latest => self.broker.end_offset(topic, partition)?,
            },
        })
    }

    fn feed(&self, topic: &str) -> Result<Box<dyn Feed>> {
        Ok(Box::new(LogFeed(self.broker.topic(topic)?, None)))
    }

    fn global_feed(&self, topic: &str) -> Result<Box<dyn Feed>> {
        // Every query owns every partition here: a global feed is any feed.
        self.feed(topic)
    }

    fn read_to_end(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        apply: &mut dyn FnMut(FetchBatch) -> Result<()>,
    ) -> Result<i64> {
        let log = self.broker.topic(topic)?;
        let end = log.end_offset(partition)?;
        let mut next = from;
        while next < end {
            match log.fetch_batch(partition, next, FETCH_BATCH, READ_TO_END_BYTES)? {
                Some(batch) if !batch.is_empty() => {
                    next += batch.len() as i64;
                    apply(batch)?;
                }
                _ => break,
            }
        }
        Ok(next)
    }

    fn sink(&self, topic: &str) -> Result<Arc<dyn SinkTopic>> {
        Ok(Arc::new(LogSink {
            log: self.broker.topic(topic)?,
            broker: self.broker.clone(),
        }))
    }

    fn commit(&self, group: &str, _query: &str, offsets: &[(&str, u32, i64)]) -> Result<bool> {
        for &(topic, partition, offset) in offsets {
            self.broker.commit(group, topic, partition, offset);
        }
        Ok(true)
    }

    fn flush(&self, _query_id: u64, _query: &str) -> Result<bool> {
        Ok(true)
    }

    fn produce_change(
        &self,
        _query_id: u64,
        _topic: &str,
        _partition: u32,
        _key: &[u8],
        _value: Option<&[u8]>,
    ) -> Result<()> {
        // `changelogs()` is false: no store is wrapped in a changelog here.
        Ok(())
    }

    fn restore(
        &self,
        _topic: &str,
        _partition: u32,
        _from: i64,
        _apply: &mut dyn FnMut(&[ChangelogEntry]) -> Result<()>,
    ) -> Result<(u64, i64)> {
        Ok((0, 0))
    }

    fn acked_end(&self, _topic: &str, _partition: u32) -> Option<i64> {
        None
    }

    fn transaction(&self) -> Option<&dyn Transaction> {
        None
    }

    fn set_member(&self, _member: Weak<dyn GroupMember>) {}

    fn subscribe(&self, _topics: &BTreeSet<String>) -> Result<()> {
        Ok(())
    }

    fn owned(&self) -> Option<HashSet<TopicPartition>> {
        None
    }

    fn bind(&self, _binding: &Binding) -> Result<bool> {
        Ok(true)
    }

    fn poll(&self, _bindings: &mut [Binding], _budget: &ByteBudget) -> usize {
        0
    }

    fn rebalanced(&self, _bindings: &mut Vec<Binding>, _budget: &ByteBudget) -> Vec<Binding> {
        Vec::new()
    }

    fn idle_timeout(&self, _reading: bool) -> Option<Duration> {
        // Appends wake the I/O thread through the broker's listeners.
        None
    }
}

/// A partition of the log, fetched from by the I/O thread.
struct LogFeed(Arc<TopicLog>, Option<Error>);

impl Feed for LogFeed {
    fn topic(&self) -> &str {
        &self.0.name
    }

    fn fill(
        &mut self,
        partition: u32,
        next_offset: &mut i64,
        queue: &PartitionQueue<FetchBatch>,
        budget: &ByteBudget,
    ) -> (usize, bool) {
        if queue.pause_if_full() {
            return (0, true);
        }
        let room = queue.room();
        let batch = match self.0.fetch_batch(
            partition,
            *next_offset,
            room.min(FETCH_BATCH),
            budget.available().max(1),
        ) {
            Ok(Some(batch)) => batch,
            Ok(None) => return (0, true),
            Err(e) => {
                // A segment that cannot be read back (corrupt, truncated): the records
                // stay where they are and the query fails saying so.
                self.1 = Some(e);
                return (0, false);
            }
        };
        let n = batch.len();
        match queue.try_push(batch) {
            Ok(()) => {
                *next_offset += n as i64;
                (n, true)
            }
            // Not fetched after all: the same records are fetched again once there is
            // room.
            Err(TryPushError::Full(_) | TryPushError::OverBudget(_)) => (0, true),
            Err(TryPushError::Closed(_)) => (0, false),
        }
    }

    fn take_error(&mut self) -> Option<Error> {
        self.1.take()
    }

    fn end_offset(&self, partition: u32) -> Option<i64> {
        self.0.end_offset(partition).ok()
    }

    fn unbind(&mut self, _partition: u32, _budget: &ByteBudget) {}

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A sink's topic on the log; appends wake the log's readers.
struct LogSink {
    log: Arc<TopicLog>,
    broker: Broker,
}

impl SinkTopic for LogSink {
    fn name(&self) -> &str {
        &self.log.name
    }

    fn partition_count(&self) -> u32 {
        self.log.partition_count()
    }

    fn write(&self, _query_id: u64, partition: u32, batch: &EncodedBatch) -> Result<()> {
        self.log.append_encoded(partition, batch).map(|_| ())
    }

    fn written(&self) {
        self.broker.notify();
    }
}
