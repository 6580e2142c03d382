//! A cached entry's key, kept inside the map's node when it is short.
//!
//! A read of a key the cache holds compares the stored key with the one asked for.
//! With the key in its own heap buffer, that compare follows one more pointer to a
//! random address: on a cache of a table read at random (W3, a million rows) it was
//! one of the lookup's few cache misses. Keys of up to [`INLINE`] bytes (a `u64` or
//! UUID key, a window key of an 8-byte key) sit in the node itself, in the 24 bytes a
//! `Vec` header took there; longer ones take a boxed slice, as before.

use std::hash::{Hash, Hasher};

/// The longest key kept inline.
pub(crate) const INLINE: usize = 22;

/// A key of a cached entry: inline up to [`INLINE`] bytes, boxed beyond.
#[derive(Clone)]
pub(crate) enum KeyBytes {
    /// `len` bytes at the start of the array.
    Inline(u8, [u8; INLINE]),
    /// Longer keys.
    Heap(Box<[u8]>),
}

impl KeyBytes {
    /// The key's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline(len, bytes) => &bytes[..usize::from(*len)],
            KeyBytes::Heap(b) => b,
        }
    }

    /// The key as a vector (handed back in [`super::Dirty`]).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            KeyBytes::Inline(..) => self.as_slice().to_vec(),
            KeyBytes::Heap(b) => b.into_vec(),
        }
    }
}

impl From<&[u8]> for KeyBytes {
    fn from(key: &[u8]) -> Self {
        if key.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            // `key.len() <= INLINE` (22) fits a u8.
            KeyBytes::Inline(key.len() as u8, bytes)
        } else {
            KeyBytes::Heap(key.into())
        }
    }
}

impl From<Vec<u8>> for KeyBytes {
    fn from(key: Vec<u8>) -> Self {
        if key.len() <= INLINE {
            KeyBytes::from(key.as_slice())
        } else {
            KeyBytes::Heap(key.into_boxed_slice())
        }
    }
}

/// Hashes as the `[u8]` it holds, so a map keyed by `(usize, KeyBytes)` is searched
/// with the hash of a borrowed `(usize, &[u8])`, without building a key.
impl Hash for KeyBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyBytes").field(&self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_of_every_length_round_trip_and_hash_as_slices() {
        let hasher = foldhash::fast::FixedState::with_seed(7);
        for len in [0, 1, 8, INLINE - 1, INLINE, INLINE + 1, 300] {
            let key: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let from_slice = KeyBytes::from(key.as_slice());
            let from_vec = KeyBytes::from(key.clone());
            assert_eq!(from_slice.as_slice(), key.as_slice(), "length {len}");
            assert_eq!(from_slice, from_vec);
            assert_eq!(
                matches!(from_vec, KeyBytes::Inline(..)),
                len <= INLINE,
                "length {len} inline iff at most {INLINE}"
            );
            assert_eq!(
                hasher.hash_one((3usize, &from_vec)),
                hasher.hash_one((3usize, key.as_slice())),
                "length {len}: the map is searched with the slice's hash"
            );
            assert_eq!(from_vec.into_vec(), key);
        }
        // Same bytes, different lengths: not equal (the padding is not compared).
        assert_ne!(KeyBytes::from(&[1u8, 0][..]), KeyBytes::from(&[1u8][..]));
        assert_eq!(
            std::mem::size_of::<KeyBytes>(),
            std::mem::size_of::<Vec<u8>>()
        );
    }
}
