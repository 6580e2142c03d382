//! weir's gauges and counters for Prometheus, served on `http://127.0.0.1:9898/metrics`.
//!
//! The runtime reports through the `metrics` facade; any recorder collects it. Here
//! `metrics-exporter-prometheus` renders the Prometheus text format and a small HTTP
//! responder in this example serves it (no async runtime needed). A word count runs on
//! the in-process broker meanwhile, so the figures move.
//!
//! ```sh
//! cargo run --release -p weir-examples --example prometheus -- [--seconds 60] [--port 9898]
//! curl -s localhost:9898/metrics | grep weir_memory
//! ```
//!
//! What is there (all documented in ARCHITECTURE.md): `weir_memory_used_bytes{zone}`
//! and `weir_memory_limit_bytes{zone}` for every zone (`rocksdb`, `record_cache`,
//! `partition_queues`, `suppression`, `in_memory_stores`, `headroom`, and the `total`
//! limit), `weir_process_rss_bytes`, `weir_jemalloc_{allocated,active,resident,retained}_bytes`,
//! `weir_allocator_purges_total`, `weir_records_processed_total{query}`,
//! `weir_consumer_lag_records{query,topic,partition}`, per partition the queue depth
//! `weir_partition_queue_{records,bytes}{query,topic,partition}`, the total
//! `weir_queue_bytes`, `weir_partitions_paused`,
//! `weir_threads{kind}`, the RocksDB and record-cache gauges, and on Kafka the restore
//! progress and produce errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use weir::prelude::*;

// The process on jemalloc, RocksDB included (weir's `jemalloc` feature).
weir::use_jemalloc!();

fn arg(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::msg(format!("{name} needs a number"))),
    }
}

/// Answers `GET /metrics` with the rendered metrics, anything else with 404.
fn serve(listener: TcpListener, handle: PrometheusHandle) {
    for stream in listener.incoming().flatten() {
        let mut stream = stream;
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let response = if line.starts_with("GET /metrics") {
            let body = handle.render();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
        };
        let _ = stream.write_all(response.as_bytes());
    }
}

/// Scrapes `/metrics` once, as Prometheus would.
fn scrape(port: u64) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port as u16))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = arg(&args, "--seconds", 10)?;
    let port = arg(&args, "--port", 9898)?;

    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::msg(format!("cannot install the Prometheus recorder: {e}")))?;
    let listener = TcpListener::bind(("127.0.0.1", port as u16))
        .map_err(|e| Error::msg(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    std::thread::spawn(move || serve(listener, handle));
    println!("serving http://127.0.0.1:{port}/metrics for {seconds} s");

    let state_dir = std::env::temp_dir().join("weir-prometheus");
    let _ = std::fs::remove_dir_all(&state_dir);
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("prometheus")
            .memory_limit(256 << 20)
            .commit_interval(Duration::from_millis(500))
            .state_dir(&state_dir)
            .build()?,
    )?;
    let broker = runtime.broker().clone();
    broker.create_topic("lines", 2)?;
    broker.create_topic("word-counts", 2)?;
    let builder = StreamsBuilder::new();
    builder
        .stream::<(), String>("lines")
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word: &String| word.clone())
        .count_with(Materialized::as_("counts"))
        .to("word-counts");
    let query = runtime.start_query("word-count", builder.build()?)?;

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        let line = format!("record {n} of the weir example word {}", n % 1000);
        broker.send("lines", &(), &line)?;
        n += 1;
        if n.is_multiple_of(1000) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Gauges are published once a second: wait for a fresh set, then scrape.
    std::thread::sleep(Duration::from_millis(1100));
    let text = scrape(port).map_err(|e| Error::msg(format!("scraping /metrics: {e}")))?;
    println!("a scrape of /metrics after {n} lines (weir_memory_* lines):");
    for l in text
        .lines()
        .filter(|l| l.starts_with("weir_memory") || l.starts_with("weir_records_processed"))
    {
        println!("  {l}");
    }
    query.stop()?;
    println!("\n{}", runtime.memory_report());
    runtime.shutdown()
}
