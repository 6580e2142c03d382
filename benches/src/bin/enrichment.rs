//! W3 "enrichment" (issue 17; data and expected results in
//! `shared/notes/workloads.md`): `N` orders over `K` customer keys, left-joined with a
//! `K`-row customers table of 200-byte rows, RocksDB state, memory limit 512 MiB,
//! 2 workers.
//!
//! The `customers` topic (4 partitions, customer `c` at timestamp `c`) and the
//! `orders` topic (4 partitions, order `j` at timestamp `customers + j`, after every
//! row) are loaded into a disk-backed broker once, before any run, as Kafka would
//! hold them. Each run starts a fresh runtime and query (a new group: it reads both
//! from the start); each task processes its records in timestamp order, as Kafka
//! Streams does, so its customers before its orders. The clock runs from the first
//! order joined until every enriched order is in `enriched-<run>`: orders/s over the
//! order phase (a task still loading its table rows while another joins counts
//! against weir). The stop that follows is timed apart: its commit writes to RocksDB
//! the table rows the record cache still holds dirty, the preloaded table's cost,
//! not the orders' (with the default 30 s commit interval no commit falls inside the
//! order phase). Then the output is read back and checked: every order matched, and
//! the checksum (the first byte of each attached row, summed) equal to the reference
//! (637,561,335 at full scale). Prints orders/s, the record cache's hits and misses,
//! the stop's duration and peak RSS.
//!
//! The 512 MiB limit is split as a user would for a table read at random: a record
//! cache of 320 MiB that holds nearly all of the table's million rows, RocksDB 96 MiB,
//! 8 MiB each for suppression and in-memory stores (the query has neither).
//! `W3_ZONES=default` runs the runtime's default split instead (record cache 128 MiB,
//! RocksDB 192 MiB), where 60% of the orders miss the cache and read RocksDB.
//!
//! With `W3_ON_THE_FLY=1` (how the bench ran until 2026-12-07), each run instead waits
//! until the table is loaded, then appends the orders to a new topic, generated on
//! the fly in 1 MiB batches per partition, and the clock runs from the first append:
//! the generator then takes about a quarter of the two cores from the workers.
//!
//! `cargo run --release -p weir-benches --bin enrichment -- [orders=5000000] [customers=1000000] [runs=3]`

use std::time::{Duration, Instant};

use weir::RawRecord;
use weir::prelude::*;
use weir::serde::Bytes;
use weir_benches::{arg, fresh_dir, median, peak_rss_bytes, wait_processed};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The SplitMix64 step of the workload's definition.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Customer `c`'s 200-byte row.
fn customer_row(c: u64) -> Vec<u8> {
    let mut s = mix(c);
    let mut row = Vec::with_capacity(200);
    for _ in 0..25 {
        s = mix(s);
        row.extend_from_slice(&s.to_le_bytes());
    }
    row
}

/// Order `j` of `k` customers: (customer id, value = order id, amount, qty as 3 × u64).
fn order(j: u64, k: u64) -> (u64, Vec<u8>) {
    let h = mix(k + j);
    let h2 = mix(h);
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&j.to_be_bytes());
    v.extend_from_slice(&(h2 % 100_000).to_be_bytes());
    v.extend_from_slice(&(1 + (h2 >> 32) % 10).to_be_bytes());
    (h % k, v)
}

