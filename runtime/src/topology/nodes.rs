//! The ends of a task's graph: sources deserialize fetched records and forward them;
//! sinks serialize, partition and encode records, and write them through the
//! transport at the end of each batch. They live with the topology because
//! `Topology::add_source` and `add_sink` make them (the node factories capture the
//! key and value types).

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{SinkSpec, SourceSpec};
use crate::config::DeserializationHandler;
use crate::error::{Error, RecordField, Result};
use crate::io::broker::{EncodedBatch, RecordView};
use crate::io::partitioner::partition_for_key;
use crate::io::transport::SinkTopic;
use crate::processor::internals::{Node, NodeId, NodeKind, TaskCore, take_input};
use crate::processor::{Data, Punctuation};
use crate::record::Record;

/// Deserializes queued records and forwards them.
pub(super) struct SourceNode<K, V> {
    pub(super) spec: SourceSpec<K, V>,
}

impl<K: Data, V: Data> Node for SourceNode<K, V> {
    fn init(&mut self, _core: &mut TaskCore, _me: NodeId) -> Result<()> {
        Ok(())
    }

    fn process(&mut self, _input: &mut dyn Any, core: &mut TaskCore, me: NodeId) -> Result<()> {
        Err(Error::Topology(format!(
            "source '{}' cannot have a parent",
            core.names[me]
        )))
    }

    fn ingest(
        &mut self,
        view: &RecordView<'_>,
        offset: i64,
        core: &mut TaskCore,
        me: NodeId,
    ) -> Result<()> {
        let key = match self.spec.key_serde.deserialize(view.key) {
            Ok(k) => k,
            Err(e) => return self.on_error(core, me, offset, RecordField::Key, e),
        };
        let value = match self.spec.value_serde.deserialize(view.value) {
            Ok(v) => v,
            Err(e) => return self.on_error(core, me, offset, RecordField::Value, e),
        };
        let timestamp = match &self.spec.extractor {
            None => view.timestamp,
            Some(f) => {
                let t = f(&key, &value, view.timestamp);
                if t < 0 {
                    log::debug!(
                        "query '{}': skipping the record at offset {offset} of '{}': its extracted timestamp {t} is negative",
                        core.env.query,
                        core.names[me]
                    );
                    core.env.skipped += 1;
                    return Ok(());
                }
                t
            }
        };
        core.env
            .metrics
            .record_lateness(core.env.stream_time, timestamp);
        // Stream time includes the record being processed (as in Kafka Streams).
        if timestamp > core.env.stream_time {
            core.env.stream_time = timestamp;
        }
        let record = Record {
            key,
            value,
            timestamp,
            headers: view.headers(),
        };
        // A source with no children (a stream nobody consumes yet) just drops records.
        let n = core.children[me].len();
        core.env.record_timestamp = timestamp;
        for i in 0..n.saturating_sub(1) {
            let mut copy = Some(record.clone());
            core.dispatch(core.children[me][i], &mut copy as &mut dyn Any)?;
        }
        if n > 0 {
            let mut slot = Some(record);
            core.dispatch(core.children[me][n - 1], &mut slot as &mut dyn Any)?;
        }
        Ok(())
    }

