//! Execution: the runtime, its queries and their tasks.

mod batch;
mod commit;
mod core;
pub(crate) mod driver;
mod factory;
mod global;
mod group;
mod input;
mod query;
pub(crate) mod runtime;
mod task;

pub use query::{QueryHandle, QueryState, QueryStats};
pub use runtime::Runtime;
