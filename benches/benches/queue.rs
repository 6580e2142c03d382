//! Partition queue operations: push, claim, release, single-threaded and across a
//! producer and a consumer thread (the fetcher and a task).
//!
//! `cargo bench -p weir-benches --bench queue`

use std::collections::VecDeque;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::runtime::internals::queue::{ByteBudget, PartitionQueue, QueueItem};

/// A fetch batch of `records` records and `bytes` bytes, as the runtime queues them.
struct Batch {
    records: usize,
    bytes: usize,
}

impl QueueItem for Batch {
    fn size_bytes(&self) -> usize {
        self.bytes
    }
    fn records(&self) -> usize {
        self.records
    }
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/single-thread");
    for records in [1usize, 1024] {
        g.throughput(Throughput::Elements(records as u64));
        g.bench_function(format!("push-claim-release/{records}-record items"), |b| {
            let budget = Arc::new(ByteBudget::new(64 << 20));
            let q = PartitionQueue::new(1 << 20, budget);
            let mut out = VecDeque::new();
            b.iter(|| {
                q.try_push(Batch {
                    records,
                    bytes: records * 100,
                })
                .ok()
                .unwrap();
                q.claim(usize::MAX, &mut out);
                let b = out.pop_front().unwrap();
                q.release(b.records, b.bytes);
            });
        });
    }
    g.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/two-threads");
    const ITEMS: usize = 100_000;
    const PER_ITEM: usize = 64;
    g.throughput(Throughput::Elements((ITEMS * PER_ITEM) as u64));
    g.sample_size(10);
    g.bench_function("fetcher->task, 64-record batches, cap 1000 records", |b| {
        b.iter(|| {
            let budget = Arc::new(ByteBudget::new(1 << 20));
            let q = Arc::new(PartitionQueue::new(1000, budget));
            let producer = {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut item = Some(Batch {
                        records: PER_ITEM,
                        bytes: PER_ITEM * 100,
                    });
                    let mut pushed = 0;
                    while pushed < ITEMS {
                        match q.try_push(item.take().unwrap()) {
                            Ok(()) => {
                                pushed += 1;
                                item = Some(Batch {
                                    records: PER_ITEM,
                                    bytes: PER_ITEM * 100,
                                });
                            }
                            Err(e) => {
                                item = Some(e.into_inner());
                                std::hint::spin_loop();
                            }
                        }
                    }
                })
            };
            let mut out = VecDeque::new();
            let mut got = 0;
            while got < ITEMS {
                q.claim(usize::MAX, &mut out);
                for b in out.drain(..) {
                    q.release(b.records, b.bytes);
                    got += 1;
                }
            }
            producer.join().unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
