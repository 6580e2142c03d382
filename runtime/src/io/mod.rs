//! I/O: the in-process broker, Kafka, partition queues and the I/O thread.

pub mod broker;
pub(crate) mod kafka;
pub mod partitioner;
pub mod queue;
pub(crate) mod thread;
