//! The in-process broker: weir's embedded default, so that examples, tests and
//! benchmarks need no Kafka.
//!
//! It models what a Kafka Streams application relies on and nothing more: named topics
//! with a fixed number of partitions, append-only partition logs with offsets, Kafka's
//! keyed partitioning, and committed offsets per consumer group. Sources and sinks
//! attach to it through the same fetch / append path they will use for Kafka.
//!
//! Storage follows Kafka's log: each partition is a list of segments holding encoded
//! records back to back. A sealed segment is one immutable `Bytes` buffer, so a fetch
//! hands out slices of it without copying; the active segment is copied once per fetch.
//! Everything lives in memory for now; the log is not bounded by the runtime's
//! memory limit (it stands in for a remote broker), so keep test inputs sized sensibly.

use crate::sync::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::{Error, Result};
use crate::io::partitioner::partition_for_key;
use crate::record::{ConsumerRecord, Headers, RawRecord, Record, now_millis};
use crate::serde::{DefaultSerde, Serde};

mod batch;
mod log;
mod transport;

pub(crate) use batch::{EncodedBatch, FetchBatch, RecordView};
use log::PartitionLog;
pub(crate) use log::TopicLog;
pub(crate) use transport::BrokerTransport;

/// A handle to an in-process broker. Cloning is cheap and every clone sees the same
/// topics; hand one to several runtimes to model several processes sharing a cluster.
#[derive(Clone, Default)]
pub struct Broker {
    inner: Arc<BrokerInner>,
}

#[derive(Default)]
struct BrokerInner {
    /// Where sealed segments go; `None` keeps them in memory.
    log_dir: Option<PathBuf>,
    topics: RwLock<HashMap<String, Arc<TopicLog>>>,
    /// (group, topic, partition) -> next offset to consume.
    committed: Mutex<HashMap<(String, String, u32), i64>>,
    listeners: Mutex<Vec<Sender<()>>>,
    round_robin: AtomicU64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topics", &self.topics())
            .finish()
    }
}

