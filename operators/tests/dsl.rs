//! Every DSL operator, run on the in-process broker, checked against its expected output.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{read_n, runtime, runtime_in, sorted, wait_until};
use weir::prelude::*;

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn filter_filter_not_map_values_to() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    b.create_topic("in", 3).unwrap();
    b.create_topic("even", 3).unwrap();
    b.create_topic("odd", 3).unwrap();
    let builder = StreamsBuilder::new();
    let input = builder.stream::<String, i64>("in");
    input
        .filter(|_, v| v % 2 == 0)
        .map_values(|v| v * 10)
        .to("even");
    input.filter_not(|_, v| v % 2 == 0).to("odd");
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for i in 0..100i64 {
        b.send("in", &format!("k{i}"), &i).unwrap();
    }
    let even = read_n::<String, i64>(&b, "even", 50);
    let odd = read_n::<String, i64>(&b, "odd", 50);
    q.stop().unwrap();
    assert_eq!(
        sorted(even.iter().map(|(_, v)| *v).collect()),
        (0..100)
            .filter(|i| i % 2 == 0)
            .map(|i| i * 10)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sorted(odd.iter().map(|(_, v)| *v).collect()),
        (0..100).filter(|i| i % 2 == 1).collect::<Vec<_>>()
    );
    // Keys are unchanged, so each output record sits on its key's partition.
    for r in b.read_all::<String, i64>("even").unwrap() {
        assert_eq!(r.record.key, format!("k{}", r.record.value / 10));
        assert_eq!(
            r.partition,
            weir::runtime::partition_for_key(r.record.key.as_bytes(), 3)
        );
    }
    assert_eq!(q.state(), QueryState::Stopped);
}

#[test]
fn map_flat_map_flat_map_values_select_key_keep_timestamps_and_headers() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    for t in ["in", "mapped", "flat", "flatvals", "rekeyed"] {
        b.create_topic(t, 1).unwrap();
    }
    let builder = StreamsBuilder::new();
    let input = builder.stream::<String, String>("in");
    input.map(|k, v| (v, k)).to("mapped");
    input
        .flat_map(|k, v| {
            v.chars()
                .map(move |c| (format!("{k}{c}"), c.to_string()))
                .collect::<Vec<_>>()
        })
        .to("flat");
    input
        .flat_map_values(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .to("flatvals");
    input
        .select_key(|_, v| v.len() as i64)
        .to_with("rekeyed", Produced::with(I64Serde, StringSerde));
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    let mut headers = Headers::new();
    headers.add("trace", Some(b"abc".to_vec()));
    let rec = Record::new(
        Some(s("k").into_bytes().into()),
        Some(s("a,b").into_bytes().into()),
        1234,
    )
    .with_headers(headers.clone());
    b.append("in", 0, [rec]).unwrap();

    let mapped = read_n::<String, String>(&b, "mapped", 1);
    assert_eq!(mapped, vec![(s("a,b"), s("k"))]);
    let flat = read_n::<String, String>(&b, "flat", 3);
    assert_eq!(
        flat,
        vec![(s("ka"), s("a")), (s("k,"), s(",")), (s("kb"), s("b"))]
    );
    let flatvals = read_n::<String, String>(&b, "flatvals", 2);
    assert_eq!(flatvals, vec![(s("k"), s("a")), (s("k"), s("b"))]);
    let rekeyed = read_n::<i64, String>(&b, "rekeyed", 1);
    assert_eq!(rekeyed, vec![(3, s("a,b"))]);
    for topic in ["mapped", "flat", "flatvals"] {
        for r in b.read_all::<String, String>(topic).unwrap() {
            assert_eq!(
                r.record.timestamp, 1234,
                "{topic} keeps the input timestamp"
            );
            assert_eq!(r.record.headers, headers, "{topic} keeps the input headers");
        }
    }
    q.stop().unwrap();
}

