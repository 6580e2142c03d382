//! Global tables on the worker pool: loaded to their topic's end before the stream is
//! processed, followed while the query runs, resumed from their offsets file after a
//! restart, and on Kafka (librdkafka's mock cluster) read outside the consumer group.

mod common;

use std::time::Duration;

use common::{read_n, sorted, wait_until};
use weir::prelude::*;

fn runtime(broker: &Broker, dir: &std::path::Path) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .commit_interval(Duration::from_millis(100))
            .broker(broker.clone())
            .state_dir(dir)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// orders (order id → product id) left-joined with the global table of products.
fn enrich() -> Topology {
    let builder = StreamsBuilder::new();
    let products = builder.global_table::<String, String>("products");
    builder
        .stream::<String, String>("orders")
        .left_join_global(
            &products,
            |_order, product| product.clone(),
            |product, name: Option<&String>| {
                format!("{product}={}", name.map_or("?", String::as_str))
            },
        )
        .to("enriched");
    builder.build().unwrap()
}

#[test]
fn a_global_table_is_loaded_before_the_stream_is_processed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new();
    broker.create_topic("products", 3).unwrap();
    broker.create_topic("orders", 2).unwrap();
    broker.create_topic("enriched", 2).unwrap();
    // 300 products over 3 partitions, and 200 orders, all written before the query
    // starts: every order must find its product (the table is loaded first).
    for p in 0..300 {
        broker
            .send("products", &format!("p{p}"), &format!("v1-{p}"))
            .unwrap();
    }
    for o in 0..200 {
        broker
            .send("orders", &format!("o{o}"), &format!("p{}", o % 300))
            .unwrap();
    }
    let rt = runtime(&broker, dir.path());
    let q = rt.start_query("enrich", enrich()).unwrap();
    // The global task's own records count as restored, as Kafka's global restore does.
    assert_eq!(q.stats().records_restored, 300);
    let out: Vec<(String, String)> = read_n(&broker, "enriched", 200);
    let expected: Vec<(String, String)> = (0..200)
        .map(|o| (format!("o{o}"), format!("p{o}=v1-{o}")))
        .collect();
    assert_eq!(sorted(out), sorted(expected));

    // Followed while the query runs: an update reaches the store, then the stream.
    broker
        .send("products", &"p7".to_string(), &"v2-7".to_string())
        .unwrap();
    let mut n = 200;
    wait_until("the update of p7 to be joined", || {
        broker
            .send("orders", &format!("probe{n}"), &"p7".to_string())
            .unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
        broker
            .read_all::<String, String>("enriched")
            .unwrap()
            .iter()
            .any(|r| r.record.value == "p7=v2-7")
    });
    q.stop().unwrap();
    assert_eq!(q.stats().tasks, 0);
    // `<state>/<query>/global/<store>.offsets`: one `partition offset` line per
    // partition, 301 records in all.
    let file = std::fs::read_dir(dir.path().join("enrich/global"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".offsets"))
        .expect("an offsets file");
    let text = std::fs::read_to_string(dir.path().join("enrich/global").join(file)).unwrap();
    let total: i64 = text
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 301, "{text}");
    drop(rt);

    // While the query is down: a product is deleted and one added. The restart reads
    // only what came after its offsets (two records), then joins with them.
    broker
        .send("products", &"p0".to_string(), &None::<String>)
        .unwrap();
    broker
        .send("products", &"p300".to_string(), &"v1-300".to_string())
        .unwrap();
    let rt = runtime(&broker, dir.path());
    let q = rt.start_query("enrich", enrich()).unwrap();
    assert_eq!(q.stats().records_restored, 2);
    let before = broker.read_all::<String, String>("enriched").unwrap().len();
    for (o, p) in [("x1", "p0"), ("x2", "p300"), ("x3", "p7")] {
        broker
            .send("orders", &o.to_string(), &p.to_string())
            .unwrap();
    }
    let out: Vec<(String, String)> = read_n(&broker, "enriched", before + 3);
    let mut tail: Vec<(String, String)> = out
        .into_iter()
        .filter(|(k, _)| k.starts_with('x'))
        .collect();
    tail.sort();
    assert_eq!(
        tail,
        vec![
            ("x1".to_string(), "p0=?".to_string()),
            ("x2".to_string(), "p300=v1-300".to_string()),
            ("x3".to_string(), "p7=v2-7".to_string()),
        ]
    );
    q.stop().unwrap();
}

