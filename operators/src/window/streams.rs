//! The windowed streams: [`TimeWindowedKStream`] and [`SessionWindowedKStream`], and
//! their `count`, `reduce` and `aggregate`.

use std::sync::Arc;

use weir_runtime::serde::{DefaultSerde, I64Serde, OptionSerde};
use weir_runtime::{Data, Windowed};

use super::{EmitStrategy, SessionWindows, Spec, windowed_aggregate};
use crate::stream::ArcSerde;
use crate::table::{KGroupedStream, KTable, Materialized};

/// A grouped stream windowed by [`TimeWindows`](crate::TimeWindows) or
/// [`SlidingWindows`](crate::SlidingWindows).
pub struct TimeWindowedKStream<K, V> {
    pub(super) grouped: KGroupedStream<K, V>,
    pub(super) spec: Spec,
    pub(super) emit: EmitStrategy,
}

/// A grouped stream windowed by [`SessionWindows`].
pub struct SessionWindowedKStream<K, V> {
    pub(super) grouped: KGroupedStream<K, V>,
    pub(super) windows: SessionWindows,
    pub(super) emit: EmitStrategy,
}

impl<K, V> TimeWindowedKStream<K, V> {
    fn spec(&self) -> Spec {
        self.spec
    }

    /// When the aggregation emits: on every update (the default) or once per window
    /// when it closes ([`EmitStrategy`]).
    pub fn emit_strategy(mut self, emit: EmitStrategy) -> Self {
        self.emit = emit;
        self
    }
}

impl<K, V> SessionWindowedKStream<K, V> {
    fn spec(&self) -> Spec {
        Spec::Session(self.windows)
    }

    /// When the aggregation emits: on every update (the default) or once per session
    /// when it closes ([`EmitStrategy`]).
    pub fn emit_strategy(mut self, emit: EmitStrategy) -> Self {
        self.emit = emit;
        self
    }
}

macro_rules! windowed_ops {
    ($ty:ident, $merge_count:expr) => {
        impl<K: Data, V: Data> $ty<K, V> {
            /// Counts records per key and window.
            pub fn count(&self) -> KTable<Windowed<K>, i64> {
                self.count_with(Materialized::default())
            }

            /// Counts records per key and window, stored as `materialized` says.
            pub fn count_with(
                &self,
                materialized: Materialized<K, i64>,
            ) -> KTable<Windowed<K>, i64> {
                windowed_aggregate(
                    &self.grouped,
                    (self.spec(), self.emit),
                    materialized,
                    Some(Arc::new(I64Serde)),
                    Arc::new(|| 0i64),
                    Arc::new(|_: &K, _: V, n: i64| n + 1),
                    $merge_count,
                )
            }

            /// Combines each key's values per window with `f(aggregate, value)`.
            pub fn reduce<F>(&self, f: F) -> KTable<Windowed<K>, V>
            where
                F: Fn(V, V) -> V + Send + Sync + 'static,
            {
                self.reduce_with(f, Materialized::default())
            }

            /// Like `reduce`, stored as `materialized` says.
            pub fn reduce_with<F>(
                &self,
                f: F,
                materialized: Materialized<K, V>,
            ) -> KTable<Windowed<K>, V>
            where
                F: Fn(V, V) -> V + Send + Sync + 'static,
            {
                let value_serde = materialized
                    .value_serde
                    .clone()
                    .unwrap_or_else(|| self.grouped.value_serde.clone());
                let f = Arc::new(f);
                let f2 = f.clone();
                let option = materialized.retyped::<Option<V>>(Some(Arc::new(OptionSerde(
                    ArcSerde(value_serde.clone()),
                ))));
                let table = windowed_aggregate(
                    &self.grouped,
                    (self.spec(), self.emit),
                    option,
                    None,
                    Arc::new(|| None::<V>),
                    Arc::new(move |_: &K, v: V, acc: Option<V>| {
                        Some(match acc {
                            Some(a) => f(a, v),
                            None => v,
                        })
                    }),
                    Some(Arc::new(move |_: &K, a: Option<V>, b: Option<V>| {
                        match (a, b) {
                            (Some(a), Some(b)) => Some(f2(a, b)),
                            (a, b) => a.or(b),
                        }
                    })),
                );
                table.flatten(Some(value_serde))
            }
        }
    };
}

windowed_ops!(TimeWindowedKStream, None);
windowed_ops!(
    SessionWindowedKStream,
    Some(Arc::new(|_: &K, a: i64, b: i64| a + b))
);

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
    /// Folds each key's values per window into an aggregate starting from `init()`.
    pub fn aggregate<VA, I, A>(&self, init: I, agg: A) -> KTable<Windowed<K>, VA>
    where
        VA: Data + DefaultSerde,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    {
        self.aggregate_with(
            init,
            agg,
            Materialized::default().with_value_serde(VA::default_serde()),
        )
    }

    /// Like [`TimeWindowedKStream::aggregate`], stored as `materialized` says (it must
    /// give a value serde unless `VA` has a default one).
    pub fn aggregate_with<VA, I, A>(
        &self,
        init: I,
        agg: A,
        materialized: Materialized<K, VA>,
    ) -> KTable<Windowed<K>, VA>
    where
        VA: Data,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    {
        windowed_aggregate(
            &self.grouped,
            (self.spec, self.emit),
            materialized,
            None,
            Arc::new(init),
            Arc::new(agg),
            None,
        )
    }
}

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    /// Folds each key's values per session into an aggregate starting from `init()`;
    /// `merge(key, a, b)` combines two sessions' aggregates when a record joins them.
    pub fn aggregate<VA, I, A, M>(&self, init: I, agg: A, merge: M) -> KTable<Windowed<K>, VA>
    where
        VA: Data + DefaultSerde,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        M: Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
    {
        self.aggregate_with(
            init,
            agg,
            merge,
            Materialized::default().with_value_serde(VA::default_serde()),
        )
    }

    /// Like [`SessionWindowedKStream::aggregate`], stored as `materialized` says.
    pub fn aggregate_with<VA, I, A, M>(
        &self,
        init: I,
        agg: A,
        merge: M,
        materialized: Materialized<K, VA>,
    ) -> KTable<Windowed<K>, VA>
    where
        VA: Data,
        I: Fn() -> VA + Send + Sync + 'static,
        A: Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        M: Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
    {
        windowed_aggregate(
            &self.grouped,
            (self.spec(), self.emit),
            materialized,
            None,
            Arc::new(init),
            Arc::new(agg),
            Some(Arc::new(merge)),
        )
    }
}

impl<K, V> std::fmt::Debug for TimeWindowedKStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeWindowedKStream")
            .field("grouped", &self.grouped)
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for SessionWindowedKStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindowedKStream")
            .field("grouped", &self.grouped)
            .field("windows", &self.windows)
            .finish()
    }
}
