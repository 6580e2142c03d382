//! I/O: where records come from and go to, behind one [`transport::Transport`].
//!
//! The engine talks to a broker only through the `Transport` trait; `broker/` (the
//! in-process broker) and `kafka/` (rdkafka, feature `kafka`) implement it, and
//! [`transport::connect`] picks one when a runtime starts. The I/O thread (`thread.rs`)
//! moves records from the transport into the bounded partition queues (`queue.rs`);
//! sinks write through it; `partitioner.rs` is Kafka's default partitioner, which both
//! use.

pub(crate) mod broker;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
pub(crate) mod partitioner;
pub(crate) mod queue;
pub(crate) mod settings;
pub(crate) mod thread;
pub(crate) mod transport;
