//! Metadata, internal topics, end offsets, and reading changelogs back to restore.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaClients, REQUEST_TIMEOUT, kafka_error, kafka_partition};
use crate::error::{Error, Result};
use crate::io::transport::InternalTopic;

/// How long one poll of the restore consumer waits before it checks its position.
const RESTORE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Records per batch handed over while a partition is read to its end.
pub(super) const READ_BATCH: usize = 1000;

/// Waits for `f` on this thread (the admin client's futures complete on its own
/// polling thread; weir runs no async runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

impl KafkaClients {
    /// per topic (a count that grows later is not followed, as Kafka Streams sizes its
    /// tasks once).
    pub(crate) fn partitions(&self, topic: &str) -> Result<u32> {
        let mut counts = self.partition_counts.lock();
        if let Some(&n) = counts.get(topic) {
            return Ok(n);
        }
        let n = self.read_partitions(topic)?;
        counts.insert(topic.to_string(), n);
        Ok(n)
    }

    fn read_partitions(&self, topic: &str) -> Result<u32> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&format!("cannot read metadata of topic '{topic}'"), e))?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as u32)
            }
            Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) | None => {
                    Err(Error::UnknownTopic(topic.to_string()))
                }
                Some(code) => Err(Error::kafka(format!("topic '{topic}': {code}"))),
            },
            None => Err(Error::UnknownTopic(topic.to_string())),
        }
    }

    /// Creates the internal topics that do not exist (changelogs compacted, repartition
    /// topics deleting by time), with the configured replication factor (the broker's
    /// default unless `KafkaConfig::replication_factor` says otherwise); checks the
    /// partition counts of those that do.
    pub(crate) fn ensure_topics(&self, topics: &[InternalTopic]) -> Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let mut missing = Vec::new();
        for t in topics {
            match self.partitions(&t.name) {
                Ok(n) if n == t.partitions || (t.changelog && n > t.partitions) => {}
                Ok(n) => {
                    return Err(Error::Topology(format!(
                        "internal topic '{}' has {n} partitions; it needs {}{}",
                        t.name,
                        if t.changelog { "at least " } else { "" },
                        t.partitions
                    )));
                }
                Err(Error::UnknownTopic(_)) => missing.push(t),
                Err(e) => return Err(e),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let describe = |t: &InternalTopic| {
            format!(
                "'{}' ({} partitions, cleanup.policy={})",
                t.name,
                t.partitions,
                if t.changelog { "compact" } else { "delete" }
            )
        };
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = self
            .config
            .client(&[])
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka admin client", e))?;
        let replicas = self.config.internal_replication();
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    &t.name,
                    kafka_partition(t.partitions),
                    TopicReplication::Fixed(replicas),
                )
                .set(
                    "cleanup.policy",
                    if t.changelog { "compact" } else { "delete" },
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT));
        let names = missing
            .iter()
            .map(|t| describe(t))
            .collect::<Vec<_>>()
            .join(", ");
        let results = block_on(admin.create_topics(&new, &options)).map_err(|e| {
            Error::kafka(format!(
                "cannot create internal topics {names}: {e} (create them, or let the application's principal create topics)"
            ))
        })?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::kafka(format!(
                        "cannot create internal topic '{name}': {code} (create {names}, or let the application's principal create topics)"
                    )));
                }
            }
        }
        let mut counts = self.partition_counts.lock();
        for t in missing {
            counts.insert(t.name.clone(), t.partitions);
        }
        log::info!("created internal topics {names}");
        Ok(())
    }

    /// Reads `topic`/`partition` from `from` to its end, handing `apply` batches of
    /// (key, value) (`None` = tombstone) of at most 1000 records, so a restore holds no
    /// more than one batch in memory. Returns the records read and the end offset.
    pub(crate) fn restore(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        mut apply: impl FnMut(&[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()>,
    ) -> Result<(u64, i64)> {
        use rdkafka::Message;
        let mut batch = Vec::new();
        let mut read = 0u64;
        let (_, high) = self.read_partition(topic, partition, from, &mut |m| {
            read += 1;
            let Some(k) = m.key() else { return Ok(()) };
            batch.push((k.to_vec(), m.payload().map(<[u8]>::to_vec)));
            if batch.len() >= READ_BATCH {
                apply(&batch)?;
                batch.clear();
            }
            Ok(())
        })?;
        apply(&batch)?;
        Ok((read, high))
    }

    /// Reads `topic`/`partition` from `from` to its end as it is now (under
    /// read_committed, to its last committed record) through the restore consumer,
    /// handing each message to `each`. Returns the offset after the last message read
    /// (`from`, or the log's start, if none) and the high watermark.
    pub(super) fn read_partition(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        each: &mut dyn FnMut(&BorrowedMessage<'_>) -> Result<()>,
    ) -> Result<(i64, i64)> {
        use rdkafka::Message;
        let restorer = self.restorer.lock();
        // A cluster that does not answer (a broker restarting) is waited for, up to
        // task_timeout, as commits wait for it.
        let deadline = std::time::Instant::now() + self.task_timeout;
        let (low, high) = loop {
            match restorer.fetch_watermarks(topic, kafka_partition(partition), REQUEST_TIMEOUT) {
                Ok(w) => break w,
                Err(e) if super::is_transient(&e) && std::time::Instant::now() < deadline => {
                    log::warn!("cannot read offsets of '{topic}' yet ({e}); trying again");
                    std::thread::sleep(RESTORE_POLL);
                }
                Err(e) => {
                    return Err(kafka_error(&format!("cannot read offsets of '{topic}'"), e));
                }
            }
        };
        let from = from.max(low);
        if from >= high {
            return Ok((from, high));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, kafka_partition(partition), Offset::Offset(from))
            .map_err(|e| kafka_error("bad partition", e))?;
        restorer
            .assign(&tpl)
            .map_err(|e| kafka_error(&format!("cannot read '{topic}'"), e))?;
        let mut at = from;
        let mut last_progress = std::time::Instant::now();
        let result = loop {
            if at >= high {
                break Ok(());
            }
            match restorer.poll(RESTORE_POLL) {
                Some(Ok(m)) => {
                    at = m.offset() + 1;
                    last_progress = std::time::Instant::now();
                    if let Err(e) = each(&m) {
                        break Err(e);
                    }
                }
                // The end: under read_committed, short of the high watermark by the
                // transaction markers (or at an open transaction, whose records are
                // read later from the offset after the last one read here).
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e))
                    if super::is_transient(&e) && last_progress.elapsed() < self.task_timeout =>
                {
                    // (Also what the consumer kept from an outage that is over.)
                    log::warn!("reading '{topic}' partition {partition}: {e}; going on");
                }
                Some(Err(e)) => break Err(kafka_error(&format!("reading '{topic}'"), e)),
                None => {
                    // Nothing delivered: the records left may all be aborted ones and
                    // transaction markers, which read_committed skips. Some brokers
                    // then answer with no record set at all, and no end-of-partition
                    // event ever comes: the consumer's position says how far it got.
                    let position = restorer
                        .position()
                        .ok()
                        .and_then(|tpl| {
                            tpl.find_partition(topic, kafka_partition(partition))
                                .map(|e| e.offset())
                        })
                        .and_then(|o| match o {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    if let Some(p) = position
                        && p > at
                    {
                        at = p;
                        last_progress = std::time::Instant::now();
                        continue;
                    }
                    if last_progress.elapsed() >= REQUEST_TIMEOUT {
                        break Err(Error::kafka(format!(
                            "reading '{topic}' partition {partition}: nothing for {} s at offset {at} of {high}",
                            REQUEST_TIMEOUT.as_secs()
                        )));
                    }
                }
            }
        };
        let _ = restorer.unassign();
        result?;
        Ok((at, high))
    }
}
