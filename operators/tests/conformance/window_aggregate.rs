//! `org.apache.kafka.streams.kstream.internals.KStreamWindowAggregateTest`.

use std::time::Duration;

use weir::EmitStrategy;
use weir::prelude::*;

use super::{capture, driver, s, string_init, tostring_adder, w};

/// `testAggBasic`'s input, in both versions of the test.
const AGG_BASIC_INPUT: [(&str, &str, i64); 18] = [
    ("A", "1", 0),
    ("B", "2", 1),
    ("C", "3", 2),
    ("D", "4", 3),
    ("A", "1", 4),
    ("A", "1", 5),
    ("B", "2", 6),
    ("D", "4", 7),
    ("B", "2", 8),
    ("C", "3", 9),
    ("A", "1", 10),
    ("B", "2", 11),
    ("D", "4", 12),
    ("B", "2", 13),
    ("C", "3", 14),
    ("B", "1", 3),
    ("B", "2", 2),
    ("B", "3", 9),
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Kafka's deprecated `TimeWindows.of(size)`: grace 24 h less the size.
fn legacy_of(size: u64) -> TimeWindows {
    TimeWindows::of_size_and_grace(ms(size), ms(24 * 3600 * 1000 - size)).unwrap()
}

/// `KStreamWindowAggregateTest.testAggBasic`: hopping windows; each update carries the
/// largest timestamp in its window, so the late records at 3 and 2 emit at 8.
#[test]
fn test_agg_basic() {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic1")
        .group_by_key()
        .windowed_by(legacy_of(10).advance_by(ms(5)).unwrap())
        .aggregate_with(
            string_init,
            tostring_adder,
            Materialized::as_("topic1-Canonized").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let input = driver
        .create_input_topic::<String, String>("topic1")
        .unwrap();
    for (k, v, t) in AGG_BASIC_INPUT {
        input.pipe_input_at(k, v, t).unwrap();
    }
    assert_eq!(
        seen.take(),
        vec![
            (w("A", 0, 10), s("0+1"), 0),
            (w("B", 0, 10), s("0+2"), 1),
            (w("C", 0, 10), s("0+3"), 2),
            (w("D", 0, 10), s("0+4"), 3),
            (w("A", 0, 10), s("0+1+1"), 4),
            (w("A", 0, 10), s("0+1+1+1"), 5),
            (w("A", 5, 15), s("0+1"), 5),
            (w("B", 0, 10), s("0+2+2"), 6),
            (w("B", 5, 15), s("0+2"), 6),
            (w("D", 0, 10), s("0+4+4"), 7),
            (w("D", 5, 15), s("0+4"), 7),
            (w("B", 0, 10), s("0+2+2+2"), 8),
            (w("B", 5, 15), s("0+2+2"), 8),
            (w("C", 0, 10), s("0+3+3"), 9),
            (w("C", 5, 15), s("0+3"), 9),
            (w("A", 5, 15), s("0+1+1"), 10),
            (w("A", 10, 20), s("0+1"), 10),
            (w("B", 5, 15), s("0+2+2+2"), 11),
            (w("B", 10, 20), s("0+2"), 11),
            (w("D", 5, 15), s("0+4+4"), 12),
            (w("D", 10, 20), s("0+4"), 12),
            (w("B", 5, 15), s("0+2+2+2+2"), 13),
            (w("B", 10, 20), s("0+2+2"), 13),
            (w("C", 5, 15), s("0+3+3"), 14),
            (w("C", 10, 20), s("0+3"), 14),
            (w("B", 0, 10), s("0+2+2+2+1"), 8),
            (w("B", 0, 10), s("0+2+2+2+1+2"), 8),
            (w("B", 0, 10), s("0+2+2+2+1+2+3"), 9),
            (w("B", 5, 15), s("0+2+2+2+2+3"), 13),
        ]
    );
}

/// The topology of `shouldLogAndMeterWhenSkippingExpiredWindow*`: `aggregate` from ""
/// with `agg + "+" + value`, caching off, keys printed Kafka's way.
fn expired_window_topology(windows: TimeWindows) -> StreamsBuilder {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("topic")
        .group_by_key()
        .windowed_by(windows)
        .aggregate_with(
            String::new,
            tostring_adder,
            Materialized::as_("topic1-Canonicalized")
                .with_value_serde(StringSerde)
                .without_caching(),
        )
        .to_stream()
        .map(|k: Windowed<String>, v: Option<String>| {
            (
                format!("[{}@{}/{}]", k.key, k.window.start, k.window.end),
                v.unwrap_or_default(),
            )
        })
        .to("output");
    builder
}

/// `KStreamWindowAggregateTest.shouldLogAndMeterWhenSkippingExpiredWindow`: windows of
/// 10 advancing by 5 kept 100 ms (`until(100)`: grace 90); stream time 100, so window
/// [0,10) has closed: 7 drops (one per record and closed window), the open [5,15) still
/// counts 5 and 6.
#[test]
fn should_log_and_meter_when_skipping_expired_window() {
    let builder = expired_window_topology(
        TimeWindows::of_size_and_grace(ms(10), ms(90))
            .unwrap()
            .advance_by(ms(5))
            .unwrap(),
    );
    let driver = driver(builder);
    let input = driver
        .create_input_topic::<String, String>("topic")
        .unwrap();
    for (v, t) in [
        ("100", 100),
        ("0", 0),
        ("1", 1),
        ("2", 2),
        ("3", 3),
        ("4", 4),
        ("5", 5),
        ("6", 6),
    ] {
        input.pipe_input_at("k", v, t).unwrap();
    }
    assert_eq!(driver.dropped_records(), 7);
    assert_eq!(driver.record_lateness(), Some((100, 84.875)));
    let output = driver
        .create_output_topic::<String, String>("output")
        .unwrap();
    let got: Vec<(String, String, i64)> = output
        .read_records_to_list()
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            ("[k@95/105]".to_string(), "+100".to_string(), 100),
            ("[k@100/110]".to_string(), "+100".to_string(), 100),
            ("[k@5/15]".to_string(), "+5".to_string(), 5),
            ("[k@5/15]".to_string(), "+5+6".to_string(), 6),
        ]
    );
}

