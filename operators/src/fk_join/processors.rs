//! The foreign-key join's processors, one per step of Kafka Streams' (KIP-213):
//!
//! 1. [`SubscriptionSend`] (left partitions): each change of a left row subscribes it
//!    to its foreign key, and unsubscribes it from the key it had before.
//! 2. [`SubscriptionReceive`] (right partitions, after the subscription topic): keeps
//!    each subscription in the subscription store, keyed (foreign key, primary key).
//! 3. [`SubscriptionJoin`]: answers a subscription with the foreign row as it is now.
//! 4. [`ForeignTableJoin`]: a change of a foreign row answers every subscriber of its
//!    key (one prefix scan of the subscription store).
//! 5. [`ResponseJoin`] (left partitions, after the response topic): drops an answer
//!    whose hash no longer matches the left row, joins the others.
//! 6. [`FkResult`]: the result table's store, whose changes go downstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::internals::{InternalContext, InternalForwardContext};
use weir_runtime::serde::Serde;
use weir_runtime::{Change, Data, Error, Processor, ProcessorContext, Record, Result};

use super::wire::{
    Instruction, Response, Subscribed, Subscription, ValueHash, combined_key, foreign_key_prefix,
    primary_key_of, value_hash,
};
use crate::join::read_row;
use crate::table::TableStore;

/// The foreign key of a left row (`None`: no foreign key).
pub(crate) type FkExtractor<K, V, KO> = Arc<dyn Fn(&K, &V) -> Option<KO> + Send + Sync>;
/// Joins a left value with its foreign row (absent in a left join's miss).
pub(crate) type FkJoiner<V, VO, VR> = Arc<dyn Fn(&V, Option<&VO>) -> VR + Send + Sync>;

fn serialize<T: 'static>(serde: &dyn Serde<T>, value: &T, what: &str) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    match serde.serialize_into(value, &mut out) {
        Ok(true) => Ok(Some(out)),
        Ok(false) => Ok(None),
        Err(e) => Err(Error::Serde(format!(
            "foreign-key join: serializing a {what}: {e}"
        ))),
    }
}

/// The hash of a left value, as the subscription and the response carry it.
fn hash_of<V: 'static>(serde: &dyn Serde<V>, value: &V) -> Result<Option<ValueHash>> {
    Ok(serialize(serde, value, "left value")?.map(|b| value_hash(&b)))
}

/// Subscribes each changed left row to its foreign key (Kafka Streams'
/// `SubscriptionSendProcessorSupplier`, instruction for instruction).
pub(crate) struct SubscriptionSend<K, V, KO> {
    pub(crate) extractor: FkExtractor<K, V, KO>,
    pub(crate) fk_serde: Arc<dyn Serde<KO>>,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    pub(crate) left_join: bool,
}

impl<K: Data, V: Data, KO: Data> SubscriptionSend<K, V, KO> {
    /// A foreign key and its bytes (`None` when there is none or it serializes to
    /// null).
    fn foreign_key(&self, key: &K, value: Option<&V>) -> Result<Option<(KO, Vec<u8>)>> {
        let Some(fk) = value.and_then(|v| (self.extractor)(key, v)) else {
            return Ok(None);
        };
        Ok(serialize(&*self.fk_serde, &fk, "foreign key")?.map(|b| (fk, b)))
    }
}

