//! A query's error handling: the settings a topology carries so that one query may
//! skip what another fails on (the runtime's settings are the defaults).

use super::Topology;
use crate::config::ProcessingExceptionHandler;

impl Topology {
    /// What this query does when user code fails on a record (an `Err` or a panic in
    /// a processor, an operator's closure or a punctuator), overriding the runtime's
    /// [`RuntimeConfigBuilder::processing_exception_handler`](crate::RuntimeConfigBuilder::processing_exception_handler).
    ///
    /// ```
    /// use weir_runtime::serde::StringSerde;
    /// use weir_runtime::{ProcessingExceptionHandler, SinkSpec, SourceSpec, Topology};
    ///
    /// let mut t = Topology::new()
    ///     .processing_exception_handler(ProcessingExceptionHandler::LogAndContinue)
    ///     .dead_letter_queue_topic("input-dlq");
    /// t.add_source("in", &["input"], SourceSpec::new(StringSerde, StringSerde))?;
    /// t.add_sink("out", "output", SinkSpec::new(StringSerde, StringSerde), &["in"])?;
    /// # Ok::<(), weir_runtime::Error>(())
    /// ```
    pub fn processing_exception_handler(mut self, handler: ProcessingExceptionHandler) -> Self {
        self.processing_handler = Some(handler);
        self
    }

    /// Where this query writes its dead letters (records a handler dealt with),
    /// overriding the runtime's
    /// [`RuntimeConfigBuilder::dead_letter_queue_topic`](crate::RuntimeConfigBuilder::dead_letter_queue_topic).
    /// The topic must exist when the query starts.
    pub fn dead_letter_queue_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// The processing exception handler this query overrides the runtime's with, if
    /// any.
    pub fn processing_handler(&self) -> Option<ProcessingExceptionHandler> {
        self.processing_handler
    }

    /// The dead-letter topic this query overrides the runtime's with, if any.
    pub fn dead_letter_queue(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }
}
