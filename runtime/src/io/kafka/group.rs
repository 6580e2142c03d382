//! The consumer group: rebalances handed to the engine, the partitions this member
//! owns, where each query reads from, pausing, and committing every query's position.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Assigned, KafkaClients, REQUEST_TIMEOUT, kafka_error, kafka_partition};
use crate::error::Result;
use crate::io::transport::GroupMember;
use crate::io::transport::TopicPartition;

/// The consumer's context: hands rebalances to the [`GroupMember`] (the engine) and
/// records them in the clients.
#[derive(Default)]
pub(crate) struct GroupContext {
    pub(super) member: OnceLock<Weak<dyn GroupMember>>,
    pub(super) clients: OnceLock<Weak<KafkaClients>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let member = self.member.get().and_then(Weak::upgrade);
        let clients = self.clients.get().and_then(Weak::upgrade);
        let parts: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .filter_map(|e| {
                let p = u32::try_from(e.partition()).ok()?;
                Some(TopicPartition::new(e.topic(), p))
            })
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                log::info!("kafka: assigned {parts:?}");
                let starts = match (member, &clients) {
                    (Some(m), Some(k)) => k.assigned(m, &parts),
                    _ => vec![None; parts.len()],
                };
                let mut with = TopicPartitionList::new();
                for (tp, s) in parts.iter().zip(&starts) {
                    let offset = s.map_or(Offset::Stored, Offset::Offset);
                    if let Err(e) =
                        with.add_partition_offset(&tp.topic, kafka_partition(tp.partition), offset)
                    {
                        log::error!("kafka: bad partition {tp}: {e}");
                    }
                }
                if cooperative {
                    consumer.incremental_assign(&with)
                } else {
                    consumer.assign(&with)
                }
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    log::error!(
                        "kafka: rebalance failed ({}); giving up the partitions",
                        RDKafkaErrorCode::from(err)
                    );
                }
                log::info!("kafka: revoked {parts:?}");
                if let Some(m) = member {
                    m.revoked(&parts);
                    if let Some(k) = &clients {
                        k.disown(&parts);
                    }
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            log::error!("kafka: applying a rebalance failed: {e}");
        }
    }
}

impl KafkaClients {
    /// `partitions` are this member's now: records the assignment and returns the
    /// offset to read each from, the earliest position a query reading it needs
    /// (`None`: the group's committed offset). Each binding skips what it has already
    /// processed.
    fn assigned(
        &self,
        member: Arc<dyn GroupMember>,
        partitions: &[TopicPartition],
    ) -> Vec<Option<i64>> {
        let earliest = self.offset_reset == crate::io::settings::OffsetReset::Earliest;
        let starts: Vec<Option<i64>> = partitions
            .iter()
            .map(|tp| {
                self.forget_positions(tp);
                member
                    .clone()
                    .readers(&tp.topic)
                    .iter()
                    .filter_map(
                        |q| match self.start_offset(q, &tp.topic, tp.partition, earliest) {
                            Ok(o) => Some(o),
                            Err(e) => {
                                log::warn!("query '{q}': {e}");
                                None
                            }
                        },
                    )
                    .min()
            })
            .collect();
        self.own(partitions, &starts);
        starts
    }

