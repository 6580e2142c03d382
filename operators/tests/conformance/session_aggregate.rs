//! `org.apache.kafka.streams.kstream.internals.KStreamSessionWindowAggregateProcessorTest`
//! (the version for KIP-825's `closeTime = stream time - grace - gap`).
//!
//! Kafka's test drives the processor alone, with a cached session store in some tests
//! and an uncached one in others. weir's session stores always write through (each
//! record looks its neighbouring sessions up with a range scan), so every update goes
//! downstream as from Kafka's uncached store: the uncached tests are ported exactly;
//! the cached ones check the same store contents and the last update of every session,
//! and show the updates Kafka's cache compacted away.

use std::time::Duration;

use weir::prelude::*;
use weir::testing::TopologyTestDriver;
use weir::{Window, Windowed};

use super::{Captured, capture, driver};

const GAP_MS: i64 = 5 * 60 * 1000;
const STORE_NAME: &str = "session-store";

/// The test's aggregator: `initializer = 0`, `aggregator = agg + 1`, `sessionMerger =
/// one + two`, over `windows`, its updates captured as (key, value or tombstone, ts).
fn session_count(
    windows: SessionWindows,
) -> (TopologyTestDriver, Captured<Windowed<String>, Option<i64>>) {
    let builder = StreamsBuilder::new();
    let table = builder
        .stream::<String, String>("topic")
        .group_by_key()
        .windowed_by(windows)
        .aggregate_with(
            || 0i64,
            |_: &String, _: String, agg: i64| agg + 1,
            |_: &String, one: i64, two: i64| one + two,
            Materialized::as_(STORE_NAME).with_value_serde(I64Serde),
        );
    let seen = capture(&table.to_stream());
    (driver(builder), seen)
}

/// Kafka's `SessionWindows.with(GAP_MS)`: the deprecated default grace, 24 h less the gap.
fn default_windows() -> SessionWindows {
    SessionWindows::of_inactivity_gap_and_grace(
        Duration::from_millis(GAP_MS as u64),
        Duration::from_millis((24 * 3600 * 1000 - GAP_MS) as u64),
    )
    .unwrap()
}

fn sw(key: &str, start: i64, end: i64) -> Windowed<String> {
    Windowed::new(key.to_string(), Window::new(start, end))
}

fn pipe(driver: &TopologyTestDriver, records: &[(&str, &str, i64)]) {
    let input = driver
        .create_input_topic::<String, String>("topic")
        .unwrap();
    for (k, v, t) in records {
        input.pipe_input_at(*k, *v, *t).unwrap();
    }
}

fn sessions(driver: &TopologyTestDriver, key: &str) -> Vec<(Window, i64)> {
    driver
        .session_store::<String, i64>(STORE_NAME)
        .unwrap()
        .fetch(&key.to_string())
        .unwrap()
}

/// `shouldCreateSingleSessionWhenWithinGap`.
#[test]
fn should_create_single_session_when_within_gap() {
    let (driver, _) = session_count(default_windows());
    pipe(&driver, &[("john", "first", 0), ("john", "second", 500)]);
    assert_eq!(sessions(&driver, "john"), vec![(Window::new(0, 500), 2)]);
}

/// `shouldMergeSessions`: a record between two sessions merges them.
#[test]
fn should_merge_sessions() {
    let (driver, _) = session_count(default_windows());
    pipe(
        &driver,
        &[("mel", "first", 0), ("mel", "second", GAP_MS + 1)],
    );
    assert_eq!(
        sessions(&driver, "mel"),
        vec![
            (Window::new(0, 0), 1),
            (Window::new(GAP_MS + 1, GAP_MS + 1), 1)
        ]
    );
    pipe(&driver, &[("mel", "third", GAP_MS / 2)]);
    assert_eq!(
        sessions(&driver, "mel"),
        vec![(Window::new(0, GAP_MS + 1), 3)]
    );
}

