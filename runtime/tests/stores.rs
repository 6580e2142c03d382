//! State stores: both implementations against a model, the shared RocksDB cache, and the
//! in-memory store's budget.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use weir_runtime::internals::ByteBudget;
use weir_runtime::internals::state::{BatchEntry, InMemoryStore, KeyValueStore, StateEnv};
use weir_runtime::{Error, StateConfig};

fn env() -> StateEnv {
    StateEnv::new(64 << 20, 16 << 20, 2, 64).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Get(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
    Prefix(Vec<u8>),
    Flush,
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet with 0x00 and 0xff, so ranges and prefix ends hit their edges.
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1u8), Just(0x7f), Just(0xff)],
        0..4,
    )
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    // Some values of 2 KiB and more, which RocksDB keeps in blob files once flushed.
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..32),
        1 => (any::<u8>(), 2048..5000usize).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        1 => proptest::collection::vec((key(), proptest::option::of(value())), 0..6).prop_map(Op::Batch),
        2 => key().prop_map(Op::Get),
        1 => (key(), key()).prop_map(|(a, b)| Op::Range(a, b)),
        1 => key().prop_map(Op::Prefix),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn model_range(m: &BTreeMap<Vec<u8>, Vec<u8>>, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter()
        .filter(|(k, _)| k.as_slice() >= from && k.as_slice() < to)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check(
    store: &mut dyn KeyValueStore,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    op: &Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::Put(k, v) => {
            store.put(k, v).unwrap();
            model.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            store.delete(k).unwrap();
            model.remove(k);
        }
        Op::Batch(entries) => {
            let batch: Vec<BatchEntry<'_>> = entries
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            store.write_batch(&batch).unwrap();
            for (k, v) in entries {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
        }
        Op::Get(k) => prop_assert_eq!(store.get(k).unwrap(), model.get(k).cloned()),
        Op::Range(a, b) => {
            let want = model_range(model, a, b);
            prop_assert_eq!(store.first(a, b).unwrap(), want.first().cloned());
            prop_assert_eq!(store.last(a, b).unwrap(), want.last().cloned());
            prop_assert_eq!(store.range(a, b).unwrap(), want);
        }
        Op::Prefix(p) => {
            let want: Vec<_> = model
                .iter()
                .filter(|(k, _)| k.starts_with(p))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            prop_assert_eq!(store.prefix_scan(p).unwrap(), want);
        }
        Op::Flush => store.flush().unwrap(),
        Op::Reopen => {}
    }
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    prop_assert_eq!(store.all().unwrap(), all);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// RocksDB store = BTreeMap, across flushes and reopening the same directory.
    #[test]
    fn rocksdb_store_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let env = env();
        let mut store = env.open_store("s", dir.path()).unwrap();
        let mut model = BTreeMap::new();
        for op in &ops {
            if matches!(op, Op::Reopen) {
                // What was written before a flush or a clean close must survive.
                store.flush().unwrap();
                drop(store);
                store = env.open_store("s", dir.path()).unwrap();
            }
            check(&mut store, &mut model, op)?;
        }
    }

    /// In-memory store = BTreeMap, and its charge equals what it holds.
    #[test]
    fn in_memory_store_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        let budget = Arc::new(ByteBudget::new(1 << 20));
        let mut store = InMemoryStore::new("m", budget.clone());
        let mut model = BTreeMap::new();
        for op in &ops {
            check(&mut store, &mut model, op)?;
            let held: usize = model.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
            prop_assert_eq!(store.charged_bytes(), held);
            prop_assert_eq!(budget.used(), held);
        }
        drop(store);
        prop_assert_eq!(budget.used(), 0);
    }
}

