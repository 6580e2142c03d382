//! What a foreign-key join sends through its two internal topics and keeps in its
//! subscription store, and the hash that tells a current answer from a stale one.
//!
//! Why a hash travels with every subscription: a left row may change its foreign key
//! several times before the first answer comes back, and answers from different
//! foreign keys come back through different partitions, in any order. Each
//! subscription carries a hash of the left value that sent it; the answer carries the
//! hash back, and the left side keeps only an answer whose hash matches its current
//! value (Kafka Streams' `SubscriptionWrapper`, `SubscriptionResponseWrapper` and
//! `Murmur3.hash128`, same algorithm and seed).
//!
//! The formats are weir's own, each starting with a version byte so they can evolve:
//! a subscription is `version, instruction, flags, [hash 16], primary partition (u32
//! BE), primary key bytes`; a response is `version, flags, [hash 16], primary
//! partition (u32 BE), [foreign value bytes]`; a subscription-store row is `version,
//! flags, [hash 16], primary partition (u32 BE)` under the key `foreign key length
//! (u32 BE), foreign key bytes, primary key bytes`, so that one foreign key's
//! subscribers are one prefix scan.

use std::sync::Arc;

use weir_runtime::serde::{Bytes, Serde};
use weir_runtime::{Error, Result};

/// Kafka Streams' `Murmur3.DEFAULT_SEED`.
const HASH_SEED: u32 = 104_729;
const VERSION: u8 = 0;
const HAS_HASH: u8 = 1;
const HAS_VALUE: u8 = 2;

/// 128 bits of Murmur3 over a serialized left value.
pub(crate) type ValueHash = [u8; 16];

/// The hash a subscription carries for a serialized left value.
pub(crate) fn value_hash(bytes: &[u8]) -> ValueHash {
    let [h1, h2] = murmur3_128(bytes, HASH_SEED);
    let mut out = [0; 16];
    out[..8].copy_from_slice(&h1.to_be_bytes());
    out[8..].copy_from_slice(&h2.to_be_bytes());
    out
}

/// MurmurHash3 x64 128 (Kafka Streams' `Murmur3.hash128`, taken from Hive): the two
/// 64-bit halves.
pub(crate) fn murmur3_128(data: &[u8], seed: u32) -> [u64; 2] {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mix_k1 = |k: u64| k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix_k2 = |k: u64| k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    let fmix = |mut k: u64| {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    };
    // Java sign-extends the int seed to a long.
    let mut h1 = i64::from(seed as i32) as u64;
    let mut h2 = h1;
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        let k1 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        h1 ^= mix_k1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 ^= u64::from(b) << (8 * i);
        } else {
            k2 ^= u64::from(b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(k1);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    [h1, h2]
}

/// What the right side does with a subscription (Kafka Streams'
/// `SubscriptionWrapper.Instruction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Instruction {
    /// Forget the subscription; answer nothing (the left row moved to another key).
    DeleteKeyNoPropagate,
    /// Forget the subscription; answer with no value (the left row is gone, or its
    /// new foreign key is null in an inner join), so the result is deleted.
    DeleteKeyAndPropagate,
    /// Subscribe and answer with the foreign row, or with none if it is missing.
    PropagateNullIfNoFkValAvailable,
    /// Subscribe and answer only if the foreign row exists.
    PropagateOnlyIfFkValAvailable,
}

impl Instruction {
    fn byte(self) -> u8 {
        match self {
            Instruction::DeleteKeyNoPropagate => 0,
            Instruction::DeleteKeyAndPropagate => 1,
            Instruction::PropagateNullIfNoFkValAvailable => 2,
            Instruction::PropagateOnlyIfFkValAvailable => 3,
        }
    }

    fn from_byte(b: u8) -> Result<Self> {
        Ok(match b {
            0 => Instruction::DeleteKeyNoPropagate,
            1 => Instruction::DeleteKeyAndPropagate,
            2 => Instruction::PropagateNullIfNoFkValAvailable,
            3 => Instruction::PropagateOnlyIfFkValAvailable,
            b => {
                return Err(Error::Serde(format!(
                    "unknown foreign-key join instruction {b}"
                )));
            }
        })
    }
}

/// A left row's subscription to a foreign key (the topic's key is the foreign key).
#[derive(Clone, Debug)]
pub(crate) struct Subscription<K> {
    /// Hash of the left value that sent it; `None` for a deleted row.
    pub(crate) hash: Option<ValueHash>,
    pub(crate) instruction: Instruction,
    pub(crate) primary_key: K,
    /// The left partition the answer must go back to.
    pub(crate) primary_partition: u32,
}

