//! `KTableKTableForeignKeyJoinIntegrationTest` (`org.apache.kafka.streams.integration`):
//! a `left_table` of `"lhsValueN|rhsM"` values joined on the foreign key after the `|`
//! with a `right_table`, joiner `"(" + left + "," + right + ")"`, written to
//! `output-topic` and, with `rejoin`, joined back with the left table on the primary
//! key into `rejoin-output-topic`. Every Java test runs over Kafka's parameter matrix
//! as far as it applies to weir: inner and left join, result materialized in a store
//! named `store` (uncached, as Kafka's test asks) or not, with and without the rejoin,
//! and versioned left and right tables (Kafka's `versionedData`, rejoin off). Kafka's
//! other two dimensions do not exist in weir: topology optimization (weir has no
//! optimizer) and the DSL store format with headers (weir's stores keep headers out,
//! and records carry theirs through the join either way).

use std::collections::HashMap;
use std::time::Duration;

use weir::prelude::*;
use weir::testing::{TestInputTopic, TestOutputTopic, TopologyTestDriver};

use super::driver;

const LEFT_TABLE: &str = "left_table";
const RIGHT_TABLE: &str = "right_table";
const OUTPUT: &str = "output-topic";
const REJOIN_OUTPUT: &str = "rejoin-output-topic";
/// Kafka's `baseTimestamp` (a `MockTime`'s start).
const BASE: i64 = 1_600_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Case {
    left_join: bool,
    materialized: bool,
    rejoin: bool,
    left_versioned: bool,
    right_versioned: bool,
}

/// Kafka's `testCases()`: `data()` (versioning off) and `versionedData()` (rejoin
/// off), without duplicates.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for left_join in [true, false] {
        for materialized in [true, false] {
            for rejoin in [true, false] {
                out.push(Case {
                    left_join,
                    materialized,
                    rejoin,
                    left_versioned: false,
                    right_versioned: false,
                });
            }
            for (left_versioned, right_versioned) in [(true, true), (true, false), (false, true)] {
                out.push(Case {
                    left_join,
                    materialized,
                    rejoin: false,
                    left_versioned,
                    right_versioned,
                });
            }
        }
    }
    out
}

/// Kafka's `testCasesWithoutLeftJoinArg()`: the left join's cases.
fn left_join_cases() -> Vec<Case> {
    cases().into_iter().filter(|c| c.left_join).collect()
}

/// Kafka's default extractor: the token after `|`, null if there is not exactly one.
fn default_extractor(value: &str) -> Option<String> {
    let tokens: Vec<&str> = value.split('|').collect();
    (tokens.len() == 2).then(|| tokens[1].to_string())
}

type Extractor = fn(&str) -> Option<String>;

struct Fixture {
    driver: TopologyTestDriver,
    case: Case,
    left: TestInputTopic<String, Option<String>>,
    right: TestInputTopic<String, Option<String>>,
    output: TestOutputTopic<String, Option<String>>,
    /// With `rejoin` only.
    rejoin_output: Option<TestOutputTopic<String, Option<String>>>,
}

type Kv = (String, Option<String>);

fn kv(k: &str, v: Option<&str>) -> Kv {
    (k.to_string(), v.map(str::to_string))
}

fn map(entries: &[(&str, Option<&str>)]) -> HashMap<String, Option<String>> {
    entries.iter().map(|(k, v)| kv(k, *v)).collect()
}

