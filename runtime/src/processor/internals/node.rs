//! Nodes: the erased form of every source, processor and sink in a task's graph.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use super::core::TaskCore;
use crate::error::{Error, Result};
use crate::io::broker::RecordView;
use crate::processor::{Data, Processor, ProcessorContext, Punctuation};
use crate::record::Record;
use crate::serde::Serde;

pub(crate) use crate::processor::NodeId;

/// What a node is, as the engine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Source { topics: Vec<String> },
    Processor,
    Sink { topic: String },
}

/// A store's key and value serdes, as handed to typed store handles.
pub(crate) type StoreSerdes<K, V> = (Arc<dyn Serde<K>>, Arc<dyn Serde<V>>);

/// The erased form of every node in a task's graph (sources, processors, sinks).
pub(crate) trait Node: Send {
    fn init(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()>;
    /// `input` is `&mut Option<Record<K, V>>` for the node's input types; the node
    /// takes the record out.
    fn process(&mut self, input: &mut dyn Any, core: &mut TaskCore, me: NodeId) -> Result<()>;
    /// Sources only: deserializes a fetched record and forwards it.
    fn ingest(
        &mut self,
        record: &RecordView<'_>,
        offset: i64,
        core: &mut TaskCore,
        me: NodeId,
    ) -> Result<()> {
        let _ = (record, offset);
        Err(Error::Topology(format!(
            "'{}' is not a source",
            core.names[me]
        )))
    }
    fn punctuate(&mut self, p: &Punctuation, core: &mut TaskCore, me: NodeId) -> Result<()>;
    /// Writes out anything buffered (sinks). Called at the end of every batch and before
    /// a commit.
    fn flush(&mut self, core: &mut TaskCore) -> Result<()>;
    /// Processors: [`Processor::flush`], at each commit.
    fn pre_commit(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let _ = (core, me);
        Ok(())
    }
    fn close(&mut self) -> Result<()>;
}

/// Adapts a typed [`Processor`] to [`Node`].
pub(crate) struct ProcessorNode<P, KI, VI, KO, VO> {
    pub(crate) processor: P,
    pub(crate) _types: PhantomData<fn(KI, VI, KO, VO)>,
}

pub(crate) fn take_input<T: 'static>(
    input: &mut dyn Any,
    core: &TaskCore,
    me: NodeId,
) -> Result<T> {
    input
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .ok_or_else(|| {
            Error::Topology(format!(
                "node '{}' received a record of the wrong type (expected {})",
                core.names[me],
                std::any::type_name::<T>()
            ))
        })
}

impl<P, KI, VI, KO, VO> Node for ProcessorNode<P, KI, VI, KO, VO>
where
    P: Processor<KI, VI, KO, VO>,
    KI: Data,
    VI: Data,
    KO: Data,
    VO: Data,
{
    fn init(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let name = core.names[me].clone();
        self.processor
            .init(&mut ProcessorContext::new(core, me))
            .map_err(|e| e.in_processor(&name))
    }

    fn process(&mut self, input: &mut dyn Any, core: &mut TaskCore, me: NodeId) -> Result<()> {
        let record: Record<KI, VI> = take_input(input, core, me)?;
        match self
            .processor
            .process(record, &mut ProcessorContext::new(core, me))
        {
            Ok(()) => Ok(()),
            Err(e) => Err(e.in_processor(&core.names[me])),
        }
    }

    fn punctuate(&mut self, p: &Punctuation, core: &mut TaskCore, me: NodeId) -> Result<()> {
        match self
            .processor
            .punctuate(p, &mut ProcessorContext::new(core, me))
        {
            Ok(()) => Ok(()),
            Err(e) => Err(e.in_processor(&core.names[me])),
        }
    }

    fn flush(&mut self, _core: &mut TaskCore) -> Result<()> {
        Ok(())
    }

    fn pre_commit(&mut self, core: &mut TaskCore, me: NodeId) -> Result<()> {
        match self.processor.flush(&mut ProcessorContext::new(core, me)) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.in_processor(&core.names[me])),
        }
    }

    fn close(&mut self) -> Result<()> {
        self.processor.close()
    }
}
