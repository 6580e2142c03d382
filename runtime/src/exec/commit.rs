//! The commit protocol of a task, and its closing.
//!
//! A commit (at-least-once): write the record cache's dirty entries (forwarding the
//! changes of aggregations), let every processor write out what it buffers, flush the
//! stores, flush the sinks, wait until the transport has every produced record
//! acknowledged (on Kafka; the changelog checkpoints then record how far each
//! changelog reaches), and only then commit the input offsets. Exactly-once hands the
//! offsets to the runtime's transaction instead (`task.rs`).

use std::time::Instant;

use super::input::Input;
use crate::error::Result;
use crate::io::transport::TxnOffset;
use crate::processor::internals::{NodeId, NodeKind, TaskCore};

/// A global task's commit: instead of committing offsets to a group, it records how
/// far its store reaches in the store's offsets file (RocksDB stores; `dir` is the
/// store's directory).
pub(crate) struct GlobalOffsets {
    pub(crate) dir: Option<std::path::PathBuf>,
}

/// The mutable part of a task, behind a lock that only its running worker takes.
pub(crate) struct TaskInner {
    pub(crate) core: TaskCore,
    pub(crate) inputs: Vec<Input>,
    /// Nodes of this task's sub-topology, in topology order.
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) sinks: Vec<NodeId>,
    pub(super) last_commit: Instant,
    pub(super) uncommitted: bool,
    pub(super) registered_wake: Option<i64>,
    pub(super) closed: bool,
    /// Exactly-once: the round this task prepared for (it waits for its commit).
    pub(super) prepared_round: Option<u64>,
    /// Exactly-once: the transaction's epoch the task joined in (see `io/kafka/txn.rs`).
    pub(super) txn_epoch: u64,
    /// How long to wait for an empty input when there are several
    /// ([`crate::RuntimeConfigBuilder::max_task_idle`]); `None`: never wait.
    pub(crate) max_task_idle: Option<std::time::Duration>,
    /// Set by `process` when it stopped to wait for an input: when to look again.
    pub(super) waiting_until: Option<Instant>,
    /// A global store's task (see `state/global.rs`): it commits to the store's
    /// offsets file and takes no part in exactly-once rounds.
    pub(crate) global: Option<GlobalOffsets>,
}

impl TaskInner {
    pub(crate) fn new(
        core: TaskCore,
        inputs: Vec<Input>,
        nodes: Vec<NodeId>,
        sinks: Vec<NodeId>,
    ) -> Self {
        TaskInner {
            core,
            inputs,
            nodes,
            sinks,
            last_commit: Instant::now(),
            uncommitted: false,
            registered_wake: None,
            closed: false,
            prepared_round: None,
            txn_epoch: 0,
            max_task_idle: None,
            waiting_until: None,
            global: None,
        }
    }

    /// Calls `init` on every node, parents first.
    pub(crate) fn init(&mut self) -> Result<()> {
        for &n in &self.nodes {
            self.core.init_node(n)?;
        }
        Ok(())
    }

    pub(crate) fn flush_sinks(&mut self) -> Result<()> {
        // Dead letters of failures outside a record's run (cache flushes) have no
        // source bytes.
        self.core.write_dead_letters(None, None)?;
        for &s in &self.sinks {
            self.core.flush_node(s)?;
        }
        Ok(())
    }

    /// The commit protocol: record cache (writing and forwarding), then stores, then
    /// sinks, then offsets.
    ///
    /// False if the commit has to wait: the cluster did not acknowledge everything
    /// produced, did not take the offsets, or the group is rebalancing. Nothing past
    /// the last commit is then committed; the task tries again later.
    pub(super) fn commit(&mut self, group: &str) -> Result<bool> {
        if self.global.is_some() {
            self.flush_for_commit(false)?;
            if let Some(dir) = self.global.as_ref().and_then(|g| g.dir.as_ref()) {
                crate::state::global::write_offsets(dir, &self.global_offsets())?;
            }
            self.committed();
            return Ok(true);
        }
        if !self.flush_for_commit(true)? {
            return Ok(false);
        }
        let offsets: Vec<(&str, u32, i64)> = self
            .moved()
            .map(|(i, off)| (&*i.topic, i.partition, off))
            .collect();
        if !offsets.is_empty()
            && !self
                .core
                .env
                .transport
                .commit(group, &self.core.env.query, &offsets)?
        {
            // Not committed (a rebalance, or no answer): tried again at the next commit.
            return Ok(false);
        }
        self.committed();
        Ok(true)
    }

    /// A global task's position in each partition it reads.
    pub(crate) fn global_offsets(&self) -> Vec<(u32, i64)> {
        self.inputs
            .iter()
            .filter_map(|i| Some((i.partition, i.consumed.or(i.committed)?)))
            .collect()
    }

