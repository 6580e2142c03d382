//! Correlation: ad clicks attributed to the impressions that preceded them, a windowed
//! stream-stream left join on the embedded broker (Kafka Streams'
//! `KStream#leftJoin(KStream, ValueJoiner, JoinWindows, StreamJoined)`; weir names it
//! `left_join_stream`, Rust having no overloading).
//!
//! `impressions` and `clicks` are both keyed `user/ad` (the ad also in the JSON value),
//! with 2 partitions each (co-partitioned). A click at `t` is joined
//! with every impression of the same ad to the same user in `[t − 10 min, t]`
//! (`JoinWindows` 10 minutes before, 0 after, 1 minute of grace for records that arrive
//! out of order): one `attributed-clicks` record per (click, impression) pair,
//! timestamped with the click. A click that no impression preceded
//! goes out once, with `None`, when its window has closed — stream time past `t +
//! grace` — never early and never twice (Kafka's spurious-result fix). Both sides'
//! records live in RocksDB window stores kept for `before + after + grace`, under the
//! runtime's memory limit; the join adds no thread.
//!
//! Run: `cargo run --release -p weir-examples --example click_sessions`. Its unit tests
//! (on the TopologyTestDriver) run with the workspace's tests.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir::prelude::*;

weir::use_jemalloc!();

