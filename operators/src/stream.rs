//! The Kafka Streams-style DSL: [`StreamsBuilder`] and [`KStream`].
//!
//! Operators are methods on `KStream<K, V>` taking Rust closures; each adds a processor
//! to the [`Topology`] under construction, named the way Kafka Streams names them
//! (`KSTREAM-FILTER-0000000001`). Types are checked by the compiler, serdes are picked
//! from the types ([`DefaultSerde`]) unless given ([`Consumed`], [`Produced`],
//! [`Repartitioned`]). Errors that only show up at build time (a duplicate name, a topic
//! read twice) are collected and returned by [`StreamsBuilder::build`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use weir_runtime::serde::DefaultSerde;
use weir_runtime::{Data, Error, Processor, SinkSpec, SourceSpec};

pub(crate) use crate::builder::{ArcSerde, Inner};
pub use crate::builder::{Consumed, Produced, Repartitioned, StreamsBuilder};
use crate::ops;
use crate::printed::Printed;

/// A name for a branch of [`KStream::split`].
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct Branched {
    name: Option<String>,
}

impl Branched {
    /// The branch is keyed `<split prefix><name>` in the returned map.
    pub fn as_(name: impl Into<String>) -> Self {
        Branched {
            name: Some(name.into()),
        }
    }
}

/// A record stream of key type `K` and value type `V`.
pub struct KStream<K, V> {
    pub(crate) builder: Rc<RefCell<Inner>>,
    pub(crate) node: String,
    /// An operator upstream may have changed the key since the last (re)partitioning:
    /// a keyed operation must repartition first.
    pub(crate) repartition_required: bool,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            builder: self.builder.clone(),
            node: self.node.clone(),
            repartition_required: self.repartition_required,
            _types: PhantomData,
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn new(builder: &Rc<RefCell<Inner>>, node: String) -> Self {
        KStream {
            builder: builder.clone(),
            node,
            repartition_required: false,
            _types: PhantomData,
        }
    }

    fn keyed(mut self, changed: bool) -> Self {
        self.repartition_required = changed;
        self
    }

