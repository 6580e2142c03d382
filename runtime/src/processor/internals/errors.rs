//! What happens to a record user code fails on: Kafka Streams' processing exception
//! handler (KIP-1033) and its dead-letter queue (KIP-1034).
//!
//! Why here: the handler is applied where the engine calls user code, one node at a
//! time (`TaskCore::dispatch` and punctuation), as Kafka applies it in each
//! `ProcessorNode`. A failure is handled by the node it happened in: the node's
//! siblings still get the record, and an ancestor never handles it a second time
//! (a handled failure comes back up attributed to the node that failed).
//!
//! A dead letter needs the source record's bytes, which only the source node holds
//! while the record runs through the graph; so a handled failure queues its dead
//! letter here and the source writes it with the bytes as the record returns
//! (without a copy of every record on the way in). Failures outside a record's run —
//! punctuators, cache flushes — write theirs without bytes (Kafka's null key and
//! value).

use std::sync::Arc;

use super::core::TaskCore;
use super::node::NodeId;
use crate::config::ProcessingExceptionHandler;
use crate::error::{Error, Result};
use crate::io::broker::EncodedBatch;
use crate::io::partitioner::partition_for_key;
use crate::io::settings::ProductionExceptionHandler;
use crate::io::transport::{FailedDelivery, SinkTopic};
use crate::record::{Headers, RecordMetadata};

/// Kafka's dead-letter header: the exception, as `<kind>: <message>`.
pub const HEADER_ERRORS_EXCEPTION: &str = "__streams.errors.exception";
/// Kafka's dead-letter header: the exception's message.
pub const HEADER_ERRORS_MESSAGE: &str = "__streams.errors.message";
/// Kafka's dead-letter header: a stack trace in Kafka; in weir, where it failed (the
/// processor, query and task).
pub const HEADER_ERRORS_STACKTRACE: &str = "__streams.errors.stacktrace";
/// Kafka's dead-letter header: the source record's topic.
pub const HEADER_ERRORS_TOPIC: &str = "__streams.errors.topic";
/// Kafka's dead-letter header: the source record's partition.
pub const HEADER_ERRORS_PARTITION: &str = "__streams.errors.partition";
/// Kafka's dead-letter header: the source record's offset.
pub const HEADER_ERRORS_OFFSET: &str = "__streams.errors.offset";

/// A task's error handling: its query's handlers and dead-letter topic.
#[derive(Default)]
pub(crate) struct ErrorPolicy {
    pub(crate) processing: ProcessingExceptionHandler,
    pub(crate) production: ProductionExceptionHandler,
    /// The dead-letter topic, opened when the task starts.
    pub(crate) dead_letters: Option<Arc<dyn SinkTopic>>,
    /// Dead letters of the record running now, written when it returns to its source.
    pub(crate) pending: Vec<DeadLetter>,
    round_robin: u32,
}

impl ErrorPolicy {
    /// A task's policy: its query's handlers and opened dead-letter topic.
    pub(crate) fn new(
        processing: ProcessingExceptionHandler,
        production: ProductionExceptionHandler,
        dead_letters: Option<Arc<dyn SinkTopic>>,
    ) -> Self {
        ErrorPolicy {
            processing,
            production,
            dead_letters,
            pending: Vec::new(),
            round_robin: 0,
        }
    }
}

/// A dead letter waiting for its record's bytes.
pub(crate) struct DeadLetter {
    pub(crate) exception: String,
    pub(crate) message: String,
    pub(crate) place: String,
    pub(crate) timestamp: i64,
    pub(crate) source: Option<RecordMetadata>,
}

impl Error {
    /// Whether user code raised this (what a processing exception handler may skip):
    /// an error a processor or an operator's closure returned, or a serde's.
    pub(crate) fn is_user_failure(&self) -> bool {
        matches!(self, Error::User(_) | Error::Serde(_))
    }

