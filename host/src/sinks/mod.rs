//! The sink contract: where results go. Each sink runs on its own thread behind a bounded
//! channel, so a slow sink slows the pipeline down instead of growing memory. The sinks
//! themselves (files, stdout, Kafka) are connectors (the `connectors` folder); this folder holds
//! what every sink shares: the trait, its errors, the message-size limit.

use std::io::Write;
use std::path::PathBuf;

pub mod limit;

use crate::checkpoint::manifest::SinkCommit;
use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::CheckpointId;
use crate::value::Value;

/// Writes records somewhere, as JSON lines.
///
/// In checkpointed runs a sink commits in two phases: everything written since the previous
/// barrier belongs to one epoch; [`Sink::pre_commit`] makes it durable but invisible and says
/// how to make it visible, which the checkpoint coordinator does once the checkpoint's
/// manifest exists (and recovery does again if the run died in between), through the sink's
/// [`CommitParticipant`]. File sinks commit by renaming parts, Kafka sinks with transactions.
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
    fn message_limit(&self) -> Option<std::sync::Arc<limit::MessageLimit>> {
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

/// A sink and, in a checkpointed run, what commits its epochs (two-phase sinks).
pub type OpenedSink = (Box<dyn Sink>, Option<std::sync::Arc<dyn CommitParticipant>>);

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
