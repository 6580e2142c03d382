//! The driver: a topology, its tasks, its topics and its wall clock.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::stores::{KeyValueStoreView, SessionStoreView, VersionedStoreView, WindowStoreView};
use super::topics::{TestInputTopic, TestOutputTopic};
use crate::config::RuntimeConfig;
use crate::error::Result;
use crate::exec::driver::SyncQuery;
use crate::serde::{DefaultSerde, Serde};
use crate::topology::Topology;

/// Numbers drivers in the process (each gets its own state directory).
static NEXT_DRIVER: AtomicU64 = AtomicU64::new(0);

/// Runs a [`Topology`] synchronously, for unit tests: Kafka Streams'
/// `TopologyTestDriver`.
///
/// Every record piped into a [`TestInputTopic`] is processed completely before the call
/// returns (through repartition topics too), one record and one commit at a time; the
/// output is read from a [`TestOutputTopic`], the stores through
/// [`TopologyTestDriver::key_value_store`] and its window and session siblings.
/// Wall-clock punctuators fire only when [`TopologyTestDriver::advance_wall_clock_time`]
/// says so. No thread is started.
///
/// As in Kafka Streams' driver: every topic has one partition unless the configuration's
/// broker already has the topic with more; the record cache is off (each store write
/// goes through, so each update of an aggregation is forwarded); stores live in a fresh
/// directory under the configured state directory, deleted when the driver is dropped.
/// The query is named [`TopologyTestDriver::QUERY`] (internal topics are
/// `<application id>-query-<name>`).
///
/// ```
/// use weir_runtime::serde::StringSerde;
/// use weir_runtime::testing::TopologyTestDriver;
/// use weir_runtime::{RuntimeConfig, SinkSpec, SourceSpec, Topology};
///
/// # fn main() -> weir_runtime::Result<()> {
/// let mut topology = Topology::new();
/// topology.add_source("in", &["words"], SourceSpec::new(StringSerde, StringSerde))?;
/// topology.add_sink("out", "echo", SinkSpec::new(StringSerde, StringSerde), &["in"])?;
///
/// let dir = tempfile::tempdir().unwrap();
/// let config = RuntimeConfig::builder().state_dir(dir.path()).build()?;
/// let driver = TopologyTestDriver::new(topology, config)?;
/// let input = driver.create_input_topic::<String, String>("words")?;
/// let output = driver.create_output_topic::<String, String>("echo")?;
///
/// input.pipe_input_at("k".to_string(), "hello".to_string(), 42)?;
/// let record = output.read_record()?;
/// assert_eq!((record.key.as_str(), record.value.as_str(), record.timestamp), ("k", "hello", 42));
/// assert!(output.is_empty()?);
/// # Ok(())
/// # }
/// ```
pub struct TopologyTestDriver {
    query: Rc<RefCell<SyncQuery>>,
    state_dir: PathBuf,
}

