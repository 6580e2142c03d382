//! `org.apache.kafka.streams.kstream.internals.KStreamKTableJoinTest` and
//! `KStreamKTableLeftJoinTest`: a stream of `Integer → String` joined with a table of
//! the same types, Kafka's `MockValueJoiner.TOSTRING_JOINER` (`v1 + "+" + v2`, `null`
//! for a missing row).

use std::sync::{Arc, Mutex};

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
    /// Seeds the table's "random" timestamps (Kafka's test uses `Random`).
    seed: Arc<Mutex<u64>>,
}

impl Join {
    fn new(left: bool) -> Self {
        let builder = StreamsBuilder::new();
        let stream = builder.stream::<i32, String>("streamTopic");
        let table = builder.table::<i32, String>("tableTopic");
        let joined = if left {
            stream.left_join(&table, |v: &String, t: Option<&String>| {
                format!("{v}+{}", t.map_or("null", String::as_str))
            })
        } else {
            stream.join(&table, |v: &String, t: &String| format!("{v}+{t}"))
        };
        let seen = capture(&joined);
        let driver = driver(builder);
        let stream = driver.create_input_topic("streamTopic").unwrap();
        let table = driver.create_input_topic("tableTopic").unwrap();
        Join {
            _driver: driver,
            stream,
            table,
            seen,
            seed: Arc::new(Mutex::new(42)),
        }
    }

    fn push_to_stream(&self, count: usize, prefix: &str) {
        for (i, k) in EXPECTED_KEYS.iter().take(count).enumerate() {
            self.stream
                .pipe_input_at(*k, format!("{prefix}{k}"), i as i64)
                .unwrap();
        }
    }

    fn push_to_table(&self, count: usize, prefix: &str) {
        for k in EXPECTED_KEYS.iter().take(count) {
            let mut seed = self.seed.lock().unwrap();
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ts = (*seed >> 33) as i64 % i64::from(i32::MAX);
            self.table
                .pipe_input_at(*k, Some(format!("{prefix}{k}")), ts)
                .unwrap();
        }
    }

    fn push_null_value_to_table(&self) {
        for k in EXPECTED_KEYS.iter().take(2) {
            self.table.pipe_tombstone_at(*k, 0).unwrap();
        }
    }

    fn take(&self) -> Vec<Kvt<i32, String>> {
        self.seen.take()
    }
}

fn kvt(k: i32, v: &str, t: i64) -> Kvt<i32, String> {
    (k, v.to_string(), t)
}

/// `KStreamKTableJoinTest.shouldNotJoinWithEmptyTableOnStreamUpdates`.
#[test]
fn should_not_join_with_empty_table_on_stream_updates() {
    let j = Join::new(false);
    j.push_to_stream(2, "X");
    assert_eq!(j.take(), vec![]);
}

/// `KStreamKTableJoinTest.shouldNotJoinOnTableUpdates`.
#[test]
fn should_not_join_on_table_updates() {
    let j = Join::new(false);
    j.push_to_stream(2, "X");
    assert_eq!(j.take(), vec![]);
    j.push_to_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0), kvt(1, "X1+Y1", 1)]);
    j.push_to_table(4, "YY");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+YY0", 0),
            kvt(1, "X1+YY1", 1),
            kvt(2, "X2+YY2", 2),
            kvt(3, "X3+YY3", 3),
        ]
    );
    j.push_to_table(4, "YYY");
    assert_eq!(j.take(), vec![]);
}

/// `KStreamKTableJoinTest.shouldJoinOnlyIfMatchFoundOnStreamUpdates`.
#[test]
fn should_join_only_if_match_found_on_stream_updates() {
    let j = Join::new(false);
    j.push_to_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+Y0", 0), kvt(1, "X1+Y1", 1)]);
}

