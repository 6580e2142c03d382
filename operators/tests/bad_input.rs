//! Bad input and user errors on the in-process broker: the processing exception
//! handler (Kafka's KIP-1033), dead-letter queues (KIP-1034) for the deserialization,
//! processing and production handlers, and segment files corrupted under the log.
//!
//! The dead-letter tests port Kafka Streams' `DeadLetterQueueIntegrationTest` (its
//! inputs `key/value-1`, `key/KABOOM`, `key/value-2` and its expected outputs and
//! headers); the rest are weir's.

mod common;

use std::time::Duration;

use common::{read_n, wait_until};
use weir::dead_letter::{
    HEADER_ERRORS_EXCEPTION, HEADER_ERRORS_MESSAGE, HEADER_ERRORS_OFFSET, HEADER_ERRORS_PARTITION,
    HEADER_ERRORS_STACKTRACE, HEADER_ERRORS_TOPIC,
};
use weir::prelude::*;
use weir::{ProductionExceptionHandler, Punctuation, RawRecord, RuntimeConfigBuilder};

fn runtime_with(
    broker: &Broker,
    f: impl FnOnce(RuntimeConfigBuilder) -> RuntimeConfigBuilder,
) -> Runtime {
    let b = RuntimeConfig::builder()
        .workers(2)
        .commit_interval(Duration::from_millis(100))
        .broker(broker.clone());
    Runtime::new(f(b).build().unwrap()).unwrap()
}

/// Kafka's test data: the second record makes user code fail.
fn kafka_data(broker: &Broker) {
    for v in ["value-1", "KABOOM", "value-2"] {
        broker
            .send("input", &"key".to_string(), &v.to_string())
            .unwrap();
    }
}

/// Kafka's test data for the tests where the failure fails the query: `value-1` is
/// sent and processed first. (weir writes a batch's output when the batch ends; a
/// failure discards the failing batch's output, whose records a restart processes
/// again, so `value-1` would not be in the output had it shared a batch with
/// `KABOOM`. Kafka's producer may have sent it already; its test expects it.)
fn kafka_data_in_two_steps(broker: &Broker) {
    broker
        .send("input", &"key".to_string(), &"value-1".to_string())
        .unwrap();
    read_n::<String, String>(broker, "output", 1);
    for v in ["KABOOM", "value-2"] {
        broker
            .send("input", &"key".to_string(), &v.to_string())
            .unwrap();
    }
}

fn topics(broker: &Broker) {
    broker.create_topic("input", 2).unwrap();
    broker.create_topic("output", 2).unwrap();
    broker.create_topic("dlq", 1).unwrap();
}

/// Kafka's DSL topology: `mapValues` throwing on KABOOM (weir: panicking).
fn dsl_topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .map_values(|v: String| {
            if v == "KABOOM" {
                panic!("KABOOM");
            }
            v
        })
        .to("output");
    b.build().unwrap()
}

/// Kafka's Processor API topology: a processor throwing on KABOOM (weir: returning an
/// error).
struct Kaboom;

impl Processor<String, String, String, String> for Kaboom {
    fn process(
        &mut self,
        r: Record<String, String>,
        ctx: &mut ProcessorContext<'_, String, String>,
    ) -> Result<()> {
        if r.value == "KABOOM" {
            return Err(Error::msg("KABOOM"));
        }
        ctx.forward(r)
    }
}

fn processor_api_topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .process_named("kaboom", || Kaboom)
        .to("output");
    b.build().unwrap()
}

/// The dead letters in `topic`, raw.
fn dead_letters(broker: &Broker, topic: &str) -> Vec<RawRecord> {
    (0..broker.partitions(topic).unwrap())
        .flat_map(|p| broker.fetch(topic, p, 0, usize::MAX, usize::MAX).unwrap())
        .map(|(_, r)| r)
        .collect()
}

fn header(r: &RawRecord, name: &str) -> String {
    let h = r
        .headers
        .last(name)
        .unwrap_or_else(|| panic!("dead letter without header {name}"));
    String::from_utf8(h.value.as_ref().expect("header value").to_vec()).unwrap()
}

