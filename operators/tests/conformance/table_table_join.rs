//! `KTableKTableInnerJoinTest`, `KTableKTableLeftJoinTest` and
//! `KTableKTableOuterJoinTest` (`org.apache.kafka.streams.kstream.internals`): two `Integer → String` tables joined
//! with `MockValueJoiner.TOSTRING_JOINER`; each step's output, timestamps included.

use weir::prelude::*;

use super::{capture, driver};

const EXPECTED_KEYS: [i32; 4] = [0, 1, 2, 3];

type Out = Vec<(i32, Option<String>, i64)>;

/// A change as (new, old), with its key and timestamp.
type Changes = Vec<(i32, (Option<String>, Option<String>), i64)>;

fn o(k: i32, v: Option<&str>, t: i64) -> (i32, Option<String>, i64) {
    (k, v.map(str::to_string), t)
}

/// Kafka's `doTestJoin`: the same eight steps for every join kind; `expected[i]` is
/// what step `i` writes to the output topic.
fn do_test_join(
    join: impl FnOnce(&KTable<i32, String>, &KTable<i32, String>) -> KTable<i32, String>,
    expected: [Out; 8],
) {
    let builder = StreamsBuilder::new();
    let table1 = builder.table::<i32, String>("topic1");
    let table2 = builder.table::<i32, String>("topic2");
    join(&table1, &table2).to_stream().to("output");
    let driver = driver(builder);
    let input1 = driver
        .create_input_topic::<i32, Option<String>>("topic1")
        .unwrap();
    let input2 = driver
        .create_input_topic::<i32, Option<String>>("topic2")
        .unwrap();
    let output = driver
        .create_output_topic::<i32, Option<String>>("output")
        .unwrap();
    let read = || -> Out {
        output
            .read_records_to_list()
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect()
    };
    let x = |prefix: &str, k: i32| Some(format!("{prefix}{k}"));
    let mut expected = expected.into_iter();
    let mut step = |name: &str| assert_eq!(read(), expected.next().unwrap(), "{name}");

    // Two items to the primary stream; the other table is empty.
    for (i, k) in EXPECTED_KEYS.iter().take(2).enumerate() {
        input1.pipe_input_at(*k, x("X", *k), 5 + i as i64).unwrap();
    }
    step("X to the left");
    for (i, k) in EXPECTED_KEYS.iter().take(2).enumerate() {
        input2.pipe_input_at(*k, x("Y", *k), 10 * i as i64).unwrap();
    }
    step("Y to the right");
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, x("XX", k), 7).unwrap();
    }
    step("XX to the left");
    for k in EXPECTED_KEYS {
        input2
            .pipe_input_at(k, x("YY", k), i64::from(k) * 5)
            .unwrap();
    }
    step("YY to the right");
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, x("XXX", k), 6).unwrap();
    }
    step("XXX to the left");
    input2.pipe_tombstone_at(EXPECTED_KEYS[0], 5).unwrap();
    input2.pipe_tombstone_at(EXPECTED_KEYS[1], 7).unwrap();
    step("right deletes");
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, x("XXXX", k), 13).unwrap();
    }
    step("XXXX to the left");
    for (k, t) in EXPECTED_KEYS.iter().zip([0, 42, 5, 20]) {
        input1.pipe_tombstone_at(*k, t).unwrap();
    }
    step("left deletes");
}

/// `KTableKTableInnerJoinTest.testJoin`.
#[test]
fn inner_test_join() {
    do_test_join(
        |l, r| l.join(r, |a: &String, b: &String| format!("{a}+{b}")),
        [
            vec![],
            vec![o(0, Some("X0+Y0"), 5), o(1, Some("X1+Y1"), 10)],
            vec![o(0, Some("XX0+Y0"), 7), o(1, Some("XX1+Y1"), 10)],
            vec![
                o(0, Some("XX0+YY0"), 7),
                o(1, Some("XX1+YY1"), 7),
                o(2, Some("XX2+YY2"), 10),
                o(3, Some("XX3+YY3"), 15),
            ],
            vec![
                o(0, Some("XXX0+YY0"), 6),
                o(1, Some("XXX1+YY1"), 6),
                o(2, Some("XXX2+YY2"), 10),
                o(3, Some("XXX3+YY3"), 15),
            ],
            vec![o(0, None, 6), o(1, None, 7)],
            vec![o(2, Some("XXXX2+YY2"), 13), o(3, Some("XXXX3+YY3"), 15)],
            vec![o(2, None, 10), o(3, None, 20)],
        ],
    );
}