impl std::fmt::Debug for TopologyTestDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopologyTestDriver")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl TopologyTestDriver {
    /// The name of the driver's query.
    pub const QUERY: &'static str = "query";

    /// A driver for `topology`, with wall-clock time starting now.
    pub fn new(topology: Topology, config: RuntimeConfig) -> Result<Self> {
        Self::with_wall_clock(topology, config, crate::record::now_millis())
    }

    /// A driver for `topology` whose wall clock starts at `wall_clock_ms` (milliseconds
    /// since the Unix epoch).
    pub fn with_wall_clock(
        topology: Topology,
        config: RuntimeConfig,
        wall_clock_ms: i64,
    ) -> Result<Self> {
        let mut config = config;
        let state_dir = config.state_dir.join(format!(
            "test-driver-{}-{}",
            std::process::id(),
            NEXT_DRIVER.fetch_add(1, Ordering::Relaxed)
        ));
        config.state_dir = state_dir.clone();
        let query = SyncQuery::new(Self::QUERY, &topology, &config, wall_clock_ms);
        let query = match query {
            Ok(q) => q,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&state_dir);
                return Err(e);
            }
        };
        Ok(TopologyTestDriver {
            query: Rc::new(RefCell::new(query)),
            state_dir,
        })
    }

    /// An input topic with the types' default serdes. Records piped into it are
    /// processed before the call returns.
    pub fn create_input_topic<K: DefaultSerde, V: DefaultSerde>(
        &self,
        topic: &str,
    ) -> Result<TestInputTopic<K, V>> {
        self.create_input_topic_with(topic, K::default_serde(), V::default_serde())
    }

    /// An input topic with explicit serdes.
    pub fn create_input_topic_with<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Result<TestInputTopic<K, V>> {
        TestInputTopic::new(self.query.clone(), topic, key_serde, value_serde)
    }

    /// An output topic with the types' default serdes, read from its first record.
    pub fn create_output_topic<K: DefaultSerde, V: DefaultSerde>(
        &self,
        topic: &str,
    ) -> Result<TestOutputTopic<K, V>> {
        self.create_output_topic_with(topic, K::default_serde(), V::default_serde())
    }

    /// An output topic with explicit serdes, read from its first record.
    pub fn create_output_topic_with<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> Result<TestOutputTopic<K, V>> {
        TestOutputTopic::new(self.query.clone(), topic, key_serde, value_serde)
    }

    /// Moves wall-clock time on by `advance`, fires every wall-clock punctuator now due,
    /// and processes what they wrote.
    pub fn advance_wall_clock_time(&self, advance: Duration) -> Result<()> {
        self.query.borrow_mut().advance_wall_clock(advance)
    }

    /// The driver's wall-clock time, in milliseconds since the Unix epoch.
    pub fn wall_clock_ms(&self) -> i64 {
        self.query.borrow().wall_clock()
    }

    /// Records dropped so far, Kafka Streams' `dropped-records-total` summed over the
    /// tasks: records windowed operators dropped for closed windows (one per record and
    /// window) and records sources skipped (deserialization handler, negative
    /// timestamp).
    pub fn dropped_records(&self) -> u64 {
        self.query.borrow().dropped_records()
    }

    /// Records processor `name` dropped so far (`weir_dropped_records_total` of that
    /// processor).
    pub fn dropped_records_by(&self, processor: &str) -> u64 {
        self.query.borrow().dropped_records_by(processor)
    }

    /// The largest and the average lateness (ms) of the records processed so far:
    /// Kafka Streams' `record-lateness-max` and `record-lateness-avg`. A record's
    /// lateness is how far its timestamp is behind its task's stream time when it
    /// arrives (zero if it is not behind).
    pub fn record_lateness(&self) -> Option<(i64, f64)> {
        self.query.borrow().record_lateness()
    }

    /// Read access to key-value store `name` (of every partition), typed `<K, V>` as
    /// the topology declared it.
    pub fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<KeyValueStoreView<K, V>> {
        KeyValueStoreView::new(self.query.clone(), name)
    }

    /// Read access to window store `name`, typed `<K, V>` as the topology declared it.
    pub fn window_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<WindowStoreView<K, V>> {
        WindowStoreView::new(self.query.clone(), name)
    }

    /// Read access to versioned store `name` (`Materialized::as_versioned`,
    /// `StoreSpec::versioned`), typed `<K, V>` as the topology declared it.
    pub fn versioned_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<VersionedStoreView<K, V>> {
        VersionedStoreView::new(self.query.clone(), name)
    }

    /// Read access to session store `name`, typed `<K, V>` as the topology declared it.
    pub fn session_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<SessionStoreView<K, V>> {
        SessionStoreView::new(self.query.clone(), name)
    }

    /// Closes every processor and store (committing first) and deletes the driver's
    /// state. Dropping the driver does the same but cannot report an error.
    pub fn close(self) -> Result<()> {
        self.query.borrow_mut().close()
    }
}

impl Drop for TopologyTestDriver {
    fn drop(&mut self) {
        if let Ok(mut q) = self.query.try_borrow_mut() {
            let _ = q.close();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
