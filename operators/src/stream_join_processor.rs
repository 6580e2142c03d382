//! The processor of a stream-stream join (Kafka Streams' `KStreamKStreamJoin`): both
//! sides tagged into one processor, their window stores, and the store of records still
//! waiting for a partner. The DSL that builds it is `stream_join.rs`.

use std::sync::Arc;

use weir_runtime::serde::{Bytes, Serde};
use weir_runtime::{Data, Processor, ProcessorContext, Record, Result};

use crate::stream_join::JoinWindows;

/// A record of either side, as the join's one processor receives it.
#[derive(Clone)]
pub(crate) enum Side<V1, V2> {
    Left(V1),
    Right(V2),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Inner,
    Left,
    Outer,
}

pub(crate) type Joiner<V1, V2, VR> = Arc<dyn Fn(Option<&V1>, Option<&V2>) -> VR + Send + Sync>;

/// Tags a record with its side of the join.
pub(crate) struct Tag<const LEFT: bool>;

impl<K: Data, V1: Data, V2: Data> Processor<K, V1, K, Side<V1, V2>> for Tag<true> {
    fn process(
        &mut self,
        r: Record<K, V1>,
        ctx: &mut ProcessorContext<'_, K, Side<V1, V2>>,
    ) -> Result<()> {
        let side = Side::Left(r.value.clone());
        ctx.forward(r.with_value(side))
    }
}

impl<K: Data, V1: Data, V2: Data> Processor<K, V2, K, Side<V1, V2>> for Tag<false> {
    fn process(
        &mut self,
        r: Record<K, V2>,
        ctx: &mut ProcessorContext<'_, K, Side<V1, V2>>,
    ) -> Result<()> {
        let side = Side::Right(r.value.clone());
        ctx.forward(r.with_value(side))
    }
}

/// The join: both sides' records, one shared stream time.
pub(crate) struct StreamStreamJoin<K, V1, V2, VR> {
    pub(crate) left_store: String,
    pub(crate) right_store: String,
    pub(crate) outer_store: Option<String>,
    pub(crate) kind: Kind,
    pub(crate) windows: JoinWindows,
    pub(crate) joiner: Joiner<V1, V2, VR>,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) left_serde: Arc<dyn Serde<V1>>,
    pub(crate) right_serde: Arc<dyn Serde<V2>>,
    /// The largest timestamp of either side.
    pub(crate) stream_time: i64,
    /// The earliest timestamp waiting in the outer store (`i64::MAX`: none known).
    pub(crate) min_pending: i64,
    /// Numbers waiting records in arrival order (ties of timestamp, side and key).
    pub(crate) arrival: u64,
}

