//! The stop/start scenario of Confluent's "Bounding ksqlDB memory usage", scaled to this
//! machine: a LATEST_BY_KEY aggregation over `keys` keys with `value_bytes`-byte values
//! into RocksDB, under one memory limit. A query runs until RocksDB's cache is full, is
//! stopped (its local state deleted, as ksqlDB's TERMINATE does), and a new query
//! starts; `iterations` times. ksqlDB's resident memory grew with every iteration: each
//! query ran on new threads, glibc gave the new threads other arenas than the ones the
//! previous query's cache blocks were freed into, and the freed arenas were not given
//! back to the OS.
//!
//! Two modes, each a child process whose resident set the parent samples every 200 ms
//! (`/proc/<pid>/status`):
//!
//! - **weir**: one runtime (its fixed pool, one shared cache, jemalloc as `malloc`);
//!   every query starts on that runtime.
//! - **baseline**, the ksqlDB pattern: the same records through the same RocksDB
//!   settings (weir's `StateEnv`: one LRU cache and write buffer manager for every
//!   store, as ksqlDB's bounded-memory config setter shares them), but each query is a
//!   new OS thread reading the topic and doing the aggregation's get and put itself,
//!   and the process runs on glibc's `malloc`. Like the ksqlDB server, the process has
//!   long-lived threads of its own (the JVM's, the clients', the web server's): here
//!   `8 × cores` idle threads, each attached to an arena — glibc's default arena limit
//!   is 8 per core, so a new thread is handed an arena in use round-robin, not the one
//!   the previous query's thread left.
//!
//! The first iteration of each mode runs until the cache is 95% full and then for as
//! many records again; the later ones process as many records as the first did (the
//! previous query's blocks stay in the shared cache until the next query evicts them,
//! so they start on a full cache). Every iteration thus ends after the same work on a
//! full, evicting cache, and its figure is the median RSS of the samples over its last
//! 3 s (a single sample moves by ±50 MiB as memtables fill and flush).
//! Then each mode counts its threads with one query running and with `many` queries,
//! and runs the `many` queries for `many_secs` seconds under the same limit.
//!
//! `stop_start` (built with jemalloc) is the parent and the weir child. It builds the
//! baseline as `stop_start_glibc` with `--no-default-features` (a build unifies
//! features, so no binary built next to the jemalloc ones could run on glibc), runs
//! both children one after the other, prints the figures and writes the samples as CSV
//! and the chart as SVG.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir::prelude::*;
use weir::runtime::StateUsage;
use weir::runtime::internals::state::{KeyValueStore, StateEnv};
use weir::serde::Bytes;

use crate::{fresh_dir, preload_random, status_field};

/// The topic both modes read: one partition, as in the article.
const TOPIC: &str = "events";
/// RSS sampling period.
const SAMPLE: Duration = Duration::from_millis(200);
/// The cache counts as full at this share of its capacity.
const FULL_PERCENT: usize = 95;
/// An iteration's RSS is the median of the samples over this many seconds before its
/// query stops.
const ITERATION_WINDOW: f64 = 3.0;
/// weir's target: peak RSS at most the limit plus this.
const PEAK_SLACK: u64 = 64 << 20;

/// The scenario's size, from the command line:
/// `[iterations=6] [keys=1000000] [records=1000000] [value_bytes=5000] [many=100] [many_secs=60] [limit_mib=1024]`.
#[derive(Debug, Clone)]
pub struct Params {
    /// Queries stopped and started one after the other.
    pub iterations: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Records in the topic (keys uniform over `keys`).
    pub records: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Concurrent queries in the last phase.
    pub many: usize,
    /// How long the concurrent queries run.
    pub many_secs: u64,
    /// The memory limit (weir's `memory_limit`; the baseline's RocksDB settings are the
    /// ones weir derives from it).
    pub memory_limit: usize,
}

impl Params {
    fn parse(args: &[String]) -> Params {
        let mut it = args.iter().cloned();
        Params {
            iterations: crate::arg(&mut it, 6usize).max(1),
            keys: crate::arg(&mut it, 1_000_000u64).max(1),
            records: crate::arg(&mut it, 1_000_000u64).max(1),
            value_bytes: crate::arg(&mut it, 5000usize),
            many: crate::arg(&mut it, 100usize).max(1),
            many_secs: crate::arg(&mut it, 60u64),
            memory_limit: crate::arg(&mut it, 1024usize) << 20,
        }
    }