fn store_map(entries: &[(&str, &str)]) -> HashMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Fixture {
    /// Kafka's `getTopology(..)`, with `extractor`.
    fn new(case: Case, extractor: Extractor) -> Self {
        let builder = StreamsBuilder::new();
        let table = |topic: &str, versioned: bool, name: &str| {
            if versioned {
                builder.table_with(
                    topic,
                    Consumed::<String, String>::defaults(),
                    Materialized::as_versioned(name, Duration::from_secs(300)),
                )
            } else {
                builder.table::<String, String>(topic)
            }
        };
        let left = table(LEFT_TABLE, case.left_versioned, "left");
        let right = table(RIGHT_TABLE, case.right_versioned, "right");
        let joiner =
            |l: &String, r: Option<&String>| format!("({l},{})", r.map_or("null", String::as_str));
        // The cache would suppress some of the unnecessary tombstones asserted on.
        let materialized = if case.materialized {
            Materialized::as_("store")
                .in_memory()
                .with_value_serde(StringSerde)
                .without_caching()
        } else {
            Materialized::default()
                .with_value_serde(StringSerde)
                .without_caching()
        };
        let fk = move |_: &String, v: &String| extractor(v);
        let fk_join = if case.left_join {
            left.left_join_foreign_with(&right, fk, joiner, TableJoined::default(), materialized)
        } else {
            left.join_foreign_with(
                &right,
                fk,
                move |l: &String, r: &String| joiner(l, Some(r)),
                TableJoined::default(),
                materialized,
            )
        };
        fk_join.to_stream().to(OUTPUT);
        if case.rejoin {
            let rejoiner = |a: &String, b: Option<&String>| {
                format!("rejoin({a},{})", b.map_or("null", String::as_str))
            };
            let rejoined = if case.left_join {
                fk_join.left_join(&left, rejoiner)
            } else {
                fk_join.join(&left, move |a: &String, b: &String| rejoiner(a, Some(b)))
            };
            rejoined.to_stream().to(REJOIN_OUTPUT);
        }
        let driver = driver(builder);
        let input = |t: &str| {
            driver
                .create_input_topic::<String, Option<String>>(t)
                .unwrap()
        };
        let output = |t: &str| {
            driver
                .create_output_topic::<String, Option<String>>(t)
                .unwrap()
        };
        Fixture {
            left: input(LEFT_TABLE),
            right: input(RIGHT_TABLE),
            output: output(OUTPUT),
            rejoin_output: case.rejoin.then(|| output(REJOIN_OUTPUT)),
            driver,
            case,
        }
    }

    fn left(&self, key: &str, value: Option<&str>, ts: i64) {
        pipe(&self.left, key, value, ts);
    }

    fn right(&self, key: &str, value: Option<&str>, ts: i64) {
        pipe(&self.right, key, value, ts);
    }

    fn output_list(&self) -> Vec<Kv> {
        self.output.read_key_values_to_list().unwrap()
    }

    fn rejoin_list(&self) -> Vec<Kv> {
        self.rejoin_output
            .as_ref()
            .expect("a rejoin case")
            .read_key_values_to_list()
            .unwrap()
    }

    fn output_map(&self) -> HashMap<String, Option<String>> {
        self.output.read_key_values_to_map().unwrap()
    }

    /// Kafka's `asMap(store)`, checked only when the result is materialized.
    fn assert_store(&self, expected: HashMap<String, String>) {
        if !self.case.materialized {
            return;
        }
        let rows: HashMap<String, String> = self
            .driver
            .key_value_store::<String, String>("store")
            .unwrap()
            .all()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(rows, expected, "{:?}", self.case);
    }
}

fn pipe(topic: &TestInputTopic<String, Option<String>>, key: &str, value: Option<&str>, ts: i64) {
    topic
        .pipe_input_at(key.to_string(), value.map(str::to_string), ts)
        .unwrap();
}

