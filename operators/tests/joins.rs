//! Stream-stream joins against a brute-force model: every pair of records with the
//! same key within the window, and, for left and outer joins, every record that never
//! had a partner, once, with `None` for it (Kafka Streams' results with its fix of
//! spurious left/outer results). Random keys, sides and orders, the disorder within
//! the grace period and the window (so no record arrives after its window closed).

use std::time::Duration;

use proptest::prelude::*;
use weir::prelude::*;
use weir::testing::TopologyTestDriver;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Inner,
    Left,
    Outer,
}

/// (left?, key, ts, value) in arrival order.
type Event = (bool, u8, i64, u32);

fn expected(kind: Kind, before: i64, after: i64, events: &[Event]) -> Vec<(u8, String, i64)> {
    let mut out = Vec::new();
    let lefts: Vec<_> = events.iter().filter(|e| e.0).collect();
    let rights: Vec<_> = events.iter().filter(|e| !e.0).collect();
    for l in &lefts {
        let mut found = false;
        for r in &rights {
            if l.1 == r.1 && r.2 >= l.2 - before && r.2 <= l.2 + after {
                found = true;
                out.push((l.1, format!("{}+{}", l.3, r.3), l.2.max(r.2)));
            }
        }
        if !found && kind != Kind::Inner {
            out.push((l.1, format!("{}+null", l.3), l.2));
        }
    }
    if kind == Kind::Outer {
        for r in &rights {
            let found = lefts
                .iter()
                .any(|l| l.1 == r.1 && r.2 >= l.2 - before && r.2 <= l.2 + after);
            if !found {
                out.push((r.1, format!("null+{}", r.3), r.2));
            }
        }
    }
    out.sort();
    out
}

fn run(
    kind: Kind,
    before: i64,
    after: i64,
    grace: i64,
    events: &[Event],
) -> Vec<(u8, String, i64)> {
    let builder = StreamsBuilder::new();
    let left = builder.stream::<i32, u64>("left");
    let right = builder.stream::<i32, u64>("right");
    let windows = JoinWindows::of_time_difference_and_grace(
        Duration::from_millis(after as u64),
        Duration::from_millis(grace as u64),
    )
    .before(Duration::from_millis(before as u64));
    let show = |v: Option<&u64>| v.map_or("null".to_string(), |v| v.to_string());
    let joined = match kind {
        Kind::Inner => left.join_stream(
            &right,
            move |l: &u64, r: &u64| format!("{l}+{r}"),
            windows,
            StreamJoined::defaults(),
        ),
        Kind::Left => left.left_join_stream(
            &right,
            move |l: &u64, r: Option<&u64>| format!("{l}+{}", show(r)),
            windows,
            StreamJoined::defaults(),
        ),
        Kind::Outer => left.outer_join_stream(
            &right,
            move |l: Option<&u64>, r: Option<&u64>| format!("{}+{}", show(l), show(r)),
            windows,
            StreamJoined::defaults(),
        ),
    };
    joined.to("out");
    let driver = TopologyTestDriver::new(
        builder.build().unwrap(),
        RuntimeConfig::builder().build().unwrap(),
    )
    .unwrap();
    let l = driver.create_input_topic::<i32, u64>("left").unwrap();
    let r = driver.create_input_topic::<i32, u64>("right").unwrap();
    for (is_left, key, ts, value) in events {
        let topic = if *is_left { &l } else { &r };
        topic
            .pipe_input_at(i32::from(*key), u64::from(*value), *ts)
            .unwrap();
    }
    // Far in the future on both sides (a key of its own): every window closes.
    let end = events.iter().map(|e| e.2).max().unwrap_or(0) + before + after + grace + 10;
    l.pipe_input_at(-1, 0u64, end).unwrap();
    r.pipe_input_at(-2, 0u64, end).unwrap();
    let out = driver.create_output_topic::<i32, String>("out").unwrap();
    let mut got: Vec<(u8, String, i64)> = out
        .read_records_to_list()
        .unwrap()
        .into_iter()
        .filter(|rec| rec.key >= 0)
        .map(|rec| (rec.key as u8, rec.value, rec.timestamp))
        .collect();
    got.sort();
    got
}

