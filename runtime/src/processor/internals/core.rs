//! A task's core: its node arena, dispatch between nodes, punctuation, and what its
//! nodes see of the task (the environment).
//!
//! A node is taken out of the arena while it runs, so it can forward to its children
//! through the same core: no allocation per hop, one downcast, one virtual call.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::errors::{ErrorPolicy, panic_message};
use super::node::{Node, NodeId, NodeKind};
use crate::config::DeserializationHandler;
use crate::error::{Error, Result};
use crate::io::broker::RecordView;
use crate::io::transport::{SinkTopic, Transport};
use crate::memory::ByteBudget;
use crate::processor::{Punctuation, PunctuationType, PunctuatorId, TaskId};
use crate::record::RecordMetadata;
use crate::state::task_stores::TaskStores;

/// A scheduled punctuator inside a task.
pub(crate) struct PunctuatorEntry {
    pub(crate) id: PunctuatorId,
    pub(crate) node: NodeId,
    pub(crate) kind: PunctuationType,
    pub(crate) interval_ms: i64,
    /// Next firing time; `None` for a stream-time punctuator until stream time is known.
    pub(crate) next: Option<i64>,
    pub(crate) cancelled: Arc<AtomicBool>,
}

impl PunctuatorEntry {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// If due at `now`, returns the firing time and moves `next` past `now`
    /// (missed intervals fire once, as in Kafka Streams).
    pub(crate) fn due(&mut self, now: i64) -> Option<i64> {
        let next = match self.next {
            Some(n) => n,
            None => {
                // First stream time seen: fire now, then every interval.
                self.next = Some(now);
                now
            }
        };
        if now < next {
            return None;
        }
        let missed = (now - next) / self.interval_ms;
        self.next = Some(next + (missed + 1) * self.interval_ms);
        Some(now)
    }
}

