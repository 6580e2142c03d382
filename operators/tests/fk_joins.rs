//! Foreign-key table joins against a model: after every update of either table, the
//! result table (its store, and the last value per key on the output topic) is the
//! join of the two tables as they now are. Random inserts, updates that move rows
//! between foreign keys (or to none), and deletes on both sides; the left table has
//! three partitions and the right two, so subscriptions and answers cross partitions.

mod common;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use weir::prelude::*;
use weir::testing::TopologyTestDriver;

#[derive(Debug, Clone)]
enum Event {
    /// Left row `pk` = value `v` with foreign key `fk` (none: no foreign key).
    Left(u8, Option<u8>, u32),
    LeftDelete(u8),
    Right(u8, u32),
    RightDelete(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u8..8, proptest::option::weighted(0.85, 0u8..5), 0u32..1000)
            .prop_map(|(k, f, v)| Event::Left(k, f, v)),
        1 => (0u8..8).prop_map(Event::LeftDelete),
        3 => (0u8..5, 0u32..1000).prop_map(|(k, v)| Event::Right(k, v)),
        1 => (0u8..5).prop_map(Event::RightDelete),
    ]
}

fn left_value(fk: Option<u8>, v: u32) -> String {
    match fk {
        Some(f) => format!("{v}|r{f}"),
        None => format!("{v}|"),
    }
}

/// The join of the two tables as they are: `l<pk>` -> `left+right`.
fn model(
    left: &BTreeMap<u8, (Option<u8>, u32)>,
    right: &BTreeMap<u8, u32>,
    left_join: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (pk, (fk, v)) in left {
        let row = fk.and_then(|f| right.get(&f));
        let lv = left_value(*fk, *v);
        match row {
            Some(r) => {
                out.insert(format!("l{pk}"), format!("{lv}+{r}"));
            }
            None if left_join => {
                out.insert(format!("l{pk}"), format!("{lv}+null"));
            }
            None => {}
        }
    }
    out
}

fn driver(left_join: bool) -> TopologyTestDriver {
    let broker = Broker::new();
    broker.create_topic("left", 3).unwrap();
    broker.create_topic("right", 2).unwrap();
    broker.create_topic("out", 3).unwrap();
    let builder = StreamsBuilder::new();
    let left = builder.table::<String, String>("left");
    let right = builder.table::<String, String>("right");
    let fk = |_: &String, v: &String| {
        let f = v.split('|').nth(1).unwrap_or_default();
        (!f.is_empty()).then(|| f.to_string())
    };
    let materialized = || {
        Materialized::as_("result")
            .with_value_serde(StringSerde)
            .without_caching()
    };
    let joined = if left_join {
        left.left_join_foreign_with(
            &right,
            fk,
            |l: &String, r: Option<&String>| format!("{l}+{}", r.map_or("null", String::as_str)),
            TableJoined::default(),
            materialized(),
        )
    } else {
        left.join_foreign_with(
            &right,
            fk,
            |l: &String, r: &String| format!("{l}+{r}"),
            TableJoined::default(),
            materialized(),
        )
    };
    joined.to_stream().to("out");
    let config = RuntimeConfig::builder().broker(broker).build().unwrap();
    TopologyTestDriver::new(builder.build().unwrap(), config).unwrap()
}

fn run(left_join: bool, events: &[Event]) {
    let driver = driver(left_join);
    let left_in = driver
        .create_input_topic::<String, Option<String>>("left")
        .unwrap();
    let right_in = driver
        .create_input_topic::<String, Option<String>>("right")
        .unwrap();
    let out = driver
        .create_output_topic::<String, Option<String>>("out")
        .unwrap();
    let store = driver.key_value_store::<String, String>("result").unwrap();
    let (mut left, mut right) = (BTreeMap::new(), BTreeMap::new());
    let mut emitted: HashMap<String, Option<String>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let ts = i as i64;
        match *e {
            Event::Left(k, f, v) => {
                left.insert(k, (f, v));
                left_in
                    .pipe_input_at(format!("l{k}"), Some(left_value(f, v)), ts)
                    .unwrap();
            }
            Event::LeftDelete(k) => {
                left.remove(&k);
                left_in.pipe_tombstone_at(format!("l{k}"), ts).unwrap();
            }
            Event::Right(k, v) => {
                right.insert(k, v);
                right_in
                    .pipe_input_at(format!("r{k}"), Some(v.to_string()), ts)
                    .unwrap();
            }
            Event::RightDelete(k) => {
                right.remove(&k);
                right_in.pipe_tombstone_at(format!("r{k}"), ts).unwrap();
            }
        }
        let expected = model(&left, &right, left_join);
        let rows: BTreeMap<String, String> = store.all().unwrap().into_iter().collect();
        assert_eq!(rows, expected, "the result store after event {i}: {e:?}");
        emitted.extend(out.read_key_values_to_map().unwrap());
        let visible: BTreeMap<String, String> = emitted
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        assert_eq!(visible, expected, "the output after event {i}: {e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn foreign_key_joins_match_the_model(
        left_join in any::<bool>(),
        events in proptest::collection::vec(event(), 1..60),
    ) {
        run(left_join, &events);
    }
}

/// A left row that moves to another foreign key and back, with the right rows
/// changing in between, across partitions: a fixed case of the property.
#[test]
fn a_row_that_moves_between_foreign_keys_follows_them() {
    for left_join in [false, true] {
        run(
            left_join,
            &[
                Event::Right(1, 10),
                Event::Right(2, 20),
                Event::Left(0, Some(1), 1),
                Event::Left(3, Some(1), 2),
                Event::Left(0, Some(2), 3),
                Event::Right(1, 11),
                Event::Left(0, None, 4),
                Event::RightDelete(2),
                Event::Left(0, Some(2), 5),
                Event::Right(2, 21),
                Event::LeftDelete(3),
                Event::RightDelete(1),
            ],
        );
    }
}