/// The checks of Kafka's four DLQ tests on the one dead letter: the source record's
/// bytes and coordinates, and the error.
fn assert_kaboom_letter(broker: &Broker, exception: &str, place: &str) {
    let letters = dead_letters(broker, "dlq");
    assert_eq!(letters.len(), 1, "one dead letter");
    let l = &letters[0];
    assert_eq!(l.key.as_deref(), Some(&b"key"[..]));
    assert_eq!(l.value.as_deref(), Some(&b"KABOOM"[..]));
    assert_eq!(header(l, HEADER_ERRORS_EXCEPTION), exception);
    assert_eq!(header(l, HEADER_ERRORS_MESSAGE), "KABOOM");
    assert!(
        header(l, HEADER_ERRORS_STACKTRACE).contains(place),
        "{}",
        header(l, HEADER_ERRORS_STACKTRACE)
    );
    assert_eq!(header(l, HEADER_ERRORS_TOPIC), "input");
    let p = weir::runtime::partition_for_key(b"key", 2);
    assert_eq!(header(l, HEADER_ERRORS_PARTITION), p.to_string());
    assert_eq!(header(l, HEADER_ERRORS_OFFSET), "1");
}

fn values(broker: &Broker) -> Vec<String> {
    broker
        .read_all::<String, String>("output")
        .unwrap()
        .into_iter()
        .map(|r| r.record.value)
        .collect()
}

fn await_failed(q: &QueryHandle) -> Error {
    match q.await_termination(Some(Duration::from_secs(20))) {
        QueryState::Failed(e) => e,
        other => panic!("expected the query to fail, got {other:?}"),
    }
}

/// Kafka's "send to the DLQ and fail" case: `value-1` goes through, KABOOM fails the
/// query and is dead-lettered.
fn dlq_and_fail(topology: Topology, failure: &str, exception: &str, place: &str) -> Error {
    let broker = Broker::new();
    topics(&broker);
    let rt = runtime_with(&broker, |b| b.dead_letter_queue_topic("dlq"));
    let q = rt.start_query("q", topology).unwrap();
    kafka_data_in_two_steps(&broker);
    let e = await_failed(&q);
    assert!(e.to_string().contains(failure), "{e}");
    assert_eq!(values(&broker), ["value-1"]);
    assert_kaboom_letter(&broker, exception, place);
    e
}

/// Kafka's "send to the DLQ and continue" case: KABOOM is dead-lettered and skipped,
/// the query goes on.
fn dlq_and_continue(topology: Topology, exception: &str, place: &str) {
    let broker = Broker::new();
    topics(&broker);
    let rt = runtime_with(&broker, |b| {
        b.dead_letter_queue_topic("dlq")
            .processing_exception_handler(ProcessingExceptionHandler::LogAndContinue)
    });
    kafka_data(&broker);
    let q = rt.start_query("q", topology).unwrap();
    read_n::<String, String>(&broker, "output", 2);
    wait_until("the dead letter", || {
        dead_letters(&broker, "dlq").len() == 1
    });
    assert_eq!(values(&broker), ["value-1", "value-2"]);
    assert_kaboom_letter(&broker, exception, place);
    assert_eq!(q.state(), QueryState::Running);
    assert_eq!(q.stats().records_skipped, 1);
    q.stop().unwrap();
}

const MAP_VALUES: &str = "processor 'KSTREAM-MAPVALUES-0000000001'";

/// DeadLetterQueueIntegrationTest.shouldSendToDlqAndFailFromDsl
#[test]
fn should_send_to_dlq_and_fail_from_dsl() {
    let e = dlq_and_fail(dsl_topology(), "KABOOM", "Panic: KABOOM", MAP_VALUES);
    assert!(matches!(e, Error::Panic { .. }), "{e}");
}

/// DeadLetterQueueIntegrationTest.shouldSendToDlqAndContinueFromDsl
#[test]
fn should_send_to_dlq_and_continue_from_dsl() {
    dlq_and_continue(dsl_topology(), "Panic: KABOOM", MAP_VALUES);
}