    /// The name of the node this stream comes out of.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    pub(crate) fn add<K2: Data, V2: Data, P, S>(&self, prefix: &str, supplier: S) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        let name = self.builder.borrow_mut().next_name(prefix);
        self.add_named(name, supplier)
    }

    pub(crate) fn add_named<K2: Data, V2: Data, P, S>(
        &self,
        name: String,
        supplier: S,
    ) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        let mut inner = self.builder.borrow_mut();
        let r = inner
            .topology
            .add_processor(&name, supplier, &[self.node.as_str()])
            .map(|_| ());
        inner.check(r);
        drop(inner);
        KStream::new(&self.builder, name).keyed(self.repartition_required)
    }

    /// Keeps records for which `f(key, value)` is true.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    /// # fn main() -> weir::Result<()> {
    /// # let runtime = Runtime::new(RuntimeConfig::builder().workers(1).build()?)?;
    /// # let broker = runtime.broker().clone();
    /// # broker.create_topic("in", 1)?;
    /// # broker.create_topic("out", 1)?;
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream::<String, i64>("in")
    ///     .filter(|_key, amount| *amount >= 100)
    ///     .to("out");
    /// # let query = runtime.start_query("big", builder.build()?)?;
    /// # broker.send("in", &"a".to_string(), &5i64)?;
    /// # broker.send("in", &"b".to_string(), &500i64)?;
    /// # let read = |n: usize| -> weir::Result<Vec<_>> { loop {
    /// #     let out = broker.read_all::<String, i64>("out")?;
    /// #     if out.len() >= n { return Ok(out); }
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # } };
    /// # assert_eq!(read(1)?[0].record.key, "b");
    /// # query.stop()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn filter<F>(&self, f: F) -> KStream<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-FILTER", move || ops::Filter {
            f: f.clone(),
            keep: true,
        })
    }

    /// Drops records for which `f(key, value)` is true.
    pub fn filter_not<F>(&self, f: F) -> KStream<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-FILTER", move || ops::Filter {
            f: f.clone(),
            keep: false,
        })
    }

    /// Replaces key and value. Changing the key means a later keyed operation must
    /// repartition.
    pub fn map<K2: Data, V2: Data, F>(&self, f: F) -> KStream<K2, V2>
    where
        F: Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-MAP", move || ops::Map(f.clone()))
            .keyed(true)
    }

    /// Replaces the value, keeping the key (so no repartition follows).
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    /// # fn main() -> weir::Result<()> {
    /// # let runtime = Runtime::new(RuntimeConfig::builder().workers(1).build()?)?;
    /// # let broker = runtime.broker().clone();
    /// # broker.create_topic("in", 1)?;
    /// # broker.create_topic("out", 1)?;
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream::<String, i64>("in")
    ///     .map_values(|euros| euros * 100) // to cents
    ///     .to("out");
    /// # let query = runtime.start_query("cents", builder.build()?)?;
    /// # broker.send("in", &"a".to_string(), &3i64)?;
    /// # let read = |n: usize| -> weir::Result<Vec<_>> { loop {
    /// #     let out = broker.read_all::<String, i64>("out")?;
    /// #     if out.len() >= n { return Ok(out); }
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # } };
    /// # assert_eq!(read(1)?[0].record.value, 300);
    /// # query.stop()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn map_values<V2: Data, F>(&self, f: F) -> KStream<K, V2>
    where
        F: Fn(V) -> V2 + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-MAPVALUES", move || ops::MapValues(f.clone()))
    }

    /// Replaces the value, given the key too.
    pub fn map_values_with_key<V2: Data, F>(&self, f: F) -> KStream<K, V2>
    where
        F: Fn(&K, V) -> V2 + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-MAPVALUES", move || {
            ops::MapValuesWithKey(f.clone())
        })
    }

    /// Replaces each record by zero or more (key, value) pairs, each keeping the input's
    /// timestamp and headers.
    pub fn flat_map<K2: Data, V2: Data, I, F>(&self, f: F) -> KStream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)>,
        F: Fn(K, V) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-FLATMAP", move || ops::FlatMap(f.clone()))
            .keyed(true)
    }

    /// Replaces each value by zero or more values under the same key.
    pub fn flat_map_values<V2: Data, I, F>(&self, f: F) -> KStream<K, V2>
    where
        I: IntoIterator<Item = V2>,
        F: Fn(V) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-FLATMAPVALUES", move || {
            ops::FlatMapValues(f.clone())
        })
    }

    /// Sets a new key computed from key and value.
    pub fn select_key<K2: Data, F>(&self, f: F) -> KStream<K2, V>
    where
        F: Fn(&K, &V) -> K2 + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-KEY-SELECT", move || ops::SelectKey(f.clone()))
            .keyed(true)
    }

    /// Calls `f` on each record and passes it on unchanged.
    pub fn peek<F>(&self, f: F) -> KStream<K, V>
    where
        F: Fn(&K, &V) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add("KSTREAM-PEEK", move || ops::Peek(f.clone()))
    }

    /// Calls `f` on each record; terminal.
    pub fn foreach<F>(&self, f: F)
    where
        F: Fn(K, V) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let _: KStream<K, V> = self.add("KSTREAM-FOREACH", move || ops::Foreach(f.clone()));
    }

    /// Writes every record as a line, `[<label>]: <key>, <value>`, to standard output,
    /// a file or a writer (Kafka Streams' `print`); terminal. For debugging.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir::prelude::*;
    /// use weir::Printed;
    ///
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .stream::<String, i64>("orders")
    ///     .print(Printed::to_sys_out().with_label("orders"));
    /// ```
    pub fn print(&self, printed: Printed<K, V>) {
        let name = self.builder.borrow_mut().next_name("KSTREAM-PRINTER");
        let printer = printed.into_printer(&name);
        let _: KStream<K, V> = self.add_named(name, move || printer.clone());
    }

    /// Runs a custom [`Processor`]; `supplier` makes one per task.
    pub fn process<K2: Data, V2: Data, P, S>(&self, supplier: S) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        // A custom processor may change keys (as Kafka Streams assumes).
        self.add("KSTREAM-PROCESSOR", supplier).keyed(true)
    }

    /// Like [`KStream::process`], with access to the named stores (added with
    /// [`StreamsBuilder::add_state_store`]) through `ctx.store(name)`.
    pub fn process_with_stores<K2: Data, V2: Data, P, S>(
        &self,
        supplier: S,
        stores: &[&str],
    ) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        let out = self.process(supplier);
        let mut inner = self.builder.borrow_mut();
        for store in stores {
            let r = inner.topology.connect_store(&out.node, store).map(|_| ());
            inner.check(r);
        }
        drop(inner);
        out
    }

    /// Like [`KStream::process`] with a chosen node name.
    pub fn process_named<K2: Data, V2: Data, P, S>(
        &self,
        name: &str,
        supplier: S,
    ) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2>,
        S: Fn() -> P + Send + Sync + 'static,
    {
        self.add_named(name.to_string(), supplier).keyed(true)
    }

    /// One stream of the records of both.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let name = self.builder.borrow_mut().next_name("KSTREAM-MERGE");
        self.merge_named(other, name)
    }

    /// [`KStream::merge`] with the merge node named `name`.
    pub(crate) fn merge_named(&self, other: &KStream<K, V>, name: String) -> KStream<K, V> {
        let mut inner = self.builder.borrow_mut();
        if !Rc::ptr_eq(&self.builder, &other.builder) {
            inner.errors.push(Error::Topology(
                "merge: both streams must come from the same StreamsBuilder".into(),
            ));
            drop(inner);
            return KStream::new(&self.builder, name);
        }
        let r = inner
            .topology
            .add_processor::<K, V, K, V, _, _>(
                &name,
                || ops::PassThrough,
                &[self.node.as_str(), other.node.as_str()],
            )
            .map(|_| ());
        inner.check(r);
        drop(inner);
        KStream::new(&self.builder, name)
            .keyed(self.repartition_required || other.repartition_required)
    }

    /// Splits the stream: each record goes to the first branch whose predicate holds.
    pub fn split(&self) -> BranchedKStream<K, V> {
        let prefix = self.builder.borrow_mut().next_name("KSTREAM-BRANCH") + "-";
        self.split_named(&prefix)
    }

    /// Like [`KStream::split`]; branch names start with `prefix`.
    pub fn split_named(&self, prefix: &str) -> BranchedKStream<K, V> {
        BranchedKStream {
            parent: self.clone(),
            prefix: prefix.to_string(),
            branches: Vec::new(),
        }
    }

    /// Writes the stream to `topic` with the types' default serdes.
    pub fn to(&self, topic: &str)
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.to_with(topic, Produced::defaults())
    }

    /// Writes the stream to `topic` with explicit serdes and options.
    pub fn to_with(&self, topic: &str, produced: Produced<K, V>) {
        let mut inner = self.builder.borrow_mut();
        let name = produced
            .name
            .unwrap_or_else(|| inner.next_name("KSTREAM-SINK"));
        let r = inner
            .topology
            .add_sink(&name, topic, produced.spec, &[self.node.as_str()])
            .map(|_| ());
        inner.check(r);
    }

    /// Routes records through an internal topic so each key lands on the partition of
    /// the default partitioner (and so on one task); uses the types' default serdes.
    pub fn repartition(&self) -> KStream<K, V>
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.repartition_with(Repartitioned::defaults())
    }

    /// Like [`KStream::repartition`] with explicit serdes, name or partition count.
    pub fn repartition_with(&self, r: Repartitioned<K, V>) -> KStream<K, V> {
        let mut inner = self.builder.borrow_mut();
        let base = r
            .name
            .unwrap_or_else(|| inner.next_name("KSTREAM-REPARTITION"));
        let topic = format!("{base}-repartition");
        let sink = format!("{base}-repartition-sink");
        let source = format!("{base}-repartition-source");
        let res = inner
            .topology
            .add_internal_topic(&topic, r.partitions)
            .map(|_| ());
        inner.check(res);
        let res = inner
            .topology
            .add_sink(
                &sink,
                &topic,
                SinkSpec::new(
                    ArcSerde(r.key_serde.clone()),
                    ArcSerde(r.value_serde.clone()),
                ),
                &[self.node.as_str()],
            )
            .map(|_| ());
        inner.check(res);
        let res = inner
            .topology
            .add_source(
                &source,
                &[topic.as_str()],
                SourceSpec::new(ArcSerde(r.key_serde), ArcSerde(r.value_serde)),
            )
            .map(|_| ());
        inner.check(res);
        drop(inner);
        KStream::new(&self.builder, source)
    }
}

