//! The Processor API without the DSL: a hand-built topology with `forward_to`, record
//! metadata and headers.

use std::time::{Duration, Instant};

use weir_runtime::serde::{I64Serde, StringSerde};
use weir_runtime::{
    Broker, Processor, ProcessorContext, QueryState, Record, Result, Runtime, RuntimeConfig,
    SinkSpec, SourceSpec, Topology,
};

fn runtime_on(broker: &Broker) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(1)
            .broker(broker.clone())
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// A topology with one `<String, i64>` source named `src` reading `in`.
fn source_on_in() -> Topology {
    let mut t = Topology::new();
    t.add_source(
        "src",
        &["in"],
        SourceSpec::<String, i64>::new(StringSerde, I64Serde),
    )
    .unwrap();
    t
}

/// Routes even values to "evens", odd ones to "odds", tagging each with its source
/// coordinates in a header.
struct Router;

impl Processor<String, i64, String, i64> for Router {
    fn process(
        &mut self,
        mut r: Record<String, i64>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        assert_eq!(ctx.child_names(), vec!["evens", "odds"]);
        let m = ctx
            .record_metadata()
            .expect("metadata while processing")
            .clone();
        r.headers.add(
            "from",
            Some(format!("{}-{}@{}", m.topic, m.partition, m.offset).into_bytes()),
        );
        let child = if r.value % 2 == 0 { "evens" } else { "odds" };
        ctx.forward_to(child, r)
    }
}

#[test]
fn hand_built_topology_routes_by_child_name() {
    let broker = Broker::new();
    for t in ["in", "even-out", "odd-out"] {
        broker.create_topic(t, 1).unwrap();
    }
    let rt = runtime_on(&broker);
    let mut t = source_on_in();
    t.add_processor("router", || Router, &["src"]).unwrap();
    t.add_sink(
        "evens",
        "even-out",
        SinkSpec::<String, i64>::new(StringSerde, I64Serde),
        &["router"],
    )
    .unwrap();
    t.add_sink(
        "odds",
        "odd-out",
        SinkSpec::<String, i64>::new(StringSerde, I64Serde),
        &["router"],
    )
    .unwrap();
    let q = rt.start_query("route", t).unwrap();
    for i in 0..6i64 {
        broker.send("in", &"k".to_string(), &i).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.read_all::<String, i64>("even-out").unwrap().len()
        + broker.read_all::<String, i64>("odd-out").unwrap().len()
        < 6
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    q.stop().unwrap();
    assert_eq!(q.state(), QueryState::Stopped);
    let evens = broker.read_all::<String, i64>("even-out").unwrap();
    let odds = broker.read_all::<String, i64>("odd-out").unwrap();
    assert_eq!(
        evens.iter().map(|r| r.record.value).collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    assert_eq!(
        odds.iter().map(|r| r.record.value).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    let from = evens[1]
        .record
        .headers
        .last("from")
        .unwrap()
        .value
        .clone()
        .unwrap();
    assert_eq!(&from[..], b"in-0@2");
}

#[test]
fn forwarding_to_an_unknown_child_fails_the_query() {
    struct Lost;
    impl Processor<String, i64, String, i64> for Lost {
        fn process(
            &mut self,
            r: Record<String, i64>,
            ctx: &mut ProcessorContext<'_, String, i64>,
        ) -> Result<()> {
            ctx.forward_to("nobody", r)
        }
    }
    let broker = Broker::new();
    broker.create_topic("in", 1).unwrap();
    let rt = runtime_on(&broker);
    let mut t = source_on_in();
    t.add_processor("lost", || Lost, &["src"]).unwrap();
    let q = rt.start_query("q", t).unwrap();
    broker.send("in", &"k".to_string(), &1i64).unwrap();
    let QueryState::Failed(e) = q.await_termination(Some(Duration::from_secs(20))) else {
        panic!("expected failure")
    };
    assert!(
        e.to_string()
            .contains("processor 'lost' has no child named 'nobody'"),
        "{e}"
    );
}

#[test]
fn an_empty_topology_is_rejected() {
    let rt = runtime_on(&Broker::new());
    let err = rt
        .start_query("q", Topology::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty topology"), "{err}");
}

/// Puts every record into the window store "dups" (retaining duplicates) at its
/// timestamp (a negative value puts `None`), expires it by stream time, and forwards
/// how many of the key's entries the last 100 ms hold.
struct KeepAll {
    stream_time: i64,
}

impl Processor<String, i64, String, i64> for KeepAll {
    fn process(
        &mut self,
        r: Record<String, i64>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        self.stream_time = self.stream_time.max(r.timestamp);
        let mut store = ctx.window_store::<String, i64>("dups")?;
        let value = (r.value >= 0).then_some(r.value);
        store.put(&r.key, r.timestamp, value.as_ref())?;
        store.expire(self.stream_time)?;
        let held = store.fetch_range(&r.key, r.timestamp - 100, r.timestamp)?;
        ctx.forward(r.with_value(held.len() as i64))
    }
}

#[test]
fn a_window_store_retaining_duplicates_keeps_every_value_in_put_order() {
    use weir_runtime::StoreSpec;
    use weir_runtime::testing::TopologyTestDriver;
    let mut t = source_on_in();
    t.add_processor("keep", || KeepAll { stream_time: 0 }, &["src"])
        .unwrap();
    t.add_state_store(
        StoreSpec::<String, i64>::new("dups", StringSerde, I64Serde)
            .windowed_with_duplicates(Duration::ZERO, Duration::from_millis(100))
            .without_caching(),
        &["keep"],
    )
    .unwrap();
    t.add_sink(
        "out",
        "out",
        SinkSpec::new(StringSerde, I64Serde),
        &["keep"],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig::builder()
        .state_dir(dir.path())
        .build()
        .unwrap();
    let driver = TopologyTestDriver::new(t, config).unwrap();
    let input = driver.create_input_topic::<String, i64>("in").unwrap();
    let output = driver.create_output_topic::<String, i64>("out").unwrap();
    for (v, ts) in [(1, 10), (2, 10), (3, 10), (4, 20), (-1, 20), (7, 15)] {
        input.pipe_input_at("a".to_string(), v, ts).unwrap();
    }
    input.pipe_input_at("b".to_string(), 9, 10).unwrap();
    // Every put is a new entry; the `None` put changed nothing; the one at 15 sees
    // its window [-85, 15]: three at 10 and itself.
    assert_eq!(output.read_values_to_list().unwrap(), [1, 2, 3, 4, 4, 4, 1]);
    let store = driver.window_store::<String, i64>("dups").unwrap();
    let values = |from, to| -> Vec<(i64, i64)> {
        store
            .fetch_range(&"a".to_string(), from, to)
            .unwrap()
            .into_iter()
            .map(|(w, v)| (w.start, v))
            .collect()
    };
    // By window start, then in the order they were put.
    assert_eq!(
        values(0, 100),
        [(10, 1), (10, 2), (10, 3), (15, 7), (20, 4)]
    );
    assert_eq!(values(11, 15), [(15, 7)]);
    assert_eq!(store.fetch(&"a".to_string(), 10).unwrap(), Some(1));
    assert_eq!(store.fetch(&"a".to_string(), 11).unwrap(), None);
    // Stream time 200: what started before 100 (200 less the retention) is gone.
    input.pipe_input_at("a".to_string(), 5, 200).unwrap();
    assert_eq!(output.read_values_to_list().unwrap(), [1]);
    assert_eq!(values(0, 300), [(200, 5)]);
    assert!(
        store
            .fetch_range(&"b".to_string(), 0, 300)
            .unwrap()
            .is_empty()
    );
}