impl<K: Data, V: Data, KO: Data> Processor<K, Change<V>, Option<KO>, Subscription<K>>
    for SubscriptionSend<K, V, KO>
{
    fn process(
        &mut self,
        r: Record<K, Change<V>>,
        ctx: &mut ProcessorContext<'_, Option<KO>, Subscription<K>>,
    ) -> Result<()> {
        let Change { new, old } = &r.value;
        if new.is_none() && old.is_none() {
            // An idempotent delete: nothing joined, nothing to retract.
            return Ok(());
        }
        let hash = match new {
            Some(v) => hash_of(&*self.value_serde, v)?,
            None => None,
        };
        let partition = ctx.task_id().partition;
        let old_fk = self.foreign_key(&r.key, old.as_ref())?;
        let new_fk = self.foreign_key(&r.key, new.as_ref())?;
        let moved = match (&old_fk, &new_fk) {
            (Some((_, o)), Some((_, n))) => o != n,
            (Some(_), None) => true,
            _ => false,
        };
        let mut sends: Vec<(Option<KO>, Instruction)> = Vec::with_capacity(2);
        if self.left_join {
            // Every change gets an answer (a left join always has a row to emit); a
            // row that moved also unsubscribes from its old key, on another partition.
            if moved {
                sends.push((old_fk.map(|(k, _)| k), Instruction::DeleteKeyNoPropagate));
            }
            sends.push((
                new_fk.map(|(k, _)| k),
                Instruction::PropagateNullIfNoFkValAvailable,
            ));
        } else if new.is_some() {
            match (old_fk, new_fk) {
                (old_fk, None) => {
                    // Kafka: "Skipping record due to null foreign key".
                    ctx.record_dropped_late();
                    if let Some((k, _)) = old_fk {
                        sends.push((Some(k), Instruction::DeleteKeyAndPropagate));
                    }
                }
                (Some((old_k, _)), Some((new_k, _))) if moved => {
                    // Unsubscribe from the old key; the new one answers even with no
                    // row, so a result the old key produced is deleted.
                    sends.push((Some(old_k), Instruction::DeleteKeyNoPropagate));
                    sends.push((Some(new_k), Instruction::PropagateNullIfNoFkValAvailable));
                }
                (_, Some((new_k, _))) => {
                    // An insert, or an update on the same key: if the key has no row,
                    // the old value did not join either.
                    sends.push((Some(new_k), Instruction::PropagateOnlyIfFkValAvailable));
                }
            }
        } else if let Some((k, _)) = old_fk {
            // The row is gone: delete its result.
            sends.push((Some(k), Instruction::DeleteKeyAndPropagate));
        }
        for (fk, instruction) in sends {
            let subscription = Subscription {
                hash,
                instruction,
                primary_key: r.key.clone(),
                primary_partition: partition,
            };
            ctx.forward(
                Record::new(fk, subscription, r.timestamp).with_headers(r.headers.clone()),
            )?;
        }
        Ok(())
    }
}

/// Keeps each subscription in the subscription store (Kafka Streams'
/// `SubscriptionReceiveProcessorSupplier`).
pub(crate) struct SubscriptionReceive<K, KO> {
    pub(crate) store: Arc<str>,
    pub(crate) fk_serde: Arc<dyn Serde<KO>>,
    pub(crate) pk_serde: Arc<dyn Serde<K>>,
}

impl<K: Data, KO: Data> Processor<Option<KO>, Subscription<K>, Option<KO>, Subscription<K>>
    for SubscriptionReceive<K, KO>
{
    fn process(
        &mut self,
        r: Record<Option<KO>, Subscription<K>>,
        ctx: &mut ProcessorContext<'_, Option<KO>, Subscription<K>>,
    ) -> Result<()> {
        let s = &r.value;
        let Some(fk) = &r.key else {
            // Only a left join's row without a foreign key asks for an answer with no
            // subscription.
            if s.instruction != Instruction::PropagateNullIfNoFkValAvailable {
                ctx.record_dropped_late();
                return Ok(());
            }
            return ctx.forward(r);
        };
        let (Some(fk), Some(pk)) = (
            serialize(&*self.fk_serde, fk, "foreign key")?,
            serialize(&*self.pk_serde, &s.primary_key, "primary key")?,
        ) else {
            ctx.record_dropped_late();
            return Ok(());
        };
        let key = combined_key(&fk, &pk)?;
        let mut store = ctx.store::<Vec<u8>, Subscribed>(&self.store)?;
        match s.instruction {
            Instruction::DeleteKeyAndPropagate | Instruction::DeleteKeyNoPropagate => {
                store.delete(&key)?
            }
            _ => store.put_with_timestamp(
                &key,
                &Subscribed {
                    hash: s.hash,
                    primary_partition: s.primary_partition,
                },
                r.timestamp,
            )?,
        }
        ctx.forward(r)
    }
}

/// Answers a subscription with the foreign row as it is now (Kafka Streams'
/// `SubscriptionJoinProcessorSupplier`): the answer's timestamp is the larger of the
/// subscription's and the row's.
pub(crate) struct SubscriptionJoin {
    pub(crate) right: TableStore,
}

impl<K: Data, KO: Data, VO: Data> Processor<Option<KO>, Subscription<K>, K, Response<VO>>
    for SubscriptionJoin
{
    fn process(
        &mut self,
        r: Record<Option<KO>, Subscription<K>>,
        ctx: &mut ProcessorContext<'_, K, Response<VO>>,
    ) -> Result<()> {
        let row: Option<(VO, i64)> = match &r.key {
            Some(fk) => read_row(ctx, &self.right, fk)?,
            None => None,
        };
        let timestamp = row
            .as_ref()
            .map_or(r.timestamp, |(_, t)| r.timestamp.max(*t));
        let s = r.value;
        let foreign_value = match s.instruction {
            Instruction::DeleteKeyNoPropagate => return Ok(()),
            Instruction::PropagateOnlyIfFkValAvailable if row.is_none() => return Ok(()),
            Instruction::DeleteKeyAndPropagate => None,
            _ => row.map(|(v, _)| v),
        };
        let response = Response {
            hash: s.hash,
            foreign_value,
            primary_partition: s.primary_partition,
        };
        ctx.forward(Record::new(s.primary_key, response, timestamp).with_headers(r.headers))
    }
}

