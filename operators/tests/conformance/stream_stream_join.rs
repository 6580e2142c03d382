//! `org.apache.kafka.streams.kstream.internals.KStreamKStreamJoinTest`,
//! `KStreamKStreamLeftJoinTest` and `KStreamKStreamOuterJoinTest`: two streams of `Integer → String` joined within a time
//! difference, Kafka's `MockValueJoiner.TOSTRING_JOINER` (`v1 + "+" + v2`, `null` for
//! a missing partner).

use std::time::Duration;

use weir::prelude::*;
use weir::testing::{TestInputTopic, TopologyTestDriver};

use super::{Captured, Kvt, capture, driver};

const EXPECTED_KEYS: [i32; 4] = [0, 1, 2, 3];

#[derive(Clone, Copy)]
enum Kind {
    Inner,
    Left,
    Outer,
}

struct Join {
    /// Kept alive: dropping it closes the tasks and deletes their state.
    _driver: TopologyTestDriver,
    topic1: TestInputTopic<i32, String>,
    topic2: TestInputTopic<i32, String>,
    seen: Captured<i32, String>,
}

impl Join {
    fn new(windows: JoinWindows) -> Self {
        Self::build(windows, Kind::Inner)
    }

    fn left(windows: JoinWindows) -> Self {
        Self::build(windows, Kind::Left)
    }

    fn outer(windows: JoinWindows) -> Self {
        Self::build(windows, Kind::Outer)
    }

    fn build(windows: JoinWindows, kind: Kind) -> Self {
        let builder = StreamsBuilder::new();
        let stream1 = builder.stream::<i32, String>("topic1");
        let stream2 = builder.stream::<i32, String>("topic2");
        let or_null = |v: Option<&String>| v.map_or("null", String::as_str).to_string();
        let joined = match kind {
            Kind::Inner => stream1.join_stream(
                &stream2,
                |a: &String, b: &String| format!("{a}+{b}"),
                windows,
                StreamJoined::defaults(),
            ),
            Kind::Left => stream1.left_join_stream(
                &stream2,
                move |a: &String, b: Option<&String>| format!("{a}+{}", or_null(b)),
                windows,
                StreamJoined::defaults(),
            ),
            Kind::Outer => stream1.outer_join_stream(
                &stream2,
                move |a: Option<&String>, b: Option<&String>| {
                    format!("{}+{}", or_null(a), or_null(b))
                },
                windows,
                StreamJoined::defaults(),
            ),
        };
        let seen = capture(&joined);
        let driver = driver(builder);
        let topic1 = driver.create_input_topic("topic1").unwrap();
        let topic2 = driver.create_input_topic("topic2").unwrap();
        Join {
            _driver: driver,
            topic1,
            topic2,
            seen,
        }
    }

    /// Pipes `prefix<k>` for the first `count` keys to topic 1 or 2, the i-th at
    /// `ts(i)`, and returns what the join emitted.
    fn push(
        &self,
        topic: u8,
        count: usize,
        prefix: &str,
        ts: impl Fn(i64) -> i64,
    ) -> Vec<Kvt<i32, String>> {
        let input = if topic == 1 {
            &self.topic1
        } else {
            &self.topic2
        };
        for (i, k) in EXPECTED_KEYS.iter().take(count).enumerate() {
            input
                .pipe_input_at(*k, format!("{prefix}{k}"), ts(i as i64))
                .unwrap();
        }
        self.seen.take()
    }
}

impl Join {
    /// Pipes one record to topic 1 or 2.
    fn pipe(&self, topic: u8, key: i32, value: &str, ts: i64) {
        let input = if topic == 1 {
            &self.topic1
        } else {
            &self.topic2
        };
        input.pipe_input_at(key, value.to_string(), ts).unwrap();
    }

    fn take(&self) -> Vec<Kvt<i32, String>> {
        self.seen.take()
    }
}

fn kvt(k: i32, v: &str, ts: i64) -> Kvt<i32, String> {
    (k, v.to_string(), ts)
}