const MINUTE: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Impression {
    ad: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Click {
    ad: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attribution {
    ad: String,
    /// Whether an impression of the same ad to the same user preceded the click within
    /// the window.
    attributed: bool,
}

/// The join key: a user and an ad (`user/ad`).
fn user_ad(user: &str, ad: &str) -> String {
    format!("{user}/{ad}")
}

/// `clicks` ⟕ `impressions` of the same user and ad within 10 minutes before each
/// click → `attributed-clicks`, keyed `user/ad`.
fn attribution_topology() -> Result<Topology> {
    let builder = StreamsBuilder::new();
    // Both topics are keyed `user/ad` by their producers, with as many partitions: the
    // join reads them as they are. (Re-keying here with `select_key` would route both
    // through repartition topics, as Kafka Streams does; their records then arrive out
    // of order — each is written by several tasks — and the grace period must cover
    // that disorder.)
    let impressions = builder.stream::<String, Json<Impression>>("impressions");
    builder
        .stream::<String, Json<Click>>("clicks")
        .left_join_stream(
            &impressions,
            |click: &Json<Click>, seen: Option<&Json<Impression>>| {
                Json(Attribution {
                    ad: click.0.ad.clone(),
                    attributed: seen.is_some(),
                })
            },
            JoinWindows::of_time_difference_and_grace(
                Duration::from_secs(10 * 60),
                Duration::from_secs(60),
            )
            .after(Duration::ZERO),
            StreamJoined::defaults().with_name("click-impression"),
        )
        .to("attributed-clicks");
    builder.build()
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let state_dir = std::env::temp_dir().join("weir-click-sessions");
    let _ = std::fs::remove_dir_all(&state_dir);
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("click-sessions")
            .memory_limit(256 << 20)
            .commit_interval(Duration::from_millis(200))
            .state_dir(&state_dir)
            .build()?,
    )?;
    let broker = runtime.broker().clone();
    for topic in ["impressions", "clicks", "attributed-clicks"] {
        broker.create_topic(topic, 2)?;
    }
    let topology = attribution_topology()?;
    println!("{}", topology.describe());
    let query = runtime.start_query("attribution", topology)?;

    // 200 users over an hour: each sees an ad; even users click it 5 minutes later,
    // every third user also clicks an ad they were never shown. Sent in event-time
    // order, as they would happen.
    let users = 200i64;
    let mut events: Vec<(i64, &str, String, String)> = Vec::new();
    for u in 0..users {
        let t = u * 18_000; // one user every 18 s
        let ad = format!("ad{}", u % 7);
        events.push((t, "impressions", format!("u{u}"), ad.clone()));
        if u % 2 == 0 {
            events.push((t + 5 * MINUTE, "clicks", format!("u{u}"), ad));
        }
        if u % 3 == 0 {
            events.push((
                t + 6 * MINUTE,
                "clicks",
                format!("u{u}"),
                "ad-unseen".into(),
            ));
        }
    }
    events.sort_by_key(|e| e.0);
    for (t, topic, user, ad) in events {
        let key = user_ad(&user, &ad);
        if topic == "clicks" {
            broker.send_at(topic, &key, &Json(Click { ad }), t)?;
        } else {
            broker.send_at(topic, &key, &Json(Impression { ad }), t)?;
        }
    }
    // Traffic an hour later moves stream time on in every partition, closing the
    // windows of the unattributed clicks.
    for u in 0..users {
        let later = Json(Impression {
            ad: "ad0".to_string(),
        });
        let key = user_ad(&format!("u{u}"), "ad0");
        broker.send_at("impressions", &key, &later, 2 * 60 * MINUTE)?;
    }
    let (attributed, unseen) = ((users + 1) / 2, (users + 2) / 3);
    let expected = (attributed + unseen) as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = broker.read_all::<String, Json<Attribution>>("attributed-clicks")?;
        if out.len() >= expected {
            break out;
        }
        if Instant::now() > deadline {
            return Err(Error::msg(format!(
                "timed out: {} of {expected} attributions",
                out.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    query.stop()?;
    let hits = out.iter().filter(|r| r.record.value.0.attributed).count();
    println!(
        "{} clicks: {hits} attributed to an impression (expected {attributed}), {} with none in the 10 minutes before (expected {unseen})",
        out.len(),
        out.len() - hits
    );
    println!("\n{}", runtime.memory_report());
    runtime.shutdown()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::TopologyTestDriver;

    fn impression(ad: &str) -> Json<Impression> {
        Json(Impression { ad: ad.to_string() })
    }

    fn click(ad: &str) -> Json<Click> {
        Json(Click { ad: ad.to_string() })
    }

    fn attribution(ad: &str, attributed: bool) -> (String, Json<Attribution>, i64) {
        let user_ad = user_ad("ann", ad);
        let a = Attribution {
            ad: ad.to_string(),
            attributed,
        };
        (user_ad, Json(a), 0)
    }

    #[test]
    fn clicks_are_attributed_to_earlier_impressions_and_the_rest_after_their_window() {
        let driver = TopologyTestDriver::new(
            attribution_topology().unwrap(),
            RuntimeConfig::builder().build().unwrap(),
        )
        .unwrap();
        let impressions = driver
            .create_input_topic::<String, Json<Impression>>("impressions")
            .unwrap();
        let clicks = driver
            .create_input_topic::<String, Json<Click>>("clicks")
            .unwrap();
        let out = driver
            .create_output_topic::<String, Json<Attribution>>("attributed-clicks")
            .unwrap();
        let read = || -> Vec<(String, Json<Attribution>, i64)> {
            out.read_records_to_list()
                .unwrap()
                .into_iter()
                .map(|r| (r.key, r.value, r.timestamp))
                .collect()
        };
        impressions
            .pipe_input_at(user_ad("ann", "shoes"), impression("shoes"), 0)
            .unwrap();
        // 5 minutes later: attributed at once, with the click's timestamp.
        clicks
            .pipe_input_at(user_ad("ann", "shoes"), click("shoes"), 5 * MINUTE)
            .unwrap();
        let mut a = attribution("shoes", true);
        a.2 = 5 * MINUTE;
        assert_eq!(read(), vec![a]);
        // A click on an ad never shown: held back until its window closes (6 min + 0
        // after + 1 min of grace).
        clicks
            .pipe_input_at(user_ad("ann", "hats"), click("hats"), 6 * MINUTE)
            .unwrap();
        assert_eq!(read(), vec![]);
        // An impression just after the click does not attribute it (0 minutes after).
        impressions
            .pipe_input_at(user_ad("ann", "hats"), impression("hats"), 6 * MINUTE + 1)
            .unwrap();
        impressions
            .pipe_input_at(
                user_ad("ann", "bags"),
                impression("bags"),
                6 * MINUTE + 30_000,
            )
            .unwrap();
        assert_eq!(read(), vec![]);
        // A click 11.5 minutes after its impression: too late to be attributed. Its
        // timestamp moves stream time past the hats click's window, which goes out.
        clicks
            .pipe_input_at(user_ad("ann", "bags"), click("bags"), 18 * MINUTE)
            .unwrap();
        let mut hats = attribution("hats", false);
        hats.2 = 6 * MINUTE;
        assert_eq!(read(), vec![hats]);
        // Stream time past 18 min + 1 min of grace closes the bags click's window.
        impressions
            .pipe_input_at(user_ad("ann", "socks"), impression("socks"), 20 * MINUTE)
            .unwrap();
        let mut bags = attribution("bags", false);
        bags.2 = 18 * MINUTE;
        assert_eq!(read(), vec![bags]);
    }
}
