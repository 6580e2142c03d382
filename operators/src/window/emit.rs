//! When a windowed aggregation emits: on every update (the default) or once per window
//! when it closes (Kafka Streams' `EmitStrategy`, KIP-825).

/// When a windowed aggregation (`windowed_by(..).count/reduce/aggregate`) emits its
/// results: Kafka Streams' `EmitStrategy`.
///
/// - [`EmitStrategy::on_window_update`] (the default): every change of a window goes
///   downstream as it reaches the store (at once without the record cache, at eviction
///   or commit with it).
/// - [`EmitStrategy::on_window_close`]: each window goes downstream exactly once, with
///   its final value, when it closes: a time window when `end + grace <= stream time`,
///   a sliding window when `end + grace < stream time`, a session when
///   `end + gap + grace < stream time`. The results are read back from the window
///   store; no suppression buffer holds them. Unlike `suppress(until_window_closes)`
///   this costs no memory beyond the store. Each emitted record carries the window's
///   largest record timestamp (a session: its end). Kafka Streams emits at most once
///   per `emit.interval.ms` of wall-clock time (1 s by default); weir emits whenever a
///   record moves the close time on.
///
/// ```
/// use std::time::Duration;
/// use weir::prelude::*;
/// use weir::EmitStrategy;
///
/// # fn main() -> weir::Result<()> {
/// let builder = StreamsBuilder::new();
/// builder
///     .stream::<String, String>("clicks")
///     .group_by_key()
///     .windowed_by(TimeWindows::of_size_and_grace(
///         Duration::from_secs(60),
///         Duration::from_secs(10),
///     )?)
///     .emit_strategy(EmitStrategy::on_window_close())
///     .count()
///     .to_stream()
///     .print(weir::Printed::to_sys_out());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmitStrategy {
    on_close: bool,
}

impl EmitStrategy {
    /// Every update of a window goes downstream (the default).
    pub fn on_window_update() -> Self {
        EmitStrategy { on_close: false }
    }

    /// Each window goes downstream once, when it closes.
    pub fn on_window_close() -> Self {
        EmitStrategy { on_close: true }
    }

    pub(super) fn is_on_close(self) -> bool {
        self.on_close
    }
}
