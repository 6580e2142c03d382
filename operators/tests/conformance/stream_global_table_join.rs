//! `org.apache.kafka.streams.kstream.internals.KStreamGlobalKTableJoinTest` and
//! `KStreamGlobalKTableLeftJoinTest`: a stream of `Integer → String` whose value may
//! carry the global table's key after a comma (`"X0,FKey0"`), joined with a global
//! table of `String → String`; Kafka's `MockValueJoiner.TOSTRING_JOINER` (`v1 + "+" +
//! v2`, `null` for a missing row). The stream's input topic starts at time 0 and moves
//! on by 1 ms per record, as the Java test's `createInputTopic(.., Instant 0, 1 ms)`.
//!
//! Not ported: the tests with a null stream key (`shouldJoinOnNullKey`,
//! `shouldNotJoinOnNullKeyMapperValuesWithNullKeys`: a weir key is never null; a
//! nullable key is an `Option` type of the user's choosing), the versioned global
//! table variants (weir's global tables are not versioned) and the joiner-with-key
//! variants.

use std::time::Duration;

use weir::prelude::*;
use weir::testing::{TestInputTopic, TopologyTestDriver};

use super::{Captured, Kvt, capture, driver};

const EXPECTED_KEYS: [i32; 4] = [0, 1, 2, 3];

struct Join {
    driver: TopologyTestDriver,
    stream: TestInputTopic<i32, String>,
    table: TestInputTopic<String, Option<String>>,
    seen: Captured<i32, String>,
}

/// The Java test's key mapper: the second comma-separated token, else null. (Its
/// signature is the one `join_global` calls.)
#[allow(clippy::ptr_arg)]
fn key_mapper(_k: &i32, v: &String) -> Option<String> {
    let v: &str = v;
    v.split(',').nth(1).map(str::to_string)
}

impl Join {
    fn new(left: bool) -> Self {
        let builder = StreamsBuilder::new();
        let stream = builder.stream::<i32, String>("streamTopic");
        let table = builder.global_table::<String, String>("globalTableTopic");
        let joined = if left {
            stream.left_join_global(&table, key_mapper, |v: &String, t: Option<&String>| {
                format!("{v}+{}", t.map_or("null", String::as_str))
            })
        } else {
            stream.join_global(&table, key_mapper, |v: &String, t: &String| {
                format!("{v}+{t}")
            })
        };
        let seen = capture(&joined);
        let driver = driver(builder);
        let stream = driver
            .create_input_topic("streamTopic")
            .unwrap()
            .with_time(0, Duration::from_millis(1));
        let table = driver.create_input_topic("globalTableTopic").unwrap();
        Join {
            driver,
            stream,
            table,
            seen,
        }
    }

    fn push_to_stream(&self, count: usize, prefix: &str, include_foreign_key: bool) {
        for k in EXPECTED_KEYS.iter().take(count) {
            let mut value = format!("{prefix}{k}");
            if include_foreign_key {
                value.push_str(&format!(",FKey{k}"));
            }
            self.stream.pipe_input(*k, value).unwrap();
        }
    }

    fn push_to_global_table(&self, count: usize, prefix: &str) {
        for k in EXPECTED_KEYS.iter().take(count) {
            self.table
                .pipe_input(format!("FKey{k}"), Some(format!("{prefix}{k}")))
                .unwrap();
        }
    }

    fn push_null_value_to_global_table(&self, count: usize) {
        for k in EXPECTED_KEYS.iter().take(count) {
            self.table.pipe_input(format!("FKey{k}"), None).unwrap();
        }
    }

    fn take(&self) -> Vec<Kvt<i32, String>> {
        self.seen.take()
    }

    /// Keys and values only (the left-join test checks no timestamps).
    fn take_kv(&self) -> Vec<(i32, String)> {
        self.take().into_iter().map(|(k, v, _)| (k, v)).collect()
    }
}

fn kvt(k: i32, v: &str, t: i64) -> Kvt<i32, String> {
    (k, v.to_string(), t)
}

fn kv(k: i32, v: &str) -> (i32, String) {
    (k, v.to_string())
}

