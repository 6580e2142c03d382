//! The query plan: what a topology becomes on a cluster.
//!
//! Before a query starts, its topology is checked against the cluster's partition
//! counts and turned into tasks: each sub-topology gets as many tasks as the most
//! partitions among its source topics; internal (repartition) topics are named
//! `<application>-<query>-<topic>` and sized by the sub-topology that writes them;
//! each store lives in exactly one sub-topology; with changelogs, each store gets
//! `<application>-<query>-<store>-changelog`. The plan is a pure function of the
//! topology and the partition counts, tested here without a runtime.

use std::collections::HashMap;
use std::sync::Arc;

use super::{NodeId, NodeKind, SubTopology, Topology};
use crate::error::{Error, Result};
use crate::io::transport::InternalTopic;

/// What the transport a query runs on asks of its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    /// Tasks follow a consumer group (partitions move between processes): stores fed
    /// by several topics need them co-partitioned.
    pub(crate) grouped: bool,
    /// Stores have changelog topics.
    pub(crate) changelogs: bool,
}

/// What it takes to build a query's tasks, kept while the query runs: on Kafka, tasks
/// are created and closed as the group assigns and revokes partitions.
pub(crate) struct QueryPlan {
    pub(crate) topology: Topology,
    pub(crate) subs: Vec<SubTopology>,
    /// The sub-topology owning each store of `topology.stores`.
    pub(crate) store_sub: Vec<usize>,
    /// Tasks (partitions) per sub-topology.
    pub(crate) counts: Vec<u32>,
    /// Topology topic name -> broker topic name (internal topics are prefixed).
    pub(crate) topic_names: Arc<HashMap<String, String>>,
    pub(crate) children: Arc<Vec<Vec<usize>>>,
    pub(crate) names: Arc<Vec<String>>,
    pub(crate) kinds: Arc<Vec<NodeKind>>,
    /// Per sub-topology: its sources' (node, topic as named on the broker).
    pub(crate) sources: Vec<Vec<(NodeId, String)>>,
}

impl QueryPlan {
    /// Whether some sub-topology reads `topic`.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn reads(&self, topic: &str) -> bool {
        self.sources
            .iter()
            .zip(&self.subs)
            .filter(|(_, st)| !st.global)
            .flat_map(|(s, _)| s)
            .any(|(_, t)| t == topic)
    }

    /// Whether sub-topology `si` updates a global store (one task reading every
    /// partition of its topic, outside the consumer group).
    pub(crate) fn is_global(&self, si: usize) -> bool {
        self.subs[si].global
    }
}

impl std::fmt::Debug for QueryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPlan")
            .field("counts", &self.counts)
            .field("store_sub", &self.store_sub)
            .field("topic_names", &self.topic_names)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// `<application>-<query>-<store>-changelog`.
pub(crate) fn changelog_topic(application: &str, query: &str, store: &str) -> String {
    format!("{application}-{query}-{store}-changelog")
}