#[test]
fn a_global_table_without_its_offsets_file_is_rebuilt_and_clean_up_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new();
    broker.create_topic("products", 2).unwrap();
    broker.create_topic("orders", 1).unwrap();
    broker.create_topic("enriched", 1).unwrap();
    broker
        .send("products", &"a".to_string(), &"1".to_string())
        .unwrap();
    broker
        .send("products", &"b".to_string(), &"2".to_string())
        .unwrap();
    let rt = runtime(&broker, dir.path());
    let q = rt.start_query("enrich", enrich()).unwrap();
    q.stop().unwrap();
    // The offsets file lost (a crash before the first commit): the store may hold
    // anything, so it is wiped and read again from the start.
    let global = dir.path().join("enrich/global");
    for e in std::fs::read_dir(&global).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "offsets") {
            std::fs::remove_file(p).unwrap();
        }
    }
    broker
        .send("products", &"a".to_string(), &None::<String>)
        .unwrap();
    let q = rt.start_query("enrich", enrich()).unwrap();
    assert_eq!(q.stats().records_restored, 3);
    broker
        .send("orders", &"o1".to_string(), &"a".to_string())
        .unwrap();
    broker
        .send("orders", &"o2".to_string(), &"b".to_string())
        .unwrap();
    let out: Vec<(String, String)> = read_n(&broker, "enriched", 2);
    assert_eq!(
        sorted(out),
        vec![
            ("o1".to_string(), "a=?".to_string()),
            ("o2".to_string(), "b=2".to_string())
        ]
    );
    q.stop().unwrap();
    rt.clean_up_query("enrich").unwrap();
    assert!(!dir.path().join("enrich").exists());
}

/// Two global tables in one query: each has its own global task, and the stream's
/// tasks read both.
#[test]
fn a_query_joins_two_global_tables() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new();
    for (t, n) in [
        ("products", 2),
        ("colours", 3),
        ("orders", 2),
        ("enriched", 1),
    ] {
        broker.create_topic(t, n).unwrap();
    }
    broker
        .send("products", &"p1".to_string(), &"tea".to_string())
        .unwrap();
    broker
        .send("colours", &"p1".to_string(), &"green".to_string())
        .unwrap();
    let builder = StreamsBuilder::new();
    let products = builder.global_table::<String, String>("products");
    let colours = builder.global_table::<String, String>("colours");
    builder
        .stream::<String, String>("orders")
        .join_global(&products, |_, p| p.clone(), |p, name| format!("{p}:{name}"))
        .left_join_global(
            &colours,
            |_, v| v.split(':').next().map(str::to_string),
            |v, c: Option<&String>| format!("{v}:{}", c.map_or("?", String::as_str)),
        )
        .to("enriched");
    let rt = runtime(&broker, dir.path());
    let q = rt.start_query("two", builder.build().unwrap()).unwrap();
    assert_eq!(q.stats().records_restored, 2);
    broker
        .send("orders", &"o1".to_string(), &"p1".to_string())
        .unwrap();
    let out: Vec<(String, String)> = read_n(&broker, "enriched", 1);
    assert_eq!(out, vec![("o1".to_string(), "p1:tea:green".to_string())]);
    q.stop().unwrap();
}

#[test]
fn a_missing_global_topic_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::new();
    broker.create_topic("orders", 1).unwrap();
    broker.create_topic("enriched", 1).unwrap();
    let rt = runtime(&broker, dir.path());
    let err = rt.start_query("enrich", enrich()).unwrap_err().to_string();
    assert!(
        err.contains("global topic 'products' of query 'enrich' does not exist"),
        "{err}"
    );
}

