//! The `metrics` facade's gauges and counters under their documented names, read back
//! through a Prometheus recorder (as the `prometheus` example serves them): every memory
//! zone and its bound, a partition's queue depth and lag, threads and records processed.
//! Its own binary: the recorder is process-wide.

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use weir::prelude::*;

/// The value of the series `name` whose labels include `labels`, in Prometheus' text
/// format.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse().ok()).flatten()
        })
}

/// Renders until `what` holds of the text (the I/O thread publishes once a second).
fn wait_for(handle: &PrometheusHandle, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = handle.render();
        if ok(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {what} in 30 s:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gauges_cover_zones_queues_lag_threads_and_records() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let limit = 256 << 20;
    let rt = Runtime::new(
        RuntimeConfig::builder()
            .workers(2)
            .memory_limit(limit)
            .state_dir(dir.path())
            .build()
            .unwrap(),
    )
    .unwrap();
    let broker = rt.broker().clone();
    broker.create_topic("m-in", 1).unwrap();
    broker.create_topic("m-out", 1).unwrap();
    for i in 0..5000i64 {
        broker.send("m-in", &format!("k{i}"), &i).unwrap();
    }
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("m-in")
        .map_values(|v: i64| {
            std::thread::sleep(Duration::from_millis(2));
            v
        })
        .to("m-out");
    let q = rt.start_query("slow", b.build().unwrap()).unwrap();
    let partition = [("query", "slow"), ("topic", "m-in"), ("partition", "0")];

    // A slow query: records wait in its partition queue, and it lags.
    let text = wait_for(&handle, "queue depth and lag", |t| {
        sample(t, "weir_partition_queue_records", &partition).is_some_and(|n| n > 0.0)
            && sample(t, "weir_partition_queue_bytes", &partition).is_some_and(|n| n > 0.0)
            && sample(t, "weir_consumer_lag_records", &partition).is_some_and(|n| n > 1000.0)
    });

    // Every zone with its bound, as the report has them; the total is the limit.
    let report = rt.memory_report();
    for z in &report.zones {
        let zone = [("zone", z.zone)];
        assert_eq!(
            sample(&text, "weir_memory_limit_bytes", &zone),
            Some(z.bound as f64),
            "{}",
            z.zone
        );
        assert!(
            sample(&text, "weir_memory_used_bytes", &zone).is_some(),
            "{}",
            z.zone
        );
    }
    assert!(report.zones.iter().any(|z| z.zone == "partition_queues"));
    assert_eq!(
        sample(&text, "weir_memory_limit_bytes", &[("zone", "total")]),
        Some(limit as f64)
    );
    assert_eq!(
        sample(&text, "weir_memory_limit_bytes", &[("zone", "headroom")]),
        Some(report.headroom as f64)
    );
    // The queue zone holds what waits in the partition queue.
    assert!(
        sample(
            &text,
            "weir_memory_used_bytes",
            &[("zone", "partition_queues")]
        )
        .is_some_and(|n| n > 0.0)
    );
    assert!(sample(&text, "weir_process_rss_bytes", &[]).is_some_and(|n| n > 0.0));
    #[cfg(feature = "jemalloc")]
    for name in [
        "weir_jemalloc_allocated_bytes",
        "weir_jemalloc_active_bytes",
        "weir_jemalloc_resident_bytes",
        "weir_jemalloc_retained_bytes",
    ] {
        assert!(sample(&text, name, &[]).is_some_and(|n| n > 0.0), "{name}");
    }
    assert_eq!(
        sample(&text, "weir_threads", &[("kind", "worker")]),
        Some(2.0)
    );
    assert_eq!(sample(&text, "weir_threads", &[("kind", "io")]), Some(1.0));
    let processed = wait_for(&handle, "records processed", |t| {
        sample(t, "weir_records_processed_total", &[("query", "slow")]).is_some_and(|n| n > 0.0)
    });
    assert!(
        sample(
            &processed,
            "weir_records_processed_total",
            &[("query", "slow")]
        )
        .is_some_and(|n| n < 5000.0)
    );

    // Stopped with records still queued: its partition's gauges drop to zero instead of
    // keeping their last figures.
    q.stop().unwrap();
    wait_for(&handle, "zeroed partition gauges", |t| {
        sample(t, "weir_partition_queue_records", &partition) == Some(0.0)
            && sample(t, "weir_partition_queue_bytes", &partition) == Some(0.0)
            && sample(t, "weir_consumer_lag_records", &partition) == Some(0.0)
    });
    assert!(q.stats().records_processed < 5000);
    rt.shutdown().unwrap();
}