/// `KStreamKStreamJoinTest.testJoin`: `JoinWindows.ofTimeDifferenceAndGrace(100 ms,
/// 24 h)`, every record at timestamp 0.
#[test]
fn test_join() {
    let j = Join::new(JoinWindows::of_time_difference_and_grace(
        Duration::from_millis(100),
        Duration::from_secs(24 * 3600),
    ));
    let zero = |_| 0;
    assert_eq!(j.push(1, 2, "A", zero), vec![]);
    assert_eq!(
        j.push(2, 2, "a", zero),
        vec![kvt(0, "A0+a0", 0), kvt(1, "A1+a1", 0)]
    );
    assert_eq!(
        j.push(1, 4, "B", zero),
        vec![kvt(0, "B0+a0", 0), kvt(1, "B1+a1", 0)]
    );
    assert_eq!(
        j.push(2, 4, "b", zero),
        vec![
            kvt(0, "A0+b0", 0),
            kvt(0, "B0+b0", 0),
            kvt(1, "A1+b1", 0),
            kvt(1, "B1+b1", 0),
            kvt(2, "B2+b2", 0),
            kvt(3, "B3+b3", 0),
        ]
    );
    assert_eq!(
        j.push(1, 4, "C", zero),
        vec![
            kvt(0, "C0+a0", 0),
            kvt(0, "C0+b0", 0),
            kvt(1, "C1+a1", 0),
            kvt(1, "C1+b1", 0),
            kvt(2, "C2+b2", 0),
            kvt(3, "C3+b3", 0),
        ]
    );
    assert_eq!(
        j.push(2, 2, "c", zero),
        vec![
            kvt(0, "A0+c0", 0),
            kvt(0, "B0+c0", 0),
            kvt(0, "C0+c0", 0),
            kvt(1, "A1+c1", 0),
            kvt(1, "B1+c1", 0),
            kvt(1, "C1+c1", 0),
        ]
    );
}

/// `KStreamKStreamJoinTest.testWindowing`, all its steps: `JoinWindows.ofTimeDifferenceWithNoGrace(100 ms)`; records before the
/// window bound join nothing, records inside it join, including records behind stream
/// time (Kafka's join does not drop them: `h0` at 900 joins `B0` at 1000 after stream
/// time reached 1104).
#[test]
fn test_windowing() {
    let j = Join::new(JoinWindows::of_time_difference_with_no_grace(
        Duration::from_millis(100),
    ));
    assert_eq!(j.push(1, 2, "A", |_| 0), vec![]);
    assert_eq!(
        j.push(2, 2, "a", |_| 0),
        vec![kvt(0, "A0+a0", 0), kvt(1, "A1+a1", 0)]
    );
    assert_eq!(j.push(1, 4, "B", |i| 1000 + i), vec![]);
    assert_eq!(
        j.push(2, 4, "b", |_| 1100),
        vec![
            kvt(0, "B0+b0", 1100),
            kvt(1, "B1+b1", 1100),
            kvt(2, "B2+b2", 1100),
            kvt(3, "B3+b3", 1100),
        ]
    );
    assert_eq!(
        j.push(2, 4, "c", |_| 1101),
        vec![
            kvt(1, "B1+c1", 1101),
            kvt(2, "B2+c2", 1101),
            kvt(3, "B3+c3", 1101),
        ]
    );
    assert_eq!(
        j.push(2, 4, "d", |_| 1102),
        vec![kvt(2, "B2+d2", 1102), kvt(3, "B3+d3", 1102)]
    );
    assert_eq!(j.push(2, 4, "e", |_| 1103), vec![kvt(3, "B3+e3", 1103)]);
    assert_eq!(j.push(2, 4, "f", |_| 1104), vec![]);
    assert_eq!(j.push(2, 4, "g", |_| 899), vec![]);
    assert_eq!(j.push(2, 4, "h", |_| 900), vec![kvt(0, "B0+h0", 1000)]);
    assert_eq!(
        j.push(2, 4, "i", |_| 901),
        vec![kvt(0, "B0+i0", 1000), kvt(1, "B1+i1", 1001)]
    );
    assert_eq!(
        j.push(2, 4, "j", |_| 902),
        vec![
            kvt(0, "B0+j0", 1000),
            kvt(1, "B1+j1", 1001),
            kvt(2, "B2+j2", 1002),
        ]
    );
    assert_eq!(
        j.push(2, 4, "k", |_| 903),
        vec![
            kvt(0, "B0+k0", 1000),
            kvt(1, "B1+k1", 1001),
            kvt(2, "B2+k2", 1002),
            kvt(3, "B3+k3", 1003),
        ]
    );
    assert_eq!(j.push(2, 4, "l", |i| 2000 + i), vec![]);
    assert_eq!(
        j.push(1, 4, "C", |_| 2100),
        vec![
            kvt(0, "C0+l0", 2100),
            kvt(1, "C1+l1", 2100),
            kvt(2, "C2+l2", 2100),
            kvt(3, "C3+l3", 2100),
        ]
    );
    assert_eq!(
        j.push(1, 4, "D", |_| 2101),
        vec![
            kvt(1, "D1+l1", 2101),
            kvt(2, "D2+l2", 2101),
            kvt(3, "D3+l3", 2101),
        ]
    );
    assert_eq!(
        j.push(1, 4, "E", |_| 2102),
        vec![kvt(2, "E2+l2", 2102), kvt(3, "E3+l3", 2102)]
    );
    assert_eq!(j.push(1, 4, "F", |_| 2103), vec![kvt(3, "F3+l3", 2103)]);
    assert_eq!(j.push(1, 4, "G", |_| 2104), vec![]);
    assert_eq!(j.push(1, 4, "H", |_| 1899), vec![]);
    assert_eq!(j.push(1, 4, "I", |_| 1900), vec![kvt(0, "I0+l0", 2000)]);
    assert_eq!(
        j.push(1, 4, "J", |_| 1901),
        vec![kvt(0, "J0+l0", 2000), kvt(1, "J1+l1", 2001)]
    );
    assert_eq!(
        j.push(1, 4, "K", |_| 1902),
        vec![
            kvt(0, "K0+l0", 2000),
            kvt(1, "K1+l1", 2001),
            kvt(2, "K2+l2", 2002),
        ]
    );
    assert_eq!(
        j.push(1, 4, "L", |_| 1903),
        vec![
            kvt(0, "L0+l0", 2000),
            kvt(1, "L1+l1", 2001),
            kvt(2, "L2+l2", 2002),
            kvt(3, "L3+l3", 2003),
        ]
    );
}

