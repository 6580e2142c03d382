//! Memory: where the one limit is divided and enforced.
//!
//! The limit ([`RuntimeConfigBuilder::memory_limit`](crate::RuntimeConfigBuilder)) is
//! divided into [`Zone`]s (`zone.rs`, the one list of them), each under a bound of
//! its own; `RuntimeConfigBuilder::build` refuses bounds that add up past the limit.
//! A zone's bound is enforced where its bytes are taken: a [`ByteBudget`]
//! (`budget.rs`) for the partition queues, suppression buffers and in-memory stores;
//! the record cache's own budget and RocksDB's shared cache (in the state room) for
//! the other two. [`Zones`](zones::Zones) owns every zone's account and builds the
//! [`MemoryReport`] (`report.rs`). What no zone owns lives in the headroom; jemalloc
//! (`allocator.rs`) returns freed memory to the OS, and the I/O thread purges it at
//! once when the RSS nears the limit (`pressure.rs`).

pub(crate) mod allocator;
mod budget;
pub(crate) mod pressure;
pub(crate) mod report;
mod zone;
pub(crate) mod zones;

pub use budget::ByteBudget;
pub use zone::Zone;
pub(crate) use zones::{Account, Zones};
