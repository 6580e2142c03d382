//! A stream-table join with a grace period (KIP-923, Kafka Streams'
//! `Joined#withGracePeriod`): stream records wait in a buffer until stream time has
//! passed them by the grace period, then go out in timestamp order, each joined with
//! the versioned table's row *as of its own timestamp*. Records already older than
//! `stream time − grace` when they arrive are joined at once.
//!
//! Why a buffer store rather than memory: the buffer holds up to a grace period of the
//! stream, which can be large; as a store it is bounded with every other store (RocksDB
//! under the shared cache, or the in-memory zone), has a changelog on Kafka, and
//! survives a restart.

use std::sync::Arc;

use weir_runtime::serde::{Bytes, Serde};
use weir_runtime::{Data, Error, Headers, Processor, ProcessorContext, Record, Result};

use crate::table::TableStore;

/// Joins a stream record's value with the row as of its timestamp (`None` for no row);
/// `None` for no result.
pub(crate) type AsOfJoiner<V, VT, VR> = Arc<dyn Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync>;

/// The join processor with its buffer.
pub(crate) struct GraceJoin<K, V, VT, VR> {
    pub(crate) table: TableStore,
    pub(crate) buffer: String,
    pub(crate) grace_ms: i64,
    pub(crate) joiner: AsOfJoiner<V, VT, VR>,
    pub(crate) key_serde: Arc<dyn Serde<K>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    /// The largest timestamp of the stream side seen (`i64::MIN`: none).
    pub(crate) stream_time: i64,
    /// Numbers buffered records of equal timestamps in arrival order.
    pub(crate) seq: u64,
    /// A lower bound of the earliest buffered timestamp (`i64::MAX`: nothing
    /// buffered), so that a record that cannot release anything does not read the
    /// buffer.
    pub(crate) min_buffered: i64,
}

/// Buffer key: timestamp (sign bit flipped, so byte order is time order), arrival.
fn buffer_key(ts: i64, seq: u64) -> Bytes {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    Bytes::from(k)
}

fn parse_key(k: &[u8]) -> Option<(i64, u64)> {
    let ts = (u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let seq = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    Some((ts, seq))
}

/// The timestamp of the first of `entries` (buffer order), `i64::MAX` if none.
fn first_buffered(entries: &[(Bytes, Bytes)]) -> i64 {
    entries
        .first()
        .and_then(|(k, _)| parse_key(k))
        .map_or(i64::MAX, |(ts, _)| ts)
}

fn put_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

fn take_field<'a>(b: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    *b = &b[4..];
    if len == u32::MAX {
        return Some(None);
    }
    let (field, rest) = b.split_at_checked(len as usize)?;
    *b = rest;
    Some(Some(field))
}

/// Buffer value: key, value, then the headers (count, then name and value of each).
fn encode(key: &[u8], value: &[u8], headers: &Headers) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + value.len() + 16);
    put_field(&mut out, Some(key));
    put_field(&mut out, Some(value));
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for h in headers.iter() {
        put_field(&mut out, Some(h.key.as_bytes()));
        put_field(&mut out, h.value.as_deref());
    }
    Bytes::from(out)
}

type Decoded<'a> = (&'a [u8], &'a [u8], Headers);

fn decode(mut b: &[u8]) -> Option<Decoded<'_>> {
    let key = take_field(&mut b)??;
    let value = take_field(&mut b)??;
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    b = &b[4..];
    let mut headers = Headers::new();
    for _ in 0..n {
        let name = std::str::from_utf8(take_field(&mut b)??).ok()?.to_string();
        let value = take_field(&mut b)?.map(|v| v.to_vec());
        headers.add(name, value);
    }
    Some((key, value, headers))
}

impl<K: Data, V: Data, VT: Data, VR: Data> GraceJoin<K, V, VT, VR> {
    /// Joins one record with the row as of its timestamp and forwards the result.
    fn join(&self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        let row = ctx
            .versioned_store::<K, VT>(&self.table.name)?
            .get_as_of(&r.key, r.timestamp)?;
        if let Some(out) = (self.joiner)(&r.value, row.as_ref().map(|v| &v.value)) {
            ctx.forward(Record::new(r.key, out, r.timestamp).with_headers(r.headers))?;
        }
        Ok(())
    }