/// `KStreamKStreamJoinTest.testAsymmetricWindowingAfter`, all its steps:
/// `JoinWindows.ofTimeDifferenceWithNoGrace(0).after(100)` — a left record at `t`
/// joins right records in `[t, t + 100]` only.
#[test]
fn test_asymmetric_windowing_after() {
    let j = Join::new(JoinWindows::of_time_difference_with_no_grace(ms(0)).after(ms(100)));
    assert_eq!(j.push(1, 4, "A", |i| 1000 + i), vec![]);
    assert_eq!(j.push(2, 4, "a", |_| 999), vec![]);
    assert_eq!(j.push(2, 4, "b", |_| 1000), vec![kvt(0, "A0+b0", 1000)]);
    assert_eq!(
        j.push(2, 4, "c", |_| 1001),
        vec![kvt(0, "A0+c0", 1001), kvt(1, "A1+c1", 1001)]
    );
    assert_eq!(
        j.push(2, 4, "d", |_| 1002),
        vec![
            kvt(0, "A0+d0", 1002),
            kvt(1, "A1+d1", 1002),
            kvt(2, "A2+d2", 1002),
        ]
    );
    assert_eq!(
        j.push(2, 4, "e", |_| 1003),
        vec![
            kvt(0, "A0+e0", 1003),
            kvt(1, "A1+e1", 1003),
            kvt(2, "A2+e2", 1003),
            kvt(3, "A3+e3", 1003),
        ]
    );
    assert_eq!(
        j.push(2, 4, "f", |_| 1100),
        vec![
            kvt(0, "A0+f0", 1100),
            kvt(1, "A1+f1", 1100),
            kvt(2, "A2+f2", 1100),
            kvt(3, "A3+f3", 1100),
        ]
    );
    assert_eq!(
        j.push(2, 4, "g", |_| 1101),
        vec![
            kvt(1, "A1+g1", 1101),
            kvt(2, "A2+g2", 1101),
            kvt(3, "A3+g3", 1101),
        ]
    );
    assert_eq!(
        j.push(2, 4, "h", |_| 1102),
        vec![kvt(2, "A2+h2", 1102), kvt(3, "A3+h3", 1102)]
    );
    assert_eq!(j.push(2, 4, "i", |_| 1103), vec![kvt(3, "A3+i3", 1103)]);
    assert_eq!(j.push(2, 4, "j", |_| 1104), vec![]);
}

