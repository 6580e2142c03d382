//! The Processor API: what every DSL operator compiles into, and what users write when
//! the DSL is not enough.
//!
//! A [`Processor`] receives typed records and forwards typed records to its children
//! through a [`ProcessorContext`], which also exposes the current record's coordinates,
//! the task's stream time, and punctuation scheduling — the shape of Kafka Streams'
//! `api.Processor`. One processor instance exists per task (sub-topology × partition)
//! and is only ever called by one worker at a time, so it needs `Send` but not `Sync`.
//!
//! Punctuators run on the worker pool like everything else: stream-time ones when a
//! record advances the task's stream time past the schedule, wall-clock ones when the
//! runtime's I/O thread wakes the task at the deadline. There is no timer thread per
//! query.

mod context;
mod ext;
pub(crate) mod internals;
mod stores;
mod versioned;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::record::Record;

pub use context::ProcessorContext;
#[doc(hidden)]
pub use ext::{InternalContext, InternalForwardContext, InternalWindowedContext};
pub use stores::{SessionStoreHandle, StoreHandle, WindowStoreHandle};
pub use versioned::{VersionedRecord, VersionedStoreHandle};

/// A node's index in its topology (and in every task's node arena).
pub type NodeId = usize;

/// Types that can flow between processors: cloned when a processor has several
/// children, moved between workers between batches.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// What drives a punctuator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// The task's stream time (the largest record timestamp it has processed).
    StreamTime,
    /// The system clock.
    WallClockTime,
}

/// Identifies a scheduled punctuator, so a processor with several can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PunctuatorId(pub(crate) u64);

/// One firing of a punctuator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Punctuation {
    /// Which punctuator.
    pub id: PunctuatorId,
    /// Stream time or wall clock.
    pub kind: PunctuationType,
    /// The stream time or wall-clock time (ms) it fired at.
    pub timestamp: i64,
}

/// Returned by [`ProcessorContext::schedule`]; cancels the punctuator.
#[derive(Debug, Clone)]
pub struct Cancellable {
    id: PunctuatorId,
    cancelled: Arc<AtomicBool>,
}

impl Cancellable {
    /// Stops the punctuator; it does not fire again.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// The punctuator's id, as passed to [`Processor::punctuate`].
    pub fn id(&self) -> PunctuatorId {
        self.id
    }
}

/// A record processor. `KIn`/`VIn` are what it receives, `KOut`/`VOut` what it forwards.
pub trait Processor<KIn, VIn, KOut, VOut>: Send + 'static {
    /// Called once when the task is created, before any record.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Processes one record.
    fn process(
        &mut self,
        record: Record<KIn, VIn>,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
    ) -> Result<()>;

    /// Called when a punctuator scheduled by this processor fires.
    fn punctuate(
        &mut self,
        punctuation: &Punctuation,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
    ) -> Result<()> {
        let _ = (punctuation, ctx);
        Ok(())
    }

    /// Called at every commit, before the task's stores are flushed and its offsets
    /// committed: write out anything the processor holds outside its stores (a
    /// suppression buffer writes its changes to its store here). Changes it makes to
    /// cached stores are written in the same commit.
    fn flush(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Called once when the task closes (query stopped or failed).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A change to a table row: the new value and the one it replaced (`None` = absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    /// The value now (`None`: the row was deleted).
    pub new: Option<V>,
    /// The value before (`None`: the row is new).
    pub old: Option<V>,
}

/// A task's id: which sub-topology, which partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// Sub-topology index.
    pub subtopology: usize,
    /// Partition number.
    pub partition: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}