/// DeadLetterQueueIntegrationTest.shouldSendToDlqAndFailFromProcessorAPI
#[test]
fn should_send_to_dlq_and_fail_from_processor_api() {
    dlq_and_fail(
        processor_api_topology(),
        "processor 'kaboom' failed: KABOOM",
        "User: KABOOM",
        "processor 'kaboom'",
    );
}

/// DeadLetterQueueIntegrationTest.shouldSendToDlqAndContinueFromProcessorAPI
#[test]
fn should_send_to_dlq_and_continue_from_processor_api() {
    dlq_and_continue(
        processor_api_topology(),
        "User: KABOOM",
        "processor 'kaboom'",
    );
}

/// The handler is per query: the same failing topology skips in one query and fails
/// the other, on one runtime; without a dead-letter topic nothing is written anywhere
/// else.
#[test]
fn the_processing_handler_is_chosen_per_query() {
    let broker = Broker::new();
    topics(&broker);
    broker.create_topic("output2", 1).unwrap();
    let rt = runtime_with(&broker, |b| b);
    kafka_data(&broker);
    let skipping = processor_api_topology()
        .processing_exception_handler(ProcessingExceptionHandler::LogAndContinue);
    let q1 = rt.start_query("skips", skipping).unwrap();
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .process_named("kaboom", || Kaboom)
        .to("output2");
    let q2 = rt.start_query("fails", b.build().unwrap()).unwrap();
    read_n::<String, String>(&broker, "output", 2);
    let e = await_failed(&q2);
    assert!(e.to_string().contains("KABOOM"), "{e}");
    assert_eq!(values(&broker), ["value-1", "value-2"]);
    assert_eq!(q1.state(), QueryState::Running);
    assert!(dead_letters(&broker, "dlq").is_empty());
    q1.stop().unwrap();
}

/// A handled failure stays in the node it happened in: the record still reaches the
/// failing node's siblings (Kafka handles each `ProcessorNode` on its own), and it is
/// counted as skipped once.
#[test]
fn a_skipped_failure_leaves_sibling_branches_alone() {
    let broker = Broker::new();
    topics(&broker);
    broker.create_topic("copy", 1).unwrap();
    let rt = runtime_with(&broker, |b| {
        b.processing_exception_handler(ProcessingExceptionHandler::LogAndContinue)
    });
    kafka_data(&broker);
    let b = StreamsBuilder::new();
    let s = b.stream::<String, String>("input");
    s.process_named("kaboom", || Kaboom).to("output");
    s.to("copy");
    let q = rt.start_query("branches", b.build().unwrap()).unwrap();
    read_n::<String, String>(&broker, "copy", 3);
    read_n::<String, String>(&broker, "output", 2);
    assert_eq!(
        broker
            .read_all::<String, String>("copy")
            .unwrap()
            .into_iter()
            .map(|r| r.record.value)
            .collect::<Vec<_>>(),
        ["value-1", "KABOOM", "value-2"]
    );
    assert_eq!(q.stats().records_skipped, 1);
    q.stop().unwrap();
}

/// A punctuator's failure goes to the handler too (KIP-1033): skipped, the query goes
/// on and the punctuator fires again; its dead letter has no record bytes.
#[test]
fn a_failing_punctuator_is_skipped_and_dead_lettered_without_bytes() {
    struct Ticks(u32);
    impl Processor<String, String, String, String> for Ticks {
        fn init(&mut self, ctx: &mut ProcessorContext<'_, String, String>) -> Result<()> {
            ctx.schedule(Duration::from_millis(10), PunctuationType::StreamTime)?;
            Ok(())
        }
        fn process(
            &mut self,
            r: Record<String, String>,
            ctx: &mut ProcessorContext<'_, String, String>,
        ) -> Result<()> {
            ctx.forward(r)
        }
        fn punctuate(
            &mut self,
            _p: &Punctuation,
            _ctx: &mut ProcessorContext<'_, String, String>,
        ) -> Result<()> {
            self.0 += 1;
            Err(Error::msg(format!("tick {} failed", self.0)))
        }
    }
    let broker = Broker::new();
    topics(&broker);
    let rt = runtime_with(&broker, |b| {
        b.dead_letter_queue_topic("dlq")
            .processing_exception_handler(ProcessingExceptionHandler::LogAndContinue)
    });
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .process_named("ticks", || Ticks(0))
        .to("output");
    let q = rt.start_query("ticks", b.build().unwrap()).unwrap();
    for (i, v) in ["a", "b", "c"].iter().enumerate() {
        broker
            .send_at("input", &"key".to_string(), &v.to_string(), 100 * i as i64)
            .unwrap();
    }
    read_n::<String, String>(&broker, "output", 3);
    wait_until("three punctuation dead letters", || {
        dead_letters(&broker, "dlq").len() >= 3
    });
    for l in dead_letters(&broker, "dlq") {
        assert_eq!(l.key, None);
        assert_eq!(l.value, None);
        assert!(header(&l, HEADER_ERRORS_MESSAGE).starts_with("tick "));
        assert!(header(&l, HEADER_ERRORS_STACKTRACE).contains("processor 'ticks'"));
    }
    assert_eq!(q.state(), QueryState::Running);
    q.stop().unwrap();
}

