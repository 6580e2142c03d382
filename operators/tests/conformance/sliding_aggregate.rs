//! `org.apache.kafka.streams.kstream.internals.KStreamSlidingWindowAggregateTest`, its
//! `ON_WINDOW_UPDATE` and `ON_WINDOW_CLOSE` cases (the record cache is off in the
//! driver, so Kafka's cached and uncached runs expect the same; Kafka's test sets the
//! emit interval to 0, which is weir's behaviour).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use weir::EmitStrategy;
use weir::prelude::*;

use super::{Captured, Kvt, capture, driver, string_init, tostring_adder, w};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Kafka's `gatherOutput`: per window start, the set of (value, timestamp) emitted.
fn gather(
    seen: &Captured<Windowed<String>, Option<String>>,
) -> BTreeMap<i64, BTreeSet<(String, i64)>> {
    let mut out: BTreeMap<i64, BTreeSet<(String, i64)>> = BTreeMap::new();
    for (k, v, ts) in seen.take() {
        out.entry(k.window.start)
            .or_default()
            .insert((v.expect("an update"), ts));
    }
    out
}

fn expected(entries: &[(i64, &[(&str, i64)])]) -> BTreeMap<i64, BTreeSet<(String, i64)>> {
    entries
        .iter()
        .map(|(start, set)| {
            (
                *start,
                set.iter().map(|(v, t)| (v.to_string(), *t)).collect(),
            )
        })
        .collect()
}

fn pipe(driver: &weir::testing::TopologyTestDriver, topic: &str, records: &[(&str, &str, i64)]) {
    let input = driver.create_input_topic::<String, String>(topic).unwrap();
    for (k, v, t) in records {
        input.pipe_input_at(*k, *v, *t).unwrap();
    }
}

fn aggregate_small_input(emit: EmitStrategy) -> BTreeMap<i64, BTreeSet<(String, i64)>> {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_and_grace(ms(10), ms(5)))
        .emit_strategy(emit)
        .aggregate_with(
            string_init,
            tostring_adder,
            Materialized::as_("store-name").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    pipe(
        &driver,
        "topic",
        &[
            ("A", "1", 10),
            ("A", "2", 10),
            ("A", "3", 14),
            ("A", "4", 15),
            ("A", "5", 20),
            ("A", "6", 22),
            ("A", "7", 30),
        ],
    );
    gather(&seen)
}

/// `KStreamSlidingWindowAggregateTest.testAggregateSmallInput`, ON_WINDOW_UPDATE.
#[test]
fn test_aggregate_small_input() {
    assert_eq!(
        aggregate_small_input(EmitStrategy::on_window_update()),
        expected(&[
            (0, &[("0+1", 10), ("0+1+2", 10)]),
            (4, &[("0+1+2+3", 14)]),
            (5, &[("0+1+2+3+4", 15)]),
            (10, &[("0+1+2+3+4+5", 20)]),
            (11, &[("0+3", 14), ("0+3+4", 15), ("0+3+4+5", 20)]),
            (12, &[("0+3+4+5+6", 22)]),
            (15, &[("0+4", 15), ("0+4+5", 20), ("0+4+5+6", 22)]),
            (16, &[("0+5", 20), ("0+5+6", 22)]),
            (20, &[("0+5+6+7", 30)]),
            (21, &[("0+6", 22), ("0+6+7", 30)]),
            (23, &[("0+7", 30)]),
        ])
    );
}

/// `KStreamSlidingWindowAggregateTest.testAggregateSmallInput`, ON_WINDOW_CLOSE: at
/// stream time 30 with grace 5, the windows ending before 25 have closed.
#[test]
fn test_aggregate_small_input_emit_final() {
    assert_eq!(
        aggregate_small_input(EmitStrategy::on_window_close()),
        expected(&[
            (0, &[("0+1+2", 10)]),
            (4, &[("0+1+2+3", 14)]),
            (5, &[("0+1+2+3+4", 15)]),
            (10, &[("0+1+2+3+4+5", 20)]),
            (11, &[("0+3+4+5", 20)]),
            (12, &[("0+3+4+5+6", 22)]),
        ])
    );
}

fn reduce_small_input(emit: EmitStrategy) -> BTreeMap<i64, BTreeSet<(String, i64)>> {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_and_grace(ms(10), ms(5)))
        .emit_strategy(emit)
        .reduce_with(
            |a: String, b: String| format!("{a}+{b}"),
            Materialized::as_("store-name").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    pipe(
        &driver,
        "topic",
        &[
            ("A", "1", 10),
            ("A", "2", 14),
            ("A", "3", 15),
            ("A", "4", 22),
            ("A", "5", 26),
            ("A", "6", 30),
        ],
    );
    gather(&seen)
}

/// `KStreamSlidingWindowAggregateTest.testReduceSmallInput`, ON_WINDOW_UPDATE, with
/// Kafka's `MockReducer.STRING_ADDER`.
#[test]
fn test_reduce_small_input() {
    assert_eq!(
        reduce_small_input(EmitStrategy::on_window_update()),
        expected(&[
            (0, &[("1", 10)]),
            (4, &[("1+2", 14)]),
            (5, &[("1+2+3", 15)]),
            (11, &[("2", 14), ("2+3", 15)]),
            (12, &[("2+3+4", 22)]),
            (15, &[("3", 15), ("3+4", 22)]),
            (16, &[("4", 22), ("4+5", 26)]),
            (20, &[("4+5+6", 30)]),
            (23, &[("5", 26), ("5+6", 30)]),
            (27, &[("6", 30)]),
        ])
    );
}

