//! `KTable::suppress`: hold a table's updates back and emit one per key later, as
//! Kafka Streams' `suppress`.
//!
//! - [`Suppressed::until_window_closes`]: exactly one final result per window, when
//!   the operator's observed stream time passes window end + grace.
//! - [`Suppressed::until_time_limit`]: each key's latest value once stream time passes
//!   its first buffering time + the limit (rate limiting).
//!
//! Each operator buffers in a [`SuppressionBuffer`]: bounded by its [`BufferConfig`]
//! (per task, as in Kafka Streams) and by the runtime's one suppression budget, and
//! persisted to its own store at every commit so a restart loses nothing. When full it
//! emits early, spills to disk, or shuts its query down cleanly (the query fails with
//! [`weir_runtime::Error::BufferFull`] after committing everything it processed; the
//! other queries keep running; a restart with a larger bound goes on from there with
//! no final result lost or repeated).

use std::sync::Arc;
use std::time::Duration;

use weir_runtime::internals::InternalContext;
use weir_runtime::internals::suppress::{BufferBounds, Buffered, FullPolicy, SuppressionBuffer};
use weir_runtime::serde::{BytesSerde, Serde};
use weir_runtime::{Change, Data, Error, Processor, ProcessorContext, Record, Result, StoreSpec};

use crate::table::{KTable, TableMeta};

/// How much a suppression operator may buffer, and what it does when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct BufferConfig {
    bounds: BufferBounds,
    policy: Option<FullPolicy>,
}

impl BufferConfig {
    /// At most `bytes` of buffered keys and values (plus per-entry overhead).
    pub fn max_bytes(bytes: usize) -> Self {
        Self::unbounded().with_max_bytes(bytes)
    }

    /// At most `records` buffered keys.
    pub fn max_records(records: usize) -> Self {
        Self::unbounded().with_max_records(records)
    }

    /// No bound of its own: only the runtime's suppression budget (shared by every
    /// buffer) limits it.
    pub fn unbounded() -> Self {
        BufferConfig {
            bounds: BufferBounds::default(),
            policy: None,
        }
    }

    /// Adds a byte bound.
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.bounds.max_bytes = Some(bytes);
        self
    }

    /// Adds a record bound.
    pub fn with_max_records(mut self, records: usize) -> Self {
        self.bounds.max_records = Some(records);
        self
    }

    /// When full, emit entries early (only for `until_time_limit`), as Kafka Streams
    /// does: the arriving record is buffered first, then the entries with the
    /// smallest (buffer time, serialized key) go out until the buffer fits its bound,
    /// which may be the arriving record itself. A key's buffer time is when it was
    /// first buffered.
    pub fn emit_early_when_full(mut self) -> Self {
        self.policy = Some(FullPolicy::EmitEarly);
        self
    }

    /// When full, shut the query down cleanly (the default for `until_window_closes`).
    pub fn shut_down_when_full(mut self) -> Self {
        self.policy = Some(FullPolicy::ShutDown);
        self
    }

    /// When full, move the oldest entries to the operator's RocksDB store (under the
    /// shared block cache and write buffer bound); they are emitted from there on time.
    pub fn spill_to_disk_when_full(mut self) -> Self {
        self.policy = Some(FullPolicy::SpillToDisk);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    TimeLimit(i64),
    WindowCloses,
}

/// What `KTable::suppress` holds back, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct Suppressed {
    until: Until,
    buffer: BufferConfig,
    name: Option<String>,
}

impl Suppressed {
    /// Each key's latest value, once stream time passes its first buffering time plus
    /// `limit`. Full buffers emit early unless told otherwise.
    pub fn until_time_limit(limit: Duration, buffer: BufferConfig) -> Self {
        Suppressed {
            until: Until::TimeLimit(i64::try_from(limit.as_millis()).unwrap_or(i64::MAX)),
            buffer,
            name: None,
        }
    }