#[test]
fn do_join_from_left_then_delete_left_entity() {
    // KTableKTableForeignKeyJoinIntegrationTest.doJoinFromLeftThenDeleteLeftEntity
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        // Pre-populate the right side; this test is about adding and removing left rows.
        f.right("rhs1", Some("rhsValue1"), BASE);
        f.right("rhs2", Some("rhsValue2"), BASE + 1);
        f.right("rhs3", Some("rhsValue3"), BASE + 2); // unreferenced: never in a result
        assert!(f.output_list().is_empty(), "{case:?}");
        if case.rejoin {
            assert!(f.rejoin_list().is_empty());
        }
        f.assert_store(HashMap::new());

        f.left("lhs1", Some("lhsValue1|rhs1"), BASE + 3);
        f.left("lhs2", Some("lhsValue2|rhs2"), BASE + 4);
        let expected = vec![
            kv("lhs1", Some("(lhsValue1|rhs1,rhsValue1)")),
            kv("lhs2", Some("(lhsValue2|rhs2,rhsValue2)")),
        ];
        assert_eq!(f.output_list(), expected, "{case:?}");
        if case.rejoin {
            assert_eq!(
                f.rejoin_list(),
                vec![
                    kv(
                        "lhs1",
                        Some("rejoin((lhsValue1|rhs1,rhsValue1),lhsValue1|rhs1)")
                    ),
                    kv(
                        "lhs2",
                        Some("rejoin((lhsValue2|rhs2,rhsValue2),lhsValue2|rhs2)")
                    ),
                ],
                "{case:?}"
            );
        }
        f.assert_store(store_map(&[
            ("lhs1", "(lhsValue1|rhs1,rhsValue1)"),
            ("lhs2", "(lhsValue2|rhs2,rhsValue2)"),
        ]));

        // Another reference to an existing foreign key.
        f.left("lhs3", Some("lhsValue3|rhs1"), BASE + 5);
        assert_eq!(
            f.output_list(),
            vec![kv("lhs3", Some("(lhsValue3|rhs1,rhsValue1)"))],
            "{case:?}"
        );
        if case.rejoin {
            assert_eq!(
                f.rejoin_list(),
                vec![kv(
                    "lhs3",
                    Some("rejoin((lhsValue3|rhs1,rhsValue1),lhsValue3|rhs1)")
                )]
            );
        }
        f.assert_store(store_map(&[
            ("lhs1", "(lhsValue1|rhs1,rhsValue1)"),
            ("lhs2", "(lhsValue2|rhs2,rhsValue2)"),
            ("lhs3", "(lhsValue3|rhs1,rhsValue1)"),
        ]));

        // Delete one left row: one delete goes downstream.
        f.left("lhs1", None, BASE + 6);
        assert_eq!(f.output_list(), vec![kv("lhs1", None)], "{case:?}");
        if case.rejoin {
            assert!(f.rejoin_list().contains(&kv("lhs1", None)));
        }
        f.assert_store(store_map(&[
            ("lhs2", "(lhsValue2|rhs2,rhsValue2)"),
            ("lhs3", "(lhsValue3|rhs1,rhsValue1)"),
        ]));
    }
}

#[test]
fn do_join_from_left_then_update_fk_then_revert_back() {
    // KTableKTableForeignKeyJoinIntegrationTest.doJoinFromLeftThenUpdateFkThenRevertBack
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        f.right("rhs1", Some("rhsValue1"), BASE);
        f.right("rhs2", Some("rhsValue2"), BASE + 1);
        assert!(f.output_list().is_empty());
        if case.rejoin {
            assert!(f.rejoin_list().is_empty());
        }
        f.assert_store(HashMap::new());

        f.left("lhs1", Some("lhsValue1|rhs1"), BASE + 3);
        assert_eq!(
            f.output_list(),
            vec![kv("lhs1", Some("(lhsValue1|rhs1,rhsValue1)"))],
            "{case:?}"
        );
        f.left("lhs1", Some("lhsValue1|rhs2"), BASE + 5);
        assert_eq!(
            f.output_list(),
            vec![kv("lhs1", Some("(lhsValue1|rhs2,rhsValue2)"))],
            "{case:?}"
        );
        // Back to the earlier foreign key.
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE + 6);
        assert_eq!(
            f.output_list(),
            vec![kv("lhs1", Some("(lhsValue1|rhs1,rhsValue1)"))],
            "{case:?}"
        );
    }
}

