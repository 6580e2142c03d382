//! `org.apache.kafka.streams.kstream.internals.KTableAggregateTest` (the version with
//! one combined update when a row stays in its group).

use weir::prelude::*;
use weir::testing::TopologyTestDriver;

use super::{Captured, capture, driver, string_init, tostring_adder, tostring_remover};

fn records<V: Clone>(seen: &Captured<String, Option<V>>) -> Vec<(String, V, i64)> {
    seen.take()
        .into_iter()
        .map(|(k, v, t)| (k, v.expect("an update"), t))
        .collect()
}

fn kvt<V>(k: &str, v: V, t: i64) -> (String, V, i64) {
    (k.to_string(), v, t)
}

fn input(
    driver: &TopologyTestDriver,
    topic: &str,
) -> weir::testing::TestInputTopic<String, String> {
    driver.create_input_topic::<String, String>(topic).unwrap()
}

/// `KTableAggregateTest.testAggBasic`: regrouped by the same key, each update is one
/// combined change (subtract, then add), carrying the larger timestamp.
#[test]
fn test_agg_basic() {
    let builder = StreamsBuilder::new();
    let table = builder
        .table::<String, String>("topic1")
        .group_by(|k: &String, v: &String| (k.clone(), v.clone()))
        .aggregate_with(
            string_init,
            tostring_adder,
            tostring_remover,
            Materialized::as_("topic1-Canonized").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let topic = input(&driver, "topic1");
    for (k, v, t) in [
        ("A", "1", 10),
        ("B", "2", 15),
        ("A", "3", 20),
        ("B", "4", 18),
        ("C", "5", 5),
        ("D", "6", 25),
        ("B", "7", 15),
        ("C", "8", 10),
    ] {
        topic.pipe_input_at(k, v, t).unwrap();
    }
    assert_eq!(
        records(&seen),
        vec![
            kvt("A", "0+1".to_string(), 10),
            kvt("B", "0+2".to_string(), 15),
            kvt("A", "0+1-1+3".to_string(), 20),
            kvt("B", "0+2-2+4".to_string(), 18),
            kvt("C", "0+5".to_string(), 5),
            kvt("D", "0+6".to_string(), 25),
            kvt("B", "0+2-2+4-4+7".to_string(), 18),
            kvt("C", "0+5-5+8".to_string(), 10),
        ]
    );
}

/// `KTableAggregateTest.testAggRepartition`: rows move between groups (retraction,
/// then addition); a tombstone only retracts; a null key drops the row. Kafka's mapper
/// returns `KeyValue.pair(null, value)` for "null" and a null pair for "NULL"; here a
/// key of `None` (which serializes to null) stands for both.
#[test]
fn test_agg_repartition() {
    let builder = StreamsBuilder::new();
    let table = builder
        .table::<String, String>("topic1")
        .group_by_with(
            |k: &String, v: &String| match k.as_str() {
                "null" | "NULL" => (None, v.clone()),
                _ => (Some(v.clone()), v.clone()),
            },
            Grouped::with(OptionSerde(StringSerde), StringSerde),
        )
        .aggregate_with(
            string_init,
            |_: &Option<String>, v: String, agg: String| format!("{agg}+{v}"),
            |_: &Option<String>, v: String, agg: String| format!("{agg}-{v}"),
            Materialized::as_("topic1-Canonized").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let topic = input(&driver, "topic1");
    topic.pipe_input_at("A", "1", 10).unwrap();
    topic.pipe_tombstone_at("A", 15).unwrap();
    for (k, v, t) in [
        ("A", "1", 12),
        ("B", "2", 20),
        ("null", "3", 25),
        ("B", "4", 23),
        ("NULL", "5", 24),
        ("B", "7", 22),
    ] {
        topic.pipe_input_at(k, v, t).unwrap();
    }
    let got: Vec<(String, String, i64)> = seen
        .take()
        .into_iter()
        .map(|(k, v, t)| (k.expect("no null group"), v.expect("an update"), t))
        .collect();
    assert_eq!(
        got,
        vec![
            kvt("1", "0+1".to_string(), 10),
            kvt("1", "0+1-1".to_string(), 15),
            kvt("1", "0+1-1+1".to_string(), 15),
            kvt("2", "0+2".to_string(), 20),
            kvt("2", "0+2-2".to_string(), 23),
            kvt("4", "0+4".to_string(), 23),
            kvt("4", "0+4-4".to_string(), 23),
            kvt("7", "0+7".to_string(), 22),
        ]
    );
}

/// `KTableAggregateTest.testCount` / `testCountWithInternalStore` (`testCountHelper`).
#[test]
fn test_count() {
    for named in [true, false] {
        let builder = StreamsBuilder::new();
        let grouped = builder
            .table::<String, String>("count-test-input")
            .group_by(|_: &String, v: &String| (v.clone(), v.clone()));
        let counts = if named {
            grouped.count_with(Materialized::as_("count"))
        } else {
            grouped.count()
        };
        let seen = capture(&counts.to_stream());
        let driver = driver(builder);
        let topic = input(&driver, "count-test-input");
        for (k, v, t) in [
            ("A", "green", 10),
            ("B", "green", 9),
            ("A", "blue", 12),
            ("C", "yellow", 15),
            ("D", "green", 11),
        ] {
            topic.pipe_input_at(k, v, t).unwrap();
        }
        assert_eq!(
            records(&seen),
            vec![
                kvt("green", 1, 10),
                kvt("green", 2, 10),
                kvt("green", 1, 12),
                kvt("blue", 1, 12),
                kvt("yellow", 1, 15),
                kvt("green", 2, 12),
            ]
        );
    }
}

/// `KTableAggregateTest.testRemoveOldBeforeAddNew`: within one group the old value is
/// subtracted before the new one is added.
#[test]
fn test_remove_old_before_add_new() {
    let builder = StreamsBuilder::new();
    let table = builder
        .table::<String, String>("count-test-input")
        .group_by(|k: &String, _: &String| (k[0..1].to_string(), k[1..2].to_string()))
        .aggregate_with(
            String::new,
            |_: &String, v: String, agg: String| agg + &v,
            |_: &String, v: String, agg: String| agg.replace(&v, ""),
            Materialized::as_("someStore").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let topic = input(&driver, "count-test-input");
    topic.pipe_input_at("11", "A", 10).unwrap();
    topic.pipe_input_at("12", "B", 8).unwrap();
    topic.pipe_tombstone_at("11", 12).unwrap();
    topic.pipe_input_at("12", "C", 6).unwrap();
    assert_eq!(
        records(&seen),
        vec![
            kvt("1", "1".to_string(), 10),
            kvt("1", "12".to_string(), 10),
            kvt("1", "2".to_string(), 12),
            kvt("1", "2".to_string(), 12),
        ]
    );
}

/// `KTableAggregateTest.testShouldNotSendTransientStateIfNotUpgrading`: a row updated
/// in place gives one update, never the transient count of 0.
#[test]
fn test_should_not_send_transient_state() {
    let builder = StreamsBuilder::new();
    builder
        .table::<String, String>("input-topic")
        .group_by(|k: &String, v: &String| (k.clone(), v.clone()))
        .count()
        .to_stream()
        .to("output-topic");
    let driver = driver(builder);
    let topic = input(&driver, "input-topic");
    topic.pipe_input_at("1", "", 8).unwrap();
    topic.pipe_input_at("1", "", 9).unwrap();
    let out = driver
        .create_output_topic::<String, Option<i64>>("output-topic")
        .unwrap();
    let got: Vec<(String, Option<i64>, i64)> = out
        .read_records_to_list()
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(got, vec![kvt("1", Some(1), 8), kvt("1", Some(1), 9)]);
}

/// `KGroupedTable::reduce`: the adder and subtractor, as `KTableAggregateTest`'s reduce
/// cases use them (Kafka's `KTableReduce`): the first value of a group is its aggregate.
#[test]
fn reduce_with_adder_and_subtractor() {
    let builder = StreamsBuilder::new();
    let table = builder
        .table::<String, i64>("in")
        .group_by(|_: &String, v: &i64| ((v % 2 == 0).to_string(), *v))
        .reduce(|a, b| a + b, |a, b| a - b);
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let topic = driver.create_input_topic::<String, i64>("in").unwrap();
    topic.pipe_input_at("a", 2, 1).unwrap();
    topic.pipe_input_at("b", 4, 2).unwrap();
    topic.pipe_input_at("a", 3, 3).unwrap();
    assert_eq!(
        records(&seen),
        vec![
            kvt("true", 2, 1),
            kvt("true", 6, 2),
            kvt("true", 4, 3),
            kvt("false", 3, 3),
        ]
    );
}

/// A source table in a versioned store with 5 minutes of history (Kafka's
/// `Stores.persistentVersionedKeyValueStore("versioned", Duration.ofMinutes(5))`).
fn versioned_table(builder: &StreamsBuilder, topic: &str) -> KTable<String, String> {
    builder.table_with(
        topic,
        Consumed::<String, String>::defaults(),
        Materialized::as_versioned("versioned", std::time::Duration::from_secs(300)),
    )
}

/// `KTableAggregateTest.testAggOfVersionedStore`: out-of-order updates of a versioned
/// table are not forwarded, so the aggregation ignores them.
#[test]
fn test_agg_of_versioned_store() {
    let builder = StreamsBuilder::new();
    let table = versioned_table(&builder, "topic1")
        .group_by_with(
            |k: &String, v: &String| match k.as_str() {
                "null" | "NULL" => (None, v.clone()),
                _ => (Some(v.clone()), v.clone()),
            },
            Grouped::with(OptionSerde(StringSerde), StringSerde),
        )
        .aggregate_with(
            string_init,
            |_: &Option<String>, v: String, agg: String| format!("{agg}+{v}"),
            |_: &Option<String>, v: String, agg: String| format!("{agg}-{v}"),
            Materialized::as_("topic1-Canonized").with_value_serde(StringSerde),
        );
    let seen = capture(&table.to_stream());
    let driver = driver(builder);
    let topic = input(&driver, "topic1");
    topic.pipe_input_at("A", "1", 10).unwrap();
    topic.pipe_tombstone_at("A", 15).unwrap();
    for (k, v, t) in [
        ("A", "1", 12), // out of order: ignored
        ("B", "2", 20),
        ("null", "3", 25),
        ("B", "4", 23),
        ("NULL", "5", 24),
        ("B", "7", 22), // out of order: ignored
    ] {
        topic.pipe_input_at(k, v, t).unwrap();
    }
    let got: Vec<(String, String, i64)> = seen
        .take()
        .into_iter()
        .map(|(k, v, t)| (k.expect("no null group"), v.expect("an update"), t))
        .collect();
    assert_eq!(
        got,
        vec![
            kvt("1", "0+1".to_string(), 10),
            kvt("1", "0+1-1".to_string(), 15),
            kvt("2", "0+2".to_string(), 20),
            kvt("2", "0+2-2".to_string(), 23),
            kvt("4", "0+4".to_string(), 23),
        ]
    );
    // The versioned store still answers for the past, the ignored updates included.
    let store = driver
        .versioned_store::<String, String>("versioned")
        .unwrap();
    let b = "B".to_string();
    assert_eq!(
        store.get(&b).unwrap().map(|v| (v.value, v.timestamp)),
        Some(("4".to_string(), 23))
    );
    assert_eq!(
        store
            .get_as_of(&b, 22)
            .unwrap()
            .map(|v| (v.value, v.timestamp)),
        Some(("7".to_string(), 22))
    );
    assert_eq!(
        store
            .get_as_of(&b, 21)
            .unwrap()
            .map(|v| (v.value, v.timestamp)),
        Some(("2".to_string(), 20))
    );
}

/// `KTableAggregateTest.testCountOfVersionedStore`.
#[test]
fn test_count_of_versioned_store() {
    let builder = StreamsBuilder::new();
    let counts = versioned_table(&builder, "count-test-input")
        .group_by(|_: &String, v: &String| (v.clone(), v.clone()))
        .count();
    let seen = capture(&counts.to_stream());
    let driver = driver(builder);
    let topic = input(&driver, "count-test-input");
    for (k, v, t) in [
        ("A", "green", 10),
        ("B", "green", 9),
        ("A", "blue", 12),
        ("A", "blue", 11), // out of order: ignored
        ("C", "yellow", 15),
        ("D", "green", 11),
    ] {
        topic.pipe_input_at(k, v, t).unwrap();
    }
    assert_eq!(
        records(&seen),
        vec![
            kvt("green", 1, 10),
            kvt("green", 2, 10),
            kvt("green", 1, 12),
            kvt("blue", 1, 12),
            kvt("yellow", 1, 15),
            kvt("green", 2, 12),
        ]
    );
}

/// A versioned store materializes source tables only: asking an aggregation for one is
/// a clear error when the topology is built.
#[test]
fn a_versioned_store_for_an_aggregation_is_refused_at_build() {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("in")
        .group_by_key()
        .count_with(Materialized::as_versioned(
            "counts",
            std::time::Duration::from_secs(60),
        ));
    let err = builder.build().unwrap_err();
    assert!(
        err.to_string()
            .contains("versioned store (Materialized::as_versioned) materializes a source table"),
        "{err}"
    );
}
