//! A RocksDB store behind the record cache agrees with a model (a `BTreeMap`) across
//! evictions, commits, clean restarts and crashes.
//!
//! A processor applies random puts, deletes and reads from an input topic to its store
//! and emits what each read saw. A tiny record cache forces evictions; a short commit
//! interval commits at random points; segments end in a clean stop, a crash (the
//! processor fails once on a marked record), or nothing. Each restart opens the same
//! state directory. Checked:
//! - every read saw the model's value, except reads the at-least-once replay after a
//!   crash re-ran (between the last commit and the crash: the store may already hold
//!   later writes that were evicted before the crash, as in Kafka Streams without
//!   exactly-once);
//! - the record cache never held more than its budget;
//! - after the last restart the store equals the model key by key.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::{ConsumerRecord, StoreSpec};

mod common;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    Put(i64),
    Delete,
    Read,
    /// Fails the processor the first time it is seen.
    Crash,
}

/// Input: `(sequence number, op)`; output: `(sequence number, value read)`.
type In = Json<(u64, Op)>;
type Out = Json<(u64, Option<i64>)>;

#[derive(Debug, Clone, Copy)]
enum End {
    /// The query keeps running into the next segment.
    Continue,
    /// Clean stop (commits), then a new runtime on the same state directory.
    Stop,
    /// The processor fails on the segment's last record; then a new runtime. With
    /// `settled`, the ops before it were committed first, so the replay is short and
    /// most reads are checked; without, the store may be ahead of the commit.
    Crash { settled: bool },
}

struct Apply {
    crashed: Arc<Mutex<HashSet<u64>>>,
}

impl Processor<String, In, String, Out> for Apply {
    fn process(
        &mut self,
        r: Record<String, In>,
        ctx: &mut ProcessorContext<'_, String, Out>,
    ) -> Result<()> {
        let Json((seq, op)) = r.value;
        let mut store = ctx.store::<String, i64>("model")?;
        match op {
            Op::Put(v) => store.put(&r.key, &v),
            Op::Delete => store.delete(&r.key),
            Op::Read => {
                let seen = store.get(&r.key)?;
                ctx.forward(Record::new(r.key, Json((seq, seen)), r.timestamp))
            }
            Op::Crash => {
                if self.crashed.lock().unwrap().insert(seq) {
                    return Err(Error::msg(format!("injected crash at {seq}")));
                }
                Ok(())
            }
        }
    }
}

const CACHE_BYTES: usize = 2048;

fn runtime(dir: &Path, broker: &Broker) -> Runtime {
    Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .record_cache_bytes(CACHE_BYTES)
            .commit_interval(Duration::from_millis(5))
            .state_dir(dir)
            .broker(broker.clone())
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn topology(caching: bool, crashed: &Arc<Mutex<HashSet<u64>>>) -> Topology {
    let builder = StreamsBuilder::new();
    let spec = StoreSpec::new("model", StringSerde, I64Serde);
    builder.add_state_store(if caching {
        spec
    } else {
        spec.without_caching()
    });
    let crashed = crashed.clone();
    builder
        .stream::<String, In>("ops")
        .process_with_stores(
            move || Apply {
                crashed: crashed.clone(),
            },
            &["model"],
        )
        .to("reads");
    builder.build().unwrap()
}

fn op() -> impl Strategy<Value = (u8, Op)> {
    (
        0..24u8,
        prop_oneof![
            5 => any::<i64>().prop_map(Op::Put),
            2 => Just(Op::Delete),
            3 => Just(Op::Read),
        ],
    )
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        Just(End::Continue),
        Just(End::Stop),
        any::<bool>().prop_map(|settled| End::Crash { settled }),
    ]
}

struct Run {
    broker: Broker,
    dir: tempfile::TempDir,
    crashed: Arc<Mutex<HashSet<u64>>>,
    caching: bool,
    seq: u64,
    /// Value of each key after each op, by sequence number, for the reads.
    expected_reads: BTreeMap<u64, Option<i64>>,
    /// Sequence numbers a replay re-ran (reads there are not checked).
    replayed: Vec<std::ops::Range<u64>>,
    model: BTreeMap<String, i64>,
}

impl Run {
    fn send(&mut self, key: String, op: Op) {
        match &op {
            Op::Put(v) => {
                self.model.insert(key.clone(), *v);
            }
            Op::Delete => {
                self.model.remove(&key);
            }
            Op::Read => {
                self.expected_reads
                    .insert(self.seq, self.model.get(&key).copied());
            }
            Op::Crash => {}
        }
        self.broker
            .send("ops", &key, &Json((self.seq, op)))
            .unwrap();
        self.seq += 1;
    }

