//! The consumer group, seen from the engine: which queries take part, what the
//! consumer is subscribed to, and what a rebalance does to tasks (revoked tasks commit
//! and close; tasks of assigned partitions are built and bound).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::core::RuntimeCore;
use super::query::QueryShared;
use crate::error::Result;
use crate::io::transport::{Binding, GroupMember, TopicPartition};
use crate::processor::TaskId;

/// The queries reading Kafka through the runtime's consumer group, and the topics the
/// consumer is subscribed to for them. Its lock orders task creation and revocation.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) queries: Vec<Arc<QueryShared>>,
    pub(crate) subscribed: BTreeSet<String>,
}

/// How long a rebalance waits for a revoked task to commit and close.
// A grouped transport (Kafka) revokes partitions; the in-process broker never does.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

impl RuntimeCore {
    /// Subscribes the consumer to every topic the group's queries read (unsubscribes
    /// when there is none), if that changed.
    pub(super) fn update_subscription(&self, group: &mut Group) -> Result<()> {
        if !self.transport.grouped() {
            return Ok(());
        }
        let topics: BTreeSet<String> = group
            .queries
            .iter()
            .filter(|q| !q.is_stopping())
            .flat_map(|q| {
                // Global stores' topics are read outside the group.
                (0..q.plan.subs.len())
                    .filter(|&si| !q.plan.is_global(si))
                    .flat_map(|si| q.plan.sources[si].iter().map(|(_, t)| t.clone()))
            })
            .collect();
        if topics != group.subscribed {
            self.transport.subscribe(&topics)?;
            group.subscribed = topics;
        }
        Ok(())
    }

    /// Builds and schedules the tasks of `query` that read partitions this member owns
    /// and that it does not run yet; returns their bindings.
    pub(super) fn start_owned_tasks(
        self: &Arc<Self>,
        query: &Arc<QueryShared>,
    ) -> Result<Vec<Binding>> {
        let Some(owned) = self.transport.owned() else {
            return Ok(Vec::new());
        };
        let running: HashSet<TaskId> = query.tasks().iter().map(|t| t.id).collect();
        let mut bindings = Vec::new();
        for (si, &count) in query.plan.counts.iter().enumerate() {
            if query.plan.is_global(si) {
                continue;
            }
            for p in 0..count {
                let id = TaskId {
                    subtopology: si,
                    partition: p,
                };
                let reads_owned = query.plan.sources[si]
                    .iter()
                    .any(|(_, t)| owned.contains(&TopicPartition::new(t.as_str(), p)));
                if running.contains(&id) || !reads_owned {
                    continue;
                }
                if let Some(built) = self.factory().build_task(query, si, p, Some(&owned))? {
                    bindings.extend(self.launch(query, built));
                }
            }
        }
        Ok(bindings)
    }

    /// Takes a query that stopped out of the group, unsubscribing its topics.
    pub(crate) fn leave_group(&self, query: &QueryShared) {
        if !self.transport.grouped() {
            return;
        }
        let mut g = self.group.lock();
        g.queries
            .retain(|q| !std::ptr::eq(&**q, query) && !q.is_stopping());
        if let Err(e) = self.update_subscription(&mut g) {
            log::warn!("cannot update the Kafka subscription: {e}");
        }
    }
}

impl GroupMember for RuntimeCore {
    fn revoked(self: Arc<Self>, partitions: &[TopicPartition]) {
        let g = self.group.lock();
        let gone: HashSet<(&str, u32)> = partitions
            .iter()
            .map(|tp| (tp.topic.as_str(), tp.partition))
            .collect();
        let mut closing = Vec::new();
        for q in &g.queries {
            for t in q.tasks() {
                if !t.global
                    && t.partitions
                        .iter()
                        .any(|(tp, p)| gone.contains(&(&**tp, *p)))
                {
                    t.revoke();
                    closing.push(t);
                }
            }
        }
        for t in closing {
            if !t.wait_closed(REVOKE_TIMEOUT) {
                log::error!(
                    "query '{}' task {}: not closed {} s after its partitions were revoked",
                    t.query.name,
                    t.id,
                    REVOKE_TIMEOUT.as_secs()
                );
            }
        }
    }

    fn readers(self: Arc<Self>, topic: &str) -> Vec<String> {
        let g = self.group.lock();
        g.queries
            .iter()
            .filter(|q| !q.is_stopping() && q.plan.reads(topic))
            .map(|q| q.name.to_string())
            .collect()
    }

    fn start_assigned(self: Arc<Self>) -> Vec<Binding> {
        let g = self.group.lock();
        let mut bindings = Vec::new();
        for q in g.queries.iter().filter(|q| !q.is_stopping()) {
            match self.start_owned_tasks(q) {
                Ok(b) => bindings.extend(b),
                Err(e) => {
                    log::error!("query '{}': cannot start its assigned tasks: {e}", q.name);
                    q.fail(e);
                }
            }
        }
        bindings
    }
}
