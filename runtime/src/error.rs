//! The runtime's one error type.
//!
//! Every fallible call in `weir-runtime` returns [`Result<T>`]. Errors are `Clone`
//! because a failed query keeps its error on its handle ([`crate::QueryState::Failed`])
//! and every caller that asks for the state gets a copy.

use std::sync::Arc;

/// Shorthand for `std::result::Result<T, weir_runtime::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which half of a record failed to (de)serialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordField {
    /// The record key.
    Key,
    /// The record value.
    Value,
}

impl std::fmt::Display for RecordField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordField::Key => "key",
            RecordField::Value => "value",
        })
    }
}

/// Everything that can go wrong in the runtime.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; the message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The Kafka cluster or a Kafka client failed (unreachable brokers, a failed
    /// delivery, a refused commit): what weir was doing, and librdkafka's error when
    /// there is one ([`Error::kafka_error`] gives it typed).
    #[error("kafka: {context}{}", with_source(source))]
    Kafka {
        /// What weir was doing.
        context: String,
        /// The client's error, if any (an `rdkafka::error::KafkaError`).
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },

    /// A topic that a query or a call names does not exist.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),

    /// A topic was created twice with different partition counts.
    #[error("topic '{topic}' already exists with {existing} partitions ({requested} requested)")]
    TopicExists {
        /// Topic name.
        topic: String,
        /// Partition count it has.
        existing: u32,
        /// Partition count that was asked for.
        requested: u32,
    },

    /// A partition number is out of range for its topic.
    #[error("partition {partition} of topic '{topic}' does not exist (it has {partitions})")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// The topology is malformed (unknown parent, type mismatch, duplicate name, ...).
    #[error("invalid topology: {0}")]
    Topology(String),

    /// `start_query` was called with the name of a query that is still running.
    #[error("a query named '{0}' is already running")]
    QueryExists(String),

    /// A record's key or value could not be deserialized and the handler said fail.
    #[error(
        "cannot deserialize the {field} of the record at {topic}-{partition} offset {offset}: {reason}"
    )]
    Deserialization {
        /// Topic the record came from.
        topic: String,
        /// Partition it came from.
        partition: u32,
        /// Its offset.
        offset: i64,
        /// Key or value.
        field: RecordField,
        /// What the deserializer said.
        reason: String,
    },

    /// A serde rejected its input; raised by [`crate::serde::Serde`] implementations and
    /// wrapped with the record's coordinates by the source or sink that called it.
    #[error("{0}")]
    Serde(String),

    /// A key or value could not be serialized for a sink.
    #[error("cannot serialize the {field} of a record for topic '{topic}': {reason}")]
    Serialization {
        /// Destination topic.
        topic: String,
        /// Key or value.
        field: RecordField,
        /// What the serializer said.
        reason: String,
    },

    /// User code in a processor returned an error.
    #[error("processor '{processor}' failed: {source}")]
    Processor {
        /// The processor's name in the topology.
        processor: String,
        /// The error it returned.
        source: Box<Error>,
    },

    /// User code in a processor panicked; the query was failed, the pool survives.
    #[error("processor '{processor}' panicked: {message}")]
    Panic {
        /// The processor's name in the topology (or the task, if no processor was running).
        processor: String,
        /// The panic payload, if it was a string.
        message: String,
    },

    /// An error raised by user code with [`Error::user`].
    #[error("{0}")]
    User(Arc<dyn std::error::Error + Send + Sync>),

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: Arc<std::io::Error>,
    },

    /// A state store's write would take the state budget past its cap; nothing was
    /// written.
    #[error(
        "store '{store}' needs {requested} more bytes but the state budget has {used} of {cap} bytes in use"
    )]
    StateBudget {
        /// The store.
        store: String,
        /// Bytes the write needed.
        requested: usize,
        /// Bytes in use.
        used: usize,
        /// The cap.
        cap: usize,
    },

    /// A state store operation failed (RocksDB refused it, a stored entry cannot be
    /// read, a store is closed).
    #[error("store '{store}': {message}")]
    Store {
        /// The store.
        store: String,
        /// What went wrong.
        message: String,
        /// The underlying error, if any (a `rocksdb::Error`).
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },

    /// A suppression buffer that shuts its query down when full was full: the query
    /// committed everything it processed and stopped. Restart it with a larger bound
    /// (or budget) to go on from there.
    #[error("suppression buffer '{buffer}' {reason}")]
    BufferFull {
        /// The suppression operator's name.
        buffer: String,
        /// Which bound: bytes or records and the figures, or the global budget.
        reason: String,
    },

    /// The query is running; stop it first (for example before cleaning up its state).
    #[error("query '{0}' is running: stop it first")]
    QueryRunning(String),

    /// A test driver's output topic had no record left to read.
    #[error("no record left to read in output topic '{0}'")]
    NoRecord(String),

    /// The runtime was shut down; no new query can start.
    #[error("the runtime is shut down")]
    ShutDown,
}

impl Error {
    /// Wraps any error from user code so a processor can return it.
    pub fn user<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Error::User(Arc::new(error))
    }

    /// An error from user code given as a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::User(Arc::new(Message(message.into())))
    }

    /// A Kafka failure without a client error behind it.
    pub(crate) fn kafka(context: impl Into<String>) -> Self {
        Error::Kafka {
            context: context.into(),
            source: None,
        }
    }

    /// A store failure without an underlying error.
    pub(crate) fn store(store: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Store {
            store: store.into(),
            message: message.into(),
            source: None,
        }
    }

    /// librdkafka's error behind an [`Error::Kafka`], if there is one (feature
    /// `kafka`), to match on its code.
    #[cfg(feature = "kafka")]
    pub fn kafka_error(&self) -> Option<&rdkafka::error::KafkaError> {
        match self {
            Error::Kafka {
                source: Some(s), ..
            } => s.downcast_ref(),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// Attributes this error to a processor, unless it already names one.
    pub(crate) fn in_processor(self, processor: &str) -> Self {
        match self {
            e @ (Error::Processor { .. }
            | Error::Panic { .. }
            | Error::BufferFull { .. }
            | Error::Deserialization { .. }
            | Error::Serialization { .. }) => e,
            other => Error::Processor {
                processor: processor.to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// `": {source}"`, or nothing.
fn with_source(source: &Option<Arc<dyn std::error::Error + Send + Sync>>) -> String {
    source
        .as_ref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}