    /// Where `query` starts reading `topic`/`partition`: its committed position, or the
    /// log start (`earliest`) or end.
    pub(crate) fn start_offset(
        &self,
        query: &str,
        topic: &str,
        partition: u32,
        earliest: bool,
    ) -> Result<i64> {
        let key = TopicPartition::new(topic, partition);
        let mut positions = self.positions.lock();
        if !positions.contains_key(&key) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, kafka_partition(partition));
            let committed = self
                .consumer
                .committed_offsets(tpl, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("cannot read committed offsets", e))?;
            let meta = committed
                .find_partition(topic, kafka_partition(partition))
                .map(|e| decode_positions(e.metadata()))
                .unwrap_or_default();
            positions.insert(key.clone(), meta);
        }
        if let Some(&o) = positions[&key].get(query) {
            return Ok(o);
        }
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, kafka_partition(partition), REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&format!("cannot read offsets of '{topic}'"), e))?;
        Ok(if earliest { low } else { high })
    }

    /// The runtime core, told of rebalances (set once, after the core exists).
    pub(crate) fn set_member(&self, member: Weak<dyn GroupMember>) {
        let _ = self.consumer.context().member.set(member);
    }

    /// The runtime core, if it still runs.
    pub(crate) fn member(&self) -> Option<Arc<dyn GroupMember>> {
        self.consumer.context().member.get().and_then(Weak::upgrade)
    }

    /// Subscribes the consumer to `topics` (none: unsubscribes); the group then assigns
    /// this member its share of their partitions.
    pub(crate) fn subscribe(&self, topics: &BTreeSet<String>) -> Result<()> {
        if topics.is_empty() {
            self.consumer.unsubscribe();
            return Ok(());
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&names)
            .map_err(|e| kafka_error(&format!("cannot subscribe to {names:?}"), e))
    }

    /// The partitions the group assigned to this member.
    pub(crate) fn owned(&self) -> HashSet<TopicPartition> {
        self.owned.lock().keys().cloned().collect()
    }

    /// Records an assignment, and the offset each partition is read from.
    pub(crate) fn own(&self, partitions: &[TopicPartition], starts: &[Option<i64>]) {
        let mut owned = self.owned.lock();
        for (tp, s) in partitions.iter().zip(starts) {
            owned.insert(tp.clone(), *s);
        }
        self.assigned_flag
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether partitions were assigned since the last call.
    pub(crate) fn take_assigned(&self) -> bool {
        self.assigned_flag
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Records a revocation.
    pub(crate) fn disown(&self, partitions: &[TopicPartition]) {
        self.revoked
            .store(true, std::sync::atomic::Ordering::Release);
        let mut owned = self.owned.lock();
        for tp in partitions {
            owned.remove(tp);
        }
    }

    /// Drops the cached positions of `topic`/`partition`: another member may have
    /// committed since.
    pub(crate) fn forget_positions(&self, tp: &TopicPartition) {
        self.positions.lock().remove(tp);
    }

    /// Whether partitions were revoked since the last call.
    pub(crate) fn take_revoked(&self) -> bool {
        self.revoked
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Whether this member owns `topic`/`partition`.
    pub(crate) fn owns(&self, topic: &str, partition: u32) -> bool {
        self.owned
            .lock()
            .contains_key(&TopicPartition::new(topic, partition))
    }

    /// A binding starts reading `topic`/`partition` from `offset`; the consumer goes
    /// back to `offset` if it is already further on (bindings further on skip what they
    /// already have). False if this member does not own the partition (any more): the
    /// binding's task is being revoked.
    pub(crate) fn bind(&self, topic: &str, partition: u32, offset: i64) -> Result<bool> {
        let key = TopicPartition::new(topic, partition);
        let from = match self.owned.lock().get(&key) {
            None => return Ok(false),
            Some(from) => *from,
        };
        self.assigned
            .lock()
            .entry(key.clone())
            .or_insert(Assigned {
                bindings: 0,
                pausers: 0,
            })
            .bindings += 1;
        let position = self.consumer.position().ok().and_then(|p| {
            match p
                .find_partition(topic, kafka_partition(partition))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(at)) => Some(at),
                _ => None,
            }
        });
        if position.or(from).is_none_or(|at| at > offset) {
            self.seek(topic, partition, offset)?;
            if let Some(f) = self.owned.lock().get_mut(&key) {
                *f = Some(f.map_or(offset, |f| f.min(offset)));
            }
        }
        Ok(true)
    }

    /// Seeks the consumer; a partition assigned a moment ago may not be fetching yet
    /// (librdkafka refuses a seek then): tried again for up to a second.
    fn seek(&self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match self.consumer.seek(
                topic,
                kafka_partition(partition),
                Offset::Offset(offset),
                REQUEST_TIMEOUT,
            ) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(kafka_error(
                        &format!("cannot read '{topic}' partition {partition} from {offset}"),
                        e,
                    ));
                }
            }
        }
    }

    /// A binding of `topic`/`partition` is gone.
    pub(crate) fn unbind(&self, topic: &str, partition: u32) {
        let key = TopicPartition::new(topic, partition);
        let mut assigned = self.assigned.lock();
        if let Some(a) = assigned.get_mut(&key) {
            a.bindings -= 1;
            if a.bindings == 0 {
                assigned.remove(&key);
            }
        }
    }

    /// One binding of `topic`/`partition` starts (`true`) or stops wanting it paused.
    /// The consumer stops fetching it while any binding wants that: several queries
    /// reading one partition do not pause and resume it against each other.
    pub(crate) fn want_paused(&self, topic: &str, partition: u32, pause: bool) {
        let key = TopicPartition::new(topic, partition);
        let mut assigned = self.assigned.lock();
        let Some(a) = assigned.get_mut(&key) else {
            return;
        };
        if !self.owns(topic, partition) {
            // Revoked: librdkafka forgot the pause with the assignment.
            return;
        }
        let before = a.pausers;
        a.pausers = if pause {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if (before == 0) == (a.pausers == 0) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, kafka_partition(partition));
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            log::warn!("cannot pause or resume '{topic}' partition {partition}: {e}");
        }
    }

    /// Adds `query`'s next `offset` of `topic`/`partition` to `tpl`: the group offset
    /// is the smallest position of any query, and every query's is in the metadata.
    pub(super) fn add_position(
        &self,
        tpl: &mut TopicPartitionList,
        query: &str,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<()> {
        let mut positions = self.positions.lock();
        let all = positions
            .entry(TopicPartition::new(topic, partition))
            .or_default();
        let partition = kafka_partition(partition);
        all.insert(query.to_string(), offset);
        let min = all.values().copied().min().unwrap_or(offset);
        let metadata = encode_positions(all);
        match tpl.find_partition(topic, partition) {
            Some(mut e) => {
                e.set_offset(Offset::Offset(min))
                    .map_err(|e| kafka_error("bad partition", e))?;
                e.set_metadata(metadata);
            }
            None => {
                tpl.add_partition_offset(topic, partition, Offset::Offset(min))
                    .map_err(|e| kafka_error("bad partition", e))?;
                if let Some(mut e) = tpl.find_partition(topic, partition) {
                    e.set_metadata(metadata);
                }
            }
        }
        Ok(())
    }

    /// Commits `query`'s next offsets (topic, partition, offset) to the group, with
    /// every query's position in each partition's metadata. False if the group refused
    /// it for a rebalance under way (the partitions may be moving: the task commits again
    /// at its next interval, or when revoked; if another member takes the partitions
    /// first, it reads again from the last commit, as at-least-once allows).
    pub(crate) fn commit(&self, query: &str, offsets: &[(&str, u32, i64)]) -> Result<bool> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let mut tpl = TopicPartitionList::new();
        for &(topic, partition, offset) in offsets {
            self.add_position(&mut tpl, query, topic, partition, offset)?;
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Ok(true),
            Err(e) if is_rebalance(&e) => {
                log::warn!(
                    "query '{query}': offsets not committed, the group is rebalancing ({e})"
                );
                Ok(false)
            }
            Err(e) if super::is_transient(&e) => {
                log::warn!(
                    "query '{query}': offsets not committed, the cluster did not answer ({e}); trying again at the next commit"
                );
                Ok(false)
            }
            Err(e) => Err(kafka_error("committing offsets failed", e)),
        }
    }
}

