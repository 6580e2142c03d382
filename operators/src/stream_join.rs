//! Windowed joins of two streams (Kafka Streams' `KStream#join / leftJoin / outerJoin`
//! with `JoinWindows`, `KStreamKStreamJoin`).
//!
//! Both sides go through one processor (each record tagged with its side), so the two
//! sides share one stream time and one store of records still waiting for a partner,
//! as Kafka Streams' shared time tracker and outer-join store do. Its state, all under
//! the runtime's one memory limit (RocksDB under the shared cache by default):
//!
//! - one window store per side: each key's records by timestamp (several records with
//!   the same key and timestamp kept in arrival order), kept `before + after + grace`;
//! - for left and outer joins, the records without a partner yet, in a key-value store
//!   ordered by (timestamp, side, key, arrival): a record goes downstream with `None`
//!   for its partner only once its window has closed (stream time past `t + after +
//!   grace` for the left side, `t + before + grace` for the right), and a partner that
//!   arrives before then takes it out (Kafka's fix of spurious left/outer results).
//!
//! A left record at `t` matches right records in `[t - before, t + after]`, both ends
//! included; a right record at `t` matches left records in `[t - after, t + before]`.
//! A joined record carries the larger of the two timestamps.

use std::sync::Arc;
use std::time::Duration;

use weir_runtime::serde::{Bytes, BytesSerde, DefaultSerde, Serde};
use weir_runtime::{Data, Error, Processor, ProcessorContext, Record, Result, StoreSpec};

use crate::stream::{ArcSerde, KStream, Repartitioned};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The time bounds of a stream-stream join (Kafka Streams' `JoinWindows`): a left
/// record at `t` joins right records in `[t - before, t + after]`; records are
/// accepted up to `grace` late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a builder does nothing until it is used"]
pub struct JoinWindows {
    before: i64,
    after: i64,
    grace: i64,
}

impl JoinWindows {
    /// Records within `difference` of each other join (before and after alike); a
    /// window closes `grace` after it ends.
    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        JoinWindows {
            before: ms(difference),
            after: ms(difference),
            grace: ms(grace),
        }
    }

    /// Records within `difference` of each other join; no grace.
    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }

    /// How far before a left record right records may be (an asymmetric window).
    pub fn before(mut self, before: Duration) -> Self {
        self.before = ms(before);
        self
    }

    /// How far after a left record right records may be (an asymmetric window).
    pub fn after(mut self, after: Duration) -> Self {
        self.after = ms(after);
        self
    }

    /// How long the join keeps each side's records: `before + after + grace`.
    fn retention(&self) -> i64 {
        self.before
            .saturating_add(self.after)
            .saturating_add(self.grace)
            .max(1)
    }
}

/// The serdes (and a name) of a stream-stream join's stores (Kafka Streams'
/// `StreamJoined`): the key, the left values and the right values.
#[must_use = "a builder does nothing until it is used"]
pub struct StreamJoined<K, V1, V2> {
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V1>>,
    other_value_serde: Arc<dyn Serde<V2>>,
    name: Option<String>,
}

impl<K, V1, V2> StreamJoined<K, V1, V2> {
    /// Explicit serdes.
    pub fn with(
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V1>,
        other_value_serde: impl Serde<V2>,
    ) -> Self {
        StreamJoined {
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            other_value_serde: Arc::new(other_value_serde),
            name: None,
        }
    }

    /// The types' default serdes.
    pub fn defaults() -> Self
    where
        K: DefaultSerde,
        V1: DefaultSerde,
        V2: DefaultSerde,
    {
        Self::with(K::default_serde(), V1::default_serde(), V2::default_serde())
    }