#[test]
fn peek_and_foreach_see_every_record() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    b.create_topic("in", 2).unwrap();
    b.create_topic("out", 2).unwrap();
    let peeked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let builder = StreamsBuilder::new();
    let input = builder.stream::<String, i64>("in");
    let p = peeked.clone();
    input
        .peek(move |_, _| {
            p.fetch_add(1, Ordering::SeqCst);
        })
        .to("out");
    let s2 = seen.clone();
    input.foreach(move |k, v| s2.lock().unwrap().push((k, v)));
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for i in 0..20i64 {
        b.send("in", &format!("k{}", i % 4), &i).unwrap();
    }
    read_n::<String, i64>(&b, "out", 20);
    wait_until("foreach", || seen.lock().unwrap().len() == 20);
    q.stop().unwrap();
    assert_eq!(peeked.load(Ordering::SeqCst), 20);
    let got = sorted(seen.lock().unwrap().iter().map(|(_, v)| *v).collect());
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[test]
fn split_routes_to_first_matching_branch_and_default() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    for t in ["in", "small", "medium", "rest", "small2"] {
        b.create_topic(t, 1).unwrap();
    }
    let builder = StreamsBuilder::new();
    let input = builder.stream::<String, i64>("in");
    let branches = input
        .split_named("size-")
        .branch(|_, v| *v < 10, Branched::as_("small"))
        .branch(|_, v| *v < 100, Branched::as_("medium"))
        .default_branch(Branched::default());
    assert_eq!(
        sorted(branches.keys().cloned().collect()),
        vec![s("size-0"), s("size-medium"), s("size-small")]
    );
    branches["size-small"].to("small");
    branches["size-medium"].to("medium");
    branches["size-0"].to("rest");
    // Unnamed, no default: keyed by position; unmatched records are dropped.
    let only_small = input
        .split()
        .branch(|_, v| *v < 10, Branched::default())
        .no_default_branch();
    assert_eq!(only_small.len(), 1);
    only_small.values().next().unwrap().to("small2");

    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for v in [1i64, 50, 500, 5, 99, 100] {
        b.send("in", &s("k"), &v).unwrap();
    }
    let vals = |t: &str, n| {
        read_n::<String, i64>(&b, t, n)
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    assert_eq!(vals("small", 2), vec![1, 5]);
    assert_eq!(vals("medium", 2), vec![50, 99]);
    assert_eq!(vals("rest", 2), vec![500, 100]);
    assert_eq!(vals("small2", 2), vec![1, 5]);
    q.stop().unwrap();
}

#[test]
fn merge_takes_records_of_both_streams() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    b.create_topic("a", 2).unwrap();
    b.create_topic("b", 2).unwrap();
    b.create_topic("out", 2).unwrap();
    let builder = StreamsBuilder::new();
    let a = builder.stream::<String, i64>("a");
    let bb = builder.stream::<String, i64>("b").map_values(|v| v + 1000);
    a.merge(&bb).to("out");
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for i in 0..10i64 {
        b.send("a", &format!("k{i}"), &i).unwrap();
        b.send("b", &format!("k{i}"), &i).unwrap();
    }
    let out = read_n::<String, i64>(&b, "out", 20);
    q.stop().unwrap();
    let want: Vec<i64> = (0..10).chain(1000..1010).collect();
    assert_eq!(sorted(out.into_iter().map(|(_, v)| v).collect()), want);
}

#[test]
fn merging_streams_of_two_builders_is_a_build_error() {
    let b1 = StreamsBuilder::new();
    let b2 = StreamsBuilder::new();
    let x = b1.stream::<String, String>("x");
    let y = b2.stream::<String, String>("y");
    x.merge(&y);
    let err = b1.build().unwrap_err().to_string();
    assert!(err.contains("same StreamsBuilder"), "{err}");
}

#[test]
fn repartition_moves_each_key_to_its_kafka_partition() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    b.create_topic("in", 4).unwrap();
    b.create_topic("out", 4).unwrap();
    let seen_by: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let builder = StreamsBuilder::new();

    struct RecordPartition(Arc<Mutex<HashMap<String, Vec<u32>>>>);
    impl Processor<String, i64, String, i64> for RecordPartition {
        fn process(
            &mut self,
            r: Record<String, i64>,
            ctx: &mut ProcessorContext<'_, String, i64>,
        ) -> Result<()> {
            let p = ctx.record_metadata().unwrap().partition;
            assert_eq!(ctx.task_id().partition, p);
            self.0
                .lock()
                .unwrap()
                .entry(r.key.clone())
                .or_default()
                .push(p);
            ctx.forward(r)
        }
    }

    let seen = seen_by.clone();
    builder
        .stream::<(), i64>("in")
        .select_key(|_, v| format!("user-{}", v % 7))
        .repartition_with(
            Repartitioned::defaults()
                .with_name("by-user")
                .with_partitions(3),
        )
        .process(move || RecordPartition(seen.clone()))
        .to("out");
    let topology = builder.build().unwrap();
    assert!(
        topology
            .describe()
            .to_string()
            .contains("by-user-repartition (internal)")
    );
    let q = rt.start_query("q", topology).unwrap();
    // Null-keyed input, spread round robin over 4 partitions.
    for i in 0..70i64 {
        b.produce(
            "in",
            Record::new(None, Some(i.to_be_bytes().to_vec().into()), i),
        )
        .unwrap();
    }
    read_n::<String, i64>(&b, "out", 70);
    q.stop().unwrap();
    assert_eq!(b.partitions("weir-q-by-user-repartition").unwrap(), 3);
    let seen = seen_by.lock().unwrap();
    assert_eq!(seen.len(), 7);
    for (key, parts) in seen.iter() {
        assert_eq!(parts.len(), 10);
        let want = weir::runtime::partition_for_key(key.as_bytes(), 3);
        assert!(
            parts.iter().all(|p| *p == want),
            "{key} seen on {parts:?}, want {want}"
        );
    }
}