/// `KStreamKTableJoinTest.shouldClearTableEntryOnNullValueUpdates`.
#[test]
fn should_clear_table_entry_on_null_value_updates() {
    let j = Join::new(false);
    j.push_to_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+Y0", 0),
            kvt(1, "X1+Y1", 1),
            kvt(2, "X2+Y2", 2),
            kvt(3, "X3+Y3", 3),
        ]
    );
    j.push_null_value_to_table();
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "XX");
    assert_eq!(j.take(), vec![kvt(2, "XX2+Y2", 2), kvt(3, "XX3+Y3", 3)]);
}

/// `KStreamKTableJoinTest.shouldRequireCopartitionedStreams`: weir checks it when the
/// query starts, naming both topics and their partition counts.
#[test]
fn should_require_copartitioned_streams() {
    let broker = Broker::new();
    broker.create_topic("streamTopic", 2).unwrap();
    broker.create_topic("tableTopic", 3).unwrap();
    let builder = StreamsBuilder::new();
    let table = builder.table::<i32, String>("tableTopic");
    builder
        .stream::<i32, String>("streamTopic")
        .join(&table, |v: &String, t: &String| format!("{v}+{t}"))
        .to("out");
    broker.create_topic("out", 1).unwrap();
    let config = RuntimeConfig::builder().broker(broker).build().unwrap();
    let err = TopologyTestDriver::new(builder.build().unwrap(), config).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("co-partitioned"), "{msg}");
    assert!(
        msg.contains("'streamTopic' (2)") && msg.contains("'tableTopic' (3)"),
        "{msg}"
    );
}

/// `KStreamKTableLeftJoinTest.shouldJoinWithEmptyTableOnStreamUpdates`.
#[test]
fn left_should_join_with_empty_table_on_stream_updates() {
    let j = Join::new(true);
    j.push_to_stream(2, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+null", 0), kvt(1, "X1+null", 1)]);
}

/// `KStreamKTableLeftJoinTest.shouldNotJoinOnTableUpdates`.
#[test]
fn left_should_not_join_on_table_updates() {
    let j = Join::new(true);
    j.push_to_stream(2, "X");
    assert_eq!(j.take(), vec![kvt(0, "X0+null", 0), kvt(1, "X1+null", 1)]);
    j.push_to_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+Y0", 0),
            kvt(1, "X1+Y1", 1),
            kvt(2, "X2+null", 2),
            kvt(3, "X3+null", 3),
        ]
    );
    j.push_to_table(4, "YY");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+YY0", 0),
            kvt(1, "X1+YY1", 1),
            kvt(2, "X2+YY2", 2),
            kvt(3, "X3+YY3", 3),
        ]
    );
    j.push_to_table(4, "YYY");
    assert_eq!(j.take(), vec![]);
}

/// `KStreamKTableLeftJoinTest.shouldJoinRegardlessIfMatchFoundOnStreamUpdates`.
#[test]
fn left_should_join_regardless_if_match_found_on_stream_updates() {
    let j = Join::new(true);
    j.push_to_table(2, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+Y0", 0),
            kvt(1, "X1+Y1", 1),
            kvt(2, "X2+null", 2),
            kvt(3, "X3+null", 3),
        ]
    );
}

/// `KStreamKTableLeftJoinTest.shouldClearTableEntryOnNullValueUpdates`.
#[test]
fn left_should_clear_table_entry_on_null_value_updates() {
    let j = Join::new(true);
    j.push_to_table(4, "Y");
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "X");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "X0+Y0", 0),
            kvt(1, "X1+Y1", 1),
            kvt(2, "X2+Y2", 2),
            kvt(3, "X3+Y3", 3),
        ]
    );
    j.push_null_value_to_table();
    assert_eq!(j.take(), vec![]);
    j.push_to_stream(4, "XX");
    assert_eq!(
        j.take(),
        vec![
            kvt(0, "XX0+null", 0),
            kvt(1, "XX1+null", 1),
            kvt(2, "XX2+Y2", 2),
            kvt(3, "XX3+Y3", 3),
        ]
    );
}