/// `KTableKTableLeftJoinTest.testJoin`.
#[test]
fn left_test_join() {
    do_test_join(
        |l, r| {
            l.left_join(r, |a: &String, b: Option<&String>| {
                format!("{a}+{}", b.map_or("null", String::as_str))
            })
        },
        [
            vec![o(0, Some("X0+null"), 5), o(1, Some("X1+null"), 6)],
            vec![o(0, Some("X0+Y0"), 5), o(1, Some("X1+Y1"), 10)],
            vec![
                o(0, Some("XX0+Y0"), 7),
                o(1, Some("XX1+Y1"), 10),
                o(2, Some("XX2+null"), 7),
                o(3, Some("XX3+null"), 7),
            ],
            vec![
                o(0, Some("XX0+YY0"), 7),
                o(1, Some("XX1+YY1"), 7),
                o(2, Some("XX2+YY2"), 10),
                o(3, Some("XX3+YY3"), 15),
            ],
            vec![
                o(0, Some("XXX0+YY0"), 6),
                o(1, Some("XXX1+YY1"), 6),
                o(2, Some("XXX2+YY2"), 10),
                o(3, Some("XXX3+YY3"), 15),
            ],
            vec![o(0, Some("XXX0+null"), 6), o(1, Some("XXX1+null"), 7)],
            vec![
                o(0, Some("XXXX0+null"), 13),
                o(1, Some("XXXX1+null"), 13),
                o(2, Some("XXXX2+YY2"), 13),
                o(3, Some("XXXX3+YY3"), 15),
            ],
            vec![
                o(0, None, 0),
                o(1, None, 42),
                o(2, None, 10),
                o(3, None, 20),
            ],
        ],
    );
}

/// `KTableKTableOuterJoinTest.testJoin` (without its null-key records, which an `i32`
/// key cannot express; Kafka discards them).
#[test]
fn outer_test_join() {
    let or_null = |v: Option<&String>| v.map_or("null", String::as_str).to_string();
    do_test_join(
        |l, r| {
            l.outer_join(r, move |a: Option<&String>, b: Option<&String>| {
                format!("{}+{}", or_null(a), or_null(b))
            })
        },
        [
            vec![o(0, Some("X0+null"), 5), o(1, Some("X1+null"), 6)],
            vec![o(0, Some("X0+Y0"), 5), o(1, Some("X1+Y1"), 10)],
            vec![
                o(0, Some("XX0+Y0"), 7),
                o(1, Some("XX1+Y1"), 10),
                o(2, Some("XX2+null"), 7),
                o(3, Some("XX3+null"), 7),
            ],
            vec![
                o(0, Some("XX0+YY0"), 7),
                o(1, Some("XX1+YY1"), 7),
                o(2, Some("XX2+YY2"), 10),
                o(3, Some("XX3+YY3"), 15),
            ],
            vec![
                o(0, Some("XXX0+YY0"), 6),
                o(1, Some("XXX1+YY1"), 6),
                o(2, Some("XXX2+YY2"), 10),
                o(3, Some("XXX3+YY3"), 15),
            ],
            vec![o(0, Some("XXX0+null"), 6), o(1, Some("XXX1+null"), 7)],
            vec![
                o(0, Some("XXXX0+null"), 13),
                o(1, Some("XXXX1+null"), 13),
                o(2, Some("XXXX2+YY2"), 13),
                o(3, Some("XXXX3+YY3"), 15),
            ],
            vec![
                o(0, None, 0),
                o(1, None, 42),
                o(2, Some("null+YY2"), 10),
                o(3, Some("null+YY3"), 20),
            ],
        ],
    );
}

