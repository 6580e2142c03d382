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
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::{Error, Result};
use crate::io::partitioner::partition_for_key;
use crate::record::{
    ConsumerRecord, Headers, RECORD_OVERHEAD_BYTES, RawRecord, Record, now_millis,
};
use crate::serde::{DefaultSerde, Serde};

mod transport;
pub(crate) use transport::BrokerTransport;

/// Size at which a partition's active segment is sealed.
const SEGMENT_BYTES: usize = 1 << 20;

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
            logs.push(PartitionLog {
                inner: RwLock::new(LogInner {
                    dir,
                    ..LogInner::default()
                }),
            });
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

/// One topic's partition logs; held by sources and sinks so the hot path does no lookup.
pub(crate) struct TopicLog {
    pub(crate) name: Arc<str>,
    partitions: Vec<PartitionLog>,
}

impl TopicLog {
    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn log(&self, partition: u32) -> Result<&PartitionLog> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.to_string(),
                partition,
                partitions: self.partitions.len() as u32,
            })
    }

    pub(crate) fn append(
        &self,
        partition: u32,
        records: impl IntoIterator<Item = RawRecord>,
    ) -> Result<i64> {
        let log = self.log(partition)?;
        let mut inner = log.inner.write();
        let first = inner.next_offset;
        for r in records {
            inner.push(&r)?;
        }
        Ok(first)
    }

    /// Appends records that [`EncodedBatch`] encoded; copies bytes, re-encodes nothing.
    pub(crate) fn append_encoded(&self, partition: u32, batch: &EncodedBatch) -> Result<i64> {
        let log = self.log(partition)?;
        let mut inner = log.inner.write();
        let first = inner.next_offset;
        let mut start = 0usize;
        for &end in &batch.ends {
            inner.push_encoded(&batch.data[start..end as usize])?;
            start = end as usize;
        }
        Ok(first)
    }

    pub(crate) fn fetch_batch(
        &self,
        partition: u32,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<FetchBatch>> {
        let log = self.log(partition)?;
        let inner = log.inner.read();
        inner
            .fetch_batch(offset, max_records, max_bytes)
            .map_err(|e| {
                Error::io(
                    format!("cannot read the log of {}-{partition}", self.name),
                    e,
                )
            })
    }

    pub(crate) fn fetch(
        &self,
        partition: u32,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<(i64, RawRecord)>,
    ) -> Result<()> {
        if let Some(mut batch) = self.fetch_batch(partition, offset, max_records, max_bytes)? {
            while let Some((offset, view, _)) = batch.next_record() {
                out.push((offset, view.to_raw()));
            }
        }
        Ok(())
    }

    pub(crate) fn end_offset(&self, partition: u32) -> Result<i64> {
        let log = self.log(partition)?;
        let inner = log.inner.read();
        Ok(inner.next_offset)
    }
}

#[derive(Default)]
struct PartitionLog {
    inner: RwLock<LogInner>,
}

#[derive(Default)]
struct LogInner {
    /// Where sealed segments are written; `None`: they stay in memory.
    dir: Option<PathBuf>,
    sealed: Vec<Segment>,
    active: ActiveSegment,
    next_offset: i64,
}

/// The bytes of a sealed segment: in memory, or in a file read with `pread`.
enum SegmentData {
    Memory(Bytes),
    File(File),
}

struct Segment {
    base_offset: i64,
    data: SegmentData,
    len: usize,
    positions: Vec<u32>,
}