/// `KStreamWindowAggregateTest.shouldLogAndMeterWhenSkippingExpiredWindowByGrace`:
/// tumbling windows of 10 with grace 90; at stream time 200 everything before window
/// [110,120) has closed: 7 drops, one output.
#[test]
fn should_log_and_meter_when_skipping_expired_window_by_grace() {
    let builder = expired_window_topology(TimeWindows::of_size_and_grace(ms(10), ms(90)).unwrap());
    let driver = driver(builder);
    let input = driver
        .create_input_topic::<String, String>("topic")
        .unwrap();
    for (v, t) in [
        ("100", 200),
        ("0", 100),
        ("1", 101),
        ("2", 102),
        ("3", 103),
        ("4", 104),
        ("5", 105),
        ("6", 6),
    ] {
        input.pipe_input_at("k", v, t).unwrap();
    }
    assert_eq!(driver.dropped_records(), 7);
    assert_eq!(driver.record_lateness(), Some((194, 97.375)));
    let output = driver
        .create_output_topic::<String, String>("output")
        .unwrap();
    let r = output.read_record().unwrap();
    assert_eq!(
        (r.key.as_str(), r.value.as_str(), r.timestamp),
        ("[k@200/210]", "+100", 200)
    );
    assert!(output.is_empty().unwrap());
}

/// `KStreamWindowAggregateTest.testAggBasic` with `EmitStrategy.onWindowClose()` (the
/// newer test's windows: size 10, advance 5, grace 100): no window closes, nothing is
/// emitted.
#[test]
fn test_agg_basic_emit_final() {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic1")
        .group_by_key()
        .windowed_by(
            TimeWindows::of_size_and_grace(ms(10), ms(100))
                .unwrap()
                .advance_by(ms(5))
                .unwrap(),
        )
        .emit_strategy(EmitStrategy::on_window_close())
        .aggregate_with(
            string_init,
            tostring_adder,
            Materialized::as_("topic1-Canonized").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let input = driver
        .create_input_topic::<String, String>("topic1")
        .unwrap();
    for (k, v, t) in AGG_BASIC_INPUT {
        input.pipe_input_at(k, v, t).unwrap();
    }
    assert!(seen.take().is_empty());
}

/// `KStreamWindowAggregateTest.testJoin`, emit-final case (`processEmitFinalJoin`):
/// the first table's outputs (the join itself is the next issue's). Windows of 10
/// advancing by 5 with grace 5: each window goes downstream once, when stream time
/// reaches its end + grace, at its largest record timestamp, by start then key.
#[test]
fn test_join_emit_final_first_table() {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic1")
        .group_by_key()
        .windowed_by(
            TimeWindows::of_size_and_grace(ms(10), ms(5))
                .unwrap()
                .advance_by(ms(5))
                .unwrap(),
        )
        .emit_strategy(EmitStrategy::on_window_close())
        .aggregate_with(
            string_init,
            tostring_adder,
            Materialized::as_("topic1-Canonized").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let input = driver
        .create_input_topic::<String, String>("topic1")
        .unwrap();
    let pipe = |records: &[(&str, &str, i64)]| {
        for (k, v, t) in records {
            input.pipe_input_at(*k, *v, *t).unwrap();
        }
    };
    pipe(&[
        ("A", "1", 0),
        ("B", "2", 1),
        ("C", "3", 2),
        ("D", "4", 3),
        ("A", "1", 9),
        ("A", "1", 15),
    ]);
    assert_eq!(
        seen.take(),
        vec![
            (w("A", 0, 10), s("0+1+1"), 9),
            (w("B", 0, 10), s("0+2"), 1),
            (w("C", 0, 10), s("0+3"), 2),
            (w("D", 0, 10), s("0+4"), 3),
        ]
    );
    pipe(&[
        ("A", "1", 10),
        ("B", "2", 11),
        ("D", "4", 12),
        ("B", "2", 13),
        ("C", "3", 14),
        ("A", "1", 20),
    ]);
    assert_eq!(
        seen.take(),
        vec![
            (w("A", 5, 15), s("0+1+1"), 10),
            (w("B", 5, 15), s("0+2+2"), 13),
            (w("C", 5, 15), s("0+3"), 14),
            (w("D", 5, 15), s("0+4"), 12),
        ]
    );
}