/// The right side's answer to a subscription (the topic's key is the primary key).
#[derive(Clone, Debug)]
pub(crate) struct Response<VO> {
    pub(crate) hash: Option<ValueHash>,
    pub(crate) foreign_value: Option<VO>,
    pub(crate) primary_partition: u32,
}

/// A subscription-store row: who to answer, with which hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscribed {
    pub(crate) hash: Option<ValueHash>,
    pub(crate) primary_partition: u32,
}

fn put_hash(out: &mut Vec<u8>, flags_at: usize, hash: &Option<ValueHash>) {
    if let Some(h) = hash {
        out[flags_at] |= HAS_HASH;
        out.extend_from_slice(h);
    }
}

/// Reads a hash (if the flags say there is one) and a partition from `bytes`,
/// returning the rest.
fn take_hash_and_partition<'a>(
    what: &str,
    flags: u8,
    bytes: &'a [u8],
) -> Result<(Option<ValueHash>, u32, &'a [u8])> {
    let short = || Error::Serde(format!("a foreign-key join {what} is cut short"));
    let (hash, rest) = if flags & HAS_HASH != 0 {
        let h: ValueHash = bytes.get(..16).ok_or_else(short)?.try_into().expect("16");
        (Some(h), &bytes[16..])
    } else {
        (None, bytes)
    };
    let p = rest.get(..4).ok_or_else(short)?;
    let partition = u32::from_be_bytes(p.try_into().expect("4 bytes"));
    Ok((hash, partition, &rest[4..]))
}

fn check_version(what: &str, v: Option<&u8>) -> Result<()> {
    match v {
        Some(&VERSION) => Ok(()),
        Some(v) => Err(Error::Serde(format!(
            "a foreign-key join {what} of version {v}: this weir reads version {VERSION}"
        ))),
        None => Err(Error::Serde(format!("an empty foreign-key join {what}"))),
    }
}

/// Serializes [`Subscription`]s with the primary key's serde.
pub(crate) struct SubscriptionSerde<K>(pub(crate) Arc<dyn Serde<K>>);

impl<K: 'static> Serde<Subscription<K>> for SubscriptionSerde<K> {
    fn serialize(&self, value: &Subscription<K>) -> Result<Option<Bytes>> {
        let mut out = Vec::with_capacity(32);
        self.serialize_into(value, &mut out)?;
        Ok(Some(out.into()))
    }

    fn serialize_into(&self, value: &Subscription<K>, out: &mut Vec<u8>) -> Result<bool> {
        out.extend_from_slice(&[VERSION, value.instruction.byte()]);
        let flags = out.len();
        out.push(0);
        put_hash(out, flags, &value.hash);
        out.extend_from_slice(&value.primary_partition.to_be_bytes());
        if !self.0.serialize_into(&value.primary_key, out)? {
            return Err(Error::Serde(
                "a foreign-key join's primary key serialized to null".into(),
            ));
        }
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Subscription<K>> {
        let bytes = data.unwrap_or_default();
        check_version("subscription", bytes.first())?;
        let (Some(&instruction), Some(&flags)) = (bytes.get(1), bytes.get(2)) else {
            return Err(Error::Serde(
                "a foreign-key join subscription is cut short".into(),
            ));
        };
        let instruction = Instruction::from_byte(instruction)?;
        let (hash, primary_partition, key) =
            take_hash_and_partition("subscription", flags, &bytes[3..])?;
        Ok(Subscription {
            hash,
            instruction,
            primary_key: self.0.deserialize(Some(key))?,
            primary_partition,
        })
    }
}

/// Serializes [`Response`]s with the foreign value's serde.
pub(crate) struct ResponseSerde<VO>(pub(crate) Arc<dyn Serde<VO>>);

