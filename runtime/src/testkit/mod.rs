//! Testing a topology without threads: [`TopologyTestDriver`], Kafka Streams' test
//! driver for weir.
//!
//! Why a driver and not a runtime in tests: a [`crate::Runtime`] runs tasks on a pool,
//! so a test must wait for output and cannot say *when* a window closes or a
//! punctuator fires. The driver runs the same tasks (built by the runtime's own
//! factory: the same operators, stores and planner) on the caller's thread: every
//! record piped in is processed completely, records written to repartition topics
//! included, before `pipe_input` returns; a commit follows every record; the record
//! cache is off; wall-clock time moves only by
//! [`TopologyTestDriver::advance_wall_clock_time`]. What passes here behaves the same on
//! the pool.

mod driver;
mod stores;
mod topics;

pub use driver::TopologyTestDriver;
pub use stores::{KeyValueStoreView, SessionStoreView, VersionedStoreView, WindowStoreView};
pub use topics::{TestInputTopic, TestOutputTopic};