/// `KTableKTableInnerJoinTest.testSendingOldValues`: each update carries the joined
/// row it replaces.
#[test]
fn inner_test_sending_old_values() {
    let builder = StreamsBuilder::new();
    let table1 = builder.table::<i32, String>("topic1");
    let table2 = builder.table::<i32, String>("topic2");
    let joined = table1.join(&table2, |a: &String, b: &String| format!("{a}+{b}"));
    let seen = capture(&joined.to_change_stream());
    let driver = driver(builder);
    let input1 = driver
        .create_input_topic::<i32, Option<String>>("topic1")
        .unwrap();
    let input2 = driver
        .create_input_topic::<i32, Option<String>>("topic2")
        .unwrap();
    let ch = |k: i32, new: Option<&str>, old: Option<&str>, t: i64| {
        (k, (new.map(str::to_string), old.map(str::to_string)), t)
    };
    let take = || -> Changes {
        seen.take()
            .into_iter()
            .map(|(k, c, t)| (k, (c.new, c.old), t))
            .collect()
    };
    for (i, k) in [0, 1].into_iter().enumerate() {
        input1
            .pipe_input_at(k, Some(format!("X{k}")), 5 + i as i64)
            .unwrap();
    }
    assert_eq!(take(), vec![]);
    for (i, k) in [0, 1].into_iter().enumerate() {
        input2
            .pipe_input_at(k, Some(format!("Y{k}")), 10 * i as i64)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("X0+Y0"), None, 5),
            ch(1, Some("X1+Y1"), None, 10)
        ]
    );
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, Some(format!("XX{k}")), 7).unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XX0+Y0"), Some("X0+Y0"), 7),
            ch(1, Some("XX1+Y1"), Some("X1+Y1"), 10),
        ]
    );
    for k in EXPECTED_KEYS {
        input2
            .pipe_input_at(k, Some(format!("YY{k}")), i64::from(k) * 5)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XX0+YY0"), Some("XX0+Y0"), 7),
            ch(1, Some("XX1+YY1"), Some("XX1+Y1"), 7),
            ch(2, Some("XX2+YY2"), None, 10),
            ch(3, Some("XX3+YY3"), None, 15),
        ]
    );
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, Some(format!("XXX{k}")), 6).unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XXX0+YY0"), Some("XX0+YY0"), 6),
            ch(1, Some("XXX1+YY1"), Some("XX1+YY1"), 6),
            ch(2, Some("XXX2+YY2"), Some("XX2+YY2"), 10),
            ch(3, Some("XXX3+YY3"), Some("XX3+YY3"), 15),
        ]
    );
    input2.pipe_tombstone_at(0, 5).unwrap();
    input2.pipe_tombstone_at(1, 7).unwrap();
    assert_eq!(
        take(),
        vec![
            ch(0, None, Some("XXX0+YY0"), 6),
            ch(1, None, Some("XXX1+YY1"), 7),
        ]
    );
    for k in EXPECTED_KEYS {
        input1
            .pipe_input_at(k, Some(format!("XXXX{k}")), 13)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(2, Some("XXXX2+YY2"), Some("XXX2+YY2"), 13),
            ch(3, Some("XXXX3+YY3"), Some("XXX3+YY3"), 15),
        ]
    );
    for (k, t) in EXPECTED_KEYS.iter().zip([0, 42, 5, 20]) {
        input1.pipe_tombstone_at(*k, t).unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(2, None, Some("XXXX2+YY2"), 10),
            ch(3, None, Some("XXXX3+YY3"), 20),
        ]
    );
}

