//! `KStream::print`: every record of a stream written as a line, for debugging a
//! topology (Kafka Streams' `Printed`).
//!
//! A line is `[<label>]: <key>, <value>`: the label is the print node's name unless
//! given, and key and value are written with `Debug` unless a mapper says otherwise
//! (Kafka Streams uses `toString`).

use std::fmt::Debug;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use weir_runtime::{Data, Error, Processor, ProcessorContext, Record, Result};

type Mapper<K, V> = Arc<dyn Fn(&K, &V) -> String + Send + Sync>;

/// Where a writer's lines go: standard output, or a writer shared by every task.
#[derive(Clone)]
enum Output {
    Stdout,
    Writer(Arc<Mutex<dyn Write + Send>>),
}

/// Where [`KStream::print`](crate::KStream::print) writes, with which label, and how a
/// record becomes a line.
#[must_use = "a builder does nothing until it is used"]
pub struct Printed<K, V> {
    out: Output,
    label: Option<String>,
    mapper: Mapper<K, V>,
}

impl<K: Debug, V: Debug> Printed<K, V> {
    /// Lines to standard output (Kafka Streams' `Printed.toSysOut()`).
    pub fn to_sys_out() -> Self {
        Self::with_output(Output::Stdout)
    }

    /// Lines to the file at `path`, created or truncated (Kafka Streams'
    /// `Printed.toFile`).
    pub fn to_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::create(path).map_err(|e| {
            Error::Config(format!("cannot create {} to print to: {e}", path.display()))
        })?;
        Ok(Self::to_writer(std::io::LineWriter::new(file)))
    }

    /// Lines to `writer`, shared by every task of the query.
    pub fn to_writer(writer: impl Write + Send + 'static) -> Self {
        Self::with_output(Output::Writer(Arc::new(Mutex::new(writer))))
    }

    fn with_output(out: Output) -> Self {
        Printed {
            out,
            label: None,
            mapper: Arc::new(|k: &K, v: &V| format!("{k:?}, {v:?}")),
        }
    }
}

impl<K, V> Printed<K, V> {
    /// The label in front of each line (default: the print node's name).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// How a record becomes the text after the label (default `<key>, <value>`, each
    /// with `Debug`).
    pub fn with_key_value_mapper<F>(mut self, mapper: F) -> Self
    where
        F: Fn(&K, &V) -> String + Send + Sync + 'static,
    {
        self.mapper = Arc::new(mapper);
        self
    }

    /// The label, or `default`, and the node's processor factory.
    pub(crate) fn into_printer(self, default: &str) -> Printer<K, V> {
        Printer {
            out: self.out,
            label: Arc::from(self.label.as_deref().unwrap_or(default)),
            mapper: self.mapper,
        }
    }
}

impl<K, V> std::fmt::Debug for Printed<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printed")
            .field(
                "out",
                &match self.out {
                    Output::Stdout => "stdout",
                    Output::Writer(_) => "writer",
                },
            )
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The print node: writes each record's line.
pub(crate) struct Printer<K, V> {
    out: Output,
    label: Arc<str>,
    mapper: Mapper<K, V>,
}

impl<K, V> Clone for Printer<K, V> {
    fn clone(&self) -> Self {
        Printer {
            out: self.out.clone(),
            label: self.label.clone(),
            mapper: self.mapper.clone(),
        }
    }
}

impl<K: Data, V: Data> Processor<K, V, K, V> for Printer<K, V> {
    fn process(&mut self, r: Record<K, V>, _ctx: &mut ProcessorContext<'_, K, V>) -> Result<()> {
        let line = format!("[{}]: {}\n", self.label, (self.mapper)(&r.key, &r.value));
        let written = match &self.out {
            Output::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Output::Writer(w) => w
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(line.as_bytes()),
        };
        written.map_err(Error::user)
    }
}
