//! Query lifecycle on the shared pool: start, stop, fail, resume from committed offsets,
//! isolation of failures and panics, fairness, backpressure, punctuation.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{read_n, runtime, runtime_on, sorted, wait_until};
use weir::prelude::*;

fn copy_query(input: &str, output: &str) -> Topology {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>(input).to(output);
    b.build().unwrap()
}

fn total_committed(b: &Broker, group: &str, topic: &str) -> i64 {
    (0..b.partitions(topic).unwrap())
        .map(|p| b.committed(group, topic, p).unwrap_or(0))
        .sum()
}

#[test]
fn clean_stop_commits_and_a_restart_resumes_after_the_commit() {
    let broker = Broker::new();
    broker.create_topic("in", 3).unwrap();
    broker.create_topic("out", 3).unwrap();
    for i in 0..100i64 {
        broker.send("in", &format!("k{i}"), &i).unwrap();
    }
    {
        let rt = runtime_on(2, broker.clone());
        let q = rt.start_query("copy", copy_query("in", "out")).unwrap();
        assert_eq!(q.group_id(), "weir-copy");
        read_n::<String, i64>(&broker, "out", 100);
        q.stop().unwrap();
        assert_eq!(q.state(), QueryState::Stopped);
        assert_eq!(total_committed(&broker, "weir-copy", "in"), 100);
    }
    for i in 100..150i64 {
        broker.send("in", &format!("k{i}"), &i).unwrap();
    }
    let rt = runtime_on(2, broker.clone());
    let q = rt.start_query("copy", copy_query("in", "out")).unwrap();
    let out = read_n::<String, i64>(&broker, "out", 150);
    // Give a wrongly-restarted query time to reprocess before checking for duplicates.
    std::thread::sleep(Duration::from_millis(200));
    q.stop().unwrap();
    let out_all = broker.read_all::<String, i64>("out").unwrap();
    assert_eq!(out_all.len(), 150, "nothing reprocessed after a clean stop");
    assert_eq!(
        sorted(out.into_iter().map(|(_, v)| v).collect()),
        (0..150).collect::<Vec<_>>()
    );
    assert_eq!(total_committed(&broker, "weir-copy", "in"), 150);
}

#[test]
fn periodic_commit_happens_without_a_stop() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 1).unwrap();
    let q = rt.start_query("copy", copy_query("in", "out")).unwrap();
    for i in 0..10i64 {
        b.send("in", &"k".to_string(), &i).unwrap();
    }
    // commit_interval is 100 ms; the idle task is woken by the I/O thread's timer.
    wait_until("periodic commit", || {
        b.committed("weir-copy", "in", 0) == Some(10)
    });
    assert_eq!(q.state(), QueryState::Running);
    q.stop().unwrap();
}

/// Fails (returns an error, or panics) on the record whose value is `at`.
struct Explode {
    at: i64,
    panic: bool,
}

impl Explode {
    fn error_at(at: i64) -> Self {
        Explode { at, panic: false }
    }
    fn panic_at(at: i64) -> Self {
        Explode { at, panic: true }
    }
}

impl Processor<String, i64, String, i64> for Explode {
    fn process(
        &mut self,
        r: Record<String, i64>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        if r.value == self.at {
            if self.panic {
                panic!("boom at {}", r.value);
            }
            return Err(Error::msg(format!("refusing {}", r.value)));
        }
        ctx.forward(r)
    }
}

#[test]
fn a_failed_query_commits_nothing_past_its_failure_and_a_restart_loses_nothing() {
    let broker = Broker::new();
    broker.create_topic("in", 1).unwrap();
    broker.create_topic("out", 1).unwrap();
    for i in 0..100i64 {
        broker.send("in", &"k".to_string(), &i).unwrap();
    }
    let topology = |fail_at: i64| {
        let b = StreamsBuilder::new();
        b.stream::<String, i64>("in")
            .process_named("guard", move || Explode::error_at(fail_at))
            .to("out");
        b.build().unwrap()
    };
    {
        let rt = runtime_on(1, broker.clone());
        let q = rt.start_query("q", topology(60)).unwrap();
        let state = q.await_termination(Some(Duration::from_secs(20)));
        let QueryState::Failed(e) = state else {
            panic!("expected Failed, got {state:?}")
        };
        let msg = e.to_string();
        assert!(
            msg.contains("processor 'guard' failed: refusing 60"),
            "{msg}"
        );
        assert!(q.stop().is_err(), "stop() reports the failure");
        let committed = broker.committed("weir-q", "in", 0).unwrap_or(0);
        assert!(
            committed <= 60,
            "committed {committed} is past the failed record"
        );
    }
    let rt = runtime_on(1, broker.clone());
    let q = rt.start_query("q", topology(-1)).unwrap();
    wait_until("restart catches up", || {
        broker.committed("weir-q", "in", 0) == Some(100)
    });
    q.stop().unwrap();
    let mut values: Vec<i64> = broker
        .read_all::<String, i64>("out")
        .unwrap()
        .into_iter()
        .map(|r| r.record.value)
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(
        values,
        (0..100).collect::<Vec<_>>(),
        "at-least-once: every input reached the output"
    );
}