    /// Names the join's stores `<name>-this-join-store`, `<name>-other-join-store` and
    /// `<name>-outer-join-store`, as Kafka Streams does.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl<K, V1, V2> std::fmt::Debug for StreamJoined<K, V1, V2> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamJoined")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A record of either side, as the join's one processor receives it.
#[derive(Clone)]
enum Side<V1, V2> {
    Left(V1),
    Right(V2),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inner,
    Left,
    Outer,
}

type Joiner<V1, V2, VR> = Arc<dyn Fn(Option<&V1>, Option<&V2>) -> VR + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Joins this stream with `other` within `windows` (Kafka Streams'
    /// `KStream#join(KStream, ValueJoiner, JoinWindows, StreamJoined)`; Rust has no
    /// overloading, so the stream-stream forms are named `*_stream`): for each pair of
    /// records with the same key and timestamps within the window, `joiner(left,
    /// right)` goes downstream with the larger timestamp. Both streams must be
    /// co-partitioned; a side whose key changed upstream is repartitioned first
    /// (`<name>-left-repartition`, `<name>-right-repartition`), as Kafka Streams does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// let clicks = builder.stream::<String, String>("clicks");
    /// let views = builder.stream::<String, String>("views");
    /// clicks
    ///     .join_stream(
    ///         &views,
    ///         |click, view| format!("{click} after {view}"),
    ///         JoinWindows::of_time_difference_with_no_grace(Duration::from_secs(5)),
    ///         StreamJoined::defaults(),
    ///     )
    ///     .to("clicked-views");
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// driver.create_input_topic::<String, String>("views")?.pipe_input_at("u1", "home", 1_000)?;
    /// driver.create_input_topic::<String, String>("clicks")?.pipe_input_at("u1", "buy", 4_000)?;
    /// let out = driver.create_output_topic::<String, String>("clicked-views")?;
    /// let r = out.read_record()?;
    /// assert_eq!((r.value.as_str(), r.timestamp), ("buy after home", 4_000));
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_stream<V2: Data, VR: Data, F>(
        &self,
        other: &KStream<K, V2>,
        joiner: F,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR>
    where
        F: Fn(&V, &V2) -> VR + Send + Sync + 'static,
    {
        let joiner: Joiner<V, V2, VR> = Arc::new(move |l, r| match (l, r) {
            (Some(l), Some(r)) => joiner(l, r),
            _ => unreachable!("an inner join joins pairs only"),
        });
        self.stream_join(other, Kind::Inner, joiner, windows, joined)
    }

    /// Left join with `other` within `windows` (Kafka Streams' `KStream#leftJoin`): as
    /// [`KStream::join_stream`], and a left record that found no partner goes downstream
    /// as `joiner(left, None)` once its window has closed.
    pub fn left_join_stream<V2: Data, VR: Data, F>(
        &self,
        other: &KStream<K, V2>,
        joiner: F,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR>
    where
        F: Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
    {
        let joiner: Joiner<V, V2, VR> = Arc::new(move |l, r| match l {
            Some(l) => joiner(l, r),
            None => unreachable!("a left join emits left records only"),
        });
        self.stream_join(other, Kind::Left, joiner, windows, joined)
    }

    /// Outer join with `other` within `windows` (Kafka Streams' `KStream#outerJoin`): as
    /// [`KStream::join_stream`], and a record of either side that found no partner goes
    /// downstream with `None` for the other once its window has closed.
    pub fn outer_join_stream<V2: Data, VR: Data, F>(
        &self,
        other: &KStream<K, V2>,
        joiner: F,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR>
    where
        F: Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
    {
        self.stream_join(other, Kind::Outer, Arc::new(joiner), windows, joined)
    }

    fn stream_join<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        kind: Kind,
        joiner: Joiner<V, V2, VR>,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR> {
        let (base, this_store, other_store, outer_store) = {
            let mut inner = self.builder.borrow_mut();
            let base = joined
                .name
                .clone()
                .unwrap_or_else(|| inner.next_name("KSTREAM-JOIN"));
            (
                base.clone(),
                format!("{base}-this-join-store"),
                format!("{base}-other-join-store"),
                format!("{base}-outer-join-store"),
            )
        };
        // A side whose key changed upstream goes through a repartition topic first
        // (`<name>-left-repartition` / `<name>-right-repartition`, sized like the other
        // side's topic), so equal keys meet.
        let this_side = if self.repartition_required {
            self.repartition_with(
                Repartitioned::with(
                    ArcSerde(joined.key_serde.clone()),
                    ArcSerde(joined.value_serde.clone()),
                )
                .with_name(format!("{base}-left")),
            )
        } else {
            self.clone()
        };
        let other_side = if other.repartition_required {
            other.repartition_with(
                Repartitioned::with(
                    ArcSerde(joined.key_serde.clone()),
                    ArcSerde(joined.other_value_serde.clone()),
                )
                .with_name(format!("{base}-right")),
            )
        } else {
            other.clone()
        };
        let left: KStream<K, Side<V, V2>> = this_side.add("KSTREAM-JOINTHIS", || Tag::<true>);
        let right: KStream<K, Side<V, V2>> = other_side.add("KSTREAM-JOINOTHER", || Tag::<false>);
        let merged = left.merge(&right);
        let node = format!(
            "{base}-{}",
            match kind {
                Kind::Inner => "inner",
                Kind::Left => "left",
                Kind::Outer => "outer",
            }
        );
        let (ts, os, us) = (this_store.clone(), other_store.clone(), outer_store.clone());
        let (ks, vs1, vs2) = (
            joined.key_serde.clone(),
            joined.value_serde.clone(),
            joined.other_value_serde.clone(),
        );
        let out = merged.add_named(node.clone(), move || StreamStreamJoin {
            left_store: ts.clone(),
            right_store: os.clone(),
            outer_store: (kind != Kind::Inner).then(|| us.clone()),
            kind,
            windows,
            joiner: joiner.clone(),
            key_serde: ks.clone(),
            left_serde: vs1.clone(),
            right_serde: vs2.clone(),
            stream_time: i64::MIN,
            min_pending: i64::MAX,
            arrival: 0,
        });
        let retention = Duration::from_millis(windows.retention().max(0) as u64);
        let mut inner = self.builder.borrow_mut();
        let list1 = ListSerde(joined.value_serde.clone());
        let list2 = ListSerde(joined.other_value_serde.clone());
        inner.add_store(
            StoreSpec::new(this_store, ArcSerde(joined.key_serde.clone()), list1)
                .windowed(Duration::ZERO, retention)
                .without_caching(),
            &node,
        );
        inner.add_store(
            StoreSpec::new(other_store, ArcSerde(joined.key_serde.clone()), list2)
                .windowed(Duration::ZERO, retention)
                .without_caching(),
            &node,
        );
        if kind != Kind::Inner {
            inner.add_store(
                StoreSpec::<Bytes, Bytes>::new(outer_store, BytesSerde, BytesSerde)
                    .without_caching(),
                &node,
            );
        }
        drop(inner);
        out
    }
}

/// Tags a record with its side of the join.
struct Tag<const LEFT: bool>;

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

/// Several values under one (key, timestamp) of a join window store, in arrival order:
/// a count, then each value's length and bytes.
struct ListSerde<V>(Arc<dyn Serde<V>>);

impl<V: 'static> Serde<Vec<V>> for ListSerde<V> {
    fn serialize(&self, value: &Vec<V>) -> Result<Option<Bytes>> {
        let mut out = Vec::new();
        self.serialize_into(value, &mut out)?;
        Ok(Some(out.into()))
    }

    fn serialize_into(&self, value: &Vec<V>, out: &mut Vec<u8>) -> Result<bool> {
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        for v in value {
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            if !self.0.serialize_into(v, out)? {
                return Err(Error::Serde(
                    "a joined record's value cannot be null".into(),
                ));
            }
            let n = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&n.to_be_bytes());
        }
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Vec<V>> {
        let b = data.unwrap_or_default();
        let bad = || {
            Error::Serde(format!(
                "a join window entry of {} bytes is cut short",
                b.len()
            ))
        };
        let n = u32::from_be_bytes(b.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes"));
        let mut at = 4;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = u32::from_be_bytes(
                b.get(at..at + 4)
                    .ok_or_else(bad)?
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            at += 4;
            out.push(
                self.0
                    .deserialize(Some(b.get(at..at + len).ok_or_else(bad)?))?,
            );
            at += len;
        }
        Ok(out)
    }
}

/// The join: both sides' records, one shared stream time.
struct StreamStreamJoin<K, V1, V2, VR> {
    left_store: String,
    right_store: String,
    outer_store: Option<String>,
    kind: Kind,
    windows: JoinWindows,
    joiner: Joiner<V1, V2, VR>,
    key_serde: Arc<dyn Serde<K>>,
    left_serde: Arc<dyn Serde<V1>>,
    right_serde: Arc<dyn Serde<V2>>,
    /// The largest timestamp of either side.
    stream_time: i64,
    /// The earliest timestamp waiting in the outer store (`i64::MAX`: none known).
    min_pending: i64,
    /// Numbers waiting records in arrival order (ties of timestamp, side and key).
    arrival: u64,
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
        drop(store);
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
            Side::Left(v) => {
                let mut others = ctx.window_store::<K, Vec<V2>>(&other_store)?;
                for (window, values) in others.fetch_range(&r.key, from, to)? {
                    for o in values {
                        matched.push((window.start, (self.joiner)(Some(v), Some(&o))));
                    }
                }
                let mut own = ctx.window_store::<K, Vec<V1>>(&this_store)?;
                let mut list = own.fetch(&r.key, ts)?.unwrap_or_default();
                list.push(v.clone());
                own.put(&r.key, ts, Some(&list))?;
                own.expire(self.stream_time)?;
                ctx.window_store::<K, Vec<V2>>(&other_store)?
                    .expire(self.stream_time)?;
            }
            Side::Right(v) => {
                let mut others = ctx.window_store::<K, Vec<V1>>(&other_store)?;
                for (window, values) in others.fetch_range(&r.key, from, to)? {
                    for o in values {
                        matched.push((window.start, (self.joiner)(Some(&o), Some(v))));
                    }
                }
                let mut own = ctx.window_store::<K, Vec<V2>>(&this_store)?;
                let mut list = own.fetch(&r.key, ts)?.unwrap_or_default();
                list.push(v.clone());
                own.put(&r.key, ts, Some(&list))?;
                own.expire(self.stream_time)?;
                ctx.window_store::<K, Vec<V1>>(&other_store)?
                    .expire(self.stream_time)?;
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
                    drop(store);
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
        // After a restart the waiting records' earliest time is unknown: look.
        if let Some(outer) = self.outer_store.clone() {
            let mut store = ctx.store::<Bytes, Bytes>(&outer)?;
            self.min_pending = store
                .all()?
                .first()
                .and_then(|(k, _)| parse_pending(k).map(|(ts, _, _)| ts))
                .unwrap_or(i64::MAX);
        }
        Ok(())
    }
}