#[test]
fn do_join_from_right_then_delete_right_entity() {
    // KTableKTableForeignKeyJoinIntegrationTest.doJoinFromRightThenDeleteRightEntity
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        // Pre-populate the left side; this test is about adding and removing right rows.
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE);
        f.left("lhs2", Some("lhsValue2|rhs2"), BASE + 1);
        f.left("lhs3", Some("lhsValue3|rhs1"), BASE + 2);
        let half = [
            ("lhs1", "(lhsValue1|rhs1,null)"),
            ("lhs2", "(lhsValue2|rhs2,null)"),
            ("lhs3", "(lhsValue3|rhs1,null)"),
        ];
        if case.left_join {
            let expected = half.iter().map(|(k, v)| (*k, Some(*v))).collect::<Vec<_>>();
            assert_eq!(f.output_map(), map(&expected), "{case:?}");
            f.assert_store(store_map(&half));
        } else {
            assert!(f.output_map().is_empty(), "{case:?}");
            f.assert_store(HashMap::new());
        }

        f.right("rhs1", Some("rhsValue1"), BASE + 3);
        assert_eq!(
            f.output_map(),
            map(&[
                ("lhs1", Some("(lhsValue1|rhs1,rhsValue1)")),
                ("lhs3", Some("(lhsValue3|rhs1,rhsValue1)")),
            ]),
            "{case:?}"
        );
        if case.left_join {
            f.assert_store(store_map(&[
                ("lhs1", "(lhsValue1|rhs1,rhsValue1)"),
                ("lhs2", "(lhsValue2|rhs2,null)"),
                ("lhs3", "(lhsValue3|rhs1,rhsValue1)"),
            ]));
        } else {
            f.assert_store(store_map(&[
                ("lhs1", "(lhsValue1|rhs1,rhsValue1)"),
                ("lhs3", "(lhsValue3|rhs1,rhsValue1)"),
            ]));
        }

        f.right("rhs2", Some("rhsValue2"), BASE + 4);
        assert_eq!(
            f.output_map(),
            map(&[("lhs2", Some("(lhsValue2|rhs2,rhsValue2)"))])
        );
        let all = store_map(&[
            ("lhs1", "(lhsValue1|rhs1,rhsValue1)"),
            ("lhs2", "(lhsValue2|rhs2,rhsValue2)"),
            ("lhs3", "(lhsValue3|rhs1,rhsValue1)"),
        ]);
        f.assert_store(all.clone());

        f.right("rhs3", Some("rhsValue3"), BASE + 5); // unreferenced: no result
        assert!(f.output_map().is_empty());
        f.assert_store(all);

        // Delete the right row: every left row that joined it is updated.
        f.right("rhs1", None, BASE + 6);
        let (l1, l3) = if case.left_join {
            (Some("(lhsValue1|rhs1,null)"), Some("(lhsValue3|rhs1,null)"))
        } else {
            (None, None)
        };
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", l1), ("lhs3", l3)]),
            "{case:?}"
        );
        if case.left_join {
            f.assert_store(store_map(&[
                ("lhs1", "(lhsValue1|rhs1,null)"),
                ("lhs2", "(lhsValue2|rhs2,rhsValue2)"),
                ("lhs3", "(lhsValue3|rhs1,null)"),
            ]));
        } else {
            f.assert_store(store_map(&[("lhs2", "(lhsValue2|rhs2,rhsValue2)")]));
        }
    }
}

#[test]
fn should_emit_tombstone_when_deleting_non_joining_records() {
    // KTableKTableForeignKeyJoinIntegrationTest.shouldEmitTombstoneWhenDeletingNonJoiningRecords
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE);
        if case.left_join {
            assert_eq!(
                f.output_map(),
                map(&[("lhs1", Some("(lhsValue1|rhs1,null)"))])
            );
            f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs1,null)")]));
        } else {
            assert!(f.output_map().is_empty(), "{case:?}");
            f.assert_store(HashMap::new());
        }
        // Deleting a row that did not join gives an unnecessary tombstone in an inner
        // join (whether a result was emitted cannot be known); a necessary one in a
        // left join.
        f.left("lhs1", None, BASE + 1);
        assert_eq!(f.output_map(), map(&[("lhs1", None)]), "{case:?}");
        f.assert_store(HashMap::new());
        // Deleting it again is idempotent.
        f.left("lhs1", None, BASE + 2);
        assert!(f.output_map().is_empty(), "{case:?}");
        f.assert_store(HashMap::new());
    }
}

#[test]
fn should_not_emit_tombstones_when_deleting_non_existing_records() {
    // KTableKTableForeignKeyJoinIntegrationTest.shouldNotEmitTombstonesWhenDeletingNonExistingRecords
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        f.left("lhs1", None, BASE);
        assert!(f.output_map().is_empty(), "{case:?}");
        f.assert_store(HashMap::new());
    }
}