#[test]
fn a_bad_record_fails_the_query_with_its_coordinates() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 2).unwrap();
    b.create_topic("out", 2).unwrap();
    let q = rt.start_query("q", copy_query("in", "out")).unwrap();
    b.send("in", &"a".to_string(), &1i64).unwrap();
    b.append(
        "in",
        1,
        [Record::new(
            Some(b"k".to_vec().into()),
            Some(b"not-a-long".to_vec().into()),
            0,
        )],
    )
    .unwrap();
    let QueryState::Failed(e) = q.await_termination(Some(Duration::from_secs(20))) else {
        panic!("expected a failure")
    };
    assert!(
        matches!(
            &e,
            Error::Deserialization { topic, partition: 1, offset: 0, field: weir::RecordField::Value, .. } if topic == "in"
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("in-1 offset 0"), "{e}");
}

#[test]
fn log_and_continue_skips_bad_records_and_counts_them() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 1).unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream_with(
            &["in"],
            Consumed::<String, i64>::defaults()
                .with_deserialization_handler(DeserializationHandler::LogAndContinue),
        )
        .to("out");
    let q = rt.start_query("q", builder.build().unwrap()).unwrap();
    b.send("in", &"a".to_string(), &1i64).unwrap();
    b.append(
        "in",
        0,
        [Record::new(
            Some(b"k".to_vec().into()),
            Some(b"bad".to_vec().into()),
            0,
        )],
    )
    .unwrap();
    b.append(
        "in",
        0,
        [Record::new(
            Some(vec![0xff].into()),
            Some(2i64.to_be_bytes().to_vec().into()),
            0,
        )],
    )
    .unwrap();
    b.send("in", &"c".to_string(), &3i64).unwrap();
    let out = read_n::<String, i64>(&b, "out", 2);
    assert_eq!(out, vec![("a".to_string(), 1), ("c".to_string(), 3)]);
    wait_until("skips counted", || q.stats().records_skipped == 2);
    assert_eq!(q.state(), QueryState::Running);
    q.stop().unwrap();
}

#[test]
fn a_panic_fails_only_its_query() {
    let rt = runtime(2);
    let b = rt.broker().clone();
    for t in ["in", "bad-out", "good-out"] {
        b.create_topic(t, 2).unwrap();
    }
    let bad = {
        let s = StreamsBuilder::new();
        s.stream_with(
            &["in"],
            Consumed::<String, i64>::defaults().with_name("bad-src"),
        )
        .process_named("exploder", || Explode::panic_at(5))
        .to("bad-out");
        rt.start_query("bad", s.build().unwrap()).unwrap()
    };
    let good = rt
        .start_query("good", copy_query("in", "good-out"))
        .unwrap();
    for i in 0..10i64 {
        b.send("in", &format!("k{i}"), &i).unwrap();
    }
    let QueryState::Failed(e) = bad.await_termination(Some(Duration::from_secs(20))) else {
        panic!("bad query should fail")
    };
    assert!(
        matches!(&e, Error::Panic { processor, message } if processor == "exploder" && message == "boom at 5"),
        "{e:?}"
    );
    read_n::<String, i64>(&b, "good-out", 10);
    // The pool survived: the good query keeps processing new records.
    for i in 10..20i64 {
        b.send("in", &format!("k{i}"), &i).unwrap();
    }
    read_n::<String, i64>(&b, "good-out", 20);
    assert_eq!(good.state(), QueryState::Running);
    // And a new query can still start on the same pool.
    let again = rt.start_query("bad", copy_query("in", "bad-out")).unwrap();
    assert_eq!(again.state(), QueryState::Running);
    rt.shutdown()
        .unwrap_or_else(|e| panic!("shutdown after recovery: {e}"));
    assert_eq!(good.state(), QueryState::Stopped);
    assert_eq!(again.state(), QueryState::Stopped);
}