/// `KStreamSlidingWindowAggregateTest.testReduceSmallInput`, ON_WINDOW_CLOSE.
#[test]
fn test_reduce_small_input_emit_final() {
    assert_eq!(
        reduce_small_input(EmitStrategy::on_window_close()),
        expected(&[
            (0, &[("1", 10)]),
            (4, &[("1+2", 14)]),
            (5, &[("1+2+3", 15)]),
            (11, &[("2+3", 15)]),
            (12, &[("2+3+4", 22)]),
        ])
    );
}

fn aggregate_large_input(emit: EmitStrategy, grace: u64) -> Vec<Kvt<Windowed<String>, String>> {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic1")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_and_grace(
            ms(10),
            ms(grace),
        ))
        .emit_strategy(emit)
        .aggregate_with(
            string_init,
            tostring_adder,
            Materialized::as_("store-name").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    pipe(
        &driver,
        "topic1",
        &[
            ("A", "1", 10),
            ("A", "2", 20),
            ("A", "3", 22),
            ("A", "4", 15),
            ("B", "1", 12),
            ("B", "2", 13),
            ("B", "3", 18),
            ("B", "4", 19),
            ("B", "5", 25),
            ("B", "6", 14),
            ("C", "1", 11),
            ("C", "2", 15),
            ("C", "3", 16),
            ("C", "4", 21),
            ("C", "5", 23),
            ("D", "4", 11),
            ("D", "2", 12),
            ("D", "3", 29),
            ("D", "5", 16),
        ],
    );
    let mut actual: Vec<Kvt<Windowed<String>, String>> = seen
        .take()
        .into_iter()
        .map(|(k, v, t)| (k, v.expect("an update"), t))
        .collect();
    // Stable, as Java's List.sort.
    actual.sort_by(|a, b| (&a.0.key, a.0.window.start).cmp(&(&b.0.key, b.0.window.start)));
    actual
}

fn e(k: &str, s: i64, v: &str, t: i64) -> Kvt<Windowed<String>, String> {
    (w(k, s, s + 10), v.to_string(), t)
}

/// `KStreamSlidingWindowAggregateTest.testAggregateLargeInput`, ON_WINDOW_UPDATE (grace
/// 50): every update, sorted by key and window start as the Java test sorts them.
#[test]
fn test_aggregate_large_input() {
    assert_eq!(
        aggregate_large_input(EmitStrategy::on_window_update(), 50),
        vec![
            e("A", 0, "0+1", 10),
            e("A", 5, "0+1+4", 15),
            e("A", 10, "0+1+2", 20),
            e("A", 10, "0+1+2+4", 20),
            e("A", 11, "0+2", 20),
            e("A", 11, "0+2+4", 20),
            e("A", 12, "0+2+3", 22),
            e("A", 12, "0+2+3+4", 22),
            e("A", 16, "0+2+3", 22),
            e("A", 21, "0+3", 22),
            e("B", 2, "0+1", 12),
            e("B", 3, "0+1+2", 13),
            e("B", 4, "0+1+2+6", 14),
            e("B", 8, "0+1+2+3", 18),
            e("B", 8, "0+1+2+3+6", 18),
            e("B", 9, "0+1+2+3+4", 19),
            e("B", 9, "0+1+2+3+4+6", 19),
            e("B", 13, "0+2", 13),
            e("B", 13, "0+2+3", 18),
            e("B", 13, "0+2+3+4", 19),
            e("B", 13, "0+2+3+4+6", 19),
            e("B", 14, "0+3", 18),
            e("B", 14, "0+3+4", 19),
            e("B", 14, "0+3+4+6", 19),
            e("B", 15, "0+3+4+5", 25),
            e("B", 19, "0+4", 19),
            e("B", 19, "0+4+5", 25),
            e("B", 20, "0+5", 25),
            e("C", 1, "0+1", 11),
            e("C", 5, "0+1+2", 15),
            e("C", 6, "0+1+2+3", 16),
            e("C", 11, "0+1+2+3+4", 21),
            e("C", 12, "0+2", 15),
            e("C", 12, "0+2+3", 16),
            e("C", 12, "0+2+3+4", 21),
            e("C", 13, "0+2+3+4+5", 23),
            e("C", 16, "0+3", 16),
            e("C", 16, "0+3+4", 21),
            e("C", 16, "0+3+4+5", 23),
            e("C", 17, "0+4", 21),
            e("C", 17, "0+4+5", 23),
            e("C", 22, "0+5", 23),
            e("D", 1, "0+4", 11),
            e("D", 2, "0+4+2", 12),
            e("D", 6, "0+4+2+5", 16),
            e("D", 12, "0+2", 12),
            e("D", 12, "0+2+5", 16),
            e("D", 13, "0+5", 16),
            e("D", 19, "0+3", 29),
        ]
    );
}

/// `KStreamSlidingWindowAggregateTest.testAggregateLargeInput`, ON_WINDOW_CLOSE (grace
/// 10): B@14 comes when [4,14] has closed (close time 15) and still counts in B@18's
/// left window; C@11, D@11, D@12 and D@16 miss their closed left windows.
#[test]
fn test_aggregate_large_input_emit_final() {
    assert_eq!(
        aggregate_large_input(EmitStrategy::on_window_close(), 10),
        vec![
            e("A", 0, "0+1", 10),
            e("A", 5, "0+1+4", 15),
            e("B", 2, "0+1", 12),
            e("B", 3, "0+1+2", 13),
            e("B", 8, "0+1+2+3+6", 18),
            e("C", 5, "0+2", 15),
            e("C", 6, "0+2+3", 16),
        ]
    );
}
