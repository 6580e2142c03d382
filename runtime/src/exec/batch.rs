//! A task's batch: the records it processes in one turn on a worker, lowest timestamp
//! first across its partitions, with punctuation, and task idling (Kafka Streams'
//! `max.task.idle.ms`): when a task with several inputs waits for an empty one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::TaskInner;
use super::input::Input;
use crate::error::Result;
use crate::io::broker::FetchBatch;
use crate::processor::PunctuationType;
use crate::record::RecordMetadata;

impl TaskInner {
    /// Processes up to `max` records of the task's inputs (stopping early once
    /// `max_time` has passed), always the lowest timestamp across its partitions next,
    /// with wall-clock punctuation before and after and stream-time punctuation after
    /// each record that advances stream time. Returns how many it processed.
    pub(crate) fn process(&mut self, max: usize, max_time: std::time::Duration) -> Result<usize> {
        let inner = self;
        let started = Instant::now();
        inner.core.serve_evictions()?;
        inner
            .core
            .punctuate(PunctuationType::WallClockTime, inner.core.env.clock.now())?;
        let mut n = 0usize;
        while n < max && (!n.is_multiple_of(64) || n == 0 || started.elapsed() < max_time) {
            if inner.core.env.shutdown.is_some() {
                break;
            }
            // Next record: the lowest timestamp across this task's partitions.
            let mut best: Option<(usize, i64)> = None;
            let mut empty = false;
            for (i, input) in inner.inputs.iter_mut().enumerate() {
                match input.head_timestamp() {
                    Some(ts) => {
                        input.empty_since = None;
                        if best.is_none_or(|(_, b)| ts < b) {
                            best = Some((i, ts));
                        }
                    }
                    None => empty = true,
                }
            }
            let Some((i, _)) = best else { break };
            if empty && let Some(idle) = inner.max_task_idle {
                match idling(&mut inner.inputs, idle, Instant::now()) {
                    Idling::Wait(until) => {
                        inner.waiting_until = Some(until);
                        break;
                    }
                    Idling::Enforced => inner.core.env.metrics.enforced_processing(),
                    Idling::Ready => {}
                }
            }
            let TaskInner { core, inputs, .. } = &mut *inner;
            let input = &mut inputs[i];
            let Some((offset, view, size)) =
                input.local.front_mut().and_then(FetchBatch::next_record)
            else {
                break;
            };
            input.consumed = Some(offset + 1);
            input.release_records += 1;
            input.release_bytes += size;
            match &mut core.env.metadata {
                Some(m) if Arc::ptr_eq(&m.topic, &input.topic) => {
                    m.partition = input.partition;
                    m.offset = offset;
                }
                slot => {
                    *slot = Some(RecordMetadata {
                        topic: input.topic.clone(),
                        partition: input.partition,
                        offset,
                    })
                }
            }
            // The source advances stream time (to the record's extracted timestamp);
            // stream-time punctuators fire after the record.
            let before = core.env.stream_time;
            core.ingest(input.source, &view, offset)?;
            if !core.env.state.pending_forwards.is_empty() {
                core.drain_forwards()?;
            }
            if core.env.stream_time > before {
                core.punctuate(PunctuationType::StreamTime, core.env.stream_time)?;
            }
            n += 1;
        }
        inner.core.env.metadata = None;
        if inner.core.env.shutdown.is_none() {
            inner
                .core
                .punctuate(PunctuationType::WallClockTime, inner.core.env.clock.now())?;
        }
        Ok(n)
    }
}

/// How long a task waits for a partition whose records are on their way (or whose end
/// is not known yet) before it processes the others anyway. Kafka Streams waits without
/// bound; weir bounds it because a Kafka partition read under `read_committed` can end
/// in transaction markers, which count in the end offset but are never fetched.
const ON_THE_WAY_WAIT: Duration = Duration::from_secs(1);

/// How often a waiting task looks again for records on their way (the fetcher wakes it
/// when it queues them; this only bounds a missed or stale signal).
const WAIT_POLL: Duration = Duration::from_millis(5);

/// What task idling says about the next record, when some input is empty.
#[derive(Debug, PartialEq, Eq)]
enum Idling {
    /// Every empty input has nothing more to wait for: process.
    Ready,
    /// An input's idle time ran out: process, possibly out of timestamp order.
    Enforced,
    /// Wait for an input; look again at this instant.
    Wait(Instant),
}

