//! Windowed aggregations: `group_by_key().windowed_by(...)` then `count`, `reduce` or
//! `aggregate`, giving a `KTable<Windowed<K>, V>`: tumbling and hopping
//! ([`TimeWindows`]), sliding ([`SlidingWindows`]) and session ([`SessionWindows`]).
//!
//! Event time is each record's timestamp (set by the source's timestamp extractor, if
//! any). Each aggregation tracks its *observed stream time*, the largest timestamp it
//! has seen; a window closes when that passes its end plus the grace period (a session:
//! its end plus gap plus grace), and a record for a closed window is dropped and counted
//! (`QueryStats::records_dropped_late`, `weir_dropped_records_total`, and a debug log
//! line). Lateness, output timestamps, session merges and emission follow Kafka Streams'
//! rules, listed in ARCHITECTURE.md ("What does a window emit, and when?") and checked
//! by Kafka's own tests in `tests/conformance/`. The observed stream time is stored with
//! the windows, so a restart drops exactly what the first run would have.
//!
//! State lives in window or session stores (RocksDB under the shared cache by
//! default) that drop expired segments with range deletes (see
//! `weir_runtime`'s `state/window.rs`). Time windows go through the record cache like key-value
//! aggregations; session and sliding windows, which look up neighbouring windows per
//! record, write through.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use weir_runtime::serde::Serde;
use weir_runtime::{Change, Data, Error, Processor, Result, Window, Windowed, WindowedSerde};

use crate::table::{KGroupedStream, KTable, Materialized, TableMeta};

mod aggregate;
mod emit;
mod streams;
use aggregate::{
    Core, SessionAggregate, SlidingAggregate, Stamped, StampedSerde, Unstamp, WindowAggregate,
};
pub use emit::EmitStrategy;
pub use streams::{SessionWindowedKStream, TimeWindowedKStream};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Fixed-size windows: tumbling (advance = size) or hopping (advance < size). A window
/// is `[start, start + size)`; starts are multiples of the advance, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a builder does nothing until it is used"]
pub struct TimeWindows {
    size: i64,
    advance: i64,
    grace: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size` that accept records up to `grace` after they end.
    /// A size under 1 ms is an error (`Error::Config`), as Kafka Streams refuses it
    /// when the windows are made.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::TimeWindows;
    ///
    /// let minutes = TimeWindows::of_size_and_grace(Duration::from_secs(60), Duration::from_secs(10));
    /// assert!(minutes.is_ok());
    /// assert!(TimeWindows::of_size_and_grace(Duration::ZERO, Duration::ZERO).is_err());
    /// ```
    pub fn of_size_and_grace(size: Duration, grace: Duration) -> Result<Self> {
        let size = ms(size);
        if size <= 0 {
            return Err(Error::Config(
                "window size must be at least 1 ms (TimeWindows)".into(),
            ));
        }
        Ok(TimeWindows {
            size,
            advance: size,
            grace: ms(grace),
        })
    }

    /// Tumbling windows of `size` that close as soon as stream time passes their end.
    pub fn of_size_with_no_grace(size: Duration) -> Result<Self> {
        Self::of_size_and_grace(size, Duration::ZERO)
    }

    /// Hopping windows: a new window every `advance`, which must be at least 1 ms and
    /// at most the size (`Error::Config` otherwise).
    pub fn advance_by(mut self, advance: Duration) -> Result<Self> {
        let advance = ms(advance);
        if advance <= 0 || advance > self.size {
            return Err(Error::Config(format!(
                "window advance must be between 1 ms and the window size ({} ms), got {advance} ms (TimeWindows)",
                self.size
            )));
        }
        self.advance = advance;
        Ok(self)
    }

    /// The window size in ms.
    pub fn size_ms(&self) -> i64 {
        self.size
    }

    /// The advance in ms (the size for tumbling windows).
    pub fn advance_ms(&self) -> i64 {
        self.advance
    }

    /// The grace period in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }

    /// The windows that contain `timestamp`, by start (Kafka Streams'
    /// `TimeWindows#windowsFor`): `[start, start + size)` for every start that is a
    /// multiple of the advance, from 0. None for a negative timestamp.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::{TimeWindows, Window};
    ///
    /// # fn main() -> weir::Result<()> {
    /// let hopping = TimeWindows::of_size_with_no_grace(Duration::from_millis(12))?
    ///     .advance_by(Duration::from_millis(5))?;
    /// assert_eq!(
    ///     hopping.windows_for(21),
    ///     vec![Window::new(10, 22), Window::new(15, 27), Window::new(20, 32)]
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn windows_for(&self, timestamp: i64) -> Vec<Window> {
        self.starts(timestamp)
            .map(|start| Window::new(start, start.saturating_add(self.size)))
            .collect()
    }

    /// Starts of the windows containing `ts`, ascending.
    fn starts(&self, ts: i64) -> impl Iterator<Item = i64> + use<> {
        // Starts are multiples of the advance, from 0 (so never negative).
        let first = (((ts - self.size).div_euclid(self.advance) + 1) * self.advance).max(0);
        let advance = self.advance;
        (0..)
            .map(move |i| first + i * advance)
            .take_while(move |s| *s <= ts)
    }
}

/// Session windows: a key's records closer than `gap` apart form one session; sessions
/// merge when a record bridges them. A session is `[first, last]` (both inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct SessionWindows {
    gap: i64,
    grace: i64,
}

impl SessionWindows {
    /// Sessions with inactivity gap `gap` (at least 1 ms: `Error::Config` otherwise); a
    /// record is accepted while the session it would join (or start) ends no more than
    /// `gap + grace` before the observed stream time (Kafka Streams' rule).
    pub fn of_inactivity_gap_and_grace(gap: Duration, grace: Duration) -> Result<Self> {
        let gap = ms(gap);
        if gap <= 0 {
            return Err(Error::Config(
                "session inactivity gap must be at least 1 ms (SessionWindows)".into(),
            ));
        }
        Ok(SessionWindows {
            gap,
            grace: ms(grace),
        })
    }

    /// Sessions with no grace period.
    pub fn of_inactivity_gap_with_no_grace(gap: Duration) -> Result<Self> {
        Self::of_inactivity_gap_and_grace(gap, Duration::ZERO)
    }
}

/// Sliding windows (Kafka Streams' `SlidingWindows`): windows of a fixed time
/// difference `d` that move with the records rather than with the clock. A window is
/// `[start, start + d]`, both ends inclusive; the windows that exist for a key are the
/// distinct non-empty ones that end at one of its records (`[t - d, t]`, or `[0, d]`
/// while `t < d`) or start just after one (`[t + 1, t + d + 1]`). So every set of
/// records within `d` of each other is aggregated once, without the duplicates hopping
/// windows with a 1 ms advance would produce.
///
/// Lateness is judged per window, as in Kafka Streams: a window is closed once its end
/// is before stream time - grace. A record updates or creates each of its windows that
/// is still open and skips (counting each) the closed ones; it is dropped outright only
/// when even its right window `[t + 1, t + d + 1]` has closed. A window is final once
/// stream time passes its end + grace. Any time difference is valid (a `Duration`
/// cannot be negative), so the constructors cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct SlidingWindows {
    difference: i64,
    grace: i64,
}

impl SlidingWindows {
    /// Sliding windows spanning `difference` that accept records up to `grace` behind
    /// stream time.
    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        SlidingWindows {
            difference: ms(difference),
            grace: ms(grace),
        }
    }

    /// Sliding windows with no grace period.
    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }
}

/// What [`KGroupedStream::windowed_by`] accepts: [`TimeWindows`] and
/// [`SlidingWindows`] give a [`TimeWindowedKStream`], [`SessionWindows`] a
/// [`SessionWindowedKStream`].
pub trait WindowedBy<K, V> {
    /// The windowed stream.
    type Output;
    /// Windows `grouped`.
    fn windowed(self, grouped: &KGroupedStream<K, V>) -> Self::Output;
}

