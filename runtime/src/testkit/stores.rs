//! Read access to the driver's stores, typed as the topology declared them.
//!
//! A view holds no borrow of the driver: each call looks the store up in every task
//! that has it (one per partition), so a view can live across `pipe_input` calls.

use std::any::TypeId;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::exec::driver::SyncQuery;
use crate::processor::internals::StoreSerdes;
use crate::processor::{
    SessionStoreHandle, StoreHandle, VersionedRecord, VersionedStoreHandle, WindowStoreHandle,
};
use crate::state::task_stores::{Access, TaskStores};
use crate::state::window::{StoreType, Window, Windowed};

/// What every view shares: the query, the store's name and how to reach it typed.
struct View<K, V> {
    query: Rc<RefCell<SyncQuery>>,
    name: String,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: 'static, V: 'static> View<K, V> {
    fn new(query: Rc<RefCell<SyncQuery>>, name: &str, kind: &str) -> Result<Self> {
        let view = View {
            query,
            name: name.to_string(),
            types: PhantomData,
        };
        let mut found = false;
        view.each(|stores, idx| {
            found = true;
            let ty = stores.stores[idx].store_type;
            let ok = match kind {
                "key-value" => matches!(ty, StoreType::KeyValue),
                "window" => matches!(ty, StoreType::Window { .. }),
                "versioned" => matches!(ty, StoreType::Versioned { .. }),
                _ => matches!(ty, StoreType::Session { .. }),
            };
            if ok {
                Ok(())
            } else {
                Err(Error::Topology(format!(
                    "store '{name}' is not a {kind} store; it is {ty:?}"
                )))
            }
        })?;
        if !found {
            return Err(Error::Topology(format!(
                "the topology has no store '{name}'"
            )));
        }
        Ok(view)
    }

    /// Runs `f` on the store in every task that has it.
    fn each(&self, mut f: impl FnMut(&mut TaskStores, usize) -> Result<()>) -> Result<()> {
        let mut q = self.query.borrow_mut();
        for (_, stores, idx) in q.stores_named(&self.name) {
            let st = &stores.stores[idx];
            if st.types != (TypeId::of::<K>(), TypeId::of::<V>()) {
                return Err(Error::Topology(format!(
                    "store '{}' does not hold <{}, {}>",
                    self.name,
                    std::any::type_name::<K>(),
                    std::any::type_name::<V>()
                )));
            }
            f(stores, idx)?;
        }
        Ok(())
    }

    /// Checks that store `idx` has serdes of `<K, V>` (the handles borrow them).
    fn check_serdes(stores: &TaskStores, idx: usize) -> Result<()> {
        let st = &stores.stores[idx];
        st.serdes
            .downcast_ref::<StoreSerdes<K, V>>()
            .map(|_| ())
            .ok_or_else(|| {
                Error::Topology(format!("store '{}' has serdes of other types", st.name))
            })
    }
}

impl<K, V> std::fmt::Debug for View<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("name", &self.name).finish()
    }
}

/// Read access to a key-value store of a [`super::TopologyTestDriver`].
#[derive(Debug)]
pub struct KeyValueStoreView<K, V>(View<K, V>);

impl<K: 'static, V: 'static> KeyValueStoreView<K, V> {
    pub(super) fn new(query: Rc<RefCell<SyncQuery>>, name: &str) -> Result<Self> {
        View::new(query, name, "key-value").map(KeyValueStoreView)
    }

