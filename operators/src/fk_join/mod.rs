//! Foreign-key table-table joins (Kafka Streams' KIP-213, `KTable#join(other,
//! foreignKeyExtractor, joiner)`): each row of the left table joins the row of the
//! right table whose key its value names.
//!
//! Why two internal topics rather than co-partitioning: the left rows that name one
//! foreign key live in every partition of the left table. Each left change goes, keyed
//! by its foreign key, through the *subscription* topic to the right table's
//! partition of that key, where a subscription store remembers who subscribed; the
//! right side answers through the *response* topic, back to the left row's own
//! partition, where the join happens. A change of a right row answers every
//! subscriber of its key. A left row that moves to another foreign key unsubscribes
//! from the old one, and a hash of the left value travels with each subscription so
//! that an answer to a value the row no longer has is dropped (see `wire.rs`).
//!
//! Where the state lives: the subscription store (RocksDB, one row of ~25 bytes plus
//! both keys per left row, with a changelog) on the right side, the result table's
//! store on the left side; both under the runtime's shared cache and limit. The only
//! memory outside a store is transient: a right row's change reads its subscribers'
//! keys at once.

mod processors;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::serde::{BytesSerde, DefaultSerde, OptionSerde};
use weir_runtime::{Change, Data, Error, SinkSpec, SourceSpec, StoreSpec};

use crate::grouped::Materialized;
use crate::join::NoOp;
use crate::stream::{ArcSerde, KStream};
use crate::table::{KTable, TableMeta, TableStore};
use processors::{
    FkExtractor, FkJoiner, FkResult, ForeignTableJoin, ResponseJoin, SubscriptionJoin,
    SubscriptionReceive, SubscriptionSend,
};
use wire::{Response, ResponseSerde, SubscribedSerde, Subscription, SubscriptionSerde};

/// Names a foreign-key join's internal topics, stores and processors (Kafka
/// Streams' `TableJoined#as`): `<name>-subscription-registration-topic`,
/// `<name>-subscription-response-topic`, `<name>-subscription-store`, ... Without a
/// name they are numbered like Kafka's (`KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-
/// 0000000006-topic`), which moves when the topology changes upstream: name joins
/// whose state must survive an upgrade.
#[derive(Debug, Clone, Default)]
pub struct TableJoined {
    name: Option<String>,
}

impl TableJoined {
    /// A join named `name`.
    pub fn as_(name: impl Into<String>) -> Self {
        TableJoined {
            name: Some(name.into()),
        }
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// Joins each row with `other`'s row whose key `extractor(key, value)` names
    /// (Kafka Streams' foreign-key `KTable#join`): a row for each left key whose
    /// foreign row exists, `joiner(left, right)`, updated when either row changes,
    /// moved when the foreign key changes, deleted when either row goes. A row whose
    /// extractor gives no key (`None`: the extractor may return `KO` or `Option<KO>`)
    /// does not join. Each update carries the larger of the two rows' timestamps (a
    /// right row's change carries its own). The tables need not be co-partitioned:
    /// the join goes through two internal topics,
    /// `<application>-<query>-…-subscription-registration-topic` (as many partitions
    /// as `other`'s topic) and `…-subscription-response-topic` (as many as this
    /// table's). The result is a table with a store of its own
    /// (`KTABLE-FK-JOIN-OUTPUT-STATE-STORE-…`, not cached, so every update goes
    /// downstream, as Kafka Streams emits them); like Kafka's, it may emit a
    /// tombstone for a key that had no result, since the left side cannot know
    /// whether the old foreign key joined. As in Kafka Streams, `other`'s topic must be
    /// partitioned by Kafka's default partitioner (murmur2 of the serialized key, as
    /// Java producers and weir's sinks do; librdkafka's default, CRC32, is not), so
    /// that a subscription keyed by foreign key reaches the partition of its row.
    ///
    /// ```
    /// use weir::prelude::*;
    /// use weir::testing::TopologyTestDriver;
    ///
    /// # fn main() -> weir::Result<()> {
    /// let builder = StreamsBuilder::new();
    /// let orders = builder.table::<String, String>("orders"); // order id -> "item|customer id"
    /// let customers = builder.table::<String, String>("customers"); // customer id -> name
    /// orders
    ///     .join_foreign(
    ///         &customers,
    ///         |_order, v| v.split('|').nth(1).map(str::to_string),
    ///         |order, name| format!("{order} for {name}"),
    ///     )
    ///     .to("orders-with-names");
    /// let driver = TopologyTestDriver::new(builder.build()?, RuntimeConfig::builder().build()?)?;
    /// driver.create_input_topic::<String, String>("customers")?.pipe_input_at("c1", "Ann", 1)?;
    /// driver.create_input_topic::<String, String>("orders")?.pipe_input_at("o1", "tea|c1", 2)?;
    /// let out = driver.create_output_topic::<String, Option<String>>("orders-with-names")?;
    /// let r = out.read_record()?;
    /// assert_eq!((r.key.as_str(), r.value.as_deref(), r.timestamp), ("o1", Some("tea|c1 for Ann"), 2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_foreign<KO, VO, VR, R, X, F>(
        &self,
        other: &KTable<KO, VO>,
        extractor: X,
        joiner: F,
    ) -> KTable<K, VR>
    where
        KO: Data,
        VO: Data,
        VR: Data + DefaultSerde,
        R: Into<Option<KO>>,
        X: Fn(&K, &V) -> R + Send + Sync + 'static,
        F: Fn(&V, &VO) -> VR + Send + Sync + 'static,
    {
        self.join_foreign_with(
            other,
            extractor,
            joiner,
            TableJoined::default(),
            Materialized::default()
                .with_value_serde(VR::default_serde())
                .without_caching(),
        )
    }

