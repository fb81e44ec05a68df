//! Sinks: where results go. Each sink runs on its own thread behind a bounded channel, so a
//! slow sink slows the pipeline down instead of growing memory.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Stdout, Write};
use std::path::PathBuf;

pub mod file;
pub mod kafka;
pub mod kafka_limits;
mod kafka_records;

use crate::checkpoint::manifest::SinkCommit;
use crate::checkpoint::CheckpointId;
use crate::config::spec::{SinkKind, SinkSpec};
use crate::value::Value;

/// Writes records somewhere, as JSON lines.
///
/// In checkpointed runs a sink commits in two phases: everything written since the previous
/// barrier belongs to one epoch; [`Sink::pre_commit`] makes it durable but invisible and says
/// how to make it visible, which the checkpoint coordinator does once the checkpoint's
/// manifest exists (and recovery does again if the run died in between). The Kafka sink
/// implements the same contract with transactions.
pub trait Sink: Send {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError>;
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Checkpoint `epoch`'s barrier arrived from every task: make the epoch's output durable
    /// and return what commits it (`None`: nothing to commit, e.g. a non-transactional sink,
    /// which is at-least-once).
    fn pre_commit(&mut self, _epoch: CheckpointId) -> Result<Option<SinkCommit>, SinkError> {
        self.flush()?;
        Ok(None)
    }

    /// The largest message the sink can send (Kafka): larger results are dead-lettered by the
    /// tasks before they reach it. None: no limit.
    fn message_limit(&self) -> Option<std::sync::Arc<kafka_limits::MessageLimit>> {
        None
    }
}

/// A sink that cannot take more records.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{sink}`: cannot create `{path}`: {source}; check that the folder is writable")]
    Create {
        sink: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sink `{sink}`: writing `{path}` failed: {source}; the disk may be full")]
    Write {
        sink: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sink `{sink}`: {message}")]
    Kafka { sink: String, message: String },
    /// The reader went away (e.g. `headwater run ... | head`): not an error of the pipeline.
    #[error("sink `{sink}`: the reader closed the output")]
    Closed { sink: String },
}

/// What opening a sink for a checkpointed run needs besides its spec.
pub struct CheckpointedSinks<'a> {
    pub pipeline: &'a str,
    /// The pipeline's state folder (Kafka sinks keep each epoch's records under it).
    pub state_dir: &'a std::path::Path,
    /// The epoch the first records belong to.
    pub first_epoch: CheckpointId,
    /// The restored checkpoint's commits; None on a fresh start.
    pub restored: Option<&'a [SinkCommit]>,
    /// The restored checkpoint's parallelism.
    pub restored_parallelism: Option<usize>,
    pub interval: std::time::Duration,
    /// `checkpoint.tolerable_failures`: epochs may wait that many declined checkpoints more.
    pub tolerable_failures: u32,
}

/// A sink and, for transactional sinks, what commits its epochs.
pub type OpenedSink = (
    Box<dyn Sink>,
    Option<std::sync::Arc<dyn kafka::TransactionCommitter>>,
);

/// How many instances of a sink a run with `parallelism` tasks opens: one per task for Kafka
/// (each with its own producers, so the sink scales with the tasks), one for the others
/// (a file is written by one writer).
pub fn instances(spec: &SinkSpec, parallelism: usize) -> usize {
    match spec.kind {
        SinkKind::Kafka(_) => parallelism.max(1),
        _ => 1,
    }
}

/// Opens a sink's instances for a checkpointed run: file sinks write pending parts, Kafka
/// sinks transactions, from epoch `first_epoch` on; the others are as in [`open_sink`].
pub fn open_checkpointed_sink(
    spec: &SinkSpec,
    instances: usize,
    ctx: &CheckpointedSinks<'_>,
) -> Result<Vec<OpenedSink>, SinkError> {
    match &spec.kind {
        SinkKind::File { path } => Ok(vec![(
            Box::new(file::PartFileSink::create(
                &spec.name,
                path,
                ctx.first_epoch,
            )?),
            None,
        )]),
        SinkKind::Kafka(k) => kafka::open(
            &spec.name,
            k,
            ctx.pipeline,
            &ctx.state_dir.join("kafka-sinks").join(&spec.name),
            instances,
            Some(kafka::Checkpointed {
                first_epoch: ctx.first_epoch,
                restored: ctx.restored,
                restored_parallelism: ctx.restored_parallelism,
                interval: ctx.interval,
                tolerable_failures: ctx.tolerable_failures,
            }),
        ),
        _ => Ok(open_sink(spec, ctx.pipeline, instances)?
            .into_iter()
            .map(|s| (s, None))
            .collect()),
    }
}

