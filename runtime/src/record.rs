//! Records as user code sees them, and as the broker and the queues carry them.
//!
//! User code works with typed [`Record<K, V>`] (key, value, timestamp, headers, the same
//! four fields as Kafka Streams' `Record`). Below the source and above the sink, records
//! are [`RawRecord`]: `Option<Bytes>` key and value, so that a record can be cloned,
//! queued and fetched without copying its payload.

use bytes::Bytes;

/// One record header. Kafka allows repeated keys and null values; so does weir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value (`None` is Kafka's null).
    pub value: Option<Bytes>,
}

/// The headers of a record, in order. Empty headers allocate nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header (keys may repeat, as in Kafka).
    pub fn add(&mut self, key: impl Into<String>, value: Option<impl Into<Bytes>>) -> &mut Self {
        self.0.push(Header {
            key: key.into(),
            value: value.map(Into::into),
        });
        self
    }

    /// The last header with this key, as Kafka's `lastHeader`.
    pub fn last(&self, key: &str) -> Option<&Header> {
        self.0.iter().rev().find(|h| h.key == key)
    }

    /// Removes every header with this key.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|h| h.key != key);
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes these headers take, for queue and memory accounting.
    pub fn size_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 16)
            .sum()
    }
}

/// A typed record: what processors receive and forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Headers, carried through every operator unless one changes them.
    pub headers: Headers,
}

impl<K, V> Record<K, V> {
    /// A record with no headers.
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Record {
            key,
            value,
            timestamp,
            headers: Headers::new(),
        }
    }

    /// The same record with another key (and key type).
    pub fn with_key<K2>(self, key: K2) -> Record<K2, V> {
        Record {
            key,
            value: self.value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }

    /// The same record with another value (and value type).
    pub fn with_value<V2>(self, value: V2) -> Record<K, V2> {
        Record {
            key: self.key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }

    /// The same record with another timestamp.
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The same record with other headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }
}

/// A record as bytes: what the broker stores and the partition queues carry.
pub type RawRecord = Record<Option<Bytes>, Option<Bytes>>;

/// Fixed per-record overhead counted in byte accounting, on top of payload bytes.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 64;

impl RawRecord {
    /// Bytes this record is charged in queues: key + value + headers + fixed overhead.
    pub fn size_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.headers.size_bytes()
            + RECORD_OVERHEAD_BYTES
    }
}

/// Where the record being processed came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Source topic.
    pub topic: std::sync::Arc<str>,
    /// Source partition.
    pub partition: u32,
    /// Offset in that partition.
    pub offset: i64,
}

/// A record read back from a topic, with its coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord<K, V> {
    /// Topic it was read from.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// The record.
    pub record: Record<K, V>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