    /// After a commit: what was consumed is committed.
    pub(crate) fn committed(&mut self) {
        for input in &mut self.inputs {
            if let Some(off) = input.consumed {
                input.committed = Some(off);
            }
        }
        self.last_commit = Instant::now();
        self.uncommitted = false;
    }

    /// Exactly-once: the offsets to hand to the transaction (query, topic, partition,
    /// next offset) of the inputs that moved.
    pub(super) fn txn_offsets(&self) -> Vec<TxnOffset> {
        self.moved()
            .map(|(i, off)| TxnOffset {
                query: self.core.env.query.to_string(),
                topic: i.topic.to_string(),
                partition: i.partition,
                offset: off,
            })
            .collect()
    }

    /// The inputs processed past their last commit, with the next offset to commit.
    pub(super) fn moved(&self) -> impl Iterator<Item = (&Input, i64)> {
        self.inputs.iter().filter_map(|i| match i.consumed {
            Some(off) if i.committed != Some(off) => Some((i, off)),
            _ => None,
        })
    }

    /// Writes every changelogged store's checkpoint: how far its changelog reaches.
    pub(super) fn write_checkpoints(&self) -> Result<()> {
        let transport = &self.core.env.transport;
        for st in &self.core.env.state.stores {
            if let Some(c) = &st.changelog
                && let Some(dir) = &c.checkpoint_dir
                && let Some(end) = transport.acked_end(&c.topic, c.partition)
            {
                crate::state::changelog::write_checkpoint(dir, end)?;
            }
        }
        Ok(())
    }

    /// Steps 1-4 of a commit: the record cache (writing and forwarding), processors'
    /// buffers, stores, sinks; on Kafka everything produced is acknowledged, and with
    /// `checkpoints` the changelog checkpoints are written. False if the cluster did
    /// not acknowledge everything in time (no checkpoint is written then).
    pub(super) fn flush_for_commit(&mut self, checkpoints: bool) -> Result<bool> {
        self.flush_buffers()?;
        for s in &mut self.core.env.state.stores {
            s.store.flush()?;
        }
        self.flush_sinks()?;
        // Everything produced (output and changelogs) is acknowledged before the offsets
        // move; the checkpoints record how far the changelogs now reach.
        let env = &self.core.env;
        if !env.transport.flush(env.query_id, &env.query)? {
            return Ok(false);
        }
        // Records the cluster refused (a log-and-continue production handler) go to the
        // dead-letter topic, acknowledged before the offsets move too.
        let refused = env.transport.take_failed_deliveries(env.query_id);
        if self.core.dead_letter_deliveries(refused)? {
            let env = &self.core.env;
            if !env.transport.flush(env.query_id, &env.query)? {
                return Ok(false);
            }
        }
        if checkpoints {
            self.write_checkpoints()?;
        }
        Ok(true)
    }

    /// Steps 1-2 of a commit: the record cache (writing and forwarding), then what
    /// processors buffer.
    pub(crate) fn flush_buffers(&mut self) -> Result<()> {
        self.core.flush_cache()?;
        // Processors write out what they buffer (suppression buffers, the observed
        // stream time of windowed aggregations), upstream first, each followed by
        // whatever that put into the cache.
        let saved = self.core.env.metadata.take();
        for i in 0..self.nodes.len() {
            let n = self.nodes[i];
            if self.core.kinds[n] != NodeKind::Processor {
                continue;
            }
            self.core.pre_commit_node(n)?;
            self.core.flush_cache()?;
        }
        self.core.env.metadata = saved;
        Ok(())
    }

    /// Gives back the queue charges of the records processed; true if the fetcher
    /// should wake.
    pub(crate) fn release_inputs(&mut self) -> bool {
        let mut wake = false;
        for input in &mut self.inputs {
            wake |= input.release();
        }
        wake
    }

    /// Closes every node and queue. Returns true if the fetcher should wake.
    pub(crate) fn close_all(&mut self) -> bool {
        let mut wake = false;
        for &n in &self.nodes {
            if let Some(node) = self.core.nodes[n].as_mut()
                && let Err(e) = node.close()
            {
                log::warn!(
                    "query '{}' task {}: closing '{}' failed: {e}",
                    self.core.env.query,
                    self.core.env.task_id,
                    self.core.names[n]
                );
            }
        }
        // A clean stop has committed (flushed the cache) before this; a failed task must
        // not write anything past its last commit.
        if let Some(c) = self.core.env.state.cache.as_mut() {
            c.discard();
        }
        self.core.env.state.pending_forwards.clear();
        // Close the stores now (RocksDB releases its directory lock), not whenever the
        // last reference to the task goes away.
        self.core.env.state.stores.clear();
        for input in &mut self.inputs {
            for b in input.local.drain(..) {
                input.release_records += b.len();
                input.release_bytes += b.remaining_bytes();
            }
            wake |= input.release();
            wake |= input.queue.close();
        }
        self.closed = true;
        wake
    }
}