impl Broker {
    /// An empty broker keeping its logs in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty broker writing sealed log segments to files under `dir`, as Kafka does:
    /// their bytes then live in the page cache, not in the process, and only the active
    /// segment (up to 1 MiB) and an offset index (4 bytes a record) of each partition
    /// stay in memory.
    pub fn with_log_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create log directory {}", dir.display()), e))?;
        Ok(Broker {
            inner: Arc::new(BrokerInner {
                log_dir: Some(dir),
                ..BrokerInner::default()
            }),
        })
    }

    /// Creates a topic. Creating an existing topic with the same partition count is a
    /// no-op; with another count it is an error.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        if name.is_empty() {
            return Err(Error::Config("topic name must not be empty".into()));
        }
        if partitions == 0 {
            return Err(Error::Config(format!(
                "topic '{name}' needs at least one partition"
            )));
        }
        let mut topics = self.inner.topics.write();
        if let Some(t) = topics.get(name) {
            let existing = t.partitions.len() as u32;
            return if existing == partitions {
                Ok(())
            } else {
                Err(Error::TopicExists {
                    topic: name.to_string(),
                    existing,
                    requested: partitions,
                })
            };
        }
        let mut logs = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let dir = match &self.inner.log_dir {
                Some(d) => {
                    let dir = d.join(format!("{name}-{p}"));
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        Error::io(format!("cannot create log directory {}", dir.display()), e)
                    })?;
                    Some(dir)
                }
                None => None,
            };
            logs.push(PartitionLog::new(dir));
        }
        topics.insert(
            name.to_string(),
            Arc::new(TopicLog {
                name: Arc::from(name),
                partitions: logs,
            }),
        );
        Ok(())
    }

    /// Deletes a topic: its records, its log files and the offsets groups committed on
    /// it (Kafka's `deleteTopics`). A runtime still reading it keeps what it fetched and
    /// then finds the topic unknown. Returns whether the topic existed.
    pub fn delete_topic(&self, name: &str) -> Result<bool> {
        let Some(log) = self.inner.topics.write().remove(name) else {
            return Ok(false);
        };
        self.inner
            .committed
            .lock()
            .retain(|(_, topic, _), _| topic != name);
        if let Some(d) = &self.inner.log_dir {
            for p in 0..log.partitions.len() {
                let dir = d.join(format!("{name}-{p}"));
                std::fs::remove_dir_all(&dir).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(Error::io(
                        format!("cannot delete log directory {}", dir.display()),
                        e,
                    )),
                })?;
            }
        }
        Ok(true)
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        let topics = self.inner.topics.read();
        let mut names: Vec<String> = topics.keys().cloned().collect();
        names.sort();
        names
    }

    /// Partition count of a topic.
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<TopicLog>> {
        let topics = self.inner.topics.read();
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    /// Appends a record, choosing the partition as Kafka's default partitioner does:
    /// murmur2 of the key bytes, round robin for null keys. Returns (partition, offset).
    pub fn produce(&self, topic: &str, record: RawRecord) -> Result<(u32, i64)> {
        let log = self.topic(topic)?;
        let n = log.partitions.len() as u32;
        let partition = match &record.key {
            Some(k) => partition_for_key(k, n),
            None => (self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u32,
        };
        let offset = log.append(partition, std::iter::once(record))?;
        self.notify();
        Ok((partition, offset))
    }

    /// Appends records to one partition in order; returns the offset of the first.
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        records: impl IntoIterator<Item = RawRecord>,
    ) -> Result<i64> {
        let offset = self.topic(topic)?.append(partition, records)?;
        self.notify();
        Ok(offset)
    }

    pub(crate) fn notify(&self) {
        let mut listeners = self.inner.listeners.lock();
        // A full channel already holds a wake-up token; a disconnected one is pruned.
        listeners.retain(|l| !matches!(l.try_send(()), Err(TrySendError::Disconnected(_))));
    }

    /// A channel that receives a token (coalesced) after every append.
    pub(crate) fn subscribe(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut listeners = self.inner.listeners.lock();
        listeners.push(tx);
        rx
    }

    /// Serializes with the types' default serdes and appends with the current time.
    pub fn send<K: DefaultSerde, V: DefaultSerde>(
        &self,
        topic: &str,
        key: &K,
        value: &V,
    ) -> Result<(u32, i64)> {
        self.send_at(topic, key, value, now_millis())
    }

    /// Like [`Broker::send`] with an explicit event timestamp.
    pub fn send_at<K: DefaultSerde, V: DefaultSerde>(
        &self,
        topic: &str,
        key: &K,
        value: &V,
        timestamp: i64,
    ) -> Result<(u32, i64)> {
        let record = Record {
            key: K::default_serde().serialize(key)?,
            value: V::default_serde().serialize(value)?,
            timestamp,
            headers: Headers::new(),
        };
        self.produce(topic, record)
    }

    /// Reads up to `max_records` records of one partition from `offset`, stopping once
    /// `max_bytes` (as [`RawRecord::size_bytes`]) would be exceeded. The first record is
    /// always returned, however large, so a consumer can make progress (as Kafka does).
    pub fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(i64, RawRecord)>> {
        let mut out = Vec::new();
        self.topic(topic)?
            .fetch(partition, offset, max_records, max_bytes, &mut out)?;
        Ok(out)
    }

    /// The offset the next appended record of this partition will get.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<i64> {
        self.topic(topic)?.end_offset(partition)
    }

    /// Every record of a topic, partition by partition, deserialized with the types'
    /// default serdes. Meant for tests and examples.
    pub fn read_all<K: DefaultSerde, V: DefaultSerde>(
        &self,
        topic: &str,
    ) -> Result<Vec<ConsumerRecord<K, V>>> {
        self.read_all_with(topic, &K::default_serde(), &V::default_serde())
    }

    /// Every record of a topic, deserialized with the given serdes.
    pub fn read_all_with<K, V>(
        &self,
        topic: &str,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
    ) -> Result<Vec<ConsumerRecord<K, V>>> {
        let log = self.topic(topic)?;
        let mut out = Vec::new();
        let mut raw = Vec::new();
        for p in 0..log.partitions.len() as u32 {
            raw.clear();
            log.fetch(p, 0, usize::MAX, usize::MAX, &mut raw)?;
            for (offset, r) in raw.drain(..) {
                out.push(ConsumerRecord {
                    topic: topic.to_string(),
                    partition: p,
                    offset,
                    record: Record {
                        key: key_serde.deserialize(r.key.as_deref())?,
                        value: value_serde.deserialize(r.value.as_deref())?,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Commits `offset` (the next offset to consume) for a group.
    pub fn commit(&self, group: &str, topic: &str, partition: u32, offset: i64) {
        let mut c = self.inner.committed.lock();
        c.insert((group.to_string(), topic.to_string(), partition), offset);
    }

    /// The committed offset of a group on a partition, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<i64> {
        let c = self.inner.committed.lock();
        c.get(&(group.to_string(), topic.to_string(), partition))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn raw(k: Option<&str>, v: &str, ts: i64) -> RawRecord {
        Record::new(
            k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            Some(Bytes::copy_from_slice(v.as_bytes())),
            ts,
        )
    }

    #[test]
    fn append_fetch_across_segments() {
        let b = Broker::new();
        b.create_topic("t", 1).unwrap();
        let big = "x".repeat(300_000);
        for i in 0..10 {
            let off = b
                .append("t", 0, [raw(Some("k"), &format!("{i}{big}"), i)])
                .unwrap();
            assert_eq!(off, i);
        }
        assert_eq!(b.end_offset("t", 0).unwrap(), 10);
        let all = b.fetch("t", 0, 0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len(), 10);
        for (i, (off, r)) in all.iter().enumerate() {
            assert_eq!(*off, i as i64);
            assert_eq!(r.timestamp, i as i64);
            assert!(
                r.value
                    .as_ref()
                    .unwrap()
                    .starts_with(i.to_string().as_bytes())
            );
        }
        let mid = b.fetch("t", 0, 7, 2, usize::MAX).unwrap();
        assert_eq!(mid.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![7, 8]);
        // A byte limit smaller than one record still returns that record.
        assert_eq!(b.fetch("t", 0, 3, 10, 1).unwrap().len(), 1);
        assert!(b.fetch("t", 0, 10, 10, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_disk_backed_log_reads_back_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::with_log_dir(dir.path()).unwrap();
        b.create_topic("t", 1).unwrap();
        let big = "y".repeat(300_000);
        for i in 0..20 {
            b.append("t", 0, [raw(Some("k"), &format!("{i}{big}"), i)])
                .unwrap();
        }
        // Segments of three records are sealed at 1 MiB and appended to a file until
        // it holds 2 MiB in tests (64 MiB otherwise): six segments, two files.
        let mut files: Vec<u64> = std::fs::read_dir(dir.path().join("t-0"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|n| *n > 2_000_000), "{files:?}");
        let all = b.fetch("t", 0, 0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len(), 20);
        for (i, (off, r)) in all.iter().enumerate() {
            assert_eq!((*off, r.timestamp), (i as i64, i as i64));
            assert!(
                r.value
                    .as_ref()
                    .unwrap()
                    .starts_with(i.to_string().as_bytes())
            );
        }
        assert_eq!(b.fetch("t", 0, 5, 3, usize::MAX).unwrap().len(), 3);
    }

    #[test]
    fn a_deleted_topic_is_gone_with_its_files_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::with_log_dir(dir.path()).unwrap();
        b.create_topic("t", 2).unwrap();
        b.create_topic("keep", 1).unwrap();
        let big = "z".repeat(300_000);
        for i in 0..8 {
            b.append("t", 0, [raw(Some("k"), &big, i)]).unwrap();
        }
        b.commit("g", "t", 0, 5);
        b.commit("g", "keep", 0, 1);
        assert!(dir.path().join("t-0").exists());

        assert!(b.delete_topic("t").unwrap());
        assert!(matches!(b.partitions("t"), Err(Error::UnknownTopic(_))));
        assert!(!dir.path().join("t-0").exists() && !dir.path().join("t-1").exists());
        assert_eq!(b.committed("g", "t", 0), None);
        assert_eq!(b.committed("g", "keep", 0), Some(1));
        assert_eq!(b.topics(), vec!["keep".to_string()]);
        assert!(!b.delete_topic("t").unwrap(), "already gone");
        // A topic made again under the name starts empty.
        b.create_topic("t", 3).unwrap();
        assert_eq!(b.end_offset("t", 0).unwrap(), 0);
    }

    #[test]
    fn headers_and_nulls_survive() {
        let b = Broker::new();
        b.create_topic("t", 1).unwrap();
        let mut h = Headers::new();
        h.add("a", Some(Bytes::from_static(b"1")))
            .add("b", None::<Bytes>);
        let r = Record::new(None, None, -5).with_headers(h.clone());
        b.append("t", 0, [r.clone()]).unwrap();
        let (_, got) = b.fetch("t", 0, 0, 1, usize::MAX).unwrap().pop().unwrap();
        assert_eq!(got, r);
    }

    #[test]
    fn keyed_partitioning_matches_kafka_and_round_robin_for_null() {
        let b = Broker::new();
        b.create_topic("t", 50).unwrap();
        let (p, _) = b.produce("t", raw(Some("foobar"), "v", 0)).unwrap();
        assert_eq!(p, 16);
        let ps: std::collections::HashSet<u32> = (0..50)
            .map(|_| b.produce("t", raw(None, "v", 0)).unwrap().0)
            .collect();
        assert_eq!(ps.len(), 50);
    }

    #[test]
    fn topics_and_offsets() {
        let b = Broker::new();
        b.create_topic("t", 2).unwrap();
        b.create_topic("t", 2).unwrap();
        assert!(matches!(
            b.create_topic("t", 3),
            Err(Error::TopicExists { .. })
        ));
        assert!(matches!(b.partitions("nope"), Err(Error::UnknownTopic(_))));
        assert!(matches!(
            b.fetch("t", 2, 0, 1, 1),
            Err(Error::UnknownPartition { .. })
        ));
        assert_eq!(b.committed("g", "t", 0), None);
        b.commit("g", "t", 0, 42);
        assert_eq!(b.committed("g", "t", 0), Some(42));
        assert_eq!(b.committed("other", "t", 0), None);
    }

    #[test]
    fn typed_send_and_read_back() {
        let b = Broker::new();
        b.create_topic("t", 3).unwrap();
        b.send_at("t", &"k".to_string(), &7i64, 99).unwrap();
        let recs = b.read_all::<String, i64>("t").unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].record.key, "k");
        assert_eq!(recs[0].record.value, 7);
        assert_eq!(recs[0].record.timestamp, 99);
    }
}