/// A record that cannot be deserialized goes to the dead-letter topic with its bytes,
/// under both deserialization handlers.
#[test]
fn undeserializable_records_are_dead_lettered_with_their_bytes() {
    for handler in [
        DeserializationHandler::LogAndContinue,
        DeserializationHandler::Fail,
    ] {
        let broker = Broker::new();
        topics(&broker);
        let rt = runtime_with(&broker, |b| {
            b.dead_letter_queue_topic("dlq")
                .deserialization_handler(handler)
        });
        let raw = |v: &[u8]| RawRecord {
            key: Some(b"key".to_vec().into()),
            value: Some(v.to_vec().into()),
            timestamp: 5,
            headers: Headers::new(),
        };
        broker
            .append(
                "input",
                0,
                vec![
                    raw(&1i64.to_be_bytes()),
                    raw(b"not a number"),
                    raw(&3i64.to_be_bytes()),
                ],
            )
            .unwrap();
        let b = StreamsBuilder::new();
        b.stream::<String, i64>("input").to("output");
        let q = rt.start_query("numbers", b.build().unwrap()).unwrap();
        wait_until("the dead letter", || {
            dead_letters(&broker, "dlq").len() == 1
        });
        let l = &dead_letters(&broker, "dlq")[0];
        assert_eq!(l.value.as_deref(), Some(&b"not a number"[..]));
        assert_eq!(l.timestamp, 5);
        assert!(header(l, HEADER_ERRORS_EXCEPTION).starts_with("Deserialization: "));
        assert_eq!(header(l, HEADER_ERRORS_TOPIC), "input");
        assert_eq!(header(l, HEADER_ERRORS_PARTITION), "0");
        assert_eq!(header(l, HEADER_ERRORS_OFFSET), "1");
        match handler {
            DeserializationHandler::LogAndContinue => {
                read_n::<String, i64>(&broker, "output", 2);
                q.stop().unwrap();
            }
            DeserializationHandler::Fail => {
                let e = await_failed(&q);
                assert!(matches!(e, Error::Deserialization { offset: 1, .. }), "{e}");
            }
        }
    }
}

/// A sink that cannot serialize a record: the production handler decides (Kafka's
/// `handleSerializationException`), and the dead letter carries the source record.
#[test]
fn unserializable_records_go_to_the_production_handler() {
    #[derive(Clone, Debug)]
    struct Picky;
    impl Serde<String> for Picky {
        fn serialize(&self, v: &String) -> Result<Option<weir::serde::Bytes>> {
            if v.contains("BOOM") {
                return Err(Error::Serde(format!("cannot write {v}")));
            }
            StringSerde.serialize(v)
        }
        fn deserialize(&self, data: Option<&[u8]>) -> Result<String> {
            StringSerde.deserialize(data)
        }
    }
    for handler in [
        ProductionExceptionHandler::LogAndContinue,
        ProductionExceptionHandler::Fail,
    ] {
        let broker = Broker::new();
        topics(&broker);
        let rt = runtime_with(&broker, |b| {
            b.dead_letter_queue_topic("dlq")
                .production_exception_handler(handler)
        });
        kafka_data(&broker);
        let b = StreamsBuilder::new();
        b.stream::<String, String>("input")
            .to_with("output", Produced::with(StringSerde, Picky));
        let q = rt.start_query("picky", b.build().unwrap()).unwrap();
        wait_until("the dead letter", || {
            dead_letters(&broker, "dlq").len() == 1
        });
        let l = &dead_letters(&broker, "dlq")[0];
        assert_eq!(l.value.as_deref(), Some(&b"KABOOM"[..]));
        assert!(
            header(l, HEADER_ERRORS_EXCEPTION).starts_with("Serialization: "),
            "{}",
            header(l, HEADER_ERRORS_EXCEPTION)
        );
        assert!(header(l, HEADER_ERRORS_STACKTRACE).contains("sink '"));
        match handler {
            ProductionExceptionHandler::LogAndContinue => {
                read_n::<String, String>(&broker, "output", 2);
                assert_eq!(values(&broker), ["value-1", "value-2"]);
                q.stop().unwrap();
            }
            ProductionExceptionHandler::Fail => {
                let e = await_failed(&q);
                assert!(matches!(e, Error::Serialization { .. }), "{e}");
            }
        }
    }
}