    /// Like [`KTable::join_foreign`], named by `joined` and stored as `materialized`
    /// says (cached unless it says `without_caching`, as in Kafka Streams; it must give
    /// a value serde).
    pub fn join_foreign_with<KO, VO, VR, R, X, F>(
        &self,
        other: &KTable<KO, VO>,
        extractor: X,
        joiner: F,
        joined: TableJoined,
        materialized: Materialized<K, VR>,
    ) -> KTable<K, VR>
    where
        KO: Data,
        VO: Data,
        VR: Data,
        R: Into<Option<KO>>,
        X: Fn(&K, &V) -> R + Send + Sync + 'static,
        F: Fn(&V, &VO) -> VR + Send + Sync + 'static,
    {
        let extractor: FkExtractor<K, V, KO> = Arc::new(move |k, v| extractor(k, v).into());
        // An inner join never calls the joiner without a foreign row.
        let joiner: FkJoiner<V, VO, VR> =
            Arc::new(move |v, vo: Option<&VO>| joiner(v, vo.expect("an inner join's row")));
        self.fk_join(other, extractor, joiner, false, joined, materialized)
    }

    /// Left join with `other`'s row whose key `extractor(key, value)` names (Kafka
    /// Streams' foreign-key `KTable#leftJoin`): a row for every left key,
    /// `joiner(left, right)` with `None` while the foreign row is missing or the
    /// extractor gives no key.
    pub fn left_join_foreign<KO, VO, VR, R, X, F>(
        &self,
        other: &KTable<KO, VO>,
        extractor: X,
        joiner: F,
    ) -> KTable<K, VR>
    where
        KO: Data,
        VO: Data,
        VR: Data + DefaultSerde,
        R: Into<Option<KO>>,
        X: Fn(&K, &V) -> R + Send + Sync + 'static,
        F: Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
    {
        self.left_join_foreign_with(
            other,
            extractor,
            joiner,
            TableJoined::default(),
            Materialized::default()
                .with_value_serde(VR::default_serde())
                .without_caching(),
        )
    }

    /// Like [`KTable::left_join_foreign`], named by `joined` and stored as
    /// `materialized` says.
    pub fn left_join_foreign_with<KO, VO, VR, R, X, F>(
        &self,
        other: &KTable<KO, VO>,
        extractor: X,
        joiner: F,
        joined: TableJoined,
        materialized: Materialized<K, VR>,
    ) -> KTable<K, VR>
    where
        KO: Data,
        VO: Data,
        VR: Data,
        R: Into<Option<KO>>,
        X: Fn(&K, &V) -> R + Send + Sync + 'static,
        F: Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
    {
        let extractor: FkExtractor<K, V, KO> = Arc::new(move |k, v| extractor(k, v).into());
        let joiner: FkJoiner<V, VO, VR> = Arc::new(joiner);
        self.fk_join(other, extractor, joiner, true, joined, materialized)
    }

