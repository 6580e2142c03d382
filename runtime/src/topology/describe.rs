//! `Topology::describe`: the sub-topologies in Kafka Streams' format.

use super::{NodeId, NodeKind, Topology};

impl Topology {
    /// A printable description of the sub-topologies, in Kafka Streams' format.
    pub fn describe(&self) -> TopologyDescription {
        let mut text = String::from("Topologies:\n");
        let subs = match self.subtopologies() {
            Ok(s) => s,
            Err(e) => {
                text.push_str(&format!("   (invalid: {e})\n"));
                return TopologyDescription { text };
            }
        };
        let names = |ids: &[NodeId]| -> String {
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.iter()
                    .map(|i| self.nodes[*i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let topic = |t: &str| -> String {
            if self.internal_topics.contains_key(t) {
                format!("{t} (internal)")
            } else {
                t.to_string()
            }
        };
        for (i, st) in subs.iter().enumerate() {
            if st.global {
                text.push_str(&format!(
                    "   Sub-topology: {i} for global store (will not generate tasks)\n"
                ));
            } else {
                text.push_str(&format!("   Sub-topology: {i}\n"));
            }
            for &id in &st.nodes {
                let def = &self.nodes[id];
                match &def.kind {
                    NodeKind::Source { topics } => {
                        let ts: Vec<String> = topics.iter().map(|t| topic(t)).collect();
                        text.push_str(&format!(
                            "    Source: {} (topics: [{}])\n",
                            def.name,
                            ts.join(", ")
                        ));
                    }
                    NodeKind::Processor => {
                        let stores: Vec<&str> = self
                            .stores
                            .iter()
                            .filter(|s| s.processors.contains(&id))
                            .map(|s| s.name.as_str())
                            .collect();
                        text.push_str(&format!(
                            "    Processor: {} (stores: [{}])\n",
                            def.name,
                            stores.join(", ")
                        ));
                    }
                    NodeKind::Sink { topic: t } => {
                        text.push_str(&format!("    Sink: {} (topic: {})\n", def.name, topic(t)));
                    }
                }
                if !def.children.is_empty() {
                    text.push_str(&format!("      --> {}\n", names(&def.children)));
                }
                if !def.parents.is_empty() {
                    text.push_str(&format!("      <-- {}\n", names(&def.parents)));
                }
            }
        }
        TopologyDescription { text }
    }
}

/// The text of [`Topology::describe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDescription {
    text: String,
}

impl std::fmt::Display for TopologyDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