/// `shouldUpdateSessionIfTheSameTime`.
#[test]
fn should_update_session_if_the_same_time() {
    let (driver, seen) = session_count(default_windows());
    pipe(&driver, &[("mel", "first", 0), ("mel", "second", 0)]);
    assert_eq!(sessions(&driver, "mel"), vec![(Window::new(0, 0), 2)]);
    // The merged session is the new record's own: no tombstone.
    assert_eq!(
        seen.take(),
        vec![(sw("mel", 0, 0), Some(1), 0), (sw("mel", 0, 0), Some(2), 0)]
    );
}

/// `shouldHaveMultipleSessionsForSameIdWhenTimestampApartBySessionGap`. Kafka (cached
/// store) forwards `mel@0/0 = 1`, `mel@G+1 = 2`, `mel@2G+2 = 3`; weir forwards every
/// update, ending in the same values.
#[test]
fn should_have_multiple_sessions_for_same_id_when_timestamp_apart_by_session_gap() {
    let (driver, seen) = session_count(default_windows());
    let t1 = GAP_MS + 1;
    let t2 = t1 + GAP_MS + 1;
    pipe(
        &driver,
        &[
            ("mel", "first", 0),
            ("mel", "second", t1),
            ("mel", "second", t1),
            ("mel", "third", t2),
            ("mel", "third", t2),
            ("mel", "third", t2),
        ],
    );
    assert_eq!(
        seen.take(),
        vec![
            (sw("mel", 0, 0), Some(1), 0),
            (sw("mel", t1, t1), Some(1), t1),
            (sw("mel", t1, t1), Some(2), t1),
            (sw("mel", t2, t2), Some(1), t2),
            (sw("mel", t2, t2), Some(2), t2),
            (sw("mel", t2, t2), Some(3), t2),
        ]
    );
}

/// `shouldRemoveMergedSessionsFromStateStore`.
#[test]
fn should_remove_merged_sessions_from_state_store() {
    let (driver, _) = session_count(default_windows());
    pipe(&driver, &[("a", "1", 0)]);
    assert_eq!(sessions(&driver, "a"), vec![(Window::new(0, 0), 1)]);
    pipe(&driver, &[("a", "2", 100)]);
    assert_eq!(sessions(&driver, "a"), vec![(Window::new(0, 100), 2)]);
}

/// `shouldHandleMultipleSessionsAndMerging`. Kafka's cached store forwards the last
/// value of each session at the flush (listed below as `kafka`); weir forwards each
/// update as it happens, the merged-away `d@0/0` as a tombstone at its end.
#[test]
fn should_handle_multiple_sessions_and_merging() {
    let (driver, seen) = session_count(default_windows());
    let (h, g1) = (GAP_MS / 2, GAP_MS + 1);
    pipe(
        &driver,
        &[
            ("a", "1", 0),
            ("b", "1", 0),
            ("c", "1", 0),
            ("d", "1", 0),
            ("d", "2", h),
            ("a", "2", g1),
            ("b", "2", g1),
            ("a", "3", g1 + h),
            ("c", "3", g1 + h),
        ],
    );
    let kafka = vec![
        (sw("a", 0, 0), Some(1), 0),
        (sw("b", 0, 0), Some(1), 0),
        (sw("c", 0, 0), Some(1), 0),
        (sw("d", 0, h), Some(2), h),
        (sw("b", g1, g1), Some(1), g1),
        (sw("a", g1, g1 + h), Some(2), g1 + h),
        (sw("c", g1 + h, g1 + h), Some(1), g1 + h),
    ];
    let weir = vec![
        (sw("a", 0, 0), Some(1), 0),
        (sw("b", 0, 0), Some(1), 0),
        (sw("c", 0, 0), Some(1), 0),
        (sw("d", 0, 0), Some(1), 0),
        (sw("d", 0, 0), None, 0),
        (sw("d", 0, h), Some(2), h),
        (sw("a", g1, g1), Some(1), g1),
        (sw("b", g1, g1), Some(1), g1),
        (sw("a", g1, g1), None, g1),
        (sw("a", g1, g1 + h), Some(2), g1 + h),
        (sw("c", g1 + h, g1 + h), Some(1), g1 + h),
    ];
    let got = seen.take();
    assert_eq!(got, weir);
    // The last update of every live session is Kafka's.
    for expected in &kafka {
        let last = got.iter().rev().find(|(k, _, _)| *k == expected.0).unwrap();
        assert_eq!(last, expected);
    }
}

