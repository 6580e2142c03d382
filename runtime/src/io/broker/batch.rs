//! The log's record format, and the batches it moves in: what a fetch returns
//! ([`FetchBatch`], read in place as [`RecordView`]s) and what a sink appends
//! ([`EncodedBatch`]).

use bytes::{BufMut, Bytes};

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::Result;
use crate::record::{Headers, RECORD_OVERHEAD_BYTES, RawRecord, Record};

/// Where `FetchBatch::copy_from` reads a segment's bytes.
pub(super) enum Source<'a> {
    Slice(&'a [u8]),
    /// A file, and where in it the segment starts.
    File(&'a File, u64),
}

/// What a fetch may still take.
pub(super) struct Budget {
    pub(super) records: usize,
    pub(super) bytes: usize,
    pub(super) first: bool,
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
    /// An empty batch of the log's records from `offset` on.
    pub(super) fn starting_at(offset: i64) -> Self {
        FetchBatch {
            offsets: Vec::new(),
            base_offset: offset,
            data: Vec::new(),
            index: Vec::new(),
            cursor: 0,
        }
    }

    /// Appends the records of one segment from `*offset` on, within the budget; false
    /// once the budget is spent.
    pub(super) fn copy_from(
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
                Source::File(f, base) => {
                    self.data.resize(at + (to - from), 0);
                    f.read_exact_at(&mut self.data[at..], base + from as u64)?;
                }
            }
            let shift = at as i64 - from as i64;
            for (i, &pos) in positions.iter().enumerate().take(last).skip(first) {
                let start = (pos as i64 + shift) as usize;
                let end = (end_of(i) as i64 + shift) as usize;
                // A segment file changed under the log (truncated, overwritten) must
                // not reach the record parser: every record is checked here.
                let Some(ts) = self.data.get(start..end).and_then(check_record) else {
                    self.data.truncate(at);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "corrupt record at offset {} (bytes {from}..{to} of its segment)",
                            base + i as i64
                        ),
                    ));
                };
                self.index.push((ts, start as u32, end as u32));
            }
            *offset += (last - first) as i64;
        }
        Ok(!exhausted)
    }

    /// An empty batch to fill with records read from Kafka.
    #[cfg(feature = "kafka")]
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
    #[cfg(feature = "kafka")]
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
    #[cfg(feature = "kafka")]
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

/// Checks that `buf` is exactly one record in the log's format (every length within
/// the buffer, nothing after the last header); its timestamp if so.
pub(super) fn check_record(buf: &[u8]) -> Option<i64> {
    fn field(buf: &[u8], pos: &mut usize) -> Option<()> {
        let len = i32::from_le_bytes(buf.get(*pos..*pos + 4)?.try_into().ok()?);
        *pos += 4;
        if len >= 0 {
            *pos = pos.checked_add(len as usize)?;
        } else if len != -1 {
            return None;
        }
        (*pos <= buf.len()).then_some(())
    }
    let ts = i64::from_le_bytes(buf.get(..8)?.try_into().ok()?);
    let mut pos = 8;
    field(buf, &mut pos)?;
    field(buf, &mut pos)?;
    let count = u32::from_le_bytes(buf.get(pos..pos + 4)?.try_into().ok()?);
    pos += 4;
    for _ in 0..count {
        let klen = u32::from_le_bytes(buf.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos = pos.checked_add(4 + klen)?;
        if pos > buf.len() {
            return None;
        }
        field(buf, &mut pos)?;
    }
    (pos == buf.len()).then_some(ts)
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
    /// Reads a record the log encoded (the log only holds what it encoded itself, and
    /// a fetch checks every record it reads back from a segment: `check_record`).
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

pub(super) fn encoded_len(r: &RawRecord) -> usize {
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
    pub(super) data: Vec<u8>,
    pub(super) ends: Vec<u32>,
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
    #[cfg(feature = "kafka")]
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

pub(super) fn encode(r: &RawRecord, buf: &mut Vec<u8>) {
    buf.put_i64_le(r.timestamp);
    put_field(buf, r.key.as_deref());
    put_field(buf, r.value.as_deref());
    put_headers(buf, &r.headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded() -> Vec<u8> {
        let mut headers = Headers::new();
        headers.add("trace", Some(b"abc".to_vec()));
        headers.add("null", None::<Vec<u8>>);
        let mut buf = Vec::new();
        encode(
            &Record {
                key: Some(Bytes::from_static(b"key")),
                value: Some(Bytes::from_static(b"value")),
                timestamp: 42,
                headers,
            },
            &mut buf,
        );
        buf
    }

    #[test]
    fn a_valid_record_checks_and_parses() {
        let buf = encoded();
        assert_eq!(check_record(&buf), Some(42));
        let view = RecordView::parse(&buf);
        assert_eq!(view.key, Some(&b"key"[..]));
        assert_eq!(view.value, Some(&b"value"[..]));
        assert_eq!(view.headers().len(), 2);
        // One byte more or less is not a record.
        assert_eq!(check_record(&buf[..buf.len() - 1]), None);
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(check_record(&longer), None);
    }

    proptest! {
        /// Whatever bytes a segment holds, the check answers, and whatever it accepts
        /// parses without a panic.
        #[test]
        fn corrupt_records_are_refused_not_panicked_on(
            b in crate::fuzz::corrupted(encoded())
        ) {
            if check_record(&b).is_some() {
                let view = RecordView::parse(&b);
                let _ = view.headers();
                let _ = view.to_raw();
            }
        }
    }
}
