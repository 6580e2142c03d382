//! `org.apache.kafka.streams.kstream.TimeWindowsTest`. A `Duration` cannot be negative,
//! so Kafka's cases for negative sizes, advances and grace periods cannot be written;
//! weir has no deprecated `of(size)` nor a separate `grace()`, so those cases do not
//! apply either.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use weir::{Error, TimeWindows, Window};

const ANY_SIZE: u64 = 123;
const ANY_GRACE: u64 = 1024;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn no_grace(size: u64) -> TimeWindows {
    TimeWindows::of_size_with_no_grace(ms(size)).unwrap()
}

fn with_grace(size: u64, grace: u64) -> TimeWindows {
    TimeWindows::of_size_and_grace(ms(size), ms(grace)).unwrap()
}

fn hash(w: &TimeWindows) -> u64 {
    let mut h = DefaultHasher::new();
    w.hash(&mut h);
    h.finish()
}

/// `shouldSetWindowSize`.
#[test]
fn should_set_window_size() {
    assert_eq!(no_grace(ANY_SIZE).size_ms(), ANY_SIZE as i64);
    assert_eq!(with_grace(ANY_SIZE, ANY_GRACE).size_ms(), ANY_SIZE as i64);
    assert_eq!(with_grace(ANY_SIZE, ANY_GRACE).grace_ms(), ANY_GRACE as i64);
}

/// `shouldSetWindowAdvance`.
#[test]
fn should_set_window_advance() {
    let any_advance = 4;
    assert_eq!(
        no_grace(ANY_SIZE)
            .advance_by(ms(any_advance))
            .unwrap()
            .advance_ms(),
        any_advance as i64
    );
}

/// `windowSizeMustNotBeZero`: refused when the windows are made, not when the topology
/// is built.
#[test]
fn window_size_must_not_be_zero() {
    assert!(matches!(
        TimeWindows::of_size_with_no_grace(ms(0)),
        Err(Error::Config(m)) if m.contains("window size")
    ));
}

/// `advanceIntervalMustNotBeZero`.
#[test]
fn advance_interval_must_not_be_zero() {
    assert!(matches!(
        no_grace(ANY_SIZE).advance_by(ms(0)),
        Err(Error::Config(_))
    ));
}

/// `advanceIntervalMustNotBeLargerThanWindowSize`.
#[test]
fn advance_interval_must_not_be_larger_than_window_size() {
    let err = no_grace(ANY_SIZE).advance_by(ms(ANY_SIZE + 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("between 1 ms and the window size (123 ms)"),
        "{err}"
    );
}

/// `gracePeriodShouldEnforceBoundaries`: zero grace is fine.
#[test]
fn grace_period_should_enforce_boundaries() {
    assert_eq!(with_grace(3, 0).grace_ms(), 0);
}

/// `shouldComputeWindowsForHoppingWindows`.
#[test]
fn should_compute_windows_for_hopping_windows() {
    let windows = no_grace(12).advance_by(ms(5)).unwrap();
    let matched = windows.windows_for(21);
    assert_eq!(matched.len() as i64, 12 / 5 + 1);
    assert_eq!(
        matched,
        vec![
            Window::new(10, 22),
            Window::new(15, 27),
            Window::new(20, 32)
        ]
    );
}

/// `shouldComputeWindowsForBarelyOverlappingHoppingWindows`.
#[test]
fn should_compute_windows_for_barely_overlapping_hopping_windows() {
    let windows = no_grace(6).advance_by(ms(5)).unwrap();
    assert_eq!(windows.windows_for(7), vec![Window::new(5, 11)]);
}

/// `shouldComputeWindowsForTumblingWindows`.
#[test]
fn should_compute_windows_for_tumbling_windows() {
    assert_eq!(no_grace(12).windows_for(21), vec![Window::new(12, 24)]);
}

/// `equalsAndHashcodeShouldBeValidForPositiveCases`.
#[test]
fn equals_and_hashcode_should_be_valid_for_positive_cases() {
    let pairs = [
        (no_grace(3), no_grace(3)),
        (
            no_grace(3).advance_by(ms(1)).unwrap(),
            no_grace(3).advance_by(ms(1)).unwrap(),
        ),
        (with_grace(3, 4), with_grace(3, 4)),
        (with_grace(3, 33), with_grace(3, 33)),
    ];
    for (a, b) in pairs {
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
    }
}

/// `equalsAndHashcodeShouldBeValidForNegativeCases`.
#[test]
fn equals_and_hashcode_should_be_valid_for_negative_cases() {
    let pairs = [
        (no_grace(9), no_grace(3)),
        (with_grace(9, 9), with_grace(3, 9)),
        (
            no_grace(3).advance_by(ms(2)).unwrap(),
            no_grace(3).advance_by(ms(1)).unwrap(),
        ),
        (with_grace(3, 2), with_grace(3, 1)),
        (with_grace(3, 9), with_grace(3, 4)),
        (
            with_grace(4, 2).advance_by(ms(2)).unwrap(),
            with_grace(3, 2).advance_by(ms(2)).unwrap(),
        ),
        (
            with_grace(3, 2).advance_by(ms(1)).unwrap(),
            with_grace(3, 2).advance_by(ms(2)).unwrap(),
        ),
        (
            with_grace(3, 1).advance_by(ms(2)).unwrap(),
            with_grace(3, 2).advance_by(ms(2)).unwrap(),
        ),
    ];
    for (a, b) in pairs {
        assert_ne!(a, b);
    }
}