#[cfg(feature = "kafka")]
mod kafka {
    use super::*;
    use std::time::{Duration, Instant};

    use common::kafka::{cluster, config, send};
    use common::wait_until;
    use weir::runtime::internals::rdkafka;

    use rdkafka::ClientConfig;

    /// The last value of every key of `out` (absent after a tombstone), read from the
    /// start until it equals `expected` (or 60 s pass).
    fn converge(servers: &str, expected: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "fk-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition_offset("out", p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut last = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && &last != expected {
            while let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                let k = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                match m.payload() {
                    Some(v) => {
                        last.insert(k, String::from_utf8(v.to_vec()).unwrap());
                    }
                    None => {
                        last.remove(&k);
                    }
                }
            }
        }
        last
    }

    fn topology() -> Topology {
        let builder = StreamsBuilder::new();
        let left = builder.table::<String, String>("left");
        let right = builder.table::<String, String>("right");
        left.left_join_foreign(
            &right,
            |_: &String, v: &String| {
                let f = v.split('|').nth(1).unwrap_or_default();
                (!f.is_empty()).then(|| f.to_string())
            },
            |l: &String, r: Option<&String>| format!("{l}+{}", r.map_or("null", String::as_str)),
        )
        .to_stream()
        .to("out");
        builder.build().unwrap()
    }

    fn apply(
        servers: &str,
        events: &[Event],
        left: &mut BTreeMap<u8, (Option<u8>, u32)>,
        right: &mut BTreeMap<u8, u32>,
    ) {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for e in events {
            match *e {
                Event::Left(k, f, v) => {
                    left.insert(k, (f, v));
                    l.push((format!("l{k}"), Some(left_value(f, v))));
                }
                Event::LeftDelete(k) => {
                    left.remove(&k);
                    l.push((format!("l{k}"), None));
                }
                Event::Right(k, v) => {
                    right.insert(k, v);
                    r.push((format!("r{k}"), Some(v.to_string())));
                }
                Event::RightDelete(k) => {
                    right.remove(&k);
                    r.push((format!("r{k}"), None));
                }
            }
        }
        send(servers, "right", &r);
        send(servers, "left", &l);
    }

    /// Two runtimes in one consumer group share the join (four left partitions, two
    /// right ones, so the tables are not co-partitioned); the second joins in the
    /// middle, and the rebalance moves tasks, their subscription stores and results.
    /// Every left row ends joined with its foreign row as the tables finally are.
    /// (Under exactly-once this mock cluster does not keep transactional offsets;
    /// issue 18's real broker tests that.)
    #[test]
    fn on_kafka_a_foreign_key_join_survives_a_rebalance() {
        // The mock cluster cannot create topics through the admin API: the internal
        // topics the query would create, made here.
        let p = "kafka-test-fk-";
        let internal = [
            (
                format!("{p}KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic"),
                2,
            ),
            (
                format!("{p}KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic"),
                4,
            ),
            (
                format!("{p}KTABLE-SOURCE-STATE-STORE-0000000001-changelog"),
                4,
            ),
            (
                format!("{p}KTABLE-SOURCE-STATE-STORE-0000000004-changelog"),
                2,
            ),
            (
                format!("{p}KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010-changelog"),
                2,
            ),
            (
                format!("{p}KTABLE-FK-JOIN-OUTPUT-STATE-STORE-0000000019-changelog"),
                4,
            ),
        ];
        let mut topics: Vec<(&str, i32)> = vec![("left", 4), ("right", 2), ("out", 4)];
        topics.extend(internal.iter().map(|(t, n)| (t.as_str(), *n)));
        let mock = cluster(&topics);
        let servers = mock.bootstrap_servers();
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let rt1 = Runtime::new(config(&servers, d1.path()).build().unwrap()).unwrap();
        let q1 = rt1.start_query("fk", topology()).unwrap();
        wait_until("six tasks (four left, two right)", || q1.stats().tasks == 6);

        let (mut left, mut right) = (BTreeMap::new(), BTreeMap::new());
        let first: Vec<Event> = (0..10)
            .map(|r| Event::Right(r, u32::from(r) * 100))
            .chain((0..40).map(|l| Event::Left(l, Some(l % 12), u32::from(l))))
            .collect();
        apply(&servers, &first, &mut left, &mut right);
        let expected = model(&left, &right, true);
        assert_eq!(converge(&servers, &expected), expected);

        let rt2 = Runtime::new(config(&servers, d2.path()).build().unwrap()).unwrap();
        let q2 = rt2.start_query("fk", topology()).unwrap();
        wait_until("the group to split the tasks", || {
            let (a, b) = (q1.stats().tasks, q2.stats().tasks);
            a > 0 && b > 0 && a + b == 6
        });
        // Rows move between foreign keys (and to none), foreign rows change and go,
        // left rows go.
        let second: Vec<Event> = (0..40)
            .step_by(3)
            .map(|l| Event::Left(l, (l % 5 != 0).then_some((l + 5) % 12), u32::from(l) + 1000))
            .chain([
                Event::Right(3, 333),
                Event::RightDelete(4),
                Event::Right(11, 1111),
                Event::LeftDelete(7),
                Event::LeftDelete(8),
            ])
            .collect();
        apply(&servers, &second, &mut left, &mut right);
        let expected = model(&left, &right, true);
        assert_eq!(converge(&servers, &expected), expected);
        q1.stop().unwrap();
        q2.stop().unwrap();
    }
}