/// `KStreamGlobalKTableJoinTest.shouldNotRequireCopartitioning`: the global table is
/// read by a global sub-topology of its own (no task per partition, no
/// co-partitioning), and the stream is not repartitioned.
#[test]
fn should_not_require_copartitioning() {
    let builder = StreamsBuilder::new();
    let stream = builder.stream::<i32, String>("streamTopic");
    let table = builder.global_table::<String, String>("globalTableTopic");
    let _ = stream.join_global(&table, key_mapper, |v: &String, t: &String| {
        format!("{v}+{t}")
    });
    let description = builder.build().unwrap().describe().to_string();
    assert!(
        description.contains("for global store (will not generate tasks)"),
        "{description}"
    );
    assert!(!description.contains("repartition"), "{description}");
}

/// `KStreamGlobalKTableJoinTest.shouldNotJoinWithEmptyGlobalTableOnStreamUpdates`.
#[test]
fn should_not_join_with_empty_global_table_on_stream_updates() {
    let j = Join::new(false);
    j.push_to_stream(2, "X", true);
    assert_eq!(j.take(), vec![]);
}

/// `KStreamGlobalKTableJoinTest.shouldNotJoinOnGlobalTableUpdates`.
#[test]
fn should_not_join_on_global_table_updates() {
    let j = Join::new(false);
    j.push_to_stream(2, "X", true);
    assert_eq!(j.take(), vec![]);
    j.push_to_global_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take(),
        vec![kvt(0, "X0,FKey0+Y0", 2), kvt(1, "X1,FKey1+Y1", 3)]
    );
    j.push_to_global_table(4, "YY");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0,FKey0+YY0", 6),
            kvt(1, "X1,FKey1+YY1", 7),
            kvt(2, "X2,FKey2+YY2", 8),
            kvt(3, "X3,FKey3+YY3", 9),
        ]
    );
    j.push_to_global_table(4, "YYY");
    assert_eq!(j.take(), vec![]);
}

/// `KStreamGlobalKTableJoinTest.shouldJoinOnlyIfMatchFoundOnStreamUpdates`.
#[test]
fn should_join_only_if_match_found_on_stream_updates() {
    let j = Join::new(false);
    j.push_to_global_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take(),
        vec![kvt(0, "X0,FKey0+Y0", 0), kvt(1, "X1,FKey1+Y1", 1)]
    );
}

/// `KStreamGlobalKTableJoinTest.shouldClearGlobalTableEntryOnNullValueUpdates`.
#[test]
fn should_clear_global_table_entry_on_null_value_updates() {
    let j = Join::new(false);
    j.push_to_global_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0,FKey0+Y0", 0),
            kvt(1, "X1,FKey1+Y1", 1),
            kvt(2, "X2,FKey2+Y2", 2),
            kvt(3, "X3,FKey3+Y3", 3),
        ]
    );
    j.push_null_value_to_global_table(2);
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "XX", true);
    assert_eq!(
        j.take(),
        vec![kvt(2, "XX2,FKey2+Y2", 6), kvt(3, "XX3,FKey3+Y3", 7)]
    );
}

/// `KStreamGlobalKTableJoinTest.shouldNotJoinOnNullKeyMapperValues`: nothing joined,
/// and the four records are counted as dropped (Kafka's `dropped-records-total` 4.0).
#[test]
fn should_not_join_on_null_key_mapper_values() {
    let j = Join::new(false);
    j.push_to_global_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "XXX", false);
    assert_eq!(j.take(), vec![]);
    assert_eq!(j.driver.dropped_records(), 4);
}

/// `KStreamGlobalKTableLeftJoinTest.shouldNotJoinWithEmptyGlobalTableOnStreamUpdates`.
#[test]
fn left_should_not_join_with_empty_global_table_on_stream_updates() {
    let j = Join::new(true);
    j.push_to_stream(2, "X", true);
    assert_eq!(
        j.take_kv(),
        vec![kv(0, "X0,FKey0+null"), kv(1, "X1,FKey1+null")]
    );
}