/// A dead-letter topic that does not exist stops the query from starting, naming it.
#[test]
fn a_missing_dead_letter_topic_is_a_clear_error() {
    let broker = Broker::new();
    broker.create_topic("input", 1).unwrap();
    broker.create_topic("output", 1).unwrap();
    let rt = runtime_with(&broker, |b| b);
    let t = processor_api_topology().dead_letter_queue_topic("nowhere");
    let e = match rt.start_query("q", t) {
        Err(e) => e,
        Ok(q) => await_failed(&q),
    };
    assert!(e.to_string().contains("dead-letter topic 'nowhere'"), "{e}");
}

/// A segment file corrupted under the log fails the query reading it with an error
/// naming the corrupt record; no worker panics, and other queries go on.
#[test]
fn a_corrupt_segment_file_fails_its_reader_with_an_error() {
    // Overwrite the start of the first segment: the length fields of its first record
    // become nonsense (0x7f7f7f7f).
    let e = damaged_segment_fails_its_reader(|f, _| {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[0x7f; 64], 0).unwrap();
    });
    assert!(e.to_string().contains("corrupt record at offset 0"), "{e}");
}

/// A segment file cut short under the log: the same, with the read's error.
#[test]
fn a_truncated_segment_file_fails_its_reader_with_an_error() {
    let e = damaged_segment_fails_its_reader(|f, len| f.set_len(len / 2).unwrap());
    assert!(
        e.to_string().contains("cannot read the log of big-0"),
        "{e}"
    );
}

/// Writes ~3 MiB to topic `big` of a broker with a log directory, damages its first
/// sealed segment file with `damage(file, length)`, and starts a query reading `big`
/// beside a healthy one: the reader fails with `Error::Io` (returned), the other goes
/// on.
fn damaged_segment_fails_its_reader(damage: impl FnOnce(&std::fs::File, u64)) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::with_log_dir(dir.path()).unwrap();
    for t in ["big", "small", "out1", "out2"] {
        broker.create_topic(t, 1).unwrap();
    }
    let value = "x".repeat(1000);
    for i in 0..3000 {
        broker.send("big", &format!("k{i}"), &value).unwrap();
    }
    let mut segments: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(
        !segments.is_empty(),
        "no sealed segment under {:?}",
        dir.path()
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    damage(&f, f.metadata().unwrap().len());
    drop(f);

    let rt = runtime_with(&broker, |b| b);
    let copy = |from: &str, to: &str| {
        let b = StreamsBuilder::new();
        b.stream::<String, String>(from).to(to);
        b.build().unwrap()
    };
    let healthy = rt.start_query("healthy", copy("small", "out2")).unwrap();
    let q = rt.start_query("reader", copy("big", "out1")).unwrap();
    let e = await_failed(&q);
    assert!(matches!(e, Error::Io { .. }), "{e}");
    broker
        .send("small", &"k".to_string(), &"v".to_string())
        .unwrap();
    read_n::<String, String>(&broker, "out2", 1);
    assert_eq!(healthy.state(), QueryState::Running);
    healthy.stop().unwrap();
    e
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
