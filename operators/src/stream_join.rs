//! Windowed joins of two streams (Kafka Streams' `KStream#join / leftJoin / outerJoin`
//! with `JoinWindows`, `KStreamKStreamJoin`).
//!
//! Both sides go through one processor (each record tagged with its side), so the two
//! sides share one stream time and one store of records still waiting for a partner,
//! as Kafka Streams' shared time tracker and outer-join store do. Its state, all under
//! the runtime's one memory limit (RocksDB under the shared cache by default):
//!
//! - one window store per side: each key's records by timestamp (several records with
//!   the same key and timestamp kept in arrival order), kept `before + after + grace`,
//!   its recent entries in memory under the record cache's budget and written to
//!   RocksDB (and the changelog) at commits, so a join hardly waits on RocksDB while
//!   its windows are short;
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
use weir_runtime::{Data, StoreSpec};

use crate::stream::{ArcSerde, KStream, Repartitioned};
use crate::stream_join_processor::{Joiner, Kind, Side, StreamStreamJoin, Tag};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The time bounds of a stream-stream join (Kafka Streams' `JoinWindows`): a left
/// record at `t` joins right records in `[t - before, t + after]`; records are
/// accepted up to `grace` late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a builder does nothing until it is used"]
pub struct JoinWindows {
    pub(crate) before: i64,
    pub(crate) after: i64,
    pub(crate) grace: i64,
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

    /// How long the join keeps each side's records: `before + after + grace`, plus
    /// 1 ms. A window store keeps what is later than stream time less its retention,
    /// and a window's bounds are inclusive: a record exactly `after + grace` behind
    /// stream time still joins (`KStreamKStreamJoinTest.testAsymmetricWindowingAfter`:
    /// `A1` at 1001 joins `g1` at 1101 with `after(100)`, no grace).
    fn retention(&self) -> i64 {
        self.before
            .saturating_add(self.after)
            .saturating_add(self.grace)
            .saturating_add(1)
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
        inner.add_store(
            join_window_store(
                this_store,
                &joined.key_serde,
                &joined.value_serde,
                retention,
            ),
            &node,
        );
        inner.add_store(
            join_window_store(
                other_store,
                &joined.key_serde,
                &joined.other_value_serde,
                retention,
            ),
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

/// One side's window store of a stream-stream join: every record its own entry
/// (duplicates retained), kept `retention`, uncached.
fn join_window_store<K: Data, V: Data>(
    name: String,
    key_serde: &Arc<dyn Serde<K>>,
    value_serde: &Arc<dyn Serde<V>>,
    retention: Duration,
) -> StoreSpec<K, V> {
    StoreSpec::new(
        name,
        ArcSerde(key_serde.clone()),
        ArcSerde(value_serde.clone()),
    )
    .windowed_with_duplicates(Duration::ZERO, retention)
    .without_caching()
}