    /// Joins and removes, in (timestamp, arrival) order, the buffered records that
    /// stream time has passed by the grace period.
    fn release(&mut self, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        let horizon = self.stream_time.saturating_sub(self.grace_ms);
        if self.min_buffered > horizon {
            return Ok(());
        }
        let mut buffer = ctx.store::<Bytes, Bytes>(&self.buffer)?;
        // Keys sort by (timestamp, arrival): everything due is below `horizon + 1`.
        let (from, to) = (
            buffer_key(i64::MIN, 0),
            buffer_key(horizon.saturating_add(1), 0),
        );
        let mut due = Vec::new();
        for (k, v) in buffer.range(&from, &to)? {
            let Some((ts, _)) = parse_key(&k) else {
                return Err(Error::Serde(format!(
                    "grace-period join buffer '{}': a key of {} bytes is not (timestamp, arrival)",
                    self.buffer,
                    k.len()
                )));
            };
            due.push((k, ts, v));
        }
        for (k, _, _) in &due {
            buffer.delete(k)?;
        }
        // What is left is later than the horizon: a lower bound of its earliest.
        self.min_buffered = horizon.saturating_add(1);
        for (_, ts, v) in due {
            let (key, value, headers) = decode(&v).ok_or_else(|| {
                Error::Serde(format!(
                    "grace-period join buffer '{}': a record of {} bytes is corrupt",
                    self.buffer,
                    v.len()
                ))
            })?;
            let key = self.key_serde.deserialize(Some(key))?;
            let value = self.value_serde.deserialize(Some(value))?;
            self.join(Record::new(key, value, ts).with_headers(headers), ctx)?;
        }
        Ok(())
    }
}

impl<K: Data, V: Data, VT: Data, VR: Data> Processor<K, V, K, VR> for GraceJoin<K, V, VT, VR> {
    fn process(&mut self, r: Record<K, V>, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        self.stream_time = self.stream_time.max(r.timestamp);
        if r.timestamp <= self.stream_time.saturating_sub(self.grace_ms) {
            // Already past the grace period (or exactly at it): nothing older can
            // still be waiting, so it is joined at once, as Kafka does.
            self.release(ctx)?;
            return self.join(r, ctx);
        }
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        if !self.key_serde.serialize_into(&r.key, &mut kb)? {
            return Ok(()); // a null key joins nothing (Kafka drops it)
        }
        self.value_serde.serialize_into(&r.value, &mut vb)?;
        let key = buffer_key(r.timestamp, self.seq);
        self.seq += 1;
        ctx.store::<Bytes, Bytes>(&self.buffer)?
            .put(&key, &encode(&kb, &vb, &r.headers))?;
        self.min_buffered = self.min_buffered.min(r.timestamp);
        self.release(ctx)
    }

    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<()> {
        // After a restart: go on numbering after every buffered record (the largest
        // number, not the last entry's: entries sort by time, and a later arrival may
        // have an earlier timestamp), and take the stream time the buffer proves (its
        // latest record).
        let all = ctx.store::<Bytes, Bytes>(&self.buffer)?.all()?;
        for (ts, seq) in all.iter().filter_map(|(k, _)| parse_key(k)) {
            self.stream_time = self.stream_time.max(ts);
            self.seq = self.seq.max(seq + 1);
        }
        self.min_buffered = first_buffered(&all);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_keys_sort_by_time_then_arrival_and_values_round_trip() {
        let keys: Vec<Bytes> = [(-5, 9), (-5, 10), (0, 0), (7, 1), (7, 2)]
            .iter()
            .map(|&(t, s)| buffer_key(t, s))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(parse_key(&keys[1]), Some((-5, 10)));
        let mut h = Headers::new();
        h.add("trace", Some(b"abc".to_vec()));
        h.add("empty", None::<Vec<u8>>);
        let v = encode(b"k1", b"value", &h);
        let (k, val, headers) = decode(&v).unwrap();
        assert_eq!((k, val), (&b"k1"[..], &b"value"[..]));
        assert_eq!(headers.len(), 2);
        assert_eq!(
            headers.last("trace").unwrap().value.as_deref(),
            Some(&b"abc"[..])
        );
        assert!(
            decode(&v[..v.len() - 1]).is_none(),
            "a truncated record is refused"
        );
    }
}
