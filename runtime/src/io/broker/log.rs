//! A topic's partition logs: segments of encoded records, sealed at 1 MiB, in memory
//! or appended to files of up to 64 MiB read with `pread` (one file per sealed segment
//! made creating files a few percent of a disk-backed broker's CPU: ext4 searches
//! for a free inode each time).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{Budget, EncodedBatch, FetchBatch, Source, encode, encoded_len};
use crate::error::{Error, Result};
use crate::record::RawRecord;
use crate::sync::RwLock;

/// Size at which a partition's active segment is sealed.
const SEGMENT_BYTES: usize = 1 << 20;

/// Sealed segments are appended to a partition's current file until it holds this
/// many bytes; then a new file starts.
#[cfg(not(test))]
const FILE_BYTES: u64 = 64 << 20;
#[cfg(test)]
const FILE_BYTES: u64 = 2 << 20;

/// One topic's partition logs; held by sources and sinks so the hot path does no lookup.
pub(crate) struct TopicLog {
    pub(crate) name: Arc<str>,
    pub(super) partitions: Vec<PartitionLog>,
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
pub(super) struct PartitionLog {
    inner: RwLock<LogInner>,
}

impl PartitionLog {
    /// An empty partition log; sealed segments go to files in `dir`, if given.
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        PartitionLog {
            inner: RwLock::new(LogInner {
                dir,
                ..LogInner::default()
            }),
        }
    }
}

#[derive(Default)]
struct LogInner {
    /// Where sealed segments are written; `None`: they stay in memory.
    dir: Option<PathBuf>,
    sealed: Vec<Segment>,
    active: ActiveSegment,
    next_offset: i64,
    /// The file sealed segments are appended to now, and its length.
    file: Option<(Arc<File>, u64)>,
}

/// The bytes of a sealed segment: in memory, or at an offset of a file read with
/// `pread`.
enum SegmentData {
    Memory(Bytes),
    File(Arc<File>, u64),
}

struct Segment {
    base_offset: i64,
    data: SegmentData,
    len: usize,
    positions: Vec<u32>,
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
        let mut full = std::mem::take(&mut self.active);
        let len = full.data.len();
        let data = match &self.dir {
            None => SegmentData::Memory(Bytes::from(std::mem::take(&mut full.data))),
            Some(dir) => {
                use std::io::Write;
                if self.file.as_ref().is_none_or(|(_, n)| *n >= FILE_BYTES) {
                    let path = dir.join(format!("{:020}.log", full.base_offset));
                    let io = |e| Error::io(format!("cannot create log file {}", path.display()), e);
                    let f = std::fs::OpenOptions::new()
                        .create_new(true)
                        .read(true)
                        .append(true)
                        .open(&path)
                        .map_err(io)?;
                    self.file = Some((Arc::new(f), 0));
                }
                let (file, at) = self.file.as_mut().expect("opened above");
                if let Err(e) = (&**file).write_all(&full.data) {
                    // Part of it may be there: later segments start a new file.
                    self.file = None;
                    let at = dir.display();
                    return Err(Error::io(format!("cannot write a log segment in {at}"), e));
                }
                let segment = SegmentData::File(file.clone(), *at);
                *at += len as u64;
                // The next active segment reuses the buffer: no new pages to fault in.
                full.data.clear();
                self.active.data = std::mem::take(&mut full.data);
                segment
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
        let mut batch = FetchBatch::starting_at(offset);
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
                    SegmentData::File(f, at) => Source::File(f, *at),
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