    /// One final result per window of a windowed table, once its window closes. Full
    /// buffers shut the query down unless told to spill (emitting early would break
    /// "one final result", so it is refused).
    ///
    /// When a window closes: a time window once `end + grace <= stream time` (its end
    /// is exclusive), as in Kafka Streams. A sliding window includes its end, and a
    /// session can still grow while a record is within its gap: weir emits them once
    /// `end + grace < stream time` and `end + gap + grace < stream time`. Kafka Streams
    /// emits both at `end + grace <= stream time` and may then emit a second "final"
    /// result for the same window when an on-time record arrives at its inclusive end
    /// (or joins the session); weir's rule keeps exactly one. Pinned by
    /// `sliding_final_results_wait_past_the_inclusive_end_unlike_kafka_streams`
    /// (`operators/tests/windows.rs`).
    pub fn until_window_closes(buffer: BufferConfig) -> Self {
        Suppressed {
            until: Until::WindowCloses,
            buffer,
            name: None,
        }
    }

    /// Names the operator (and its store, `<name>-store`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// See [`BufferConfig::emit_early_when_full`].
    pub fn emit_early_when_full(mut self) -> Self {
        self.buffer = self.buffer.emit_early_when_full();
        self
    }

    /// See [`BufferConfig::shut_down_when_full`].
    pub fn shut_down_when_full(mut self) -> Self {
        self.buffer = self.buffer.shut_down_when_full();
        self
    }

    /// See [`BufferConfig::spill_to_disk_when_full`].
    pub fn spill_to_disk_when_full(mut self) -> Self {
        self.buffer = self.buffer.spill_to_disk_when_full();
        self
    }

    fn policy(&self) -> FullPolicy {
        self.buffer.policy.unwrap_or(match self.until {
            Until::TimeLimit(_) => FullPolicy::EmitEarly,
            Until::WindowCloses => FullPolicy::ShutDown,
        })
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// Holds updates back as `suppressed` says. The table's serdes come from its store
    /// (aggregations and windowed aggregations have them); `until_window_closes` needs a
    /// windowed table.
    ///
    /// The buffer is bounded by its own [`BufferConfig`] and by the runtime's one
    /// suppression budget; when full it emits early, spills to disk, or shuts its query
    /// down cleanly, as configured.
    ///
    /// # Examples
    ///
    /// One final count per user and minute, emitted once the window closes:
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::prelude::*;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream::<String, String>("clicks")
    ///     .group_by_key()
    ///     .windowed_by(TimeWindows::of_size_with_no_grace(Duration::from_secs(60))?)
    ///     .count()
    ///     .suppress(Suppressed::until_window_closes(
    ///         BufferConfig::max_bytes(16 << 20).shut_down_when_full(),
    ///     ))
    ///     .to_stream()
    ///     .to("final-counts");
    /// # Ok(())
    /// # }
    /// ```
    pub fn suppress(&self, suppressed: Suppressed) -> KTable<K, V> {
        let builder = self.changes.builder.clone();
        let policy = suppressed.policy();
        let mut problems = Vec::new();
        let delay = match suppressed.until {
            Until::TimeLimit(ms) if ms < 0 => {
                problems.push("the suppression time limit must not be negative".to_string());
                0
            }
            Until::TimeLimit(ms) => ms,
            Until::WindowCloses => {
                if self.meta.grace_ms.is_none() {
                    problems.push(
                        "until_window_closes needs a windowed table (from windowed_by(...).count() / reduce / aggregate)".into(),
                    );
                }
                if policy == FullPolicy::EmitEarly {
                    problems.push(
                        "until_window_closes cannot emit early when full (it promises one final result per window): use shut_down_when_full or spill_to_disk_when_full".into(),
                    );
                }
                self.meta.grace_ms.unwrap_or(0)
            }
        };
        let (Some(key_serde), Some(value_serde)) =
            (self.meta.key_serde.clone(), self.meta.value_serde.clone())
        else {
            problems.push(
                "suppress needs the table's serdes: suppress a table that comes straight from an aggregation or a filter of one (map_values drops the value serde)".into(),
            );
            let mut inner = builder.borrow_mut();
            for p in problems {
                inner.check::<()>(Err(Error::Topology(p)));
            }
            return KTable::new(self.changes.clone(), self.send_old.clone());
        };
        let node = match suppressed.name.clone() {
            Some(n) => n,
            None => builder.borrow_mut().next_name("KTABLE-SUPPRESS"),
        };
        let store = format!("{node}-store");
        {
            let mut inner = builder.borrow_mut();
            for p in problems {
                inner.check::<()>(Err(Error::Topology(p)));
            }
        }
        let bounds = suppressed.buffer.bounds;
        let final_results = suppressed.until == Until::WindowCloses;
        let (ks, vs, st) = (key_serde.clone(), value_serde.clone(), store.clone());
        let changes = self
            .changes
            .add_named(node.clone(), move || SuppressProcessor {
                store: st.clone(),
                bounds,
                policy,
                delay,
                final_results,
                key_serde: ks.clone(),
                value_serde: vs.clone(),
                buffer: None,
                shut_down: false,
                gauges: None,
            });
        builder.borrow_mut().add_store(
            StoreSpec::<Vec<u8>, Vec<u8>>::new(store, BytesSerde, BytesSerde).without_caching(),
            &node,
        );
        KTable::new(changes, self.send_old.clone()).with_meta(TableMeta {
            key_serde: Some(key_serde),
            value_serde: Some(value_serde),
            grace_ms: self.meta.grace_ms,
            store: None,
        })
    }
}

/// `Change<V>` as buffer payload: a flag byte (bit 0: old present, bit 1: new
/// present), the old value's length (4 bytes) and bytes, then the new value's bytes.
fn encode_change<V: 'static>(serde: &dyn Serde<V>, c: &Change<V>) -> Result<Vec<u8>> {
    let mut out = vec![0u8; 5];
    let mut flags = 0u8;
    if let Some(old) = &c.old
        && serde.serialize_into(old, &mut out)?
    {
        flags |= 1;
    }
    let old_len = (out.len() - 5) as u32;
    out[1..5].copy_from_slice(&old_len.to_be_bytes());
    if let Some(new) = &c.new
        && serde.serialize_into(new, &mut out)?
    {
        flags |= 2;
    }
    out[0] = flags;
    Ok(out)
}