/// Appends `records` to `topic`, partitioned by key as Kafka's default partitioner
/// does, in batches of about 1 MiB per partition.
/// The `i`-th record gets timestamp `first_ts + i`.
fn append_all(
    broker: &Broker,
    topic: &str,
    first_ts: i64,
    records: impl Iterator<Item = (u64, Vec<u8>)>,
) -> Result<()> {
    let parts = broker.partitions(topic)?;
    let mut batches: Vec<(Vec<RawRecord>, usize)> = (0..parts).map(|_| (Vec::new(), 0)).collect();
    for (i, (key, value)) in records.enumerate() {
        let key = key.to_be_bytes();
        let p = weir::runtime::partition_for_key(&key, parts);
        let (batch, bytes) = &mut batches[p as usize];
        *bytes += value.len() + 8;
        batch.push(Record::new(
            Some(key.to_vec().into()),
            Some(value.into()),
            first_ts + i as i64,
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

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let orders: u64 = arg(&mut args, 5_000_000);
    let customers: u64 = arg(&mut args, 1_000_000);
    let runs: usize = arg(&mut args, 3);
    let memory_limit = 512usize << 20;
    // The limit's split, in MiB: the record cache large enough for the table, as a
    // Kafka Streams user gives a table read at random its cache
    // (`statestore.cache.max.bytes`), RocksDB less, no room for suppression buffers or
    // in-memory stores the query does not have. `W3_ZONES=default` keeps the runtime's
    // default split (record cache 128, RocksDB 192).
    let zones: Option<(usize, usize)> = match std::env::var("W3_ZONES").as_deref() {
        Ok("default") => None,
        _ => Some((320, 96)),
    };

    let data_dir = fresh_dir("weir-w3-broker");
    let broker = Broker::with_log_dir(&data_dir)?;
    broker.create_topic("customers", 4)?;
    append_all(
        &broker,
        "customers",
        0,
        (0..customers).map(|c| (c, customer_row(c))),
    )?;
    let on_the_fly = std::env::var("W3_ON_THE_FLY").is_ok_and(|v| v == "1");
    if !on_the_fly {
        broker.create_topic("orders", 4)?;
        append_all(
            &broker,
            "orders",
            customers as i64,
            (0..orders).map(|j| order(j, customers)),
        )?;
    }
    let expected_checksum: u64 = (0..orders)
        .map(|j| mix(mix(order(j, customers).0)) & 0xFF)
        .sum();
    let preload_rss = peak_rss_bytes().unwrap_or(0);

    let mut rates = Vec::new();
    // Orders/s counting the stop as well.
    let mut with_stop = Vec::new();
    for run in 0..runs {
        let orders_topic = if on_the_fly {
            format!("orders-{run}")
        } else {
            "orders".to_string()
        };
        let out_topic = format!("enriched-{run}");
        broker.create_topic(&orders_topic, 4)?;
        broker.create_topic(&out_topic, 4)?;
        let state_dir = fresh_dir(&format!("weir-w3-state-{run}"));
        let mut config = RuntimeConfig::builder()
            .workers(2)
            .memory_limit(memory_limit)
            .state_dir(&state_dir)
            .broker(broker.clone());
        if let Some((record_cache, rocksdb)) = zones {
            config = config
                .record_cache_bytes(record_cache << 20)
                .rocksdb_cache_bytes(rocksdb << 20)
                .suppression_buffer_bytes(8 << 20)
                .in_memory_store_bytes(8 << 20);
        }
        let runtime = Runtime::new(config.build()?)?;
        // When the first order was joined.
        let first = std::sync::Arc::new(std::sync::OnceLock::new());
        let first_join = first.clone();
        let builder = StreamsBuilder::new();
        let table = builder.table_with(
            "customers",
            Consumed::<u64, Bytes>::with(U64Serde, BytesSerde),
            Materialized::as_("customers"),
        );
        builder
            .stream_with(
                &[orders_topic.as_str()],
                Consumed::<u64, Bytes>::with(U64Serde, BytesSerde),
            )
            .left_join(&table, move |order: &Bytes, row: Option<&Bytes>| {
                first_join.get_or_init(Instant::now);
                let mut out = Vec::with_capacity(order.len() + 200);
                out.extend_from_slice(order);
                if let Some(row) = row {
                    out.extend_from_slice(row);
                }
                Bytes::from(out)
            })
            .to_with(
                &out_topic,
                Produced::<u64, Bytes>::with(U64Serde, BytesSerde),
            );
        let query = runtime.start_query(&format!("w3-{run}"), builder.build()?)?;
        let loading = Instant::now();
        let start = if on_the_fly {
            // Phase 1: the table; phase 2: the orders, appended now.
            wait_processed(&runtime, &query, customers)?;
            let start = Instant::now();
            append_all(
                &broker,
                &orders_topic,
                customers as i64,
                (0..orders).map(|j| order(j, customers)),
            )?;
            start
        } else {
            loading
        };
        wait_processed(&runtime, &query, customers + orders)?;
        // The order phase ends when the last enriched order is in the output topic.
        let parts = broker.partitions(&out_topic)?;
        while (0..parts)
            .map(|p| broker.end_offset(&out_topic, p))
            .sum::<Result<i64>>()?
            < orders as i64
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let end = Instant::now();
        let start = if on_the_fly {
            start
        } else {
            *first.get().expect("orders were joined")
        };
        let load_secs = (start - loading).as_secs_f64();
        // Where the bytes are at the end of the order phase, near the peak.
        println!("{}", runtime.memory_report());
        let cache = runtime.record_cache_stats();
        query.stop()?;
        let stop_secs = end.elapsed().as_secs_f64();
        let took = end - start;
        let rate = orders as f64 / took.as_secs_f64();
        // Check the output, a chunk at a time (reading it whole would dwarf the
        // runtime's own memory in the peak RSS).
        let (mut count, mut matched, mut checksum) = (0u64, 0u64, 0u64);
        for p in 0..broker.partitions(&out_topic)? {
            let mut offset = 0;
            loop {
                let chunk = broker.fetch(&out_topic, p, offset, 10_000, 16 << 20)?;
                let Some((last, _)) = chunk.last() else { break };
                offset = last + 1;
                for (_, r) in &chunk {
                    let v = r.value.as_deref().unwrap_or_default();
                    count += 1;
                    matched += u64::from(v.len() == 224);
                    checksum += v.get(24).map_or(0, |b| u64::from(*b));
                }
            }
        }
        let exact = count == orders && matched == orders && checksum == expected_checksum;
        println!(
            "run {run}: peak RSS so far {} MiB; first order joined {load_secs:.2} s after the start; {orders} orders in {:.2} s = {rate:.0} orders/s (record cache: {} hits, {} misses); then the stop (the final commit, writing the table rows still only in the record cache to RocksDB) took {stop_secs:.2} s; matched {matched}, unmatched {}, checksum {checksum} ({})",
            peak_rss_bytes().unwrap_or(0) >> 20,
            took.as_secs_f64(),
            cache.hits,
            cache.misses,
            count - matched,
            if exact {
                "EXACTLY the reference"
            } else {
                "WRONG"
            }
        );
        if !exact {
            return Err(Error::msg(format!(
                "W3 run {run}: expected {orders} matched orders with checksum {expected_checksum}"
            )));
        }
        rates.push(rate);
        with_stop.push(orders as f64 / (took.as_secs_f64() + stop_secs));
        runtime.shutdown()?;
        drop(runtime);
        // The run's topics (orders, output, the table's changelog) go, so a later run's
        // peak RSS does not carry this one's offset indexes.
        for t in broker.topics() {
            if t != "customers" && t != "orders" {
                broker.delete_topic(&t)?;
            }
        }
        let _ = std::fs::remove_dir_all(&state_dir);
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "W3 enrichment: {orders} orders, {customers} customers of 200 bytes, left join, memory limit {} MiB ({}), 2 workers, orders {}: median {:.0} orders/s over {runs} runs ({:.0} counting the stops); peak RSS {} MiB (after loading the broker: {} MiB); results exact in every run",
        memory_limit >> 20,
        match zones {
            Some((c, r)) => format!("record cache {c} MiB, RocksDB {r} MiB"),
            None => "default zones".to_string(),
        },
        if on_the_fly {
            "appended during the run"
        } else {
            "preloaded"
        },
        median(rates),
        median(with_stop),
        peak_rss_bytes().unwrap_or(0) >> 20,
        preload_rss >> 20
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
