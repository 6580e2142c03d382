//! Kafka Streams' own DSL tests, ported to weir on the `TopologyTestDriver`: same
//! topologies, same inputs, same expected outputs (keys, values, timestamps, drop
//! counts). Each test names the Java test it comes from
//! (`streams/src/test/java/org/apache/kafka/streams/...`); where weir deliberately
//! differs, the test shows the difference and says why.

mod session_aggregate;
mod sliding_aggregate;
mod stream_global_table_join;
mod stream_stream_join;
mod stream_table_join;
mod stream_table_join_grace;
mod suppress;
mod suppress_processor;
mod table_aggregate;
mod table_table_fk_join;
mod table_table_join;
mod time_windows;
mod window_aggregate;

use std::sync::{Arc, Mutex};

use weir::prelude::*;
use weir::testing::TopologyTestDriver;
use weir::{Data, Window};

/// A driver for `builder`'s topology (its stores in a directory of its own, deleted
/// when it is dropped).
pub fn driver(builder: StreamsBuilder) -> TopologyTestDriver {
    let config = RuntimeConfig::builder().build().unwrap();
    TopologyTestDriver::new(builder.build().unwrap(), config).unwrap()
}

/// Kafka's `KeyValueTimestamp`: key, value, timestamp.
pub type Kvt<K, V> = (K, V, i64);

/// What a capturing processor saw: Kafka's `MockProcessor::processed()`.
#[derive(Debug, Clone)]
pub struct Captured<K, V>(Arc<Mutex<Vec<Kvt<K, V>>>>);

impl<K, V> Captured<K, V> {
    /// Everything seen since the last call (Kafka's `checkAndClearProcessResult`).
    pub fn take(&self) -> Vec<Kvt<K, V>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Capture<K, V>(Arc<Mutex<Vec<Kvt<K, V>>>>);

impl<K: Data, V: Data> Processor<K, V, K, V> for Capture<K, V> {
    fn process(&mut self, r: Record<K, V>, _ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        self.0.lock().unwrap().push((r.key, r.value, r.timestamp));
        Ok(())
    }
}

/// Captures every record of `stream` (Kafka's `MockProcessorSupplier`).
pub fn capture<K: Data, V: Data>(stream: &KStream<K, V>) -> Captured<K, V> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _: KStream<K, V> = stream.process(move || Capture(s.clone()));
    Captured(seen)
}

/// Kafka's `new Windowed<>(key, new TimeWindow(start, end))`.
pub fn w(key: &str, start: i64, end: i64) -> Windowed<String> {
    Windowed::new(key.to_string(), Window::new(start, end))
}

/// Kafka's `MockInitializer.STRING_INIT`.
pub fn string_init() -> String {
    "0".to_string()
}

/// Kafka's `MockAggregator.TOSTRING_ADDER`: `agg + "+" + value`.
pub fn tostring_adder(_key: &String, value: String, agg: String) -> String {
    format!("{agg}+{value}")
}

/// Kafka's `MockAggregator.TOSTRING_REMOVER`: `agg + "-" + value`.
pub fn tostring_remover(_key: &String, value: String, agg: String) -> String {
    format!("{agg}-{value}")
}

/// Some(value) for a capture of a table's `to_stream()`.
pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}