    fn to_args(&self) -> Vec<String> {
        [
            self.iterations.to_string(),
            self.keys.to_string(),
            self.records.to_string(),
            self.value_bytes.to_string(),
            self.many.to_string(),
            self.many_secs.to_string(),
            (self.memory_limit >> 20).to_string(),
        ]
        .into()
    }
}

/// Entry point of both binaries: `weir` / `baseline` run a mode (as children), anything
/// else is the parent's command line.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("weir") => {
            if cfg!(feature = "jemalloc") {
                run_weir(&Params::parse(&args[1..]))
            } else {
                Err(Error::msg("the weir mode runs on jemalloc: use stop_start"))
            }
        }
        Some("baseline") => {
            if cfg!(feature = "jemalloc") {
                Err(Error::msg(
                    "this binary runs on jemalloc; the baseline must run on glibc: `stop_start` builds stop_start_glibc with --no-default-features",
                ))
            } else {
                run_baseline(&Params::parse(&args[1..]))
            }
        }
        _ if !cfg!(feature = "jemalloc") => Err(Error::msg(
            "stop_start_glibc only runs the baseline for stop_start: run `cargo run --release -p weir-benches --bin stop_start`",
        )),
        _ => parent(&Params::parse(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stop_start: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------
// The children. They report to the parent with lines `@kind key=value ...` on stdout.
// ---------------------------------------------------------------------------------

fn emit(kind: &str, fields: &[(&str, u64)]) {
    let mut line = format!("@{kind}");
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The peak RSS so far and how often the runtime purged the allocator near the limit
/// (always 0 on glibc), as event `kind`.
fn emit_peak(kind: &str) {
    emit(
        kind,
        &[
            ("hwm", own_status("VmHWM")),
            ("purges", weir::runtime::allocator_purges()),
        ],
    );
}

/// The thread counts with one query and with all `p.many`, then the start of their run.
fn emit_many_start(threads_one: u64, p: &Params) {
    emit(
        "threads",
        &[
            ("one", threads_one),
            ("many", own_status("Threads")),
            ("queries", p.many as u64),
        ],
    );
    emit("many_start", &[]);
}

/// A field of this process's `/proc/self/status` (kB fields in bytes).
fn own_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_field(&s, field))
        .unwrap_or(0)
}

/// Creates the one-partition topic on a disk-backed broker (its logs sit in the page
/// cache, not in the process) and fills it.
fn preloaded_broker(dir: &Path, p: &Params) -> Result<Broker> {
    let broker = Broker::with_log_dir(dir)?;
    broker.create_topic(TOPIC, 1)?;
    preload_random(&broker, TOPIC, p.records, p.keys, p.value_bytes)?;
    emit("preloaded", &[("rss", own_status("VmRSS"))]);
    Ok(broker)
}

/// Waits until `target` records are processed; without a target (the first iteration)
/// until the cache is full and then as many records again, so that every iteration
/// ends after the same amount of work against a full, evicting cache (or when every
/// record is processed). Returns the records processed then. Fails after 60 s without
/// progress or when `failed` reports an error.
fn run_until(
    target: Option<u64>,
    processed: impl Fn() -> u64,
    usage: impl Fn() -> StateUsage,
    total: u64,
    failed: impl Fn() -> Option<Error>,
) -> Result<u64> {
    let mut target = target;
    let mut last = (0, Instant::now());
    loop {
        let n = processed();
        if target.is_none() {
            let u = usage();
            if u.cache_usage >= u.cache_capacity / 100 * FULL_PERCENT {
                target = Some(n.saturating_mul(2));
            }
        }
        if target.is_some_and(|t| n >= t) || n >= total {
            return Ok(n);
        }
        if let Some(e) = failed() {
            return Err(e);
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            return Err(Error::msg(format!(
                "no progress for 60 s at {n} records; rocksdb {:?}",
                usage()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every counter in `processed` is above zero (each query has started).
fn wait_all_started(processed: impl Fn() -> Vec<u64>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while processed().contains(&0) {
        if Instant::now() > deadline {
            return Err(Error::msg("queries did not start within 300 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// An iteration's figures; `rss` is one reading just before its query stopped (the
/// parent also takes the median of its own samples before the `stopping` event).
/// `allocated` is jemalloc's allocated bytes (0 on glibc).
fn emit_iteration(
    i: usize,
    records: u64,
    took: Duration,
    usage: StateUsage,
    rss: u64,
    allocated: u64,
) {
    emit(
        "iteration",
        &[
            ("i", i as u64),
            ("records", records),
            ("ms", took.as_millis() as u64),
            ("cache", usage.cache_usage as u64),
            ("capacity", usage.cache_capacity as u64),
            ("rss", rss),
            ("allocated", allocated),
        ],
    );
}

/// LATEST_BY_KEY as ksqlDB computes LATEST_BY_OFFSET: an aggregation that reads each
/// key's row before writing the new one. (weir's own `latest_by_key` is a blind write:
/// it never reads RocksDB, so the cache would only ever hold memtables.)
fn latest_by_key() -> Result<Topology> {
    let builder = StreamsBuilder::new();
    builder
        .stream_with(&[TOPIC], Consumed::<u64, Bytes>::with(U64Serde, BytesSerde))
        .group_by_key_with(Grouped::<u64, Bytes>::with(U64Serde, BytesSerde))
        .reduce_with(|_old, new| new, Materialized::as_("latest"));
    builder.build()
}

fn failure(q: &QueryHandle) -> Option<Error> {
    match q.state() {
        QueryState::Failed(e) => Some(e),
        _ => None,
    }
}

/// weir: one runtime, every query on it.
fn run_weir(p: &Params) -> Result<()> {
    let base = fresh_dir("weir-stop-start-weir");
    let broker = preloaded_broker(&base.join("broker"), p)?;
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("stop-start")
            .workers(2)
            .memory_limit(p.memory_limit)
            .state_dir(base.join("state"))
            .broker(broker.clone())
            .build()?,
    )?;
    println!("{}", runtime.memory_report());
    let mut per_iteration = None;
    for i in 1..=p.iterations {
        let name = format!("latest-{i}");
        let start = Instant::now();
        let q = runtime.start_query(&name, latest_by_key()?)?;
        let n = run_until(
            per_iteration,
            || q.stats().records_processed,
            || runtime.state_usage(),
            p.records,
            || failure(&q),
        )?;
        per_iteration.get_or_insert(n);
        let (usage, rss) = (runtime.state_usage(), own_status("VmRSS"));
        let allocated = runtime
            .memory_report()
            .allocator
            .map_or(0, |a| a.allocated as u64);
        emit("stopping", &[("i", i as u64)]);
        q.stop()?;
        runtime.clean_up_query(&name)?;
        emit_iteration(i, n, start.elapsed(), usage, rss, allocated);
    }
    emit_peak("hwm");
    println!("{}", runtime.memory_report());

    // While the many queries start, run and stop: a line of figures every 2 s.
    let watching = AtomicBool::new(true);
    std::thread::scope(|scope| {
        scope.spawn(|| watch(&runtime, &watching));
        let result = run_many(&runtime, p);
        watching.store(false, Ordering::Relaxed);
        result
    })?;
    runtime.shutdown()?;
    drop(runtime);
    emit_peak("done");
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

/// Prints the memory report's figures on one line every 2 s until `watching` clears.
fn watch(runtime: &Runtime, watching: &AtomicBool) {
    let started = Instant::now();
    while watching.load(Ordering::Relaxed) {
        let r = runtime.memory_report();
        let state = runtime.state_usage();
        let mut line = format!(
            "memory at {:.0} s: rss {:.0} MiB",
            started.elapsed().as_secs_f64(),
            mib(r.rss.unwrap_or(0) as u64)
        );
        if let Some(a) = r.allocator {
            line.push_str(&format!(
                ", jemalloc allocated {:.0} / resident {:.0} MiB",
                mib(a.allocated as u64),
                mib(a.resident as u64)
            ));
        }
        for z in &r.zones {
            line.push_str(&format!(", {} {:.0}", z.zone, mib(z.used as u64)));
        }
        line.push_str(&format!(
            ", memtables {:.0}, table readers {:.0}, stores {}",
            mib(state.memtable_bytes as u64),
            mib(state.table_readers as u64),
            state.open_stores
        ));
        println!("{line}");
        let until = Instant::now() + Duration::from_secs(2);
        while watching.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts `many` queries (counting threads with one and with all), runs them for
/// `many_secs`, stops them and deletes their state.
fn run_many(runtime: &Runtime, p: &Params) -> Result<()> {
    let mut queries = vec![runtime.start_query("many-0", latest_by_key()?)?];
    wait_all_started(|| vec![queries[0].stats().records_processed])?;
    let threads_one = own_status("Threads");
    for j in 1..p.many {
        queries.push(runtime.start_query(&format!("many-{j}"), latest_by_key()?)?);
    }
    let processed = || -> Vec<u64> {
        queries
            .iter()
            .map(|q| q.stats().records_processed)
            .collect()
    };
    wait_all_started(processed)?;
    emit_many_start(threads_one, p);
    let until = Instant::now() + Duration::from_secs(p.many_secs);
    while Instant::now() < until {
        if let Some(e) = queries.iter().find_map(failure) {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let total: u64 = processed().iter().sum();
    let report = runtime.memory_report();
    emit(
        "many_end",
        &[("records", total), ("rss", own_status("VmRSS"))],
    );
    println!("{report}");
    for (j, q) in queries.iter().enumerate() {
        q.stop()?;
        runtime.clean_up_query(&format!("many-{j}"))?;
    }
    Ok(())
}

/// The baseline's query: a thread of its own that reads the topic from the start and,
/// per record, reads the key's row and writes the new one (what a table aggregation
/// does), until the end of the topic or `stop`.
fn spawn_baseline_query(
    env: &StateEnv,
    broker: &Broker,
    dir: PathBuf,
    name: String,
    stop: Arc<AtomicBool>,
    processed: Arc<AtomicU64>,
) -> Result<JoinHandle<Result<u64>>> {
    let env = env.clone();
    let broker = broker.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut store = env.open_store(&name, &dir)?;
            let mut offset = 0i64;
            let mut n = 0u64;
            'read: while !stop.load(Ordering::Relaxed) {
                let batch = broker.fetch(TOPIC, 0, offset, 500, 4 << 20)?;
                if batch.is_empty() {
                    break;
                }
                for (off, r) in batch {
                    let key = r.key.as_deref().unwrap_or_default();
                    let value = r.value.as_deref().unwrap_or_default();
                    std::hint::black_box(store.get(key)?);
                    store.put(key, value)?;
                    offset = off + 1;
                    n += 1;
                    processed.store(n, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break 'read;
                    }
                }
            }
            store.flush()?;
            Ok(n)
        })
        .map_err(|e| Error::msg(format!("cannot start a query thread: {e}")))
}

fn join(handle: JoinHandle<Result<u64>>) -> Result<u64> {
    handle
        .join()
        .map_err(|_| Error::msg("a baseline query thread panicked"))?
}

/// Idle threads standing in for a server's own long-lived threads, each attached to a
/// glibc arena by one allocation.
struct ServiceThreads {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl ServiceThreads {
    fn start(n: usize) -> Result<ServiceThreads> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..n {
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("service-{i}"))
                .spawn(move || {
                    let v = vec![1u8; 4096];
                    std::hint::black_box(&v);
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                })
                .map_err(|e| Error::msg(format!("cannot start a service thread: {e}")))?;
            handles.push(handle);
        }
        Ok(ServiceThreads { stop, handles })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// The ksqlDB pattern: a thread per query, glibc's malloc, one shared cache.
fn run_baseline(p: &Params) -> Result<()> {
    let base = fresh_dir("weir-stop-start-baseline");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let service = ServiceThreads::start(8 * cores)?;
    let broker = preloaded_broker(&base.join("broker"), p)?;
    let state_dir = base.join("state");
    let config = RuntimeConfig::builder()
        .memory_limit(p.memory_limit)
        .state_dir(&state_dir)
        .build()?;
    let env = StateEnv::from_config(config.state())?;
    let mut per_iteration = None;
    for i in 1..=p.iterations {
        let name = format!("latest-{i}");
        let dir = state_dir.join(&name);
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let processed = Arc::new(AtomicU64::new(0));
        let handle = spawn_baseline_query(
            &env,
            &broker,
            dir.clone(),
            name,
            stop.clone(),
            processed.clone(),
        )?;
        let reached = run_until(
            per_iteration,
            || processed.load(Ordering::Relaxed),
            || env.usage(),
            p.records,
            || {
                handle
                    .is_finished()
                    .then(|| Error::msg("a baseline query ended before its records"))
            },
        );
        let (usage, rss) = (env.usage(), own_status("VmRSS"));
        emit("stopping", &[("i", i as u64)]);
        stop.store(true, Ordering::Relaxed);
        let n = join(handle)?;
        reached?;
        per_iteration.get_or_insert(n);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::msg(format!("cannot delete {}: {e}", dir.display())))?;
        emit_iteration(i, n, start.elapsed(), usage, rss, 0);
    }
    emit_peak("hwm");

    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    let mut threads_one = 0;
    for j in 0..p.many {
        let processed = Arc::new(AtomicU64::new(0));
        let name = format!("many-{j}");
        let handle = spawn_baseline_query(
            &env,
            &broker,
            state_dir.join(&name),
            name,
            stop.clone(),
            processed.clone(),
        )?;
        running.push((handle, processed));
        if j == 0 {
            wait_all_started(|| vec![running[0].1.load(Ordering::Relaxed)])?;
            threads_one = own_status("Threads");
        }
    }
    let processed = || -> Vec<u64> {
        running
            .iter()
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .collect()
    };
    wait_all_started(processed)?;
    emit_many_start(threads_one, p);
    std::thread::sleep(Duration::from_secs(p.many_secs));
    let total: u64 = processed().iter().sum();
    emit(
        "many_end",
        &[("records", total), ("rss", own_status("VmRSS"))],
    );
    stop.store(true, Ordering::Relaxed);
    for (handle, _) in running {
        join(handle)?;
    }
    drop(env);
    service.stop();
    emit_peak("done");
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

// ---------------------------------------------------------------------------------
// The parent: builds the baseline, runs both children, samples, reports, draws.
// ---------------------------------------------------------------------------------

/// One line a child reported, and when (seconds since the child started).
#[derive(Debug, Clone)]
struct Event {
    t: f64,
    kind: String,
    fields: BTreeMap<String, u64>,
}

impl Event {
    fn get(&self, k: &str) -> u64 {
        self.fields.get(k).copied().unwrap_or(0)
    }
}

/// A child's run: RSS and thread samples and its events.
struct ModeRun {
    name: &'static str,
    /// (seconds, RSS bytes, threads).
    samples: Vec<(f64, u64, u64)>,
    events: Vec<Event>,
}

impl ModeRun {
    fn all(&self, kind: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    fn one(&self, kind: &str) -> Result<&Event> {
        self.events
            .iter()
            .find(|e| e.kind == kind)
            .ok_or_else(|| Error::msg(format!("{} did not report '{kind}'", self.name)))
    }

    /// Highest sampled RSS between two times.
    fn peak_between(&self, from: f64, to: f64) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.0 >= from && s.0 <= to)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    }

    /// Median sampled RSS over [`ITERATION_WINDOW`] seconds before `t`.
    fn median_before(&self, t: f64) -> Option<u64> {
        let mut window: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| s.0 >= t - ITERATION_WINDOW && s.0 <= t)
            .map(|s| s.1)
            .collect();
        window.sort_unstable();
        window.get(window.len() / 2).copied()
    }
}

fn parse_event(line: &str, t: f64) -> Option<Event> {
    let mut parts = line.strip_prefix('@')?.split_whitespace();
    let kind = parts.next()?.to_string();
    let fields = parts
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Some(Event { t, kind, fields })
}

/// Runs `exe mode params...`, sampling its RSS and threads every 200 ms.
fn run_child(name: &'static str, exe: &Path, p: &Params) -> Result<ModeRun> {
    println!("== {name}: {}", exe.display());
    let mut child = Command::new(exe)
        .arg(if name == "weir" { "weir" } else { "baseline" })
        .args(p.to_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::msg(format!("cannot start {}: {e}", exe.display())))?;
    let started = Instant::now();
    let status_path = format!("/proc/{}/status", child.id());
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let t = started.elapsed().as_secs_f64();
            match parse_event(&line, t) {
                Some(e) => {
                    println!("[{name} {t:7.1}s] {line}");
                    let _ = tx.send(e);
                }
                None => println!("[{name}] {line}"),
            }
        }
    });
    let mut run = ModeRun {
        name,
        samples: Vec::new(),
        events: Vec::new(),
    };
    let status = loop {
        let t = started.elapsed().as_secs_f64();
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let (Some(rss), Some(threads)) =
                (status_field(&s, "VmRSS"), status_field(&s, "Threads"))
        {
            run.samples.push((t, rss, threads));
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::msg(format!("waiting for {name}: {e}")))?
        {
            break status;
        }
        std::thread::sleep(
            SAMPLE.saturating_sub(Duration::from_secs_f64(started.elapsed().as_secs_f64() - t)),
        );
    };
    let _ = reader.join();
    run.events.extend(rx.try_iter());
    if !status.success() {
        return Err(Error::msg(format!("the {name} run failed: {status}")));
    }
    Ok(run)
}

/// Builds `stop_start_glibc` without jemalloc next to this binary.
fn build_baseline(exe: &Path) -> Result<PathBuf> {
    let bin_dir = exe
        .parent()
        .ok_or_else(|| Error::msg("the binary has no directory"))?;
    let target_dir = bin_dir
        .parent()
        .ok_or_else(|| Error::msg("the binary is not in a cargo target directory"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .args([
            "-p",
            "weir-benches",
            "--no-default-features",
            "--bin",
            "stop_start_glibc",
            "--target-dir",
        ])
        .arg(target_dir);
    match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => return Err(Error::msg("cannot tell the build profile")),
    }
    println!("== building the glibc baseline: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| Error::msg(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(Error::msg(format!(
            "building stop_start_glibc failed: {status}"
        )));
    }
    Ok(bin_dir.join("stop_start_glibc"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// The figures of one mode.
struct Figures {
    /// Per iteration: median RSS before the stop, RSS at the stop, allocated bytes.
    iterations: Vec<(u64, u64, u64)>,
    growth_percent: f64,
    hwm_iterations: u64,
    peak_iterations: u64,
    threads_one: u64,
    threads_many: u64,
    many_peak: u64,
    many_records: u64,
    records_per_iteration: u64,
    /// Times the runtime returned the allocator's free pages near the limit: while
    /// iterating, and with the many queries.
    purges: (u64, u64),
}

fn figures(run: &ModeRun) -> Result<Figures> {
    let ends = run.all("iteration");
    let stops = run.all("stopping");
    let first = ends
        .first()
        .ok_or_else(|| Error::msg(format!("{} ran no iteration", run.name)))?;
    let iterations = ends
        .iter()
        .zip(&stops)
        .map(|(end, stop)| {
            let median = run.median_before(stop.t).ok_or_else(|| {
                Error::msg(format!("no RSS sample before iteration {}", end.get("i")))
            })?;
            Ok((median, end.get("rss"), end.get("allocated")))
        })
        .collect::<Result<Vec<_>>>()?;
    let (rss_first, rss_last) = (iterations[0].0, iterations[iterations.len() - 1].0);
    let growth_percent = (rss_last as f64 - rss_first as f64) / rss_first as f64 * 100.0;
    let preloaded = run.one("preloaded")?.t;
    let hwm = run.one("hwm")?;
    let threads = run.one("threads")?;
    let many_end = run.one("many_end")?;
    // The many queries' phase runs from the end of the iterations (starting them)
    // until the child is done (stopping them and deleting their state); the final
    // VmHWM counts if this phase raised it.
    let done = run.one("done")?;
    let many_hwm = if done.get("hwm") > hwm.get("hwm") {
        done.get("hwm")
    } else {
        0
    };
    Ok(Figures {
        growth_percent,
        hwm_iterations: hwm.get("hwm"),
        peak_iterations: run.peak_between(preloaded, hwm.t),
        threads_one: threads.get("one"),
        threads_many: threads.get("many"),
        many_peak: run
            .peak_between(hwm.t, done.t)
            .max(many_end.get("rss"))
            .max(many_hwm),
        many_records: many_end.get("records"),
        records_per_iteration: first.get("records"),
        purges: (hwm.get("purges"), done.get("purges") - hwm.get("purges")),
        iterations,
    })
}

fn parent(p: &Params) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| Error::msg(format!("cannot find this binary: {e}")))?;
    let glibc = build_baseline(&exe)?;
    println!(
        "== stop/start: LATEST_BY_KEY, {} keys, {} records of {}-byte values in one partition, memory limit {} MiB, {} iterations, then {} queries for {} s",
        p.keys,
        p.records,
        p.value_bytes,
        p.memory_limit >> 20,
        p.iterations,
        p.many,
        p.many_secs
    );
    let weir = run_child("weir", &exe, p)?;
    let baseline = run_child("baseline", &glibc, p)?;
    let w = figures(&weir)?;
    let b = figures(&baseline)?;

    let limit = p.memory_limit as u64;
    println!();
    println!(
        "RSS at the end of each iteration (MiB; median of the last {ITERATION_WINDOW} s, [one reading at the stop]), growth from the first to the last, peak while iterating:"
    );
    for (name, f) in [("weir", &w), ("baseline", &b)] {
        let rss: Vec<String> = f
            .iterations
            .iter()
            .map(|(median, at_stop, _)| format!("{:.0} [{:.0}]", mib(*median), mib(*at_stop)))
            .collect();
        println!(
            "  {name:<9} {}  growth {:+.1}%  peak {:.0} MiB (VmHWM {:.0} MiB)  {} records per iteration",
            rss.join(", "),
            f.growth_percent,
            mib(f.peak_iterations),
            mib(f.hwm_iterations),
            f.records_per_iteration
        );
    }
    let allocated: Vec<String> = w
        .iterations
        .iter()
        .map(|(_, _, a)| format!("{:.0}", mib(*a)))
        .collect();
    println!(
        "  weir's jemalloc allocated at each stop (MiB): {}",
        allocated.join(", ")
    );
    println!(
        "  weir returned jemalloc's free pages near the limit {} times while iterating, {} times with the {} queries",
        w.purges.0, w.purges.1, p.many
    );
    println!("Threads with 1 query / with {} queries:", p.many);
    for (name, f) in [("weir", &w), ("baseline", &b)] {
        println!("  {name:<9} {} / {}", f.threads_one, f.threads_many);
    }
    println!(
        "{} concurrent queries for {} s: peak RSS (MiB) from their start until all are stopped, records processed:",
        p.many, p.many_secs
    );
    for (name, f) in [("weir", &w), ("baseline", &b)] {
        println!(
            "  {name:<9} {:.0} MiB, {} records",
            mib(f.many_peak),
            f.many_records
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("weir's targets:");
    println!(
        "  peak RSS {:.0} MiB <= limit + 64 MiB = {:.0} MiB: {}",
        mib(w.hwm_iterations),
        mib(limit + PEAK_SLACK),
        verdict(w.hwm_iterations <= limit + PEAK_SLACK)
    );
    println!(
        "  growth {:+.1}% < 5%: {}",
        w.growth_percent,
        verdict(w.growth_percent < 5.0)
    );
    println!(
        "  threads {} with 1 query and {} with {}: {}",
        w.threads_one,
        w.threads_many,
        p.many,
        verdict(w.threads_one == w.threads_many)
    );
    println!(
        "  {} queries peak RSS {:.0} MiB <= limit {:.0} MiB: {}",
        p.many,
        mib(w.many_peak),
        mib(limit),
        verdict(w.many_peak <= limit)
    );

    let out = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/results"));
    std::fs::create_dir_all(out)
        .map_err(|e| Error::msg(format!("cannot create {}: {e}", out.display())))?;
    let csv = out.join("stop_start.csv");
    write_csv(&csv, &[&weir, &baseline])?;
    let svg = out.join("stop_start.svg");
    draw(&svg, &[&weir, &baseline], p)?;
    println!("samples: {}\nchart: {}", csv.display(), svg.display());
    Ok(())
}

fn write_csv(path: &Path, runs: &[&ModeRun]) -> Result<()> {
    let mut s = String::from("mode,seconds,rss_bytes,threads\n");
    for run in runs {
        for (t, rss, threads) in &run.samples {
            s.push_str(&format!("{},{t:.2},{rss},{threads}\n", run.name));
        }
    }
    std::fs::write(path, s).map_err(|e| Error::msg(format!("cannot write {}: {e}", path.display())))
}

fn draw(path: &Path, runs: &[&ModeRun], p: &Params) -> Result<()> {
    use plotters::prelude::*;
    let plot = |e: &dyn std::fmt::Display| Error::msg(format!("drawing {}: {e}", path.display()));
    let max_t = runs
        .iter()
        .flat_map(|r| r.samples.last().map(|s| s.0))
        .fold(1.0, f64::max);
    let limit = mib(p.memory_limit as u64);
    let max_y = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| mib(s.1)))
        .fold(limit, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1200, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Stop/start: LATEST_BY_KEY, {} keys x {} B, limit {} MiB, {} iterations, then {} queries",
                p.keys,
                p.value_bytes,
                p.memory_limit >> 20,
                p.iterations,
                p.many
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_t, 0f64..max_y)
        .map_err(|e| plot(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the mode's process started")
        .y_desc("RSS (MiB)")
        .draw()
        .map_err(|e| plot(&e))?;
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(vec![(0.0, limit), (max_t, limit)], grey))
        .map_err(|e| plot(&e))?
        .label(format!("memory limit ({limit:.0} MiB)"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    for (run, color) in runs.iter().zip([BLUE, RED]) {
        let label = match run.name {
            "weir" => "weir: one pool, shared cache, jemalloc",
            _ => "baseline: a thread per query, shared cache, glibc",
        };
        chart
            .draw_series(LineSeries::new(
                run.samples.iter().map(|s| (s.0, mib(s.1))),
                color.stroke_width(2),
            ))
            .map_err(|e| plot(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        // A dot where each iteration's query stopped (at its median RSS), a square
        // where the many queries started.
        chart
            .draw_series(run.all("stopping").iter().filter_map(|e| {
                let rss = run.median_before(e.t)?;
                Some(Circle::new((e.t, mib(rss)), 4, color.filled()))
            }))
            .map_err(|e| plot(&e))?;
        if let Ok(e) = run.one("many_start") {
            let y = run.peak_between(e.t - 0.5, e.t + 0.5);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (e.t - max_t / 300.0, mib(y) - max_y / 100.0),
                        (e.t + max_t / 300.0, mib(y) + max_y / 100.0),
                    ],
                    color.filled(),
                )))
                .map_err(|e| plot(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| plot(&e))?;
    root.present().map_err(|e| plot(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_and_events_parse() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS"), Some(1 << 20));
        assert_eq!(status_field(status, "VmHWM"), Some(2 << 20));
        assert_eq!(status_field(status, "Threads"), Some(7));
        assert_eq!(status_field(status, "VmSwap"), None);
        let e = parse_event("@iteration i=2 rss=300", 1.5).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.get("i"), e.get("rss"), e.t),
            ("iteration", 2, 300, 1.5)
        );
        assert!(parse_event("plain output", 0.0).is_none());
    }

    #[test]
    fn an_iteration_is_the_median_of_its_last_samples() {
        let run = ModeRun {
            name: "weir",
            samples: [(0.0, 900), (9.0, 100), (9.2, 300), (9.4, 200), (12.2, 50)]
                .map(|(t, rss)| (t, rss, 1))
                .to_vec(),
            events: Vec::new(),
        };
        // 0.0 is out of the window before 10.0; 12.2 is after it.
        assert_eq!(run.median_before(10.0), Some(200));
        assert_eq!(run.median_before(9.1), Some(100));
        assert_eq!(run.median_before(20.0), None);
        assert_eq!(run.peak_between(9.0, 12.2), 300);
    }

    #[test]
    fn params_round_trip_through_the_command_line() {
        let p = Params::parse(&["3".into(), "1000".into(), "5000".into(), "100".into()]);
        assert_eq!(
            (p.iterations, p.keys, p.records, p.value_bytes),
            (3, 1000, 5000, 100)
        );
        assert_eq!((p.many, p.many_secs, p.memory_limit), (100, 60, 1 << 30));
        let q = Params::parse(&p.to_args());
        assert_eq!(q.to_args(), p.to_args());
    }
}