/// Where a task reads wall-clock time: the system clock, or (the test driver) a clock
/// that moves only when told to.
#[derive(Clone, Default)]
pub(crate) enum Clock {
    #[default]
    System,
    Mock(Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn now(&self) -> i64 {
        match self {
            Clock::System => crate::record::now_millis(),
            Clock::Mock(t) => t.load(Ordering::Acquire),
        }
    }
}

/// What processors see of their task besides the graph.
pub(crate) struct TaskEnv {
    pub(crate) task_id: TaskId,
    pub(crate) query: Arc<str>,
    /// The query's id (Kafka deliveries are attributed to it).
    pub(crate) query_id: u64,
    pub(crate) application_id: Arc<str>,
    pub(crate) metadata: Option<RecordMetadata>,
    pub(crate) stream_time: i64,
    /// Timestamp of the record being processed (the punctuation time inside a
    /// punctuator): store writes carry it, and so do the changes they forward.
    pub(crate) record_timestamp: i64,
    pub(crate) punctuators: Vec<PunctuatorEntry>,
    pub(crate) next_punctuator: u64,
    /// Where sinks write, offsets are committed and changelogs go.
    pub(crate) transport: Arc<dyn Transport>,
    /// Topology topic name -> broker topic name (internal topics are prefixed).
    pub(crate) topic_names: Arc<HashMap<String, String>>,
    pub(crate) deserialization_handler: DeserializationHandler,
    /// Its query's processing and production handlers and dead-letter topic.
    pub(crate) errors: ErrorPolicy,
    pub(crate) skipped: u64,
    /// Its stores, its part of the record cache, and store changes to forward.
    pub(crate) state: TaskStores,
    /// Per store: how its changes go downstream, if it forwards (an aggregation's).
    pub(crate) forwarders: Vec<Option<Forwarder>>,
    /// Records windowed operators dropped for arriving after their window closed.
    pub(crate) dropped_late: u64,
    /// The runtime's one budget for every suppression buffer.
    pub(crate) suppression_budget: Arc<ByteBudget>,
    /// Set by a processor that cannot go on (a full suppression buffer that shuts its
    /// query down): the task commits what it has processed and fails the query with
    /// this error.
    pub(crate) shutdown: Option<Error>,
    /// Wall-clock time for punctuators and processors.
    pub(crate) clock: Clock,
    /// Lateness of its records and what its operators dropped.
    pub(crate) metrics: super::TaskMetrics,
}

/// Deserializes a change of a store (key, new, old, timestamp) and forwards it to the
/// owning node's children.
pub(crate) type Forwarder = Arc<
    dyn Fn(&mut TaskCore, &[u8], Option<&[u8]>, Option<&[u8]>, i64) -> Result<()> + Send + Sync,
>;

impl TaskEnv {
    /// The topic a sink named `name` in the topology writes to (internal topics are
    /// prefixed).
    pub(crate) fn sink_topic(&self, name: &str) -> Result<Arc<dyn SinkTopic>> {
        let actual = self.topic_names.get(name).map_or(name, String::as_str);
        self.transport.sink(actual)
    }
}

/// A task's node graph (indexed by topology node id; nodes of other sub-topologies are
/// `None`) and its environment.
pub(crate) struct TaskCore {
    pub(crate) nodes: Vec<Option<Box<dyn Node>>>,
    pub(crate) children: Arc<Vec<Vec<NodeId>>>,
    pub(crate) names: Arc<Vec<String>>,
    pub(crate) kinds: Arc<Vec<NodeKind>>,
    pub(crate) env: TaskEnv,
    /// The node running now; after a panic, the one that panicked.
    pub(crate) current: Option<NodeId>,
}

impl TaskCore {
    /// Runs `node` on `input`. The node is taken out of the arena while it runs, so it
    /// can forward to its children through `self`.
    ///
    /// User code failing in the node (an error it returned, or a panic) goes to the
    /// query's processing exception handler here, once, in the node it happened in;
    /// the arena stays whole after a panic.
    pub(crate) fn dispatch(&mut self, node: NodeId, input: &mut dyn Any) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| n.process(input, self, node)));
        self.current = prev;
        self.nodes[node] = Some(n);
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => self.on_node_error(node, e),
            Err(payload) => self.on_node_panic(node, payload.as_ref()),
        }
    }

    /// An error came out of `node`: its own user code's failures go to the handler,
    /// everything else (the engine's errors, its children's handled failures) up.
    #[cold]
    fn on_node_error(&mut self, node: NodeId, e: Error) -> Result<()> {
        let own = match &e {
            Error::Processor { processor, source } => {
                *processor == self.names[node] && source.is_user_failure()
            }
            other => other.is_user_failure(),
        };
        if own {
            self.on_processing_error(node, e)
        } else {
            Err(e)
        }
    }

    #[cold]
    fn on_node_panic(&mut self, node: NodeId, payload: &(dyn Any + Send)) -> Result<()> {
        let panic = Error::Panic {
            processor: self.names[node].clone(),
            message: panic_message(payload),
        };
        if matches!(self.kinds[node], NodeKind::Processor) {
            self.on_processing_error(node, panic)
        } else {
            Err(panic)
        }
    }

    /// Writes every dirty entry of the record cache and forwards the changes of
    /// forwarding stores, a chunk at a time: a commit's copies stay near
    /// about 4 MiB however much of the cache is dirty.
    pub(crate) fn flush_cache(&mut self) -> Result<()> {
        while self.env.state.flush_cache_chunk(None)? {
            self.drain_forwards()?;
        }
        self.drain_forwards()
    }

    /// Forwards every queued store change (which may queue more, downstream).
    pub(crate) fn drain_forwards(&mut self) -> Result<()> {
        while let Some(p) = self.env.state.pending_forwards.pop_front() {
            let Some(f) = self.env.forwarders.get(p.store).cloned().flatten() else {
                continue;
            };
            f(
                self,
                &p.key,
                p.new.as_deref(),
                p.old.as_deref(),
                p.timestamp,
            )?;
        }
        Ok(())
    }

    /// Writes out what other tasks asked this one to evict.
    pub(crate) fn serve_evictions(&mut self) -> Result<()> {
        let dirty = match &mut self.env.state.cache {
            Some(c) if c.has_eviction_request() => c.serve_eviction_requests(),
            _ => return Ok(()),
        };
        self.env.state.apply_dirty(dirty)?;
        self.drain_forwards()
    }

    /// Hands a fetched record to a source node.
    pub(crate) fn ingest(
        &mut self,
        source: NodeId,
        view: &RecordView<'_>,
        offset: i64,
    ) -> Result<()> {
        let mut n = self.take(source)?;
        let prev = self.current.replace(source);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| n.ingest(view, offset, self, source)));
        self.current = prev;
        self.nodes[source] = Some(n);
        let r = match r {
            Ok(r) => r,
            Err(payload) => self.on_node_panic(source, payload.as_ref()),
        };
        if !self.env.errors.pending.is_empty() {
            // A handler dealt with this record: its dead letters carry its bytes.
            let written = self.write_dead_letters(view.key, view.value);
            r?;
            return written;
        }
        r
    }

    pub(crate) fn take(&mut self, node: NodeId) -> Result<Box<dyn Node>> {
        self.nodes
            .get_mut(node)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::Topology(format!(
                    "node '{}' is not part of this task (or forwards to itself)",
                    self.names.get(node).map_or("?", String::as_str)
                ))
            })
    }

    pub(crate) fn init_node(&mut self, node: NodeId) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        let r = n.init(self, node);
        self.current = prev;
        self.nodes[node] = Some(n);
        r
    }

    pub(crate) fn punctuate_node(&mut self, node: NodeId, p: &Punctuation) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        // Inside a punctuator, "the record's timestamp" is the punctuation time.
        self.env.record_timestamp = p.timestamp;
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| n.punctuate(p, self, node)));
        self.current = prev;
        self.nodes[node] = Some(n);
        let r = match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => self.on_node_error(node, e),
            Err(payload) => self.on_node_panic(node, payload.as_ref()),
        };
        // A punctuation has no source record: its dead letters have no bytes.
        let written = self.write_dead_letters(None, None);
        r?;
        written
    }

    pub(crate) fn pre_commit_node(&mut self, node: NodeId) -> Result<()> {
        let mut n = self.take(node)?;
        let prev = self.current.replace(node);
        let r = n.pre_commit(self, node);
        self.current = prev;
        self.nodes[node] = Some(n);
        r
    }

    pub(crate) fn flush_node(&mut self, node: NodeId) -> Result<()> {
        let mut n = self.take(node)?;
        let r = n.flush(self);
        self.nodes[node] = Some(n);
        r
    }

    /// Fires every punctuator of `kind` that is due at `now`.
    pub(crate) fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<()> {
        if self.env.punctuators.is_empty() {
            return Ok(());
        }
        let mut due = Vec::new();
        self.env.punctuators.retain(|p| !p.is_cancelled());
        for p in self.env.punctuators.iter_mut().filter(|p| p.kind == kind) {
            if let Some(ts) = p.due(now) {
                due.push((
                    p.node,
                    Punctuation {
                        id: p.id,
                        kind,
                        timestamp: ts,
                    },
                ));
            }
        }
        let saved = self.env.metadata.take();
        let mut result = Ok(());
        for (node, p) in due {
            result = self.punctuate_node(node, &p);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.drain_forwards();
        }
        self.env.metadata = saved;
        result
    }

    pub(crate) fn next_wall_deadline(&self) -> Option<i64> {
        self.env
            .punctuators
            .iter()
            .filter(|p| p.kind == PunctuationType::WallClockTime && !p.is_cancelled())
            .filter_map(|p| p.next)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(interval_ms: i64, next: Option<i64>) -> PunctuatorEntry {
        PunctuatorEntry {
            id: PunctuatorId(0),
            node: 0,
            kind: PunctuationType::StreamTime,
            interval_ms,
            next,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn punctuator_fires_once_per_due_point_and_skips_missed() {
        let mut e = entry(10, Some(100));
        assert_eq!(e.due(99), None);
        assert_eq!(e.due(100), Some(100));
        assert_eq!(e.due(105), None);
        assert_eq!(e.due(135), Some(135)); // 110, 120, 130 missed: fires once
        assert_eq!(e.next, Some(140));
    }

    #[test]
    fn stream_time_punctuator_starts_at_first_stream_time() {
        let mut e = entry(10, None);
        assert_eq!(e.due(7), Some(7));
        assert_eq!(e.due(16), None);
        assert_eq!(e.due(17), Some(17));
    }
}
