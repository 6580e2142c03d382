//! `org.apache.kafka.streams.kstream.internals.KStreamKTableJoinWithGraceTest`: a stream
//! of `Integer → String` joined with a versioned table (5 minutes of history) with a
//! grace period (`Joined.with(.., "Grace", grace)`, KIP-923): stream records wait until
//! stream time has passed them by the grace period, then join the row as of their own
//! timestamp; records already that old join at once.

use std::time::Duration;

use weir::prelude::*;
use weir::testing::{TestInputTopic, TopologyTestDriver};

use super::{Captured, Kvt, capture, driver};

const EXPECTED_KEYS: [i32; 4] = [0, 1, 2, 3];

struct Join {
    /// Kept alive: dropping it closes the tasks and deletes their state.
    _driver: TopologyTestDriver,
    stream: TestInputTopic<i32, String>,
    table: TestInputTopic<i32, Option<String>>,
    seen: Captured<i32, String>,
}

impl Join {
    /// Kafka's `makeJoin(grace)`.
    fn new(grace_ms: u64) -> Self {
        let builder = StreamsBuilder::new();
        let stream = builder.stream::<i32, String>("streamTopic");
        let table = builder.table_with(
            "tableTopic",
            Consumed::<i32, String>::defaults(),
            Materialized::as_versioned("V-grace", Duration::from_secs(300)),
        );
        let joined = stream.join_with(
            &table,
            |v: &String, t: &String| format!("{v}+{t}"),
            Joined::defaults()
                .with_name("Grace")
                .with_grace_period(Duration::from_millis(grace_ms)),
        );
        let seen = capture(&joined);
        let driver = driver(builder);
        let stream = driver.create_input_topic("streamTopic").unwrap();
        let table = driver.create_input_topic("tableTopic").unwrap();
        Join {
            _driver: driver,
            stream,
            table,
            seen,
        }
    }

    /// Kafka's `pushToStream`: the i-th key at timestamp i.
    fn push_to_stream(&self, count: usize, prefix: &str) {
        for (i, k) in EXPECTED_KEYS.iter().take(count).enumerate() {
            self.stream
                .pipe_input_at(*k, format!("{prefix}{k}"), i as i64)
                .unwrap();
        }
    }

    /// Kafka's `pushToTable`: every row at timestamp 0.
    fn push_to_table(&self, count: usize, prefix: &str) {
        for k in EXPECTED_KEYS.iter().take(count) {
            self.table
                .pipe_input_at(*k, Some(format!("{prefix}{k}")), 0)
                .unwrap();
        }
    }

    fn take(&self) -> Vec<Kvt<i32, String>> {
        self.seen.take()
    }
}

fn kvt(k: i32, v: &str, ts: i64) -> Kvt<i32, String> {
    (k, v.to_string(), ts)
}

/// `shouldFailIfTableIsNotVersioned`.
#[test]
fn should_fail_if_table_is_not_versioned() {
    let builder = StreamsBuilder::new();
    let stream = builder.stream::<String, String>("topic");
    let table = builder.table::<String, String>("topic2");
    stream
        .join_with(
            &table,
            |a: &String, b: &String| format!("{a}{b}"),
            Joined::defaults()
                .with_name("first-join")
                .with_grace_period(Duration::from_millis(6)),
        )
        .to("out-one");
    let e = builder.build().unwrap_err().to_string();
    assert!(e.contains("needs a versioned table"), "{e}");
}

/// A filter of a source table, joined with a grace period.
fn grace_join_over_filtered(materialized: Materialized<String, String>) -> String {
    let builder = StreamsBuilder::new();
    let stream = builder.stream::<String, String>("topic");
    let source = builder.table_with(
        "topic2",
        Consumed::<String, String>::defaults(),
        materialized,
    );
    let table = source.filter(|_, _| true);
    stream
        .join_with(
            &table,
            |a: &String, b: &String| format!("{a}{b}"),
            Joined::defaults()
                .with_name("first-join")
                .with_grace_period(Duration::from_millis(6)),
        )
        .to("out-one");
    builder.build().unwrap_err().to_string()
}

/// `shouldFailIfTableIsNotVersionedButMaterializationIsInherited`: a filter of a
/// plain table has no versions to join with.
#[test]
fn should_fail_if_table_is_not_versioned_but_materialization_is_inherited() {
    let e = grace_join_over_filtered(Materialized::as_("tableB").in_memory());
    assert!(e.contains("needs the table's own versioned store"), "{e}");
}

/// `shouldNotFailIfTableIsVersionedButMaterializationIsInherited`, where weir
/// deliberately differs: Kafka Streams joins a filter of a versioned table through the
/// parent's versioned store; weir materializes a derived table into a plain store of
/// its own (no history, and out-of-order updates of the parent never reach it), so it
/// refuses the topology with a message saying what to do instead.
#[test]
fn should_not_fail_if_table_is_versioned_but_materialization_is_inherited_weir_refuses() {
    let e = grace_join_over_filtered(Materialized::as_versioned(
        "tableB",
        Duration::from_secs(300),
    ));
    assert!(
        e.contains("is filtered or mapped") && e.contains("join the versioned source table"),
        "{e}"
    );
}