#[cfg(feature = "json")]
#[test]
fn json_values_round_trip_through_a_query() {
    #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    struct Order {
        id: u32,
        amount: i64,
    }
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("orders", 1).unwrap();
    b.create_topic("big", 1).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, Json<Order>>("orders")
        .filter(|_, o| o.0.amount > 10)
        .to("big");
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for (id, amount) in [(1, 5), (2, 50), (3, 500)] {
        b.send("orders", &s("c"), &Json(Order { id, amount }))
            .unwrap();
    }
    let out = read_n::<String, Json<Order>>(&b, "big", 2);
    q.stop().unwrap();
    assert_eq!(
        out.iter().map(|(_, o)| o.0.id).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[test]
fn map_values_with_key_and_a_custom_partitioner() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 4).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .map_values_with_key(|k, v| format!("{k}={v}"))
        .to_with(
            "out",
            Produced::with(StringSerde, StringSerde)
                .with_partitioner(|_, v, n| Some(v.len() as u32 % n)),
        );
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for (k, v) in [("a", 1i64), ("bb", 22), ("ccc", 333)] {
        b.send("in", &s(k), &v).unwrap();
    }
    read_n::<String, String>(&b, "out", 3);
    q.stop().unwrap();
    let want: HashMap<&str, (&str, u32)> = [
        ("a", ("a=1", 3)),
        ("bb", ("bb=22", 1)),
        ("ccc", ("ccc=333", 3)),
    ]
    .into();
    let out = b.read_all::<String, String>("out").unwrap();
    assert_eq!(out.len(), 3);
    for r in out {
        let (value, partition) = want[r.record.key.as_str()];
        assert_eq!(r.record.value, value);
        assert_eq!(
            r.partition, partition,
            "value length % 4 picks the partition"
        );
    }
}

#[test]
fn a_partitioner_out_of_range_fails_the_query() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 2).unwrap();
    let builder = StreamsBuilder::new();
    builder.stream::<String, i64>("in").to_with(
        "out",
        Produced::defaults().with_partitioner(|_, _, _| Some(7)),
    );
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    b.send("in", &s("k"), &1i64).unwrap();
    let QueryState::Failed(e) = q.await_termination(Some(std::time::Duration::from_secs(20)))
    else {
        panic!("expected failure")
    };
    assert!(
        e.to_string()
            .contains("partition 7 of topic 'out' does not exist"),
        "{e}"
    );
}

#[test]
fn a_stream_with_nothing_downstream_consumes_and_commits() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    let builder = StreamsBuilder::new();
    let _unused = builder.stream::<String, i64>("in");
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    for i in 0..5i64 {
        b.send("in", &s("k"), &i).unwrap();
    }
    wait_until("records consumed", || q.stats().records_processed == 5);
    q.stop().unwrap();
    assert_eq!(b.committed("weir-q", "in", 0), Some(5));
}

/// `KStream::to_table` (Kafka Streams' `toTable`): each record sets its key's row and
/// goes downstream as a change; a null value (`None`) deletes the row.
#[test]
fn to_table_sets_each_keys_row_and_a_null_value_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_in(1, dir.path());
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 1).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, Option<i64>>("in")
        .to_table_with(Materialized::as_("rows").without_caching())
        .to("out");
    let topology = builder.build().unwrap();
    let described = topology.describe().to_string();
    assert!(described.contains("KSTREAM-TOTABLE-"), "{described}");
    let q = rt.start_query("to-table", topology).unwrap();
    for (k, v) in [
        ("a", Some(1i64)),
        ("b", Some(2)),
        ("a", Some(3)),
        ("b", None),
    ] {
        b.send("in", &s(k), &v).unwrap();
    }
    let out = read_n::<String, Option<i64>>(&b, "out", 4);
    q.stop().unwrap();
    assert_eq!(
        out,
        vec![
            (s("a"), Some(1)),
            (s("b"), Some(2)),
            (s("a"), Some(3)),
            (s("b"), None),
        ]
    );
}