#[test]
fn fifty_stores_share_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = 32 << 20;
    let env = StateEnv::new(cache, 8 << 20, 2, 64).unwrap();
    let mut stores: Vec<_> = (0..50)
        .map(|i| {
            env.open_store(&format!("s{i}"), &dir.path().join(format!("s{i}")))
                .unwrap()
        })
        .collect();
    let value = vec![7u8; 1024];
    for s in &mut stores {
        for k in 0..500u32 {
            s.put(&k.to_be_bytes(), &value).unwrap();
        }
    }
    let before_flush = env.usage();
    assert!(
        before_flush.memtable_bytes > 0,
        "memtables are counted: {before_flush:?}"
    );
    // Without stalling, the manager can run over its bound by what instances wrote
    // since their last flush; 50 memtables of at most 1 MiB each bound that.
    assert!(
        before_flush.memtable_bytes <= before_flush.memtable_limit + 50 * (1 << 20),
        "{before_flush:?}"
    );
    for s in &mut stores {
        s.flush().unwrap();
    }
    for s in &stores {
        for k in (0..500u32).step_by(7) {
            assert_eq!(
                s.get(&k.to_be_bytes()).unwrap().as_deref(),
                Some(&value[..])
            );
        }
    }
    let usage = env.usage();
    assert_eq!(usage.open_stores, 50);
    assert_eq!(usage.cache_capacity, cache);
    assert!(usage.cache_usage > 0);
    assert!(usage.cache_usage <= cache, "{usage:?}");
    // Every instance reports the same cache: one capacity, one usage.
    let capacities: Vec<u64> = stores
        .iter()
        .map(|s| s.property("rocksdb.block-cache-capacity").unwrap())
        .collect();
    assert!(
        capacities.iter().all(|c| *c == cache as u64),
        "{capacities:?}"
    );
    let usages: Vec<u64> = stores
        .iter()
        .map(|s| s.property("rocksdb.block-cache-usage").unwrap())
        .collect();
    let (lo, hi) = (usages.iter().min().unwrap(), usages.iter().max().unwrap());
    // Background work may move the shared figure a little while we read 50 of them.
    assert!(hi - lo <= (1 << 20), "one shared usage, not 50: {lo}..{hi}");
    assert!(*lo > 0);
    println!("50 stores: {usage:?}");
}

#[test]
fn in_memory_store_refuses_past_its_budget_and_changes_nothing() {
    let budget = Arc::new(ByteBudget::new(1000));
    let mut store = InMemoryStore::new("small", budget.clone());
    store.put(b"a", &[0u8; 500]).unwrap();
    let err = store.put(b"b", &[0u8; 500]).unwrap_err();
    assert!(
        matches!(&err, Error::StateBudget { store, cap: 1000, .. } if store == "small"),
        "{err:?}"
    );
    assert!(err.to_string().contains("state budget"), "{err}");
    assert_eq!(store.get(b"b").unwrap(), None);
    let big = [0u8; 300];
    let batch: Vec<BatchEntry<'_>> = vec![(b"c", Some(&big)), (b"d", Some(&big))];
    assert!(store.write_batch(&batch).is_err());
    assert_eq!(
        store.all().unwrap().len(),
        1,
        "a refused batch writes nothing"
    );
    // Shrinking and deleting give bytes back.
    store.put(b"a", &[0u8; 10]).unwrap();
    store.put(b"b", &[0u8; 500]).unwrap();
    store.delete(b"a").unwrap();
    assert_eq!(budget.used(), 1 + 500 + 48);
    drop(store);
    assert_eq!(budget.used(), 0);
}

#[test]
fn bad_state_settings_are_refused() {
    assert!(
        StateEnv::new(1 << 20, 2 << 20, 1, 64).is_err(),
        "memtables larger than the cache"
    );
    assert!(StateEnv::new(1 << 20, 0, 1, 64).is_err());
    assert!(StateEnv::new(4 << 20, 1 << 20, 0, 64).is_err());
    assert!(StateEnv::new(4 << 20, 1 << 20, 1, 4).is_err());
}