fn decode_change<V: 'static>(serde: &dyn Serde<V>, b: &[u8]) -> Result<Change<V>> {
    if b.len() < 5 {
        return Err(Error::Serde(
            "a suppressed change is shorter than its header".into(),
        ));
    }
    let old_len = u32::from_be_bytes(b[1..5].try_into().expect("4 bytes")) as usize;
    if b.len() < 5 + old_len {
        return Err(Error::Serde("a suppressed change is truncated".into()));
    }
    let old = if b[0] & 1 != 0 {
        Some(serde.deserialize(Some(&b[5..5 + old_len]))?)
    } else {
        None
    };
    let new = if b[0] & 2 != 0 {
        Some(serde.deserialize(Some(&b[5 + old_len..]))?)
    } else {
        None
    };
    Ok(Change { new, old })
}

/// The window end of a serialized `Windowed<K>` key (`WindowedSerde`'s layout).
fn window_end(key: &[u8]) -> Result<i64> {
    let tail = key
        .len()
        .checked_sub(8)
        .map(|i| &key[i..])
        .ok_or_else(|| Error::Serde("a windowed key is shorter than its window".into()))?;
    Ok(i64::from_be_bytes(tail.try_into().expect("8 bytes")))
}

struct Gauges {
    bytes: metrics::Gauge,
    records: metrics::Gauge,
}

struct SuppressProcessor<K, V> {
    store: String,
    bounds: BufferBounds,
    policy: FullPolicy,
    /// Time limit, or grace for final results.
    delay: i64,
    /// Final results: buffer time is the window end (the last 8 bytes of a windowed
    /// key); otherwise the first buffering time.
    final_results: bool,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    buffer: Option<SuppressionBuffer>,
    shut_down: bool,
    gauges: Option<Gauges>,
}

impl<K: Data, V: Data> SuppressProcessor<K, V> {
    fn emit(
        &self,
        entries: Vec<Buffered>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        for e in entries {
            let change = decode_change(&*self.value_serde, &e.payload)?;
            // A final result that is a delete (a merged-away session) says nothing.
            if self.final_results && change.new.is_none() {
                continue;
            }
            let key = self.key_serde.deserialize(Some(&e.key))?;
            ctx.forward(Record::new(key, change, e.record_ts))?;
        }
        Ok(())
    }

    fn publish(&self) {
        if let (Some(g), Some(b)) = (&self.gauges, &self.buffer) {
            g.bytes.set(b.bytes() as f64);
            g.records.set(b.len() as f64);
        }
    }
}

