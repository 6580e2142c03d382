//! Versioned key-value stores (KIP-889) against a model: random puts and deletes, in
//! and out of timestamp order, and reads of the latest and of past versions, through a
//! processor on the test driver (RocksDB and in-memory).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use weir_runtime::serde::{I64Serde, StringSerde};
use weir_runtime::testing::TopologyTestDriver;
use weir_runtime::{
    Processor, ProcessorContext, Record, Result, RuntimeConfig, SinkSpec, SourceSpec, StoreSpec,
    Topology,
};

const HISTORY: i64 = 50;

#[derive(Debug, Clone)]
enum Op {
    /// Put key := value (None deletes) as of ts.
    Put(u8, Option<i64>, i64),
    /// Read key as of ts (None: the latest).
    Get(u8, Option<i64>),
}

/// Applies each op (the record's value, encoded) to the store and forwards what a read
/// returned: "value@timestamp", "none", or for a put whether it became the latest.
struct Apply;

impl Processor<String, String, String, String> for Apply {
    fn process(
        &mut self,
        r: Record<String, String>,
        ctx: &mut ProcessorContext<'_, String, String>,
    ) -> Result<()> {
        let parts: Vec<&str> = r.value.split(':').collect();
        let mut store = ctx.versioned_store::<String, i64>("v")?;
        let out = match parts[0] {
            "put" => {
                let value = parts[1].parse::<i64>().ok();
                let ts: i64 = parts[2].parse().unwrap();
                store.put(&r.key, value.as_ref(), ts)?.to_string()
            }
            _ => {
                let found = match parts[1] {
                    "latest" => store.get(&r.key)?,
                    t => store.get_as_of(&r.key, t.parse().unwrap())?,
                };
                found.map_or("none".to_string(), |v| {
                    format!("{}@{}", v.value, v.timestamp)
                })
            }
        };
        ctx.forward(Record::new(r.key, out, r.timestamp))
    }
}

fn driver(in_memory: bool) -> TopologyTestDriver {
    let mut t = Topology::new();
    t.add_source("ops", &["ops"], SourceSpec::new(StringSerde, StringSerde))
        .unwrap();
    t.add_processor("apply", || Apply, &["ops"]).unwrap();
    let mut spec =
        StoreSpec::new("v", StringSerde, I64Serde).versioned(Duration::from_millis(HISTORY as u64));
    if in_memory {
        spec = spec.in_memory();
    }
    t.add_state_store(spec, &["apply"]).unwrap();
    t.add_sink(
        "out",
        "results",
        SinkSpec::new(StringSerde, StringSerde),
        &["apply"],
    )
    .unwrap();
    TopologyTestDriver::new(t, RuntimeConfig::builder().build().unwrap()).unwrap()
}

/// The model: every accepted put per key; a read as of t is the put with the largest
/// timestamp at or before t (the last one piped among equal timestamps).
#[derive(Default)]
struct Model {
    puts: BTreeMap<u8, BTreeMap<i64, Option<i64>>>,
    observed: i64,
}

impl Model {
    fn put(&mut self, k: u8, v: Option<i64>, ts: i64) -> String {
        if ts < self.observed.saturating_sub(HISTORY) {
            return "false".to_string();
        }
        let versions = self.puts.entry(k).or_default();
        let latest = versions.keys().next_back().copied();
        versions.insert(ts, v);
        self.observed = self.observed.max(ts);
        latest.is_none_or(|l| ts >= l).to_string()
    }

    fn get(&self, k: u8, as_of: Option<i64>) -> String {
        let Some(versions) = self.puts.get(&k) else {
            return "none".to_string();
        };
        let found = match as_of {
            None => versions.iter().next_back(),
            Some(t) if t < self.observed.saturating_sub(HISTORY) => None,
            Some(t) => versions.range(..=t).next_back(),
        };
        match found {
            Some((ts, Some(v))) => format!("{v}@{ts}"),
            _ => "none".to_string(),
        }
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0u8..3, proptest::option::weighted(0.8, 0i64..100), 0i64..200)
            .prop_map(|(k, v, t)| Op::Put(k, v, t)),
        2 => (0u8..3, proptest::option::of(0i64..220)).prop_map(|(k, t)| Op::Get(k, t)),
    ];
    proptest::collection::vec(op, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn versioned_store_matches_the_model(ops in ops(), in_memory in any::<bool>()) {
        let driver = driver(in_memory);
        let input = driver.create_input_topic::<String, String>("ops").unwrap();
        let output = driver
            .create_output_topic_with::<String, String>("results", StringSerde, StringSerde)
            .unwrap();
        let mut model = Model::default();
        for op in ops {
            let (key, command, expected) = match op {
                Op::Put(k, v, t) => (
                    k,
                    format!("put:{}:{t}", v.map_or("-".to_string(), |v| v.to_string())),
                    model.put(k, v, t),
                ),
                Op::Get(k, t) => (
                    k,
                    format!("get:{}", t.map_or("latest".to_string(), |t| t.to_string())),
                    model.get(k, t),
                ),
            };
            input.pipe_input_at(format!("k{key}"), command.clone(), 0).unwrap();
            let got = output.read_value().unwrap();
            prop_assert_eq!(got, expected, "after {}", command);
        }
    }
}

/// Old versions past the history retention are no longer answered (their segments go
/// with range deletes), while those within it are.
#[test]
fn old_versions_expire_after_the_history_retention() {
    let driver = driver(false);
    let input = driver.create_input_topic::<String, String>("ops").unwrap();
    let output = driver
        .create_output_topic_with::<String, String>("results", StringSerde, StringSerde)
        .unwrap();
    for ts in 0..2000 {
        input
            .pipe_input_at("k", format!("put:{ts}:{ts}"), 0)
            .unwrap();
    }
    input.pipe_input_at("k", "get:1960".to_string(), 0).unwrap();
    input.pipe_input_at("k", "get:1948".to_string(), 0).unwrap();
    input
        .pipe_input_at("k", "get:latest".to_string(), 0)
        .unwrap();
    let results = output.read_values_to_list().unwrap();
    assert_eq!(
        results[results.len() - 3..],
        ["1960@1960", "none", "1999@1999"]
    );
}
