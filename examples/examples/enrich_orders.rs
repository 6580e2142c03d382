//! Enrichment: a stream of orders left-joined with a table of customers, on the
//! embedded broker (Kafka Streams' `KStream#leftJoin(KTable)`).
//!
//! `customers` (customer id → a JSON customer) is a table: each record sets the
//! customer's row, a null value deletes it. `orders` (customer id → a JSON order) is a
//! stream: every order is joined with its customer's row *as it is when the order is
//! processed*, and goes to `enriched-orders` with the customer's name and tier, or with
//! `None` if the customer is unknown. Table updates produce no output of their own.
//! Both topics have 4 partitions keyed by customer id, so each customer's orders and
//! row meet in the same task (the query refuses to start if they are not
//! co-partitioned). The customers' rows live in a RocksDB store under the runtime's
//! memory limit; the join adds no state of its own and no thread.
//!
//! Run: `cargo run --release -p weir-examples --example enrich_orders`. Its unit tests
//! (on the TopologyTestDriver) run with `cargo test --release -p weir-examples
//! --example enrich_orders` and with the workspace's tests.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir::prelude::*;

weir::use_jemalloc!();

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Customer {
    name: String,
    tier: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EnrichedOrder {
    order_id: u64,
    customer_id: String,
    amount_cents: u64,
    /// `None` when the order's customer has no row (yet).
    customer: Option<Customer>,
}

/// `orders` ⟕ `customers` → `enriched-orders`.
fn enrich_topology() -> Result<Topology> {
    let builder = StreamsBuilder::new();
    let customers = builder.table_with(
        "customers",
        Consumed::<String, Json<Customer>>::defaults(),
        Materialized::as_("customers-store"),
    );
    builder
        .stream::<String, Json<Order>>("orders")
        .left_join(&customers, |order: &Json<Order>, customer| {
            Json(EnrichedOrder {
                order_id: order.0.order_id,
                customer_id: String::new(), // set below, from the key
                amount_cents: order.0.amount_cents,
                customer: customer.map(|c| c.0.clone()),
            })
        })
        .map_values_with_key(|customer_id: &String, mut e: Json<EnrichedOrder>| {
            e.0.customer_id = customer_id.clone();
            e
        })
        .to("enriched-orders");
    builder.build()
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let state_dir = std::env::temp_dir().join("weir-enrich-orders");
    let _ = std::fs::remove_dir_all(&state_dir);
    let runtime = Runtime::new(
        RuntimeConfig::builder()
            .application_id("enrich-orders")
            .memory_limit(256 << 20)
            .commit_interval(Duration::from_millis(200))
            .state_dir(&state_dir)
            .build()?,
    )?;
    let broker = runtime.broker().clone();
    for topic in ["customers", "orders", "enriched-orders"] {
        broker.create_topic(topic, 4)?;
    }
    let topology = enrich_topology()?;
    println!("{}", topology.describe());

    let tiers = ["gold", "silver", "bronze"];
    for c in 0..100u64 {
        let customer = Customer {
            name: format!("customer-{c}"),
            tier: tiers[(c % 3) as usize].to_string(),
        };
        broker.send("customers", &format!("c{c}"), &Json(customer))?;
    }
    let query = runtime.start_query("enrich", topology)?;
    // Orders for 120 customer ids: the last 20 are unknown.
    let orders = 1000u64;
    for o in 0..orders {
        let order = Order {
            order_id: o,
            amount_cents: 100 + o * 7 % 5000,
        };
        broker.send("orders", &format!("c{}", o % 120), &Json(order))?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let enriched = loop {
        let out = broker.read_all::<String, Json<EnrichedOrder>>("enriched-orders")?;
        if out.len() as u64 == orders {
            break out;
        }
        if Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for the enriched orders"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    query.stop()?;
    let unknown = enriched
        .iter()
        .filter(|r| r.record.value.0.customer.is_none())
        .count();
    println!(
        "{} orders enriched: {} with their customer, {unknown} for unknown customers",
        enriched.len(),
        enriched.len() - unknown
    );
    if let Some(first) = enriched.first() {
        println!("for example: {:?}", first.record.value.0);
    }
    println!("\n{}", runtime.memory_report());
    runtime.shutdown()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::TopologyTestDriver;

    fn customer(name: &str, tier: &str) -> Json<Customer> {
        Json(Customer {
            name: name.to_string(),
            tier: tier.to_string(),
        })
    }

    #[test]
    fn orders_carry_the_customer_row_as_of_when_they_are_processed() {
        let driver = TopologyTestDriver::new(
            enrich_topology().unwrap(),
            RuntimeConfig::builder().build().unwrap(),
        )
        .unwrap();
        let customers = driver
            .create_input_topic::<String, Option<Json<Customer>>>("customers")
            .unwrap();
        let orders = driver
            .create_input_topic::<String, Json<Order>>("orders")
            .unwrap();
        let out = driver
            .create_output_topic::<String, Json<EnrichedOrder>>("enriched-orders")
            .unwrap();
        let order = |id| {
            Json(Order {
                order_id: id,
                amount_cents: 500,
            })
        };

        // An order before its customer exists: enriched with None (a left join).
        orders.pipe_input_at("c1", order(1), 10).unwrap();
        // The customer arrives: no output (only orders trigger the join).
        customers
            .pipe_input_at("c1", Some(customer("Ann", "gold")), 20)
            .unwrap();
        assert_eq!(out.queue_size().unwrap(), 1);
        orders.pipe_input_at("c1", order(2), 30).unwrap();
        // The customer's row changes; the next order sees the new one.
        customers
            .pipe_input_at("c1", Some(customer("Ann", "platinum")), 40)
            .unwrap();
        orders.pipe_input_at("c1", order(3), 50).unwrap();
        // The row is deleted: back to None.
        customers.pipe_tombstone_at("c1", 60).unwrap();
        orders.pipe_input_at("c1", order(4), 70).unwrap();

        let got: Vec<(u64, Option<String>, i64)> = out
            .read_records_to_list()
            .unwrap()
            .into_iter()
            .map(|r| {
                assert_eq!(r.value.0.customer_id, "c1");
                (
                    r.value.0.order_id,
                    r.value.0.customer.map(|c| c.tier),
                    r.timestamp,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, None, 10),
                (2, Some("gold".to_string()), 30),
                (3, Some("platinum".to_string()), 50),
                (4, None, 70),
            ]
        );
    }
}