#[test]
fn names_topics_and_shutdown_are_checked() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 1).unwrap();
    let err = rt
        .start_query("q", copy_query("missing", "out"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source topic 'missing' of query 'q' does not exist"),
        "{err}"
    );
    let err = rt
        .start_query("q", copy_query("in", "nowhere"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sink topic 'nowhere' of query 'q' does not exist"),
        "{err}"
    );
    assert!(rt.start_query("bad name", copy_query("in", "out")).is_err());
    let q = rt.start_query("q", copy_query("in", "out")).unwrap();
    assert!(matches!(
        rt.start_query("q", copy_query("in", "out")),
        Err(Error::QueryExists(_))
    ));
    q.stop().unwrap();
    // A stopped query's name can be reused.
    let q2 = rt.start_query("q", copy_query("in", "out")).unwrap();
    assert_eq!(rt.query("q").unwrap().state(), QueryState::Running);
    rt.shutdown().unwrap();
    assert_eq!(q2.state(), QueryState::Stopped);
    assert!(matches!(
        rt.start_query("z", copy_query("in", "out")),
        Err(Error::ShutDown)
    ));
}

struct FailInit;

impl Processor<String, i64, String, i64> for FailInit {
    fn init(&mut self, _ctx: &mut ProcessorContext<'_, String, i64>) -> Result<()> {
        Err(Error::msg("no config"))
    }
    fn process(
        &mut self,
        r: Record<String, i64>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        ctx.forward(r)
    }
}

#[test]
fn an_init_error_is_returned_by_start_query() {
    let rt = runtime(1);
    rt.broker().create_topic("in", 1).unwrap();
    let s = StreamsBuilder::new();
    s.stream::<String, i64>("in")
        .process_named("needs-config", || FailInit)
        .foreach(|_, _| {});
    let err = rt
        .start_query("q", s.build().unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "processor 'needs-config' failed: no config");
    assert!(rt.query("q").is_none());
}

struct Slow(Duration);

impl Processor<String, i64, String, i64> for Slow {
    fn process(
        &mut self,
        r: Record<String, i64>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        std::thread::sleep(self.0);
        ctx.forward(r)
    }
}

#[test]
fn a_hot_query_does_not_starve_a_new_one() {
    // One worker, small batches: the hot query has a long backlog of slow records.
    let rt = Runtime::new(
        RuntimeConfig::builder()
            .workers(1)
            .max_batch_records(10)
            .build()
            .unwrap(),
    )
    .unwrap();
    let b = rt.broker().clone();
    for t in ["hot-in", "hot-out", "cold-in", "cold-out"] {
        b.create_topic(t, 1).unwrap();
    }
    for i in 0..2000i64 {
        b.send("hot-in", &"k".to_string(), &i).unwrap();
    }
    let s = StreamsBuilder::new();
    s.stream::<String, i64>("hot-in")
        .process(|| Slow(Duration::from_micros(500)))
        .to("hot-out");
    let hot = rt.start_query("hot", s.build().unwrap()).unwrap();
    wait_until("hot query busy", || hot.stats().records_processed > 20);
    let cold = rt
        .start_query("cold", copy_query("cold-in", "cold-out"))
        .unwrap();
    for i in 0..5i64 {
        b.send("cold-in", &"k".to_string(), &i).unwrap();
    }
    read_n::<String, i64>(&b, "cold-out", 5);
    let hot_done = hot.stats().records_processed;
    assert!(
        hot_done < 1000,
        "the cold query waited for {hot_done} hot records"
    );
    cold.stop().unwrap();
    hot.stop().unwrap();
}

#[test]
fn full_partitions_pause_and_the_caps_hold() {
    let cap_bytes = 20_000;
    let rt = Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .queue_max_records_per_partition(50)
            .queue_max_bytes(cap_bytes)
            .max_batch_records(5)
            .build()
            .unwrap(),
    )
    .unwrap();
    let b = rt.broker().clone();
    b.create_topic("in", 4).unwrap();
    b.create_topic("out", 4).unwrap();
    // 2000 records of ~180 bytes: far more than the queues may hold.
    let padding = "x".repeat(100);
    for i in 0..2000i64 {
        b.send("in", &format!("key-{:03}-{padding}", i % 16), &i)
            .unwrap();
    }
    let s = StreamsBuilder::new();
    s.stream::<String, i64>("in")
        .process(|| Slow(Duration::from_micros(200)))
        .to("out");
    let q = rt.start_query("q", s.build().unwrap()).unwrap();
    let mut max_bytes = 0;
    let mut saw_pause = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.read_all::<String, i64>("out").unwrap().len() < 2000 {
        assert!(Instant::now() < deadline, "timed out");
        let (used, cap) = rt.queue_bytes();
        assert_eq!(cap, cap_bytes);
        max_bytes = max_bytes.max(used);
        saw_pause |= rt.paused_partitions() > 0;
        std::thread::sleep(Duration::from_millis(1));
    }
    q.stop().unwrap();
    assert!(
        max_bytes <= cap_bytes,
        "queued {max_bytes} bytes over a cap of {cap_bytes}"
    );
    assert!(max_bytes > 0);
    assert!(saw_pause, "some partition was paused");
    assert_eq!(rt.queue_bytes().0, 0, "stopping released every queued byte");
    // Nothing lost or duplicated, and each key's records kept their order.
    let out = b.read_all::<String, i64>("out").unwrap();
    assert_eq!(out.len(), 2000);
    let mut by_key: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for r in out {
        by_key.entry(r.record.key).or_default().push(r.record.value);
    }
    for (k, vs) in by_key {
        let mut sorted_vs = vs.clone();
        sorted_vs.sort();
        assert_eq!(vs, sorted_vs, "order of {k}");
        assert_eq!(vs.len(), 125);
    }
}