#[cfg(feature = "kafka")]
mod kafka {
    use super::*;
    use common::kafka::{cluster, config, send};
    use weir::runtime::internals::rdkafka;

    use rdkafka::ClientConfig;

    /// Reads `enriched` from the start until `done` holds for what was read.
    fn read_until(
        servers: &str,
        mut done: impl FnMut(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        use rdkafka::Message;
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "global-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("enriched", p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        wait_until("enriched records", || {
            while let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                out.push((
                    String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                    String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
                ));
            }
            done(&out)
        });
        out
    }

    /// Two processes in one group share the orders' partitions; each keeps the whole
    /// global table (read outside the group, from both of its partitions), so every
    /// order is enriched whichever process runs it. The global topic is not in the
    /// group's subscription: nothing commits offsets for it.
    #[test]
    fn on_kafka_every_process_keeps_the_whole_global_table() {
        let mock = cluster(&[("products", 2), ("orders", 2), ("enriched", 2)]);
        let servers = mock.bootstrap_servers();
        let products: Vec<(String, Option<String>)> = (0..50)
            .map(|p| (format!("p{p}"), Some(format!("n{p}"))))
            .collect();
        send(&servers, "products", &products);
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let rt1 = Runtime::new(config(&servers, d1.path()).build().unwrap()).unwrap();
        let rt2 = Runtime::new(config(&servers, d2.path()).build().unwrap()).unwrap();
        let q1 = rt1.start_query("enrich", enrich()).unwrap();
        let q2 = rt2.start_query("enrich", enrich()).unwrap();
        assert_eq!(q1.stats().records_restored, 50);
        assert_eq!(q2.stats().records_restored, 50);
        // The group settled: each process runs its global task and one orders task
        // (a later rebalance would re-run records under at-least-once).
        wait_until("the group to split the orders", || {
            q1.stats().tasks == 2 && q2.stats().tasks == 2
        });
        // An update after the start, followed by both processes' global tasks: probe
        // orders for p1 (one per partition) until both show it.
        send(
            &servers,
            "products",
            &[("p1".to_string(), Some("m1".to_string()))],
        );
        let mut n = 0;
        read_until(&servers, |out| {
            // Four probe keys, spread over both order partitions.
            let probes: Vec<(String, Option<String>)> = (0..4)
                .map(|i| (format!("probe{n}-{i}"), Some("p1".to_string())))
                .collect();
            n += 1;
            send(&servers, "orders", &probes);
            let fresh: std::collections::BTreeSet<&str> = out
                .iter()
                .filter(|(_, v)| v == "p1=m1")
                .map(|(k, _)| k.as_str())
                .collect();
            // Every probe of some round enriched with the update: both processes
            // (whichever owns each partition) have it.
            (0..n).any(|r| (0..4).all(|i| fresh.contains(format!("probe{r}-{i}").as_str())))
        });
        let orders: Vec<(String, Option<String>)> = (0..100)
            .map(|o| (format!("o{o}"), Some(format!("p{}", o % 50))))
            .collect();
        send(&servers, "orders", &orders);
        let out: Vec<(String, String)> = read_until(&servers, |out| {
            out.iter().filter(|(k, _)| k.starts_with('o')).count() >= 100
        })
        .into_iter()
        .filter(|(k, _)| k.starts_with('o'))
        .collect();
        let expected: Vec<(String, String)> = (0..100)
            .map(|o| {
                let p = o % 50;
                let name = if p == 1 {
                    "m1".to_string()
                } else {
                    format!("n{p}")
                };
                (format!("o{o}"), format!("p{p}={name}"))
            })
            .collect();
        assert_eq!(sorted(out), sorted(expected));
        q1.stop().unwrap();
        q2.stop().unwrap();
    }
}