    fn with(&self, mut f: impl FnMut(StoreHandle<'_, K, V>) -> Result<()>) -> Result<()> {
        self.0.each(|stores, idx| {
            View::<K, V>::check_serdes(stores, idx)?;
            f(StoreHandle {
                access: Access::new(stores, idx, 0),
                types: PhantomData,
            })
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let mut out = None;
        self.with(|mut h| {
            if out.is_none() {
                out = h.get(key)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every entry, in key-byte order within each partition.
    pub fn all(&self) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        self.with(|mut h| {
            out.extend(h.all()?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Read access to a window store of a [`super::TopologyTestDriver`].
#[derive(Debug)]
pub struct WindowStoreView<K, V>(View<K, V>);

impl<K: 'static, V: 'static> WindowStoreView<K, V> {
    pub(super) fn new(query: Rc<RefCell<SyncQuery>>, name: &str) -> Result<Self> {
        View::new(query, name, "window").map(WindowStoreView)
    }

    fn with(&self, mut f: impl FnMut(WindowStoreHandle<'_, K, V>) -> Result<()>) -> Result<()> {
        self.0.each(|stores, idx| {
            View::<K, V>::check_serdes(stores, idx)?;
            let StoreType::Window {
                size_ms,
                segment_ms,
                duplicates,
                ..
            } = stores.stores[idx].store_type
            else {
                return Ok(());
            };
            f(WindowStoreHandle {
                access: Access::new(stores, idx, 0),
                types: PhantomData,
                size_ms,
                segment_ms,
                duplicates,
            })
        })
    }

    /// `key`'s value in the window starting at `start`.
    pub fn fetch(&self, key: &K, start: i64) -> Result<Option<V>> {
        let mut out = None;
        self.with(|mut h| {
            if out.is_none() {
                out = h.fetch(key, start)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `key`'s windows starting in `[from, to]`, by start (expired ones left out).
    pub fn fetch_range(&self, key: &K, from: i64, to: i64) -> Result<Vec<(Window, V)>> {
        let mut out = Vec::new();
        self.with(|mut h| {
            out.extend(h.fetch_range(key, from, to)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Every key's windows starting in `[from, to]`.
    pub fn fetch_all(&self, from: i64, to: i64) -> Result<Vec<(Windowed<K>, V)>> {
        let mut out = Vec::new();
        self.with(|mut h| {
            out.extend(h.fetch_all(from, to)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Read access to a session store of a [`super::TopologyTestDriver`].
#[derive(Debug)]
pub struct SessionStoreView<K, V>(View<K, V>);

impl<K: 'static, V: 'static> SessionStoreView<K, V> {
    pub(super) fn new(query: Rc<RefCell<SyncQuery>>, name: &str) -> Result<Self> {
        View::new(query, name, "session").map(SessionStoreView)
    }

    /// Every session of every key (expired ones left out).
    pub fn fetch_all(&self) -> Result<Vec<(Windowed<K>, V)>> {
        let mut out = Vec::new();
        self.0.each(|stores, idx| {
            View::<K, V>::check_serdes(stores, idx)?;
            let segment_ms = stores.stores[idx].store_type.segment_ms().unwrap_or(1);
            let mut h = SessionStoreHandle {
                access: Access::new(stores, idx, 0),
                types: PhantomData,
                segment_ms,
            };
            out.extend(h.fetch_all()?);
            Ok(())
        })?;
        Ok(out)
    }

    /// `key`'s sessions, by end.
    pub fn fetch(&self, key: &K) -> Result<Vec<(Window, V)>>
    where
        K: PartialEq,
    {
        Ok(self
            .fetch_all()?
            .into_iter()
            .filter(|(w, _)| w.key == *key)
            .map(|(w, v)| (w.window, v))
            .collect())
    }
}

/// Read access to a versioned store of a [`super::TopologyTestDriver`].
#[derive(Debug)]
pub struct VersionedStoreView<K, V>(View<K, V>);

impl<K: 'static, V: 'static> VersionedStoreView<K, V> {
    pub(super) fn new(query: Rc<RefCell<SyncQuery>>, name: &str) -> Result<Self> {
        View::new(query, name, "versioned").map(VersionedStoreView)
    }

    fn first(
        &self,
        mut f: impl FnMut(&mut VersionedStoreHandle<'_, K, V>) -> Result<Option<VersionedRecord<V>>>,
    ) -> Result<Option<VersionedRecord<V>>> {
        let mut out = None;
        self.0.each(|stores, idx| {
            View::<K, V>::check_serdes(stores, idx)?;
            let StoreType::Versioned {
                history_ms,
                segment_ms,
            } = stores.stores[idx].store_type
            else {
                return Ok(());
            };
            if out.is_none() {
                out = f(&mut VersionedStoreHandle {
                    access: Access::new(stores, idx, 0),
                    types: PhantomData,
                    history_ms,
                    segment_ms,
                })?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `key`'s latest value and the time it became valid.
    pub fn get(&self, key: &K) -> Result<Option<VersionedRecord<V>>> {
        self.first(|h| h.get(key))
    }

    /// `key`'s value as of `as_of`, within the store's history retention.
    pub fn get_as_of(&self, key: &K, as_of: i64) -> Result<Option<VersionedRecord<V>>> {
        self.first(|h| h.get_as_of(key, as_of))
    }
}