/// A strict cache refuses to go over its capacity: when memtable reservations of the
/// write buffer manager pin the whole cache, a read that must cache a data block fails
/// with a store error (and succeeds again once memtables are flushed). Without the
/// strict limit, the same reads succeed by overcommitting the cache.
#[test]
fn a_strict_cache_fails_reads_instead_of_overcommitting() {
    for strict in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // One cache shard (RocksDB shards caches of 1 MiB and more) with room for two
        // of the write buffer manager's 256 KiB reservations and little else.
        let cap = (512 + 4) << 10;
        let env = StateEnv::from_config(&StateConfig {
            rocksdb_cache_bytes: cap,
            rocksdb_memtable_bytes: 512 << 10,
            rocksdb_background_threads: 1,
            rocksdb_max_open_files: 64,
            rocksdb_strict_capacity: strict,
            record_cache_bytes: 0,
            in_memory_store_bytes: 0,
            suppression_buffer_bytes: 0,
        })
        .unwrap();
        // A flushed store: its reads need data blocks from the cache.
        let mut cold = env.open_store("cold", &dir.path().join("cold")).unwrap();
        let value = vec![3u8; 100];
        for k in 0..2000u32 {
            cold.put(&k.to_be_bytes(), &value).unwrap();
        }
        cold.flush().unwrap();
        // Unflushed memtables in four other stores, past one reservation and under the
        // flush trigger (7/8 of the memtable budget): two reservations pin the cache.
        let mut hot: Vec<_> = (0..4)
            .map(|i| {
                env.open_store(&format!("hot{i}"), &dir.path().join(format!("hot{i}")))
                    .unwrap()
            })
            .collect();
        let mut k = 0u32;
        while env.usage().memtable_bytes < 300 << 10 {
            hot[(k % 4) as usize].put(&k.to_be_bytes(), &value).unwrap();
            k += 1;
        }
        let pinned = env.usage();
        let reads: Vec<_> = (0..2000u32).map(|k| cold.get(&k.to_be_bytes())).collect();
        let failed: Vec<_> = reads.iter().filter_map(|r| r.as_ref().err()).collect();
        let after = env.usage();
        eprintln!(
            "strict={strict}: {pinned:?} -> {after:?}, {} of 2000 reads failed",
            failed.len()
        );
        if strict {
            assert!(!failed.is_empty(), "{pinned:?}");
            assert!(after.cache_usage <= cap, "{after:?}");
            let e = failed[0].to_string();
            assert!(e.contains("cold") && e.contains("cache"), "{e}");
            // Flushing the memtables releases their reservations: reads work again.
            for h in &mut hot {
                h.flush().unwrap();
            }
            assert_eq!(
                cold.get(&7u32.to_be_bytes()).unwrap().as_deref(),
                Some(&value[..])
            );
        } else {
            assert!(failed.is_empty(), "{failed:?}");
        }
    }
}

/// Large values live in blob files once flushed, so compactions do not rewrite them;
/// they read back the same, also after reopening.
#[test]
fn large_values_go_to_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let env = env();
    let mut store = env.open_store("big", dir.path()).unwrap();
    let big = vec![9u8; 4096];
    store.put(b"big", &big).unwrap();
    store.put(b"small", b"v").unwrap();
    store.flush().unwrap();
    let blobs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "blob")
        })
        .count();
    assert_eq!(blobs, 1, "one blob file after one flush");
    drop(store);
    let store = env.open_store("big", dir.path()).unwrap();
    assert_eq!(store.get(b"big").unwrap(), Some(big));
    assert_eq!(store.get(b"small").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Values read back from blob files are cached, and charged, in the shared cache: the
/// cache is RocksDB's blob cache too, so reads of large values are bounded by the one
/// RocksDB zone and a second read does not go to the file.
#[test]
fn large_values_read_back_are_charged_to_the_shared_cache() {
    let dir = tempfile::tempdir().unwrap();
    let env = env();
    let mut store = env.open_store("big", dir.path()).unwrap();
    let n = 2000u32;
    for i in 0..n {
        store.put(&i.to_be_bytes(), &vec![i as u8; 5000]).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    // Reopened: nothing of the values is in the cache yet (the memtables are gone).
    let store = env.open_store("big", dir.path()).unwrap();
    let before = env.usage().cache_usage;
    for i in 0..n {
        let v = store.get(&i.to_be_bytes()).unwrap().unwrap();
        assert_eq!(v.len(), 5000);
        assert!(v.iter().all(|&b| b == i as u8));
    }
    let after = env.usage().cache_usage;
    let values = n as usize * 5000;
    assert!(
        after >= before + values * 9 / 10,
        "reading {values} bytes of blob values grew the cache from {before} to {after}"
    );
    assert!(
        after <= env.usage().cache_capacity + (1 << 20),
        "the cache stays within its capacity: {after}"
    );
}

#[test]
fn a_store_counts_as_open_until_its_close_has_finished() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let query = dir.path().join("q");
    let path = query.join("0_0").join("s");
    let mut store = env.open_store("s", &path).unwrap();
    // Unflushed writes (the WAL is off): closing the instance flushes them, writing
    // files in its directory after the last handle is gone.
    for i in 0..100_000u32 {
        store.put(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    assert!(env.any_open_under(&query));
    assert!(!env.any_open_under(&dir.path().join("q2")));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let closing = barrier.clone();
    let closer = std::thread::spawn(move || {
        closing.wait();
        drop(store);
    });
    barrier.wait();
    while env.any_open_under(&query) {
        std::thread::yield_now();
    }
    // Closed for good the moment it no longer counts: the directory opens again at once
    // (RocksDB's lock is released) and holds every write.
    let reopened = env.open_store("s", &path).unwrap();
    assert_eq!(
        reopened.get(&99_999u32.to_be_bytes()).unwrap(),
        Some(vec![99_999u32 as u8; 100])
    );
    assert_eq!(reopened.all().unwrap().len(), 100_000);
    closer.join().unwrap();
}