/// Where `FetchBatch::copy_from` reads a segment's bytes.
enum Source<'a> {
    Slice(&'a [u8]),
    File(&'a File),
}

#[derive(Default)]
struct ActiveSegment {
    base_offset: i64,
    data: Vec<u8>,
    positions: Vec<u32>,
}

impl LogInner {
    fn push(&mut self, r: &RawRecord) -> Result<()> {
        let mut buf = Vec::with_capacity(encoded_len(r));
        encode(r, &mut buf);
        self.push_encoded(&buf)
    }

    fn seal(&mut self) -> Result<()> {
        let full = std::mem::take(&mut self.active);
        let len = full.data.len();
        let data = match &self.dir {
            None => SegmentData::Memory(Bytes::from(full.data)),
            Some(dir) => {
                let path = dir.join(format!("{:020}.log", full.base_offset));
                let io = |e| Error::io(format!("cannot write log segment {}", path.display()), e);
                std::fs::write(&path, &full.data).map_err(io)?;
                SegmentData::File(File::open(&path).map_err(io)?)
            }
        };
        self.sealed.push(Segment {
            base_offset: full.base_offset,
            data,
            len,
            positions: full.positions,
        });
        self.active.base_offset = self.next_offset;
        Ok(())
    }

    fn push_encoded(&mut self, record: &[u8]) -> Result<()> {
        let need = record.len();
        if !self.active.positions.is_empty() && self.active.data.len() + need > SEGMENT_BYTES {
            self.seal()?;
        }
        if self.active.data.capacity() == 0 {
            self.active.data.reserve(SEGMENT_BYTES.max(need));
        }
        self.active.positions.push(self.active.data.len() as u32);
        self.active.data.extend_from_slice(record);
        self.next_offset += 1;
        Ok(())
    }

    /// Copies up to `max_records` records from `offset` into one batch, stopping before
    /// `max_bytes` would be exceeded (the first record is always taken). The batch owns
    /// its bytes: consumers read them on their own thread with no shared counters.
    fn fetch_batch(
        &self,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> std::io::Result<Option<FetchBatch>> {
        let mut offset = offset.max(0);
        if offset >= self.next_offset || max_records == 0 {
            return Ok(None);
        }
        let mut batch = FetchBatch {
            offsets: Vec::new(),
            base_offset: offset,
            data: Vec::new(),
            index: Vec::new(),
            cursor: 0,
        };
        let mut budget = Budget {
            records: max_records,
            bytes: max_bytes,
            first: true,
        };
        let start = self
            .sealed
            .partition_point(|s| s.base_offset + s.positions.len() as i64 <= offset);
        let segments = self.sealed[start..]
            .iter()
            .map(|s| {
                let src = match &s.data {
                    SegmentData::Memory(b) => Source::Slice(b),
                    SegmentData::File(f) => Source::File(f),
                };
                (s.base_offset, src, s.len, &s.positions[..])
            })
            .chain(std::iter::once((
                self.active.base_offset,
                Source::Slice(&self.active.data[..]),
                self.active.data.len(),
                &self.active.positions[..],
            )));
        for (base, src, len, positions) in segments {
            if !batch.copy_from(src, len, base, positions, &mut offset, &mut budget)? {
                break;
            }
        }
        Ok(Some(batch))
    }
}

struct Budget {
    records: usize,
    bytes: usize,
    first: bool,
}

/// Records fetched from one partition: their encoded bytes in one owned buffer, an
/// index, and a cursor for the consumer. This is what the partition queues carry.
#[derive(Debug)]
pub(crate) struct FetchBatch {
    base_offset: i64,
    data: Vec<u8>,
    /// (timestamp, start, end) of each record in `data`.
    index: Vec<(i64, u32, u32)>,
    cursor: usize,
    /// Each record's offset, for batches read from Kafka (whose offsets may have gaps);
    /// empty for the in-process log, whose records follow `base_offset`.
    offsets: Vec<i64>,
}

impl FetchBatch {
    /// Appends the records of one segment from `*offset` on, within the budget; false
    /// once the budget is spent.
    fn copy_from(
        &mut self,
        src: Source<'_>,
        len: usize,
        base: i64,
        positions: &[u32],
        offset: &mut i64,
        budget: &mut Budget,
    ) -> std::io::Result<bool> {
        let first = (*offset - base) as usize;
        if first >= positions.len() {
            return Ok(true);
        }
        let end_of = |i: usize| positions.get(i + 1).map_or(len, |p| *p as usize);
        let mut last = first;
        let mut exhausted = false;
        while last < positions.len() {
            let size = end_of(last) - positions[last] as usize + RECORD_OVERHEAD_BYTES;
            if budget.records == 0 || (size > budget.bytes && !budget.first) {
                exhausted = true;
                break;
            }
            budget.first = false;
            budget.bytes = budget.bytes.saturating_sub(size);
            budget.records -= 1;
            last += 1;
        }
        if last > first {
            let (from, to) = (positions[first] as usize, end_of(last - 1));
            let at = self.data.len();
            match src {
                Source::Slice(data) => self.data.extend_from_slice(&data[from..to]),
                Source::File(f) => {
                    self.data.resize(at + (to - from), 0);
                    f.read_exact_at(&mut self.data[at..], from as u64)?;
                }
            }
            let shift = at as i64 - from as i64;
            for (i, &pos) in positions.iter().enumerate().take(last).skip(first) {
                let start = (pos as i64 + shift) as usize;
                let ts =
                    i64::from_le_bytes(self.data[start..start + 8].try_into().expect("8 bytes"));
                self.index
                    .push((ts, start as u32, (end_of(i) as i64 + shift) as u32));
            }
            *offset += (last - first) as i64;
        }
        Ok(!exhausted)
    }

    /// An empty batch to fill with records read from Kafka.
    pub(crate) fn for_kafka() -> Self {
        FetchBatch {
            base_offset: 0,
            data: Vec::new(),
            index: Vec::new(),
            cursor: 0,
            offsets: Vec::new(),
        }
    }

    /// Appends a record read from Kafka at `offset` (after every record already in it);
    /// returns the bytes it is charged.
    pub(crate) fn push_message(
        &mut self,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
    ) -> usize {
        let start = self.data.len();
        self.data.put_i64_le(timestamp);
        put_field(&mut self.data, key);
        put_field(&mut self.data, value);
        put_headers(&mut self.data, headers);
        self.index
            .push((timestamp, start as u32, self.data.len() as u32));
        self.offsets.push(offset);
        self.data.len() - start + RECORD_OVERHEAD_BYTES
    }

    /// Offset of the last record in the batch.
    pub(crate) fn last_offset(&self) -> Option<i64> {
        match self.offsets.last() {
            Some(o) => Some(*o),
            None if self.index.is_empty() => None,
            None => Some(self.base_offset + self.index.len() as i64 - 1),
        }
    }

    /// Records not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.index.len() - self.cursor
    }

    /// True when every record was taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Timestamp of the next record.
    pub(crate) fn head_timestamp(&self) -> Option<i64> {
        self.index.get(self.cursor).map(|e| e.0)
    }

    fn size_of(&self, i: usize) -> usize {
        let (_, start, end) = self.index[i];
        (end - start) as usize + RECORD_OVERHEAD_BYTES
    }

    /// Bytes charged for the records not yet taken.
    pub(crate) fn remaining_bytes(&self) -> usize {
        (self.cursor..self.index.len())
            .map(|i| self.size_of(i))
            .sum()
    }

    /// Takes the next record: its offset, a view of it, and the bytes it is charged.
    pub(crate) fn next_record(&mut self) -> Option<(i64, RecordView<'_>, usize)> {
        let i = self.cursor;
        let (_, start, end) = *self.index.get(i)?;
        self.cursor += 1;
        let size = self.size_of(i);
        let offset = self
            .offsets
            .get(i)
            .copied()
            .unwrap_or(self.base_offset + i as i64);
        Some((
            offset,
            RecordView::parse(&self.data[start as usize..end as usize]),
            size,
        ))
    }
}

impl crate::io::queue::QueueItem for FetchBatch {
    fn size_bytes(&self) -> usize {
        self.remaining_bytes()
    }
    fn records(&self) -> usize {
        self.len()
    }
}

/// One encoded record, read in place: key and value borrow the fetched buffer.
#[derive(Debug)]
pub(crate) struct RecordView<'a> {
    /// Key bytes (`None` is null).
    pub key: Option<&'a [u8]>,
    /// Value bytes (`None` is null).
    pub value: Option<&'a [u8]>,
    /// Timestamp.
    pub timestamp: i64,
    header_count: u32,
    header_bytes: &'a [u8],
}

