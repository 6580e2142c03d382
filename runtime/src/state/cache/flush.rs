//! What leaves the record cache dirty, and how: flushes at a commit (lent in place,
//! uncopied), picked flushes when windows close or expire, and draining at close.

use super::{KeyBytes, TaskCache};

/// An entry leaving the cache dirty: the caller writes it to its store (a `None` value
/// deletes the key) and forwards it if the store belongs to an aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Index of the store within the task.
    pub store: usize,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Timestamp of the record that wrote the value (forwarded changes carry it).
    pub timestamp: i64,
}

/// A dirty entry being flushed, borrowed from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed<'a> {
    /// Index of the store within the task.
    pub store: usize,
    /// The key.
    pub key: &'a [u8],
    /// The value, or `None` for a delete.
    pub value: Option<&'a [u8]>,
    /// Timestamp of the record that wrote it.
    pub timestamp: i64,
}

impl Flushed<'_> {
    /// An owned copy.
    pub fn to_dirty(self) -> Dirty {
        Dirty {
            store: self.store,
            key: self.key.to_vec(),
            value: self.value.map(<[u8]>::to_vec),
            timestamp: self.timestamp,
        }
    }
}

/// What [`TaskCache::flush_picked`] does with one dirty entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Leave it dirty in the cache.
    Keep,
    /// Flush it and keep it cached, clean.
    Flush,
    /// Flush it and remove it from the cache.
    Take,
}

impl TaskCache {
    /// Marks every dirty entry clean and returns copies, oldest first. Entries stay
    /// cached. (A commit uses [`TaskCache::flush_each`], which copies nothing.)
    pub fn flush(&mut self) -> Vec<Dirty> {
        let mut out = Vec::new();
        let _ = self.flush_each(None, |f| {
            out.push(f.to_dirty());
            Ok::<(), std::convert::Infallible>(())
        });
        out
    }

    /// Marks the dirty entries (of `only` that store, or of all) clean and lends each to
    /// `write`, oldest first, without copying it: a commit writes straight from the
    /// cache, so flushing does not double the cache's memory. If `write` fails, the
    /// entries it has not seen stay dirty (a failed commit fails its task, which
    /// discards the cache).
    pub fn flush_each<'a, E>(
        &'a mut self,
        only: Option<usize>,
        mut write: impl FnMut(Flushed<'a>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        // Dirty entries are the recently written ones: find them walking back from the
        // newest, then lend them oldest first (the order they were last written in).
        let (entries, dirty) = (&mut self.entries, &mut self.dirty);
        let mut seen = 0;
        let mut picked = Vec::new();
        for ((store, key), (_, e)) in entries.iter_mut().rev() {
            if seen == *dirty {
                break;
            }
            if e.dirty {
                seen += 1;
                if only.is_none_or(|s| s == *store) {
                    picked.push((*store, key.as_slice(), e));
                }
            }
        }
        for (store, key, e) in picked.into_iter().rev() {
            e.dirty = false;
            *dirty -= 1;
            write(Flushed {
                store,
                key,
                value: e.value.as_deref(),
                timestamp: e.timestamp,
            })?;
        }
        Ok(())
    }

    /// Flushes the dirty entries of `store` that `pick` chooses, oldest first, leaving
    /// the others dirty: [`Pick::Flush`] marks an entry clean and returns a copy,
    /// [`Pick::Take`] removes it from the cache and returns it (`true` beside it).
    pub fn flush_picked(
        &mut self,
        store: usize,
        mut pick: impl FnMut(&[u8]) -> Pick,
    ) -> Vec<(Dirty, bool)> {
        let mut chosen = Vec::new();
        let mut seen = 0;
        for ((s, key), (_, e)) in self.entries.iter_mut().rev() {
            if seen == self.dirty {
                break;
            }
            if !e.dirty {
                continue;
            }
            seen += 1;
            if *s != store {
                continue;
            }
            match pick(key.as_slice()) {
                Pick::Keep => {}
                Pick::Flush => {
                    e.dirty = false;
                    let d = Dirty {
                        store,
                        key: key.as_slice().to_vec(),
                        value: e.value.clone(),
                        timestamp: e.timestamp,
                    };
                    chosen.push((d, false));
                }
                Pick::Take => {
                    e.dirty = false;
                    let d = Dirty {
                        store,
                        key: key.as_slice().to_vec(),
                        value: None,
                        timestamp: e.timestamp,
                    };
                    chosen.push((d, true));
                }
            }
        }
        self.dirty -= chosen.len();
        for (d, _) in chosen.iter_mut().filter(|(_, taken)| *taken) {
            let k = (store, KeyBytes::from(d.key.as_slice()));
            if let Some((_, e)) = self.entries.remove(&k) {
                self.bytes -= e.size;
                self.global.release(e.size);
                d.value = e.value;
            }
        }
        chosen.reverse();
        self.publish();
        chosen
    }

    /// Drops every entry of this task, returning the dirty ones (close).
    pub fn drain(&mut self) -> Vec<Dirty> {
        let mut out = Vec::new();
        while self.evict_lru(&mut out) {}
        self.publish();
        out
    }
}