/// Opens a sink's instances for a run without checkpoints.
pub fn open_sink(
    spec: &SinkSpec,
    pipeline: &str,
    instances: usize,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    Ok(match &spec.kind {
        SinkKind::Kafka(k) => kafka::open(
            &spec.name,
            k,
            pipeline,
            std::path::Path::new(""),
            instances,
            None,
        )?
        .into_iter()
        .map(|(s, _)| s)
        .collect(),
        SinkKind::File { path } => vec![Box::new(FileSink::create(&spec.name, path)?)],
        SinkKind::Stdout => vec![Box::new(StdoutSink {
            name: spec.name.clone(),
            out: BufWriter::with_capacity(64 << 10, std::io::stdout()),
            line: Vec::new(),
        })],
        SinkKind::Blackhole => vec![Box::new(Blackhole::default())],
    })
}

/// JSON lines written to a file. The file is truncated when the run starts: a run writes its
/// whole output.
pub struct FileSink {
    name: String,
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
}

impl FileSink {
    pub fn create(name: &str, path: &std::path::Path) -> Result<FileSink, SinkError> {
        let err = |source| SinkError::Create {
            sink: name.to_string(),
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = File::create(path).map_err(err)?;
        Ok(FileSink {
            name: name.to_string(),
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, file),
            line: Vec::with_capacity(256),
        })
    }

    fn err(&self, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }
}

/// Writes each record as one line of compact JSON, reusing `line` as the buffer.
pub(crate) fn write_json_lines(
    out: &mut impl Write,
    line: &mut Vec<u8>,
    records: &[Value],
) -> std::io::Result<()> {
    for r in records {
        line.clear();
        r.write_json(line);
        line.push(b'\n');
        out.write_all(line)?;
    }
    Ok(())
}

impl Sink for FileSink {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        write_json_lines(&mut self.out, &mut self.line, records).map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Err(e) = self.out.flush() {
            return Err(self.err(e));
        }
        Ok(())
    }
}

/// JSON lines on standard output, flushed after every batch so results show up promptly.
pub struct StdoutSink {
    name: String,
    out: BufWriter<Stdout>,
    line: Vec<u8>,
}

impl StdoutSink {
    fn map(&self, e: std::io::Error) -> SinkError {
        if e.kind() == ErrorKind::BrokenPipe {
            SinkError::Closed {
                sink: self.name.clone(),
            }
        } else {
            SinkError::Write {
                sink: self.name.clone(),
                path: PathBuf::from("<stdout>"),
                source: e,
            }
        }
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        write_json_lines(&mut self.out, &mut self.line, records).map_err(|e| self.map(e))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.map(e)),
        }
    }
}

/// Discards records, counting them (benchmarks).
#[derive(Default)]
pub struct Blackhole {
    pub count: u64,
}

impl Sink for Blackhole {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        self.count += records.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::Location;

    #[test]
    fn file_sink_writes_json_lines_and_creates_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/out.jsonl");
        let spec = SinkSpec {
            name: "out".into(),
            kind: SinkKind::File { path: path.clone() },
            location: Location::default(),
        };
        let mut sinks = open_sink(&spec, "test", 1).expect("open");
        let sink = &mut sinks[0];
        sink.write(&[
            Value::from_json(br#"{"a":1}"#).expect("json"),
            Value::from("x"),
        ])
        .expect("write");
        sink.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"a\":1}\n\"x\"\n"
        );
    }

    #[test]
    fn file_sink_truncates_an_earlier_runs_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\nlines\n").expect("seed");
        let mut sink = FileSink::create("out", &path).expect("open");
        sink.write(&[Value::Int(1)]).expect("write");
        sink.flush().expect("flush");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1\n");
    }

    #[test]
    fn unwritable_path_names_the_sink_and_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").expect("seed");
        let err = FileSink::create("results", &blocker.join("out.jsonl"))
            .err()
            .expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("results") && msg.contains("out.jsonl"),
            "{msg}"
        );
    }
}