    fn start(&self, rt: &Runtime) -> QueryHandle {
        rt.start_query("q", topology(self.caching, &self.crashed))
            .unwrap()
    }

    /// Waits until the query has processed every op sent so far (or failed).
    fn wait_processed(&self, q: &QueryHandle, from: u64) {
        common::wait_until("ops processed", || {
            matches!(q.state(), QueryState::Failed(_))
                || q.stats().records_processed >= self.seq - from
        });
    }
}

fn check(segments: Vec<(Vec<(u8, Op)>, End)>, caching: bool) -> Result<(), TestCaseError> {
    let mut run = Run {
        broker: Broker::new(),
        dir: tempfile::tempdir().unwrap(),
        crashed: Arc::new(Mutex::new(HashSet::new())),
        caching,
        seq: 0,
        expected_reads: BTreeMap::new(),
        replayed: Vec::new(),
        model: BTreeMap::new(),
    };
    run.broker.create_topic("ops", 1).unwrap();
    run.broker.create_topic("reads", 1).unwrap();
    let mut rt = runtime(run.dir.path(), &run.broker);
    let mut q = run.start(&rt);
    // Records this query instance will process: from the committed offset on.
    let mut started_at = 0;
    let mut max_cache = 0;
    let mut evictions = 0;
    for (ops, end) in segments {
        for (k, op) in ops {
            run.send(format!("k{k}"), op);
        }
        if let End::Crash { settled } = end {
            if settled {
                run.wait_processed(&q, started_at);
                let seq = run.seq as i64;
                common::wait_until("a commit", || {
                    run.broker.committed(q.group_id(), "ops", 0) == Some(seq)
                });
            }
            run.send("k0".into(), Op::Crash);
        }
        run.wait_processed(&q, started_at);
        let stats = rt.record_cache_stats();
        max_cache = max_cache.max(stats.used);
        evictions += stats.evictions;
        match end {
            End::Continue => {}
            End::Stop => {
                q.stop().unwrap();
                drop(rt);
                rt = runtime(run.dir.path(), &run.broker);
                q = run.start(&rt);
                started_at = run.seq;
            }
            End::Crash { .. } => {
                common::wait_until("the injected crash", || {
                    matches!(q.state(), QueryState::Failed(_))
                });
                let committed = run
                    .broker
                    .committed(q.group_id(), "ops", 0)
                    .unwrap_or(0)
                    .max(0) as u64;
                drop(rt);
                run.replayed.push(committed..run.seq);
                rt = runtime(run.dir.path(), &run.broker);
                q = run.start(&rt);
                started_at = committed;
            }
        }
    }
    // Read every key once more and stop cleanly.
    for k in 0..24u8 {
        run.send(format!("k{k}"), Op::Read);
    }
    run.wait_processed(&q, started_at);
    max_cache = max_cache.max(rt.record_cache_stats().used);
    q.stop().unwrap();
    prop_assert!(
        max_cache <= CACHE_BYTES,
        "record cache at {max_cache} over {CACHE_BYTES}"
    );

    let reads: Vec<ConsumerRecord<String, Out>> = run.broker.read_all("reads").unwrap();
    let mut seen: BTreeMap<u64, Vec<Option<i64>>> = BTreeMap::new();
    for r in reads {
        let Json((seq, v)) = r.record.value;
        seen.entry(seq).or_default().push(v);
    }
    for (seq, want) in &run.expected_reads {
        let got = seen.get(seq);
        prop_assert!(got.is_some(), "read {} produced nothing", seq);
        if run.replayed.iter().any(|r| r.contains(seq)) {
            continue;
        }
        // Processed once (a clean stop commits everything, so nothing is replayed).
        prop_assert_eq!(got.unwrap(), &vec![*want], "read {}", seq);
    }
    // The last reads come after every replay: the store equals the model.
    let last: BTreeMap<String, i64> = seen
        .range(run.seq - 24..)
        .filter_map(|(seq, v)| {
            let k = (seq - (run.seq - 24)) as u8;
            v.last().copied().flatten().map(|v| (format!("k{k}"), v))
        })
        .collect();
    prop_assert_eq!(last, run.model);
    // The cache was small enough to evict (more than a few ops in the case).
    prop_assert!(
        evictions > 0 || run.seq < 200 || !caching,
        "no evictions over {} ops",
        run.seq
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_cached_rocksdb_store_agrees_with_a_model_across_evictions_commits_and_restarts(
        segments in proptest::collection::vec(
            (proptest::collection::vec(op(), 1..150), end()),
            1..5,
        ),
        caching in any::<bool>(),
    ) {
        check(segments, caching)?;
    }
}