impl<VO: 'static> Serde<Response<VO>> for ResponseSerde<VO> {
    fn serialize(&self, value: &Response<VO>) -> Result<Option<Bytes>> {
        let mut out = Vec::with_capacity(32);
        self.serialize_into(value, &mut out)?;
        Ok(Some(out.into()))
    }

    fn serialize_into(&self, value: &Response<VO>, out: &mut Vec<u8>) -> Result<bool> {
        out.push(VERSION);
        let flags = out.len();
        out.push(0);
        put_hash(out, flags, &value.hash);
        out.extend_from_slice(&value.primary_partition.to_be_bytes());
        if let Some(v) = &value.foreign_value {
            let mark = out.len();
            if self.0.serialize_into(v, out)? {
                out[flags] |= HAS_VALUE;
            } else {
                out.truncate(mark);
            }
        }
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Response<VO>> {
        let bytes = data.unwrap_or_default();
        check_version("response", bytes.first())?;
        let Some(&flags) = bytes.get(1) else {
            return Err(Error::Serde(
                "a foreign-key join response is cut short".into(),
            ));
        };
        let (hash, primary_partition, value) =
            take_hash_and_partition("response", flags, &bytes[2..])?;
        let foreign_value = if flags & HAS_VALUE != 0 {
            Some(self.0.deserialize(Some(value))?)
        } else {
            None
        };
        Ok(Response {
            hash,
            foreign_value,
            primary_partition,
        })
    }
}

/// Serializes subscription-store rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubscribedSerde;

impl Serde<Subscribed> for SubscribedSerde {
    fn serialize(&self, value: &Subscribed) -> Result<Option<Bytes>> {
        let mut out = Vec::with_capacity(22);
        self.serialize_into(value, &mut out)?;
        Ok(Some(out.into()))
    }