/// As Kafka Streams does, `to_table` after a key change repartitions first, so each
/// key's row lives in the task of its partition.
#[test]
fn to_table_after_a_key_change_repartitions_first() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_in(2, dir.path());
    let b = rt.broker().clone();
    b.create_topic("in", 3).unwrap();
    b.create_topic("out", 3).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .select_key(|_, v| format!("k{}", v % 4))
        .to_table()
        .to_stream()
        .to("out");
    let topology = builder.build().unwrap();
    let described = topology.describe().to_string();
    assert!(described.contains("-repartition"), "{described}");
    let q = rt.start_query("rekeyed", topology).unwrap();
    // One input key, so one input partition and a defined order: 16..19 come last.
    for i in 0..20i64 {
        b.send("in", &s("r"), &i).unwrap();
    }
    wait_until("processed", || q.stats().records_processed == 40);
    q.stop().unwrap();
    // The last value of each key, after the stop's commit wrote the cache out.
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in b.read_all::<String, Option<i64>>("out").unwrap() {
        assert_eq!(
            r.partition,
            weir::runtime::partition_for_key(r.record.key.as_bytes(), 3),
            "{}",
            r.record.key
        );
        if let Some(v) = r.record.value {
            last.insert(r.record.key, v);
        }
    }
    assert_eq!(last.len(), 4);
    for (k, v) in last {
        assert_eq!(format!("k{}", v % 4), k);
        assert!(v >= 16, "{k} = {v}: not the latest value");
    }
}

/// `KTable::to_change_stream` (Kafka Streams' `sendOldValues`): every update carries the
/// value it replaced.
#[test]
fn a_tables_change_stream_carries_old_values() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_in(1, dir.path());
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("deltas", 1).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, i64>("in")
        .group_by_key()
        .count_with(Materialized::as_("counts").without_caching())
        .to_change_stream()
        .map_values(|c| format!("{:?}->{:?}", c.old, c.new))
        .to("deltas");
    let q = rt.start_query("changes", builder.build().unwrap()).unwrap();
    for k in ["a", "a", "b", "a"] {
        b.send("in", &s(k), &0i64).unwrap();
    }
    let out = read_n::<String, String>(&b, "deltas", 4);
    q.stop().unwrap();
    assert_eq!(
        out,
        vec![
            (s("a"), s("None->Some(1)")),
            (s("a"), s("Some(1)->Some(2)")),
            (s("b"), s("None->Some(1)")),
            (s("a"), s("Some(2)->Some(3)")),
        ]
    );
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// `KStream::print` (Kafka Streams' `Printed`): `[label]: key, value` per record, the
/// label the print node's name unless given, a mapper for the text.
#[test]
fn print_writes_a_labelled_line_per_record() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    let (default, mapped) = (Lines::default(), Lines::default());
    let builder = StreamsBuilder::new();
    let input = builder.stream::<String, i64>("in");
    input.print(weir::Printed::to_writer(default.clone()));
    input.print(
        weir::Printed::to_writer(mapped.clone())
            .with_label("orders")
            .with_key_value_mapper(|k, v| format!("{k}={v}")),
    );
    let topology = builder.build().unwrap();
    let described = topology.describe().to_string();
    assert!(
        described.contains("KSTREAM-PRINTER-0000000001"),
        "{described}"
    );
    let q = rt.start_query("print", topology).unwrap();
    b.send("in", &s("a"), &1i64).unwrap();
    b.send("in", &s("b"), &2i64).unwrap();
    wait_until("printed", || mapped.text().lines().count() == 2);
    q.stop().unwrap();
    assert_eq!(
        default.text(),
        "[KSTREAM-PRINTER-0000000001]: \"a\", 1\n[KSTREAM-PRINTER-0000000001]: \"b\", 2\n"
    );
    assert_eq!(mapped.text(), "[orders]: a=1\n[orders]: b=2\n");
}