    fn punctuate(&mut self, _p: &Punctuation, _core: &mut TaskCore, _me: NodeId) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self, _core: &mut TaskCore) -> Result<()> {
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<K, V> SourceNode<K, V> {
    fn on_error(
        &self,
        core: &mut TaskCore,
        me: NodeId,
        offset: i64,
        field: RecordField,
        e: Error,
    ) -> Result<()> {
        let meta = core.env.metadata.as_ref();
        let (topic, partition) =
            meta.map_or((String::new(), 0), |m| (m.topic.to_string(), m.partition));
        let reason = e.to_string();
        let error = Error::Deserialization {
            topic: topic.clone(),
            partition,
            offset,
            field,
            reason: reason.clone(),
        };
        // Its dead letter (if the query has a dead-letter topic) carries the bytes: the
        // task core writes it as the record returns.
        core.queue_dead_letter(&error, format!("source '{}'", core.names[me]));
        match self
            .spec
            .handler
            .unwrap_or(core.env.deserialization_handler)
        {
            DeserializationHandler::Fail => Err(error),
            DeserializationHandler::LogAndContinue => {
                log::warn!(
                    "query '{}': skipping record at {topic}-{partition} offset {}: cannot deserialize its {field}: {reason}",
                    core.env.query,
                    offset
                );
                core.env.skipped += 1;
                Ok(())
            }
        }
    }
}

static SINK_SEED: AtomicU64 = AtomicU64::new(0);

/// Serializes, partitions and encodes records into one buffer per partition; the task
/// appends the buffers to the topic at the end of each batch.
pub(super) struct SinkNode<K, V> {
    pub(super) spec: SinkSpec<K, V>,
    pub(super) topic: Option<Arc<dyn SinkTopic>>,
    pub(super) buffers: Vec<EncodedBatch>,
    pub(super) key_buf: Vec<u8>,
    pub(super) round_robin: u64,
}

impl<K: Data, V: Data> Node for SinkNode<K, V> {
    fn init(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let NodeKind::Sink { topic } = &core.kinds[me] else {
            return Err(Error::Topology(format!(
                "'{}' is not a sink",
                core.names[me]
            )));
        };
        let target = core.env.sink_topic(topic)?;
        self.buffers = (0..target.partition_count())
            .map(|_| EncodedBatch::default())
            .collect();
        self.topic = Some(target);
        self.round_robin = SINK_SEED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn process(&mut self, input: &mut dyn Any, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let record: Record<K, V> = take_input(input, core, me)?;
        let Some(log) = &self.topic else {
            return Err(Error::Topology(format!(
                "sink '{}' used before init",
                core.names[me]
            )));
        };
        let ser_err = |field: RecordField, e: Error| Error::Serialization {
            topic: log.name().to_string(),
            field,
            reason: e.to_string(),
        };
        self.key_buf.clear();
        let has_key = match self
            .spec
            .key_serde
            .serialize_into(&record.key, &mut self.key_buf)
        {
            Ok(has_key) => has_key,
            Err(e) => return core.on_serialization_error(me, ser_err(RecordField::Key, e)),
        };
        let n = log.partition_count();
        let chosen = self
            .spec
            .partitioner
            .as_ref()
            .and_then(|p| p(&record.key, &record.value, n));
        let partition = match chosen {
            Some(p) if p < n => p,
            Some(p) => {
                return Err(Error::UnknownPartition {
                    topic: log.name().to_string(),
                    partition: p,
                    partitions: n,
                });
            }
            None if has_key => partition_for_key(&self.key_buf, n),
            None => {
                self.round_robin = self.round_robin.wrapping_add(1);
                (self.round_robin % u64::from(n)) as u32
            }
        };
        let value_serde = &self.spec.value_serde;
        match self.buffers[partition as usize].push(
            record.timestamp,
            has_key.then_some(self.key_buf.as_slice()),
            |out| value_serde.serialize_into(&record.value, out),
            &record.headers,
        ) {
            Ok(()) => Ok(()),
            Err(e) => core.on_serialization_error(me, ser_err(RecordField::Value, e)),
        }
    }

    fn punctuate(&mut self, _p: &Punctuation, _core: &mut TaskCore, _me: NodeId) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self, core: &mut TaskCore) -> Result<()> {
        let Some(log) = &self.topic else {
            return Ok(());
        };
        let mut wrote = false;
        for (p, buf) in self.buffers.iter_mut().enumerate() {
            if !buf.is_empty() {
                log.write(core.env.query_id, p as u32, buf)?;
                buf.clear();
                wrote = true;
            }
        }
        if wrote {
            log.written();
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