    fn fk_join<KO: Data, VO: Data, VR: Data>(
        &self,
        other: &KTable<KO, VO>,
        extractor: FkExtractor<K, V, KO>,
        joiner: FkJoiner<V, VO, VR>,
        left_join: bool,
        joined: TableJoined,
        materialized: Materialized<K, VR>,
    ) -> KTable<K, VR> {
        let (left, left_store) = self.with_store();
        let (right, right_store) = other.with_store();
        let builder = left.changes.builder.clone();
        let failed = || {
            KTable::new(
                left.changes.add("KTABLE-FK-JOIN-FAILED", || NoOp),
                Arc::default(),
            )
        };
        let (Some(left_store), Some(right_store)) = (left_store, right_store) else {
            // with_store recorded why.
            return failed();
        };
        let (Some(k_serde), Some(v_serde), Some(ko_serde), Some(vo_serde)) = (
            left.meta.key_serde.clone(),
            left.meta.value_serde.clone(),
            right.meta.key_serde.clone(),
            right.meta.value_serde.clone(),
        ) else {
            builder.borrow_mut().check::<()>(Err(Error::Topology(format!(
                "the foreign-key join of '{}' with '{}' needs both tables' key and value serdes",
                left.node_name(),
                right.node_name()
            ))));
            return failed();
        };
        // A left row's old value says which foreign key to unsubscribe from.
        left.send_old.store(true, Ordering::Release);

        let mut inner = builder.borrow_mut();
        let mut named = |suffix: &str, prefix: &str| match &joined.name {
            Some(n) => format!("{n}{suffix}"),
            None => inner.next_name(prefix),
        };
        let sub_topic = named(
            "-subscription-registration",
            "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION",
        ) + "-topic";
        let send = named(
            "-subscription-registration-processor",
            "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION",
        );
        let sub_sink = named("-subscription-registration-sink", "KSTREAM-SINK");
        let sub_source = named("-subscription-registration-source", "KSTREAM-SOURCE");
        let sub_store = named(
            "-subscription-store",
            "KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE",
        );
        let receive = named(
            "-subscription-receive",
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR",
        );
        let join_foreign = named(
            "-subscription-join-foreign",
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR",
        );
        let foreign_join = named(
            "-foreign-join-subscription",
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR",
        );
        let resp_topic = named(
            "-subscription-response",
            "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE",
        ) + "-topic";
        let resp_sink = named("-subscription-response-sink", "KSTREAM-SINK");
        let resp_source = named("-subscription-response-source", "KSTREAM-SOURCE");
        let resolver = named(
            "-subscription-response-resolver",
            "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-PROCESSOR",
        );
        let result = named("-result", "KTABLE-FK-JOIN-OUTPUT");
        let result_spec = materialized
            .spec(
                &mut inner,
                "KTABLE-FK-JOIN-OUTPUT-STATE-STORE",
                k_serde.clone(),
                None,
            )
            .map(StoreSpec::timestamped);
        let sub_key = || OptionSerde(ArcSerde(ko_serde.clone()));
        let sub_value = || SubscriptionSerde(k_serde.clone());
        let resp_value = || ResponseSerde(vo_serde.clone());
        let r = inner
            .topology
            .add_internal_topic(&sub_topic, None)
            .and_then(|t| t.add_internal_topic(&resp_topic, None))
            .map(|_| ());
        inner.check(r);
        drop(inner);

        // Left partitions: subscribe.
        let (x, fs, vs) = (extractor, ko_serde.clone(), v_serde.clone());
        let subscriptions: KStream<Option<KO>, Subscription<K>> =
            left.changes
                .add_named(send.clone(), move || SubscriptionSend {
                    extractor: x.clone(),
                    fk_serde: fs.clone(),
                    value_serde: vs.clone(),
                    left_join,
                });
        let mut inner = builder.borrow_mut();
        let r = inner
            .topology
            .add_sink(
                &sub_sink,
                &sub_topic,
                SinkSpec::new(sub_key(), sub_value()),
                &[subscriptions.node_name()],
            )
            .and_then(|t| {
                t.add_source(
                    &sub_source,
                    &[sub_topic.as_str()],
                    SourceSpec::new(sub_key(), sub_value()),
                )
            })
            .map(|_| ());
        inner.check(r);
        drop(inner);

        // Right partitions: remember subscriptions, answer them, and answer every
        // subscriber when a right row changes.
        let received: KStream<Option<KO>, Subscription<K>> = KStream::new(&builder, sub_source);
        let (fs, ks, store) = (
            ko_serde.clone(),
            k_serde.clone(),
            Arc::<str>::from(&*sub_store),
        );
        let received: KStream<Option<KO>, Subscription<K>> =
            received.add_named(receive.clone(), move || SubscriptionReceive {
                store: store.clone(),
                fk_serde: fs.clone(),
                pk_serde: ks.clone(),
            });
        let rs = right_store.clone();
        let answers: KStream<K, Response<VO>> = received
            .add_named(join_foreign.clone(), move || SubscriptionJoin {
                right: rs.clone(),
            });
        let (fs, ks, store) = (
            ko_serde.clone(),
            k_serde.clone(),
            Arc::<str>::from(&*sub_store),
        );
        let fanned: KStream<K, Response<VO>> =
            right
                .changes
                .add_named(foreign_join.clone(), move || ForeignTableJoin {
                    store: store.clone(),
                    fk_serde: fs.clone(),
                    pk_serde: ks.clone(),
                });
        let mut inner = builder.borrow_mut();
        inner.add_store(
            StoreSpec::<Vec<u8>, _>::new(sub_store.clone(), BytesSerde, SubscribedSerde)
                .timestamped()
                .without_caching(),
            &receive,
        );
        let r = inner
            .topology
            .connect_store(&foreign_join, &sub_store)
            .and_then(|t| t.connect_store(&join_foreign, &right_store.name))
            .and_then(|t| {
                t.add_sink(
                    &resp_sink,
                    &resp_topic,
                    SinkSpec::new(ArcSerde(k_serde.clone()), resp_value())
                        .partitioner(|_, r: &Response<VO>, _| Some(r.primary_partition)),
                    &[answers.node_name(), fanned.node_name()],
                )
            })
            .and_then(|t| {
                t.add_source(
                    &resp_source,
                    &[resp_topic.as_str()],
                    SourceSpec::new(ArcSerde(k_serde.clone()), resp_value()),
                )
            })
            .map(|_| ());
        inner.check(r);
        drop(inner);

        // Left partitions again: join the answers that are still current.
        let responses: KStream<K, Response<VO>> = KStream::new(&builder, resp_source);
        let ls = left_store.clone();
        let results: KStream<K, Option<VR>> =
            responses.add_named(resolver.clone(), move || ResponseJoin {
                left: ls.clone(),
                value_serde: v_serde.clone(),
                joiner: joiner.clone(),
                left_join,
            });
        let Some(spec) = result_spec else {
            // Materialized::spec recorded why.
            return failed();
        };
        let send_old = Arc::new(AtomicBool::new(false));
        let (so, store) = (send_old.clone(), Arc::<str>::from(spec.name()));
        let changes: KStream<K, Change<VR>> = results.add_named(result.clone(), move || FkResult {
            store: store.clone(),
            send_old: so.clone(),
        });
        let meta = TableMeta {
            key_serde: Some(spec.key_serde().clone()),
            value_serde: Some(spec.value_serde().clone()),
            grace_ms: None,
            store: Some(TableStore {
                name: Arc::from(spec.name()),
                versioned: false,
                history: None,
            }),
        };
        let mut inner = builder.borrow_mut();
        let r = inner
            .topology
            .connect_store(&resolver, &left_store.name)
            .map(|_| ());
        inner.check(r);
        inner.add_store(spec, &result);
        drop(inner);
        KTable::new(changes, send_old).with_meta(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{Subscribed, combined_key};
    use crate::prelude::*;
    use crate::testing::TopologyTestDriver;

    fn tables(builder: &StreamsBuilder) -> (KTable<String, String>, KTable<String, String>) {
        (
            builder.table::<String, String>("left_table"),
            builder.table::<String, String>("right_table"),
        )
    }

    #[allow(clippy::ptr_arg)] // the extractor's signature: (&K, &V)
    fn fk(_: &String, v: &String) -> Option<String> {
        let split = v.split('|').nth(1)?;
        (split != "returnNull").then(|| split.to_string())
    }

    /// Kafka's names, numbered as Kafka numbers them after two source tables (indices
    /// 0–5): `KTableKTableForeignKeyJoinScenarioTest` lists
    /// `KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic`,
    /// `KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic` and
    /// `KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010-changelog`.
    #[test]
    fn internal_topics_and_stores_are_named_as_kafka_names_them() {
        let builder = StreamsBuilder::new();
        let (left, right) = tables(&builder);
        left.join_foreign(&right, fk, |l, r| format!("{l}+{r}"))
            .to_stream()
            .to("out");
        let described = builder.build().unwrap().describe().to_string();
        for name in [
            "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic",
            "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000007",
            "KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010",
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000011",
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000012",
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000013",
            "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic",
            "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-PROCESSOR-0000000017",
            "KTABLE-FK-JOIN-OUTPUT-0000000018",
            "KTABLE-FK-JOIN-OUTPUT-STATE-STORE-0000000019",
        ] {
            assert!(described.contains(name), "{name} missing from\n{described}");
        }

        let builder = StreamsBuilder::new();
        let (left, right) = tables(&builder);
        left.left_join_foreign_with(
            &right,
            fk,
            |l, r: Option<&String>| format!("{l}+{r:?}"),
            TableJoined::as_("orders-customers"),
            Materialized::as_("joined").with_value_serde(StringSerde),
        )
        .to_stream()
        .to("out");
        let described = builder.build().unwrap().describe().to_string();
        for name in [
            "orders-customers-subscription-registration-topic",
            "orders-customers-subscription-registration-processor",
            "orders-customers-subscription-store",
            "orders-customers-subscription-receive",
            "orders-customers-subscription-join-foreign",
            "orders-customers-foreign-join-subscription",
            "orders-customers-subscription-response-topic",
            "orders-customers-subscription-response-resolver",
            "orders-customers-result",
            "joined",
        ] {
            assert!(described.contains(name), "{name} missing from\n{described}");
        }
    }

    /// The subscription-store half of Kafka's
    /// `KTableKTableForeignKeyJoinIntegrationTest.shouldEmitRecordWhenOldAndNewFkDiffer`
    /// (the outputs are checked in the conformance port): a left row that moves from
    /// `rhs1` to no foreign key leaves the subscription of (rhs1, lhs1).
    #[test]
    fn should_emit_record_when_old_and_new_fk_differ_unsubscribes() {
        let builder = StreamsBuilder::new();
        let (left, right) = tables(&builder);
        left.left_join_foreign(&right, fk, |l, r: Option<&String>| {
            format!("({l},{})", r.map_or("null", String::as_str))
        })
        .to_stream()
        .to("out");
        let driver = TopologyTestDriver::new(
            builder.build().unwrap(),
            RuntimeConfig::builder().build().unwrap(),
        )
        .unwrap();
        let input = driver
            .create_input_topic::<String, String>("left_table")
            .unwrap();
        let out = driver
            .create_output_topic::<String, Option<String>>("out")
            .unwrap();
        let subscriptions = driver
            .key_value_store::<Vec<u8>, Subscribed>(
                "KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010",
            )
            .unwrap();
        // Kafka's `subscriptionStoreKey("lhs1", "rhs1")`: FK length, FK, PK.
        let key = combined_key(b"rhs1", b"lhs1").unwrap();
        assert_eq!(key, b"\0\0\0\x04rhs1lhs1");

        input.pipe_input_at("lhs1", "lhsValue1|rhs1", 0).unwrap();
        assert_eq!(
            out.read_key_values_to_list().unwrap(),
            vec![(
                "lhs1".to_string(),
                Some("(lhsValue1|rhs1,null)".to_string())
            )]
        );
        let row = subscriptions.get(&key).unwrap().expect("subscribed");
        assert_eq!(row.primary_partition, 0);
        assert!(row.hash.is_some());

        input
            .pipe_input_at("lhs1", "lhsValue1|returnNull", 0)
            .unwrap();
        assert_eq!(
            out.read_key_values_to_list().unwrap(),
            vec![(
                "lhs1".to_string(),
                Some("(lhsValue1|returnNull,null)".to_string())
            )]
        );
        assert_eq!(subscriptions.get(&key).unwrap(), None);
        assert!(subscriptions.all().unwrap().is_empty());
    }
}