impl<K: Data, V: Data> Processor<K, Change<V>, K, Change<V>> for SuppressProcessor<K, V> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        let mut buffer = SuppressionBuffer::new(
            ctx.processor_name(),
            self.bounds,
            self.policy,
            ctx.suppression_budget(),
        );
        buffer.restore(ctx.raw_store(&self.store)?)?;
        self.buffer = Some(buffer);
        let labels = [
            ("query", ctx.query_name().to_string()),
            ("operator", ctx.processor_name().to_string()),
            ("task", ctx.task_id().to_string()),
        ];
        self.gauges = Some(Gauges {
            bytes: metrics::gauge!(weir_runtime::metrics::SUPPRESSION_BUFFER_BYTES, &labels),
            records: metrics::gauge!(weir_runtime::metrics::SUPPRESSION_BUFFER_RECORDS, &labels),
        });
        Ok(())
    }

    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
    ) -> Result<()> {
        let mut key = Vec::with_capacity(48);
        if !self.key_serde.serialize_into(&r.key, &mut key)? {
            return Err(Error::Serde("suppress cannot buffer a null key".into()));
        }
        let buffer = self.buffer.as_mut().expect("init ran");
        let observed = buffer.observed().max(r.timestamp);
        buffer.set_observed(observed);
        let expiry = observed.saturating_sub(self.delay);
        let store = ctx.raw_store(&self.store)?;
        // What is due goes first, making room; if this key is among it, it goes out
        // with this latest value (as Kafka Streams buffers, then evicts).
        let mut due = buffer.evict_due(store, expiry)?;
        let in_due = due.iter().position(|e| e.key == key);
        let vs = &*self.value_serde;
        // Keep the first buffering time and the value before the first update.
        let (time, old) = match in_due {
            Some(i) => (due[i].time, decode_change(vs, &due[i].payload)?.old),
            None => match buffer.get(store, &key)? {
                Some(p) => (p.time, decode_change(vs, &p.payload)?.old),
                None if self.final_results => (window_end(&key)?, r.value.old.clone()),
                None => (r.timestamp, r.value.old.clone()),
            },
        };
        let payload = encode_change(
            &*self.value_serde,
            &Change {
                new: r.value.new,
                old,
            },
        )?;
        let mut early = Vec::new();
        match in_due {
            Some(i) => {
                due[i].payload = payload;
                due[i].record_ts = r.timestamp;
            }
            None => {
                early = buffer.put(
                    store,
                    Buffered {
                        key,
                        time,
                        record_ts: r.timestamp,
                        payload,
                    },
                )?;
                if time <= expiry {
                    due.extend(buffer.evict_due(store, expiry)?);
                }
            }
        }
        let full = buffer.full().cloned();
        if let Some(e) = full
            && !self.shut_down
        {
            self.shut_down = true;
            ctx.shut_down_query(e);
        }
        self.emit(due, ctx)?;
        self.emit(early, ctx)?;
        self.publish();
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        let store = ctx.raw_store(&self.store)?;
        if let Some(b) = self.buffer.as_mut() {
            b.flush(store)?;
        }
        self.publish();
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        // The buffer's reservation goes back to the runtime's budget.
        self.buffer = None;
        self.publish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::serde::StringSerde;

    #[test]
    fn changes_round_trip_through_the_payload_encoding() {
        let s = StringSerde;
        for c in [
            Change {
                new: Some("n".to_string()),
                old: Some("old".to_string()),
            },
            Change {
                new: None,
                old: Some(String::new()),
            },
            Change {
                new: Some("x".into()),
                old: None,
            },
            Change {
                new: None,
                old: None,
            },
        ] {
            let b = encode_change(&s, &c).unwrap();
            assert_eq!(decode_change(&s, &b).unwrap(), c);
        }
        assert!(decode_change(&s, &[3, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn corrupt_suppressed_changes_are_errors() {
        let s = StringSerde;
        let valid = encode_change(
            &s,
            &Change {
                new: Some("new".to_string()),
                old: Some("old".to_string()),
            },
        )
        .unwrap();
        crate::corruption::each(&valid, |b| {
            let _ = decode_change(&s, b);
            let _ = window_end(b);
        });
    }
}
