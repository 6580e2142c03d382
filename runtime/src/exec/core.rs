//! The runtime's core: what every task shares (the pool and its run queue, the I/O
//! thread's channels, the transport, the zones' handles).
//!
//! Fairness: runnable tasks wait in one FIFO run queue (a crossbeam channel). Each
//! enqueue spawns one rayon job that pops the *oldest* runnable task and runs one batch.
//! A task that yields with work left goes to the back. (Spawning the task itself would
//! let rayon's LIFO local deque run a self-re-spawning task again at once.)

use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender};

use super::group::Group;
use super::task::Task;
use crate::config::RuntimeConfig;
use crate::error::Result;
use crate::io::thread::{IoCommand, IoStats};
use crate::io::transport::{Transaction, Transport};
use crate::memory::{Account, ByteBudget, Zone, Zones};
use crate::state::{RecordCache, StateEnv};
use crate::sync::Mutex;

/// What the tasks share: configuration, the pool and its run queue, the I/O thread.
pub(crate) struct RuntimeCore {
    pub(crate) config: RuntimeConfig,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) runq_tx: Sender<Arc<Task>>,
    pub(crate) runq_rx: Receiver<Arc<Task>>,
    pub(crate) io_tx: Sender<IoCommand>,
    pub(crate) io_wake: Sender<()>,
    pub(crate) io_stats: Arc<IoStats>,
    /// The memory zones' accounts (RocksDB, record cache, partition queues,
    /// suppression buffers, in-memory stores).
    pub(crate) zones: ZoneHandles,
    /// Where records come from and go to: the in-process broker or Kafka.
    pub(crate) transport: Arc<dyn Transport>,
    /// The queries in the consumer group (a grouped transport: Kafka).
    pub(crate) group: Mutex<Group>,
}

impl RuntimeCore {
    /// Exactly-once: the runtime's transaction.
    pub(crate) fn txn(&self) -> Option<&dyn Transaction> {
        self.transport.transaction()
    }

    pub(crate) fn enqueue(&self, task: Arc<Task>) {
        // Unbounded and never closed while `self` lives.
        let _ = self.runq_tx.send(task);
        let rx = self.runq_rx.clone();
        self.pool.spawn(move || {
            if let Ok(task) = rx.try_recv() {
                task.run();
            }
        });
    }

    pub(crate) fn wake_io(&self) {
        let _ = self.io_wake.try_send(());
    }

    pub(crate) fn wake_at(&self, at_ms: i64, task: Weak<Task>) {
        let _ = self.io_tx.send(IoCommand::WakeAt { at_ms, task });
    }
}

/// What holds each zone's bytes, as the runtime uses them; the memory room sees the
/// same as one account per zone (`accounts`).
pub(crate) struct ZoneHandles {
    pub(crate) state: StateEnv,
    pub(crate) record_cache: Arc<RecordCache>,
    pub(crate) queues: Arc<ByteBudget>,
    pub(crate) suppression: Arc<ByteBudget>,
    pub(crate) in_memory: Arc<ByteBudget>,
    pub(crate) accounts: Zones,
}

impl ZoneHandles {
    pub(crate) fn new(config: &RuntimeConfig) -> Result<Self> {
        let sc = &config.state;
        let state = StateEnv::from_config(sc)?;
        let record_cache = RecordCache::new(sc.record_cache_bytes);
        let queues = Arc::new(ByteBudget::new(config.queue_max_bytes));
        let suppression = Arc::new(ByteBudget::new(sc.suppression_buffer_bytes));
        let in_memory = Arc::new(ByteBudget::new(sc.in_memory_store_bytes));
        let accounts = Zones::new(
            config.memory_limit,
            vec![
                (Zone::RocksDb, Arc::new(state.clone()) as Arc<dyn Account>),
                (Zone::RecordCache, record_cache.clone()),
                (Zone::PartitionQueues, queues.clone()),
                (Zone::Suppression, suppression.clone()),
                (Zone::InMemoryStores, in_memory.clone()),
            ],
        );
        Ok(ZoneHandles {
            state,
            record_cache,
            queues,
            suppression,
            in_memory,
            accounts,
        })
    }
}