/// Checks `topology` (query `name` of application `application_id`) against the
/// cluster's partition counts and works out its tasks: partitions per sub-topology,
/// internal topic names and sizes, and, where stores have changelogs, their
/// changelog topics. Returns the plan and the internal topics the query needs. A pure
/// function of its arguments: `partitions` answers a topic's partition count.
pub(crate) fn plan_query(
    application_id: &str,
    name: &str,
    topology: &Topology,
    partitions: &dyn Fn(&str) -> Result<u32>,
    target: Target,
) -> Result<(QueryPlan, Vec<InternalTopic>)> {
    if topology.is_empty() {
        return Err(Error::Topology(format!(
            "query '{name}' has an empty topology"
        )));
    }
    let subs = topology.subtopologies()?;
    // Each store lives in exactly one sub-topology (one instance per task).
    let mut store_sub: Vec<usize> = Vec::with_capacity(topology.stores.len());
    for st in &topology.stores {
        let mut owners = st
            .processors
            .iter()
            .map(|p| subs.iter().position(|s| s.nodes.contains(p)).unwrap_or(0));
        let Some(first) = owners.next() else {
            return Err(Error::Topology(format!(
                "store '{}' is not connected to any processor",
                st.name
            )));
        };
        if owners.any(|o| o != first) {
            return Err(Error::Topology(format!(
                "store '{}' is used by processors of different sub-topologies",
                st.name
            )));
        }
        store_sub.push(first);
    }
    let prefix = format!("{application_id}-{name}-");
    let topic_names: Arc<HashMap<String, String>> = Arc::new(
        topology
            .internal_topics
            .keys()
            .map(|t| (t.clone(), format!("{prefix}{t}")))
            .collect(),
    );
    let resolve = |t: &str| topic_names.get(t).cloned().unwrap_or_else(|| t.to_string());

    // Partition count of each sub-topology = max over its source topics; internal
    // topics without a count take the count of the sub-topology writing them.
    let mut internal: HashMap<String, u32> = HashMap::new();
    for (t, p) in &topology.internal_topics {
        if let Some(p) = p {
            internal.insert(t.clone(), *p);
        }
    }
    // A join's repartition topics (a store shared by several processors: its
    // sub-topology reads topics that must be co-partitioned) take the partition count
    // of the join's other, external topics, as Kafka Streams sizes a co-partition
    // group — not their writer's.
    for (def, &si) in topology.stores.iter().zip(&store_sub) {
        if def.processors.len() < 2 {
            continue;
        }
        let topics: Vec<&String> = subs[si]
            .sources
            .iter()
            .filter_map(|&s| match &topology.nodes[s].kind {
                NodeKind::Source { topics } => Some(topics),
                _ => None,
            })
            .flatten()
            .collect();
        let mut external = None::<u32>;
        for t in topics
            .iter()
            .filter(|t| !topology.internal_topics.contains_key(**t))
        {
            if let Ok(n) = partitions(t) {
                external = Some(external.map_or(n, |m| m.max(n)));
            }
        }
        if let Some(n) = external {
            for t in topics {
                if topology.internal_topics.get(t) == Some(&None) {
                    internal.entry(t.clone()).or_insert(n);
                }
            }
        }
    }
    let mut counts: Vec<Option<u32>> = vec![None; subs.len()];
    // Sub-topologies with stores whose source topics differ in partition count.
    let mut uneven: Vec<Option<String>> = vec![None; subs.len()];
    for _ in 0..=subs.len() {
        for (i, st) in subs.iter().enumerate() {
            if st.global {
                // One task, reading every partition of the global topic.
                for &s in &st.sources {
                    if let NodeKind::Source { topics } = &topology.nodes[s].kind {
                        for t in topics {
                            partitions(t).map_err(|e| match e {
                                Error::UnknownTopic(_) => Error::Topology(format!(
                                    "global topic '{t}' of query '{name}' does not exist"
                                )),
                                e => Error::Topology(format!(
                                    "global topic '{t}' of query '{name}': {e}"
                                )),
                            })?;
                        }
                    }
                }
                counts[i] = Some(1);
                continue;
            }
            let mut max = Some(0u32);
            let mut seen = Vec::new();
            for &s in &st.sources {
                let NodeKind::Source { topics } = &topology.nodes[s].kind else {
                    continue;
                };
                for t in topics {
                    let n = if topology.internal_topics.contains_key(t) {
                        internal.get(t).copied()
                    } else {
                        Some(partitions(t).map_err(|e| match e {
                            Error::UnknownTopic(_) => Error::Topology(format!(
                                "source topic '{t}' of query '{name}' does not exist"
                            )),
                            e => Error::Topology(format!(
                                "source topic '{t}' of query '{name}': {e}"
                            )),
                        })?)
                    };
                    if let Some(n) = n {
                        seen.push((t.clone(), n));
                    }
                    max = match (max, n) {
                        (Some(m), Some(n)) => Some(m.max(n)),
                        _ => None,
                    };
                }
            }
            if seen.windows(2).any(|w| w[0].1 != w[1].1) {
                uneven[i] = Some(
                    seen.iter()
                        .map(|(t, n)| format!("'{t}' ({n})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            counts[i] = max;
            if let Some(c) = max {
                for &k in &st.sinks {
                    if let NodeKind::Sink { topic } = &topology.nodes[k].kind
                        && topology.internal_topics.contains_key(topic)
                    {
                        internal.entry(topic.clone()).or_insert(c);
                    }
                }
            }
        }
    }
    let mut to_create = Vec::new();
    for t in topology.internal_topics.keys() {
        let Some(p) = internal.get(t) else {
            return Err(Error::Topology(format!(
                "cannot size internal topic '{t}': it is read in a cycle or never written"
            )));
        };
        to_create.push(InternalTopic {
            name: resolve(t),
            partitions: *p,
            changelog: false,
        });
    }
    for def in &topology.nodes {
        if let NodeKind::Sink { topic } = &def.kind
            && !topology.internal_topics.contains_key(topic)
            && let Err(e) = partitions(topic)
        {
            return Err(Error::Topology(match e {
                Error::UnknownTopic(_) => {
                    format!("sink topic '{topic}' of query '{name}' does not exist")
                }
                e => format!("sink topic '{topic}' of query '{name}': {e}"),
            }));
        }
    }
    let counts: Vec<u32> = counts.into_iter().map(|c| c.unwrap_or(0)).collect();
    // A store shared by several processors of a sub-topology reading several topics is
    // a join: partition p of each topic must hold the same keys, on any transport.
    for (def, &si) in topology.stores.iter().zip(&store_sub) {
        if def.processors.len() > 1
            && let Some(topics) = &uneven[si]
        {
            return Err(Error::Topology(format!(
                "store '{}' of query '{name}' joins topics with different partition counts ({topics}): they must be co-partitioned (as many partitions, keyed alike); repartition one side to the other's count",
                def.name
            )));
        }
    }
    if target.grouped {
        // Tasks move between members by partition number: a task's store holds the
        // keys of partition p of every topic it reads, which the group's range
        // assignment gives one member only if the topics have as many partitions.
        for (def, &si) in topology.stores.iter().zip(&store_sub) {
            if let Some(topics) = &uneven[si] {
                return Err(Error::Topology(format!(
                    "store '{}' of query '{name}' is fed by topics with different partition counts ({topics}); on Kafka they must be co-partitioned",
                    def.name
                )));
            }
        }
    }
    if target.changelogs {
        // A global store's topic is its changelog.
        for (def, &si) in topology
            .stores
            .iter()
            .zip(&store_sub)
            .filter(|(d, _)| !d.global)
        {
            to_create.push(InternalTopic {
                name: changelog_topic(application_id, name, &def.name),
                partitions: counts[si],
                changelog: true,
            });
        }
    }
    let sources = subs
        .iter()
        .map(|st| {
            st.sources
                .iter()
                .flat_map(|&s| match &topology.nodes[s].kind {
                    NodeKind::Source { topics } => {
                        topics.iter().map(|t| (s, resolve(t))).collect::<Vec<_>>()
                    }
                    _ => Vec::new(),
                })
                .collect()
        })
        .collect();
    let plan = QueryPlan {
        topology: topology.clone(),
        children: Arc::new(topology.nodes.iter().map(|n| n.children.clone()).collect()),
        names: Arc::new(topology.nodes.iter().map(|n| n.name.clone()).collect()),
        kinds: Arc::new(topology.nodes.iter().map(|n| n.kind.clone()).collect()),
        subs,
        store_sub,
        counts,
        topic_names,
        sources,
    };
    Ok((plan, to_create))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::serde::StringSerde;
    use crate::topology::tests::Pass;
    use crate::topology::{SinkSpec, SourceSpec, StoreSpec};

    fn src() -> SourceSpec<String, String> {
        SourceSpec::new(StringSerde, StringSerde)
    }

    fn sink() -> SinkSpec<String, String> {
        SinkSpec::new(StringSerde, StringSerde)
    }

    /// `in` → p (store `counts`) → repartition topic `r` → q → `out`.
    fn two_stage() -> Topology {
        let mut t = Topology::new();
        t.add_source("a", &["in"], src()).unwrap();
        t.add_processor("p", || Pass, &["a"]).unwrap();
        t.add_state_store(
            StoreSpec::<String, String>::new("counts", StringSerde, StringSerde),
            &["p"],
        )
        .unwrap();
        t.add_internal_topic("r", None).unwrap();
        t.add_sink("to-r", "r", sink(), &["p"]).unwrap();
        t.add_source("b", &["r"], src()).unwrap();
        t.add_processor("q", || Pass, &["b"]).unwrap();
        t.add_sink("out", "out", sink(), &["q"]).unwrap();
        t
    }

    fn cluster(topics: &[(&str, u32)]) -> impl Fn(&str) -> Result<u32> {
        let topics: HashMap<String, u32> =
            topics.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        move |t: &str| {
            topics
                .get(t)
                .copied()
                .ok_or_else(|| Error::UnknownTopic(t.to_string()))
        }
    }

    const EMBEDDED: Target = Target {
        grouped: false,
        changelogs: false,
    };
    const KAFKA: Target = Target {
        grouped: true,
        changelogs: true,
    };

    #[test]
    fn tasks_follow_source_partitions_and_internal_topics_their_writer() {
        let partitions = cluster(&[("in", 4), ("out", 2)]);
        let (plan, topics) = plan_query("app", "q1", &two_stage(), &partitions, EMBEDDED).unwrap();
        assert_eq!(plan.counts, vec![4, 4]);
        assert_eq!(plan.store_sub, vec![0]);
        assert_eq!(plan.topic_names["r"], "app-q1-r");
        assert_eq!(
            topics,
            vec![InternalTopic {
                name: "app-q1-r".into(),
                partitions: 4,
                changelog: false,
            }]
        );
        // Sources as the broker names them: the repartition topic is prefixed.
        let read: Vec<&str> = plan.sources[1].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(read, vec!["app-q1-r"]);
        assert!(plan.reads("app-q1-r") && plan.reads("in") && !plan.reads("out"));
    }

    #[test]
    fn with_changelogs_each_store_gets_one_sized_by_its_tasks() {
        let partitions = cluster(&[("in", 3), ("out", 1)]);
        let (_, topics) = plan_query("app", "q1", &two_stage(), &partitions, KAFKA).unwrap();
        assert!(topics.contains(&InternalTopic {
            name: "app-q1-counts-changelog".into(),
            partitions: 3,
            changelog: true,
        }));
        assert_eq!(topics.len(), 2);
    }

    #[test]
    fn an_explicit_internal_partition_count_wins() {
        let mut t = two_stage();
        t.add_internal_topic("r", Some(6)).unwrap();
        let partitions = cluster(&[("in", 2), ("out", 1)]);
        let (plan, topics) = plan_query("app", "q", &t, &partitions, EMBEDDED).unwrap();
        assert_eq!(plan.counts, vec![2, 6]);
        assert_eq!(topics[0].partitions, 6);
    }

    #[test]
    fn missing_topics_and_empty_topologies_are_refused_with_their_names() {
        let e = plan_query("app", "q", &two_stage(), &cluster(&[("out", 1)]), EMBEDDED)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source topic 'in' of query 'q' does not exist"),
            "{e}"
        );
        let e = plan_query("app", "q", &two_stage(), &cluster(&[("in", 1)]), EMBEDDED)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sink topic 'out' of query 'q' does not exist"),
            "{e}"
        );
        let e = plan_query("app", "q", &Topology::new(), &cluster(&[]), EMBEDDED)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty topology"), "{e}");
    }

    #[test]
    fn a_store_fed_by_topics_of_different_sizes_needs_co_partitioning_only_when_grouped() {
        let mut t = Topology::new();
        t.add_source("a", &["left", "right"], src()).unwrap();
        t.add_processor("p", || Pass, &["a"]).unwrap();
        t.add_state_store(
            StoreSpec::<String, String>::new("s", StringSerde, StringSerde),
            &["p"],
        )
        .unwrap();
        let partitions = cluster(&[("left", 4), ("right", 2)]);
        let (plan, _) = plan_query("app", "q", &t, &partitions, EMBEDDED).unwrap();
        assert_eq!(plan.counts, vec![4]);
        let e = plan_query("app", "q", &t, &partitions, KAFKA)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("store 's' of query 'q' is fed by topics with different partition counts ('left' (4), 'right' (2))"),
            "{e}"
        );
    }

    /// A re-keyed stream joined with a table: its repartition topic takes the table's
    /// partition count (the co-partition group's), not its writer's.
    #[test]
    fn a_joins_repartition_topic_is_sized_like_the_other_side() {
        let mut t = Topology::new();
        t.add_source("orders", &["orders"], src()).unwrap();
        t.add_processor("rekey", || Pass, &["orders"]).unwrap();
        t.add_internal_topic("r", None).unwrap();
        t.add_sink("to-r", "r", sink(), &["rekey"]).unwrap();
        t.add_source("rekeyed", &["r"], src()).unwrap();
        t.add_source("table", &["customers"], src()).unwrap();
        t.add_processor("materialize", || Pass, &["table"]).unwrap();
        t.add_processor("join", || Pass, &["rekeyed"]).unwrap();
        t.add_state_store(
            StoreSpec::<String, String>::new("rows", StringSerde, StringSerde),
            &["materialize", "join"],
        )
        .unwrap();
        let partitions = cluster(&[("orders", 4), ("customers", 2)]);
        for target in [EMBEDDED, KAFKA] {
            let (plan, topics) = plan_query("app", "q", &t, &partitions, target).unwrap();
            let r = topics.iter().find(|t| t.name == "app-q-r").unwrap();
            assert_eq!(r.partitions, 2);
            assert_eq!(plan.counts.iter().copied().max(), Some(4));
            assert!(plan.counts.contains(&2), "{:?}", plan.counts);
        }
        // Without the shared store (no join), the writer's count wins, as before.
        let mut u = Topology::new();
        u.add_source("orders", &["orders"], src()).unwrap();
        u.add_processor("rekey", || Pass, &["orders"]).unwrap();
        u.add_internal_topic("r", None).unwrap();
        u.add_sink("to-r", "r", sink(), &["rekey"]).unwrap();
        u.add_source("rekeyed", &["r", "customers"], src()).unwrap();
        u.add_processor("p", || Pass, &["rekeyed"]).unwrap();
        let (_, topics) = plan_query("app", "q", &u, &partitions, EMBEDDED).unwrap();
        assert_eq!(
            topics
                .iter()
                .find(|t| t.name == "app-q-r")
                .unwrap()
                .partitions,
            4
        );
    }
}
