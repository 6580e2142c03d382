//! The runtime's one producer: sink records and changelog entries, deliveries
//! acknowledged or failed per query.

use crate::sync::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaClients, kafka_error, kafka_partition};
use crate::error::{Error, Result};
use crate::io::transport::{FailedDelivery, TopicPartition};

/// Keeps each query's first failed delivery: the query's next commit reports it
/// instead of committing offsets past a record that was not written. (Each record
/// carries its query's id; one query's failure is not another's.)
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Per query id: the first failure not yet reported, and how many records failed.
    failed: Mutex<HashMap<usize, (String, u64)>>,
    /// With a log-and-continue production handler: the records Kafka refused, per
    /// query id, for its dead-letter topic (at most `MAX_LETTERS` per query between
    /// two commits; the rest are only counted).
    keep_letters: bool,
    letters: Mutex<HashMap<usize, Vec<FailedDelivery>>>,
    /// The highest acknowledged offset per partition (changelog checkpoints).
    acked: Mutex<HashMap<TopicPartition, i64>>,
    /// The producer is transactional (exactly-once).
    transactional: bool,
}

/// Refused records kept per query between two commits for its dead-letter topic.
const MAX_LETTERS: usize = 1_000;

/// The producer's context: records failed deliveries in [`Deliveries`].
pub(crate) struct DeliveryContext(pub(super) Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, query: usize) {
        use rdkafka::Message;
        if let Ok(m) = result {
            let mut acked = self.0.acked.lock();
            let at = acked
                .entry(TopicPartition::new(
                    m.topic(),
                    u32::try_from(m.partition()).unwrap_or(0),
                ))
                .or_insert(m.offset());
            *at = (*at).max(m.offset());
        }
        if let Err((e, m)) = result {
            if self.0.transactional
                && matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                )
            {
                // Part of an aborted transaction: never visible, and its records are
                // produced again by the tasks that process their input again.
                return;
            }
            let mut failed = self.0.failed.lock();
            let entry = failed.entry(query).or_insert_with(|| {
                let first = format!(
                    "producing to '{}' partition {} failed: {e}",
                    m.topic(),
                    m.partition()
                );
                (first, 0)
            });
            entry.1 += 1;
            if self.0.keep_letters {
                let mut letters = self.0.letters.lock();
                let kept = letters.entry(query).or_default();
                if kept.len() < MAX_LETTERS {
                    kept.push(FailedDelivery {
                        topic: m.topic().to_string(),
                        partition: u32::try_from(m.partition()).unwrap_or(0),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        timestamp: m.timestamp().to_millis().unwrap_or(0),
                        error: e.to_string(),
                    });
                }
            }
        }
    }
}

impl Deliveries {
    /// Deliveries that keep the records Kafka refuses for dead-letter topics, or not,
    /// of a transactional producer or not.
    pub(super) fn new(keep_letters: bool, transactional: bool) -> Self {
        Deliveries {
            keep_letters,
            transactional,
            ..Deliveries::default()
        }
    }
}

impl KafkaClients {
    /// Produces one record, waiting while the producer's queue is full.
    pub(crate) fn produce(
        &self,
        query: u64,
        topic: &str,
        partition: u32,
        view: &crate::io::broker::RecordView<'_>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, query as usize)
                .partition(kafka_partition(partition))
                .timestamp(view.timestamp);
        let headers = view.headers();
        if !headers.is_empty() {
            // librdkafka allocates a header list per record: only when there are any.
            let mut kh = OwnedHeaders::new();
            for h in headers.iter() {
                kh = kh.insert(Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                });
            }
            record = record.headers(kh);
        }
        if let Some(k) = view.key {
            record = record.key(k);
        }
        if let Some(v) = view.value {
            record = record.payload(v);
        }
        self.send(record, "cannot produce to")
    }

    /// Sends `record`, waiting while the producer's queue is full (the error says
    /// `what` and the topic).
    ///
    /// Exactly-once: while the transaction drains after an abort, the record is
    /// dropped (see `txn.rs`): it belongs to a task of the aborted epoch, which closes
    /// without committing and whose input is processed again.
    fn send(&self, mut record: BaseRecord<'_, [u8], [u8], usize>, what: &str) -> Result<()> {
        if let Some(t) = &self.txn
            && !t.ensure_open(&self.producer)?
        {
            return Ok(());
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
                // Refused because the transaction was aborted meanwhile.
                Err(_) if self.txn.as_ref().is_some_and(|t| t.draining()) => return Ok(()),
                Err((e, r)) => {
                    return Err(super::fatal_or(
                        &self.producer,
                        &format!("{what} '{}'", r.topic),
                        e,
                    ));
                }
            }
        }
    }

    /// Produces one changelog entry (`None` = a tombstone) to `topic`/`partition`.
    pub(crate) fn produce_change(
        &self,
        query: u64,
        topic: &str,
        partition: u32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, query as usize)
                .partition(kafka_partition(partition))
                .key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.send(record, "cannot write changelog")
    }

    /// The records of `query` Kafka refused since the last call (log-and-continue
    /// production handler), for its dead-letter topic.
    pub(crate) fn take_failed_deliveries(&self, query: u64) -> Vec<FailedDelivery> {
        self.deliveries
            .letters
            .lock()
            .remove(&(query as usize))
            .unwrap_or_default()
    }

    /// The offset after the last acknowledged record of `topic`/`partition`.
    pub(crate) fn acked_end(&self, topic: &str, partition: u32) -> Option<i64> {
        let acked = self.deliveries.acked.lock();
        acked
            .get(&TopicPartition::new(topic, partition))
            .map(|o| o + 1)
    }

    /// Waits until every produced record is acknowledged: false if the cluster did
    /// not acknowledge them all within the wait (the records stay queued and the
    /// producer keeps trying). If some of `query`'s failed: an error (the first
    /// failure), or with `LogAndContinue` a warning and a count.
    pub(crate) fn flush(&self, query: u64, query_name: &str) -> Result<bool> {
        use crate::io::settings::ProductionExceptionHandler as H;
        match self.producer.flush(super::COMMIT_FLUSH_WAIT) {
            Ok(()) => {}
            Err(e) if super::is_transient(&e) => {
                log::warn!(
                    "query '{query_name}': the cluster has not acknowledged every record yet ({e}); the commit waits"
                );
                return Ok(false);
            }
            Err(e) => return Err(kafka_error("flushing the producer failed", e)),
        }
        let mut failed = self.deliveries.failed.lock();
        let key = query as usize;
        match (failed.get(&key), self.on_failure) {
            (None, _) => Ok(true),
            (Some((first, _)), H::Fail) => {
                Err(Error::kafka(match super::fatal_reason(&self.producer) {
                    Some(fatal) => format!("{first}: {fatal}"),
                    None => first.clone(),
                }))
            }
            (Some(_), H::LogAndContinue) => {
                let (first, n) = failed.remove(&key).expect("just found");
                log::warn!(
                    "query '{query_name}': {n} records were not written ({first}); going on"
                );
                metrics::counter!(crate::metrics::PRODUCE_ERRORS_TOTAL, "query" => query_name.to_string())
                    .increment(n);
                Ok(true)
            }
        }
    }
}