/// `KTableKTableOuterJoinTest.testSendingOldValue` (without its null-key records,
/// which an `i32` key cannot carry): each update carries the joined row it replaces,
/// `X0+null` included; a key gone from both sides is a delete carrying its last row.
#[test]
fn outer_test_sending_old_value() {
    let builder = StreamsBuilder::new();
    let table1 = builder.table::<i32, String>("topic1");
    let table2 = builder.table::<i32, String>("topic2");
    let joined = table1.outer_join(&table2, |a: Option<&String>, b: Option<&String>| {
        format!(
            "{}+{}",
            a.map_or("null", String::as_str),
            b.map_or("null", String::as_str)
        )
    });
    let seen = capture(&joined.to_change_stream());
    let driver = driver(builder);
    let input1 = driver
        .create_input_topic::<i32, Option<String>>("topic1")
        .unwrap();
    let input2 = driver
        .create_input_topic::<i32, Option<String>>("topic2")
        .unwrap();
    let ch = |k: i32, new: Option<&str>, old: Option<&str>, t: i64| {
        (k, (new.map(str::to_string), old.map(str::to_string)), t)
    };
    let take = || -> Changes {
        seen.take()
            .into_iter()
            .map(|(k, c, t)| (k, (c.new, c.old), t))
            .collect()
    };
    for (i, k) in [0, 1].into_iter().enumerate() {
        input1
            .pipe_input_at(k, Some(format!("X{k}")), 5 + i as i64)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("X0+null"), None, 5),
            ch(1, Some("X1+null"), None, 6)
        ]
    );
    for (i, k) in [0, 1].into_iter().enumerate() {
        input2
            .pipe_input_at(k, Some(format!("Y{k}")), 10 * i as i64)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("X0+Y0"), Some("X0+null"), 5),
            ch(1, Some("X1+Y1"), Some("X1+null"), 10)
        ]
    );
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, Some(format!("XX{k}")), 7).unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XX0+Y0"), Some("X0+Y0"), 7),
            ch(1, Some("XX1+Y1"), Some("X1+Y1"), 10),
            ch(2, Some("XX2+null"), None, 7),
            ch(3, Some("XX3+null"), None, 7),
        ]
    );
    for k in EXPECTED_KEYS {
        input2
            .pipe_input_at(k, Some(format!("YY{k}")), i64::from(k) * 5)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XX0+YY0"), Some("XX0+Y0"), 7),
            ch(1, Some("XX1+YY1"), Some("XX1+Y1"), 7),
            ch(2, Some("XX2+YY2"), Some("XX2+null"), 10),
            ch(3, Some("XX3+YY3"), Some("XX3+null"), 15),
        ]
    );
    for k in EXPECTED_KEYS {
        input1.pipe_input_at(k, Some(format!("XXX{k}")), 6).unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XXX0+YY0"), Some("XX0+YY0"), 6),
            ch(1, Some("XXX1+YY1"), Some("XX1+YY1"), 6),
            ch(2, Some("XXX2+YY2"), Some("XX2+YY2"), 10),
            ch(3, Some("XXX3+YY3"), Some("XX3+YY3"), 15),
        ]
    );
    input2.pipe_tombstone_at(0, 5).unwrap();
    input2.pipe_tombstone_at(1, 7).unwrap();
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XXX0+null"), Some("XXX0+YY0"), 6),
            ch(1, Some("XXX1+null"), Some("XXX1+YY1"), 7),
        ]
    );
    for k in EXPECTED_KEYS {
        input1
            .pipe_input_at(k, Some(format!("XXXX{k}")), 13)
            .unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, Some("XXXX0+null"), Some("XXX0+null"), 13),
            ch(1, Some("XXXX1+null"), Some("XXX1+null"), 13),
            ch(2, Some("XXXX2+YY2"), Some("XXX2+YY2"), 13),
            ch(3, Some("XXXX3+YY3"), Some("XXX3+YY3"), 15),
        ]
    );
    for (k, t) in EXPECTED_KEYS.iter().zip([0, 42, 5, 20]) {
        input1.pipe_tombstone_at(*k, t).unwrap();
    }
    assert_eq!(
        take(),
        vec![
            ch(0, None, Some("XXXX0+null"), 0),
            ch(1, None, Some("XXXX1+null"), 42),
            ch(2, Some("null+YY2"), Some("XXXX2+YY2"), 10),
            ch(3, Some("null+YY3"), Some("XXXX3+YY3"), 20),
        ]
    );
}

/// `KTable::outer_join` (Kafka's `KTableKTableOuterJoin` rules): a row for a key of
/// either side, the missing side `null`; a key gone from both is deleted.
#[test]
fn outer_join_keeps_rows_of_either_side() {
    do_test_join(
        |l, r| {
            l.outer_join(r, |a: Option<&String>, b: Option<&String>| {
                format!(
                    "{}+{}",
                    a.map_or("null", String::as_str),
                    b.map_or("null", String::as_str)
                )
            })
        },
        [
            vec![o(0, Some("X0+null"), 5), o(1, Some("X1+null"), 6)],
            vec![o(0, Some("X0+Y0"), 5), o(1, Some("X1+Y1"), 10)],
            vec![
                o(0, Some("XX0+Y0"), 7),
                o(1, Some("XX1+Y1"), 10),
                o(2, Some("XX2+null"), 7),
                o(3, Some("XX3+null"), 7),
            ],
            vec![
                o(0, Some("XX0+YY0"), 7),
                o(1, Some("XX1+YY1"), 7),
                o(2, Some("XX2+YY2"), 10),
                o(3, Some("XX3+YY3"), 15),
            ],
            vec![
                o(0, Some("XXX0+YY0"), 6),
                o(1, Some("XXX1+YY1"), 6),
                o(2, Some("XXX2+YY2"), 10),
                o(3, Some("XXX3+YY3"), 15),
            ],
            vec![o(0, Some("XXX0+null"), 6), o(1, Some("XXX1+null"), 7)],
            vec![
                o(0, Some("XXXX0+null"), 13),
                o(1, Some("XXXX1+null"), 13),
                o(2, Some("XXXX2+YY2"), 13),
                o(3, Some("XXXX3+YY3"), 15),
            ],
            // Keys 0 and 1 are gone from both sides; 2 and 3 keep their right rows.
            vec![
                o(0, None, 0),
                o(1, None, 42),
                o(2, Some("null+YY2"), 10),
                o(3, Some("null+YY3"), 20),
            ],
        ],
    );
}
