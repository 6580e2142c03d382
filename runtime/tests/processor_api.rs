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