/// Kafka Streams' `PartitionGroup.readyToProcess`: an empty input whose records are on
/// their way is waited for (up to [`ON_THE_WAY_WAIT`], or `max_idle` if longer); one with
/// nothing known upstream is waited for `max_idle` from when it was first found empty,
/// then processing goes on without it (enforced processing).
fn idling(inputs: &mut [Input], max_idle: Duration, now: Instant) -> Idling {
    let mut verdict = Idling::Ready;
    for input in inputs.iter_mut().filter(|i| i.local_records() == 0) {
        let since = *input.empty_since.get_or_insert(now);
        let (limit, poll) = if input.queue.records_on_the_way() {
            (max_idle.max(ON_THE_WAY_WAIT), WAIT_POLL)
        } else {
            (max_idle, max_idle)
        };
        let deadline = since + limit;
        if now < deadline {
            let at = deadline.min(now + poll);
            verdict = match verdict {
                Idling::Wait(w) => Idling::Wait(w.min(at)),
                _ => Idling::Wait(at),
            };
        } else if verdict == Idling::Ready {
            verdict = Idling::Enforced;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::queue::PartitionQueue;
    use crate::memory::ByteBudget;

    /// Two empty inputs (the caller asks only when another input has records).
    fn inputs() -> Vec<Input> {
        let budget = Arc::new(ByteBudget::new(1 << 20));
        (0..2)
            .map(|p| {
                let q = Arc::new(PartitionQueue::new(10, budget.clone()));
                Input::new(Arc::from("t"), p, 0, q)
            })
            .collect()
    }

    #[test]
    fn with_zero_idle_time_nothing_upstream_is_enforced_at_once() {
        let mut ins = inputs();
        assert_eq!(
            idling(&mut ins, Duration::ZERO, Instant::now()),
            Idling::Enforced
        );
    }

    #[test]
    fn records_on_the_way_are_waited_for_then_given_up_on() {
        let mut ins = inputs();
        ins[1].queue.set_more_upstream(true);
        let t0 = Instant::now();
        assert_eq!(
            idling(&mut ins, Duration::ZERO, t0),
            Idling::Wait(t0 + WAIT_POLL)
        );
        let later = t0 + ON_THE_WAY_WAIT / 2;
        assert_eq!(
            idling(&mut ins, Duration::ZERO, later),
            Idling::Wait(later + WAIT_POLL)
        );
        assert_eq!(
            idling(&mut ins, Duration::ZERO, t0 + ON_THE_WAY_WAIT),
            Idling::Enforced,
            "the wait is bounded from when the input was first found empty"
        );
        // Records came and went: the input is waited for afresh.
        ins[1].empty_since = None;
        let t1 = t0 + ON_THE_WAY_WAIT * 2;
        assert_eq!(
            idling(&mut ins, Duration::ZERO, t1),
            Idling::Wait(t1 + WAIT_POLL)
        );
    }

    #[test]
    fn idle_time_waits_for_records_not_produced_yet() {
        let mut ins = inputs();
        let idle = Duration::from_millis(100);
        let t0 = Instant::now();
        assert_eq!(idling(&mut ins, idle, t0), Idling::Wait(t0 + idle));
        let t1 = t0 + Duration::from_millis(60);
        assert_eq!(idling(&mut ins, idle, t1), Idling::Wait(t0 + idle));
        assert_eq!(idling(&mut ins, idle, t0 + idle), Idling::Enforced);
        // A longer idle time than the on-the-way bound applies to both kinds.
        let mut ins = inputs();
        ins[0].queue.set_more_upstream(true);
        let long = ON_THE_WAY_WAIT * 3;
        assert_eq!(
            idling(&mut ins, long, t0 + ON_THE_WAY_WAIT),
            Idling::Wait(t0 + ON_THE_WAY_WAIT + WAIT_POLL)
        );
        ins[0].queue.set_more_upstream(false);
        assert_eq!(
            idling(&mut ins, long, t0 + ON_THE_WAY_WAIT * 2),
            Idling::Wait(t0 + ON_THE_WAY_WAIT + long),
            "the first look started both inputs' clocks"
        );
    }
}