fn read_field<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = i32::from_le_bytes(buf[*pos..*pos + 4].try_into().expect("4 bytes"));
    *pos += 4;
    (len >= 0).then(|| {
        let s = &buf[*pos..*pos + len as usize];
        *pos += len as usize;
        s
    })
}

impl<'a> RecordView<'a> {
    /// Reads a record the log encoded (the log only holds what it encoded itself).
    fn parse(buf: &'a [u8]) -> Self {
        let timestamp = i64::from_le_bytes(buf[0..8].try_into().expect("8 bytes"));
        let mut pos = 8;
        let key = read_field(buf, &mut pos);
        let value = read_field(buf, &mut pos);
        let header_count = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes"));
        RecordView {
            key,
            value,
            timestamp,
            header_count,
            header_bytes: &buf[pos + 4..],
        }
    }

    /// The headers, decoded (allocates only if there are any).
    pub(crate) fn headers(&self) -> Headers {
        let mut headers = Headers::new();
        let (buf, mut pos) = (self.header_bytes, 0usize);
        for _ in 0..self.header_count {
            let klen = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            pos += 4;
            let k = String::from_utf8_lossy(&buf[pos..pos + klen]).into_owned();
            pos += klen;
            let v = read_field(buf, &mut pos).map(Bytes::copy_from_slice);
            headers.add(k, v);
        }
        headers
    }