/// `shouldGetAggregatedValuesFromValueGetter`, read through the driver's session store.
#[test]
fn should_get_aggregated_values_from_value_getter() {
    let (driver, _) = session_count(default_windows());
    pipe(
        &driver,
        &[
            ("a", "1", 0),
            ("a", "1", GAP_MS + 1),
            ("a", "2", GAP_MS + 1),
        ],
    );
    assert_eq!(
        sessions(&driver, "a"),
        vec![
            (Window::new(0, 0), 1),
            (Window::new(GAP_MS + 1, GAP_MS + 1), 2)
        ]
    );
}

/// `shouldImmediatelyForwardNewSessionWhenNonCachedStore`.
#[test]
fn should_immediately_forward_new_session_when_non_cached_store() {
    let (driver, seen) = session_count(default_windows());
    pipe(&driver, &[("a", "1", 0), ("b", "1", 0), ("c", "1", 0)]);
    assert_eq!(
        seen.take(),
        vec![
            (sw("a", 0, 0), Some(1), 0),
            (sw("b", 0, 0), Some(1), 0),
            (sw("c", 0, 0), Some(1), 0),
        ]
    );
}

/// `shouldImmediatelyForwardRemovedSessionsWhenMerging`: the session merged away goes
/// as a tombstone carrying its own end, then the merged session at its end.
#[test]
fn should_immediately_forward_removed_sessions_when_merging() {
    let (driver, seen) = session_count(default_windows());
    pipe(&driver, &[("a", "1", 0), ("a", "1", 5)]);
    assert_eq!(
        seen.take(),
        vec![
            (sw("a", 0, 0), Some(1), 0),
            (sw("a", 0, 0), None, 0),
            (sw("a", 0, 5), Some(2), 5),
        ]
    );
}

/// `shouldLogAndMeterWhenSkippingLateRecordWithZeroGrace`: gap 10, grace 0; at stream
/// time 11 a record at 0 would create session [0,0], which ends before 11 - 10 - 0.
#[test]
fn should_log_and_meter_when_skipping_late_record_with_zero_grace() {
    let (driver, seen) = session_count(
        SessionWindows::of_inactivity_gap_and_grace(Duration::from_millis(10), Duration::ZERO)
            .unwrap(),
    );
    pipe(
        &driver,
        &[
            ("dummy", "dummy", 0),
            ("OnTime1", "1", 0),
            ("dummy", "dummy", 11),
        ],
    );
    assert_eq!(driver.dropped_records(), 0);
    pipe(&driver, &[("Late1", "1", 0)]);
    assert_eq!(driver.dropped_records(), 1);
    assert!(!seen.take().iter().any(|(k, _, _)| k.key == "Late1"));
}

/// `shouldLogAndMeterWhenSkippingLateRecordWithNonzeroGrace`: gap 10, grace 1; at
/// stream time 11 a record at 0 is still on time (older than stream time - grace, it
/// still lands in a session that is open), at 12 it is late.
#[test]
fn should_log_and_meter_when_skipping_late_record_with_nonzero_grace() {
    let (driver, seen) = session_count(
        SessionWindows::of_inactivity_gap_and_grace(
            Duration::from_millis(10),
            Duration::from_millis(1),
        )
        .unwrap(),
    );
    pipe(
        &driver,
        &[
            ("dummy", "dummy", 0),
            ("OnTime1", "1", 0),
            ("dummy", "dummy", 11),
            ("OnTime2", "1", 0),
            ("dummy", "dummy", 12),
        ],
    );
    assert_eq!(driver.dropped_records(), 0);
    pipe(&driver, &[("Late1", "1", 0)]);
    assert_eq!(driver.dropped_records(), 1);
    let got = seen.take();
    assert!(got.contains(&(sw("OnTime2", 0, 0), Some(1), 0)));
    assert!(!got.iter().any(|(k, _, _)| k.key == "Late1"));
}
