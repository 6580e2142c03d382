//! Global tasks: the one task per global store of a query, started before the others.
//!
//! A global store (`Topology::add_global_store`) is fed by a task reading every
//! partition of its topic, in every process, outside the consumer group. Before the
//! query's other tasks exist, that task reads its topic to the end as it is when the
//! query starts (from where its offsets file says, else the start), on the caller's
//! thread, so no record of the query is joined against a store still loading — Kafka
//! Streams' global state restore before `KafkaStreams#start` returns. Then it is
//! scheduled like any task, its partitions bound to the I/O thread, and it follows
//! the topic on the pool.

use std::sync::Arc;
use std::time::Duration;

use super::core::RuntimeCore;
use super::factory::{BuiltTask, Factory};
use super::query::QueryShared;
use crate::error::Result;
use crate::io::transport::Binding;

impl Factory<'_> {
    /// Builds the global tasks of `query` and brings each store up to its topic's end.
    pub(crate) fn build_global_tasks(&self, query: &QueryShared) -> Result<Vec<BuiltTask>> {
        let mut built: Vec<BuiltTask> = Vec::new();
        for si in (0..query.plan.subs.len()).filter(|&si| query.plan.is_global(si)) {
            let result = self.build_task(query, si, 0, None).and_then(|b| match b {
                Some(mut b) => self.bootstrap(query, &mut b).map(|()| Some(b)),
                None => Ok(None),
            });
            match result {
                Ok(Some(b)) => built.push(b),
                Ok(None) => {}
                Err(e) => {
                    for mut b in built {
                        b.inner.close_all();
                    }
                    return Err(e);
                }
            }
        }
        Ok(built)
    }

    /// Reads each partition of a global task from where it starts to its end now,
    /// running every record through the task, then commits (its offsets file).
    fn bootstrap(&self, query: &QueryShared, built: &mut BuiltTask) -> Result<()> {
        let inner = &mut built.inner;
        let mut total = 0u64;
        for (i, feed) in built.feeds.iter_mut().enumerate() {
            let topic = inner.inputs[i].topic.clone();
            let partition = inner.inputs[i].partition;
            let from = feed.2;
            let read = self
                .transport
                .read_to_end(&topic, partition, from, &mut |batch| {
                    // Straight into the task's claimed batches: these records were
                    // never charged to the queue, so nothing is released for them.
                    inner.inputs[i].local.push_back(batch);
                    while inner.inputs[i].local_records() > 0 {
                        let n = inner.process(usize::MAX, Duration::MAX)?;
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    inner.inputs[i].release_records = 0;
                    inner.inputs[i].release_bytes = 0;
                    Ok(())
                });
            let next = match read {
                Ok(next) => next,
                Err(e) => {
                    inner.close_all();
                    return Err(e);
                }
            };
            // Past transaction markers too: the next record is read from there.
            let input = &mut inner.inputs[i];
            if input.consumed.or(input.committed).is_none_or(|c| c < next) {
                input.consumed = Some(next);
            }
            feed.2 = next;
        }
        if let Err(e) = inner.commit("") {
            inner.close_all();
            return Err(e);
        }
        query
            .restored
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        if total > 0 {
            log::info!(
                "query '{}': global task {} loaded {total} records before the query's other tasks started",
                query.name,
                built.id
            );
        }
        Ok(())
    }
}

impl RuntimeCore {
    /// Builds, loads and schedules the global tasks of `query`; returns their
    /// bindings.
    pub(super) fn start_global_tasks(
        self: &Arc<Self>,
        query: &Arc<QueryShared>,
    ) -> Result<Vec<Binding>> {
        let built = self.factory().build_global_tasks(query)?;
        let mut bindings = Vec::new();
        for b in built {
            bindings.extend(self.launch(query, b));
        }
        Ok(bindings)
    }
}
