//! `org.apache.kafka.streams.kstream.internals.suppress.KTableSuppressProcessorTest`,
//! through the DSL: Kafka's test hands the processor `Change`s directly; here the
//! same changes come from a table (or a windowed count) feeding `suppress`, with the
//! test's keys, timestamps and expectations.

use std::time::Duration;

use weir::prelude::*;
use weir::testing::TopologyTestDriver;

use super::driver;

const ARBITRARY_LONG: i64 = 5;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A table of "input" suppressed as `suppressed`, written to "output".
fn table_through(suppressed: Suppressed) -> TopologyTestDriver {
    let builder = StreamsBuilder::new();
    builder
        .table::<String, i64>("input")
        .suppress(suppressed)
        .to_stream()
        .to("output");
    driver(builder)
}

/// A windowed count of "input" (windows of `size` with `grace`) through final-results
/// suppression, written to "output" with Kafka's key format.
fn final_results(size: u64, grace: u64) -> TopologyTestDriver {
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(ms(size), ms(grace)).unwrap())
        .count_with(Materialized::default().without_caching())
        .suppress(Suppressed::until_window_closes(BufferConfig::unbounded()))
        .to_stream()
        .map(|k, v| {
            (
                format!("[{}@{}/{}]", k.key, k.window.start, k.window.end),
                v,
            )
        })
        .to("output");
    driver(builder)
}

fn read(driver: &TopologyTestDriver) -> Vec<(String, Option<i64>, i64)> {
    driver
        .create_output_topic::<String, Option<i64>>("output")
        .unwrap()
        .read_records_to_list()
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect()
}

fn kvt(k: &str, v: Option<i64>, t: i64) -> (String, Option<i64>, i64) {
    (k.to_string(), v, t)
}

/// `zeroTimeLimitShouldImmediatelyEmit`.
#[test]
fn zero_time_limit_should_immediately_emit() {
    let d = table_through(Suppressed::until_time_limit(
        Duration::ZERO,
        BufferConfig::unbounded(),
    ));
    let input = d.create_input_topic::<String, i64>("input").unwrap();
    input
        .pipe_input_at("hey", ARBITRARY_LONG, ARBITRARY_LONG)
        .unwrap();
    assert_eq!(
        read(&d),
        vec![kvt("hey", Some(ARBITRARY_LONG), ARBITRARY_LONG)]
    );
}

/// `intermediateSuppressionShouldBufferAndEmitLater`.
#[test]
fn intermediate_suppression_should_buffer_and_emit_later() {
    let d = table_through(Suppressed::until_time_limit(
        ms(1),
        BufferConfig::unbounded(),
    ));
    let input = d.create_input_topic::<String, i64>("input").unwrap();
    input.pipe_input_at("hey", 1, 0).unwrap();
    assert_eq!(read(&d), vec![]);
    input.pipe_tombstone_at("tick", 1).unwrap();
    assert_eq!(read(&d), vec![kvt("hey", Some(1), 0)]);
}

/// `finalResultsSuppressionShouldBufferAndEmitAtGraceExpiration`: a window of 1 ms
/// ending at 100 with 1 ms of grace is emitted at stream time 101, not 100.
#[test]
fn final_results_suppression_should_buffer_and_emit_at_grace_expiration() {
    let d = final_results(1, 1);
    let input = d.create_input_topic::<String, String>("input").unwrap();
    input.pipe_input_at("hey", "", 99).unwrap();
    assert_eq!(read(&d), vec![]);
    input.pipe_input_at("dummyKey1", "", 100).unwrap();
    assert_eq!(read(&d), vec![]);
    input.pipe_input_at("dummyKey2", "", 101).unwrap();
    assert_eq!(read(&d), vec![kvt("[hey@99/100]", Some(1), 99)]);
}

/// `finalResultsWithZeroGraceShouldStillBufferUntilTheWindowEnd`: a record in the past
/// of a window ending in the future waits for the end, even with no grace.
#[test]
fn final_results_with_zero_grace_should_still_buffer_until_the_window_end() {
    let d = final_results(100, 0);
    let input = d.create_input_topic::<String, String>("input").unwrap();
    input.pipe_input_at("hey", "", 5).unwrap();
    assert_eq!(read(&d), vec![]);
    input.pipe_input_at("dummyKey", "", 100).unwrap();
    assert_eq!(read(&d), vec![kvt("[hey@0/100]", Some(1), 5)]);
}

/// `suppressShouldNotDropTombstonesForKTable`: a table's delete goes through a time
/// limit of 0 (a tombstone of a key emitted before must reach downstream).
#[test]
fn suppress_should_not_drop_tombstones_for_ktable() {
    let d = table_through(Suppressed::until_time_limit(
        Duration::ZERO,
        BufferConfig::max_records(0),
    ));
    let input = d.create_input_topic::<String, i64>("input").unwrap();
    input.pipe_input_at("hey", ARBITRARY_LONG, 50).unwrap();
    input.pipe_tombstone_at("hey", 100).unwrap();
    assert_eq!(
        read(&d),
        vec![kvt("hey", Some(ARBITRARY_LONG), 50), kvt("hey", None, 100)]
    );
}

/// `suppressShouldEmitWhenOverRecordCapacity`: a second key over a bound of one record
/// pushes the first out (full buffers of `until_time_limit` emit early by default, as in
/// Kafka Streams).
#[test]
fn suppress_should_emit_when_over_record_capacity() {
    let d = table_through(Suppressed::until_time_limit(
        Duration::from_secs(100 * 86_400),
        BufferConfig::max_records(1),
    ));
    let input = d.create_input_topic::<String, i64>("input").unwrap();
    input.pipe_input_at("hey", ARBITRARY_LONG, 100).unwrap();
    input
        .pipe_input_at("dummyKey", ARBITRARY_LONG, 101)
        .unwrap();
    assert_eq!(read(&d), vec![kvt("hey", Some(ARBITRARY_LONG), 100)]);
}

/// `suppressShouldShutDownWhenOverRecordCapacity`: with `shutDownWhenFull`, the query
/// stops with Kafka's message instead of emitting early.
#[test]
fn suppress_should_shut_down_when_over_record_capacity() {
    let d = table_through(
        Suppressed::until_time_limit(
            Duration::from_secs(100 * 86_400),
            BufferConfig::max_records(1).shut_down_when_full(),
        )
        .with_name("suppress"),
    );
    let input = d.create_input_topic::<String, i64>("input").unwrap();
    input.pipe_input_at("hey", ARBITRARY_LONG, 100).unwrap();
    let err = input
        .pipe_input_at("dummyKey", ARBITRARY_LONG, 101)
        .unwrap_err();
    assert!(
        err.to_string().contains("exceeded its max capacity"),
        "{err}"
    );
    assert_eq!(read(&d), vec![]);
}
