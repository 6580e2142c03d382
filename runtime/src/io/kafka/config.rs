//! Where the Kafka cluster is, and the librdkafka settings weir's clients share.

use rdkafka::config::ClientConfig;

use crate::error::{Error, Result};

/// Where the runtime's Kafka cluster is, and extra librdkafka settings for both clients.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct KafkaConfig {
    bootstrap_servers: String,
    properties: Vec<(String, String)>,
    replication_factor: i32,
}

impl KafkaConfig {
    /// A cluster reached through `bootstrap_servers` (`host:port[,host:port…]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
            replication_factor: -1,
        }
    }

    /// The replication factor of the internal topics weir creates (changelogs,
    /// repartition and join topics): Kafka Streams' `replication.factor`. The default,
    /// -1, asks for the broker's default (KIP-464); a broker that does not take -1
    /// needs an explicit count.
    pub fn replication_factor(mut self, replicas: i32) -> Self {
        self.replication_factor = replicas;
        self
    }

    pub(super) fn internal_replication(&self) -> i32 {
        self.replication_factor
    }

    /// Sets a librdkafka property on both clients (e.g. `security.protocol`). Set after
    /// weir's own, so it wins; `group.id` and offset handling are weir's.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config(
                "kafka bootstrap servers must not be empty".into(),
            ));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(Error::Config(format!(
                "kafka replication factor {} for internal topics: it must be -1 (the broker's default) or at least 1",
                self.replication_factor
            )));
        }
        for (k, _) in &self.properties {
            if matches!(
                k.as_str(),
                "group.id" | "enable.auto.commit" | "enable.auto.offset.store"
            ) {
                return Err(Error::Config(format!(
                    "kafka property '{k}' is set by weir (the group is the application id; offsets are committed by the runtime)"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weir_owns_the_group_and_offset_settings() {
        assert!(KafkaConfig::new("").validate().is_err());
        let e = KafkaConfig::new("localhost:9092")
            .property("group.id", "mine")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("group.id"), "{e}");
        assert!(
            KafkaConfig::new("localhost:9092")
                .property("security.protocol", "plaintext")
                .validate()
                .is_ok()
        );
        for bad in [0, -2] {
            let e = KafkaConfig::new("localhost:9092")
                .replication_factor(bad)
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains("replication factor"), "{e}");
        }
        assert!(
            KafkaConfig::new("localhost:9092")
                .replication_factor(3)
                .validate()
                .is_ok()
        );
    }
}
