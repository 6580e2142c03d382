//! Shared helpers for weir's benchmarks: preloading topics and timing a query from
//! start until its output is complete; and the stop/start scenario ([`stop_start`]),
//! whose two binaries differ only in their allocator.

pub mod stop_start;

use std::time::{Duration, Instant};

use weir::prelude::*;
use weir::runtime::RawRecord;

/// Appends `n` records `(key = i % keys as u64, value = i as i64, timestamp = i)` to
/// `topic`, spread over its partitions by key like Kafka's default partitioner.
pub fn preload_u64_i64(broker: &Broker, topic: &str, n: u64, keys: u64) -> Result<()> {
    let parts = broker.partitions(topic)?;
    let mut batches: Vec<Vec<RawRecord>> = (0..parts).map(|_| Vec::new()).collect();
    for i in 0..n {
        let key = (i % keys).to_be_bytes();
        let p = weir::runtime::partition_for_key(&key, parts);
        batches[p as usize].push(Record::new(
            Some(key.to_vec().into()),
            Some((i as i64).to_be_bytes().to_vec().into()),
            i as i64,
        ));
        if batches[p as usize].len() == 64 * 1024 {
            broker.append(topic, p, batches[p as usize].drain(..))?;
        }
    }
    for (p, b) in batches.into_iter().enumerate() {
        broker.append(topic, p as u32, b)?;
    }
    Ok(())
}

/// Appends `records` records to `topic`: 8-byte big-endian keys uniform over `keys`
/// and `value_bytes`-byte values of random printable bytes (fixed seed, so every run
/// and every mode gets the same data; random, so RocksDB's compression does not
/// flatter the figures), spread over the partitions by key. Appended in batches of at
/// most 1 MiB per partition, so on a disk-backed broker the input sits in the page
/// cache and not in the process.
pub fn preload_random(
    broker: &Broker,
    topic: &str,
    records: u64,
    keys: u64,
    value_bytes: usize,
) -> Result<()> {
    let parts = broker.partitions(topic)?;
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    let mut batches: Vec<(Vec<RawRecord>, usize)> = (0..parts).map(|_| (Vec::new(), 0)).collect();
    for i in 0..records {
        let key = (next() % keys.max(1)).to_be_bytes();
        let mut value = vec![0u8; value_bytes];
        for chunk in value.chunks_mut(8) {
            let r = next().to_le_bytes();
            for (b, r) in chunk.iter_mut().zip(r) {
                *b = b'!' + r % 94;
            }
        }
        let p = weir::runtime::partition_for_key(&key, parts);
        let (batch, bytes) = &mut batches[p as usize];
        *bytes += value_bytes + key.len();
        batch.push(Record::new(
            Some(key.to_vec().into()),
            Some(value.into()),
            i as i64,
        ));
        if *bytes >= 1 << 20 {
            broker.append(topic, p, batch.drain(..))?;
            *bytes = 0;
        }
    }
    for (p, (b, _)) in batches.into_iter().enumerate() {
        broker.append(topic, p as u32, b)?;
    }
    Ok(())
}

/// Sum of the end offsets of every partition of `topic`.
pub fn topic_len(broker: &Broker, topic: &str) -> Result<i64> {
    let mut n = 0;
    for p in 0..broker.partitions(topic)? {
        n += broker.end_offset(topic, p)?;
    }
    Ok(n)
}

/// Waits until `topic` holds `n` records; returns the time it took from `start`.
pub fn wait_for_len(broker: &Broker, topic: &str, n: i64, start: Instant) -> Result<Duration> {
    let deadline = start + Duration::from_secs(600);
    loop {
        if topic_len(broker, topic)? >= n {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            return Err(Error::msg(format!(
                "timed out waiting for {n} records in {topic}"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until `query` has processed `total` records. Fails with the query's error if
/// it fails, or, after 30 s without progress, with the runtime's figures (so a stalled
/// run ends instead of hanging).
pub fn wait_processed(runtime: &Runtime, query: &QueryHandle, total: u64) -> Result<()> {
    let mut last = (0, Instant::now());
    while query.stats().records_processed < total {
        if let QueryState::Failed(e) = query.state() {
            return Err(e);
        }
        let done = query.stats().records_processed;
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return Err(Error::msg(format!(
                "query '{}' stalled at {done} of {total} records: queue bytes {:?}, record cache {:?}, suppression {:?}, rocksdb {:?}",
                query.name(),
                runtime.queue_bytes(),
                runtime.record_cache_stats(),
                runtime.suppression_bytes(),
                runtime.state_usage()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A fresh (emptied) directory `<tmp>/<name>-<pid>` for a bench's broker or state.
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A xorshift64 generator from `seed` (non-zero): fixed-seed bench data.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// The next command-line argument parsed as `T`, or `default` if it is missing or does
/// not parse.
pub fn arg<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, default: T) -> T {
    args.next().and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// The median of some measurements.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field(&status, "VmHWM")
}

/// `field` of a `/proc/<pid>/status` text: kB values in bytes, counts as they are.
pub fn status_field(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let mut parts = line[field.len() + 1..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    Some(if parts.next() == Some("kB") {
        n * 1024
    } else {
        n
    })
}