/// `KStreamGlobalKTableLeftJoinTest.shouldNotJoinOnGlobalTableUpdates`.
#[test]
fn left_should_not_join_on_global_table_updates() {
    let j = Join::new(true);
    j.push_to_stream(2, "X", true);
    assert_eq!(
        j.take_kv(),
        vec![kv(0, "X0,FKey0+null"), kv(1, "X1,FKey1+null")]
    );
    j.push_to_global_table(2, "Y");
    assert_eq!(j.take_kv(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take_kv(),
        vec![
            kv(0, "X0,FKey0+Y0"),
            kv(1, "X1,FKey1+Y1"),
            kv(2, "X2,FKey2+null"),
            kv(3, "X3,FKey3+null"),
        ]
    );
    j.push_to_global_table(4, "YY");
    assert_eq!(j.take_kv(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take_kv(),
        vec![
            kv(0, "X0,FKey0+YY0"),
            kv(1, "X1,FKey1+YY1"),
            kv(2, "X2,FKey2+YY2"),
            kv(3, "X3,FKey3+YY3"),
        ]
    );
    j.push_to_global_table(4, "YYY");
    assert_eq!(j.take_kv(), vec![]);
}

/// `KStreamGlobalKTableLeftJoinTest.shouldJoinRegardlessIfMatchFoundOnStreamUpdates`;
/// each output carries its stream record's timestamp.
#[test]
fn left_should_join_regardless_if_match_found_on_stream_updates() {
    let j = Join::new(true);
    j.push_to_global_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0,FKey0+Y0", 0),
            kvt(1, "X1,FKey1+Y1", 1),
            kvt(2, "X2,FKey2+null", 2),
            kvt(3, "X3,FKey3+null", 3),
        ]
    );
}

/// `KStreamGlobalKTableLeftJoinTest.shouldClearGlobalTableEntryOnNullValueUpdates`.
#[test]
fn left_should_clear_global_table_entry_on_null_value_updates() {
    let j = Join::new(true);
    j.push_to_global_table(4, "Y");
    assert_eq!(j.take_kv(), vec![]);
    j.push_to_stream(4, "X", true);
    assert_eq!(
        j.take_kv(),
        vec![
            kv(0, "X0,FKey0+Y0"),
            kv(1, "X1,FKey1+Y1"),
            kv(2, "X2,FKey2+Y2"),
            kv(3, "X3,FKey3+Y3"),
        ]
    );
    j.push_null_value_to_global_table(2);
    assert_eq!(j.take_kv(), vec![]);
    j.push_to_stream(4, "XX", true);
    assert_eq!(
        j.take_kv(),
        vec![
            kv(0, "XX0,FKey0+null"),
            kv(1, "XX1,FKey1+null"),
            kv(2, "XX2,FKey2+Y2"),
            kv(3, "XX3,FKey3+Y3"),
        ]
    );
}

/// `KStreamGlobalKTableLeftJoinTest.shouldJoinOnNullKeyMapperValues`: a left join
/// joins a record the mapper gives no key with null, and drops nothing.
#[test]
fn left_should_join_on_null_key_mapper_values() {
    let j = Join::new(true);
    j.push_to_global_table(4, "Y");
    assert_eq!(j.take_kv(), vec![]);
    j.push_to_stream(4, "XXX", false);
    assert_eq!(
        j.take_kv(),
        vec![
            kv(0, "XXX0+null"),
            kv(1, "XXX1+null"),
            kv(2, "XXX2+null"),
            kv(3, "XXX3+null"),
        ]
    );
    assert_eq!(j.driver.dropped_records(), 0);
}

/// weir: a processor other than the global table's own cannot write its store (Kafka's
/// global stores are read-only to stream tasks); the query fails with a clear error.
#[test]
fn a_stream_processor_cannot_write_a_global_store() {
    struct Writer;
    impl Processor<i32, String, i32, String> for Writer {
        fn process(
            &mut self,
            r: Record<i32, String>,
            ctx: &mut ProcessorContext<'_, i32, String>,
        ) -> Result<()> {
            ctx.store::<String, String>("products")?
                .put(&r.value, &"stolen".to_string())?;
            ctx.forward(r)
        }
    }
    let builder = StreamsBuilder::new();
    let _ = builder.global_table_with::<String, String>(
        "globalTableTopic",
        Consumed::defaults(),
        Materialized::as_("products"),
    );
    let _: KStream<i32, String> = builder
        .stream::<i32, String>("streamTopic")
        .process(|| Writer);
    let d = driver(builder);
    let err = d
        .create_input_topic::<i32, String>("streamTopic")
        .unwrap()
        .pipe_input(1, "k".to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
}
