//! A task's record metrics, as Kafka Streams' task metrics have them: how late records
//! arrive (`record-lateness`, max and average) and what each operator dropped
//! (`dropped-records`). Kept per task on the hot path as plain numbers; published
//! through the `metrics` facade once per batch.

use super::node::NodeId;
use crate::processor::TaskId;

/// Lateness and drops of one task since it started.
#[derive(Debug, Default)]
pub(crate) struct TaskMetrics {
    lateness_max: Option<i64>,
    lateness_sum: i128,
    lateness_count: u64,
    /// Records dropped per processor node, since the task started.
    dropped: Vec<(NodeId, u64)>,
    /// Drops not yet published, per node.
    unpublished: Vec<(NodeId, u64)>,
    /// Records processed while an input was given up on (task idling ran out), not yet
    /// published.
    unpublished_enforced: u64,
}

impl TaskMetrics {
    /// A record at `timestamp` arrives when the task's stream time is `stream_time`
    /// (`i64::MIN` before the first record): its lateness is how far it is behind,
    /// zero if not behind.
    pub(crate) fn record_lateness(&mut self, stream_time: i64, timestamp: i64) {
        let lateness = if stream_time == i64::MIN {
            0
        } else {
            stream_time.saturating_sub(timestamp).max(0)
        };
        self.lateness_max = Some(self.lateness_max.map_or(lateness, |m| m.max(lateness)));
        self.lateness_sum += i128::from(lateness);
        self.lateness_count += 1;
    }

    /// Processor `node` dropped a record.
    pub(crate) fn dropped_by(&mut self, node: NodeId) {
        for list in [&mut self.dropped, &mut self.unpublished] {
            match list.iter_mut().find(|(n, _)| *n == node) {
                Some((_, c)) => *c += 1,
                None => list.push((node, 1)),
            }
        }
    }

    /// The task processes a record although an input is empty and its idle time has run
    /// out (Kafka Streams' `enforced-processing`).
    pub(crate) fn enforced_processing(&mut self) {
        self.unpublished_enforced += 1;
    }

    /// (max, average) lateness in milliseconds of the records so far, if any.
    pub(crate) fn lateness(&self) -> Option<(i64, f64)> {
        Self::combine([self])
    }

    /// (max, average) lateness over the records of several tasks, if any.
    pub(crate) fn combine<'a>(
        tasks: impl IntoIterator<Item = &'a TaskMetrics>,
    ) -> Option<(i64, f64)> {
        let (mut max, mut sum, mut count) = (None::<i64>, 0i128, 0u64);
        for t in tasks {
            if let Some(m) = t.lateness_max {
                max = Some(max.map_or(m, |x| x.max(m)));
            }
            sum += t.lateness_sum;
            count += t.lateness_count;
        }
        Some((max?, sum as f64 / count as f64))
    }

    /// Records processor `node` dropped so far.
    pub(crate) fn dropped_by_node(&self, node: NodeId) -> u64 {
        self.dropped
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0, |(_, c)| *c)
    }

    /// Records every processor of the task dropped so far.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, c)| c).sum()
    }

    /// Publishes the gauges `weir_record_lateness_{max,avg}_ms{query, task}`, the
    /// drops since the last call as `weir_dropped_records_total{query, task, processor}`
    /// and the enforced processing since the last call as
    /// `weir_enforced_processing_total{query, task}`.
    pub(crate) fn publish(&mut self, query: &str, task: TaskId, names: &[String]) {
        if self.unpublished_enforced > 0 {
            metrics::counter!(
                crate::metrics::ENFORCED_PROCESSING_TOTAL,
                "query" => query.to_string(),
                "task" => task.to_string()
            )
            .increment(std::mem::take(&mut self.unpublished_enforced));
        }
        for (node, n) in self.unpublished.drain(..) {
            metrics::counter!(
                crate::metrics::DROPPED_RECORDS_TOTAL,
                "query" => query.to_string(),
                "task" => task.to_string(),
                "processor" => names.get(node).cloned().unwrap_or_default()
            )
            .increment(n);
        }
        if let Some((max, avg)) = self.lateness() {
            let labels = [("query", query.to_string()), ("task", task.to_string())];
            metrics::gauge!(crate::metrics::RECORD_LATENESS_MAX_MS, &labels).set(max as f64);
            metrics::gauge!(crate::metrics::RECORD_LATENESS_AVG_MS, &labels).set(avg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_zero_until_stream_time_is_known_and_never_negative() {
        let mut m = TaskMetrics::default();
        assert_eq!(m.lateness(), None);
        m.record_lateness(i64::MIN, 100);
        m.record_lateness(100, 0);
        m.record_lateness(100, 150);
        m.record_lateness(150, 146);
        assert_eq!(m.lateness(), Some((100, 26.0)));
    }

    #[test]
    fn drops_are_counted_per_node_and_published_once() {
        let mut m = TaskMetrics::default();
        m.dropped_by(3);
        m.dropped_by(3);
        m.dropped_by(5);
        assert_eq!((m.dropped_by_node(3), m.dropped_by_node(5)), (2, 1));
        assert_eq!(m.dropped_total(), 3);
        m.publish(
            "q",
            TaskId {
                subtopology: 0,
                partition: 0,
            },
            &[],
        );
        assert!(m.unpublished.is_empty());
        assert_eq!(m.dropped_total(), 3);
    }
}