#[test]
fn a_task_takes_the_lowest_timestamp_across_its_partitions() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("a", 1).unwrap();
    b.create_topic("b", 1).unwrap();
    b.create_topic("out", 1).unwrap();
    for ts in [1i64, 4, 5, 8] {
        b.send_at("a", &"a".to_string(), &ts, ts).unwrap();
    }
    for ts in [2i64, 3, 6, 7, 9] {
        b.send_at("b", &"b".to_string(), &ts, ts).unwrap();
    }
    let s = StreamsBuilder::new();
    s.stream_with(&["a", "b"], Consumed::<String, i64>::defaults())
        .to("out");
    let q = rt.start_query("q", s.build().unwrap()).unwrap();
    let out = read_n::<String, i64>(&b, "out", 9);
    q.stop().unwrap();
    assert_eq!(
        out.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
}

struct Punctuated {
    stream: Arc<Mutex<Vec<i64>>>,
    wall: Arc<AtomicUsize>,
    stream_time_at_process: Arc<AtomicI64>,
}

impl Processor<String, i64, String, i64> for Punctuated {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<()> {
        ctx.schedule(Duration::from_millis(10), PunctuationType::StreamTime)?;
        ctx.schedule(Duration::from_millis(20), PunctuationType::WallClockTime)?;
        Ok(())
    }
    fn process(
        &mut self,
        r: Record<String, i64>,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        self.stream_time_at_process
            .store(ctx.stream_time(), Ordering::SeqCst);
        ctx.forward(r)
    }
    fn punctuate(
        &mut self,
        p: &weir::Punctuation,
        ctx: &mut ProcessorContext<'_, String, i64>,
    ) -> Result<()> {
        assert!(ctx.record_metadata().is_none());
        match p.kind {
            PunctuationType::StreamTime => self.stream.lock().unwrap().push(p.timestamp),
            PunctuationType::WallClockTime => {
                self.wall.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

#[test]
fn stream_time_and_wall_clock_punctuation() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    let stream = Arc::new(Mutex::new(Vec::new()));
    let wall = Arc::new(AtomicUsize::new(0));
    let st = Arc::new(AtomicI64::new(0));
    let s = StreamsBuilder::new();
    let (s1, w1, t1) = (stream.clone(), wall.clone(), st.clone());
    s.stream::<String, i64>("in")
        .process(move || Punctuated {
            stream: s1.clone(),
            wall: w1.clone(),
            stream_time_at_process: t1.clone(),
        })
        .foreach(|_, _| {});
    let q = rt.start_query("q", s.build().unwrap()).unwrap();
    // With no records at all, wall-clock punctuation still fires (the I/O thread's timer).
    wait_until("wall-clock punctuations while idle", || {
        wall.load(Ordering::SeqCst) >= 3
    });
    assert!(stream.lock().unwrap().is_empty(), "no stream time yet");
    for ts in [100i64, 105, 112, 109, 140] {
        b.send_at("in", &"k".to_string(), &ts, ts).unwrap();
    }
    wait_until("stream time 140", || st.load(Ordering::SeqCst) == 140);
    q.stop().unwrap();
    // First at the first stream time (100), then when stream time passes 110 (at 112),
    // then once for the jump to 140 (120 and 130 missed). The late 109 changes nothing.
    assert_eq!(*stream.lock().unwrap(), vec![100, 112, 140]);
}

#[test]
fn stop_from_inside_a_processor_does_not_deadlock() {
    let rt = runtime(1);
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    let slot: Arc<Mutex<Option<QueryHandle>>> = Arc::default();
    let stopped = Arc::new(AtomicBool::new(false));
    let s = StreamsBuilder::new();
    let (sl, st) = (slot.clone(), stopped.clone());
    s.stream::<String, i64>("in").foreach(move |_, _| {
        if let Some(h) = sl.lock().unwrap().as_ref() {
            h.stop().unwrap();
            st.store(true, Ordering::SeqCst);
        }
    });
    let q = rt.start_query("q", s.build().unwrap()).unwrap();
    *slot.lock().unwrap() = Some(q.clone());
    b.send("in", &"k".to_string(), &1i64).unwrap();
    assert_eq!(
        q.await_termination(Some(Duration::from_secs(20))),
        QueryState::Stopped
    );
    assert!(stopped.load(Ordering::SeqCst));
    slot.lock().unwrap().take();
}

#[test]
fn offset_reset_latest_skips_what_was_there_before_the_start() {
    let b = Broker::new();
    b.create_topic("in", 1).unwrap();
    b.create_topic("out", 1).unwrap();
    for i in 0..10i64 {
        b.send("in", &"old".to_string(), &i).unwrap();
    }
    let rt = Runtime::new(
        RuntimeConfig::builder()
            .workers(1)
            .offset_reset(OffsetReset::Latest)
            .broker(b.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    let q = rt.start_query("q", copy_query("in", "out")).unwrap();
    b.send("in", &"new".to_string(), &100i64).unwrap();
    let out = read_n::<String, i64>(&b, "out", 1);
    q.stop().unwrap();
    assert_eq!(out, vec![("new".to_string(), 100)]);
    assert_eq!(b.read_all::<String, i64>("out").unwrap().len(), 1);
}

#[test]
fn shutdown_from_inside_a_processor_does_not_deadlock() {
    let rt = Arc::new(runtime(1));
    let b = rt.broker().clone();
    b.create_topic("in", 1).unwrap();
    let weak = Arc::downgrade(&rt);
    let s = StreamsBuilder::new();
    s.stream::<String, i64>("in").foreach(move |_, _| {
        if let Some(rt) = weak.upgrade() {
            rt.shutdown().unwrap();
        }
    });
    let q = rt.start_query("q", s.build().unwrap()).unwrap();
    b.send("in", &"k".to_string(), &1i64).unwrap();
    assert_eq!(
        q.await_termination(Some(Duration::from_secs(20))),
        QueryState::Stopped
    );
    assert!(matches!(
        rt.start_query("z", copy_query("in", "in")),
        Err(Error::ShutDown)
    ));
}

#[test]
fn lag_counts_the_records_a_query_has_not_processed() {
    let rt = runtime(2);
    let broker = rt.broker().clone();
    broker.create_topic("lag-in", 1).unwrap();
    broker.create_topic("lag-out", 1).unwrap();
    for i in 0..3000i64 {
        broker.send("lag-in", &format!("k{i}"), &i).unwrap();
    }
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("lag-in")
        .map_values(|v: i64| {
            std::thread::sleep(Duration::from_millis(1));
            v
        })
        .to("lag-out");
    let q = rt.start_query("slow", b.build().unwrap()).unwrap();
    // Published once a second by the I/O thread: after about a second, some 2000 wait.
    wait_until("a lag", || q.stats().lag > 1000);
    wait_until("all processed", || q.stats().records_processed == 3000);
    wait_until("no lag", || q.stats().lag == 0);
    q.stop().unwrap();
}