/// A stream being split by [`KStream::split`].
pub struct BranchedKStream<K, V> {
    parent: KStream<K, V>,
    prefix: String,
    branches: Vec<(ops::Predicate<K, V>, String)>,
}

impl<K: Data, V: Data> BranchedKStream<K, V> {
    /// Adds a branch taking records for which `pred` holds (and no earlier branch did).
    /// Unnamed branches are keyed by their position, from 1.
    pub fn branch<F>(mut self, pred: F, branched: Branched) -> Self
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        let name = branched
            .name
            .unwrap_or_else(|| (self.branches.len() + 1).to_string());
        self.branches
            .push((Arc::new(pred), format!("{}{name}", self.prefix)));
        self
    }

    /// Ends the split with a branch for every record no predicate took, keyed
    /// `<prefix>0` unless named.
    pub fn default_branch(self, branched: Branched) -> HashMap<String, KStream<K, V>> {
        let name = format!(
            "{}{}",
            self.prefix,
            branched.name.unwrap_or_else(|| "0".into())
        );
        self.finish(Some(name))
    }

    /// Ends the split; records no predicate took are dropped.
    pub fn no_default_branch(self) -> HashMap<String, KStream<K, V>> {
        self.finish(None)
    }

    fn finish(self, default: Option<String>) -> HashMap<String, KStream<K, V>> {
        let builder = self.parent.builder.clone();
        let branch_node = format!("{}branch", self.prefix);
        let branches = Arc::new(self.branches);
        let default_name: Option<Arc<str>> = default.as_deref().map(Arc::from);
        {
            let b = branches.clone();
            let d = default_name.clone();
            let mut inner = builder.borrow_mut();
            let r = inner
                .topology
                .add_processor(
                    &branch_node,
                    move || ops::Branch {
                        branches: b.clone(),
                        default: d.clone(),
                    },
                    &[self.parent.node.as_str()],
                )
                .map(|_| ());
            inner.check(r);
        }
        let node = KStream::<K, V>::new(&builder, branch_node);
        let mut out = HashMap::new();
        let names = branches.iter().map(|(_, n)| n.clone()).chain(default);
        for name in names {
            let s: KStream<K, V> = node.add_named(name.clone(), || ops::PassThrough);
            out.insert(name, s);
        }
        out
    }
}

impl<K, V> std::fmt::Debug for KStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KStream")
            .field("node", &self.node)
            .field("repartition_required", &self.repartition_required)
            .finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for BranchedKStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BranchedKStream")
            .field("prefix", &self.prefix)
            .field("branches", &self.branches.len())
            .finish_non_exhaustive()
    }
}