    /// The error's kind, as the dead-letter exception header names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::User(_) => "User",
            Error::Serde(_) => "Serde",
            Error::Panic { .. } => "Panic",
            Error::Processor { source, .. } => source.kind(),
            Error::Deserialization { .. } => "Deserialization",
            Error::Serialization { .. } => "Serialization",
            Error::Kafka { .. } => "Kafka",
            _ => "Error",
        }
    }

    /// The innermost message (a processor's error without the processor's name).
    fn bare_message(&self) -> String {
        match self {
            Error::Processor { source, .. } => source.bare_message(),
            Error::Panic { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl TaskCore {
    /// User code in `node` failed on the record (or punctuation) running now: the
    /// query's handler decides. `Ok` goes on with the next record; the error (naming
    /// the node) fails the query. Either way a dead letter is queued if the query has
    /// a dead-letter topic.
    pub(crate) fn on_processing_error(&mut self, node: NodeId, error: Error) -> Result<()> {
        let name = self.names[node].clone();
        let error = error.in_processor(&name);
        self.queue_dead_letter(&error, format!("processor '{name}'"));
        let at = self
            .env
            .metadata
            .as_ref()
            .map(|m| format!(" at {}-{} offset {}", m.topic, m.partition, m.offset))
            .unwrap_or_default();
        match self.env.errors.processing {
            ProcessingExceptionHandler::Fail => {
                log::error!(
                    "query '{}': processing the record{at} failed: {error}; the processing exception handler fails the query",
                    self.env.query
                );
                Err(error)
            }
            ProcessingExceptionHandler::LogAndContinue => {
                log::warn!(
                    "query '{}': skipping the record{at}: {error}",
                    self.env.query
                );
                self.env.skipped += 1;
                self.env.metrics.dropped_by(node);
                Ok(())
            }
        }
    }

    /// A sink cannot serialize a record: the production exception handler decides
    /// (Kafka's `handleSerializationException`).
    pub(crate) fn on_serialization_error(&mut self, node: NodeId, error: Error) -> Result<()> {
        let name = self.names[node].clone();
        self.queue_dead_letter(&error, format!("sink '{name}'"));
        match self.env.errors.production {
            ProductionExceptionHandler::Fail => Err(error),
            ProductionExceptionHandler::LogAndContinue => {
                log::warn!(
                    "query '{}': sink '{name}' skips a record: {error}",
                    self.env.query
                );
                self.env.skipped += 1;
                self.env.metrics.dropped_by(node);
                Ok(())
            }
        }
    }

    /// Queues a dead letter for `error` (raised at `place`) if the query has a
    /// dead-letter topic.
    pub(crate) fn queue_dead_letter(&mut self, error: &Error, place: String) {
        if self.env.errors.dead_letters.is_none() {
            return;
        }
        let message = error.bare_message();
        self.env.errors.pending.push(DeadLetter {
            exception: format!("{}: {message}", error.kind()),
            message,
            place: format!(
                "{place} in query '{}' task {}",
                self.env.query, self.env.task_id
            ),
            timestamp: self.env.record_timestamp,
            source: self.env.metadata.clone(),
        });
    }

    /// Writes the queued dead letters with the source record's key and value bytes
    /// (`None`: null).
    pub(crate) fn write_dead_letters(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<()> {
        if self.env.errors.pending.is_empty() {
            return Ok(());
        }
        let Some(topic) = self.env.errors.dead_letters.clone() else {
            self.env.errors.pending.clear();
            return Ok(());
        };
        for letter in std::mem::take(&mut self.env.errors.pending) {
            self.write_letter(&*topic, &letter, key, value)?;
        }
        topic.written();
        Ok(())
    }

    /// Writes the records the cluster refused (a log-and-continue production handler
    /// kept them) to the dead-letter topic, each with the bytes that were refused and
    /// its destination as topic and partition (offset -1: it has none). True if it
    /// wrote any.
    pub(crate) fn dead_letter_deliveries(&mut self, refused: Vec<FailedDelivery>) -> Result<bool> {
        let Some(topic) = self.env.errors.dead_letters.clone() else {
            return Ok(false);
        };
        if refused.is_empty() {
            return Ok(false);
        }
        let mut wrote = false;
        for f in refused {
            if f.topic == topic.name() {
                // A dead letter the cluster refused is not dead-lettered again (that
                // could go on forever); it was counted and logged as refused.
                continue;
            }
            wrote = true;
            let letter = DeadLetter {
                exception: format!("Kafka: {}", f.error),
                place: format!(
                    "delivery to '{}' partition {} in query '{}' task {}",
                    f.topic, f.partition, self.env.query, self.env.task_id
                ),
                message: f.error,
                timestamp: f.timestamp,
                source: Some(RecordMetadata {
                    topic: Arc::from(f.topic.as_str()),
                    partition: f.partition,
                    offset: -1,
                }),
            };
            self.write_letter(&*topic, &letter, f.key.as_deref(), f.value.as_deref())?;
        }
        topic.written();
        Ok(wrote)
    }

    fn write_letter(
        &mut self,
        topic: &dyn SinkTopic,
        letter: &DeadLetter,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let n = topic.partition_count();
        let partition = match key {
            Some(k) => partition_for_key(k, n),
            None => {
                self.env.errors.round_robin = self.env.errors.round_robin.wrapping_add(1);
                self.env.errors.round_robin % n.max(1)
            }
        };
        let mut batch = EncodedBatch::default();
        batch.push(
            letter.timestamp,
            key,
            |out| {
                out.extend_from_slice(value.unwrap_or_default());
                Ok(value.is_some())
            },
            &letter.headers(),
        )?;
        topic.write(self.env.query_id, partition, &batch)
    }
}

impl DeadLetter {
    fn headers(&self) -> Headers {
        let mut h = Headers::new();
        let (topic, partition, offset) = match &self.source {
            Some(m) => (
                m.topic.to_string(),
                m.partition.to_string(),
                m.offset.to_string(),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        for (k, v) in [
            (HEADER_ERRORS_EXCEPTION, self.exception.clone()),
            (HEADER_ERRORS_MESSAGE, self.message.clone()),
            (HEADER_ERRORS_STACKTRACE, self.place.clone()),
            (HEADER_ERRORS_TOPIC, topic),
            (HEADER_ERRORS_PARTITION, partition),
            (HEADER_ERRORS_OFFSET, offset),
        ] {
            h.add(k, Some(v.into_bytes()));
        }
        h
    }
}

/// The message of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
