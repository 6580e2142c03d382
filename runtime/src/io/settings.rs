//! The I/O settings of a runtime: where a query starts reading, what a failed
//! delivery does, what a crash may do to results, and the transport's view of the
//! configuration.

use std::path::Path;

use crate::io::broker::Broker;

/// What to do when Kafka refuses a record a sink (or a changelog) produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProductionExceptionHandler {
    /// Fail the query at its next commit, committing nothing past the record (the
    /// default): a restart re-reads from the last commit.
    #[default]
    Fail,
    /// Log the failure, count it (`weir_produce_errors_total{query}`), and commit as
    /// if the record had been written: it is lost.
    LogAndContinue,
}

/// What a crash may do to results on Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Every input record's effect is in the output at least once (the default): after
    /// a crash, records processed since the last commit are processed again, so output
    /// and changelogs may hold their effect twice.
    #[default]
    AtLeastOnce,
    /// Each input record's effect is in the output exactly once, as seen by readers with
    /// `isolation.level=read_committed`: the runtime's one producer is transactional, and
    /// every commit is one transaction holding the output, the changelog writes and the
    /// input offsets of every task of the runtime. Kafka only. Stores are rebuilt from
    /// their (committed) changelogs after a crash. A query's failure aborts the
    /// transaction: that query fails (restarted, it resumes from the last committed
    /// transaction), and the other queries' tasks start again from the last commit, as
    /// they do when a rebalance made a commit fail (Kafka Streams'
    /// `TaskMigratedException`): see `QueryStats::tasks_restarted`. A transaction that
    /// cannot commit (a fenced producer) fails every query.
    ExactlyOnce,
}

/// Where a query starts reading a partition that its group has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the first record (Kafka Streams' default).
    #[default]
    Earliest,
    /// From the end: only records appended after the query starts.
    Latest,
}

/// What a transport needs of the runtime's configuration
/// ([`RuntimeConfig::transport`](crate::RuntimeConfig)).
// Only Kafka reads the settings; the in-process broker needs the broker alone.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransportConfig<'a> {
    pub(crate) application_id: &'a str,
    pub(crate) state_dir: &'a Path,
    pub(crate) offset_reset: OffsetReset,
    pub(crate) production_exception_handler: ProductionExceptionHandler,
    pub(crate) processing_guarantee: ProcessingGuarantee,
    /// How long commits may wait for the cluster (`task.timeout.ms`).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) task_timeout: std::time::Duration,
    pub(crate) broker: &'a Broker,
    #[cfg(feature = "kafka")]
    pub(crate) kafka: Option<&'a crate::io::kafka::KafkaConfig>,
}