#[test]
fn join_should_produce_nulls_when_value_has_non_matching_foreign_key() {
    // KTableKTableForeignKeyJoinIntegrationTest.joinShouldProduceNullsWhenValueHasNonMatchingForeignKey
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        let lj = case.left_join;
        let half = |v: &'static str| if lj { Some(v) } else { None };
        let half_store = |v: &'static str| {
            if lj {
                store_map(&[("lhs1", v)])
            } else {
                HashMap::new()
            }
        };
        // No output for a new inner join on a missing foreign key; the left join
        // emits the half-joined row.
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE);
        let expected = if lj {
            map(&[("lhs1", Some("(lhsValue1|rhs1,null)"))])
        } else {
            HashMap::new()
        };
        assert_eq!(f.output_map(), expected, "{case:?}");
        f.assert_store(half_store("(lhsValue1|rhs1,null)"));
        // Moving to another missing key: an unnecessary tombstone in the inner join (the
        // old key may have joined), a necessary update in the left join.
        f.left("lhs1", Some("lhsValue1|rhs2"), BASE + 1);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", half("(lhsValue1|rhs2,null)"))]),
            "{case:?}"
        );
        f.assert_store(half_store("(lhsValue1|rhs2,null)"));
        f.left("lhs1", Some("lhsValue1|rhs3"), BASE + 2);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", half("(lhsValue1|rhs3,null)"))]),
            "{case:?}"
        );
        f.assert_store(half_store("(lhsValue1|rhs3,null)"));
        // A right row for a key no longer referenced changes nothing.
        f.right("rhs1", Some("rhsValue1"), BASE + 3);
        assert!(f.output_map().is_empty(), "{case:?}");
        f.assert_store(half_store("(lhsValue1|rhs3,null)"));
        // Moving to a key that exists completes the join.
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE + 4);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", Some("(lhsValue1|rhs1,rhsValue1)"))]),
            "{case:?}"
        );
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs1,rhsValue1)")]));
        // And moving away again: a tombstone for the inner join, an update for the left.
        f.left("lhs1", Some("lhsValue1|rhs2"), BASE + 5);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", half("(lhsValue1|rhs2,null)"))]),
            "{case:?}"
        );
        f.assert_store(half_store("(lhsValue1|rhs2,null)"));
    }
}

#[test]
fn should_unsubscribe_old_foreign_key_if_left_side_is_updated() {
    // KTableKTableForeignKeyJoinIntegrationTest.shouldUnsubscribeOldForeignKeyIfLeftSideIsUpdated
    for case in cases() {
        let f = Fixture::new(case, default_extractor);
        f.right("rhs1", Some("rhsValue1"), BASE);
        f.right("rhs2", Some("rhsValue2"), BASE + 1);
        assert!(f.output_map().is_empty());
        f.assert_store(HashMap::new());

        f.left("lhs1", Some("lhsValue1|rhs1"), BASE + 2);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", Some("(lhsValue1|rhs1,rhsValue1)"))]),
            "{case:?}"
        );
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs1,rhsValue1)")]));

        // Change the left row's foreign key.
        f.left("lhs1", Some("lhsValue1|rhs2"), BASE + 3);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", Some("(lhsValue1|rhs2,rhsValue2)"))]),
            "{case:?}"
        );
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs2,rhsValue2)")]));

        // An update of the old foreign row reaches no one.
        f.right("rhs1", Some("rhsValue1Delta"), BASE + 4);
        assert!(f.output_map().is_empty(), "{case:?}");
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs2,rhsValue2)")]));
    }
}

#[test]
fn should_emit_record_on_null_foreign_key_for_left_joins() {
    // KTableKTableForeignKeyJoinIntegrationTest.shouldEmitRecordOnNullForeignKeyForLeftJoins
    for case in left_join_cases() {
        let f = Fixture::new(case, |_| None);
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", Some("(lhsValue1|rhs1,null)"))]),
            "{case:?}"
        );
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs1,null)")]));
    }
}

#[test]
fn should_emit_record_when_old_and_new_fk_differ() {
    // KTableKTableForeignKeyJoinIntegrationTest.shouldEmitRecordWhenOldAndNewFkDiffer.
    // Its checks of the subscription store (the row for (rhs1, lhs1) is there, then
    // gone) are in the unit test of the same name in `operators/src/fk_join/mod.rs`,
    // where the store's row type is visible.
    fn extractor(value: &str) -> Option<String> {
        let split = value.split('|').nth(1).expect("a | in every value");
        (split != "returnNull").then(|| split.to_string())
    }
    for case in left_join_cases() {
        let f = Fixture::new(case, extractor);
        f.left("lhs1", Some("lhsValue1|rhs1"), BASE);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", Some("(lhsValue1|rhs1,null)"))]),
            "{case:?}"
        );
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|rhs1,null)")]));
        f.left("lhs1", Some("lhsValue1|returnNull"), BASE);
        assert_eq!(
            f.output_map(),
            map(&[("lhs1", Some("(lhsValue1|returnNull,null)"))]),
            "{case:?}"
        );
        f.assert_store(store_map(&[("lhs1", "(lhsValue1|returnNull,null)")]));
    }
}