/// `shouldFailIfGracePeriodIsLongerThanHistoryRetention` (5 minutes of history, a grace
/// of 6): Kafka's "History retention must be at least grace period."; weir's message
/// says the same, with the figures.
#[test]
fn should_fail_if_grace_period_is_longer_than_history_retention() {
    let builder = StreamsBuilder::new();
    let stream = builder.stream::<String, String>("topic");
    let table = builder.table_with(
        "topic2",
        Consumed::<String, String>::defaults(),
        Materialized::as_versioned("tableB", Duration::from_secs(300)),
    );
    stream
        .join_with(
            &table,
            |a: &String, b: &String| format!("{a}{b}"),
            Joined::defaults()
                .with_name("first-join")
                .with_grace_period(Duration::from_secs(360)),
        )
        .to("out-one");
    let e = builder.build().unwrap_err().to_string();
    assert!(
        e.contains("history retention must be at least the grace period"),
        "{e}"
    );
}

/// `shouldDelayJoinByGracePeriod`.
#[test]
fn should_delay_join_by_grace_period() {
    let j = Join::new(2);
    j.push_to_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0), kvt(1, "X1+Y1", 1)]);
    j.push_to_table(4, "YY");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+YY0", 0), kvt(1, "X1+YY1", 1)]);
    // (Kafka's later version of the test) a record at 7 releases both pushes' X2, X3.
    j.stream.pipe_input_at(5, "test".to_string(), 7).unwrap();
    assert_eq!(
        j.take(),
        vec![
            kvt(2, "X2+YY2", 2),
            kvt(2, "X2+YY2", 2),
            kvt(3, "X3+YY3", 3),
            kvt(3, "X3+YY3", 3),
        ]
    );
    j.push_to_table(4, "YYY");
    assert_eq!(j.take(), vec![]);
}

/// `shouldHandleLateJoinsWithGracePeriod`: a record already past the grace period is
/// joined at once and releases nothing else.
#[test]
fn should_handle_late_joins_with_grace_period() {
    let j = Join::new(2);
    j.push_to_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0), kvt(1, "X1+Y1", 1)]);
    j.push_to_stream(1, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0)]);
}

/// `shouldNotJoinWithEmptyTableOnStreamUpdates`.
#[test]
fn should_not_join_with_empty_table_on_stream_updates() {
    let j = Join::new(1);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![]);
}

/// `shouldNotJoinOnTableUpdates`: the buffered records join the rows as of their
/// timestamps when released, and table updates produce nothing.
#[test]
fn should_not_join_on_table_updates() {
    let j = Join::new(1);
    j.push_to_stream(2, "X");
    assert_eq!(j.take(), vec![]);
    j.push_to_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![kvt(0, "X0+Y0", 0), kvt(1, "X1+Y1", 1), kvt(1, "X1+Y1", 1)]
    );
    j.push_to_table(4, "YY");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+YY0", 0),
            kvt(1, "X1+YY1", 1),
            kvt(2, "X2+YY2", 2)
        ]
    );
    j.push_to_table(4, "YYY");
    assert_eq!(j.take(), vec![]);
}

/// `shouldJoinOnlyIfMatchFoundOnStreamUpdates`.
#[test]
fn should_join_only_if_match_found_on_stream_updates() {
    let j = Join::new(3);
    j.push_to_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0)]);
}

/// `shouldClearTableEntryOnNullValueUpdates`.
#[test]
fn should_clear_table_entry_on_null_value_updates() {
    let j = Join::new(2);
    j.push_to_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0), kvt(1, "X1+Y1", 1)]);
    // Kafka's pushNullValueToTable: tombstones for the first two keys, at timestamp 0.
    for k in EXPECTED_KEYS.iter().take(2) {
        j.table.pipe_tombstone_at(*k, 0).unwrap();
    }
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "XX");
    assert_eq!(j.take(), vec![]);
}

/// weir: a record that waits sees a table update that arrives after it but is older
/// than it — what the grace period is for. (It carries headers: they go through the
/// buffer's encoding, whose round trip `join_grace.rs` tests.)
#[test]
fn a_buffered_record_sees_a_later_arriving_older_row() {
    let j = Join::new(10);
    let mut headers = Headers::new();
    headers.add("trace", Some(b"t-1".to_vec()));
    j.stream
        .pipe_record(Record::new(0, "X0".to_string(), 5).with_headers(headers))
        .unwrap();
    j.table.pipe_input_at(0, Some("Y0".to_string()), 3).unwrap();
    assert_eq!(j.take(), vec![]);
    j.stream.pipe_input_at(1, "X1".to_string(), 15).unwrap();
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 5)]);
}
