//! Joins on exactly-once across rebalances against the real Kafka-protocol broker
//! (issue 17; crabka-broker, see `common/real_broker.rs`): a stream-table join emits
//! each order exactly once while a second member joins and leaves; a foreign-key
//! join's committed result table ends equal to the model of its two tables.

#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kafka::committed;
use common::real_broker::{RealBroker, committed_strings, create_topics, runtime};
use weir::prelude::*;

/// Issue 17's exactly-once join check: a stream-table join run by two runtimes in one
/// group, the second joining (a rebalance moves tasks, their table rows restored from
/// the changelog) and leaving again (a second rebalance) while orders flow; on
/// exactly-once every order comes out exactly once, enriched with its customer's row.
#[test]
fn exactly_once_a_stream_table_join_across_rebalances_emits_each_order_once() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(
        &servers,
        &[("customers", 4), ("orders", 4), ("enriched", 4)],
    );
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rt1 = runtime(&servers, d1.path());
    let q1 = rt1.start_query("st", common::kafka::enrich()).unwrap();
    let customers: Vec<(String, Option<String>)> = (0..40)
        .map(|c| (format!("c{c}"), Some(format!("name{c}"))))
        .collect();
    common::kafka::send(&servers, "customers", &customers);
    let orders = |from: usize, to: usize| -> Vec<(String, Option<String>)> {
        (from..to)
            .map(|o| (format!("c{}", o % 40), Some(format!("o{o}"))))
            .collect()
    };
    common::wait_until("the table", || q1.stats().records_processed >= 40);
    let mut sent = 0;
    for _ in 0..5 {
        common::kafka::send(&servers, "orders", &orders(sent, sent + 200));
        sent += 200;
    }
    // A second member joins while orders flow, then leaves (stops) while they flow.
    let rt2 = runtime(&servers, d2.path());
    let q2 = rt2.start_query("st", common::kafka::enrich()).unwrap();
    for _ in 0..5 {
        common::kafka::send(&servers, "orders", &orders(sent, sent + 200));
        sent += 200;
        std::thread::sleep(Duration::from_millis(200));
    }
    common::wait_until("the group to split the tasks", || {
        q1.stats().tasks > 0 && q2.stats().tasks > 0
    });
    for _ in 0..5 {
        common::kafka::send(&servers, "orders", &orders(sent, sent + 200));
        sent += 200;
    }
    q2.stop().unwrap();
    rt2.shutdown().unwrap();
    for _ in 0..5 {
        common::kafka::send(&servers, "orders", &orders(sent, sent + 200));
        sent += 200;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&servers, "orders", 4) < sent as i64 {
        assert!(Instant::now() < deadline, "orders not all committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    q1.stop().unwrap();

    let out = committed_strings(&servers, "enriched", 4, Duration::from_secs(3));
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, v) in out {
        let v = v.expect("no tombstones in a stream");
        let order = v.split(':').next().unwrap().to_string();
        seen.entry(order).or_default().push(v);
    }
    for o in 0..sent {
        let want = vec![format!("o{o}:name{}", o % 40)];
        assert_eq!(seen.get(&format!("o{o}")), Some(&want), "order o{o}");
    }
    assert_eq!(seen.len(), sent, "no other output");
    println!("{sent} orders over two rebalances: each committed exactly once");
}

/// Issue 17's exactly-once foreign-key join check: orders (order → "item|customer")
/// left-joined on the customer with a customers table whose topic has another
/// partition count, run by two runtimes in one group with a member joining and
/// leaving while both tables change. The committed result table (last value per key,
/// read_committed) is the join of the tables as they end.
#[test]
fn exactly_once_a_foreign_key_join_across_rebalances_ends_equal_to_the_model() {
    let broker = RealBroker::start();
    let servers = broker.servers();
    create_topics(&servers, &[("fk-left", 4), ("fk-right", 2), ("fk-out", 4)]);
    let topology = || {
        let builder = StreamsBuilder::new();
        let left = builder.table::<String, String>("fk-left");
        let right = builder.table::<String, String>("fk-right");
        left.left_join_foreign(
            &right,
            |_: &String, v: &String| v.split('|').nth(1).map(str::to_string),
            |l: &String, r: Option<&String>| format!("{l}+{}", r.map_or("null", String::as_str)),
        )
        .to_stream()
        .to("fk-out");
        builder.build().unwrap()
    };
    let mut left: BTreeMap<String, String> = BTreeMap::new();
    let mut right: BTreeMap<String, String> = BTreeMap::new();
    let mut send_left = |rows: Vec<(String, String)>| {
        for (k, v) in &rows {
            left.insert(k.clone(), v.clone());
        }
        let rows: Vec<(String, Option<String>)> =
            rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
        common::kafka::send(&servers, "fk-left", &rows);
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rt1 = runtime(&servers, d1.path());
    let q1 = rt1.start_query("fk", topology()).unwrap();
    let customers: Vec<(String, Option<String>)> = (0..10)
        .map(|c| (format!("r{c}"), Some(format!("name{c}"))))
        .collect();
    for (k, v) in &customers {
        right.insert(k.clone(), v.clone().unwrap());
    }
    common::kafka::send(&servers, "fk-right", &customers);
    send_left(
        (0..60)
            .map(|o| (format!("l{o}"), format!("{o}|r{}", o % 12)))
            .collect(),
    );
    let rt2 = runtime(&servers, d2.path());
    let q2 = rt2.start_query("fk", topology()).unwrap();
    send_left(
        (0..60)
            .step_by(3)
            .map(|o| (format!("l{o}"), format!("{o}b|r{}", (o + 5) % 12)))
            .collect(),
    );
    common::wait_until("the group to split the tasks", || {
        q1.stats().tasks > 0 && q2.stats().tasks > 0
    });
    let changes: Vec<(String, Option<String>)> = vec![
        ("r3".to_string(), Some("renamed3".to_string())),
        ("r4".to_string(), None),
        ("r11".to_string(), Some("name11".to_string())),
    ];
    for (k, v) in &changes {
        match v {
            Some(v) => right.insert(k.clone(), v.clone()),
            None => right.remove(k),
        };
    }
    common::kafka::send(&servers, "fk-right", &changes);
    q2.stop().unwrap();
    rt2.shutdown().unwrap();
    send_left(
        (1..60)
            .step_by(4)
            .map(|o| (format!("l{o}"), format!("{o}c|r{}", (o + 7) % 12)))
            .collect(),
    );

    let want: BTreeMap<String, String> = left
        .iter()
        .map(|(k, v)| {
            let fk = v.split('|').nth(1).unwrap();
            let r = right.get(fk).map_or("null", String::as_str);
            (k.clone(), format!("{v}+{r}"))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in committed_strings(&servers, "fk-out", 4, Duration::from_secs(2)) {
            match v {
                Some(v) => last.insert(k, v),
                None => last.remove(&k),
            };
        }
        if last == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed result {last:?}, want {want:?}"
        );
    }
    q1.stop().unwrap();
    println!(
        "foreign-key join over two rebalances: {} rows equal to the model",
        want.len()
    );
}