/// A commit refused because the group is moving partitions (or moved them already).
fn is_rebalance(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}

/// `q1=120;q2=95`: each query's next offset (query names are ASCII letters, digits,
/// `.`, `_` and `-`).
pub(crate) fn encode_positions(positions: &BTreeMap<String, i64>) -> String {
    positions
        .iter()
        .map(|(q, o)| format!("{q}={o}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The inverse of [`encode_positions`]; entries it cannot read (metadata another tool
/// wrote) are ignored.
pub(crate) fn decode_positions(metadata: &str) -> BTreeMap<String, i64> {
    metadata
        .split(';')
        .filter_map(|e| {
            let (q, o) = e.split_once('=')?;
            Some((q.to_string(), o.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn positions_round_trip(p in proptest::collection::btree_map("[a-zA-Z0-9._-]{1,12}", any::<i64>(), 0..6)) {
            prop_assert_eq!(decode_positions(&encode_positions(&p)), p);
        }
    }

    #[test]
    fn foreign_metadata_is_ignored() {
        assert!(decode_positions("").is_empty());
        assert!(decode_positions("{\"x\":1}").is_empty());
        assert_eq!(
            decode_positions("a=1;junk;b=x"),
            BTreeMap::from([("a".into(), 1)])
        );
    }
}