/// `KStreamKStreamJoinTest.testAsymmetricWindowingBefore`:
/// `JoinWindows.ofTimeDifferenceWithNoGrace(0).before(100)` — a left record at `t`
/// joins right records in `[t - 100, t]` only; each result carries the later
/// timestamp (here the left record's).
#[test]
fn test_asymmetric_windowing_before() {
    let j = Join::new(JoinWindows::of_time_difference_with_no_grace(ms(0)).before(ms(100)));
    assert_eq!(j.push(1, 4, "A", |i| 1000 + i), vec![]);
    assert_eq!(j.push(2, 4, "a", |_| 899), vec![]);
    assert_eq!(j.push(2, 4, "b", |_| 900), vec![kvt(0, "A0+b0", 1000)]);
    assert_eq!(
        j.push(2, 4, "c", |_| 901),
        vec![kvt(0, "A0+c0", 1000), kvt(1, "A1+c1", 1001)]
    );
    assert_eq!(
        j.push(2, 4, "d", |_| 902),
        vec![
            kvt(0, "A0+d0", 1000),
            kvt(1, "A1+d1", 1001),
            kvt(2, "A2+d2", 1002),
        ]
    );
    let all = |p: &str| {
        (0..4)
            .map(|k| kvt(k, &format!("A{k}+{p}{k}"), 1000 + i64::from(k)))
            .collect::<Vec<_>>()
    };
    assert_eq!(j.push(2, 4, "e", |_| 903), all("e"));
    assert_eq!(j.push(2, 4, "f", |_| 1000), all("f"));
    assert_eq!(j.push(2, 4, "g", |_| 1001), all("g")[1..].to_vec());
    assert_eq!(j.push(2, 4, "h", |_| 1002), all("h")[2..].to_vec());
    assert_eq!(j.push(2, 4, "i", |_| 1003), all("i")[3..].to_vec());
    assert_eq!(j.push(2, 4, "j", |_| 1004), vec![]);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `KStreamKStreamLeftJoinTest.testLeftJoinDuplicates`: unmatched duplicates are
/// emitted once their window has closed; matched duplicates at once, and never again.
#[test]
fn test_left_join_duplicates() {
    let j = Join::left(JoinWindows::of_time_difference_and_grace(ms(100), ms(10)));
    j.pipe(1, 0, "A0", 0);
    j.pipe(1, 0, "A0-0", 0);
    j.pipe(2, 1, "a0", 111);
    // bump stream time to trigger left-join results
    j.pipe(2, 2, "dummy", 500);
    assert_eq!(j.take(), vec![kvt(0, "A0+null", 0), kvt(0, "A0-0+null", 0)]);
    j.pipe(1, 2, "A2", 1000);
    j.pipe(1, 2, "A2-0", 1000);
    j.pipe(2, 2, "a2", 1001);
    assert_eq!(
        j.take(),
        vec![kvt(2, "A2+a2", 1001), kvt(2, "A2-0+a2", 1001)]
    );
    j.pipe(2, 3, "a3", 315);
    assert_eq!(j.take(), vec![]);
}

/// `KStreamKStreamLeftJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor`
/// and `...ByTheRightProcessor`: a record on either side that moves stream time past
/// the windows emits the unmatched left records.
#[test]
fn test_left_expired_non_joined_records_are_emitted_by_either_side() {
    for (bump_side, flush_side, flush_ts) in [(1u8, 2u8, 401i64), (2, 1, 402)] {
        let j = Join::left(JoinWindows::of_time_difference_and_grace(ms(100), ms(0)));
        j.pipe(1, 0, "A0", 1);
        j.pipe(1, 1, "A1", 2);
        j.pipe(1, 0, "A0-0", 3);
        assert_eq!(j.take(), vec![]);
        j.pipe(2, 1, "a1", 3);
        assert_eq!(j.take(), vec![kvt(1, "A1+a1", 3)]);
        j.pipe(bump_side, 2, "dummy", 401);
        assert_eq!(
            j.take(),
            vec![kvt(0, "A0+null", 1), kvt(0, "A0-0+null", 3)],
            "bumped by topic{bump_side}"
        );
        j.pipe(flush_side, 2, "dummy", flush_ts);
        assert_eq!(j.take(), vec![kvt(2, "dummy+dummy", flush_ts)]);
    }
}

/// `KStreamKStreamLeftJoinTest.testRightNonJoinedRecordsAreNeverEmittedByTheLeftProcessor`:
/// a left join never emits an unmatched right record.
#[test]
fn test_right_non_joined_records_are_never_emitted_by_the_left_processor() {
    let j = Join::left(JoinWindows::of_time_difference_and_grace(ms(100), ms(0)));
    j.pipe(2, 0, "A0", 1);
    j.pipe(2, 1, "A1", 2);
    j.pipe(2, 0, "A0-0", 3);
    assert_eq!(j.take(), vec![]);
    j.pipe(1, 1, "a1", 3);
    assert_eq!(j.take(), vec![kvt(1, "a1+A1", 3)]);
    j.pipe(1, 2, "dummy", 401);
    assert_eq!(j.take(), vec![]);
    j.pipe(2, 2, "dummy", 402);
    assert_eq!(j.take(), vec![kvt(2, "dummy+dummy", 402)]);
}

/// `KStreamKStreamOuterJoinTest.testOuterJoinDuplicates`: unmatched records of both
/// sides come out when their window closes, at the same timestamp the right side's
/// first (Kafka's outer store orders by timestamp, then side); matched duplicates at
/// once; a record matched once is never emitted unmatched.
#[test]
fn test_outer_join_duplicates() {
    let j = Join::outer(JoinWindows::of_time_difference_and_grace(ms(100), ms(10)));
    j.pipe(1, 0, "A0", 0);
    j.pipe(1, 0, "A0-0", 0);
    j.pipe(2, 1, "a1", 0);
    j.pipe(2, 1, "a1-0", 0);
    j.pipe(2, 1, "a0", 111);
    // bump stream time to trigger outer-join results
    j.pipe(2, 3, "dummy", 211);
    assert_eq!(
        j.take(),
        vec![
            kvt(1, "null+a1", 0),
            kvt(1, "null+a1-0", 0),
            kvt(0, "A0+null", 0),
            kvt(0, "A0-0+null", 0),
        ]
    );
    j.pipe(1, 2, "A2", 200);
    j.pipe(1, 2, "A2-0", 200);
    j.pipe(2, 2, "a2", 201);
    j.pipe(2, 2, "a2-0", 201);
    assert_eq!(
        j.take(),
        vec![
            kvt(2, "A2+a2", 201),
            kvt(2, "A2-0+a2", 201),
            kvt(2, "A2+a2-0", 201),
            kvt(2, "A2-0+a2-0", 201),
        ]
    );
    j.pipe(2, 3, "dummy", 1500);
    assert_eq!(
        j.take(),
        vec![kvt(1, "null+a0", 111), kvt(3, "null+dummy", 211)]
    );
}

/// `KStreamKStreamOuterJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor`
/// (no grace) and `...ByTheRightProcessor` (grace zero).
#[test]
fn test_outer_left_expired_non_joined_records_are_emitted_by_either_side() {
    for (windows, bump_side, flush_side, flush_ts) in [
        (
            JoinWindows::of_time_difference_with_no_grace(ms(100)),
            1u8,
            2u8,
            401i64,
        ),
        (
            JoinWindows::of_time_difference_and_grace(ms(100), ms(0)),
            2,
            1,
            402,
        ),
    ] {
        let j = Join::outer(windows);
        j.pipe(1, 0, "A0", 1);
        j.pipe(1, 1, "A1", 2);
        j.pipe(1, 0, "A0-0", 3);
        assert_eq!(j.take(), vec![]);
        j.pipe(2, 1, "a1", 3);
        assert_eq!(j.take(), vec![kvt(1, "A1+a1", 3)]);
        j.pipe(bump_side, 2, "dummy", 401);
        assert_eq!(
            j.take(),
            vec![kvt(0, "A0+null", 1), kvt(0, "A0-0+null", 3)],
            "bumped by topic{bump_side}"
        );
        j.pipe(flush_side, 2, "dummy", flush_ts);
        assert_eq!(j.take(), vec![kvt(2, "dummy+dummy", flush_ts)]);
    }
}

/// `KStreamKStreamOuterJoinTest.testRightExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor`
/// (no grace) and `...ByTheRightProcessor` (grace zero).
#[test]
fn test_outer_right_expired_non_joined_records_are_emitted_by_either_side() {
    for (windows, bump_side, flush_side) in [
        (
            JoinWindows::of_time_difference_with_no_grace(ms(100)),
            1u8,
            2u8,
        ),
        (
            JoinWindows::of_time_difference_and_grace(ms(100), ms(0)),
            2,
            1,
        ),
    ] {
        let j = Join::outer(windows);
        j.pipe(2, 0, "A0", 1);
        j.pipe(2, 1, "A1", 2);
        j.pipe(2, 0, "A0-0", 3);
        assert_eq!(j.take(), vec![]);
        j.pipe(1, 1, "a1", 3);
        assert_eq!(j.take(), vec![kvt(1, "a1+A1", 3)]);
        j.pipe(bump_side, 2, "dummy", 401);
        assert_eq!(
            j.take(),
            vec![kvt(0, "null+A0", 1), kvt(0, "null+A0-0", 3)],
            "bumped by topic{bump_side}"
        );
        j.pipe(flush_side, 2, "dummy", 402);
        assert_eq!(j.take(), vec![kvt(2, "dummy+dummy", 402)]);
    }
}