impl<K: Data, V: Data> WindowedBy<K, V> for TimeWindows {
    type Output = TimeWindowedKStream<K, V>;
    fn windowed(self, grouped: &KGroupedStream<K, V>) -> Self::Output {
        TimeWindowedKStream {
            grouped: grouped.clone_grouped(),
            spec: Spec::Time(self),
            emit: EmitStrategy::default(),
        }
    }
}

impl<K: Data, V: Data> WindowedBy<K, V> for SlidingWindows {
    type Output = TimeWindowedKStream<K, V>;
    fn windowed(self, grouped: &KGroupedStream<K, V>) -> Self::Output {
        TimeWindowedKStream {
            grouped: grouped.clone_grouped(),
            spec: Spec::Sliding(self),
            emit: EmitStrategy::default(),
        }
    }
}

impl<K: Data, V: Data> WindowedBy<K, V> for SessionWindows {
    type Output = SessionWindowedKStream<K, V>;
    fn windowed(self, grouped: &KGroupedStream<K, V>) -> Self::Output {
        SessionWindowedKStream {
            grouped: grouped.clone_grouped(),
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Aggregates per window: `TimeWindows` (tumbling, hopping), `SlidingWindows` or
    /// `SessionWindows`.
    ///
    /// # Examples
    ///
    /// Clicks per user per minute, with 10 s of grace for late records:
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::prelude::*;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// let per_minute: KTable<Windowed<String>, i64> = builder
    ///     .stream::<String, String>("clicks")
    ///     .group_by_key()
    ///     .windowed_by(TimeWindows::of_size_and_grace(
    ///         Duration::from_secs(60),
    ///         Duration::from_secs(10),
    ///     )?)
    ///     .count();
    /// # let _ = per_minute;
    /// # Ok(())
    /// # }
    /// ```
    pub fn windowed_by<W: WindowedBy<K, V>>(&self, windows: W) -> W::Output {
        windows.windowed(self)
    }

    fn clone_grouped(&self) -> KGroupedStream<K, V> {
        KGroupedStream {
            stream: self.stream.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

/// Which windows a windowed store and its aggregation use.
#[derive(Clone, Copy)]
pub(super) enum Spec {
    Time(TimeWindows),
    Sliding(SlidingWindows),
    Session(SessionWindows),
}

impl Spec {
    /// How long after a window's end it is final (what `until_window_closes` waits).
    /// A time window takes no record once stream time reaches end + grace. A session
    /// takes records while it ends no more than gap + grace before stream time (Kafka
    /// Streams' rule): it is final once stream time passes end + gap + grace. A sliding
    /// window includes its end, so it is final once stream time passes end + grace.
    fn close_delay(&self) -> i64 {
        match self {
            Spec::Time(w) => w.grace,
            Spec::Sliding(w) => w.grace.saturating_add(1),
            Spec::Session(w) => w.grace.saturating_add(w.gap).saturating_add(1),
        }
    }

    /// The default and least retention: enough to accept every on-time record. A
    /// store expires entries more than the retention older than stream time, so a
    /// closed time window is expired at once (as in Kafka Streams). A session is
    /// looked up while it ends no more than gap + grace before stream time, and a
    /// sliding window is built from windows up to twice the time difference plus
    /// grace back: both keep 1 ms more than that.
    fn min_retention(&self) -> i64 {
        match self {
            Spec::Time(w) => w.size.saturating_add(w.grace),
            Spec::Sliding(w) => w
                .difference
                .saturating_mul(2)
                .saturating_add(w.grace)
                .saturating_add(1),
            Spec::Session(w) => w.gap.saturating_add(w.grace).saturating_add(1),
        }
    }
}

type Init<VA> = Arc<dyn Fn() -> VA + Send + Sync>;
type Agg<K, V, VA> = Arc<dyn Fn(&K, V, VA) -> VA + Send + Sync>;
type Merge<K, VA> = Arc<dyn Fn(&K, VA, VA) -> VA + Send + Sync>;

/// Adds a windowed aggregation over `grouped` storing `VA` as `materialized` says.
pub(super) fn windowed_aggregate<K: Data, V: Data, VA: Data>(
    grouped: &KGroupedStream<K, V>,
    (spec, emit): (Spec, EmitStrategy),
    materialized: Materialized<K, VA>,
    default_value_serde: Option<Arc<dyn Serde<VA>>>,
    init: Init<VA>,
    agg: Agg<K, V, VA>,
    merge: Option<Merge<K, VA>>,
) -> KTable<Windowed<K>, VA> {
    match spec {
        Spec::Time(windows) => windowed_table(
            grouped,
            spec,
            materialized,
            default_value_serde,
            "KSTREAM-WINDOWED-AGGREGATE",
            move |store, send_old| WindowAggregate {
                core: Core::new(store, send_old, &init, &agg, emit.is_on_close()),
                windows,
            },
        ),
        Spec::Sliding(windows) => {
            // Each window is stored with its latest record's timestamp; the table
            // downstream sees the aggregate alone.
            let value_serde = materialized.value_serde.clone().or(default_value_serde);
            let stamped = value_serde
                .clone()
                .map(|s| Arc::new(StampedSerde(s)) as Arc<dyn Serde<Stamped<VA>>>);
            let table = windowed_table(
                grouped,
                spec,
                materialized.retyped(stamped),
                None,
                "KSTREAM-SLIDINGWINDOW-AGGREGATE",
                move |store, send_old| SlidingAggregate {
                    core: Core::new(store, send_old, &init, &agg, emit.is_on_close()),
                    windows,
                },
            );
            let changes = table.changes.add("KTABLE-MAPVALUES", || Unstamp);
            KTable::new(changes, table.send_old).with_meta(TableMeta {
                key_serde: table.meta.key_serde,
                value_serde,
                grace_ms: table.meta.grace_ms,
                store: None,
            })
        }
        Spec::Session(windows) => {
            let merge = merge.unwrap_or_else(|| Arc::new(|_: &K, a: VA, _: VA| a));
            windowed_table(
                grouped,
                spec,
                materialized,
                default_value_serde,
                "KSTREAM-SESSION-AGGREGATE",
                move |store, send_old| SessionAggregate {
                    core: Core::new(store, send_old, &init, &agg, emit.is_on_close()),
                    windows,
                    merge: merge.clone(),
                },
            )
        }
    }
}

/// Adds the aggregation node `make(store, send_old)` builds, named with `prefix`, and
/// its window or session store holding `S` as `materialized` says.
pub(super) fn windowed_table<K, V, S, P, F>(
    grouped: &KGroupedStream<K, V>,
    spec: Spec,
    materialized: Materialized<K, S>,
    default_value_serde: Option<Arc<dyn Serde<S>>>,
    prefix: &str,
    make: F,
) -> KTable<Windowed<K>, S>
where
    K: Data,
    V: Data,
    S: Data,
    P: Processor<K, V, Windowed<K>, Change<S>>,
    F: Fn(Arc<str>, Arc<AtomicBool>) -> P + Send + Sync + 'static,
{
    let builder = grouped.stream.builder.clone();
    let retention = materialized.retention.map_or(spec.min_retention(), ms);
    let retention_check = if retention < spec.min_retention() {
        Err(Error::Topology(format!(
            "window retention {retention} ms is shorter than the windows need, {} ms (size, gap or twice the time difference, plus grace)",
            spec.min_retention()
        )))
    } else {
        Ok(())
    };
    let mut store_spec = {
        let mut inner = builder.borrow_mut();
        inner.check(retention_check);
        materialized.spec(
            &mut inner,
            "KSTREAM-AGGREGATE-STATE-STORE",
            grouped.key_serde.clone(),
            default_value_serde,
        )
    };
    let retention_d = Duration::from_millis(retention.max(0) as u64);
    store_spec = store_spec.map(|s| match spec {
        // Each window keeps the largest timestamp of its records: its updates carry it.
        Spec::Time(w) => s
            .windowed(Duration::from_millis(w.size as u64), retention_d)
            .timestamped(),
        // Each record looks its neighbours up with a range scan: no record cache.
        Spec::Sliding(w) => s
            .windowed(Duration::from_millis(w.difference as u64), retention_d)
            .without_caching(),
        Spec::Session(_) => s.sessions(retention_d).without_caching(),
    });
    let store: Arc<str> = Arc::from(store_spec.as_ref().map_or("?", |s| s.name()));
    let meta = TableMeta {
        key_serde: Some(Arc::new(WindowedSerde(grouped.key_serde.clone())) as Arc<dyn Serde<_>>),
        value_serde: store_spec.as_ref().map(|s| s.value_serde().clone()),
        grace_ms: Some(spec.close_delay()),
        store: None,
    };
    let send_old = Arc::new(AtomicBool::new(false));
    let node = builder.borrow_mut().next_name(prefix);
    let so = send_old.clone();
    let st = store.clone();
    let changes = grouped
        .stream
        .add_named(node.clone(), move || make(st.clone(), so.clone()));
    if let Some(s) = store_spec {
        builder.borrow_mut().add_store(s, &node);
    }
    KTable::new(changes, send_old).with_meta(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::serde::{I64Serde, OptionSerde};

    // Kafka Streams' TimeWindowsTest cases are in tests/conformance/time_windows.rs.

    #[test]
    fn no_window_holds_a_negative_timestamp() {
        let windows = TimeWindows::of_size_with_no_grace(Duration::from_millis(12)).unwrap();
        assert!(windows.windows_for(-1).is_empty());
        assert_eq!(windows.windows_for(0), vec![Window::new(0, 12)]);
    }
    use crate::StreamsBuilder;

    #[test]
    fn stamped_entries_round_trip_and_corrupt_ones_are_errors() {
        let serde = StampedSerde(Arc::new(OptionSerde(I64Serde)) as Arc<dyn Serde<Option<i64>>>);
        for value in [Some(7), None] {
            let bytes = serde.serialize(&Stamped { latest: -3, value }).unwrap();
            let back = serde.deserialize(bytes.as_deref()).unwrap();
            assert_eq!((back.latest, back.value), (-3, value));
        }
        assert!(serde.deserialize(None).is_err());
        assert!(serde.deserialize(Some(&[0; 8])).is_err());
        let good = Stamped {
            latest: 1,
            value: Some(1),
        };
        let mut bad = serde.serialize(&good).unwrap().unwrap().to_vec();
        bad[8] = 7;
        let err = serde.deserialize(Some(&bad)).err().unwrap();
        assert!(err.to_string().contains("tag 7"), "{err}");
    }

    #[test]
    fn sliding_windows_need_twice_the_difference_plus_grace_plus_1_ms_of_retention() {
        let build = |retention_ms: u64| {
            let builder = StreamsBuilder::new();
            builder
                .stream::<String, i64>("in")
                .group_by_key()
                .windowed_by(SlidingWindows::of_time_difference_and_grace(
                    Duration::from_millis(10),
                    Duration::from_millis(3),
                ))
                .count_with(
                    Materialized::default().with_retention(Duration::from_millis(retention_ms)),
                )
                .to_stream()
                .to("out");
            builder.build()
        };
        let err = build(23).err().unwrap();
        assert!(err.to_string().contains("24 ms"), "{err}");
        assert!(build(24).is_ok());
    }

    #[test]
    fn tumbling_and_hopping_starts() {
        let ms = Duration::from_millis;
        let t = TimeWindows::of_size_with_no_grace(ms(10)).unwrap();
        assert_eq!(t.starts(0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(t.starts(19).collect::<Vec<_>>(), vec![10]);
        let h = t.advance_by(ms(5)).unwrap();
        assert_eq!(h.starts(12).collect::<Vec<_>>(), vec![5, 10]);
        assert_eq!(h.starts(3).collect::<Vec<_>>(), vec![0]);
        let h3 = TimeWindows::of_size_with_no_grace(ms(10))
            .unwrap()
            .advance_by(ms(3))
            .unwrap();
        // Windows [3,13), [6,16), [9,19), [12,22) contain 12.
        assert_eq!(h3.starts(12).collect::<Vec<_>>(), vec![3, 6, 9, 12]);
    }
}
