//! Kafka as a [`Transport`]: the runtime's clients seen by the engine.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::KafkaClients;
use super::feed::KafkaFeed;
use crate::error::{Error, Result};
use crate::io::broker::{EncodedBatch, FetchBatch};
use crate::io::queue::ByteBudget;
use crate::io::settings::OffsetReset;
use crate::io::transport::{
    Binding, ChangelogEntry, FailedDelivery, Feed, GroupMember, InternalTopic, Prepared, SinkTopic,
    TopicPartition, Transaction, Transport, TxnOffset, TxnStatus, unbind,
};

impl KafkaClients {
    fn arc(&self) -> Result<Arc<KafkaClients>> {
        self.shared()
            .ok_or_else(|| Error::kafka("the runtime's Kafka clients are closing"))
    }
}

/// Whether `b` reads for a global store (outside the group: never revoked).
fn is_global(b: &Binding) -> bool {
    b.feed.is_global()
}

impl Transport for KafkaClients {
    fn partitions(&self, topic: &str) -> Result<u32> {
        KafkaClients::partitions(self, topic)
    }

    fn changelogs(&self) -> bool {
        true
    }

    fn grouped(&self) -> bool {
        true
    }

    fn ensure_topics(&self, topics: &[InternalTopic]) -> Result<()> {
        KafkaClients::ensure_topics(self, topics)
    }

    fn group_id(&self, application_id: &str, _query: &str) -> String {
        // One group for the application; each query's position is in the offsets'
        // metadata.
        application_id.to_string()
    }

    fn start_offset(
        &self,
        _group: &str,
        query: &str,
        topic: &str,
        partition: u32,
        reset: OffsetReset,
    ) -> Result<i64> {
        KafkaClients::start_offset(
            self,
            query,
            topic,
            partition,
            reset == OffsetReset::Earliest,
        )
    }

    fn feed(&self, topic: &str) -> Result<Box<dyn Feed>> {
        Ok(Box::new(KafkaFeed::new(self.arc()?, topic, false)))
    }

    fn global_feed(&self, topic: &str) -> Result<Box<dyn Feed>> {
        Ok(Box::new(KafkaFeed::new(self.arc()?, topic, true)))
    }

    fn read_to_end(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        apply: &mut dyn FnMut(FetchBatch) -> Result<()>,
    ) -> Result<i64> {
        KafkaClients::read_to_end(self, topic, partition, from, apply)
    }

    fn sink(&self, topic: &str) -> Result<Arc<dyn SinkTopic>> {
        Ok(Arc::new(KafkaSink {
            partitions: KafkaClients::partitions(self, topic)?,
            clients: self.arc()?,
            topic: topic.to_string(),
        }))
    }

    fn commit(&self, _group: &str, query: &str, offsets: &[(&str, u32, i64)]) -> Result<bool> {
        KafkaClients::commit(self, query, offsets)
    }

    fn flush(&self, query_id: u64, query: &str) -> Result<bool> {
        KafkaClients::flush(self, query_id, query)
    }

    fn close(&self) {
        KafkaClients::close_txn(self);
    }

    fn take_failed_deliveries(&self, query_id: u64) -> Vec<FailedDelivery> {
        KafkaClients::take_failed_deliveries(self, query_id)
    }

    fn produce_change(
        &self,
        query_id: u64,
        topic: &str,
        partition: u32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()> {
        KafkaClients::produce_change(self, query_id, topic, partition, key, value)
    }

    fn restore(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        apply: &mut dyn FnMut(&[ChangelogEntry]) -> Result<()>,
    ) -> Result<(u64, i64)> {
        KafkaClients::restore(self, topic, partition, from, apply)
    }

    fn acked_end(&self, topic: &str, partition: u32) -> Option<i64> {
        KafkaClients::acked_end(self, topic, partition)
    }

    fn transaction(&self) -> Option<&dyn Transaction> {
        self.txn.is_some().then_some(self as &dyn Transaction)
    }

    fn set_member(&self, member: Weak<dyn GroupMember>) {
        KafkaClients::set_member(self, member);
    }

    fn subscribe(&self, topics: &BTreeSet<String>) -> Result<()> {
        KafkaClients::subscribe(self, topics)
    }

    fn owned(&self) -> Option<HashSet<TopicPartition>> {
        Some(KafkaClients::owned(self))
    }

    fn bind(&self, binding: &Binding) -> Result<bool> {
        if is_global(binding) {
            return self.global_bind(binding.feed.topic(), binding.partition, binding.next_offset);
        }
        KafkaClients::bind(
            self,
            binding.feed.topic(),
            binding.partition,
            binding.next_offset,
        )
    }

    fn poll(&self, bindings: &mut [Binding], budget: &ByteBudget) -> usize {
        self.poll_into(bindings, budget)
    }

    fn rebalanced(&self, bindings: &mut Vec<Binding>, budget: &ByteBudget) -> Vec<Binding> {
        // A rebalance runs inside the poll (which then returns): bindings of revoked
        // partitions go (their tasks committed and closed), and tasks of newly assigned
        // ones start, before the next poll can return their records.
        if self.take_revoked() {
            bindings.retain_mut(|b| {
                let keep = is_global(b) || self.owns(b.feed.topic(), b.partition);
                if !keep {
                    unbind(b, budget);
                }
                keep
            });
        }
        match self.member() {
            Some(member) if self.take_assigned() => member.start_assigned(),
            _ => Vec::new(),
        }
    }

    fn idle_timeout(&self, reading: bool) -> Option<Duration> {
        // The consumer has no channel to wait on: come back to poll it soon, for records
        // and for the group's events (a rebalance is served inside a poll, one event per
        // poll).
        Some(Duration::from_millis(if reading { 2 } else { 5 }))
    }
}

impl Transaction for KafkaClients {
    fn join(&self, task: u64, wake: Box<dyn Fn() + Send + Sync>) -> u64 {
        self.txn.as_ref().map_or(0, |t| t.join(task, wake))
    }

    fn request(&self) {
        if let Some(t) = &self.txn {
            t.request();
        }
    }

    fn status(&self) -> TxnStatus {
        self.txn
            .as_ref()
            .map_or_else(TxnStatus::default, |t| t.status())
    }

    fn failed(&self) -> Option<String> {
        self.txn.as_ref().and_then(|t| t.failed())
    }

    fn prepare(&self, task: u64, offsets: Vec<TxnOffset>) -> Result<Prepared> {
        KafkaClients::prepare(self, task, offsets)
    }

    fn leave(&self, task: u64) {
        self.leave_txn(task);
    }

    fn fail(&self, task: u64, why: &str) {
        self.fail_txn(task, why);
    }
}

/// A sink's topic on Kafka: records go through the shared producer.
struct KafkaSink {
    clients: Arc<KafkaClients>,
    topic: String,
    partitions: u32,
}

impl SinkTopic for KafkaSink {
    fn name(&self) -> &str {
        &self.topic
    }

    fn partition_count(&self) -> u32 {
        self.partitions
    }

    fn write(&self, query_id: u64, partition: u32, batch: &EncodedBatch) -> Result<()> {
        for view in batch.views() {
            self.clients
                .produce(query_id, &self.topic, partition, &view)?;
        }
        Ok(())
    }
}
