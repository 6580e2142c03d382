//! Topologies: the graph of sources, processors and sinks a query runs.
//!
//! The DSL in the `weir` crate builds a [`Topology`]; users of the Processor API can
//! build one by hand, as with Kafka Streams' `Topology`. Edges are typed: each node
//! records the key and value types it takes and emits, and connecting mismatched nodes
//! is an error when the node is added, not when a record arrives.
//!
//! A topology splits into *sub-topologies*: the connected components of the graph.
//! A repartition topic cuts a graph in two (a sink writes it, a source in another
//! component reads it back). Each sub-topology runs as one task per input partition.

mod describe;
mod handlers;
mod nodes;
pub(crate) mod plan;
mod specs;

pub use describe::TopologyDescription;
pub use specs::{
    SinkSpec, SourceSpec, StoreKind, StoreSpec, StreamPartitioner, TimestampExtractor,
};

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::processor::internals::{Node, ProcessorNode, StoreSerdes};
use crate::processor::{Data, Processor};
use crate::state::window::StoreType;
use nodes::{SinkNode, SourceNode};

pub use crate::processor::NodeId;
pub(crate) use crate::processor::internals::NodeKind;

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) type NodeFactory = Arc<dyn Fn() -> Box<dyn Node> + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Types {
    key: TypeId,
    value: TypeId,
    key_name: &'static str,
    value_name: &'static str,
}

impl Types {
    fn of<K: 'static, V: 'static>() -> Self {
        Types {
            key: TypeId::of::<K>(),
            value: TypeId::of::<V>(),
            key_name: std::any::type_name::<K>(),
            value_name: std::any::type_name::<V>(),
        }
    }
}

impl std::fmt::Display for Types {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}, {}>", self.key_name, self.value_name)
    }
}

#[derive(Clone)]
pub(crate) struct NodeDef {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) parents: Vec<NodeId>,
    pub(crate) children: Vec<NodeId>,
    pub(crate) factory: NodeFactory,
    output: Option<Types>,
}

/// A sub-topology: one connected component of the graph.
#[derive(Debug, Clone)]
pub(crate) struct SubTopology {
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) sources: Vec<NodeId>,
    pub(crate) sinks: Vec<NodeId>,
    /// A global store's updater ([`Topology::add_global_store`]): one task reading
    /// every partition of its topic, in every process.
    pub(crate) global: bool,
}

/// A store as the topology keeps it: typed serdes erased.
#[derive(Clone)]
pub(crate) struct StoreDef {
    pub(crate) name: String,
    pub(crate) kind: StoreKind,
    pub(crate) store_type: StoreType,
    pub(crate) caching: bool,
    /// Values carry a timestamp (`StoreSpec::timestamped`).
    pub(crate) timestamped: bool,
    /// A global store ([`Topology::add_global_store`]): one instance per query, written
    /// by its global processor, read by every task.
    pub(crate) global: bool,
    pub(crate) types: (TypeId, TypeId),
    /// [`StoreSerdes<K, V>`], erased.
    pub(crate) serdes: Arc<dyn Any + Send + Sync>,
    pub(crate) processors: Vec<NodeId>,
}

