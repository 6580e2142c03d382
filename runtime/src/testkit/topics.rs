//! The driver's input and output topics: typed ends of the in-process broker's topics.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::driver::SyncQuery;
use crate::record::{Headers, RawRecord, Record};
use crate::serde::Serde;

/// Records go into a topology here: Kafka Streams' `TestInputTopic`. Made by
/// [`super::TopologyTestDriver::create_input_topic`].
///
/// Each `pipe_*` call appends one record and processes everything it leads to before
/// it returns. A record piped without a timestamp gets the topic's current time, which
/// then moves on by the topic's auto-advance (zero unless set with
/// [`TestInputTopic::with_time`]); the current time starts at the driver's wall clock.
pub struct TestInputTopic<K, V> {
    query: Rc<RefCell<SyncQuery>>,
    topic: String,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    current_time: Cell<i64>,
    auto_advance: i64,
}

impl<K, V> std::fmt::Debug for TestInputTopic<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestInputTopic")
            .field("topic", &self.topic)
            .field("current_time", &self.current_time.get())
            .field("auto_advance", &self.auto_advance)
            .finish_non_exhaustive()
    }
}

impl<K: 'static, V: 'static> TestInputTopic<K, V> {
    pub(super) fn new(
        query: Rc<RefCell<SyncQuery>>,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Result<Self> {
        let now = {
            let q = query.borrow();
            q.broker().partitions(topic)?;
            q.wall_clock()
        };
        Ok(TestInputTopic {
            query,
            topic: topic.to_string(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            current_time: Cell::new(now),
            auto_advance: 0,
        })
    }

    /// Records piped without a timestamp get `start`, then each the previous one's
    /// time plus `auto_advance` (Kafka's `createInputTopic(.., startTimestamp,
    /// autoAdvance)`).
    pub fn with_time(mut self, start: i64, auto_advance: Duration) -> Self {
        self.current_time.set(start);
        self.auto_advance = i64::try_from(auto_advance.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Moves the topic's current time on by `advance`.
    pub fn advance_time(&self, advance: Duration) {
        let ms = i64::try_from(advance.as_millis()).unwrap_or(i64::MAX);
        self.current_time
            .set(self.current_time.get().saturating_add(ms));
    }

    fn next_time(&self) -> i64 {
        let t = self.current_time.get();
        self.current_time.set(t.saturating_add(self.auto_advance));
        t
    }

    /// Pipes `key` → `value` at the topic's current time.
    pub fn pipe_input(&self, key: impl Into<K>, value: impl Into<V>) -> Result<()> {
        let ts = self.next_time();
        self.pipe_input_at(key, value, ts)
    }

    /// Pipes `key` → `value` with timestamp `timestamp`.
    pub fn pipe_input_at(
        &self,
        key: impl Into<K>,
        value: impl Into<V>,
        timestamp: i64,
    ) -> Result<()> {
        self.pipe_record(Record::new(key.into(), value.into(), timestamp))
    }

    /// Pipes a record with a null key (round robin over the topic's partitions).
    pub fn pipe_value_at(&self, value: impl Into<V>, timestamp: i64) -> Result<()> {
        let value = self.value_serde.serialize(&value.into())?;
        self.pipe_raw(None, value, timestamp, Headers::new())
    }

    /// Pipes a tombstone (a null value) for `key`: a table deletes the key's row.
    pub fn pipe_tombstone_at(&self, key: impl Into<K>, timestamp: i64) -> Result<()> {
        let key = self.key_serde.serialize(&key.into())?;
        self.pipe_raw(key, None, timestamp, Headers::new())
    }

    /// Pipes each `(key, value)` at the topic's current time, in order.
    pub fn pipe_key_value_list(&self, records: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        for (k, v) in records {
            self.pipe_input(k, v)?;
        }
        Ok(())
    }

    /// Pipes a record: key, value, timestamp and headers.
    pub fn pipe_record(&self, record: Record<K, V>) -> Result<()> {
        let key = self.key_serde.serialize(&record.key)?;
        let value = self.value_serde.serialize(&record.value)?;
        self.pipe_raw(key, value, record.timestamp, record.headers)
    }

    fn pipe_raw(
        &self,
        key: Option<bytes::Bytes>,
        value: Option<bytes::Bytes>,
        timestamp: i64,
        headers: Headers,
    ) -> Result<()> {
        let record = RawRecord {
            key,
            value,
            timestamp,
            headers,
        };
        self.query.borrow_mut().pipe(&self.topic, record)
    }
}

/// A topology's output is read here: Kafka Streams' `TestOutputTopic`. Made by
/// [`super::TopologyTestDriver::create_output_topic`]; reads each record once, from
/// the first one written, partition by partition.
///
/// A null key or value is read through the serde (use `OptionSerde`, `Option<V>`, for a
/// topic that carries tombstones).
pub struct TestOutputTopic<K, V> {
    query: Rc<RefCell<SyncQuery>>,
    topic: String,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    /// Next offset to read, per partition.
    next: RefCell<Vec<i64>>,
}

impl<K, V> std::fmt::Debug for TestOutputTopic<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOutputTopic")
            .field("topic", &self.topic)
            .field("next", &self.next.borrow())
            .finish_non_exhaustive()
    }
}

impl<K: 'static, V: 'static> TestOutputTopic<K, V> {
    pub(super) fn new(
        query: Rc<RefCell<SyncQuery>>,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Result<Self> {
        let partitions = query.borrow().broker().partitions(topic)?;
        Ok(TestOutputTopic {
            query,
            topic: topic.to_string(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            next: RefCell::new(vec![0; partitions as usize]),
        })
    }

    /// Records written and not read yet.
    pub fn queue_size(&self) -> Result<usize> {
        let q = self.query.borrow();
        let mut n = 0;
        for (p, next) in self.next.borrow().iter().enumerate() {
            let end = q.broker().end_offset(&self.topic, p as u32)?;
            n += usize::try_from(end - next).unwrap_or(0);
        }
        Ok(n)
    }

    /// True if every record written has been read.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.queue_size()? == 0)
    }

    /// Reads the next record; [`Error::NoRecord`] if there is none.
    pub fn read_record(&self) -> Result<Record<K, V>> {
        let q = self.query.borrow();
        let mut next = self.next.borrow_mut();
        for (p, offset) in next.iter_mut().enumerate() {
            let fetched = q
                .broker()
                .fetch(&self.topic, p as u32, *offset, 1, usize::MAX)?;
            if let Some((at, raw)) = fetched.into_iter().next() {
                *offset = at + 1;
                return Ok(Record {
                    key: self.key_serde.deserialize(raw.key.as_deref())?,
                    value: self.value_serde.deserialize(raw.value.as_deref())?,
                    timestamp: raw.timestamp,
                    headers: raw.headers,
                });
            }
        }
        Err(Error::NoRecord(self.topic.clone()))
    }

    /// Reads the next record's value.
    pub fn read_value(&self) -> Result<V> {
        self.read_record().map(|r| r.value)
    }

    /// Reads the next record's key and value.
    pub fn read_key_value(&self) -> Result<(K, V)> {
        self.read_record().map(|r| (r.key, r.value))
    }

    /// Reads every record left.
    pub fn read_records_to_list(&self) -> Result<Vec<Record<K, V>>> {
        let mut out = Vec::new();
        while !self.is_empty()? {
            out.push(self.read_record()?);
        }
        Ok(out)
    }

    /// Reads every record left, as (key, value).
    pub fn read_key_values_to_list(&self) -> Result<Vec<(K, V)>> {
        Ok(self
            .read_records_to_list()?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect())
    }

    /// Reads every record left, as values.
    pub fn read_values_to_list(&self) -> Result<Vec<V>> {
        Ok(self
            .read_records_to_list()?
            .into_iter()
            .map(|r| r.value)
            .collect())
    }

    /// Reads every record left into a map: each key's latest value.
    pub fn read_key_values_to_map(&self) -> Result<HashMap<K, V>>
    where
        K: Eq + Hash,
    {
        Ok(self
            .read_records_to_list()?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect())
    }
}