/// `KTable::group_by` on the pool, across partitions: users move between regions
/// (their rows on one partition, the regions' counts on others); the final count of
/// every region is exact, with the record cache on.
#[test]
fn table_group_by_counts_rows_moving_between_groups_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_in(2, dir.path());
    let b = rt.broker().clone();
    b.create_topic("user-regions", 3).unwrap();
    b.create_topic("per-region", 2).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .table::<String, String>("user-regions")
        .group_by(|user, region| (region.clone(), user.clone()))
        .count()
        .to("per-region");
    let q = rt.start_query("regions", builder.build().unwrap()).unwrap();
    let regions = ["eu", "us", "ap"];
    let mut model: HashMap<String, String> = HashMap::new();
    for i in 0..300u32 {
        let user = format!("u{}", i % 40);
        let region = regions[(i * 7 % 3) as usize].to_string();
        b.send("user-regions", &user, &region).unwrap();
        model.insert(user, region);
    }
    let mut expected: HashMap<String, i64> = HashMap::new();
    for region in model.values() {
        *expected.entry(region.clone()).or_default() += 1;
    }
    let latest = || -> HashMap<String, i64> {
        let mut last = HashMap::new();
        for r in b.read_all::<String, Option<i64>>("per-region").unwrap() {
            match r.record.value {
                Some(n) => last.insert(r.record.key, n),
                None => last.remove(&r.record.key),
            };
        }
        last.retain(|_, n| *n != 0);
        last
    };
    wait_until("the final counts", || latest() == expected);
    q.stop().unwrap();
    assert_eq!(latest(), expected);
    assert_eq!(expected.values().sum::<i64>(), 40);
}

/// Kafka Streams repartitions a stream whose key changed before a join: orders keyed
/// by order id (4 partitions) re-keyed to their customer and joined with a customers
/// table of 2 partitions. The repartition topic is named by `Joined::with_name` and
/// sized like the table's topic (not the orders'), so the query starts and every order
/// meets its customer.
#[test]
fn a_rekeyed_stream_is_repartitioned_before_its_table_join() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_in(2, dir.path());
    let b = rt.broker().clone();
    b.create_topic("customers", 2).unwrap();
    b.create_topic("orders", 4).unwrap();
    b.create_topic("enriched", 1).unwrap();
    let builder = StreamsBuilder::new();
    let customers = builder.table::<String, String>("customers");
    builder
        .stream::<String, String>("orders") // order id -> customer id
        .select_key(|_order: &String, customer: &String| customer.clone())
        .join_with(
            &customers,
            |customer: &String, name: &String| format!("{customer}={name}"),
            Joined::defaults().with_name("by-customer"),
        )
        .to("enriched");
    for c in 0..20 {
        b.send("customers", &format!("c{c}"), &format!("name{c}"))
            .unwrap();
    }
    let q = rt.start_query("enrich", builder.build().unwrap()).unwrap();
    wait_until("customers loaded", || q.stats().records_processed >= 20);
    for o in 0..100 {
        b.send("orders", &format!("o{o}"), &format!("c{}", o % 20))
            .unwrap();
    }
    wait_until("every order", || {
        b.read_all::<String, String>("enriched").unwrap().len() == 100
    });
    q.stop().unwrap();
    assert_eq!(
        b.partitions("weir-enrich-by-customer-repartition").unwrap(),
        2,
        "sized like the table's topic"
    );
    let out = b.read_all::<String, String>("enriched").unwrap();
    assert_eq!(out.len(), 100);
    for r in out {
        let c: u32 = r.record.key[1..].parse().unwrap();
        assert_eq!(r.record.value, format!("c{c}=name{c}"));
    }
}

/// A stream-table join on the pool, over two co-partitioned topics and the record
/// cache: every order is enriched with its customer's latest row.
#[test]
fn stream_table_join_enriches_every_record_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_in(2, dir.path());
    let b = rt.broker().clone();
    for t in ["customers", "orders", "enriched"] {
        b.create_topic(t, 2).unwrap();
    }
    let builder = StreamsBuilder::new();
    let customers = builder.table::<String, String>("customers");
    builder
        .stream::<String, i64>("orders")
        .left_join(&customers, |amount: &i64, name: Option<&String>| {
            format!("{}:{amount}", name.map_or("?", String::as_str))
        })
        .to("enriched");
    for c in 0..50 {
        b.send("customers", &format!("c{c}"), &format!("name{c}"))
            .unwrap();
    }
    // The table is read before any order: both partitions' customers first.
    let q = rt.start_query("enrich", builder.build().unwrap()).unwrap();
    wait_until("customers loaded", || q.stats().records_processed >= 50);
    for o in 0..200i64 {
        b.send("orders", &format!("c{}", o % 60), &o).unwrap();
    }
    wait_until("every order", || {
        b.read_all::<String, String>("enriched").unwrap().len() == 200
    });
    q.stop().unwrap();
    for r in b.read_all::<String, String>("enriched").unwrap() {
        let c: u32 = r.record.key[1..].parse().unwrap();
        let (name, amount) = r.record.value.split_once(':').unwrap();
        let amount: i64 = amount.parse().unwrap();
        assert_eq!(amount % 60, i64::from(c));
        if c < 50 {
            assert_eq!(name, format!("name{c}"));
        } else {
            assert_eq!(name, "?");
        }
    }
}