    fn serialize_into(&self, value: &Subscribed, out: &mut Vec<u8>) -> Result<bool> {
        out.push(VERSION);
        let flags = out.len();
        out.push(0);
        put_hash(out, flags, &value.hash);
        out.extend_from_slice(&value.primary_partition.to_be_bytes());
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Subscribed> {
        let bytes = data.unwrap_or_default();
        check_version("subscription-store row", bytes.first())?;
        let Some(&flags) = bytes.get(1) else {
            return Err(Error::Serde(
                "a foreign-key join subscription-store row is cut short".into(),
            ));
        };
        let (hash, primary_partition, _) =
            take_hash_and_partition("subscription-store row", flags, &bytes[2..])?;
        Ok(Subscribed {
            hash,
            primary_partition,
        })
    }
}

/// The subscription store's key prefix of one foreign key: its length, then its bytes.
pub(crate) fn foreign_key_prefix(foreign_key: &[u8]) -> Result<Vec<u8>> {
    let n = u32::try_from(foreign_key.len())
        .map_err(|_| Error::Serde("a foreign key over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(4 + foreign_key.len() + 16);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(foreign_key);
    Ok(out)
}

/// The subscription store's key of (foreign key, primary key).
pub(crate) fn combined_key(foreign_key: &[u8], primary_key: &[u8]) -> Result<Vec<u8>> {
    let mut out = foreign_key_prefix(foreign_key)?;
    out.extend_from_slice(primary_key);
    Ok(out)
}

/// The primary key bytes of a subscription-store key.
pub(crate) fn primary_key_of(combined: &[u8]) -> Result<&[u8]> {
    let bad = || Error::Serde("a corrupt foreign-key join subscription-store key".into());
    let n = combined.get(..4).ok_or_else(bad)?;
    let n = u32::from_be_bytes(n.try_into().expect("4 bytes")) as usize;
    combined.get(4 + n..).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::serde::StringSerde;

    /// Kafka Streams' `Murmur3Test.testMurmur3_128` (seed 123).
    #[test]
    fn murmur3_matches_kafka_streams() {
        let cases: [(&[u8], [i64; 2]); 6] = [
            (b"21", [5857341059704281894, -5288187638297930763]),
            (b"foobar", [-351361463397418609, 8959716011862540668]),
            (
                b"a-little-bit-long-string",
                [8836256500583638442, -198172363548498523],
            ),
            (
                b"a-little-bit-longer-string",
                [1838346159335108511, 8794688210320490705],
            ),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                [-4024021876037397259, -1482317706335141238],
            ),
            (b"abc", [1489494923063836066, -5440978547625122829]),
        ];
        for (data, [a, b]) in cases {
            assert_eq!(
                murmur3_128(data, 123),
                [a as u64, b as u64],
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn subscriptions_round_trip_and_refuse_bad_input() {
        let serde = SubscriptionSerde::<String>(Arc::new(StringSerde));
        for (hash, instruction) in [
            (
                Some(value_hash(b"v")),
                Instruction::PropagateOnlyIfFkValAvailable,
            ),
            (None, Instruction::DeleteKeyAndPropagate),
            (Some([7; 16]), Instruction::DeleteKeyNoPropagate),
            (None, Instruction::PropagateNullIfNoFkValAvailable),
        ] {
            let s = Subscription {
                hash,
                instruction,
                primary_key: "pk-1".to_string(),
                primary_partition: 3,
            };
            let bytes = serde.serialize(&s).unwrap().unwrap();
            let back = serde.deserialize(Some(&bytes)).unwrap();
            assert_eq!(back.hash, hash);
            assert_eq!(back.instruction, instruction);
            assert_eq!(back.primary_key, "pk-1");
            assert_eq!(back.primary_partition, 3);
            // Every truncation short of the key is refused, not misread.
            for cut in 0..bytes.len() - 4 {
                assert!(serde.deserialize(Some(&bytes[..cut])).is_err(), "{cut}");
            }
        }
        assert!(serde.deserialize(Some(&[1, 0, 0, 0, 0, 0, 0])).is_err());
        assert!(serde.deserialize(Some(&[0, 9, 0, 0, 0, 0, 0])).is_err());
        assert!(serde.deserialize(None).is_err());
    }

    #[test]
    fn responses_and_store_rows_round_trip() {
        let serde = ResponseSerde::<String>(Arc::new(StringSerde));
        for (hash, value) in [
            (Some([1; 16]), Some("right".to_string())),
            (None, None),
            (Some([2; 16]), None),
            (None, Some(String::new())),
        ] {
            let r = Response {
                hash,
                foreign_value: value.clone(),
                primary_partition: 7,
            };
            let bytes = serde.serialize(&r).unwrap().unwrap();
            let back = serde.deserialize(Some(&bytes)).unwrap();
            assert_eq!(
                (back.hash, back.foreign_value, back.primary_partition),
                (hash, value, 7)
            );
        }
        assert!(serde.deserialize(Some(&[0])).is_err());
        assert!(serde.deserialize(Some(&[0, 1, 0])).is_err());
        for row in [
            Subscribed {
                hash: Some([9; 16]),
                primary_partition: 0,
            },
            Subscribed {
                hash: None,
                primary_partition: u32::MAX,
            },
        ] {
            let bytes = SubscribedSerde.serialize(&row).unwrap().unwrap();
            assert_eq!(SubscribedSerde.deserialize(Some(&bytes)).unwrap(), row);
        }
    }

    #[test]
    fn combined_keys_group_by_foreign_key() {
        let a = combined_key(b"fk", b"pk1").unwrap();
        let b = combined_key(b"fk", b"pk2").unwrap();
        // "fk" and "fk2" share bytes but not a prefix: the length keeps them apart.
        let c = combined_key(b"fk2", b"pk1").unwrap();
        let prefix = foreign_key_prefix(b"fk").unwrap();
        assert!(a.starts_with(&prefix) && b.starts_with(&prefix));
        assert!(!c.starts_with(&prefix));
        assert_eq!(primary_key_of(&a).unwrap(), b"pk1");
        assert_eq!(primary_key_of(&c).unwrap(), b"pk1");
        assert!(primary_key_of(&[0, 0, 0, 9, 1]).is_err());
        assert!(primary_key_of(&[0, 0]).is_err());
    }

    #[test]
    fn corrupt_foreign_key_join_messages_are_errors() {
        let string = || Arc::new(StringSerde) as Arc<dyn Serde<String>>;
        let subscriptions = SubscriptionSerde(string());
        let responses = ResponseSerde(string());
        let hash = Some([7u8; 16]);
        let sub = subscriptions
            .serialize(&Subscription {
                hash,
                instruction: Instruction::PropagateNullIfNoFkValAvailable,
                primary_key: "order-1".to_string(),
                primary_partition: 3,
            })
            .unwrap()
            .unwrap();
        crate::corruption::each(&sub, |b| {
            let _ = subscriptions.deserialize(Some(b));
        });
        let resp = responses
            .serialize(&Response {
                hash,
                foreign_value: Some("customer".to_string()),
                primary_partition: 1,
            })
            .unwrap()
            .unwrap();
        crate::corruption::each(&resp, |b| {
            let _ = responses.deserialize(Some(b));
        });
        let row = SubscribedSerde
            .serialize(&Subscribed {
                hash,
                primary_partition: 2,
            })
            .unwrap()
            .unwrap();
        crate::corruption::each(&row, |b| {
            let _ = SubscribedSerde.deserialize(Some(b));
        });
        let key = combined_key(b"customer-9", b"order-1").unwrap();
        assert_eq!(primary_key_of(&key).unwrap(), b"order-1");
        crate::corruption::each(&key, |b| {
            let _ = primary_key_of(b);
        });
    }
}