    /// An owned copy.
    pub(crate) fn to_raw(&self) -> RawRecord {
        Record {
            key: self.key.map(Bytes::copy_from_slice),
            value: self.value.map(Bytes::copy_from_slice),
            timestamp: self.timestamp,
            headers: self.headers(),
        }
    }
}

fn encoded_len(r: &RawRecord) -> usize {
    8 + 4
        + r.key.as_ref().map_or(0, Bytes::len)
        + 4
        + r.value.as_ref().map_or(0, Bytes::len)
        + 4
        + r.headers
            .iter()
            .map(|h| 8 + h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}

/// Records encoded in the log's format by a sink, ready for [`TopicLog::append_encoded`].
/// Reused across batches, so steady-state encoding allocates nothing.
#[derive(Default)]
pub(crate) struct EncodedBatch {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl EncodedBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// The encoded records, in order.
    pub(crate) fn views(&self) -> impl Iterator<Item = RecordView<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(from, to)| RecordView::parse(&self.data[from as usize..to as usize]))
    }

    /// Encodes one record: `key` is already serialized (`None` = null), `value` is
    /// written by the closure (returning false for null).
    pub(crate) fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: impl FnOnce(&mut Vec<u8>) -> Result<bool>,
        headers: &Headers,
    ) -> Result<()> {
        let start = self.data.len();
        self.data.put_i64_le(timestamp);
        put_field(&mut self.data, key);
        let len_at = self.data.len();
        self.data.put_i32_le(0);
        match value(&mut self.data) {
            Ok(true) => {
                let len = (self.data.len() - len_at - 4) as i32;
                self.data[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Ok(false) => {
                self.data.truncate(len_at + 4);
                self.data[len_at..len_at + 4].copy_from_slice(&(-1i32).to_le_bytes());
            }
            Err(e) => {
                self.data.truncate(start);
                return Err(e);
            }
        }
        put_headers(&mut self.data, headers);
        self.ends.push(self.data.len() as u32);
        Ok(())
    }
}

/// A key, value or header value: its length (`-1` = null), then its bytes.
fn put_field(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            buf.put_i32_le(b.len() as i32);
            buf.put_slice(b);
        }
        None => buf.put_i32_le(-1),
    }
}

/// The header count, then each header's key (length, bytes) and value.
fn put_headers(buf: &mut Vec<u8>, headers: &Headers) {
    buf.put_u32_le(headers.len() as u32);
    for h in headers.iter() {
        buf.put_u32_le(h.key.len() as u32);
        buf.put_slice(h.key.as_bytes());
        put_field(buf, h.value.as_deref());
    }
}

fn encode(r: &RawRecord, buf: &mut Vec<u8>) {
    buf.put_i64_le(r.timestamp);
    put_field(buf, r.key.as_deref());
    put_field(buf, r.value.as_deref());
    put_headers(buf, &r.headers);
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for i in 0..10 {
            b.append("t", 0, [raw(Some("k"), &format!("{i}{big}"), i)])
                .unwrap();
        }
        let files = std::fs::read_dir(dir.path().join("t-0")).unwrap().count();
        assert!(files >= 2, "sealed segments are files ({files})");
        let all = b.fetch("t", 0, 0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len(), 10);
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