/// Answers every subscriber of a foreign row that changed (Kafka Streams'
/// `ForeignTableJoinProcessorSupplier`), with the change's timestamp.
pub(crate) struct ForeignTableJoin<K, KO> {
    pub(crate) store: Arc<str>,
    pub(crate) fk_serde: Arc<dyn Serde<KO>>,
    pub(crate) pk_serde: Arc<dyn Serde<K>>,
}

impl<K: Data, KO: Data, VO: Data> Processor<KO, Change<VO>, K, Response<VO>>
    for ForeignTableJoin<K, KO>
{
    fn process(
        &mut self,
        r: Record<KO, Change<VO>>,
        ctx: &mut ProcessorContext<'_, K, Response<VO>>,
    ) -> Result<()> {
        let Some(fk) = serialize(&*self.fk_serde, &r.key, "foreign key")? else {
            ctx.record_dropped_late();
            return Ok(());
        };
        let prefix = foreign_key_prefix(&fk)?;
        // The subscribers of one key, read at once: transient memory in proportion to
        // how many left rows share this foreign key.
        let subscribers = ctx
            .store::<Vec<u8>, Subscribed>(&self.store)?
            .prefix_scan(&prefix)?;
        for (key, sub) in subscribers {
            let pk = self.pk_serde.deserialize(Some(primary_key_of(&key)?))?;
            let response = Response {
                hash: sub.hash,
                foreign_value: r.value.new.clone(),
                primary_partition: sub.primary_partition,
            };
            ctx.forward(Record::new(pk, response, r.timestamp).with_headers(r.headers.clone()))?;
        }
        Ok(())
    }
}

/// Joins an answer with the left row, unless the row changed since it subscribed
/// (Kafka Streams' `ResponseJoinProcessorSupplier`): `None` deletes the result.
pub(crate) struct ResponseJoin<V, VO, VR> {
    pub(crate) left: TableStore,
    pub(crate) value_serde: Arc<dyn Serde<V>>,
    pub(crate) joiner: FkJoiner<V, VO, VR>,
    pub(crate) left_join: bool,
}

impl<K: Data, V: Data, VO: Data, VR: Data> Processor<K, Response<VO>, K, Option<VR>>
    for ResponseJoin<V, VO, VR>
{
    fn process(
        &mut self,
        r: Record<K, Response<VO>>,
        ctx: &mut ProcessorContext<'_, K, Option<VR>>,
    ) -> Result<()> {
        let current: Option<(V, i64)> = read_row(ctx, &self.left, &r.key)?;
        let current_hash = match &current {
            Some((v, _)) => hash_of(&*self.value_serde, v)?,
            None => None,
        };
        if current_hash != r.value.hash {
            // A stale answer: the row changed (or went) after it subscribed.
            return Ok(());
        }
        let result = match (current, &r.value.foreign_value) {
            (Some((v, _)), Some(fv)) => Some((self.joiner)(&v, Some(fv))),
            (Some((v, _)), None) if self.left_join => Some((self.joiner)(&v, None)),
            _ => None,
        };
        ctx.forward(Record::new(r.key, result, r.timestamp).with_headers(r.headers))
    }
}

/// The join's result table: each answer sets or deletes its key's row, and the
/// store's changes go downstream (Kafka Streams' `KTableSource` over the result).
pub(crate) struct FkResult {
    pub(crate) store: Arc<str>,
    pub(crate) send_old: Arc<AtomicBool>,
}

impl<K: Data, VR: Data> Processor<K, Option<VR>, K, Change<VR>> for FkResult {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VR>>) -> Result<()> {
        ctx.forward_store_changes::<K, VR>(&self.store, self.send_old.load(Ordering::Acquire))
    }

    fn process(
        &mut self,
        r: Record<K, Option<VR>>,
        ctx: &mut ProcessorContext<'_, K, Change<VR>>,
    ) -> Result<()> {
        let mut store = ctx.store::<K, VR>(&self.store)?;
        match &r.value {
            Some(v) => store.put_with_timestamp(&r.key, v, r.timestamp),
            None => store.delete(&r.key),
        }
    }
}
