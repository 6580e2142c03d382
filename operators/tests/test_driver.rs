//! The `TopologyTestDriver`: synchronous, deterministic, the runtime's own tasks.

use std::time::Duration;

use weir::Punctuation;
use weir::prelude::*;
use weir::testing::TopologyTestDriver;

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig::builder().state_dir(dir).build().unwrap()
}

/// Word count through a repartition topic: every input is counted before `pipe_input`
/// returns, one update per record (the record cache is off), and the store reads back.
#[test]
fn word_count_through_a_repartition_topic_is_processed_before_pipe_returns() {
    let dir = tempfile::tempdir().unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("lines")
        .flat_map_values(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone())
        .count_with(Materialized::as_("counts"))
        .to_stream()
        .to("word-counts");
    let driver = TopologyTestDriver::new(builder.build().unwrap(), config(dir.path())).unwrap();
    let lines = driver
        .create_input_topic::<String, String>("lines")
        .unwrap();
    let counts = driver
        .create_output_topic::<String, Option<i64>>("word-counts")
        .unwrap();

    lines.pipe_input_at("a", "the cat the", 10).unwrap();
    let out = counts.read_records_to_list().unwrap();
    let got: Vec<(String, Option<i64>, i64)> = out
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            ("the".to_string(), Some(1), 10),
            ("cat".to_string(), Some(1), 10),
            ("the".to_string(), Some(2), 10),
        ]
    );
    lines.pipe_input_at("b", "cat", 20).unwrap();
    assert_eq!(
        counts.read_key_value().unwrap(),
        ("cat".to_string(), Some(2))
    );
    assert!(counts.is_empty().unwrap());
    assert!(matches!(counts.read_record(), Err(weir::Error::NoRecord(t)) if t == "word-counts"));

    let store = driver.key_value_store::<String, i64>("counts").unwrap();
    assert_eq!(store.get(&"the".to_string()).unwrap(), Some(2));
    assert_eq!(store.get(&"dog".to_string()).unwrap(), None);
    let mut all = store.all().unwrap();
    all.sort();
    assert_eq!(all, vec![("cat".to_string(), 2), ("the".to_string(), 2)]);
    // A wrong type is a clear error, not a garbled read.
    let wrong = driver.key_value_store::<String, String>("counts");
    assert!(wrong.is_err());
    driver.close().unwrap();
}

/// Wall-clock punctuators fire only when the driver's clock is advanced.
#[test]
fn wall_clock_punctuators_fire_when_the_clock_is_advanced() {
    struct Ticker;
    impl Processor<String, String, String, i64> for Ticker {
        fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<()> {
            ctx.schedule(Duration::from_secs(10), PunctuationType::WallClockTime)?;
            Ok(())
        }
        fn process(
            &mut self,
            _r: Record<String, String>,
            _ctx: &mut ProcessorContext<'_, String, i64>,
        ) -> Result<()> {
            Ok(())
        }
        fn punctuate(
            &mut self,
            p: &Punctuation,
            ctx: &mut ProcessorContext<'_, String, i64>,
        ) -> Result<()> {
            ctx.forward(Record::new("tick".to_string(), p.timestamp, p.timestamp))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("in")
        .process(|| Ticker)
        .to("ticks");
    let driver = TopologyTestDriver::with_wall_clock(
        builder.build().unwrap(),
        config(dir.path()),
        1_000_000,
    )
    .unwrap();
    let ticks = driver.create_output_topic::<String, i64>("ticks").unwrap();
    driver
        .advance_wall_clock_time(Duration::from_secs(9))
        .unwrap();
    assert!(ticks.is_empty().unwrap());
    driver
        .advance_wall_clock_time(Duration::from_secs(1))
        .unwrap();
    assert_eq!(ticks.read_value().unwrap(), 1_010_000);
    driver
        .advance_wall_clock_time(Duration::from_secs(25))
        .unwrap();
    // Missed intervals fire once, as in Kafka Streams.
    assert_eq!(ticks.read_values_to_list().unwrap(), vec![1_035_000]);
    assert_eq!(driver.wall_clock_ms(), 1_035_000);
}