fn scenario() -> impl Strategy<Value = (i64, i64, i64, Vec<Event>)> {
    (0i64..8, 0i64..8, 0i64..8).prop_flat_map(|(before, after, grace)| {
        // Disorder within the grace and the window: no record comes after its window
        // closed, so the model's "never had a partner" is exactly Kafka's rule.
        let disorder = grace.min(before).min(after);
        let events =
            prop::collection::vec((any::<bool>(), 0u8..3, 0i64..4, 0i64..=disorder), 1..40)
                .prop_map(|steps| {
                    let mut base = 0;
                    steps
                        .into_iter()
                        .enumerate()
                        .map(|(i, (left, key, step, back))| {
                            base += step;
                            (left, key, (base - back).max(0), i as u32)
                        })
                        .collect::<Vec<Event>>()
                });
        (Just(before), Just(after), Just(grace), events)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn stream_stream_joins_match_the_brute_force_model(
        (before, after, grace, events) in scenario(),
        kind in prop_oneof![Just(Kind::Inner), Just(Kind::Left), Just(Kind::Outer)],
    ) {
        let got = run(kind, before, after, grace, &events);
        prop_assert_eq!(got, expected(kind, before, after, &events));
    }
}

/// The left join holds an unmatched record back until its window closes, and a
/// partner arriving in time cancels it (no spurious `left+null`).
#[test]
fn a_left_record_waits_for_its_window_to_close() {
    let builder = StreamsBuilder::new();
    let left = builder.stream::<i32, u64>("left");
    let right = builder.stream::<i32, u64>("right");
    left.left_join_stream(
        &right,
        |l: &u64, r: Option<&u64>| format!("{l}+{}", r.map_or("null".into(), |r| r.to_string())),
        JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(10)),
        StreamJoined::defaults(),
    )
    .to("out");
    let driver = TopologyTestDriver::new(
        builder.build().unwrap(),
        RuntimeConfig::builder().build().unwrap(),
    )
    .unwrap();
    let l = driver.create_input_topic::<i32, u64>("left").unwrap();
    let r = driver.create_input_topic::<i32, u64>("right").unwrap();
    let out = driver.create_output_topic::<i32, String>("out").unwrap();
    l.pipe_input_at(1, 1u64, 100).unwrap();
    l.pipe_input_at(2, 2u64, 100).unwrap();
    assert!(out.is_empty().unwrap(), "held back");
    r.pipe_input_at(1, 9u64, 105).unwrap();
    let joined = out.read_record().unwrap();
    assert_eq!(
        (joined.key, joined.value.as_str(), joined.timestamp),
        (1, "1+9", 105)
    );
    // Stream time 111 closes key 2's window (100 + 10 < 111): out with null.
    r.pipe_input_at(3, 3u64, 111).unwrap();
    let late = out.read_record().unwrap();
    assert_eq!(
        (late.key, late.value.as_str(), late.timestamp),
        (2, "2+null", 100)
    );
    assert!(out.is_empty().unwrap());
}

/// Both sides of a stream-stream join had their keys changed upstream: each goes
/// through its repartition topic (`<name>-left-repartition`, `<name>-right-repartition`)
/// and equal keys meet, as in Kafka Streams.
#[test]
fn rekeyed_sides_of_a_stream_join_are_repartitioned() {
    let builder = StreamsBuilder::new();
    // Clicks and views keyed by event id, with the user in the value.
    let clicks = builder
        .stream::<String, String>("clicks")
        .select_key(|_id: &String, user: &String| user.clone());
    let views = builder
        .stream::<String, String>("views")
        .select_key(|_id: &String, user: &String| user.clone());
    clicks
        .join_stream(
            &views,
            |c: &String, v: &String| format!("{c}/{v}"),
            JoinWindows::of_time_difference_with_no_grace(Duration::from_secs(5)),
            StreamJoined::defaults().with_name("click-view"),
        )
        .to("pairs");
    let topology = builder.build().unwrap();
    let description = topology.describe().to_string();
    for t in [
        "click-view-left-repartition",
        "click-view-right-repartition",
    ] {
        assert!(description.contains(t), "{t} in {description}");
    }
    let driver =
        TopologyTestDriver::new(topology, RuntimeConfig::builder().build().unwrap()).unwrap();
    let views = driver
        .create_input_topic::<String, String>("views")
        .unwrap();
    let clicks = driver
        .create_input_topic::<String, String>("clicks")
        .unwrap();
    views
        .pipe_input_at("v1".to_string(), "ann".to_string(), 1_000)
        .unwrap();
    views
        .pipe_input_at("v2".to_string(), "bob".to_string(), 1_500)
        .unwrap();
    clicks
        .pipe_input_at("c1".to_string(), "ann".to_string(), 3_000)
        .unwrap();
    clicks
        .pipe_input_at("c2".to_string(), "cyd".to_string(), 3_000)
        .unwrap();
    let out = driver
        .create_output_topic::<String, String>("pairs")
        .unwrap();
    assert_eq!(
        out.read_key_values_to_list().unwrap(),
        vec![("ann".to_string(), "ann/ann".to_string())]
    );
}
