//! An in-memory key-value store whose every byte is reserved from a state budget.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use super::{BatchEntry, KeyValue, KeyValueStore, prefix_end};
use crate::error::{Error, Result};
use crate::memory::ByteBudget;

/// Bytes charged per entry on top of key and value (tree node and allocation overhead).
const ENTRY_OVERHEAD: usize = 48;

fn charge(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// A `BTreeMap` store. Writes that would take the budget past its cap fail with
/// [`Error::StateBudget`] and change nothing.
pub struct InMemoryStore {
    name: String,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    charged: usize,
    budget: Arc<ByteBudget>,
}

impl InMemoryStore {
    /// An empty store reserving from `budget`.
    pub fn new(name: impl Into<String>, budget: Arc<ByteBudget>) -> Self {
        InMemoryStore {
            name: name.into(),
            map: BTreeMap::new(),
            charged: 0,
            budget,
        }
    }

    /// Bytes this store has reserved.
    pub fn charged_bytes(&self) -> usize {
        self.charged
    }

    fn reserve(&mut self, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        if !self.budget.try_reserve_strict(bytes) {
            return Err(Error::StateBudget {
                store: self.name.clone(),
                requested: bytes,
                used: self.budget.used(),
                cap: self.budget.cap(),
            });
        }
        self.charged += bytes;
        Ok(())
    }

    fn release(&mut self, bytes: usize) {
        self.charged -= bytes;
        self.budget.release(bytes);
    }

    fn collect<'a>(iter: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Vec<KeyValue> {
        iter.map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Drop for InMemoryStore {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

impl KeyValueStore for InMemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let new = charge(key, value);
        let old = self.map.get(key).map_or(0, |v| charge(key, v));
        if new > old {
            self.reserve(new - old)?;
        } else {
            self.release(old - new);
        }
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if let Some(v) = self.map.remove(key) {
            self.release(charge(key, &v));
        }
        Ok(())
    }

    fn write_batch(&mut self, entries: &[BatchEntry<'_>]) -> Result<()> {
        // The last write of each key wins; reserve the net growth first, so a refused
        // batch changes nothing.
        let mut last: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
        for &(k, v) in entries {
            last.insert(k, v);
        }
        let grow: isize = last
            .iter()
            .map(|(k, v)| {
                let old = self.map.get(*k).map_or(0, |old| charge(k, old)) as isize;
                let new = v.map_or(0, |v| charge(k, v)) as isize;
                new - old
            })
            .sum();
        if grow > 0 {
            self.reserve(grow as usize)?;
        }
        for (k, v) in last {
            match v {
                Some(v) => self.map.insert(k.to_vec(), v.to_vec()),
                None => self.map.remove(k),
            };
        }
        if grow < 0 {
            self.release((-grow) as usize);
        }
        Ok(())
    }

    fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.delete(&k)?;
        }
        Ok(())
    }

    fn first(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>> {
        if from >= to {
            return Ok(None);
        }
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .next()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn last(&self, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>> {
        if from >= to {
            return Ok(None);
        }
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(Self::collect(self.map.range::<[u8], _>((
            Bound::Included(from),
            Bound::Excluded(to),
        ))))
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let end = prefix_end(prefix);
        let upper = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        Ok(Self::collect(
            self.map.range::<[u8], _>((Bound::Included(prefix), upper)),
        ))
    }

    fn all(&self) -> Result<Vec<KeyValue>> {
        Ok(Self::collect(self.map.iter()))
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("name", &self.name)
            .field("entries", &self.map.len())
            .field("charged", &self.charged)
            .finish_non_exhaustive()
    }
}