/// Key of a waiting record: timestamp (sign bit flipped), side (0 right, 1 left, as
/// Kafka's `TimestampedKeyAndJoinSide` sorts), key length, key, arrival.
fn pending_prefix(ts: i64, left: bool, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + 1 + 4 + key.len() + 8);
    k.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
    k.push(u8::from(left));
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn parse_pending(k: &[u8]) -> Option<(i64, bool, &[u8])> {
    let ts = (u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let left = *k.get(8)? == 1;
    let len = u32::from_be_bytes(k.get(9..13)?.try_into().ok()?) as usize;
    Some((ts, left, k.get(13..13 + len)?))
}

/// The arrival number at the end of a waiting record's key.
fn parse_arrival(k: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(k.get(9..13)?.try_into().ok()?) as usize;
    Some(u64::from_be_bytes(
        k.get(13 + len..13 + len + 8)?.try_into().ok()?,
    ))
}

impl<K: Data, V1: Data, V2: Data, VR: Data> StreamStreamJoin<K, V1, V2, VR> {
    fn key_bytes(&self, key: &K) -> Result<Option<Vec<u8>>> {
        let mut b = Vec::new();
        Ok(self.key_serde.serialize_into(key, &mut b)?.then_some(b))
    }

    /// Emits (and removes) the waiting records whose window has closed, by
    /// (timestamp, side, key, arrival).
    fn emit_closed(&mut self, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        let Some(outer) = self.outer_store.clone() else {
            return Ok(());
        };
        let w = self.windows;
        let reach = w.after.min(w.before).saturating_add(w.grace);
        if self.min_pending.saturating_add(reach) >= self.stream_time {
            return Ok(());
        }
        let mut store = ctx.store::<Bytes, Bytes>(&outer)?;
        let mut due = Vec::new();
        let mut min = i64::MAX;
        for (k, v) in store.all()? {
            let Some((ts, left, key)) = parse_pending(&k) else {
                continue;
            };
            let look = if left { w.after } else { w.before };
            if ts.saturating_add(look).saturating_add(w.grace) >= self.stream_time {
                min = min.min(ts);
                if ts.saturating_add(reach) >= self.stream_time {
                    break;
                }
                continue;
            }
            due.push((ts, left, key.to_vec(), k.clone(), v));
        }
        self.min_pending = min;
        for (_, _, _, k, _) in &due {
            store.delete(k)?;
        }
        for (ts, left, key, _, v) in due {
            let key = self.key_serde.deserialize(Some(&key))?;
            let out = if left {
                let l = self.left_serde.deserialize(Some(&v))?;
                (self.joiner)(Some(&l), None)
            } else {
                let r = self.right_serde.deserialize(Some(&v))?;
                (self.joiner)(None, Some(&r))
            };
            ctx.forward(Record::new(key, out, ts))?;
        }
        Ok(())
    }
}

impl<K: Data, V1: Data, V2: Data, VR: Data> Processor<K, Side<V1, V2>, K, VR>
    for StreamStreamJoin<K, V1, V2, VR>
{
    fn process(
        &mut self,
        r: Record<K, Side<V1, V2>>,
        ctx: &mut ProcessorContext<'_, K, VR>,
    ) -> Result<()> {
        let ts = r.timestamp;
        let Some(kb) = self.key_bytes(&r.key)? else {
            return Ok(()); // a null key joins nothing
        };
        self.stream_time = self.stream_time.max(ts);
        if ts == self.stream_time {
            self.emit_closed(ctx)?;
        }
        let w = self.windows;
        let is_left = matches!(r.value, Side::Left(_));
        // This side's window: matched against later records of the other side.
        let (this_store, other_store, from, to) = if is_left {
            (
                &self.left_store,
                &self.right_store,
                ts - w.before,
                ts + w.after,
            )
        } else {
            (
                &self.right_store,
                &self.left_store,
                ts - w.after,
                ts + w.before,
            )
        };
        let (from, to) = (from.max(0), to.max(0));
        let (this_store, other_store) = (this_store.clone(), other_store.clone());
        let mut matched = Vec::new();
        match &r.value {
            // Both stores retain duplicates: the record is a new entry of its own
            // store, written without reading its window first.
            Side::Left(v) => {
                let mut others = ctx.window_store::<K, V2>(&other_store)?;
                for (window, o) in others.fetch_range(&r.key, from, to)? {
                    matched.push((window.start, (self.joiner)(Some(v), Some(&o))));
                }
                others.expire(self.stream_time)?;
                let mut own = ctx.window_store::<K, V1>(&this_store)?;
                own.put(&r.key, ts, Some(v))?;
                own.expire(self.stream_time)?;
            }
            Side::Right(v) => {
                let mut others = ctx.window_store::<K, V1>(&other_store)?;
                for (window, o) in others.fetch_range(&r.key, from, to)? {
                    matched.push((window.start, (self.joiner)(Some(&o), Some(v))));
                }
                others.expire(self.stream_time)?;
                let mut own = ctx.window_store::<K, V2>(&this_store)?;
                own.put(&r.key, ts, Some(v))?;
                own.expire(self.stream_time)?;
            }
        }
        if let Some(outer) = self.outer_store.clone() {
            let mut store = ctx.store::<Bytes, Bytes>(&outer)?;
            // The partners found are no longer waiting.
            for (other_ts, _) in &matched {
                let prefix = pending_prefix(*other_ts, !is_left, &kb);
                for (k, _) in store.prefix_scan(&prefix)? {
                    store.delete(&k)?;
                }
            }
            let waits = matched.is_empty()
                && match self.kind {
                    Kind::Inner => false,
                    Kind::Left => is_left,
                    Kind::Outer => true,
                };
            if waits {
                if to < self.stream_time {
                    // Its window closed already (an out-of-order record): out at once.
                    let out = match &r.value {
                        Side::Left(v) => (self.joiner)(Some(v), None),
                        Side::Right(v) => (self.joiner)(None, Some(v)),
                    };
                    ctx.forward(
                        Record::new(r.key.clone(), out, ts).with_headers(r.headers.clone()),
                    )?;
                } else {
                    let mut key = pending_prefix(ts, is_left, &kb);
                    key.extend_from_slice(&self.arrival.to_be_bytes());
                    self.arrival += 1;
                    let mut value = Vec::new();
                    match &r.value {
                        Side::Left(v) => self.left_serde.serialize_into(v, &mut value)?,
                        Side::Right(v) => self.right_serde.serialize_into(v, &mut value)?,
                    };
                    store.put(&Bytes::from(key), &Bytes::from(value))?;
                    self.min_pending = self.min_pending.min(ts);
                }
            }
        }
        let Record { key, headers, .. } = r;
        for (other_ts, out) in matched {
            ctx.forward(
                Record::new(key.clone(), out, ts.max(other_ts)).with_headers(headers.clone()),
            )?;
        }
        Ok(())
    }

    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        // After a restart the waiting records' earliest time is unknown: look. New
        // arrivals are numbered after every waiting record, so one with the timestamp,
        // side and key of a waiting record does not take its place.
        if let Some(outer) = self.outer_store.clone() {
            let mut store = ctx.store::<Bytes, Bytes>(&outer)?;
            let all = store.all()?;
            self.min_pending = all
                .first()
                .and_then(|(k, _)| parse_pending(k).map(|(ts, _, _)| ts))
                .unwrap_or(i64::MAX);
            for (k, _) in &all {
                if let Some(arrival) = parse_arrival(k) {
                    self.arrival = self.arrival.max(arrival + 1);
                }
            }
        }
        Ok(())
    }
}