/// A graph of sources, processors and sinks; give it to `Runtime::start_query`.
#[derive(Clone, Default)]
pub struct Topology {
    pub(crate) nodes: Vec<NodeDef>,
    by_name: HashMap<String, NodeId>,
    /// Internal (repartition) topics: name -> partition count (None: as upstream).
    pub(crate) internal_topics: BTreeMap<String, Option<u32>>,
    pub(crate) stores: Vec<StoreDef>,
    /// The sources and processors of global stores: they feed nothing else.
    global_nodes: BTreeSet<NodeId>,
    /// This query's processing exception handler, if it overrides the runtime's.
    pub(crate) processing_handler: Option<crate::config::ProcessingExceptionHandler>,
    /// This query's dead-letter topic, if it overrides the runtime's.
    pub(crate) dead_letter_topic: Option<String>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::Topology("node names must not be empty".into()));
        }
        if self.by_name.contains_key(name) {
            return Err(Error::Topology(format!(
                "a node named '{name}' already exists"
            )));
        }
        Ok(())
    }

    fn parents(&self, name: &str, parents: &[&str], input: Types) -> Result<Vec<NodeId>> {
        if parents.is_empty() {
            return Err(Error::Topology(format!(
                "node '{name}' needs at least one parent"
            )));
        }
        let mut ids = Vec::with_capacity(parents.len());
        for p in parents {
            let id = *self.by_name.get(*p).ok_or_else(|| {
                Error::Topology(format!("parent '{p}' of node '{name}' does not exist"))
            })?;
            let def = &self.nodes[id];
            if self.global_nodes.contains(&id) {
                return Err(Error::Topology(format!(
                    "'{p}' updates a global store and cannot be the parent of '{name}'"
                )));
            }
            let Some(out) = def.output else {
                return Err(Error::Topology(format!(
                    "sink '{p}' cannot be the parent of '{name}'"
                )));
            };
            if out != input {
                return Err(Error::Topology(format!(
                    "node '{name}' takes {input} but its parent '{p}' emits {out}"
                )));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn push(&mut self, mut def: NodeDef) -> NodeId {
        let id = self.nodes.len();
        for p in def.parents.clone() {
            self.nodes[p].children.push(id);
        }
        def.children.clear();
        self.by_name.insert(def.name.clone(), id);
        self.nodes.push(def);
        id
    }

    /// Adds a source reading `topics` (all must have the same partition count per task:
    /// task `p` reads partition `p` of each topic that has it).
    pub fn add_source<K: Data, V: Data>(
        &mut self,
        name: &str,
        topics: &[&str],
        spec: SourceSpec<K, V>,
    ) -> Result<&mut Self> {
        self.check_name(name)?;
        if topics.is_empty() {
            return Err(Error::Topology(format!("source '{name}' names no topic")));
        }
        for t in topics {
            if t.is_empty() {
                return Err(Error::Topology(format!(
                    "source '{name}' names an empty topic"
                )));
            }
            for n in &self.nodes {
                if let NodeKind::Source { topics } = &n.kind
                    && topics.iter().any(|x| x == t)
                {
                    return Err(Error::Topology(format!(
                        "topic '{t}' is already read by source '{}'",
                        n.name
                    )));
                }
            }
        }
        let factory: NodeFactory =
            Arc::new(move || Box::new(SourceNode { spec: spec.clone() }) as Box<dyn Node>);
        self.push(NodeDef {
            name: name.to_string(),
            kind: NodeKind::Source {
                topics: topics.iter().map(|t| t.to_string()).collect(),
            },
            parents: Vec::new(),
            children: Vec::new(),
            factory,
            output: Some(Types::of::<K, V>()),
        });
        Ok(self)
    }

    /// Adds a processor; `supplier` makes one instance per task.
    pub fn add_processor<KI, VI, KO, VO, P, S>(
        &mut self,
        name: &str,
        supplier: S,
        parents: &[&str],
    ) -> Result<&mut Self>
    where
        KI: Data,
        VI: Data,
        KO: Data,
        VO: Data,
        P: Processor<KI, VI, KO, VO>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        self.check_name(name)?;
        let parents = self.parents(name, parents, Types::of::<KI, VI>())?;
        let factory: NodeFactory = Arc::new(move || {
            Box::new(ProcessorNode::<P, KI, VI, KO, VO> {
                processor: supplier(),
                _types: PhantomData,
            }) as Box<dyn Node>
        });
        self.push(NodeDef {
            name: name.to_string(),
            kind: NodeKind::Processor,
            parents,
            children: Vec::new(),
            factory,
            output: Some(Types::of::<KO, VO>()),
        });
        Ok(self)
    }

    /// Adds a sink writing to `topic`.
    pub fn add_sink<K: Data, V: Data>(
        &mut self,
        name: &str,
        topic: &str,
        spec: SinkSpec<K, V>,
        parents: &[&str],
    ) -> Result<&mut Self> {
        self.check_name(name)?;
        if topic.is_empty() {
            return Err(Error::Topology(format!(
                "sink '{name}' names an empty topic"
            )));
        }
        let parents = self.parents(name, parents, Types::of::<K, V>())?;
        let factory: NodeFactory = Arc::new(move || {
            Box::new(SinkNode {
                spec: spec.clone(),
                topic: None,
                buffers: Vec::new(),
                key_buf: Vec::new(),
                round_robin: 0,
            }) as Box<dyn Node>
        });
        self.push(NodeDef {
            name: name.to_string(),
            kind: NodeKind::Sink {
                topic: topic.to_string(),
            },
            parents,
            children: Vec::new(),
            factory,
            output: None,
        });
        Ok(self)
    }

    /// Declares an internal topic (a repartition topic): at query start it is created as
    /// `<application>-<query>-<name>`, with `partitions` or, if `None`, as many
    /// partitions as the sub-topology that writes it reads.
    pub fn add_internal_topic(&mut self, name: &str, partitions: Option<u32>) -> Result<&mut Self> {
        if partitions == Some(0) {
            return Err(Error::Topology(format!(
                "internal topic '{name}' needs at least one partition"
            )));
        }
        self.internal_topics.insert(name.to_string(), partitions);
        Ok(self)
    }

    /// Adds a key-value store, usable by the named processors (each task gets its own
    /// instance). All of them must be in one sub-topology.
    pub fn add_state_store<K: Data, V: Data>(
        &mut self,
        spec: StoreSpec<K, V>,
        processors: &[&str],
    ) -> Result<&mut Self> {
        self.check_store_name(&spec.name)?;
        let serdes: StoreSerdes<K, V> = (spec.key_serde, spec.value_serde);
        self.stores.push(StoreDef {
            name: spec.name.clone(),
            kind: spec.kind,
            store_type: spec.store_type,
            caching: spec.caching,
            timestamped: spec.timestamped,
            global: false,
            types: (TypeId::of::<K>(), TypeId::of::<V>()),
            serdes: Arc::new(serdes),
            processors: Vec::new(),
        });
        for p in processors {
            self.connect_store(p, &spec.name)?;
        }
        Ok(self)
    }

    fn check_store_name(&self, name: &str) -> Result<()> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(Error::Topology(format!(
                "store name '{name}' must be non-empty ASCII letters, digits, '.', '_' or '-' (it names a directory)"
            )));
        }
        if self.stores.iter().any(|s| s.name == name) {
            return Err(Error::Topology(format!(
                "a store named '{name}' already exists"
            )));
        }
        Ok(())
    }

    /// Adds a global store (Kafka Streams' `addGlobalStore`): source `source_name`
    /// reads every partition of `topic` and hands each record to processor
    /// `processor_name`, which alone writes the store. Every process keeps the whole
    /// store; when a query starts it first reads the topic to its end (from the
    /// store's checkpoint, or from the beginning), and then follows it. Every
    /// processor of the query may read the store (its handle refuses writes) without
    /// being connected to it. The store is a key-value store without the record cache
    /// and without a changelog: its topic is its changelog. The processor forwards
    /// nothing (it has no children). The store's types may differ from the source's
    /// (a table's source reads `Option<V>`, `None` deleting the key).
    pub fn add_global_store<K, V, KS, VS, P, S>(
        &mut self,
        store: StoreSpec<K, V>,
        source_name: &str,
        topic: &str,
        source: SourceSpec<KS, VS>,
        processor_name: &str,
        supplier: S,
    ) -> Result<&mut Self>
    where
        K: Data,
        V: Data,
        KS: Data,
        VS: Data,
        P: Processor<KS, VS, KS, VS>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        self.check_store_name(&store.name)?;
        if !matches!(store.store_type, StoreType::KeyValue) {
            return Err(Error::Topology(format!(
                "global store '{}' must be a key-value store",
                store.name
            )));
        }
        if self.internal_topics.contains_key(topic) {
            return Err(Error::Topology(format!(
                "global store '{}' cannot read internal topic '{topic}'",
                store.name
            )));
        }
        self.check_name(processor_name)?;
        if source_name == processor_name {
            return Err(Error::Topology(format!(
                "a node named '{processor_name}' already exists"
            )));
        }
        self.add_source(source_name, &[topic], source)?;
        let src = self.nodes.len() - 1;
        self.add_processor(processor_name, supplier, &[source_name])?;
        let proc_id = self.nodes.len() - 1;
        self.global_nodes.insert(src);
        self.global_nodes.insert(proc_id);
        let name = store.name.clone();
        let serdes: StoreSerdes<K, V> = (store.key_serde, store.value_serde);
        self.stores.push(StoreDef {
            name,
            kind: store.kind,
            store_type: StoreType::KeyValue,
            caching: false,
            timestamped: store.timestamped,
            global: true,
            types: (TypeId::of::<K>(), TypeId::of::<V>()),
            serdes: Arc::new(serdes),
            processors: vec![proc_id],
        });
        Ok(self)
    }

    /// Gives processor `processor` access to store `store`.
    pub fn connect_store(&mut self, processor: &str, store: &str) -> Result<&mut Self> {
        let id = *self.by_name.get(processor).ok_or_else(|| {
            Error::Topology(format!(
                "processor '{processor}' (for store '{store}') does not exist"
            ))
        })?;
        if self.nodes[id].kind != NodeKind::Processor {
            return Err(Error::Topology(format!(
                "'{processor}' is not a processor; only processors use stores"
            )));
        }
        let def = self
            .stores
            .iter_mut()
            .find(|s| s.name == store)
            .ok_or_else(|| Error::Topology(format!("store '{store}' does not exist")))?;
        if def.global {
            // Every processor reads a global store; only its own processor writes it.
            return Ok(self);
        }
        if !def.processors.contains(&id) {
            def.processors.push(id);
        }
        Ok(self)
    }

    /// True if no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The connected components, ordered by their first node; fails if one has no source.
    pub(crate) fn subtopologies(&self) -> Result<Vec<SubTopology>> {
        let n = self.nodes.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for (i, def) in self.nodes.iter().enumerate() {
            for &q in &def.parents {
                let (a, b) = (find(&mut parent, i), find(&mut parent, q));
                parent[a.max(b)] = a.min(b);
            }
        }
        // Processors sharing a store run in one task (a join reads the other side's
        // store), so they are one sub-topology, as in Kafka Streams.
        for st in &self.stores {
            for w in st.processors.windows(2) {
                let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
                parent[a.max(b)] = a.min(b);
            }
        }
        let mut groups: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for i in 0..n {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        let mut out = Vec::new();
        for nodes in groups.into_values() {
            let sources: Vec<NodeId> = nodes
                .iter()
                .copied()
                .filter(|i| matches!(self.nodes[*i].kind, NodeKind::Source { .. }))
                .collect();
            if sources.is_empty() {
                return Err(Error::Topology(format!(
                    "node '{}' is not connected to any source",
                    self.nodes[nodes[0]].name
                )));
            }
            let sinks = nodes
                .iter()
                .copied()
                .filter(|i| matches!(self.nodes[*i].kind, NodeKind::Sink { .. }))
                .collect();
            let global = nodes.iter().any(|n| self.global_nodes.contains(n));
            out.push(SubTopology {
                nodes,
                sources,
                sinks,
                global,
            });
        }
        Ok(out)
    }

    /// Names of every topic a sink writes (internal ones unprefixed).
    pub(crate) fn sink_topics(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Sink { topic } => Some(topic.clone()),
                _ => None,
            })
            .collect()
    }

    /// Names of every source topic (internal ones unprefixed).
    pub fn source_topics(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Source { topics } => Some(topics.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::serde::{I64Serde, StringSerde};

    /// Forwards what it gets (also used by `plan.rs`'s tests).
    pub(super) struct Pass;
    impl Processor<String, String, String, String> for Pass {
        fn process(
            &mut self,
            r: Record<String, String>,
            ctx: &mut crate::processor::ProcessorContext<'_, String, String>,
        ) -> Result<()> {
            ctx.forward(r)
        }
    }

    #[test]
    fn type_mismatch_is_caught_when_connecting() {
        let mut t = Topology::new();
        t.add_source(
            "src",
            &["in"],
            SourceSpec::<String, i64>::new(StringSerde, I64Serde),
        )
        .unwrap();
        let err = t
            .add_processor("p", || Pass, &["src"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("takes <alloc::string::String, alloc::string::String>"),
            "{err}"
        );
        assert!(err.contains("emits <alloc::string::String, i64>"), "{err}");
    }

    #[test]
    fn names_parents_and_topics_are_checked() {
        let mut t = Topology::new();
        t.add_source(
            "src",
            &["in"],
            SourceSpec::<String, String>::new(StringSerde, StringSerde),
        )
        .unwrap();
        assert!(t.add_processor("src", || Pass, &["src"]).is_err());
        assert!(t.add_processor("p", || Pass, &["nope"]).is_err());
        assert!(t.add_processor("p", || Pass, &[]).is_err());
        assert!(
            t.add_source(
                "src2",
                &["in"],
                SourceSpec::<String, String>::new(StringSerde, StringSerde)
            )
            .is_err()
        );
        t.add_sink(
            "out",
            "o",
            SinkSpec::<String, String>::new(StringSerde, StringSerde),
            &["src"],
        )
        .unwrap();
        let err = t
            .add_processor("p", || Pass, &["out"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sink 'out' cannot be the parent"), "{err}");
    }

    #[test]
    fn subtopologies_split_at_internal_topics_and_describe() {
        let mut t = Topology::new();
        let s = || SourceSpec::<String, String>::new(StringSerde, StringSerde);
        let k = || SinkSpec::<String, String>::new(StringSerde, StringSerde);
        t.add_source("a", &["in"], s()).unwrap();
        t.add_processor("p", || Pass, &["a"]).unwrap();
        t.add_internal_topic("r-repartition", None).unwrap();
        t.add_sink("to-r", "r-repartition", k(), &["p"]).unwrap();
        t.add_source("b", &["r-repartition"], s()).unwrap();
        t.add_sink("out", "output", k(), &["b"]).unwrap();
        let subs = t.subtopologies().unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].nodes, vec![0, 1, 2]);
        assert_eq!(subs[1].nodes, vec![3, 4]);
        let d = t.describe().to_string();
        let want = "Topologies:
   Sub-topology: 0
    Source: a (topics: [in])
      --> p
    Processor: p (stores: [])
      --> to-r
      <-- a
    Sink: to-r (topic: r-repartition (internal))
      <-- p
   Sub-topology: 1
    Source: b (topics: [r-repartition (internal)])
      --> out
    Sink: out (topic: output)
      <-- b
";
        assert_eq!(d, want);
    }
}
