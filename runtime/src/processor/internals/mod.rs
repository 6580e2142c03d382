//! The engine's side of the Processor API: a task's node arena and dispatch
//! (`core.rs`) and the erased nodes (`node.rs`), as Kafka Streams keeps them in
//! `processor/internals`. Not part of the public API.

pub(crate) mod core;
pub(crate) mod errors;
pub(crate) mod node;
pub(crate) mod task_metrics;

pub(crate) use core::{Clock, Forwarder, PunctuatorEntry, TaskCore, TaskEnv};
pub(crate) use errors::{ErrorPolicy, panic_message};
pub(crate) use node::{Node, NodeId, NodeKind, ProcessorNode, StoreSerdes, take_input};
pub(crate) use task_metrics::TaskMetrics;
