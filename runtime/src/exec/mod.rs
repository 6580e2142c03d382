//! Execution: the runtime, its queries and their tasks.

pub(crate) mod runtime;
pub(crate) mod task;
